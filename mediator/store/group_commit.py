"""Group commit: the writes of concurrent requests of one process share one SQLite transaction.

Under load every claim makes two writes (the intake, then the answer). Committed one by one by
their own threads, the writes of a worker contend for SQLite's write lock (which keeps the
worker processes apart) and for the GIL at once. Here the first thread to arrive leads: it takes
the process's turn once for every write waiting at that moment, runs them in one transaction and
wakes their threads. Alone, a thread leads itself at once and pays nothing extra; under load,
one commit (and, when a write in the batch must be durable, one fsync) serves a whole batch.

A write that fails rolls back alone, so it never takes its neighbours down; a commit that fails
fails every write of its batch, none of which is then in the store. A write of several statements
makes them one with a savepoint of its own: a lone write runs in SQLite's autocommit.

When another process holds SQLite's write lock, the batch waits here, in short pauses, rather
than in SQLite's busy handler: that one sleeps a whole millisecond at its first try and longer
after, while every writer of this process queues behind the batch, for a lock that is mostly
held a tenth of that (two workers collided about once every eight claims under load). So the
batches' connection should have no busy timeout of its own.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

T = TypeVar("T")
#: A leader serves this many batches at most before handing the lead to a waiting thread, so that
#: no request waits long behind the writes of others.
MAX_BATCHES_PER_LEADER = 4
#: How long a batch waits for another process to let go of SQLite's write lock before it fails.
BUSY_WAIT_LIMIT_S = 30.0
#: The first pause before trying again, doubled after each try up to the longest pause.
FIRST_BUSY_PAUSE_S = 0.0001
LONGEST_BUSY_PAUSE_S = 0.002


class Write(Generic[T]):
    """One write waiting for its batch: a function of the batch's connection."""

    __slots__ = ("apply", "done", "durable", "error", "lead", "result")

    def __init__(self, apply: Callable[[sqlite3.Connection], T], durable: bool) -> None:
        self.apply = apply
        self.durable = durable
        self.result: T | None = None
        self.error: BaseException | None = None
        #: Held while the write waits for its batch, released by the thread that committed it
        #: (a bare lock: an Event costs a Condition and its bookkeeping for each wait).
        self.done: threading.Lock | None = None
        self.lead = False

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit:
    """Batches the writes of one process's threads; `lock()` is the process's turn to write."""

    def __init__(
        self,
        lock: Callable[[], AbstractContextManager[None]],
        connection: Callable[[], sqlite3.Connection],
    ) -> None:
        self._lock = lock
        self._connection = connection
        self._mutex = threading.Lock()
        self._waiting: list[Write[Any]] = []
        self._leading = False

    def run(self, apply: Callable[[sqlite3.Connection], T], durable: bool = False) -> T:
        """Run `apply` in a committed transaction (synchronous=FULL if `durable`); its result.

        `apply` that runs several statements makes them one with a savepoint: alone, it runs in
        SQLite's autocommit, where each statement commits."""
        write: Write[T] = Write(apply, durable)
        with self._mutex:
            self._waiting.append(write)
            if self._leading:
                write.done = threading.Lock()
                write.done.acquire()
            else:
                self._leading = True
        if write.done is not None:
            write.done.acquire()  # until the batch is committed, or this thread is to lead
            if not write.lead:
                return write.outcome()
        self._lead()
        return write.outcome()

    def _lead(self) -> None:
        for _ in range(MAX_BATCHES_PER_LEADER):
            with self._mutex:
                batch, self._waiting = self._waiting, []
                if not batch:
                    self._leading = False
                    return
            self._commit(batch)
        with self._mutex:
            if not self._waiting:
                self._leading = False
                return
            successor = self._waiting[0]
        # Still leading (`_leading` stays set): the first waiting thread takes over.
        successor.lead = True
        assert successor.done is not None
        successor.done.release()

    def _commit(self, batch: list[Write[Any]]) -> None:
        db = self._connection()
        durable = any(w.durable for w in batch)
        try:
            with self._lock():
                if durable:
                    db.execute("PRAGMA synchronous=FULL")
                try:
                    _transaction(db, batch)
                finally:
                    if durable:
                        db.execute("PRAGMA synchronous=NORMAL")
        except BaseException as exc:  # the commit failed: nothing of the batch is stored
            for write in batch:
                if write.error is None:
                    write.error = exc
        for write in batch:
            if write.done is not None and not write.lead:
                write.done.release()


def _transaction(db: sqlite3.Connection, batch: list[Write[Any]]) -> None:
    """Each SQLite call lets go of the GIL, and under load getting it back means waiting for
    another thread, while this one holds SQLite's write lock (inside a transaction) and the
    process's turn. So a batch makes as few calls as it can: a lone write is its own transaction
    (SQLite's autocommit), a batch runs without a savepoint per write, and only a batch in which
    a write fails is run again with one, so that the failing write fails alone. A write of
    several statements makes them one with a savepoint of its own."""
    if len(batch) == 1 and not batch[0].durable:
        write = batch[0]
        try:
            # Nothing of a lone write is stored when it finds the lock taken: it runs again.
            write.result = _when_unlocked(lambda: write.apply(db))
        except Exception as exc:
            write.error = exc
        return
    if not _in_one_transaction(db, batch, savepoints=False):
        _in_one_transaction(db, batch, savepoints=True)


def _in_one_transaction(db: sqlite3.Connection, batch: list[Write[Any]], savepoints: bool) -> bool:
    """The batch in one committed transaction; False, with nothing stored, if a write failed
    without a savepoint of its own (with one, it is rolled back alone and keeps its error)."""
    _when_unlocked(lambda: db.execute("BEGIN IMMEDIATE"))
    try:
        for write in batch:
            if not savepoints:
                write.result = write.apply(db)
                continue
            write.result, write.error = None, None
            db.execute("SAVEPOINT write")
            try:
                write.result = write.apply(db)
            except Exception as exc:
                db.execute("ROLLBACK TO write")
                write.error = exc
            db.execute("RELEASE write")
    except Exception:
        _roll_back(db)
        if savepoints:
            raise
        return False
    except BaseException:
        _roll_back(db)
        raise
    _commit_or_roll_back(db)
    return True


def _when_unlocked(step: Callable[[], T]) -> T:
    """`step()`, tried again after a pause for as long as another process holds the write lock."""
    pause, deadline = FIRST_BUSY_PAUSE_S, None
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            now = time.monotonic()
            deadline = deadline if deadline is not None else now + BUSY_WAIT_LIMIT_S
            if now >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, LONGEST_BUSY_PAUSE_S)


def _commit_or_roll_back(db: sqlite3.Connection) -> None:
    try:
        db.execute("COMMIT")
    except BaseException:
        _roll_back(db)
        raise


def _roll_back(db: sqlite3.Connection) -> None:
    """Unless SQLite already did (it rolls a transaction back itself on some errors)."""
    if db.in_transaction:
        db.execute("ROLLBACK")
