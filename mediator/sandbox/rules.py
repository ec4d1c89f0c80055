"""Claim rule engine of the sandbox: a small, deterministic subset of openIMIS's
`claim.validations.validate_claim` so that outcomes can be predicted by tests.

Order of checks (first failing check wins, like openIMIS):

1. Target date: `created` before `billablePeriod.start` -> whole claim rejected, reason 9.
2. Insuree row no longer valid (the historical row a CHF-id reference resolves to)
   -> whole claim rejected, reason 7 (FAMILY).
3. Per line: not in the facility's price list -> reason 2 (NOT IN PRICE LIST).
4. Per line: no policy of the insuree in force on `billablePeriod.start`
   (active, or expired but covering that date) -> reason 3 (NO PRODUCT FOUND).
5. All lines rejected -> claim rejected (1, outcome complete); otherwise checked
   (4, outcome partial) with the accepted lines.

Not modelled: care type (10), category limitation (4), frequency (5), waiting period
(17), limits (11-16, 19), price checks (openIMIS does not check prices on submit either).
"""

from __future__ import annotations

from .store import (
    STATUS_BY_NAME,
    STATUS_CHECKED,
    STATUS_ENTERED,
    STATUS_REJECTED,
    Store,
    StoredClaim,
)

REASON_ACCEPTED = 0
REASON_NOT_IN_PRICE_LIST = 2
REASON_NO_PRODUCT_FOUND = 3
REASON_FAMILY = 7
REASON_TARGET_DATE = 9
REASON_MEDICAL_OFFICER = -1


def _reject_all(claim: StoredClaim, reason: int) -> None:
    for line in claim.lines:
        line.rejection_reason = reason
    claim.status = STATUS_REJECTED


def _settle(claim: StoredClaim, accepted_status: int) -> None:
    if all(line.rejection_reason for line in claim.lines):
        claim.status = STATUS_REJECTED
    else:
        claim.status = accepted_status


def run_rules(store: Store, claim: StoredClaim) -> None:
    """Check an entered claim and move it to checked (4) or rejected (1)."""
    if claim.date_claimed < claim.date_from:
        _reject_all(claim, REASON_TARGET_DATE)
        return
    insuree = store.insuree_by_uuid(claim.insuree_uuid)
    if insuree is None or insuree.validity_to is not None:
        _reject_all(claim, REASON_FAMILY)
        return
    facility = store.facility(claim.facility_code)
    in_force = [p for p in store.policies_of(insuree) if p.covers(claim.date_from)]
    for line in claim.lines:
        price_list = facility.items if line.kind == "item" else facility.services
        if line.code not in price_list:
            line.rejection_reason = REASON_NOT_IN_PRICE_LIST
        elif not in_force:
            line.rejection_reason = REASON_NO_PRODUCT_FOUND
        else:
            line.rejection_reason = REASON_ACCEPTED
    _settle(claim, STATUS_CHECKED)


def adjudicate(
    store: Store,
    claim: StoredClaim,
    status: str,
    reasons: dict[str, int] | None = None,
    apply_rules: bool = True,
) -> None:
    """Late adjudication (test control): move a claim to checked/processed/valuated/rejected.

    An entered claim first goes through `run_rules` (unless apply_rules is False); then
    `reasons` ({item-or-service code: rejection reason}) rejects the named lines. A claim
    whose lines all end up rejected is rejected whatever status was asked.
    """
    target = STATUS_BY_NAME[status]
    reasons = reasons or {}
    if target == STATUS_REJECTED:
        for line in claim.lines:
            line.rejection_reason = int(
                reasons.get(line.code, line.rejection_reason or REASON_MEDICAL_OFFICER)
            )
        claim.status = STATUS_REJECTED
        return
    if claim.status == STATUS_ENTERED and apply_rules:
        run_rules(store, claim)
        if claim.status == STATUS_REJECTED:
            return
    for line in claim.lines:
        if line.code in reasons:
            line.rejection_reason = int(reasons[line.code])
    _settle(claim, target)
