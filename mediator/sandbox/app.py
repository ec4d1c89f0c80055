"""Routes of the sandbox: the openIMIS FHIR R4 API under `config.base_path`, and the test
controls under /_sandbox/ (not part of openIMIS)."""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode

from flask import Flask, Response, request

from . import auth, resources, rules
from .config import SandboxConfig
from .durable import DuplicateClaim
from .store import (
    QUEUED_PREFIX,
    STATUS_BY_NAME,
    STATUS_ENTERED,
    STATUS_NAMES,
    ClaimLine,
    Store,
    StoredClaim,
)

Json = dict[str, Any]
FHIR_ERROR_PREFIX = "The request cannot be processed due to the following issues:\n"
INTERNAL_ERROR_TEXT = "Internal server error"


@dataclass
class Faults:
    """Runtime knobs set through POST /_sandbox/faults (reset to the config by /reset)."""

    eligibility_mode: str = "working"
    claim_adjudication: str = "immediate"
    delay_s: float = 0.0
    fail_next: int = 0
    fail_status: int = 500
    fail_after_commit: int = 0
    rate_limit: int | None = None
    login_fails: bool = False

    @classmethod
    def from_config(cls, cfg: SandboxConfig) -> Faults:
        return cls(
            eligibility_mode=cfg.eligibility_mode,
            claim_adjudication=cfg.claim_adjudication,
            rate_limit=cfg.request_budget_per_minute,
        )


class ApiError(Exception):
    """Answer with an OperationOutcome (status 500 by default), like openIMIS does."""

    def __init__(
        self, text: str | None, status: int = 500, severity: str = "error", code: str = "exception"
    ) -> None:
        super().__init__(text)
        self.text, self.status, self.severity, self.code = text, status, severity, code


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json", headers=headers)


def _outcome(err: ApiError) -> Response:
    if err.status == 401:  # DRF authentication failure body
        return _json({"detail": err.text}, 401)
    return _json(resources.operation_outcome(err.text, err.severity, err.code), err.status)


def _parse_date(value: Any) -> date | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _ref_key(ref: Any) -> str | None:
    """The id or code a reference points at: `Type/<key>` or `identifier.value`."""
    if not isinstance(ref, dict):
        return None
    target = ref.get("reference")
    if isinstance(target, str) and target:
        if target.startswith("#"):
            return None  # contained resources are not supported by the sandbox
        return target.rstrip("/").split("/")[-1] or None
    ident = ref.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        return str(ident["value"])
    return None


def _updated_of(obj: Any) -> datetime:
    return obj.updated


def _last_updated_filter(rows: list, value: str) -> list:
    """`_lastUpdated=[eq|ne|gt|lt|ge|le|sa|eb|ap]YYYY-MM-DD[THH:MM:SS]`."""
    prefix, raw = ("eq", value)
    if len(value) > 2 and value[:2].isalpha():
        prefix, raw = value[:2], value[2:]
    try:
        when = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ApiError(f"Invalid _lastUpdated value: {value}") from exc
    date_only = "T" not in raw

    def key(obj: Any) -> Any:
        stamp = _updated_of(obj)
        return stamp.date() if date_only else stamp

    ref = when.date() if date_only else when
    ops = {
        "eq": lambda a: a == ref,
        "ap": lambda a: a == ref,
        "ne": lambda a: a != ref,
        "gt": lambda a: a > ref,
        "sa": lambda a: a > ref,
        "lt": lambda a: a < ref,
        "eb": lambda a: a < ref,
        "ge": lambda a: a >= ref,
        "le": lambda a: a <= ref,
    }
    if prefix not in ops:
        raise ApiError(f"Invalid _lastUpdated prefix: {prefix}")
    return [r for r in rows if ops[prefix](key(r))]


class Sandbox:
    """One sandbox instance: config, data store, faults and the request pipeline."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.store = Store(state_path=config.state_path)
        self.faults = Faults.from_config(config)

    # ------------------------------------------------------------ pipeline
    def handle(self, sub: str) -> Response:
        segs = [s for s in sub.split("/") if s]
        route = segs[0] if segs else ""
        method = request.method
        with self.store.lock:
            self.store.api_calls[f"{method} {route}".strip()] += 1
        limited = self._rate_limit()
        if limited is not None:
            return limited
        if self.faults.delay_s > 0:
            time.sleep(self.faults.delay_s)
        if sub and not sub.endswith("/"):
            if method in ("GET", "HEAD"):
                target = request.base_url + "/"
                if request.query_string:
                    target += "?" + request.query_string.decode("latin-1")
                return Response("", status=301, headers={"Location": target})
            return self._not_found()
        try:
            self._check_accept()
            if segs == ["login"]:
                return self._login()
            self._authenticate()
            if method == "POST" and segs == ["Claim"]:
                self._count_claim_attempt()
                try:
                    return self._authenticated(method, segs)
                finally:  # durable mode: the count is committed before the answer leaves
                    self.store.flush_attempts()
            return self._authenticated(method, segs)
        except ApiError as err:
            return _outcome(err)

    def _authenticated(self, method: str, segs: list[str]) -> Response:
        failed = self._injected_failure(before_commit=True)
        if failed is not None:
            return failed
        self._check_content_type()
        return self._dispatch(method, segs)

    def _rate_limit(self) -> Response | None:
        limit = self.faults.rate_limit
        if not limit:
            return None
        now = time.monotonic()
        client = request.remote_addr or "?"
        with self.store.lock:
            window = self.store.request_times.setdefault(client, deque())
            while window and now - window[0] >= 60:
                window.popleft()
            if len(window) >= limit:
                wait = max(1, math.ceil(60 - (now - window[0])))
                body = resources.operation_outcome(
                    f"Request was throttled. Expected available in {wait} seconds.", "fatal"
                )
                return _json(body, 429, {"Retry-After": str(wait)})
            window.append(now)
        return None

    def _injected_failure(self, before_commit: bool) -> Response | None:
        with self.store.lock:
            attr = "fail_next" if before_commit else "fail_after_commit"
            if getattr(self.faults, attr) <= 0:
                return None
            setattr(self.faults, attr, getattr(self.faults, attr) - 1)
            status = self.faults.fail_status
        if status == 500:
            return _outcome(ApiError(INTERNAL_ERROR_TEXT, 500, "fatal"))
        reason = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}.get(
            status, "Error"
        )
        html = (
            f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return Response(html, status=status, mimetype="text/html")

    @staticmethod
    def _not_found() -> Response:
        return Response(
            "<h1>Not Found</h1><p>The requested resource was not found on this server.</p>",
            status=404,
            mimetype="text/html",
        )

    def _check_accept(self) -> None:
        accept = request.headers.get("Accept", "").strip()
        if not accept:
            return
        types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
        if not any(t in ("application/json", "application/*", "*/*") for t in types):
            raise ApiError("Could not satisfy the request Accept header.", 406, "fatal")

    def _check_content_type(self) -> None:
        if request.method not in ("POST", "PUT", "PATCH"):
            return
        ctype = (request.mimetype or "").lower()
        if ctype and ctype not in (
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            raise ApiError(f'Unsupported media type "{request.content_type}" in request.', 415, "fatal")

    def _body(self) -> Any:
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            return request.form.to_dict()
        raw = request.get_data(cache=True)
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(f"JSON parse error - {exc}", 400, "fatal") from exc

    # ------------------------------------------------------------ auth
    def _login(self) -> Response:
        if request.method != "POST":
            raise ApiError(f'Method "{request.method}" not allowed.', 405, "fatal")
        self._check_content_type()
        data = self._body()
        if not isinstance(data, dict) or "username" not in data or "password" not in data:
            return Response("", status=400)
        cfg, st = self.config, self.store
        with st.lock:
            locked = time.time() < st.locked_until
            good = str(data["username"]).lower() == cfg.username.lower() and data["password"] == cfg.password
            if self.faults.login_fails or locked or not good:
                st.login_failed += 1
                if not locked and not self.faults.login_fails:
                    st.failed_logins_in_row += 1
                    if st.failed_logins_in_row >= cfg.login_lock_after:
                        st.locked_until = time.time() + cfg.login_lock_s
                        st.failed_logins_in_row = 0
                return _json("INCORRECT_CREDENTIALS", 401)
            st.failed_logins_in_row = 0
            st.login_ok += 1
        token, exp = auth.issue(cfg.username, cfg.jwt_secret, cfg.token_lifetime_s)
        return _json({"token": token, "exp": exp})

    def _authenticate(self) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, cred = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and cred.strip():
            try:
                auth.decode(cred.strip(), self.config.jwt_secret)
            except auth.TokenError as exc:
                raise ApiError(str(exc), 401) from exc
            return
        if scheme == "basic" and cred.strip():
            try:
                user, _, pwd = base64.b64decode(cred.strip()).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ApiError(
                    "Invalid basic header. Credentials not correctly base64 encoded.", 401
                ) from exc
            with self.store.lock:
                locked = time.time() < self.store.locked_until
            if not locked and user.lower() == self.config.username.lower() and pwd == self.config.password:
                return
            raise ApiError("Invalid username/password.", 401)
        raise ApiError("Authentication credentials were not provided.", 401)

    # ------------------------------------------------------------ dispatch
    def _dispatch(self, method: str, segs: list[str]) -> Response:
        rtype, key = segs[0], (segs[1] if len(segs) > 1 else None)
        if len(segs) > 2:
            return self._not_found()
        readers = {
            "ActivityDefinition": (self._services, "Service"),
            "Medication": (self._items, "Item"),
            "Patient": (self._patients, "Insuree"),
            "Organization": (self._organizations, "HealthFacility"),
            "Practitioner": (self._practitioners, "ClaimAdmin"),
            "Coverage": (self._coverages, "Policy"),
            "Claim": (self._claims, "Claim"),
            "ClaimResponse": (self._claim_responses, "Claim"),
        }
        if rtype == "Claim" and method == "POST" and key is None:
            return self._create_claim()
        if rtype == "CoverageEligibilityRequest" and key is None:
            if method != "POST":
                raise ApiError(f'Method "{method}" not allowed.', 405, "fatal")
            return self._eligibility()
        if rtype not in readers:
            return self._not_found()
        if method not in ("GET", "HEAD"):
            raise ApiError(f'Method "{method}" not allowed.', 405, "fatal")
        lister, model = readers[rtype]
        with self.store.lock:
            if key is None:
                return lister(None)
            found = lister(key)
        if found is None:
            raise ApiError(f"{model} matching query does not exist.")
        return _json(found)

    # Each lister: key None -> Response (list / identifier search); key -> resource or None.
    def _services(self, key: str | None) -> Any:
        st, cur = self.store, self.config.currency
        if key is not None:
            svc = st.service(key)
            return resources.activity_definition(svc, cur) if svc else None
        return self._bundle(st.services, lambda s: resources.activity_definition(s, cur))

    def _items(self, key: str | None) -> Any:
        st, cur = self.store, self.config.currency
        if key is not None:
            item = st.item(key)
            return resources.medication(item, cur) if item else None
        ident = request.args.get("identifier")
        if ident is not None:
            item = st.item(ident)
            if item is None:
                raise ApiError(f"Resource for identifier {ident} not found", 404, "error", "not-found")
            return _json(resources.medication(item, cur))
        return self._bundle(st.items, lambda i: resources.medication(i, cur))

    def _patients(self, key: str | None) -> Any:
        st = self.store

        def render(ins: Any) -> Json:
            return resources.patient(ins, st.family_head_chf_id(ins))

        if key is not None:
            ins = st.insuree_current(key)
            return render(ins) if ins else None
        ident = request.args.get("identifier")
        if ident is not None:
            ins = st.insuree_current(ident)
            if ins is None:
                raise ApiError(f"Resource for identifier {ident} not found", 404, "error", "not-found")
            return _json(render(ins))
        rows = [i for i in st.insurees if i.validity_to is None]
        return self._bundle(rows, render)

    def _organizations(self, key: str | None) -> Any:
        st = self.store
        if key is not None:
            hf = st.facility(key)
            return resources.organization(hf) if hf else None
        org_type = request.args.get("type")
        if org_type not in (None, "prov"):
            return self._bundle([], resources.organization)  # bus/ins are not seeded
        rows = st.facilities
        if code := request.args.get("code"):
            rows = [f for f in rows if f.code == code]
        return self._bundle(rows, resources.organization)

    def _practitioners(self, key: str | None) -> Any:
        st = self.store
        if key is not None:
            ca = st.admin(key)
            return resources.practitioner(ca) if ca else None
        if request.args.get("resourceType") not in (None, "ca"):
            return self._bundle([], resources.practitioner)  # no enrolment officers seeded
        rows = st.admins
        if code := request.args.get("code"):
            rows = [a for a in rows if a.code == code]
        return self._bundle(rows, resources.practitioner)

    def _coverages(self, key: str | None) -> Any:
        st = self.store

        numbers = {uuid: n for n, uuid in enumerate(st.policies, start=1)}

        def render(p: Any) -> Json:
            return resources.coverage(p, st.products[p.product_code], numbers[p.uuid])

        if key is not None:
            pol = st.policy(key)
            return render(pol) if pol else None
        # As on 24.04: `beneficiary` (or `patient`) filters nothing; every policy is listed.
        rows = sorted(st.policies.values(), key=lambda p: p.start_date)
        return self._bundle(rows, render)

    def _claims(self, key: str | None) -> Any:
        st, cur = self.store, self.config.currency
        if key is not None:
            claim = st.claim(key)
            return resources.claim_resource(st, claim, cur) if claim else None
        if request.args.get("identifier") is not None:
            raise ApiError("'Insuree' object has no attribute 'code'")
        rows = sorted(st.claims.values(), key=lambda c: c.updated)
        if (patient := request.args.get("patient")) is not None:
            ins = st.insuree_by_uuid(patient)
            if ins is None:
                raise ApiError("Insuree matching query does not exist.")
            rows = [c for c in rows if c.insuree_uuid == ins.uuid]
        if ref_date := request.args.get("refDate"):
            day = _parse_date(ref_date)
            if day is None:
                raise ApiError("{'refDate': 'Invalid date format, should be in \"%Y-%m-%d\" format'}", 400)
            rows = [c for c in rows if c.updated.date() >= day]
        return self._bundle(rows, lambda c: resources.claim_resource(st, c, cur))

    def _claim_responses(self, key: str | None) -> Any:
        st, cur = self.store, self.config.currency
        if key is not None:
            claim = st.claim(key)
            return resources.claim_response(st, claim, cur) if claim else None
        rows = sorted(st.claims.values(), key=lambda c: c.updated)
        return self._bundle(rows, lambda c: resources.claim_response(st, c, cur))

    # ------------------------------------------------------------ bundles
    def _link(self, base: str, query: str) -> str:
        """As DRF builds it, then (24.04) the whole URL `quote_plus`-encoded, scheme included."""
        url = f"{base}?{query}" if query else base
        return quote_plus(url) if self.config.link_style == "quote_plus" else url

    def _bundle(self, rows: list, render: Any) -> Response:
        """searchset Bundle with DRF PageNumberPagination semantics (page-offset, _count)."""
        args = request.args
        if "_lastUpdated" in args:
            rows = _last_updated_filter(rows, args["_lastUpdated"])
        try:
            size = int(args.get("_count", 10))
            size = size if size > 0 else 10
        except ValueError:
            size = 10
        try:
            page = int(args.get("page-offset", 1))
        except ValueError as exc:
            raise ApiError("Invalid page.", 404, "fatal") from exc
        total = len(rows)
        pages = max(1, math.ceil(total / size))
        if page < 1 or page > pages:
            raise ApiError("Invalid page.", 404, "fatal")
        chunk = rows[(page - 1) * size : page * size]
        base = request.base_url
        raw_query = request.query_string.decode("latin-1")
        params = parse_qsl(raw_query, keep_blank_values=True)
        others = sorted((k, v) for k, v in params if k != "page-offset")
        links = [{"relation": "self", "url": self._link(base, raw_query)}]  # the query as it came
        if page < pages:
            nxt = sorted([*others, ("page-offset", str(page + 1))])
            links.append({"relation": "next", "url": self._link(base, urlencode(nxt))})
        if page > 1:
            prev = others if page == 2 else sorted([*others, ("page-offset", str(page - 1))])
            links.append({"relation": "previous", "url": self._link(base, urlencode(prev))})
        entries = []
        for row in chunk:
            res = render(row)
            # A resource without `id` (Coverage) has no fullUrl either.
            entries.append(
                {"fullUrl": base + res["id"], "resource": res} if "id" in res else {"resource": res}
            )
        return _json(
            {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links, "entry": entries}
        )

    # ------------------------------------------------------------ claims
    def _count_claim_attempt(self) -> None:
        try:
            body = json.loads(request.get_data(cache=True) or b"{}")
            code = self._claim_code(body) if isinstance(body, dict) else None
        except ValueError:
            code = None
        self.store.count_attempt(code or "<no code>")

    def _claim_code(self, body: Json) -> str | None:
        for ident in body.get("identifier") or []:
            if not isinstance(ident, dict):
                continue
            codings = ((ident.get("type") or {}).get("coding")) or [{}]
            if (
                codings
                and isinstance(codings[0], dict)
                and codings[0].get("code") in self.config.claim_code_types
            ):
                value = ident.get("value")
                return str(value) if value else None
        return None

    def _create_claim(self) -> Response:
        body = self._body()
        if not isinstance(body, dict) or body.get("resourceType") != "Claim":
            raise ApiError("Invalid resource: expected resourceType 'Claim'")
        st = self.store
        with st.lock:
            claim = self._convert_claim(body)
            if st.claim_by_code(claim.code, claim.facility_code):
                raise ApiError(f"Claim with code '{claim.code}' already exists.")
            queued = self.faults.claim_adjudication == "deferred" or claim.code.startswith(QUEUED_PREFIX)
            if not queued:
                rules.run_rules(st, claim)
            try:
                st.add_claim(claim)  # durable mode: committed (fsync) here, before the answer
            except DuplicateClaim as exc:  # the UNIQUE constraint of the state file
                raise ApiError(f"Claim with code '{claim.code}' already exists.") from exc
            answer = resources.claim_response(st, claim, self.config.currency)
        failed = self._injected_failure(before_commit=False)
        if failed is not None:
            return failed
        return _json(answer, 201)

    def _convert_claim(self, body: Json) -> StoredClaim:
        """Mirror ClaimConverter.to_imis_obj: collect errors, some raise at once."""
        st = self.store
        errors: list[str] = []
        created = _parse_date(body.get("created"))
        if not created:
            errors.append("Missing `created` attribute")
        hf_key = _ref_key(body.get("provider"))
        hf = st.facility(hf_key) if hf_key else None
        if hf is None:
            errors.append("Missing or invalid `provider` reference")
        code = self._claim_code(body)
        if not code:
            errors.append("Missing or invalid `identifier` attribute")
        pat_key = _ref_key(body.get("patient"))
        insuree = st.insuree_first_row(pat_key) if pat_key else None
        if insuree is None:
            errors.append("Missing or invalid `patient` reference")
        period = body.get("billablePeriod") or {}
        date_from = _parse_date(period.get("start")) if isinstance(period, dict) else None
        date_to = _parse_date(period.get("end")) if isinstance(period, dict) else None
        if not date_from:
            errors.append("Missing or invalid 'billable_period' attribute")
        icds: list[str] = []
        for diag in (body.get("diagnosis") or [])[:5]:
            concept = (diag or {}).get("diagnosisCodeableConcept") or {}
            coding = (concept.get("coding") or [{}])[0] or {}
            icd = coding.get("code")
            if icd not in st.icd:
                raise ApiError("Diagnosis matching query does not exist.")
            icds.append(icd)
        if not icds:
            errors.append("Missing or invalid `diagnosis` attribute")
        total = body.get("total") or {}
        claimed = total.get("value") if isinstance(total, dict) else None
        if not claimed:
            errors.append("Missing `total` attribute")
        ca_key = _ref_key(body.get("enterer"))
        admin = st.admin(ca_key) if ca_key else None
        if admin is None:
            errors.append("Missing or invalid `enterer` reference")
        type_coding = ((body.get("type") or {}).get("coding") or [{}])[0] or {}
        visit_type = type_coding.get("code")
        if visit_type not in ("E", "R", "O"):
            errors.append("Missing or invalid `type` attribute")
        guarantee = explanation = None
        for info in body.get("supportingInfo") or []:
            cat = (((info or {}).get("category") or {}).get("coding") or [{}])[0] or {}
            if cat.get("code") == "guarantee":
                guarantee = info.get("valueString")
            elif cat.get("code") == "explanation":
                explanation = info.get("valueString")
            elif cat.get("code") != "attachment":
                errors.append(f"Unknown supporting info category: `{cat.get('code')}`")
        lines = self._convert_lines(body, errors)
        if errors:
            raise ApiError(FHIR_ERROR_PREFIX + ",\n".join(errors))
        return StoredClaim(
            uuid=str(uuid.uuid4()),
            code=code,
            facility_code=hf.code,
            insuree_uuid=insuree.uuid,
            admin_uuid=admin.uuid,
            visit_type=visit_type,
            date_claimed=created,
            date_from=date_from,
            date_to=date_to,
            icd_codes=icds,
            claimed=float(claimed),
            guarantee_id=guarantee,
            explanation=explanation,
            lines=lines,
            status=STATUS_ENTERED,
            created=self.store.today(),
        )

    def _convert_lines(self, body: Json, errors: list[str]) -> list[ClaimLine]:
        st = self.store
        lines: list[ClaimLine] = []
        for entry in body.get("item") or []:
            entry = entry or {}
            category = (entry.get("category") or {}).get("text")
            if category not in ("item", "service"):
                errors.append(f"Unknown item category: `{category}`")
                continue
            try:
                ref = entry["extension"][0]["valueReference"]
            except (KeyError, IndexError, TypeError) as exc:
                raise ApiError("'NoneType' object is not subscriptable") from exc
            key = _ref_key(ref)
            target = (st.item(key) if category == "item" else st.service(key)) if key else None
            if target is None:
                raise ApiError("'NoneType' object has no attribute 'code'")
            qty = (entry.get("quantity") or {}).get("value")
            price = (entry.get("unitPrice") or {}).get("value")
            if qty is None:
                raise ApiError(
                    'null value in column "QtyProvided" violates not-null constraint', severity="fatal"
                )
            if price is None:
                raise ApiError(
                    'null value in column "PriceAsked" violates not-null constraint', severity="fatal"
                )
            lines.append(ClaimLine(category, target.code, target.uuid, float(qty), float(price)))
        return lines

    # ------------------------------------------------------------ eligibility
    def _eligibility(self) -> Response:
        body = self._body()
        if not isinstance(body, dict):
            raise ApiError("Invalid resource")
        chf = _ref_key(body.get("patient"))
        if not chf:
            raise ApiError("'NoneType' object has no attribute 'split'")
        st = self.store
        with st.lock:
            ins = st.insuree_current(chf)
            if ins is None:
                raise ApiError("Insuree matching query does not exist.")
            today = st.today()
            active = [p for p in st.policies_of(ins) if p.active_on(today)]
            if active and self.faults.eligibility_mode == "failing":
                # What 24.04 on PostgreSQL answers (its SQL Server-only enquiry finds nothing).
                raise ApiError("'NoneType' object has no attribute 'name'")
            wanted = {"service": None, "item": None}
            for entry in body.get("item") or []:
                cat = (((entry or {}).get("category") or {}).get("coding") or [{}])[0] or {}
                text = ((entry or {}).get("productOrService") or {}).get("text")
                if cat.get("code") in wanted and text:
                    wanted[cat["code"]] = text
            service_ok = wanted["service"] is None or st.service(wanted["service"]) is not None
            item_ok = wanted["item"] is None or st.item(wanted["item"]) is not None
            answer = resources.eligibility_response(body, ins.chf_id, active, st, service_ok, item_ok, today)
        return _json(answer, 201)

    # ------------------------------------------------------------ test controls
    def control_adjudicate(self) -> Response:
        data = request.get_json(silent=True) or {}
        status = data.get("status")
        if status not in ("checked", "processed", "valuated", "rejected"):
            return _json({"error": "status must be checked|processed|valuated|rejected"}, 400)
        key = data.get("claim_code") or data.get("claim_uuid")
        if not key:
            return _json({"error": "claim_code or claim_uuid required"}, 400)
        st = self.store
        with st.lock:
            claim = (
                st.claim_by_code(key, data["facility_code"]) if data.get("facility_code") else st.claim(key)
            )
            if claim is None:
                return _json({"error": f"no claim {key!r}"}, 404)
            rules.adjudicate(
                st, claim, status, data.get("reasons") or {}, bool(data.get("apply_rules", True))
            )
            claim.updated = datetime.now().replace(microsecond=0)
            st.save_claim(claim)
            return _json(
                {
                    "claim": self._claim_summary(claim),
                    "claimResponse": resources.claim_response(st, claim, self.config.currency),
                }
            )

    def control_faults(self) -> Response:
        if request.method == "POST":
            data = request.get_json(silent=True) or {}
            names = {f.name for f in fields(Faults)}
            unknown = sorted(set(data) - names)
            if unknown:
                return _json({"error": f"unknown fault(s): {unknown}"}, 400)
            if data.get("eligibility_mode", "working") not in ("working", "failing"):
                return _json({"error": "eligibility_mode must be working|failing"}, 400)
            if data.get("claim_adjudication", "immediate") not in ("immediate", "deferred"):
                return _json({"error": "claim_adjudication must be immediate|deferred"}, 400)
            with self.store.lock:
                for name, value in data.items():
                    setattr(self.faults, name, value)
                if "rate_limit" in data:
                    self.store.request_times.clear()
        return _json(asdict(self.faults))

    def control_reset(self) -> Response:
        with self.store.lock:
            self.store.reset()
            self.faults = Faults.from_config(self.config)
        return _json({"reset": True, "faults": asdict(self.faults)})

    def _claim_summary(self, claim: StoredClaim) -> Json:
        return {
            "uuid": claim.uuid,
            "code": claim.code,
            "facility": claim.facility_code,
            "insuree": claim.insuree_uuid,
            "status": claim.status,
            "status_name": STATUS_NAMES[claim.status],
            "outcome": resources.OUTCOME_BY_STATUS[claim.status],
            "lines": [
                {
                    "kind": line.kind,
                    "code": line.code,
                    "qty": line.qty,
                    "price_asked": line.price_asked,
                    "rejection_reason": line.rejection_reason,
                }
                for line in claim.lines
            ],
            "submissions": self.store.claim_attempts.get(claim.code, 0),
        }

    def control_claims(self) -> Response:
        with self.store.lock:
            claims = [self._claim_summary(c) for c in self.store.claims.values()]
            return _json(
                {
                    "claims": claims,
                    "submissions": dict(self.store.claim_attempts),
                    "accepted": dict(self.store.claim_accepted),
                }
            )

    def control_stats(self) -> Response:
        st = self.store
        with st.lock:
            return _json(
                {
                    "logins": {
                        "ok": st.login_ok,
                        "failed": st.login_failed,
                        "locked": time.time() < st.locked_until,
                    },
                    "api_calls": dict(st.api_calls),
                    "api_calls_total": sum(st.api_calls.values()),
                }
            )

    def control_seed(self) -> Response:
        """The seed table, so that humans and tests need not read the source."""
        st = self.store
        with st.lock:
            return _json(
                {
                    "facilities": [
                        {
                            "uuid": f.uuid,
                            "code": f.code,
                            "name": f.name,
                            "services": f.services,
                            "items": f.items,
                        }
                        for f in st.facilities
                    ],
                    "claim_admins": [
                        {"uuid": a.uuid, "code": a.code, "facility": a.facility_code} for a in st.admins
                    ],
                    "insurees": [
                        {
                            "uuid": i.uuid,
                            "chf_id": i.chf_id,
                            "historical": i.validity_to is not None,
                            "policies": [
                                {
                                    "uuid": p.uuid,
                                    "status": p.status,
                                    "start": p.effective_date.isoformat(),
                                    "expiry": p.expiry_date.isoformat(),
                                }
                                for p in st.policies_of(i)
                            ],
                        }
                        for i in st.insurees
                    ],
                    "services": [
                        {"uuid": s.uuid, "code": s.code, "name": s.name, "price": s.price}
                        for s in st.services
                    ],
                    "items": [
                        {"uuid": i.uuid, "code": i.code, "name": i.name, "price": i.price} for i in st.items
                    ],
                    "icd": st.icd,
                    "queued_prefix": QUEUED_PREFIX,
                    "claim_statuses": STATUS_BY_NAME,
                }
            )


def build_app(config: SandboxConfig) -> Flask:
    """Wire a Sandbox into a Flask app; the instance is in app.extensions['openimis_sandbox']."""
    app = Flask("mediator.sandbox")
    sandbox = Sandbox(config)
    app.extensions["openimis_sandbox"] = sandbox
    base = config.base_path
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]

    @app.route(base, defaults={"sub": ""}, methods=methods)
    @app.route(base + "<path:sub>", methods=methods)
    def api(sub: str) -> Response:
        return sandbox.handle(sub)

    app.add_url_rule("/_sandbox/adjudicate", "sb_adjudicate", sandbox.control_adjudicate, methods=["POST"])
    app.add_url_rule("/_sandbox/faults", "sb_faults", sandbox.control_faults, methods=["GET", "POST"])
    app.add_url_rule("/_sandbox/reset", "sb_reset", sandbox.control_reset, methods=["POST"])
    app.add_url_rule("/_sandbox/claims", "sb_claims", sandbox.control_claims)
    app.add_url_rule("/_sandbox/stats", "sb_stats", sandbox.control_stats)
    app.add_url_rule("/_sandbox/seed", "sb_seed", sandbox.control_seed)
    return app
