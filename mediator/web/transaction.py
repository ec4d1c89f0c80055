"""The life of one request: its transaction context, errors as FHIR, envelope, summary log.

Handlers only produce a FHIR answer (`fhir_answer`) and set what the transaction means
(`current().status`, `.properties`, `.outcome`); everything OpenHIM- and log-related for the
request happens here, in one place.
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Request, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from mediator import metrics
from mediator.fhir.media import FHIR_JSON, accepts_fhir_json, is_fhir_json_body
from mediator.fhir.outcome import FhirError, Issue, client_outcome, operation_outcome
from mediator.ids import RandomIds
from mediator.jsontext import compact_json, parse_json
from mediator.logs import transaction_id
from mediator.openhim.envelope import (
    OPENHIM_CONTENT_TYPE,
    TRANSACTION_HEADER,
    TransactionStatus,
    build_envelope,
    status_for_http,
)
from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.errors import (
    OpenImisError,
    OpenImisLoginRefused,
    OpenImisRateLimited,
    OpenImisTimeout,
)
from mediator.runtime import MediatorRuntime
from mediator.store import StoreUnavailable

log = logging.getLogger("mediator.transaction")

#: The transaction id, on every answer: what a clinic quotes to the operator.
REQUEST_ID_HEADER = "X-Request-ID"
#: A client's own request id is logged (never used as the transaction id) when it looks like one.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+/=-]{0,127}$")
#: Issues of an error answer logged with its transaction line, at most, and their text's length.
_LOGGED_ISSUES = 10
_LOGGED_DIAGNOSTICS = 300
#: Headers of the mediator's answer that OpenHIM passes on to the client.
_FORWARDED_HEADERS = {
    name.lower(): name
    for name in (
        "Content-Type",
        "Location",
        "Retry-After",
        "ETag",
        "Last-Modified",
        "Allow",
        REQUEST_ID_HEADER,
    )
}
_HTTP_CODES = {
    400: "invalid",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    413: "too-costly",
    415: "not-supported",
}


@dataclass
class TransactionContext:
    id: str
    via_openhim: bool
    started: float
    recorder: OrchestrationRecorder = field(default_factory=OrchestrationRecorder)
    properties: dict[str, Any] = field(default_factory=dict)
    status: TransactionStatus | None = None
    outcome: str | None = None
    client_request_id: str | None = None


def current() -> TransactionContext:
    return g.transaction


def runtime() -> MediatorRuntime:
    """What the application factory built for this worker."""
    return current_app.extensions["mediator"]


def fhir_answer(
    resource: dict[str, Any] | str, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A FHIR JSON response; `resource` may come already encoded (a recorded answer)."""
    body = resource if isinstance(resource, str) else compact_json(resource)
    response = Response(body, status=status, content_type=f"{FHIR_JSON}; charset=utf-8")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def install(app: Flask, urn_of: Any) -> None:
    """Wire the request lifecycle into the app; `urn_of()` gives the mediator URN in force."""
    request_ids = RandomIds()

    @app.before_request
    def open_transaction() -> Response | None:
        req = _bound(request)
        header_tx = req.headers.get(TRANSACTION_HEADER)
        client_id = req.headers.get(REQUEST_ID_HEADER)
        ctx = TransactionContext(
            id=header_tx or f"req-{request_ids()}",
            via_openhim=bool(header_tx),
            started=time.perf_counter(),
            client_request_id=client_id if client_id and _SANE_REQUEST_ID.match(client_id) else None,
        )
        g.transaction = ctx
        g.log_token = transaction_id.set(ctx.id)
        limit = app.config["MAX_CONTENT_LENGTH"]
        if req.content_length is not None and req.content_length > limit:
            raise RequestEntityTooLarge()  # refused before anything reads the body
        if req.query_string:
            _require_utf8_query(req.query_string)
        if req.path.startswith("/fhir"):
            format_param = req.args.get("_format") if req.query_string else None
            if not accepts_fhir_json(req.headers.get("Accept"), format_param):
                raise FhirError.of(
                    406,
                    "not-supported",
                    "only application/fhir+json (or application/json) is served",
                )
            if (
                req.routing_exception is None
                and req.method in ("POST", "PUT")
                and not is_fhir_json_body(req.headers.get("Content-Type"))
            ):
                raise FhirError.of(
                    415,
                    "not-supported",
                    "send the body as application/fhir+json or application/json",
                )
        return None

    @app.errorhandler(FhirError)
    def fhir_error(exc: FhirError) -> Response:
        current().outcome = client_outcome(exc.status) if exc.status < 500 else exc.outcome
        return fhir_answer(operation_outcome(exc.issues), exc.status, dict(exc.headers))

    @app.errorhandler(OpenImisError)
    def upstream_error(exc: OpenImisError) -> Response:
        status, headers = 502, {}
        if isinstance(exc, OpenImisTimeout):
            status = 504
        elif isinstance(exc, OpenImisLoginRefused):
            status = 503
        elif isinstance(exc, OpenImisRateLimited):
            status = 503
            if exc.retry_after is not None:
                headers["Retry-After"] = str(int(exc.retry_after + 0.999))
        log.warning("upstream failure", extra={"error": str(exc), "kind": type(exc).__name__})
        ctx = current()
        ctx.outcome = "upstream-" + type(exc).__name__.removeprefix("OpenImis").lower()
        outcome = operation_outcome([Issue("transient", exc.public_message)])
        return fhir_answer(outcome, status, headers)

    @app.errorhandler(StoreUnavailable)
    def store_unavailable(exc: StoreUnavailable) -> Response:
        """Nothing is acknowledged that the claim store did not keep: the clinic retries."""
        log.error("claim store unavailable", extra={"error": str(exc)})
        current().outcome = "store-unavailable"
        outcome = operation_outcome(
            [
                Issue(
                    "transient",
                    "the mediator cannot reach its claim store; retry later (a claim is never sent twice)",
                )
            ]
        )
        return fhir_answer(outcome, 503, {"Retry-After": "5"})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = {
            404: f"no such resource or operation: {request.path}"
            + (" (an empty path segment: check the base URL)" if "//" in request.path else ""),
            405: f"{request.method} is not supported on {request.path}",
            413: f"the body exceeds the limit of {app.config.get('MAX_CONTENT_LENGTH')} bytes",
        }.get(status, exc.description or exc.name)
        current().outcome = client_outcome(status) if status < 500 else "internal-error"
        headers = {}
        valid_methods = getattr(exc, "valid_methods", None)
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(valid_methods)
        return fhir_answer(
            operation_outcome([Issue(_HTTP_CODES.get(status, "exception"), message)]),
            status,
            headers,
        )

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        current().outcome = "internal-error"
        outcome = operation_outcome([Issue("exception", "internal error of the mediator; see its log")])
        return fhir_answer(outcome, 500)

    @app.after_request
    def close_transaction(response: Response) -> Response:
        req = _bound(request)
        _read_unread_body(req, app.config["MAX_CONTENT_LENGTH"])
        ctx: TransactionContext | None = g.get("transaction")
        if ctx is None:
            return response
        status = ctx.status or status_for_http(response.status_code)
        response.headers[REQUEST_ID_HEADER] = ctx.id
        issues = _logged_issues(response) if response.status_code >= 400 else None
        if ctx.via_openhim:
            response = _enveloped(response, ctx, status, urn_of())
        duration_ms = round((time.perf_counter() - ctx.started) * 1000, 2)
        outcome = ctx.outcome or _default_outcome(response.status_code)
        route = req.url_rule.rule if req.url_rule is not None else "unrouted"  # bounded labels
        metrics.TRANSACTIONS.labels(f"{req.method} {route}", outcome).inc()
        log.info(
            "transaction",
            extra={
                "method": req.method,
                "path": req.path,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "outcome": outcome,
                "issues": issues,
                "client_request_id": ctx.client_request_id,
                "openhim_status": str(status) if ctx.via_openhim else None,
                "upstream": ctx.recorder.summary(),
                "properties": ctx.properties or None,
            },
        )
        return response

    @app.teardown_request
    def forget_transaction(_exc: BaseException | None) -> None:
        token = g.pop("log_token", None)
        if token is not None:
            transaction_id.reset(token)


def _bound(proxy: Any) -> Any:
    """The object behind a Flask context proxy: each attribute read through the proxy costs
    a context lookup, and a request's hooks read a dozen."""
    return proxy._get_current_object()


def _default_outcome(http_status: int) -> str:
    if http_status < 400:
        return "ok"
    return client_outcome(http_status) if http_status < 500 else "internal-error"


def _logged_issues(response: Response) -> list[dict[str, Any]] | None:
    """Why the answer is an error, for the operator: the issues' code, field and text.

    The texts are the mediator's (and openIMIS's refusal reasons): they quote at most a code or
    an identifier the transaction line carries already, never a name or clinical content.
    """
    if not (response.mimetype or "").endswith("json"):
        return None
    try:
        outcome = parse_json(response.get_data())
    except ValueError:
        return None
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return None
    logged = []
    for issue in (outcome.get("issue") or [])[:_LOGGED_ISSUES]:
        if isinstance(issue, dict):
            entry = {"code": issue.get("code"), "expression": issue.get("expression")}
            diagnostics = issue.get("diagnostics")
            if isinstance(diagnostics, str):
                entry["diagnostics"] = diagnostics[:_LOGGED_DIAGNOSTICS]
            logged.append({k: v for k, v in entry.items() if v is not None})
    return logged


def _require_utf8_query(query: bytes) -> None:
    """Raw bytes that are not UTF-8 in the query string: werkzeug fails to decode them when a
    parameter is first read (a 500); the client is told which parameter to percent-encode."""
    if _decodes(query):
        return
    bad = next(part for part in query.split(b"&") if not _decodes(part))
    name = bad.split(b"=", 1)[0]
    raise FhirError.of(
        400,
        "invalid",
        "the query string holds bytes that are not UTF-8: percent-encode them (%XX)",
        [name.decode()] if _decodes(name) and name else [],
    )


def _decodes(text: bytes) -> bool:
    try:
        text.decode()
    except UnicodeDecodeError:
        return False
    return True


def _read_unread_body(req: Request, limit: int) -> None:
    """Read to its end a body the handler left unread (a request refused on its headers).

    Otherwise its bytes reach gunicorn after the answer, and the threaded worker parks one of its
    threads on the keep-alive connection until the client's next request on it: a dozen idle
    clients that once sent such a request held every thread of a worker. A body over the limit
    (413) is not read: its connection is the client's to close.
    """
    length = req.content_length
    if length and length <= limit:
        req.stream.exhaust()
    elif length is None and req.headers.get("Transfer-Encoding"):
        with suppress(RequestEntityTooLarge):
            _ = req.stream  # a streamed body is read (to the limit) when its stream is first used


def _enveloped(response: Response, ctx: TransactionContext, status: TransactionStatus, urn: str) -> Response:
    headers: dict[str, str] = {}
    for header, value in response.headers.items():  # one pass: each lookup by name is a scan
        name = _FORWARDED_HEADERS.get(header.lower())
        if name is not None and name not in headers:
            headers[name] = value
    body = build_envelope(
        urn=urn,
        status=status,
        http_status=response.status_code,
        headers=headers,
        body=response.get_data(as_text=True),
        orchestrations=ctx.recorder.orchestrations(),
        properties=ctx.properties,
    )
    wrapped = Response(body, status=response.status_code, content_type=OPENHIM_CONTENT_TYPE)
    wrapped.headers[REQUEST_ID_HEADER] = ctx.id
    return wrapped
