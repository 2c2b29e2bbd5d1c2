"""Indicator 9, catalog_compliance: fund paid for drugs outside the catalog in force at the settlement
date (indicators.md 9, seed 001). The settlement date is the calendar date in UTC+08:00 whatever the
offset the timestamp was written with. Expected values are worked out in the comments.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

PROVINCE = "330000"
HOSPITAL = "H33010200001"
PHARMACY = "P33010200001"
A, B, C, D = ("X" + ch * 22 for ch in "ABCD")


@pytest.fixture
def base(warehouse, insert):
    """The warehouse with a province and three catalog versions (see the comment for what they list)."""
    insert(warehouse, "health.divisions", [
        {"division_code": PROVINCE, "level": "province", "parent_code": None}])
    # 2023 (in force from 2023-01-01): A, B. 2024 (in force from 2024-03-15, inside March): A, C.
    # 2025 is published but not yet in force in 2024: its B does not count.
    catalog = [("2023", "2022-12-01", "2023-01-01", A), ("2023", "2022-12-01", "2023-01-01", B),
               ("2024", "2024-03-01", "2024-03-15", A), ("2024", "2024-03-01", "2024-03-15", C),
               ("2025", "2024-12-01", "2025-01-01", B)]
    insert(warehouse, "insurance.drug_catalog", [
        {"catalog_version": v, "published_on": pub, "effective_from": eff, "drug_code": code}
        for v, pub, eff, code in catalog
    ])
    return warehouse


def line(sid: str, drug: str, at: str, fund: str, provider: str = HOSPITAL) -> dict[str, Any]:
    """A settlement line of one unit at ``fund`` yuan, all of it paid by the fund."""
    return {"settlement_id": sid, "drug_code": drug, "settled_at": at, "unit_price": fund, "fund_paid": fund,
            "provider_code": provider}


def test_catalog_switch_inside_the_month_and_midnight_offsets(base, insert, run_indicator):
    insert(base, "insurance.settlements", [
        line("SETTLE-B-OK", B, "2024-03-14T23:59:00+08:00", "7.00"),   # 03-14: 2023 version, B listed
        line("SETTLE-B-NEW", B, "2024-03-14T16:30:00Z", "10.00"),      # 03-15 00:30 CST: 2024, B gone
        line("SETTLE-C-OLD", C, "2024-03-14T15:59:59Z", "20.00"),      # 03-14 23:59:59 CST: 2023, no C
        line("SETTLE-C-OK", C, "2024-03-15T00:00:00+08:00", "30.00"),  # 03-15: 2024 version lists C
        line("SETTLE-A-OK", A, "2024-03-20T10:00:00-05:00", "40.00"),  # A in both versions
        line("SETTLE-D-FREE", D, "2024-03-20T10:00:00+08:00", "0.00"),  # no fund paid: no finding
        line("SETTLE-D-PHAR", D, "2024-03-20T10:00:00+08:00", "12.34", provider=PHARMACY),
        line("SETTLE-D-FIRST", D, "2024-02-29T16:30:00Z", "5.00"),      # 03-01 00:30 CST: March
        line("SETTLE-D-APRIL", D, "2024-03-31T16:00:00Z", "9.00"),      # 04-01 00:00 CST: April
    ])
    results, findings = run_indicator(base, "2024-03", "catalog_compliance")
    assert sorted((f["entity_type"], f["entity_code"], f["subject"], f["amount"]) for f in findings) == [
        ("institution", HOSPITAL, "SETTLE-B-NEW#1", Decimal("10.00")),
        ("institution", HOSPITAL, "SETTLE-C-OLD#1", Decimal("20.00")),
        ("institution", HOSPITAL, "SETTLE-D-FIRST#1", Decimal("5.00")),
        ("pharmacy", PHARMACY, "SETTLE-D-PHAR#1", Decimal("12.34")),
    ]
    assert {f["kind"] for f in findings} == {"not_in_catalog"}
    details = {f["subject"]: json.loads(f["detail"]) for f in findings}
    assert details["SETTLE-B-NEW#1"] == {
        "drug_code": B, "settled_on": "2024-03-15", "catalog_version": "2024", "visit_type": "outpatient"}
    assert details["SETTLE-C-OLD#1"]["catalog_version"] == "2023"

    # Province rows: 4 lines, 10 + 20 + 5 + 12.34 = 47.34 yuan.
    assert sorted((r["entity_type"], r["entity_code"], r["measure"], r["value"], r["threshold"], r["status"])
                  for r in results) == [
        ("province", PROVINCE, "fund_paid", pytest.approx(47.34), None, "not_applicable"),
        ("province", PROVINCE, "lines", 4.0, None, "not_applicable"),
    ]


def test_month_before_any_catalog_and_clean_month(base, insert, run_indicator):
    insert(base, "insurance.settlements", [
        line("SETTLE-OLD-A", A, "2022-06-01T10:00:00+08:00", "3.00"),   # no version in force yet
        line("SETTLE-CLEAN", A, "2024-06-01T10:00:00+08:00", "3.00"),
    ])
    _, findings = run_indicator(base, "2022-06", "catalog_compliance")
    assert [(f["subject"], f["amount"]) for f in findings] == [("SETTLE-OLD-A#1", Decimal("3.00"))]
    assert json.loads(findings[0]["detail"])["catalog_version"] is None

    results, findings = run_indicator(base, "2024-06", "catalog_compliance")
    assert findings == []
    assert sorted((r["measure"], r["value"]) for r in results) == [("fund_paid", 0.0), ("lines", 0.0)]
