"""Indicator 3, county_dual_channel: a dual-channel pharmacy in every county (indicators.md 3)."""

from __future__ import annotations

import json

import pytest

from .conftest import by_entity, check_findings_behind_breaches, insert, policy_with, run_indicator

PERIOD = "2024-06"  # month end 2024-06-30


@pytest.fixture
def counties(warehouse):
    insert(warehouse, "health.divisions", [
        {"division_code": "330000", "name": "province", "level": "province", "parent_code": None},
        {"division_code": "330100", "name": "city", "level": "city", "parent_code": "330000"},
        {"division_code": "330102", "name": "A", "level": "county", "parent_code": "330100"},
        {"division_code": "330103", "name": "B", "level": "county", "parent_code": "330100"},
        {"division_code": "330104", "name": "C", "level": "county", "parent_code": "330100"},
        {"division_code": "330105", "name": "D", "level": "county", "parent_code": "330100"},
    ])
    insert(warehouse, "insurance.dual_channel_pharmacies", [
        {"pharmacy_code": "P33010200001", "division_code": "330102"},
        {"pharmacy_code": "P33010300001", "division_code": "330103", "revoked_on": "2024-06-30"},
        {"pharmacy_code": "P33010400001", "division_code": "330104", "designated_on": "2024-07-01"},
        {"pharmacy_code": "P33010400002", "division_code": "330104", "revoked_on": "2024-07-01"},
        {"pharmacy_code": "P33010000001", "division_code": "330100"},  # in the city itself: no county row
    ])
    return warehouse


def test_county_counts_and_province_share(counties):
    results, findings = run_indicator(counties, PERIOD, "county_dual_channel")
    rows = by_entity(results, "pharmacies")
    county = {c: (r["value"], r["threshold"], r["status"]) for c, r in rows.items()}
    assert county == {
        "330102": (1, 1, "compliant"),
        "330103": (0, 1, "breach"),      # its only pharmacy was revoked on month end
        "330104": (1, 1, "compliant"),   # one designated later (no), one revoked after month end (yes)
        "330105": (0, 1, "breach"),
    }
    province = by_entity(results, "share_covered")
    # 2 of 4 counties covered = 0.5, a reported figure without a rule
    assert province == {"330000": {
        "indicator": "county_dual_channel", "period": PERIOD, "entity_type": "province",
        "entity_code": "330000",
        "measure": "share_covered", "value": 0.5, "numerator": 2, "denominator": 4, "threshold": None,
        "status": "not_applicable",
    }}
    assert all(r["entity_type"] == "county" for r in results if r["measure"] == "pharmacies")
    check_findings_behind_breaches(results, findings)
    assert sorted((f["entity_code"], f["kind"], f["subject"]) for f in findings) == [
        ("330103", "uncovered_county", "330103"),
        ("330105", "uncovered_county", "330105"),
    ]
    assert json.loads(findings[0]["detail"])["pharmacies"] == 0


def test_minimum_comes_from_the_policy_file(counties, tmp_path):
    # Two pharmacies per county required: no county meets it; the covered share is unchanged (any pharmacy).
    policy = policy_with(tmp_path, {"county_dual_channel_min_pharmacies": 2})
    results, findings = run_indicator(counties, PERIOD, "county_dual_channel", policy=policy)
    assert {r["status"] for r in by_entity(results, "pharmacies").values()} == {"breach"}
    assert by_entity(results, "share_covered")["330000"]["value"] == 0.5
    assert len(findings) == 4


def test_province_code_without_province_division(warehouse):
    # Reference data holds counties only: the province is read from the codes (GB/T 2260: 33 → 330000).
    insert(warehouse, "health.divisions", [{"division_code": "330102", "parent_code": "330100"}])
    results, _ = run_indicator(warehouse, PERIOD, "county_dual_channel")
    assert by_entity(results, "share_covered")["330000"]["denominator"] == 1
