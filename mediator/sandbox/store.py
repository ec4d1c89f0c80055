"""Seed data and in-memory state of the sandbox.

The seed is small but shaped like the openIMIS demo database: a few health facilities
with price lists, claim administrators, medical services and items, ICD codes, and
insurees chosen so that tests can pick a claim that comes out positive, negative or
queued (see the package docstring for the table). All state sits behind one lock so
the threaded werkzeug server and gunicorn threads are safe. With a state path, claims
and submission counters are written through to SQLite (durable.py).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .durable import StateDB

# openIMIS claim statuses
STATUS_REJECTED = 1
STATUS_ENTERED = 2
STATUS_CHECKED = 4
STATUS_PROCESSED = 8
STATUS_VALUATED = 16
STATUS_NAMES = {1: "rejected", 2: "entered", 4: "checked", 8: "processed", 16: "valuated"}
STATUS_BY_NAME = {v: k for k, v in STATUS_NAMES.items()}

# openIMIS policy statuses
POLICY_IDLE = 1
POLICY_ACTIVE = 2
POLICY_SUSPENDED = 4
POLICY_EXPIRED = 8

# Claim codes starting with this prefix stay "entered" (outcome queued) until adjudicated
# through POST /_sandbox/adjudicate, whatever the configured adjudication mode.
QUEUED_PREFIX = "Q-"


def _uuid(name: str) -> str:
    """Stable UUIDs so that tests and docs can quote them."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"openimis-sandbox/{name}"))


@dataclass
class Service:
    uuid: str
    code: str
    name: str
    price: float
    topic: str  # P preventive | C curative
    level: str  # S simple | V visit | D day of stay | H hospital case
    category: str  # openIMIS service category: C consultation, D delivery, S surgery, ...
    frequency: int | None
    updated: datetime


@dataclass
class Item:
    uuid: str
    code: str
    name: str
    price: float
    form: str
    package: float
    item_type: str  # D drug | M medical consumable
    frequency: int | None
    updated: datetime


@dataclass
class Facility:
    uuid: str
    code: str
    name: str
    level: str  # H hospital | C health centre | D dispensary
    legal_form: str
    district: str
    services: dict[str, float]  # price list: service code -> price
    items: dict[str, float]  # price list: item code -> price
    updated: datetime


@dataclass
class ClaimAdmin:
    uuid: str
    code: str
    last_name: str
    other_names: str
    facility_code: str
    updated: datetime


@dataclass
class Product:
    uuid: str
    code: str
    name: str
    benefits: dict[str, float]


@dataclass
class Policy:
    uuid: str
    product_code: str
    status: int
    enroll_date: date
    start_date: date
    effective_date: date
    expiry_date: date
    head_chf_id: str
    updated: datetime

    def covers(self, day: date) -> bool:
        """A policy pays for care on `day` if it was in force then (active or since expired)."""
        return (
            self.status in (POLICY_ACTIVE, POLICY_EXPIRED) and self.effective_date <= day <= self.expiry_date
        )

    def active_on(self, day: date) -> bool:
        return self.status == POLICY_ACTIVE and self.effective_date <= day <= self.expiry_date


@dataclass
class Insuree:
    uuid: str
    chf_id: str
    last_name: str
    other_names: str
    gender: str  # male | female
    birth_date: date
    family_uuid: str
    is_head: bool
    policies: list[str]
    updated: datetime
    validity_to: datetime | None = None  # set on historical rows
    phone: str = ""


@dataclass
class ClaimLine:
    kind: str  # item | service
    code: str
    ref_uuid: str
    qty: float
    price_asked: float
    rejection_reason: int = 0
    qty_approved: float | None = None
    price_approved: float | None = None


@dataclass
class StoredClaim:
    uuid: str
    code: str
    facility_code: str
    insuree_uuid: str
    admin_uuid: str
    visit_type: str
    date_claimed: date
    date_from: date
    date_to: date | None
    icd_codes: list[str]
    claimed: float
    guarantee_id: str | None
    explanation: str | None
    lines: list[ClaimLine]
    status: int = STATUS_ENTERED
    created: date = field(default_factory=date.today)
    updated: datetime = field(default_factory=lambda: datetime.now().replace(microsecond=0))

    @property
    def items(self) -> list[ClaimLine]:
        return [line for line in self.lines if line.kind == "item"]

    @property
    def services(self) -> list[ClaimLine]:
        return [line for line in self.lines if line.kind == "service"]


ICD_CODES: dict[str, str] = {
    "A00": "Cholera",
    "A000": "Cholera due to Vibrio cholerae 01, biovar cholerae",  # as in openIMIS's demo data
    "A01": "Typhoid and paratyphoid fevers",
    "A09": "Diarrhoea and gastro-enteritis of presumed infectious origin",
    "B50": "Plasmodium falciparum malaria",
    "B54": "Unspecified malaria",
    "G44": "Other headache syndromes",
    "J06": "Acute upper respiratory infections of multiple and unspecified sites",
    "J18": "Pneumonia, organism unspecified",
    "O80": "Single spontaneous delivery",
    "Z34": "Supervision of normal pregnancy",
    "T_CD": "Test diagnosis",  # used by the openIMIS module fixtures
}

_D = datetime  # shorthand for seed timestamps


def _services() -> list[Service]:
    rows = [
        # code, name, price, topic, level, category, frequency, updated
        ("A1", "General Consultation", 10.0, "C", "V", "C", None, _D(2019, 1, 1, 8, 0)),
        ("A2", "Specialist Consultation", 20.0, "C", "V", "C", None, _D(2019, 1, 1, 8, 0)),
        ("ANC1", "Antenatal Care Visit", 12.0, "P", "V", "A", 28, _D(2019, 6, 1, 9, 30)),
        ("L1", "Malaria Rapid Diagnostic Test", 3.0, "C", "S", "O", None, _D(2020, 3, 15, 10)),
        ("L2", "Full Blood Count", 8.0, "C", "S", "O", None, _D(2020, 3, 15, 10, 0)),
        ("L3", "Urinalysis", 4.0, "C", "S", "O", None, _D(2023, 11, 2, 14, 5)),
        ("M7", "Normal Delivery", 800.0, "C", "H", "D", None, _D(2021, 2, 1, 7, 45)),
        ("S1", "Minor Surgery", 150.0, "C", "H", "S", None, _D(2024, 2, 20, 16, 0)),
        ("H1", "Hospital Stay (per day)", 25.0, "C", "D", "H", None, _D(2024, 2, 20, 16, 0)),
    ]
    return [
        Service(_uuid(f"service/{r[0]}"), *r)
        if r[0] != "M7"
        else Service("a17602f4-e9ff-4f42-a6a4-ccefcb23b4d6", *r)  # module fixture UUID
        for r in rows
    ]


def _items() -> list[Item]:
    rows = [
        # code, name, price, form, package, type, frequency, updated
        (
            "0001",
            "ACETYLSALICYLIC ACID (ASPIRIN) TABS 300MG",
            0.5,
            "1000 TABLETS",
            1000.0,
            "D",
            None,
            _D(2019, 1, 1, 8, 0),
        ),
        ("0004", "PARACETAMOL TABS 500MG", 10.0, "1000 TABLETS", 1000.0, "D", None, _D(2019, 1, 1, 8, 0)),
        ("0012", "AMOXICILLIN CAPS 250MG", 1.2, "500 CAPSULES", 500.0, "D", None, _D(2020, 5, 10, 11, 0)),
        (
            "0021",
            "ARTEMETHER/LUMEFANTRINE TABS 20/120MG",
            4.5,
            "30 TABLETS",
            30.0,
            "D",
            3,
            _D(2020, 5, 10, 11, 0),
        ),
        ("0035", "ORAL REHYDRATION SALTS SACHET", 0.3, "100 SACHETS", 100.0, "D", None, _D(2022, 8, 1, 9, 0)),
        ("0041", "METRONIDAZOLE TABS 200MG", 0.8, "1000 TABLETS", 1000.0, "D", None, _D(2022, 8, 1, 9, 0)),
        ("0057", "IBUPROFEN TABS 400MG", 0.6, "100 TABLETS", 100.0, "D", None, _D(2023, 11, 2, 14, 5)),
        ("0099", "CEFTRIAXONE INJ 1G", 6.0, "1 VIAL", 1.0, "D", None, _D(2024, 2, 20, 16, 0)),
        ("0102", "GAUZE ROLL 10CM", 2.0, "1 ROLL", 1.0, "M", None, _D(2024, 2, 20, 16, 0)),
    ]
    return [
        Item("e2bc1546-390b-4d41-8571-632ecf7a0936" if r[0] == "0004" else _uuid(f"item/{r[0]}"), *r)
        for r in rows
    ]


def _price_list(catalogue: list, codes: list[str] | None) -> dict[str, float]:
    return {x.code: x.price for x in catalogue if codes is None or x.code in codes}


def _facilities(services: list[Service], items: list[Item]) -> list[Facility]:
    return [
        Facility(
            _uuid("hf/HF0001"),
            "HF0001",
            "Rapta District Hospital",
            "H",
            "G",
            "Rapta",
            _price_list(services, None),
            _price_list(items, None),
            _D(2019, 1, 1, 8),
        ),
        Facility(
            _uuid("hf/HF0002"),
            "HF0002",
            "Jambero Health Centre",
            "C",
            "G",
            "Rapta",
            _price_list(services, ["A1", "ANC1", "L1", "L2", "L3", "M7"]),
            _price_list(items, ["0001", "0004", "0012", "0021", "0035", "0041", "0057"]),
            _D(2020, 3, 15, 10),
        ),
        Facility(
            _uuid("hf/HF0003"),
            "HF0003",
            "Mwana Dispensary",
            "D",
            "P",
            "Tahida",
            _price_list(services, ["A1", "L1"]),
            _price_list(items, ["0004", "0021", "0035"]),
            _D(2023, 11, 2, 14, 5),
        ),
        # A facility code of openIMIS's stock demo data, so that a claim written for a real demo
        # backend (docs/examples/claim-demo.json) is accepted here too.
        Facility(
            _uuid("hf/JMDP001"),
            "JMDP001",
            "Demo Dispensary",
            "D",
            "G",
            "Rapta",
            _price_list(services, None),
            _price_list(items, None),
            _D(2019, 1, 1, 8),
        ),
        # The openIMIS module fixtures (test_claim.json) use this facility by UUID / code.
        Facility(
            "6d0eea8c-62eb-11ea-94d6-c36229a16c2f",
            "12345678",
            "Test Health Facility",
            "H",
            "G",
            "Rapta",
            _price_list(services, ["A1", "M7"]),
            _price_list(items, ["0001", "0004"]),
            _D(2021, 2, 1, 7, 45),
        ),
    ]


def _admins() -> list[ClaimAdmin]:
    return [
        ClaimAdmin(_uuid("ca/JMDP0011"), "JMDP0011", "Mugisha", "Janet", "HF0001", _D(2019, 1, 1, 8)),
        ClaimAdmin(_uuid("ca/JMDP0012"), "JMDP0012", "Okello", "Peter", "HF0002", _D(2020, 3, 15, 10)),
        ClaimAdmin(_uuid("ca/JMDP0013"), "JMDP0013", "Achieng", "Mary", "HF0003", _D(2023, 11, 2, 14, 5)),
        ClaimAdmin(
            "044c33d1-dbf3-4d6a-9924-3797b461e535",
            "VITEST99",
            "Test",
            "Claim Admin",
            "12345678",
            _D(2021, 2, 1, 7, 45),
        ),
    ]


PRODUCT_BENEFITS = {
    "total_admissions": 1,
    "total_visits": 3,
    "total_consultations": 23,
    "total_surgeries": 5,
    "total_deliveries": 2,
    "total_antenatal": 11,
    "consultation_amount": 123.21,
    "surgery_amount": 12.11,
    "delivery_amount": 26.0,
    "hospitalization_amount": 42.0,
    "antenatal_amount": 59.14,
    "service_left": 12,
    "item_left": 1,
}


def _people(today: date) -> tuple[list[Insuree], list[Policy]]:
    far = date(today.year + 2, 12, 31)
    policies = [
        Policy(
            _uuid("policy/070707070"),
            "BHC",
            POLICY_ACTIVE,
            date(2019, 12, 15),
            date(2020, 1, 1),
            date(2020, 1, 1),
            far,
            "070707070",
            _D(2020, 1, 1, 9),
        ),
        Policy(
            _uuid("policy/070707071"),
            "BHC",
            POLICY_EXPIRED,
            date(2018, 12, 20),
            date(2019, 1, 1),
            date(2019, 1, 1),
            date(2019, 12, 31),
            "070707071",
            _D(2020, 1, 2, 0, 5),
        ),
        Policy(
            _uuid("policy/070707073"),
            "BHC",
            POLICY_ACTIVE,
            date(2020, 6, 1),
            date(2020, 6, 1),
            date(2020, 6, 1),
            far,
            "070707073",
            _D(2020, 6, 1, 12),
        ),
        Policy(
            _uuid("policy/999000001"),
            "BHC",
            POLICY_ACTIVE,
            date(2020, 12, 20),
            date(2021, 1, 1),
            date(2021, 1, 1),
            far,
            "999000001",
            _D(2021, 1, 1, 8),
        ),
    ]
    insurees = [
        Insuree(
            _uuid("insuree/070707070"),
            "070707070",
            "Doe",
            "John",
            "male",
            date(1985, 4, 12),
            _uuid("family/070707070"),
            True,
            [policies[0].uuid],
            _D(2019, 12, 15, 10),
            phone="0712345670",
        ),
        Insuree(
            _uuid("insuree/070707071"),
            "070707071",
            "Wanjiru",
            "Grace",
            "female",
            date(1992, 9, 3),
            _uuid("family/070707071"),
            True,
            [policies[1].uuid],
            _D(2018, 12, 20, 11),
        ),
        Insuree(
            _uuid("insuree/070707072"),
            "070707072",
            "Otieno",
            "Brian",
            "male",
            date(2001, 1, 30),
            _uuid("family/070707072"),
            True,
            [],
            _D(2022, 4, 4, 15),
        ),
        # Historical row first (as in the database), then the current row of the same person.
        Insuree(
            _uuid("insuree/070707073/historical"),
            "070707073",
            "Nyambura",
            "Alice",
            "female",
            date(1978, 7, 21),
            _uuid("family/070707073"),
            True,
            [],
            _D(2018, 3, 1, 9),
            validity_to=_D(2020, 6, 1, 11, 59),
        ),
        Insuree(
            _uuid("insuree/070707073"),
            "070707073",
            "Nyambura",
            "Alice Wambui",
            "female",
            date(1978, 7, 21),
            _uuid("family/070707073"),
            True,
            [policies[2].uuid],
            _D(2020, 6, 1, 12),
        ),
        # The openIMIS module fixtures reference this insuree by UUID and CHF id.
        Insuree(
            "76aca309-f8cf-4890-8f2e-b416d78de00b",
            "999000001",
            "Test",
            "Fixture",
            "male",
            date(1990, 3, 24),
            _uuid("family/999000001"),
            True,
            [policies[3].uuid],
            _D(2021, 1, 1, 8),
        ),
    ]
    return insurees, policies


class Store:
    """All sandbox data; every access goes through `lock`.

    With a `state_path`, claims and submission counters are also written through to a
    SQLite file (see durable.py) and reloaded from it at start; the in-memory dicts stay
    the read path, so reads cost the same in both modes.
    """

    def __init__(self, today: date | None = None, state_path: str | None = None) -> None:
        self.lock = threading.RLock()
        self._today = today
        self.db: StateDB | None = None
        # Submission counts not yet committed (durable mode): flushed with the next claim
        # insert, or on their own at the end of the request (Store.flush_attempts).
        self._pending_attempts: Counter[str] = Counter()
        self._seed()
        if state_path:
            from .durable import StateDB

            self.db = StateDB(state_path)
            claims, attempts = self.db.load()
            for claim in claims:
                self.claims[claim.uuid.lower()] = claim
                self.claim_accepted[claim.code] += 1
            self.claim_attempts.update(attempts)

    def today(self) -> date:
        return self._today or date.today()

    def close(self) -> None:
        """Close the state file (durable mode); the store must not be used afterwards."""
        with self.lock:
            if self.db is not None:
                self.db.close()

    def reset(self) -> None:
        """Back to the seed: catalogue, people, no claims, counters and lockouts cleared
        (the state file too, in durable mode)."""
        with self.lock:
            if self.db is not None:
                self.db.clear()
            self._pending_attempts.clear()
            self._seed()

    def _seed(self) -> None:
        with self.lock:
            self.services = _services()
            self.items = _items()
            self.facilities = _facilities(self.services, self.items)
            self.admins = _admins()
            self.products = {
                "BHC": Product(_uuid("product/BHC"), "BHC", "Basic Health Cover", dict(PRODUCT_BENEFITS))
            }
            self.insurees, policies = _people(self.today())
            self.policies = {p.uuid: p for p in policies}
            self.icd = dict(ICD_CODES)
            self.claims: dict[str, StoredClaim] = {}
            self.claim_attempts: Counter[str] = Counter()
            self.claim_accepted: Counter[str] = Counter()
            self.login_ok = 0
            self.login_failed = 0
            self.failed_logins_in_row = 0
            self.locked_until = 0.0
            self.api_calls: Counter[str] = Counter()
            self.request_times: dict[str, deque[float]] = {}

    # ---- look-ups (UUID first, then business code, like openIMIS retrievers) ----
    @staticmethod
    def _by(rows: list, key: str, attr: str = "code"):
        low = key.lower()
        for row in rows:
            if row.uuid.lower() == low:
                return row
        for row in rows:
            if getattr(row, attr) == key:
                return row
        return None

    def service(self, key: str) -> Service | None:
        return self._by(self.services, key)

    def item(self, key: str) -> Item | None:
        return self._by(self.items, key)

    def facility(self, key: str) -> Facility | None:
        return self._by(self.facilities, key)

    def admin(self, key: str) -> ClaimAdmin | None:
        return self._by(self.admins, key)

    def insuree_current(self, key: str) -> Insuree | None:
        """UUID, else the *current* row for a CHF id (Patient read / ?identifier=)."""
        low = key.lower()
        for ins in self.insurees:
            if ins.uuid.lower() == low:
                return ins
        for ins in self.insurees:
            if ins.chf_id == key and ins.validity_to is None:
                return ins
        return None

    def family_head_chf_id(self, insuree: Insuree) -> str:
        """The insuree number of the head of the insuree's family (openIMIS's Group code)."""
        head = next((i for i in self.insurees if i.family_uuid == insuree.family_uuid and i.is_head), insuree)
        return head.chf_id

    def insuree_first_row(self, key: str) -> Insuree | None:
        """UUID, else the *first* row with that CHF id: what a claim reference resolves to."""
        return self._by(self.insurees, key, "chf_id")

    def insuree_by_uuid(self, key: str) -> Insuree | None:
        low = key.lower()
        return next((i for i in self.insurees if i.uuid.lower() == low), None)

    def policy(self, key: str) -> Policy | None:
        low = key.lower()
        return next((p for p in self.policies.values() if p.uuid.lower() == low), None)

    def policies_of(self, insuree: Insuree) -> list[Policy]:
        return [self.policies[p] for p in insuree.policies]

    def claim(self, key: str) -> StoredClaim | None:
        low = key.lower()
        if low in self.claims:
            return self.claims[low]
        return next((c for c in self.claims.values() if c.code == key), None)

    def claim_by_code(self, code: str, facility_code: str) -> StoredClaim | None:
        return next(
            (c for c in self.claims.values() if c.code == code and c.facility_code == facility_code),
            None,
        )

    def add_claim(self, claim: StoredClaim) -> None:
        """Store a new claim; durable mode commits it first (raises DuplicateClaim if the
        facility already has the code). Call with `lock` held."""
        if self.db is not None:
            self.db.insert_claim(claim, self._pending_attempts)
            self._pending_attempts.clear()
        self.claims[claim.uuid.lower()] = claim
        self.claim_accepted[claim.code] += 1

    def save_claim(self, claim: StoredClaim) -> None:
        """Commit a change of a stored claim (status, adjudication); no-op in memory mode."""
        if self.db is not None:
            self.db.update_claim(claim)

    def count_attempt(self, code: str) -> None:
        """One more POST Claim/ for `code` (durable: committed by the end of the request)."""
        with self.lock:
            self.claim_attempts[code] += 1
            if self.db is not None:
                self._pending_attempts[code] += 1

    def flush_attempts(self) -> None:
        """Commit submission counts that no claim insert has carried yet (durable mode)."""
        with self.lock:
            if self.db is not None and self._pending_attempts:
                self.db.add_attempts(self._pending_attempts)
                self._pending_attempts.clear()
