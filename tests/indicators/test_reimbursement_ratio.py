"""Indicator 8, reimbursement_ratio: inpatient reimbursement ratio by insurance type and institution
class (indicators.md 8, seed 001). Rules: r1 >= 0.90; residents r1 - r2 >= 0.10 and r2 - r3 >= 0.15;
employees r1 - r2 >= 0.03 and r2 - r3 >= 0.05. Expected values are worked out in the comments.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

HP = "H33010200001"   # primary: level 1 community
HP2 = "H33010200002"  # primary by category: level 3 township
HS = "H33010200003"   # secondary: level 2 general
HT = "H33010200004"   # tertiary: level 3 general
PHARMACY = "P33010200001"


@pytest.fixture
def base(warehouse, insert):
    """The warehouse with one institution of each class (and a primary one by category)."""
    insert(warehouse, "health.institutions", [
        {"institution_code": HP, "level": 1, "category": "community"},
        {"institution_code": HP2, "level": 3, "category": "township"},
        {"institution_code": HS, "level": 2, "category": "general"},
        {"institution_code": HT, "level": 3, "category": "general",
         "valid_to": "2023-12-31"},  # class from the record even when no longer in force
    ])
    return warehouse


def line(provider: str, eligible: str, fund: str, *, insurance: str = "resident", visit: str = "inpatient",
         at: str = "2024-03-10T10:00:00+08:00") -> dict[str, Any]:
    """A settlement line with amount = eligible_amount (one unit at that price) and fund_paid as given."""
    return {"provider_code": provider, "insurance_type": insurance, "visit_type": visit, "settled_at": at,
            "unit_price": eligible, "eligible_amount": eligible, "fund_paid": fund}


def _rows(results):
    return {r["entity_code"]: (r["value"], r["threshold"], r["status"]) for r in results}


def _findings(findings):
    return sorted((f["entity_code"], f["kind"], f["subject"]) for f in findings)


def test_both_gap_rules_per_insurance_type(base, insert, run_indicator):
    insert(base, "insurance.settlements", [
        # Residents: r1 = (920 + 900) / 2000 = 0.91 (floor met); r2 = 850/1000 = 0.85; r3 = 750/1000 = 0.75.
        # r1 - r2 = 0.06 < 0.10 -> primary and secondary breach; r2 - r3 = 0.10 < 0.15 -> secondary, tertiary.
        line(HP, "1000.00", "920.00"),
        line(HP2, "1000.00", "900.00"),
        line(HS, "1000.00", "850.00"),
        line(HT, "1000.00", "750.00"),
        # Employees: r1 = 0.94, r2 = 0.91, r3 = 0.86. r1 - r2 = 0.03 exactly (0.0299999... in binary
        # floating point: met only thanks to the 1e-9 tolerance); r2 - r3 = 0.05 -> all compliant.
        line(HP, "1000.00", "940.00", insurance="employee"),
        line(HS, "1000.00", "910.00", insurance="employee"),
        line(HT, "1000.00", "860.00", insurance="employee"),
        # Not inpatient, not an institution, or another month: ignored.
        line(HS, "1000.00", "0.00", visit="outpatient"),
        line(PHARMACY, "1000.00", "0.00"),
        line(HT, "1000.00", "0.00", at="2024-03-31T16:00:00Z"),  # 2024-04-01 00:00 in UTC+08:00
    ])
    results, findings = run_indicator(base, "2024-03", "reimbursement_ratio")
    rows = _rows(results)
    assert rows == {
        "resident|primary": (pytest.approx(0.91), 0.90, "breach"),
        "resident|secondary": (pytest.approx(0.85), 0.10, "breach"),
        "resident|tertiary": (pytest.approx(0.75), 0.15, "breach"),
        "employee|primary": (pytest.approx(0.94), 0.90, "compliant"),
        "employee|secondary": (pytest.approx(0.91), 0.03, "compliant"),
        "employee|tertiary": (pytest.approx(0.86), 0.05, "compliant"),
    }
    primary = next(r for r in results if r["entity_code"] == "resident|primary")
    assert (primary["numerator"], primary["denominator"]) == (1820.0, 2000.0)
    assert all(r["entity_type"] == "insurance_class" and r["measure"] == "ratio" for r in results)

    assert _findings(findings) == [
        ("resident|primary", "gap_too_small", "primary-secondary"),
        ("resident|secondary", "gap_too_small", "primary-secondary"),
        ("resident|secondary", "gap_too_small", "secondary-tertiary"),
        ("resident|tertiary", "gap_too_small", "secondary-tertiary"),
    ]
    detail = json.loads(next(f["detail"] for f in findings if f["entity_code"] == "resident|tertiary"))
    assert detail["secondary"] == pytest.approx(0.85) and detail["tertiary"] == pytest.approx(0.75)
    assert (detail["gap"], detail["threshold"]) == (pytest.approx(0.10), 0.15)


def test_floor_and_missing_class(base, insert, run_indicator):
    insert(base, "insurance.settlements", [
        # Residents: r1 = 850/1000 = 0.85 < 0.90 -> primary breach (ratio_below_floor). No secondary lines:
        # neither gap rule can be assessed, so the tertiary row (0.50) is under no rule: not_applicable.
        line(HP, "1000.00", "850.00"),
        line(HT, "1000.00", "500.00"),
        # Employees without primary lines: r2 = 0.80, r3 = 0.78, gap 0.02 < 0.05 -> both breach; the
        # primary-secondary gap is not assessed.
        line(HS, "1000.00", "800.00", insurance="employee"),
        line(HT, "1000.00", "780.00", insurance="employee"),
    ])
    results, findings = run_indicator(base, "2024-03", "reimbursement_ratio")
    assert _rows(results) == {
        "resident|primary": (pytest.approx(0.85), 0.90, "breach"),
        "resident|tertiary": (pytest.approx(0.50), None, "not_applicable"),
        "employee|secondary": (pytest.approx(0.80), 0.05, "breach"),
        "employee|tertiary": (pytest.approx(0.78), 0.05, "breach"),
    }
    assert _findings(findings) == [
        ("employee|secondary", "gap_too_small", "secondary-tertiary"),
        ("employee|tertiary", "gap_too_small", "secondary-tertiary"),
        ("resident|primary", "ratio_below_floor", "primary"),
    ]
    floor = json.loads(next(f["detail"] for f in findings if f["kind"] == "ratio_below_floor"))
    assert floor == {"primary": pytest.approx(0.85), "threshold": 0.9}


def test_floor_exactly_met_and_single_class(base, insert, run_indicator):
    # r1 = 900/1000 = 0.90 exactly: compliant under the floor, the only rule it is under.
    insert(base, "insurance.settlements", [line(HP, "1000.00", "900.00")])
    results, findings = run_indicator(base, "2024-03", "reimbursement_ratio")
    assert _rows(results) == {"resident|primary": (0.9, 0.9, "compliant")}
    assert findings == []
