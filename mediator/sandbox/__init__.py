"""Embedded openIMIS sandbox: a small Flask app that behaves like the openIMIS FHIR R4 API
(module openimis-be-api-fhir-r4 1.10, release 24.04), quirks included, so that the
mediator can run standalone and be tested against realistic behaviour.

Usage::

    app = create_sandbox_app()                      # Flask app, base /api/api_fhir_r4/
    python -m mediator.sandbox --port 8551          # werkzeug, threaded
    python -m mediator.sandbox --state-path s.db    # durable state (survives SIGKILL)
    gunicorn 'mediator.sandbox:create_sandbox_app()'  # config from SANDBOX_* env vars

Seed data (GET /_sandbox/seed returns it as JSON)
-------------------------------------------------
Insurees (CHF id -> policy of product BHC "Basic Health Cover"):

=========  ===================================================================
070707070  active policy 2020-01-01 .. 31 Dec (this year + 2)  -> claims accepted
070707071  expired policy 2019-01-01 .. 2019-12-31 -> lines rejected 3 (NO PRODUCT
           FOUND) for care after 2019 (care inside 2019 is still covered)
070707072  no policy -> lines rejected 3; eligibility: 201 without insurance
070707073  TWO rows: historical row first (validity_to set, no policy), then the
           current row (active policy). `Patient/070707073` in a claim resolves to
           the historical row -> claim rejected, every line reason 7 (FAMILY);
           reference the current UUID (Patient?identifier=070707073) -> accepted
999000001  UUID 76aca309-f8cf-4890-8f2e-b416d78de00b, active policy from
           2021-01-01 (the insuree of the module fixture test_claim.json)
=========  ===================================================================

Health facilities (Organization, type prov) and their price lists:

========  =======================================  ====================================
HF0001    Rapta District Hospital                  every service and every item
HF0002    Jambero Health Centre                    A1 ANC1 L1 L2 L3 M7 /
                                                   0001 0004 0012 0021 0035 0041 0057
HF0003    Mwana Dispensary                         A1 L1 / 0004 0021 0035
JMDP001   Demo Dispensary (a code of openIMIS's    every service and every item
          stock demo data)
12345678  Test Health Facility (UUID               A1 M7 / 0001 0004
          6d0eea8c-62eb-11ea-94d6-c36229a16c2f)
========  =======================================  ====================================

Claim administrators (Practitioner): JMDP0011 (HF0001; in openIMIS's demo data, JMDP001's), JMDP0012 (HF0002),
JMDP0013 (HF0003), VITEST99 (UUID 044c33d1-dbf3-4d6a-9924-3797b461e535, 12345678).

Services (ActivityDefinition; price): A1 General Consultation 10, A2 Specialist
Consultation 20, ANC1 Antenatal Care Visit 12, L1 Malaria RDT 3, L2 Full Blood Count 8,
L3 Urinalysis 4, M7 Normal Delivery 800 (UUID a17602f4-...), S1 Minor Surgery 150,
H1 Hospital Stay per day 25.
Items (Medication; price): 0001 Aspirin 0.5, 0004 Paracetamol 10 (UUID e2bc1546-...),
0012 Amoxicillin 1.2, 0021 Artemether/Lumefantrine 4.5, 0035 ORS 0.3,
0041 Metronidazole 0.8, 0057 Ibuprofen 0.6, 0099 Ceftriaxone 6, 0102 Gauze roll 2.
ICD codes: A00 A000 A01 A09 B50 B54 G44 J06 J18 O80 Z34 T_CD.

Claim outcomes (see rules.py)
-----------------------------
* Accepted lines -> status 4 checked, outcome ``partial``; all lines rejected -> 1
  rejected, outcome ``complete``, no ``total``.
* Not in the facility's price list -> line reason 2; no policy in force on
  billablePeriod.start -> reason 3; historical insuree row -> 7; created before
  billablePeriod.start -> 9.
* Claim code starting with ``Q-`` (or claim_adjudication="deferred") -> stays entered
  (2, outcome ``queued``) until ``POST /_sandbox/adjudicate``.
* Module fixture tests/fixtures/openimis/test_claim.json -> 201, checked (partial), both
  lines accepted. IG example ig/Claim-Claim001.json -> 500 (provider, patient, enterer
  references unknown and item category given as coding only).

Test controls (not openIMIS), outside the API base
--------------------------------------------------
* ``POST /_sandbox/adjudicate`` {"claim_code"|"claim_uuid", "status":
  checked|processed|valuated|rejected, "reasons": {code: reason}, "facility_code",
  "apply_rules": true}
* ``GET|POST /_sandbox/faults`` {"eligibility_mode", "claim_adjudication", "delay_s",
  "fail_next", "fail_status" (500 -> OperationOutcome "Internal server error"; 502/503/504
  -> nginx HTML page), "fail_after_commit" (next N claim POSTs are stored, then answered
  with fail_status), "rate_limit" (per minute per IP; null = off), "login_fails"}
* ``POST /_sandbox/reset``; ``GET /_sandbox/claims`` (stored claims; ``submissions`` =
  authenticated POST Claim/ attempts per claim code, duplicates and failures included);
  ``GET /_sandbox/stats``; ``GET /_sandbox/seed``.

Durable state (optional)
------------------------
By default all state is in memory and lost when the process ends. With
``SandboxConfig.state_path`` (env ``SANDBOX_STATE_PATH``, CLI ``--state-path PATH``) the
sandbox writes through to a SQLite file (WAL, ``synchronous=FULL``; see durable.py) and
reloads it at start, so a SIGKILL at any instant loses nothing that was answered:

* stored claims (uuid, code, facility, insuree, status, lines with rejection reasons,
  dates): a claim is committed (fsync) BEFORE its 201 is sent; the duplicate check
  ("Claim with code 'X' already exists.", per facility) is a UNIQUE constraint in the file;
* status changes from ``POST /_sandbox/adjudicate`` (committed before the answer);
* ``submissions`` counters of ``/_sandbox/claims`` (committed with the claim, or on their
  own before the answer of a refused/failed POST; a POST cut by the kill may be uncounted);
  ``accepted`` is recounted from the stored claims.

Not durable: faults (back to the config), rate-limit windows, login counters and locks,
``/_sandbox/stats`` call counts. Tokens stay valid across a restart because they are signed
with the fixed ``SandboxConfig.jwt_secret`` (no per-process key). The seed is static and
rebuilt at every start. ``POST /_sandbox/reset`` also empties the file. One process per
state file (the in-memory mirror is loaded at start; a second process would only be
stopped by the UNIQUE constraint). Cost: one fsync per claim POST (about +0.4 ms on the
development ext4 disk); in-memory mode is unchanged.

Known differences from openIMIS
-------------------------------
* In-memory by default (see above), small seed; only the resources above (no Group, Location, Contract,
  InsurancePlan, Invoice, Communication, Subscription...). Patient, Medication and the
  other CRUD types are read-only (405 on write). Contained resources in a Claim are not
  supported (the reference fails as unknown).
* Rule engine covers reasons 2, 3, 7, 9 only; no care type, frequency, limits or waiting
  periods; prices are never checked and approved = asked.
* Claim code uniqueness is per facility. More than 5 diagnoses: the extra ones are
  silently ignored (as upstream). Unknown item/service references answer 500
  ``'NoneType' object has no attribute 'code'`` (the upstream AttributeError).
* 401 bodies are DRF's ``{"detail": ...}``; 406/415/429/405 are OperationOutcomes with
  severity ``fatal`` (DRF APIException through the openIMIS exception handler).
* Unknown ``?identifier=`` answers 404 OperationOutcome (code not-found, "Resource for
  identifier N not found") for Patient (as seen on 24.04) and, by analogy, Medication; reads of
  unknown ids answer 500.
* Bundle links: the whole URL quote_plus-encoded (config.link_style="plain" for plain URLs);
  next/previous have their parameters sorted like DRF's replace_query_param.

Shaped as a real 24.04 backend answers (held against its captures by
tests/sandbox/test_real_contract.py): Patient ``id`` is the insuree number (the UUID only in
the identifier typed UUID); Coverage has no ``id`` (identifiers UUID and ACSN) and
``Coverage?beneficiary=`` filters nothing; ClaimResponse ``id`` is the claim code, its patient,
requestor and item references are by code and ``request`` is ``ClaimV2/<code>``; the failing
eligibility service's 500 says ``'NoneType' object has no attribute 'name'``.
* POST to a path without trailing slash answers 404 (Django answers 500/RuntimeError).
* The fail_next fault does not apply to login/; use login_fails for that.
* JWTs are signed by the sandbox (HS256, payload username/exp/origIat); the FHIR login
  accepts the configured user only and needs no prior web-UI login.
* ``is_service_ok``/``is_item_ok`` in eligibility: ``excluded`` = code unknown.
"""

from __future__ import annotations

from flask import Flask

from .app import build_app
from .config import SandboxConfig

__all__ = ["SandboxConfig", "create_sandbox_app"]


def create_sandbox_app(config: SandboxConfig | None = None) -> Flask:
    """Build a fresh sandbox app (own store); without a config, SANDBOX_* env vars apply."""
    return build_app(config or SandboxConfig.from_env())
