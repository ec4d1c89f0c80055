"""The bare pass-through baseline: Flask + one pooled `requests.Session` per worker, nothing else.

It forwards `/fhir/<Type>` to the upstream's `<Type>/` with the same method, query and body and
hands back the upstream's status and body: the floor of any Python mediator hop.

    BENCH_UPSTREAM_FHIR=http://127.0.0.1:<port>/api/api_fhir_r4/ gunicorn ... tests.benchmarks.passthrough:app
"""

from __future__ import annotations

import os

import requests
from flask import Flask, Response, request
from requests.adapters import HTTPAdapter

UPSTREAM = os.environ["BENCH_UPSTREAM_FHIR"]

_session = requests.Session()
_adapter = HTTPAdapter(pool_connections=2, pool_maxsize=16)
_session.mount("http://", _adapter)
_session.mount("https://", _adapter)

app = Flask(__name__)


@app.route("/fhir/<path:sub>", methods=["GET", "POST"])
def hop(sub: str) -> Response:
    url = UPSTREAM + sub + "/"
    if request.query_string:
        url += "?" + request.query_string.decode("latin-1")
    headers = {"Accept": "application/json", "Authorization": "Bearer benchmark"}
    body = None
    if request.method == "POST":
        body = request.get_data()
        headers["Content-Type"] = "application/json"
    r = _session.request(
        request.method, url, data=body, headers=headers, timeout=(5, 30), allow_redirects=False
    )
    return Response(
        r.content, status=r.status_code, content_type=r.headers.get("Content-Type", "application/json")
    )
