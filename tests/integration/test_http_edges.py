"""Requests a facility system should not send, on raw sockets to the real gunicorn-served
mediator: whatever arrives, the answer is a FHIR OperationOutcome, never an HTML page or a 500."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def outcome(self) -> dict:
        assert self.headers["content-type"].startswith("application/fhir+json"), self
        resource = json.loads(self.body)
        assert resource["resourceType"] == "OperationOutcome"
        return resource


def send_raw(mediator, data: bytes) -> RawAnswer:
    """Send bytes as they are (no client library to escape or refuse them) and read one answer."""
    address = urlsplit(mediator.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
        conn.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(65536)
            assert chunk, f"connection closed without an answer: {received!r}"
            received += chunk
        head, body = received.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
    return RawAnswer(int(status_line.split()[1]), headers, body[:length])


def request(method: str, target: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    lines = [
        method.encode() + b" " + target + b" HTTP/1.1",
        b"Host: mediator",
        *headers,
        b"Connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def test_raw_bytes_that_are_not_utf8_in_a_query_string_are_a_400_naming_the_parameter(mediator):
    answer = send_raw(mediator, request("GET", b"/fhir/Patient?identifier=\xff"))
    assert answer.status == 400
    (issue,) = answer.outcome()["issue"]
    assert issue["code"] == "invalid" and issue["expression"] == ["identifier"]
    assert "UTF-8" in issue["diagnostics"]
    assert "Traceback" not in mediator.log()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_empty_path_segment_is_a_404_outcome_not_an_html_redirect(mediator, method):
    body = b'{"resourceType": "Claim"}'
    answer = send_raw(
        mediator,
        request(
            method,
            b"/fhir//Claim",
            b"Content-Type: application/fhir+json",
            b"Content-Length: %d" % len(body),
            body=body,
        ),
    )
    assert answer.status == 404 and "location" not in answer.headers
    (issue,) = answer.outcome()["issue"]
    assert issue["code"] == "not-found" and "empty path segment" in issue["diagnostics"]


def chunked(body: bytes, size: int = 16384) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def eligibility_request(padding: int) -> bytes:
    """Well-formed JSON of any length (the padding is whitespace), invalid as a resource."""
    return b'{"resourceType": "CoverageEligibilityRequest"' + b" " * padding + b"}"


def post_chunked(mediator, body: bytes) -> RawAnswer:
    return send_raw(
        mediator,
        request(
            "POST",
            b"/fhir/CoverageEligibilityRequest",
            b"Content-Type: application/fhir+json",
            b"Transfer-Encoding: chunked",
            body=chunked(body),
        ),
    )


def test_a_chunked_body_over_the_limit_is_a_413_like_one_with_a_content_length(mediator):
    limit = int(mediator.env["MEDIATOR_MAX_BODY_BYTES"])
    answer = post_chunked(mediator, eligibility_request(limit + 1000))
    assert answer.status == 413
    (issue,) = answer.outcome()["issue"]
    assert issue["code"] == "too-costly" and str(limit) in issue["diagnostics"]


def test_a_chunked_body_within_the_limit_is_read_whole(mediator):
    limit = int(mediator.env["MEDIATOR_MAX_BODY_BYTES"])
    for padding in (10, limit - 100):  # the whole body parsed: the resource is checked (422)
        answer = post_chunked(mediator, eligibility_request(padding))
        assert answer.status == 422, answer.body
        assert any(
            i["expression"] == ["CoverageEligibilityRequest.patient"] for i in answer.outcome()["issue"]
        )


@pytest.mark.parametrize(
    ("raw", "status", "code", "words"),
    [
        (
            request("GET", b"/fhir/Patient?identifier=" + b"9" * 9000),
            400,
            "too-long",
            "Request Line is too large",
        ),
        (request("GET", b"/fhir/metadata", b"X-Big: " + b"a" * 9000), 431, "too-long", "8190 bytes each"),
        (
            request("GET", b"/fhir/metadata", *[b"X-H%d: 1" % i for i in range(120)]),
            431,
            "too-long",
            "100 header",
        ),
        (request("POST", b"/fhir/Claim", b"Content-Length: abc"), 400, "invalid", "CONTENT-LENGTH"),
        (b"GET /fhir/metadata HTTP/3.0\r\nHost: mediator\r\n\r\n", 400, "invalid", "HTTP Version"),
    ],
    ids=["request-line", "header-size", "header-count", "content-length", "http-version"],
)
def test_what_gunicorn_refuses_before_the_application_is_answered_in_fhir(mediator, raw, status, code, words):
    answer = send_raw(mediator, raw)
    assert answer.status == status
    (issue,) = answer.outcome()["issue"]
    assert issue["code"] == code and words in issue["diagnostics"]
    request_id = answer.headers["x-request-id"]
    logged = [json.loads(line) for line in mediator.log().splitlines() if request_id in line]
    assert {line["logger"] for line in logged} == {"gunicorn.error", "mediator.transaction"}
    assert [line["status"] for line in logged if line["message"] == "transaction"] == [status]
