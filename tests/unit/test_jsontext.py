"""The JSON text the mediator writes: what it stores, sends upstream and answers."""

from __future__ import annotations

import json

import pytest

from mediator.jsontext import compact_json, compact_json_bytes, parse_json
from tests.unit.claims.claim_fixtures import CLAIMS, load


@pytest.mark.parametrize("name", CLAIMS)
def test_claims_encode_to_the_standard_encoders_text(name: str) -> None:
    claim = load(name)
    standard = json.dumps(claim, separators=(",", ":"), ensure_ascii=False)
    assert compact_json(claim) == standard
    assert compact_json_bytes(claim) == standard.encode()


def test_non_ascii_text_is_written_as_utf8_and_reads_back() -> None:
    value = {"display": "Clinique de l'Étoile — 東京", "quantity": 2.5, "n": 2**70, "none": None}
    text = compact_json(value)
    assert "Étoile — 東京" in text
    assert json.loads(compact_json_bytes(value)) == value


def test_a_value_the_fast_encoder_refuses_is_still_encoded() -> None:
    # json.loads turns "\ud800" into a lone surrogate, which is not UTF-8.
    value = json.loads('{"display": "x\\ud800"}')
    assert compact_json(value) == '{"display":"x\ud800"}'
    with pytest.raises(UnicodeEncodeError):
        compact_json_bytes(value)


def test_sorted_keys_are_the_canonical_text() -> None:
    assert (
        compact_json({"b": 1, "a": {"d": [1, 2], "c": "é"}}, sort_keys=True)
        == '{"a":{"c":"é","d":[1,2]},"b":1}'
    )


@pytest.mark.parametrize("name", CLAIMS)
def test_the_sorted_text_of_a_claim_is_what_stored_content_hashes_were_made_of(name: str) -> None:
    claim = load(name)
    claim["extension"] = [{"url": "x", "valueDecimal": 1e-05}, {"url": "y", "valueInteger": 2**70}]
    standard = json.dumps(claim, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    assert compact_json(claim, sort_keys=True) == standard


@pytest.mark.parametrize("name", CLAIMS)
def test_bodies_parse_as_the_standard_library_parses_them(name: str) -> None:
    text = json.dumps(load(name), ensure_ascii=False).encode()
    assert parse_json(text) == json.loads(text)


@pytest.mark.parametrize(
    "body",
    [
        b'{"display": "x\\ud800"}',  # a lone surrogate escape
        b"[" * 150 + b"]" * 150,
        '{"display": "é"}'.encode("utf-16"),
        b'{"total": 1e400}',
    ],
)
def test_what_the_fast_parser_refuses_is_parsed_as_before(body: bytes) -> None:
    assert parse_json(body, allow_nan=False) == json.loads(body)


@pytest.mark.parametrize("body", [b'{"value": NaN}', b'{"value": -Infinity}', b"", b"[" * 5000])
def test_what_is_not_json_is_refused_as_before(body: bytes) -> None:
    with pytest.raises((ValueError, RecursionError)):
        parse_json(body, allow_nan=False)
