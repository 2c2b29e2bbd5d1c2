"""Indicator 2, committee_linkage: a pharmacy and therapeutics committee meeting within three months of
a new catalog version (indicators.md 2).

Catalog 2024 is published on 2024-11-30, so an institution open before then must meet by
D = 2024-11-30 + 3 months = 2025-02-28 (the day clamped to February's last day).
"""

from __future__ import annotations

import json

import pytest

from .conftest import by_entity, check_findings_behind_breaches, insert, policy_with, run_indicator

H1, H2, H3, H4, H5, H6, H7, H8 = (f"H330102000{i:02d}" for i in range(1, 9))


@pytest.fixture
def linkage(warehouse):
    insert(warehouse, "insurance.drug_catalog", [
        {"catalog_version": "2023", "published_on": "2023-01-10", "effective_from": "2023-03-01"},
        {"catalog_version": "2024", "published_on": "2024-11-30", "effective_from": "2025-01-01"},
    ])
    insert(warehouse, "health.institutions", [
        {"institution_code": code, "valid_from": "2020-01-01"} for code in (H1, H2, H3, H4, H5, H6)
    ] + [
        {"institution_code": H7, "valid_from": "2025-01-20"},   # own deadline 2025-04-20
        {"institution_code": H8, "valid_from": "2025-01-31"},   # own deadline 2025-04-30 (clamped)
        # outside the population
        {"institution_code": "H33010200090", "level": 2},
        {"institution_code": "H33010200091", "ownership": "private"},
        {"institution_code": "H33010200092", "valid_to": "2024-12-31"},
    ])
    insert(warehouse, "health.committee_meetings", [
        {"institution_code": H2, "catalog_version": "2024", "meeting_on": "2024-12-10"},
        {"institution_code": H3, "catalog_version": "2024", "meeting_on": "2024-11-29"},  # before P
        {"institution_code": H4, "catalog_version": "2023", "meeting_on": "2024-12-05"},  # old version
        {"institution_code": H5, "catalog_version": "2024", "meeting_on": "2025-02-28"},  # on D itself
        {"institution_code": H6, "catalog_version": "2024", "meeting_on": "2025-03-01"},  # a day late
        {"institution_code": "H33010200090", "catalog_version": "2024", "meeting_on": "2024-12-01"},
    ])
    return warehouse


def statuses(conn, period: str) -> dict[str, tuple]:
    results, findings = run_indicator(conn, period, "committee_linkage")
    check_findings_behind_breaches(results, findings)
    return {code: (r["value"], r["threshold"], r["status"]) for code, r in by_entity(results).items()}


def test_within_the_three_months_pending_then_compliant_or_breach(linkage):
    # December 2024: month end 12-31 < D 2025-02-28, so no meeting yet is pending (threshold null).
    assert statuses(linkage, "2024-12") == {
        H1: (0, None, "pending"),
        H2: (1, 1, "compliant"),       # met on 12-10, between P and min(D, month end)
        H3: (0, None, "pending"),      # a meeting before publication does not count
        H4: (0, None, "pending"),      # a meeting about the 2023 version does not count
        H5: (0, None, "pending"),
        H6: (0, None, "pending"),
    }


def test_deadline_reached(linkage):
    # February 2025: month end = D = 2025-02-28, so "month end >= D" makes a missing meeting a breach.
    got = statuses(linkage, "2025-02")
    assert got[H1] == (0, 1, "breach")
    assert got[H3] == (0, 1, "breach") and got[H4] == (0, 1, "breach")
    assert got[H2] == (1, 1, "compliant")
    assert got[H5] == (1, 1, "compliant")      # met on D itself
    assert got[H6] == (0, 1, "breach")         # not yet met
    # Opened after P: own deadlines 2025-04-20 and 2025-04-30, still ahead.
    assert got[H7] == (0, None, "pending") and got[H8] == (0, None, "pending")


def test_a_late_meeting_stays_a_breach(linkage):
    got = statuses(linkage, "2025-03")
    assert got[H6] == (0, 1, "breach")         # met 2025-03-01, after D 2025-02-28
    assert got[H2] == (1, 1, "compliant")


def test_institution_opened_later_gets_its_own_three_months(linkage):
    # April 2025, month end 04-30: H7's D = 01-20 + 3 months = 04-20 → breach;
    # H8's D = 01-31 + 3 months = 04-30 (clamped) = month end → breach too.
    got = statuses(linkage, "2025-03")
    assert got[H7] == (0, None, "pending") and got[H8] == (0, None, "pending")
    got = statuses(linkage, "2025-04")
    assert got[H7] == (0, 1, "breach") and got[H8] == (0, 1, "breach")


def test_meeting_after_month_end_does_not_count_for_an_earlier_period(linkage):
    # November 2024 (month end = P = 11-30): H2's meeting of 12-10 lies after month end.
    got = statuses(linkage, "2024-11")
    assert got[H2] == (0, None, "pending")


def test_no_catalog_published_yet_means_no_rows(linkage):
    results, findings = run_indicator(linkage, "2022-12", "committee_linkage")
    assert results == [] and findings == []


def test_breach_finding_names_the_catalog_version(linkage):
    results, findings = run_indicator(linkage, "2025-02", "committee_linkage")
    assert sorted((f["entity_code"], f["kind"], f["subject"]) for f in findings) == [
        (H1, "no_committee_meeting", "2024"),
        (H3, "no_committee_meeting", "2024"),
        (H4, "no_committee_meeting", "2024"),
        (H6, "no_committee_meeting", "2024"),
    ]
    detail = json.loads(next(f["detail"] for f in findings if f["entity_code"] == H6))
    assert detail["deadline"] == "2025-02-28" and detail["meetings_for_version"] == ["2025-03-01"]
    assert all(r["measure"] == "meeting_held" and r["entity_type"] == "institution" for r in results)


def test_deadline_months_come_from_the_policy_file(linkage, tmp_path):
    # With four months, D = 2025-03-30: H6's meeting on 03-01 is in time, and February is pending.
    policy = policy_with(tmp_path, {"committee_linkage_deadline_months": 4})
    results, _ = run_indicator(linkage, "2025-02", "committee_linkage", policy=policy)
    assert by_entity(results)[H1]["status"] == "pending"
    results, _ = run_indicator(linkage, "2025-03", "committee_linkage", policy=policy)
    assert by_entity(results)[H6]["status"] == "compliant"
    assert by_entity(results)[H1]["status"] == "breach"
