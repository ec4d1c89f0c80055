"""Insuree number -> the current insuree's UUID, remembered for a while.

openIMIS resolves a reference by insuree number to the *first* row with that number, which can
be a historical one (the claim is then rejected), so claims are sent with the current row's
UUID. That UUID is stable (openIMIS gives history rows new UUIDs and keeps the current one), so
a worker remembers it instead of asking openIMIS again for every claim of the same insuree.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient
from mediator.openimis.errors import OpenImisBroken
from mediator.openimis.identifiers import openimis_uuid
from mediator.openimis.reads import find_by_identifier

TTL_S = 600.0
MAX_ENTRIES = 50_000


class InsureeNumbers:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._known: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def current_uuid(
        self, client: OpenImisClient, insuree_number: str, recorder: OrchestrationRecorder
    ) -> str | None:
        """The UUID of the current insuree with this number, or None if openIMIS knows none."""
        now = self._clock()
        with self._lock:
            known = self._known.get(insuree_number)
            if known is not None and known[1] > now:
                return known[0]
        patient = find_by_identifier(
            client, "Patient", insuree_number, recorder, "openIMIS insuree lookup (claim patient)"
        )
        if patient is None:
            return None  # unknown insurees are not remembered: they may be enrolled any minute
        uuid = openimis_uuid(patient)  # not `id`: openIMIS puts the insuree number there
        if uuid is None:
            raise OpenImisBroken("openIMIS Patient has no UUID identifier")
        with self._lock:
            self._known[insuree_number] = (uuid, now + TTL_S)
            self._known.move_to_end(insuree_number)
            while len(self._known) > MAX_ENTRIES:
                self._known.popitem(last=False)
        return uuid
