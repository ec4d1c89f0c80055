"""Claims that openIMIS really parses (copied from its FHIR module's tests), for the claim tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
CLAIMS = [
    "test_claim.json",
    "test_claim_with_code_references.json",
    "test_claim_contained.json",
    "Claim-Claim001.json",
]


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())
