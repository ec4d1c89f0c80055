"""The JSON log: one object per line, whatever a field holds."""

import datetime
import io
import json
import logging
import os
import threading

import pytest

from mediator.logs import json_handler, transaction_id


@pytest.fixture
def logged():
    stream = io.StringIO()
    handler = json_handler()
    handler.setStream(stream)
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    token = transaction_id.set("tx-1")
    try:
        yield logger, stream
    finally:
        transaction_id.reset(token)
        logger.removeHandler(handler)


def lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_transaction_line_carries_its_fields_its_id_and_a_utc_time(logged):
    logger, stream = logged
    logger.info(
        "transaction",
        extra={
            "status": 201,
            "duration_ms": 1.25,
            "outcome": "positive",
            "openhim_status": None,
            "upstream": [{"name": "openIMIS claim submit", "status": 201}],
            "properties": {"facility": "Clínica São José", "total_claimed": 30.0},
        },
    )
    (line,) = lines(stream)
    assert line["level"] == "INFO" and line["logger"] == "test.logs" and line["message"] == "transaction"
    assert line["transaction_id"] == "tx-1"
    assert line["status"] == 201 and line["duration_ms"] == 1.25 and line["openhim_status"] is None
    assert line["upstream"] == [{"name": "openIMIS claim submit", "status": 201}]
    assert line["properties"] == {"facility": "Clínica São José", "total_claimed": 30.0}
    assert datetime.datetime.fromisoformat(line["time"]).utcoffset() == datetime.timedelta(0)


def test_fields_json_cannot_hold_are_written_as_text(logged):
    logger, stream = logged
    when = datetime.datetime(2026, 11, 26, 5, 0, tzinfo=datetime.UTC)
    logger.info("odd", extra={"when": when, "error": ValueError("boom"), "lone": "\ud800"})
    (line,) = lines(stream)
    assert line["when"] == "2026-11-26T05:00:00+00:00"
    assert "boom" in line["error"]
    assert line["lone"] == "\ud800"


def test_an_exception_is_logged_with_its_traceback_and_without_secrets(logged):
    logger, stream = logged
    try:
        raise RuntimeError("login failed with Bearer abcdefghijklmnop")
    except RuntimeError:
        logger.exception("upstream failure")
    (line,) = lines(stream)
    assert "RuntimeError" in line["exc_info"] and "abcdefghijklmnop" not in stream.getvalue()


def _log_from_threads(handler, threads=8, per_thread=300, size=100):
    logger = logging.getLogger(f"test.logs.whole.{id(handler)}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def write(t):
        for i in range(per_thread):
            logger.info("transaction", extra={"writer": t, "i": i, "body": "x" * size})

    workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    logger.removeHandler(handler)


@pytest.mark.parametrize("size", [100, 20_000])
def test_lines_logged_by_many_threads_at_once_to_a_file_stay_whole(tmp_path, size):
    path = tmp_path / "mediator.log"
    with path.open("w") as stream:
        handler = json_handler()
        handler.setStream(stream)
        _log_from_threads(handler, size=size)
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(written) == 8 * 300
    assert {(line["writer"], line["i"]) for line in written} == {(t, i) for t in range(8) for i in range(300)}


def test_lines_logged_by_many_threads_to_a_pipe_stay_whole(tmp_path):
    read_end, write_end = os.pipe()
    received = []
    reader = threading.Thread(
        target=lambda: received.append(b"".join(iter(lambda: os.read(read_end, 65536), b"")))
    )
    reader.start()
    with os.fdopen(write_end, "w") as stream:
        handler = json_handler()
        handler.setStream(stream)
        _log_from_threads(handler, size=1000)
    reader.join()
    os.close(read_end)
    written = [json.loads(line) for line in received[0].decode().splitlines()]
    assert len(written) == 8 * 300 and all(line["body"] == "x" * 1000 for line in written)
