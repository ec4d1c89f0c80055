"""Group commit: concurrent writes of one process share transactions, and fail one by one."""

import sqlite3
import threading
import time
from contextlib import contextmanager

import pytest

from mediator.store import group_commit
from mediator.store.group_commit import GroupCommit


class Harness:
    """A GroupCommit over a real SQLite file, counting how often it took the write lock."""

    def __init__(self, path, lock_hold_s=0.0):
        self.path = path
        self.local = threading.local()
        self.lock_hold_s = lock_hold_s
        self.lock_entries = 0
        self.statements: list[str] = []
        self.fail_lock = False
        self.mutex = threading.Lock()
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
        self.group = GroupCommit(self.lock, self.connection)

    def connection(self):
        db = getattr(self.local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.set_trace_callback(self.statements.append)
            self.local.db = db
        return db

    @contextmanager
    def lock(self):
        with self.mutex:
            if self.fail_lock:
                raise OSError("disk gone")
            self.lock_entries += 1
            time.sleep(self.lock_hold_s)  # a slow commit: others queue up meanwhile
            yield

    def rows(self):
        with sqlite3.connect(self.path) as db:
            return dict(db.execute("SELECT k, v FROM t").fetchall())


def insert(key, value):
    return lambda db: db.execute("INSERT INTO t (k, v) VALUES (?, ?)", (key, value)).rowcount


def run_threads(target, count):
    results, errors = {}, {}

    def call(i):
        try:
            results[i] = target(i)
        except Exception as exc:
            errors[i] = exc

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    for t in threads:
        t.join(timeout=max(deadline - time.monotonic(), 0))
    assert not any(t.is_alive() for t in threads), "a writer never got its answer"
    return results, errors


def test_a_lone_write_is_committed_at_once(tmp_path):
    h = Harness(tmp_path / "db.sqlite3")
    assert h.group.run(insert("a", 1)) == 1
    assert h.rows() == {"a": 1}
    assert h.lock_entries == 1


def test_concurrent_writes_share_commits_and_each_gets_its_own_result(tmp_path):
    h = Harness(tmp_path / "db.sqlite3", lock_hold_s=0.01)
    results, errors = run_threads(lambda i: h.group.run(insert(f"k{i}", i)), 40)
    assert not errors
    assert results == {i: 1 for i in range(40)}
    assert h.rows() == {f"k{i}": i for i in range(40)}
    assert h.lock_entries < 40 / 2, f"{h.lock_entries} commits for 40 writes: not batched"


def test_a_failing_write_fails_alone(tmp_path):
    h = Harness(tmp_path / "db.sqlite3", lock_hold_s=0.01)
    h.group.run(insert("taken", 0))

    def write(i):
        key = "taken" if i == 3 else f"k{i}"  # write 3 breaks the primary key
        return h.group.run(insert(key, i))

    results, errors = run_threads(write, 12)
    assert set(errors) == {3} and isinstance(errors[3], sqlite3.IntegrityError)
    assert set(results) == set(range(12)) - {3}
    assert h.rows() == {"taken": 0, **{f"k{i}": i for i in range(12) if i != 3}}


def test_a_write_that_fails_halfway_in_a_batch_leaves_nothing_of_itself(tmp_path):
    h = Harness(tmp_path / "db.sqlite3", lock_hold_s=0.01)
    h.group.run(insert("taken", 0))

    def halfway(db):
        db.execute("INSERT INTO t (k, v) VALUES ('half', 1)")
        return insert("taken", 1)(db)  # breaks the primary key after a first statement

    # Write 5 queues behind the first commit (10 ms), so it runs in a batch with others.
    _, errors = run_threads(lambda i: h.group.run(halfway if i == 5 else insert(f"k{i}", i)), 8)
    assert set(errors) == {5} and isinstance(errors[5], sqlite3.IntegrityError)
    assert h.rows() == {"taken": 0, **{f"k{i}": i for i in range(8) if i != 5}}


def test_a_failed_commit_fails_every_write_of_the_batch_and_stores_none(tmp_path):
    h = Harness(tmp_path / "db.sqlite3")
    h.fail_lock = True
    results, errors = run_threads(lambda i: h.group.run(insert(f"k{i}", i)), 6)
    assert not results and len(errors) == 6
    assert all(isinstance(e, OSError) for e in errors.values())
    assert h.rows() == {}
    h.fail_lock = False
    assert h.group.run(insert("after", 1)) == 1, "the group recovers once the store does"


def test_the_lead_passes_on_so_that_no_writer_serves_others_forever(tmp_path, monkeypatch):
    monkeypatch.setattr(group_commit, "MAX_BATCHES_PER_LEADER", 1)
    h = Harness(tmp_path / "db.sqlite3", lock_hold_s=0.002)
    results, errors = run_threads(lambda i: h.group.run(insert(f"k{i}", i)), 30)
    assert not errors and len(results) == 30
    assert len(h.rows()) == 30


def test_a_batch_with_a_write_that_must_be_durable_is_fsynced(tmp_path):
    h = Harness(tmp_path / "db.sqlite3")
    h.group.run(insert("plain", 1))
    assert not any("synchronous=FULL" in s for s in h.statements)
    h.group.run(insert("held", 2), durable=True)
    full = [i for i, s in enumerate(h.statements) if s == "PRAGMA synchronous=FULL"]
    commit = max(i for i, s in enumerate(h.statements) if s == "COMMIT")
    assert full and full[0] < commit, "the commit of a durable write runs with synchronous=FULL"
    assert h.statements[-1] == "PRAGMA synchronous=NORMAL", "later commits are not fsynced"


@pytest.mark.parametrize("count", [1, 2])
def test_a_write_that_raises_something_else_reaches_its_caller(tmp_path, count):
    h = Harness(tmp_path / "db.sqlite3", lock_hold_s=0.01)

    def broken(db):
        raise ValueError("bug in a write")

    def write(i):
        return h.group.run(broken if i == 0 else insert(f"k{i}", i))

    results, errors = run_threads(write, count)
    assert isinstance(errors[0], ValueError) and set(results) == set(range(1, count))
    assert h.rows() == {f"k{i}": i for i in range(1, count)}


def _held_elsewhere(path, hold_s):
    """Another connection (as another worker would) holds SQLite's write lock for `hold_s`."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t (k, v) VALUES ('other', 0)")
    release = threading.Timer(hold_s, lambda: other.execute("COMMIT"))
    release.start()
    return release


@pytest.mark.parametrize("count", [1, 6])
def test_writes_wait_for_another_process_holding_the_write_lock(tmp_path, count):
    """The batch connection has no busy timeout: the group waits itself, lone write or batch."""
    h = Harness(tmp_path / "db.sqlite3", lock_hold_s=0.005)
    h.local.db = sqlite3.connect(h.path, timeout=0, isolation_level=None, check_same_thread=False)
    shared = h.local.db
    h.group = GroupCommit(h.lock, lambda: shared)
    release = _held_elsewhere(h.path, 0.15)
    started = time.monotonic()
    results, errors = run_threads(lambda i: h.group.run(insert(f"k{i}", i)), count)
    release.join()
    assert not errors, errors
    assert results == {i: 1 for i in range(count)}
    assert time.monotonic() - started >= 0.14, "the writes went in while the lock was held elsewhere"
    assert h.rows() == {"other": 0, **{f"k{i}": i for i in range(count)}}


def test_a_write_gives_up_on_a_lock_held_too_long_and_stores_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(group_commit, "BUSY_WAIT_LIMIT_S", 0.05)
    h = Harness(tmp_path / "db.sqlite3")
    shared = sqlite3.connect(h.path, timeout=0, isolation_level=None, check_same_thread=False)
    h.group = GroupCommit(h.lock, lambda: shared)
    release = _held_elsewhere(h.path, 0.5)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        h.group.run(insert("late", 1))
    release.join()
    assert h.rows() == {"other": 0}
    assert h.group.run(insert("after", 2)) == 1
