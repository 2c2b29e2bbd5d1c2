"""Indicator 1, nego_allocation: negotiated-drug allocation rate of level-3 public institutions and
dual-channel pharmacies at month end (indicators.md 1).

One hand-built month, 2024-06 (month end 2024-06-30). The catalog switches from version 2023 to 2024
on 2024-06-15, inside the month: month end reads version 2024.
"""

from __future__ import annotations

import itertools
import json

import pytest

from .conftest import by_entity, check_findings_behind_breaches, insert, policy_with, run_indicator

PERIOD = "2024-06"


def code(name: str) -> str:
    """A drug code (X + 22 characters) derived from a short label, readable in failures."""
    return "X" + name.upper().ljust(22, "0")


# Catalog 2024 (in force from 2024-06-15): negotiated varieties in agreement at month end are
# N1..N10 (10 names). N1 has two codes. N1..N5 are oncology drugs. N10's agreement ends on month
# end itself (still in agreement); N11's ended the day before (out); N12 is not negotiated (out).
CATALOG_2024 = (
    [{"drug_code": code("n1a"), "generic_name": "N1", "specialty": "oncology"},
     {"drug_code": code("n1b"), "generic_name": "N1", "specialty": "oncology"}]
    + [{"drug_code": code(f"n{i}"), "generic_name": f"N{i}", "specialty": "oncology"} for i in range(2, 6)]
    + [{"drug_code": code(f"n{i}"), "generic_name": f"N{i}"} for i in range(6, 10)]
    + [{"drug_code": code("n10"), "generic_name": "N10", "negotiated_valid_to": "2024-06-30"},
       {"drug_code": code("n11"), "generic_name": "N11", "negotiated_valid_to": "2024-06-29"},
       {"drug_code": code("n12"), "generic_name": "N12", "negotiated": False}]
)
# Catalog 2023 (in force until 2024-06-14): other varieties, and code "old5" mapped to N5 — a
# listing of "old5" does not stock N5 at month end, where version 2024 no longer maps it.
CATALOG_2023 = [
    {"drug_code": code("n1a"), "generic_name": "N1"},
    {"drug_code": code("old5"), "generic_name": "N5"},
    *[{"drug_code": code(f"gone{i}"), "generic_name": f"GONE{i}"} for i in range(1, 6)],
]


def load_catalog(conn) -> None:
    rows = []
    for r in CATALOG_2024:
        rows.append({"catalog_version": "2024", "published_on": "2024-06-01", "effective_from": "2024-06-15",
                     "negotiated": True, **r})
    for r in CATALOG_2023:
        rows.append({"catalog_version": "2023", "published_on": "2022-12-01", "effective_from": "2023-01-01",
                     "negotiated": True, **r})
    insert(conn, "insurance.drug_catalog", rows)


def listing(institution: str, label: str, **extra) -> dict:
    return {"institution_code": institution, "drug_code": code(label), "listed_on": "2024-01-01", **extra}


@pytest.fixture
def month(warehouse):
    load_catalog(warehouse)
    insert(warehouse, "health.institutions", [
        {"institution_code": "H33010200001", "category": "general", "grade": "A"},
        {"institution_code": "H33010200002", "category": "general", "grade": "B"},
        {"institution_code": "H33010200003", "category": "general", "grade": "U"},
        {"institution_code": "H33010200004", "category": "tcm", "grade": "A"},
        {"institution_code": "H33010200005", "category": "specialist", "specialty": "oncology", "grade": "B"},
        {"institution_code": "H33010200006", "category": "specialist", "specialty": "pediatrics"},
        {"institution_code": "H33010200007", "category": "integrated", "grade": "C"},
        # outside the population: no row for any of these
        {"institution_code": "H33010200090", "ownership": "private"},
        {"institution_code": "H33010200091", "level": 2},
        {"institution_code": "H33010200092", "category": "community"},
        {"institution_code": "H33010200093", "valid_to": "2024-06-30"},  # ended on month end: not in force
        {"institution_code": "H33010200094", "valid_from": "2024-07-01"},
    ])
    insert(warehouse, "health.formulary", [
        # general A: N1 (through its second code), N2, N3 → 3/10 = 0.30, exactly the 0.30 bound
        listing("H33010200001", "n1b"), listing("H33010200001", "n2"), listing("H33010200001", "n3"),
        # general B: only N1 counts → 1/10 = 0.10 < 0.20. "old5" maps to N5 only in the 2023 catalog;
        # N2 was delisted on month end; N3 is listed from the day after month end.
        listing("H33010200002", "n1a"), listing("H33010200002", "old5"),
        listing("H33010200002", "n2", delisted_on="2024-06-30"),
        listing("H33010200002", "n3", listed_on="2024-07-01"),
        listing("H33010200002", "n12"),  # not negotiated: neither numerator nor denominator
        # general grade U (read with B): N1, N2 → 2/10 = 0.20, exactly met
        listing("H33010200003", "n1a"), listing("H33010200003", "n2"),
        # tcm: nothing listed → 0/10 breach
        # oncology specialist: denominator N1..N5 only; N1, N2, N3 + non-oncology N6 → 3/5 = 0.60, met
        listing("H33010200005", "n1a"), listing("H33010200005", "n2"), listing("H33010200005", "n3"),
        listing("H33010200005", "n6"),
        # integrated grade C: N10 (agreement ends on month end, still counts) and N11 (ended) → 1/10
        listing("H33010200007", "n10"), listing("H33010200007", "n11"),
    ])
    insert(warehouse, "insurance.dual_channel_pharmacies", [
        {"pharmacy_code": "P33010200001"},
        {"pharmacy_code": "P33010200002"},
        {"pharmacy_code": "P33010200003", "revoked_on": "2024-06-30"},  # revoked on month end: no row
        {"pharmacy_code": "P33010200004", "revoked_on": "2024-07-01"},  # still designated at month end
        {"pharmacy_code": "P33010200005", "designated_on": "2024-07-01"},
    ])

    serial = itertools.count(1)

    def received(pharmacy: str, label: str, at: str, event: str = "received") -> dict:
        return {"party_code": pharmacy, "drug_code": code(label), "event": event, "event_at": at,
                "trace_code": f"8{next(serial):019d}"}

    insert(warehouse, "traceability.trace_events", [
        # The 90-day window ending 2024-06-30 starts 2024-04-02 (30 June − 89 days).
        received("P33010200001", "n1a", "2024-04-02T08:00:00+08:00"),   # first day of the window: counts
        received("P33010200001", "n2", "2024-04-01T23:00:00+08:00"),    # one day early: no
        received("P33010200001", "n3", "2024-06-30T23:30:00+08:00"),    # last minutes of month end: counts
        received("P33010200001", "n4", "2024-06-30T16:30:00Z"),         # 2024-07-01 00:30 in UTC+08:00: no
        received("P33010200001", "n5", "2024-06-10T10:00:00+08:00", event="sold"),  # not a receipt: no
        received("P33010200001", "n12", "2024-06-10T10:00:00+08:00"),   # not negotiated
        # P2: N1, N2, N3 → 3/10 = 0.30, met
        received("P33010200002", "n1b", "2024-06-01T10:00:00+08:00"),
        received("P33010200002", "n2", "2024-05-01T10:00:00+08:00"),
        received("P33010200002", "n3", "2024-06-20T10:00:00+08:00"),
        # P4 (revoked after month end): N6, N7, N8 → 3/10 = 0.30
        received("P33010200004", "n6", "2024-06-01T10:00:00+08:00"),
        received("P33010200004", "n7", "2024-06-01T10:00:00+08:00"),
        received("P33010200004", "n8", "2024-06-01T10:00:00+08:00"),
        # revoked pharmacy's receipts are irrelevant: it has no row
        received("P33010200003", "n1a", "2024-06-01T10:00:00+08:00"),
    ])
    return warehouse


def test_rates_and_statuses(month):
    results, findings = run_indicator(month, PERIOD, "nego_allocation")
    rows = by_entity(results)
    expected = {
        # entity: (numerator, denominator, threshold, status)
        "H33010200001": (3, 10, 0.30, "compliant"),   # 3/10 = 0.30 meets 0.30 exactly
        "H33010200002": (1, 10, 0.20, "breach"),      # 1/10 < 0.20
        "H33010200003": (2, 10, 0.20, "compliant"),   # grade U read with B: 2/10 = 0.20 meets it
        "H33010200004": (0, 10, 0.20, "breach"),      # tcm: nothing listed
        "H33010200005": (3, 5, 0.60, "compliant"),    # oncology: 3 of its 5 varieties = 0.60
        "H33010200007": (1, 10, 0.20, "breach"),      # integrated C: N10 only (N11's agreement ended)
        "P33010200001": (2, 10, 0.30, "breach"),      # N1 (window start), N3 (23:30 on month end)
        "P33010200002": (3, 10, 0.30, "compliant"),
        "P33010200004": (3, 10, 0.30, "compliant"),   # revoked only after month end
    }
    assert set(rows) == set(expected) | {"H33010200006"}
    for entity, (num, den, threshold, status) in expected.items():
        row = rows[entity]
        assert (row["numerator"], row["denominator"], row["threshold"], row["status"]) == (
            num, den, threshold, status), entity
        assert row["value"] == pytest.approx(num / den)
        assert row["measure"] == "rate"
        assert row["entity_type"] == ("pharmacy" if entity.startswith("P") else "institution")
    # pediatrics specialist: no negotiated pediatrics variety → denominator 0, no rule applies
    ped = rows["H33010200006"]
    assert (ped["value"], ped["denominator"], ped["threshold"]) == (None, 0, None)
    assert ped["status"] == "not_applicable"
    check_findings_behind_breaches(results, findings)


def test_findings_name_each_missing_variety(month):
    _, findings = run_indicator(month, PERIOD, "nego_allocation")
    missing: dict[str, set[str]] = {}
    for f in findings:
        assert f["kind"] == "missing_variety" and f["amount"] is None
        missing.setdefault(f["entity_code"], set()).add(f["subject"])
    all_ten = {f"N{i}" for i in range(1, 11)}
    assert missing == {
        "H33010200002": all_ten - {"N1"},
        "H33010200004": all_ten,
        "H33010200007": all_ten - {"N10"},
        "P33010200001": all_ten - {"N1", "N3"},
    }
    n5 = next(f for f in findings if f["entity_code"] == "H33010200002" and f["subject"] == "N5")
    detail = json.loads(n5["detail"])
    # the detail names the codes of the catalog in force at month end: "old5" is not one of them
    assert detail["drug_codes"] == [code("n5")]
    assert detail["catalog_version"] == "2024"


def test_catalog_in_force_at_month_end_decides(month):
    # Computed for May (month end 2024-05-31) the 2023 catalog is in force: its varieties are N1, N5
    # and GONE1..5 (7 names), and "old5" stocks N5 → general B holds N1 and N5 = 2/7 ≥ 0.20.
    results, _ = run_indicator(month, "2024-05", "nego_allocation")
    row = by_entity(results)["H33010200002"]
    assert (row["numerator"], row["denominator"], row["status"]) == (2, 7, "compliant")


def test_threshold_comes_from_the_policy_file(month, tmp_path):
    # A province raises the grade-A bound to 0.40: the same 3/10 is now a breach, with no code change.
    policy = policy_with(tmp_path, {"nego_allocation_min_rate_l3_general_grade_a": 0.40})
    results, findings = run_indicator(month, PERIOD, "nego_allocation", policy=policy)
    row = by_entity(results)["H33010200001"]
    assert (row["threshold"], row["status"]) == (0.40, "breach")
    assert {f["subject"] for f in findings if f["entity_code"] == "H33010200001"} == {
        f"N{i}" for i in range(4, 11)}


def test_pharmacy_window_comes_from_the_policy_file(month, tmp_path):
    # A 91-day window starts 2024-04-01: P1's N2 receipt (1 April, 23:00) now counts → 3/10 = 0.30.
    policy = policy_with(tmp_path, {"nego_allocation_pharmacy_window_days": 91})
    results, _ = run_indicator(month, PERIOD, "nego_allocation", policy=policy)
    row = by_entity(results)["P33010200001"]
    assert (row["numerator"], row["status"]) == (3, "compliant")


def test_threshold_within_tolerance_is_met(month, tmp_path):
    # 0.1 + 0.2 in binary floating point is 0.30000000000000004: 3/10 lies within 1e-9 of it and meets it.
    policy = policy_with(tmp_path, {"nego_allocation_min_rate_l3_general_grade_a": 0.1 + 0.2})
    results, _ = run_indicator(month, PERIOD, "nego_allocation", policy=policy)
    assert by_entity(results)["H33010200001"]["status"] == "compliant"
