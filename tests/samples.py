"""Valid sample records for tests, built by hand from contracts.md (synthetic ids only)."""

from __future__ import annotations

import json
from decimal import Decimal

_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
_CHECK = "10X98765432"


def resident_id(n: int, *, area: str = "330102", birth: str = "19800101") -> str:
    """A synthetic resident id with a correct ISO 7064 MOD 11-2 check character."""
    body = f"{area}{birth}{n % 1000:03d}"
    return body + _CHECK[sum(int(c) * w for c, w in zip(body, _WEIGHTS, strict=True)) % 11]


def settlement(i: int = 1, **over) -> dict:
    rec = {
        "settlement_id": f"S2024100100{i:04d}",
        "line_no": 1,
        "patient_id": resident_id(i),
        "insurance_type": "resident",
        "provider_code": "H33010200017",
        "visit_type": "outpatient",
        "diagnosis_code": "I10",
        "drug_code": "XA10BAE033A001010100482",
        "quantity": 3,
        "unit_price": Decimal("6.6650"),
        "amount": Decimal("20.00"),
        "eligible_amount": Decimal("20.00"),
        "fund_paid": Decimal("12.00"),
        "days_supply": 30,
        "settled_at": "2024-10-01T09:12:00+08:00",
        "trace_codes": [],
    }
    rec.update(over)
    return rec


def division(code: str = "330102", **over) -> dict:
    rec = {"division_code": code, "name": "上城区", "level": "county", "parent_code": "330100"}
    rec.update(over)
    return rec


def _num(v):
    # float's repr is the shortest text that round-trips, so 19.99 is written as 19.99.
    if isinstance(v, Decimal):
        return float(v)
    raise TypeError(type(v))


def ndjson(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, default=_num) + "\n" for r in records).encode()
