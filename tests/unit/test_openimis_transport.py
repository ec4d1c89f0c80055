"""The openIMIS adapter against real local servers: what it remembers per pool never changes what
a call does (its answer, its TLS verification, its proxy)."""

import http.server
import shutil
import ssl
import subprocess
import threading

import pytest
import requests

from mediator.openimis.transport import OpenImisAdapter


class Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = b'{"resourceType":"Bundle"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Set-Cookie", "sessionid=abc")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    Recorder.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def get(adapter, url, verify=True, proxies=None):
    prepared = requests.Request("GET", url).prepare()
    response = adapter.send(prepared, timeout=(2, 5), verify=verify, proxies=proxies or {})
    assert response.content is not None  # read to the end: the connection goes back to its pool
    return response


def test_answers_are_those_of_requests_own_adapter(server):
    url = f"http://127.0.0.1:{server.server_port}/api/api_fhir_r4/Medication/?_count=2"
    ours, theirs = get(OpenImisAdapter(), url), get(requests.adapters.HTTPAdapter(), url)
    for r in (ours, theirs):
        assert (r.status_code, r.reason, r.url, r.encoding) == (200, "OK", url, "utf-8")
        assert r.content == b'{"resourceType":"Bundle"}' and r.headers["content-type"].startswith(
            "application/json"
        )
    assert Recorder.seen == ["/api/api_fhir_r4/Medication/?_count=2"] * 2


def test_calls_share_one_pool_which_is_rebuilt_after_close(server):
    adapter = OpenImisAdapter()
    base = f"http://127.0.0.1:{server.server_port}/api/"
    assert [get(adapter, base + path).status_code for path in ("a", "b", "c")] == [200] * 3
    assert len(adapter.poolmanager.pools) == 1
    adapter.close()
    assert get(adapter, base + "d").status_code == 200, "a closed pool is not used again"


def test_with_a_proxy_calls_go_through_the_proxy(server):
    target = "http://openimis.invalid/api/api_fhir_r4/Patient/?identifier=070707070"
    proxy = f"http://127.0.0.1:{server.server_port}"
    assert get(OpenImisAdapter(), target, proxies={"http": proxy}).status_code == 200
    assert Recorder.seen == [target], "the proxy got the absolute URL"


@pytest.fixture
def tls_server(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_port}/api/", str(cert)
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_on_every_call_whatever_was_verified_before(tls_server):
    base, ca = tls_server
    adapter = OpenImisAdapter()
    assert get(adapter, base + "a", verify=ca).status_code == 200  # the server's own certificate
    with pytest.raises(requests.exceptions.SSLError):
        get(adapter, base + "b", verify=True)  # the system's CAs do not know it
    assert get(adapter, base + "c", verify=ca).status_code == 200
    assert get(adapter, base + "d", verify=False).status_code == 200  # turned off by the operator
    with pytest.raises(requests.exceptions.SSLError):
        get(adapter, base + "e", verify=True)
