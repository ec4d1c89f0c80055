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


#: The transaction log's `outcome` of a client error (4xx), by HTTP status: one word per kind of
#: refusal; the issues logged with it say what exactly was wrong.
CLIENT_OUTCOMES = {
    400: "invalid",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    413: "too-large",
    414: "too-large",
    415: "not-supported",
    422: "invalid",
    431: "too-large",
}


def client_outcome(status: int) -> str:
    return CLIENT_OUTCOMES.get(status, "invalid")


def operation_outcome(issues: Sequence[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


@dataclass
class FhirError(Exception):
    """An answer that is an OperationOutcome; raised anywhere, rendered by the web layer."""

    status: int
    issues: Sequence[Issue]
    headers: Mapping[str, str] = field(default_factory=dict)
    #: For the transaction log, of a 5xx: what kind of failure this was. A client error's (4xx)
    #: outcome is its status's, from CLIENT_OUTCOMES: one vocabulary wherever it is raised.
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
