"""Configuration of the embedded openIMIS sandbox.

Defaults match a stock openIMIS 24.04 demo deployment (Admin/admin123, one-day tokens,
5 failed logins lock the account for 5 minutes) except the request budget, which is off
by default so that tests are not throttled unless they ask for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

EligibilityMode = Literal["working", "failing"]
AdjudicationMode = Literal["immediate", "deferred"]
LinkStyle = Literal["quote_plus", "plain"]


@dataclass
class SandboxConfig:
    """Static settings of one sandbox app; runtime faults live in the store instead."""

    username: str = "Admin"
    password: str = "admin123"
    token_lifetime_s: int = 86400
    # None = unlimited. Production openIMIS: 150 requests/min per client IP, then 429.
    request_budget_per_minute: int | None = None
    login_lock_after: int = 5
    login_lock_s: int = 300
    # "failing" = PostgreSQL 24.04: 500 for insurees with an active policy.
    eligibility_mode: EligibilityMode = "working"
    # "deferred": every claim stays entered (status 2, outcome queued) until
    # POST /_sandbox/adjudicate. Claim codes starting with QUEUED_PREFIX always do.
    claim_adjudication: AdjudicationMode = "immediate"
    base_path: str = "/api/api_fhir_r4/"
    # Identifier type codes accepted for the claim code (backend setting
    # fhir_code_for_imis_claim_code_type is "MR" by default; the IG and tests use "Code").
    claim_code_types: tuple[str, ...] = ("MR", "Code")
    # How Bundle.link URLs are written: "quote_plus" = query part quote_plus-encoded
    # (what the reference describes for 1.10), "plain" = ordinary URL.
    link_style: LinkStyle = "quote_plus"
    currency: str = "$"
    # Fixed, so tokens issued before a restart stay valid (also with a state_path).
    jwt_secret: str = field(default="openimis-sandbox-not-a-secret", repr=False)
    # SQLite file for durable state (claims, submission counters, adjudication), which then
    # survives a SIGKILL; None = in memory only (the default).
    state_path: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SandboxConfig:
        """Build a config from SANDBOX_* variables, so gunicorn/docker can tune it."""
        env = os.environ if environ is None else environ
        cfg = cls()
        if v := env.get("SANDBOX_USERNAME"):
            cfg.username = v
        if v := env.get("SANDBOX_PASSWORD"):
            cfg.password = v
        if v := env.get("SANDBOX_TOKEN_LIFETIME_S"):
            cfg.token_lifetime_s = int(v)
        if v := env.get("SANDBOX_RATE_LIMIT"):
            cfg.request_budget_per_minute = int(v) or None
        if v := env.get("SANDBOX_ELIGIBILITY_MODE"):
            cfg.eligibility_mode = v  # type: ignore[assignment]
        if v := env.get("SANDBOX_CLAIM_ADJUDICATION"):
            cfg.claim_adjudication = v  # type: ignore[assignment]
        if v := env.get("SANDBOX_LINK_STYLE"):
            cfg.link_style = v  # type: ignore[assignment]
        if v := env.get("SANDBOX_BASE_PATH"):
            cfg.base_path = v if v.endswith("/") else v + "/"
        if v := env.get("SANDBOX_STATE_PATH"):
            cfg.state_path = v
        return cfg
