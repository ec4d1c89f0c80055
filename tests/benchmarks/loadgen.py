"""A small closed-loop HTTP/1.1 load generator: keep-alive sockets, pre-rendered requests.

Each client is a thread with its own connection that sends one request, reads the answer and
sends the next (closed loop, no think time). Clients are spread over a few forked processes so
that the generator's own CPU (a few tens of microseconds per request) is not the bottleneck; the
benchmark measures it against the upstream directly as a sanity figure. Every answer's status is
checked; bodies are parsed (resource type, OpenHIM envelope) for a sample, or for all in smoke
mode. Bounded in time (`duration`) and in count (`max_requests`).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import threading
import time
import uuid
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)")
#: In a full run, the bodies of the first answers of every client and of one answer in this many
#: are parsed and checked; every status code is checked.
BODY_CHECK_EVERY = 50
#: A request without an answer for this long counts as failed (and its connection is dropped).
SOCKET_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Plan:
    """One kind of request against one server (picklable: it crosses into the load processes)."""

    host: str
    port: int
    method: str
    path: str
    body: bytes | None = None
    #: Bodies to choose from, one per request (instead of `body`).
    bodies: tuple[bytes, ...] = ()
    #: Replace this placeholder in the body by a code unique to the request (claim codes).
    placeholder: bytes | None = None
    #: Send `X-OpenHIM-TransactionID` (a unique id) and expect the OpenHIM envelope back.
    openhim: bool = False
    content_type: str = "application/fhir+json"
    expect_status: int = 200
    expect_type: str | None = None
    #: Further servers (replicas of the one at `port`): each client keeps a keep-alive
    #: connection to every one and sends its requests to them in turn, as a balancer would.
    also_ports: tuple[int, ...] = ()

    def render(self, unique: str) -> bytes:
        body = (
            self.bodies[zlib.crc32(unique.encode()) % len(self.bodies)] if self.bodies else self.body or b""
        )
        if self.placeholder is not None:
            body = body.replace(self.placeholder, unique.encode())
        head = [
            f"{self.method} {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Accept: application/fhir+json",
            "User-Agent: openimis-mediator-benchmark",
        ]
        if self.body is not None or self.bodies:
            head += [f"Content-Type: {self.content_type}", f"Content-Length: {len(body)}"]
        if self.openhim:
            head.append(f"X-OpenHIM-TransactionID: {unique}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def check_answer(plan: Plan, status: int, head: bytes, body: bytes) -> str | None:
    """None if the answer is what the plan expects, else why not."""
    if status != plan.expect_status:
        return f"status {status} (expected {plan.expect_status}): {body[:300]!r}"
    if plan.expect_type is None:
        return None
    try:
        resource = json.loads(body)
        if plan.openhim:
            if b"application/json+openhim" not in head.lower():
                return "no application/json+openhim content type on an OpenHIM request"
            inner = resource["response"]
            if inner["status"] != plan.expect_status:
                return f"envelope response.status {inner['status']}"
            if not resource.get("orchestrations"):
                return "envelope without orchestrations"
            resource = json.loads(inner["body"])
        got = resource.get("resourceType")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"unreadable answer ({type(exc).__name__}): {body[:300]!r}"
    return None if got == plan.expect_type else f"resourceType {got!r} (expected {plan.expect_type})"


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock: socket.socket | None = None
        self.buf = bytearray()

    def _open(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=SOCKET_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = sock, bytearray()
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def _fill(self, sock: socket.socket) -> None:
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def exchange(self, request: bytes) -> tuple[int, bytes, bytes]:
        sock = self.sock or self._open()
        sock.sendall(request)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            self._fill(sock)
        head = bytes(buf[: end + 2])
        del buf[: end + 4]
        status = int(head[9:12])
        lower = head.lower()
        match = _CONTENT_LENGTH.search(lower)
        if match:
            length = int(match.group(1))
            while len(buf) < length:
                self._fill(sock)
            body = bytes(buf[:length])
            del buf[:length]
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = self._chunked(sock)
        else:  # delimited by the end of the connection
            try:
                while True:
                    self._fill(sock)
            except ConnectionError:
                pass
            body = bytes(buf)
            self.close()
            return status, head, body
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, head, body

    def _chunked(self, sock: socket.socket) -> bytes:
        buf, parts = self.buf, []
        while True:
            while (eol := buf.find(b"\r\n")) < 0:
                self._fill(sock)
            size = int(bytes(buf[:eol]).split(b";")[0], 16)
            del buf[: eol + 2]
            while len(buf) < size + 2:
                self._fill(sock)
            parts.append(bytes(buf[:size]))
            del buf[: size + 2]
            if size == 0:
                return b"".join(parts)


def run_clients(
    plan: Plan,
    threads: int,
    duration: float,
    max_requests: int,
    start_at: float,
    tag: str,
    check_all: bool,
) -> dict[str, Any]:
    """Run `threads` closed-loop clients in this process; start at wall time `start_at`."""
    per_thread = max(1, math.ceil(max_requests / threads))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    counts = {"ok": 0, "failed": 0, "in_window": 0}
    spans: list[tuple[float, float]] = []

    def client(index: int) -> None:
        ports = (plan.port, *plan.also_ports)
        # clients start on different replicas, so that at any moment each has its share
        conns = [_Connection(plan.host, ports[(index + i) % len(ports)]) for i in range(len(ports))]
        mine: list[float] = []
        ok = failed = 0
        my_errors: list[str] = []
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        begun = time.perf_counter()
        deadline = begun + duration
        n = in_window = 0
        try:
            while n < per_thread and time.perf_counter() < deadline:
                unique = f"{tag}{index:02d}x{n}"
                request = plan.render(unique)
                n += 1
                conn = conns[n % len(conns)]
                t0 = time.perf_counter()
                try:
                    status, head, body = conn.exchange(request)
                except OSError as exc:
                    conn.close()
                    failed += 1
                    in_window += time.perf_counter() <= deadline
                    if len(my_errors) < 5:
                        my_errors.append(f"connection error: {exc!r}")
                    continue
                t1 = time.perf_counter()
                mine.append(t1 - t0)
                in_window += t1 <= deadline
                if status != plan.expect_status or check_all or n <= 3 or n % BODY_CHECK_EVERY == 0:
                    problem = check_answer(plan, status, head, body)
                    if problem is not None:
                        failed += 1
                        if len(my_errors) < 5:
                            my_errors.append(problem)
                        continue
                ok += 1
        finally:
            ended = time.perf_counter()
            for conn in conns:
                conn.close()
            with lock:
                latencies.extend(mine)
                counts["ok"] += ok
                counts["failed"] += failed
                counts["in_window"] += in_window
                errors.extend(my_errors)
                spans.append((begun, ended))

    cpu0 = os.times()
    workers = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    cpu1 = os.times()
    return {
        "latencies": latencies,
        "ok": counts["ok"],
        "failed": counts["failed"],
        "in_window": counts["in_window"],
        "errors": errors[:10],
        "elapsed": max(e for _, e in spans) - min(b for b, _ in spans),
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
    }


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def run_load(
    plan: Plan,
    concurrency: int,
    duration: float,
    max_requests: int,
    check_all: bool = False,
    processes: int | None = None,
) -> dict[str, Any]:
    """Drive `plan` with `concurrency` clients; `processes=0` keeps them in this process."""
    if processes is None:
        processes = min(concurrency, os.cpu_count() or 1)
    tag = "B" + uuid.uuid4().hex[:10]
    if processes == 0:
        parts = [run_clients(plan, concurrency, duration, max_requests, time.time(), tag, check_all)]
    else:
        sizes = [
            concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)
        ]
        start_at = time.time() + 0.2 + 0.05 * processes
        with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("fork")) as pool:
            futures = [
                pool.submit(
                    run_clients,
                    plan,
                    size,
                    duration,
                    max(1, max_requests * size // concurrency),
                    start_at,
                    f"{tag}p{i}t",
                    check_all,
                )
                for i, size in enumerate(sizes)
            ]
            parts = [f.result() for f in futures]
    latencies = sorted(x for p in parts for x in p["latencies"])
    ok = sum(p["ok"] for p in parts)
    failed = sum(p["failed"] for p in parts)
    elapsed = max(p["elapsed"] for p in parts)
    done = ok + failed
    # Throughput over the measurement window: a request gunicorn leaves unanswered (seen under
    # keep-alive, from every server here) stalls one client until its socket times out, and
    # must not stretch the window of all the others.
    in_window = sum(p["in_window"] for p in parts)
    return {
        "concurrency": concurrency,
        "requests": done,
        "ok": ok,
        "failed": failed,
        "errors": [e for p in parts for e in p["errors"]][:10],
        "elapsed_s": elapsed,
        "rps": in_window / min(duration, elapsed) if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": (sum(latencies) / len(latencies) * 1000) if latencies else math.nan,
        "loadgen_cpu_ms_per_req": sum(p["cpu_s"] for p in parts) * 1000 / done if done else math.nan,
    }
