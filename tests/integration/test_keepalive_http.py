"""Clients that keep their connections open: a refused request must not hold a worker thread."""

import socket
import time
from urllib.parse import urlsplit

BODY = b'{"resourceType": "Claim"}'


def test_idle_keepalive_clients_whose_request_was_refused_do_not_take_the_threads(mediator):
    """A POST refused on its headers (415 here) whose body arrives after the headers, from a
    client that then keeps the connection idle, as HTTP connection pools do. More such clients
    than the mediator has threads (2 workers x 8): others must still be served."""
    host, port = urlsplit(mediator.url).hostname, urlsplit(mediator.url).port
    idle = []
    try:
        for _ in range(40):
            conn = socket.create_connection((host, port), timeout=10)
            idle.append(conn)
            conn.sendall(
                b"POST /fhir/Claim HTTP/1.1\r\nHost: mediator\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\n\r\n" % len(BODY)
            )
            time.sleep(0.01)  # the body in a later packet, as many clients send it
            conn.sendall(BODY)
            assert conn.recv(65536).startswith(b"HTTP/1.1 415"), "each refused request is answered"

        started = time.monotonic()
        with socket.create_connection((host, port), timeout=10) as other:
            other.sendall(b"GET /health HTTP/1.1\r\nHost: mediator\r\nConnection: close\r\n\r\n")
            assert other.recv(65536).startswith(b"HTTP/1.1 200"), "another client is served"
        assert time.monotonic() - started < 2
    finally:
        for conn in idle:
            conn.close()
