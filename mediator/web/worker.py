"""gunicorn's threaded worker, answering in FHIR where gunicorn answers before the application.

gunicorn refuses some requests itself, before the application sees them: a request line over
`limit_request_line`, too many or too large header fields, an invalid `Content-Length`, HTTP
version or method. It answers those with an HTML page; this worker answers the same status
with an OperationOutcome and an `X-Request-ID`, and gunicorn's log line about the request
carries that id.
"""

from __future__ import annotations

import logging
from typing import Any

from gunicorn import util
from gunicorn.http.errors import ForbiddenProxyRequest, LimitRequestHeaders, LimitRequestLine
from gunicorn.workers.gthread import ThreadWorker

from mediator.fhir.outcome import Issue, client_outcome, operation_outcome
from mediator.ids import RandomIds
from mediator.jsontext import compact_json
from mediator.logs import transaction_id

log = logging.getLogger("mediator.transaction")

_ISSUE_CODES = {403: "forbidden", 431: "too-long", 500: "exception", 501: "not-supported"}


class FhirThreadWorker(ThreadWorker):
    """gunicorn's `gthread` worker with its error pages as OperationOutcomes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ids = RandomIds()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """gunicorn decides the status and logs; its page goes to a capture, ours to the client."""
        request_id = f"req-{self._ids()}"
        page = _CapturedPage()
        token = transaction_id.set(request_id)
        try:
            super().handle_error(req, page, addr, exc)
            if page.status is None:
                return
            issue = Issue(_issue_code(page.status, exc), self._diagnostics(page.status, page.reason, exc))
            log.info(
                "transaction",
                extra={
                    "method": getattr(req, "method", None),
                    "path": getattr(req, "path", None),
                    "status": page.status,
                    "outcome": client_outcome(page.status) if page.status < 500 else "internal-error",
                    "issues": [issue.to_fhir()],
                    "answered_by": "gunicorn",
                },
            )
        finally:
            transaction_id.reset(token)
        body = compact_json(operation_outcome([issue])).encode()
        head = (
            f"HTTP/1.1 {page.status} {page.reason}\r\nConnection: close\r\n"
            f"Content-Type: application/fhir+json; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            f"X-Request-ID: {request_id}\r\n\r\n"
        )
        try:
            util.write_nonblock(client, head.encode("latin-1") + body)
        except Exception:  # the client went away: nothing to tell it
            self.log.debug("Failed to send error message.")

    def _diagnostics(self, status: int, reason: str, exc: BaseException) -> str:
        if status >= 500:
            return "internal error of the mediator; see its log"
        if isinstance(exc, LimitRequestHeaders):
            return (
                f"{reason}: {exc} (at most {self.cfg.limit_request_fields} header fields of at most "
                f"{self.cfg.limit_request_field_size} bytes each)"
            )
        if isinstance(exc, ForbiddenProxyRequest):
            return reason
        return f"{reason}: {exc}"


def _issue_code(status: int, exc: BaseException) -> str:
    if isinstance(exc, LimitRequestLine):
        return "too-long"
    return _ISSUE_CODES.get(status, "invalid")


class _CapturedPage:
    """Stands for the client's socket while gunicorn writes its HTML error page."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.reason = ""

    def gettimeout(self) -> float:
        return 0.0  # gunicorn then writes at once, without touching blocking modes

    def sendall(self, data: bytes) -> None:
        status_line = data.split(b"\r\n", 1)[0].decode("latin-1")  # "HTTP/1.1 400 Bad Request"
        _, status, self.reason = status_line.split(" ", 2)
        self.status = int(status)
