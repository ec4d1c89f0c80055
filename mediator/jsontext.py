"""JSON text as the mediator writes it: compact, UTF-8 as is.

Everything encoded on the hot path (answers, stored claims, bodies sent upstream, envelopes) is
data parsed from JSON or built from it. It is encoded by pydantic-core's serializer (the one
fhir.resources validates with, already loaded): a third of the time of the standard library's
encoder for a claim or a ClaimResponse (2-5 KB: 13-29 -> 4-11 us), three of which a claim pays.
The text is the standard encoder's but for the spelling of some floats (`1e-5` for `1e-05`,
both JSON); what it cannot encode (a lone surrogate) falls back to the standard encoder.

Bodies are parsed by pydantic-core's parser too (a quarter faster than `json.loads` on a 2-5 KB
body); what it refuses (a lone surrogate escape, nesting deeper than 200 levels, another
encoding than UTF-8) is parsed again by `json.loads`, so results and errors are the standard
library's.

Sorted keys (the canonical form a claim's content hash is made of) stay with the standard
encoder, whose exact text stored hashes depend on.
"""

from __future__ import annotations

import json
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from pydantic_core import PydanticSerializationError, from_json, to_json

#: Built once: `json.dumps` with options builds an encoder for every call (a microsecond, which
#: the canonical form of a claim, made of a dozen small encodings, paid a dozen times). Data
#: parsed from JSON cannot hold a reference cycle, so the cycle check is skipped.
_ENCODERS = {
    sort_keys: json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, check_circular=False, sort_keys=sort_keys
    )
    for sort_keys in (False, True)
}


#: The C encoder `JSONEncoder.encode` builds on every call, built once for the sorted form: the
#: canonical form of a claim is a dozen small encodings, for which building it was half the cost.
_SORTED_C_ENCODER = (
    c_make_encoder(None, _ENCODERS[True].default, encode_basestring, None, ":", ",", True, False, True)
    if c_make_encoder is not None
    else None
)


def compact_json(value: Any, sort_keys: bool = False) -> str:
    if sort_keys:
        if _SORTED_C_ENCODER is None:
            return _ENCODERS[True].encode(value)
        return "".join(_SORTED_C_ENCODER(value, 0))
    try:
        return to_json(value).decode()
    except PydanticSerializationError:
        return _ENCODERS[False].encode(value)


def compact_json_bytes(value: Any) -> bytes:
    """`compact_json(value)` as UTF-8, for a body sent as is."""
    try:
        return to_json(value)
    except PydanticSerializationError:
        return _ENCODERS[False].encode(value).encode()


def parse_json(data: bytes | str, allow_nan: bool = True) -> Any:
    """`json.loads(data)`; with `allow_nan=False`, NaN and Infinity are refused (ValueError)."""
    try:
        return from_json(data, allow_inf_nan=allow_nan)
    except ValueError:
        pass
    if allow_nan:
        return json.loads(data)
    return json.loads(data, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
