"""Request and record ids: random version 4 UUIDs, never repeated across threads or forks."""

import os
import threading
import uuid

import pytest

from mediator.ids import RandomIds


def test_ids_are_random_version_4_uuids():
    ids = RandomIds()
    drawn = [ids() for _ in range(1000)]  # several blocks
    assert len(set(drawn)) == len(drawn)
    for text in drawn[:10] + drawn[-10:]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_threads_never_get_the_same_id():
    ids = RandomIds()
    drawn: list[str] = []
    lock = threading.Lock()

    def draw():
        mine = [ids() for _ in range(2000)]
        with lock:
            drawn.extend(mine)

    threads = [threading.Thread(target=draw) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(drawn) == 16000 and len(set(drawn)) == 16000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_does_not_repeat_its_parents_ids():
    ids = RandomIds()
    ids()  # the parent holds a block of ids it has not handed out yet
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        os.close(read_end)
        os.write(write_end, "\n".join(ids() for _ in range(5)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = pipe.read().split("\n")
    os.waitpid(pid, 0)
    parent = [ids() for _ in range(5)]
    assert len(child) == 5 and not set(child) & set(parent)
