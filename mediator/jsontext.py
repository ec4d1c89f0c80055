"""JSON text as the mediator writes it: compact, UTF-8 as is.

Everything encoded on the hot path (answers, stored claims, bodies sent upstream, envelopes) is
data parsed from JSON or built from it, which cannot hold a reference cycle, so the encoder's
cycle check (a fifth of the encoding time of a 27 KB Bundle) is skipped.
"""

from __future__ import annotations

import json
from typing import Any

#: Built once: `json.dumps` with options builds an encoder for every call (a microsecond, which
#: the canonical form of a claim, made of a dozen small encodings, paid a dozen times).
_ENCODERS = {
    sort_keys: json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, check_circular=False, sort_keys=sort_keys
    )
    for sort_keys in (False, True)
}


def compact_json(value: Any, sort_keys: bool = False) -> str:
    return _ENCODERS[sort_keys].encode(value)
