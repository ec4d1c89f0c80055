"""What can go wrong talking to openIMIS, told apart so callers can answer the right status.

The client raises these for failures of transport and authentication; an answer openIMIS did
give (even a 500) is returned to the caller, whose transaction knows what the answer means.
"""

from __future__ import annotations


class OpenImisError(Exception):
    """openIMIS could not be used: never the client's fault."""

    #: What a facility is told, without upstream details it cannot act on.
    public_message = "openIMIS could not be reached"


class OpenImisUnreachable(OpenImisError):
    public_message = "openIMIS is unreachable"


class OpenImisTimeout(OpenImisError):
    public_message = "openIMIS did not answer in time"


class OpenImisLoginRefused(OpenImisError):
    """Login failed or is suspended: retrying would lock the account (5 failures)."""

    public_message = "openIMIS refused the mediator's login"


class OpenImisRateLimited(OpenImisError):
    public_message = "openIMIS is rate-limiting the mediator"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenImisBroken(OpenImisError):
    """openIMIS answered, but with a failure of its own (5xx, HTML, unreadable JSON)."""

    public_message = "openIMIS failed to process the request"
