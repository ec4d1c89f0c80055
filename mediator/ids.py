"""Random identifiers for requests and claim records."""

from __future__ import annotations

import os
import threading

#: Ids drawn from one read of the OS's generator.
_IDS_PER_DRAW = 256


class RandomIds:
    """Version 4 UUIDs, as random as `uuid.uuid4()`'s, drawn from the OS a block at a time.

    `uuid.uuid4()` makes a system call for each id, and each system call lets go of the GIL:
    under load, getting it back costs a worker more than the id itself (~25 us of CPU, three
    ids per claim). A block is never shared with a forked child.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block = b""
        self._next = 0
        self._pid = 0

    def __call__(self) -> str:
        with self._lock:
            if self._next >= len(self._block) or self._pid != os.getpid():
                self._block = os.urandom(16 * _IDS_PER_DRAW)
                self._next = 0
                self._pid = os.getpid()
            raw = self._block[self._next : self._next + 16]
            self._next += 16
        h = raw.hex()
        # The version (4) and variant (RFC 4122) bits, as uuid.UUID(bytes=..., version=4) sets them.
        variant = "89ab"[int(h[16], 16) & 3]
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"
