"""OperationOutcome: how every error reaches a facility, with the field at fault."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Issue:
    code: str
    diagnostics: str
    expression: Sequence[str] = ()
    severity: str = "error"

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


def operation_outcome(issues: Sequence[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


@dataclass
class FhirError(Exception):
    """An answer that is an OperationOutcome; raised anywhere, rendered by the web layer."""

    status: int
    issues: Sequence[Issue]
    headers: Mapping[str, str] = field(default_factory=dict)
    #: For the transaction log: what kind of failure this was (client, upstream...).
    outcome: str = "error"

    def __str__(self) -> str:
        return f"{self.status}: " + "; ".join(i.diagnostics for i in self.issues)

    @classmethod
    def of(
        cls,
        status: int,
        code: str,
        diagnostics: str,
        expression: Sequence[str] = (),
        *,
        headers: Mapping[str, str] | None = None,
        outcome: str = "error",
    ) -> FhirError:
        return cls(status, [Issue(code, diagnostics, expression)], dict(headers or {}), outcome)
