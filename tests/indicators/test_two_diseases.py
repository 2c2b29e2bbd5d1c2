"""Indicator 7, two_diseases: "two diseases" outpatient guarantee (indicators.md 7, seed 004).

Population lines: resident insurance, outpatient, at a primary institution, diagnosis category
I10-I15 (hypertension) or E10-E14 (diabetes). Expected values are worked out in the comments.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

PROVINCE = "330000"
HP1 = "H33010200001"  # primary: level 1 community centre
HP2 = "H33010200002"  # primary by category (township) although level 2
HS = "H33010200003"   # secondary: level 2 general
PA, PB, PC, PD, PE, PF = ("a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64, "f" * 64)


@pytest.fixture
def base(warehouse, insert):
    """The warehouse with a province, two primary institutions and a secondary one."""
    insert(warehouse, "health.divisions", [
        {"division_code": PROVINCE, "level": "province", "parent_code": None},
        {"division_code": "330102", "level": "county", "parent_code": "330100"},
    ])
    insert(warehouse, "health.institutions", [
        {"institution_code": HP1, "level": 1, "category": "community"},
        {"institution_code": HP2, "level": 2, "category": "township"},
        {"institution_code": HS, "level": 2, "category": "general"},
    ])
    return warehouse


def line(patient: str, fund: str, *, eligible: str | None = None, provider: str = HP1, diagnosis: str = "I10",
         at: str = "2024-03-10T10:00:00+08:00", insurance: str = "resident", visit: str = "outpatient",
         days: int = 30, sid: str | None = None) -> dict[str, Any]:
    """A settlement line; amount = eligible (1 unit at that price), fund_paid as given."""
    eligible = fund if eligible is None else eligible
    row = {"patient_id": patient, "provider_code": provider, "diagnosis_code": diagnosis, "settled_at": at,
           "insurance_type": insurance, "visit_type": visit, "days_supply": days, "unit_price": eligible,
           "eligible_amount": eligible, "fund_paid": fund}
    if sid:
        row["settlement_id"] = sid
    return row


def test_disease_institution_and_coverage_rows(base, insert, run_indicator):
    insert(base, "insurance.settlements", [
        line(PA, "50.00", eligible="100.00", diagnosis="I10"),
        line(PA, "100.00", eligible="200.00", diagnosis="E11.9"),
        line(PB, "40.00", eligible="100.00", provider=HP2, diagnosis="I15.0"),
        # Not population lines:
        line(PC, "10.00", eligible="100.00", provider=HS),                 # secondary institution
        line(PC, "10.00", eligible="100.00", insurance="employee"),        # employee insurance
        line(PC, "10.00", eligible="100.00", visit="inpatient"),           # inpatient
        line(PC, "10.00", eligible="100.00", diagnosis="I16"),             # outside I10-I15
        line(PC, "10.00", eligible="100.00", diagnosis="E15"),             # outside E10-E14
        line(PD, "10.00", eligible="100.00", at="2024-02-29T23:30:00+08:00"),  # February
        line(PD, "10.00", eligible="100.00", at="2024-03-31T16:30:00Z"),       # 2024-04-01 00:30 in CST
    ])
    insert(base, "health.chronic_registry", [
        {"patient_id": PA, "disease": "hypertension", "filed_on": "2024-01-01"},
        {"patient_id": PA, "disease": "diabetes", "filed_on": "2024-02-01"},
        {"patient_id": PB, "disease": "hypertension", "filed_on": "2024-03-31"},
        {"patient_id": PC, "disease": "diabetes", "filed_on": "2024-02-01"},
        {"patient_id": PD, "disease": "diabetes", "filed_on": "2024-04-01"},   # filed after month end
    ])
    results, findings = run_indicator(base, "2024-03", "two_diseases")
    got = {(r["entity_type"], r["entity_code"], r["measure"]): r for r in results}
    measures = ("patients", "fund_paid", "fund_ratio")
    assert set(got) == {("disease", d, m) for d in ("hypertension", "diabetes") for m in measures} | {
        ("institution", HP1, "fund_ratio"), ("institution", HP2, "fund_ratio"),
        ("province", PROVINCE, "coverage")}
    assert all(r["status"] == "not_applicable" and r["threshold"] is None
               for k, r in got.items() if k[0] != "institution")

    # hypertension: patients {PA, PB} = 2; fund 50 + 40 = 90; ratio 90 / (100 + 100) = 0.45.
    assert got[("disease", "hypertension", "patients")]["value"] == 2
    assert got[("disease", "hypertension", "fund_paid")]["value"] == 90.0
    assert got[("disease", "hypertension", "fund_ratio")]["value"] == pytest.approx(0.45)
    # diabetes: patients {PA} = 1; fund 100; ratio 100 / 200 = 0.50.
    assert got[("disease", "diabetes", "patients")]["value"] == 1
    assert got[("disease", "diabetes", "fund_ratio")]["value"] == pytest.approx(0.5)

    # HP1: (50 + 100) / (100 + 200) = 0.50, exactly the threshold -> compliant.
    hp1 = got[("institution", HP1, "fund_ratio")]
    assert (hp1["numerator"], hp1["denominator"], hp1["threshold"], hp1["status"]) == (
        150.0, 300.0, 0.5, "compliant")
    # HP2: 40 / 100 = 0.40 < 0.50 -> breach with low_fund_ratio.
    hp2 = got[("institution", HP2, "fund_ratio")]
    assert (hp2["value"], hp2["status"]) == (pytest.approx(0.4), "breach")

    # Coverage: filed by 03-31 = {PA, PB, PC} (PA once for both diseases; PD filed in April) = 3;
    # with a population line in March: PA, PB -> 2 / 3.
    coverage = got[("province", PROVINCE, "coverage")]
    assert (coverage["numerator"], coverage["denominator"]) == (2.0, 3.0)
    assert coverage["value"] == pytest.approx(2 / 3)

    assert [(f["entity_type"], f["entity_code"], f["kind"], f["subject"]) for f in findings] == [
        ("institution", HP2, "low_fund_ratio", HP2)]
    assert json.loads(findings[0]["detail"])["fund_ratio"] == pytest.approx(0.4)


def test_month_without_population_lines_reports_zero_diseases(base, insert, run_indicator):
    insert(base, "health.chronic_registry", [{"patient_id": PA, "filed_on": "2024-01-01"}])
    results, findings = run_indicator(base, "2024-07", "two_diseases")
    got = {(r["entity_type"], r["entity_code"], r["measure"]): (r["value"], r["status"]) for r in results}
    # Both diseases are reported with 0 patients and no ratio; no institution row; coverage 0 / 1.
    assert got == {
        ("disease", "hypertension", "patients"): (0.0, "not_applicable"),
        ("disease", "hypertension", "fund_paid"): (0.0, "not_applicable"),
        ("disease", "hypertension", "fund_ratio"): (None, "not_applicable"),
        ("disease", "diabetes", "patients"): (0.0, "not_applicable"),
        ("disease", "diabetes", "fund_paid"): (0.0, "not_applicable"),
        ("disease", "diabetes", "fund_ratio"): (None, "not_applicable"),
        ("province", PROVINCE, "coverage"): (0.0, "not_applicable"),
    }
    assert findings == []


def test_annual_cap_crossed_mid_year(base, insert, run_indicator):
    # Eligible = fund on every line (ratio 1.0): the only findings are over_annual_cap.
    insert(base, "insurance.settlements", [
        line(PE, "3000.00", at="2023-12-20T10:00:00+08:00"),   # previous calendar year
        line(PE, "1000.00", at="2024-01-10T10:00:00+08:00"),   # year to date 1000
        line(PE, "1200.00", at="2024-02-10T10:00:00+08:00", diagnosis="E11"),  # 2200 (both diseases count)
        line(PE, "500.00", at="2024-03-10T10:00:00+08:00"),    # 2700: 200 above the cap
        line(PE, "300.00", at="2024-04-10T10:00:00+08:00"),    # 3000: all 300 above
        line(PE, "100.00", at="2025-01-10T10:00:00+08:00"),    # new year: 100
        line(PF, "2500.00", at="2024-03-05T10:00:00+08:00"),   # exactly the cap: not above
        line(PF, "0.01", at="2024-04-05T10:00:00+08:00"),      # 2500.01: 0.01 above
        line(PF, "999.00", at="2024-04-06T10:00:00+08:00", insurance="employee"),  # not population
    ])

    def cap_findings(period):
        _, findings = run_indicator(base, period, "two_diseases")
        return sorted((f["entity_type"], f["entity_code"], f["subject"], f["amount"])
                      for f in findings if f["kind"] == "over_annual_cap")

    assert cap_findings("2024-01") == []
    assert cap_findings("2024-02") == []
    assert cap_findings("2024-03") == [("province", PROVINCE, PE, Decimal("200.00"))]
    assert cap_findings("2024-04") == [
        ("province", PROVINCE, PE, Decimal("300.00")),
        ("province", PROVINCE, PF, Decimal("0.01")),
    ]
    assert cap_findings("2024-05") == []   # nothing added in May
    assert cap_findings("2025-01") == []

    _, findings = run_indicator(base, "2024-03", "two_diseases")
    detail = json.loads(next(f["detail"] for f in findings if f["subject"] == PE))
    assert (detail["fund_paid_before_period"], detail["fund_paid_in_period"], detail["annual_cap"]) == (
        2200, 500, 2500)


def test_long_prescription(base, insert, run_indicator):
    insert(base, "insurance.settlements", [
        line(PA, "20.00", days=61, sid="SETTLE-0001"),                       # > 60 days: finding
        line(PA, "20.00", days=60, sid="SETTLE-0002"),                       # two months exactly: fine
        line(PA, "20.00", days=90, sid="SETTLE-0003", insurance="employee"),  # not a population line
        line(PB, "30.00", days=90, sid="SETTLE-0004", provider=HP2, diagnosis="E10"),
    ])
    _, findings = run_indicator(base, "2024-03", "two_diseases")
    got = sorted((f["entity_type"], f["entity_code"], f["kind"], f["subject"], f["amount"]) for f in findings)
    assert got == [
        ("institution", HP1, "long_prescription", "SETTLE-0001#1", Decimal("20.00")),
        ("institution", HP2, "long_prescription", "SETTLE-0004#1", Decimal("30.00")),
    ]
