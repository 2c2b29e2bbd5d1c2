"""Indicator 4, dual_channel_trace: traceability of dual-channel pharmacy sales (indicators.md 4).

Month 2024-06. Catalog 2023 is in force until 2024-06-14, catalog 2024 from 2024-06-15 (a switch
inside the month): drug DX is negotiated in 2023 only, so its lines count until 06-14.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from .conftest import by_entity, check_findings_behind_breaches, insert, policy_with, run_indicator

PERIOD = "2024-06"
DN, DX, DE, DY = ("X" + c * 22 for c in "NXEY")
P1, P2, P3 = "P33010200001", "P33010200002", "P33010200003"


def line(sid: str, pharmacy: str, drug: str, at: str, codes: list[str], fund: str = "1.00") -> dict:
    return {"settlement_id": f"STL-0000{sid}", "provider_code": pharmacy, "drug_code": drug, "settled_at": at,
            "trace_codes": codes, "visit_type": "pharmacy", "unit_price": fund}


def subject(sid: str) -> str:
    """The finding subject of line 1 of settlement ``sid`` (as built by :func:`line`)."""
    return f"STL-0000{sid}#1"


def sale(code: str, party: str, at: str, event: str = "sold") -> dict:
    return {"trace_code": code, "party_code": party, "event_at": at, "event": event}


def tc(n: int) -> str:
    return f"{n:020d}"


@pytest.fixture
def sales(warehouse):
    versions = [("2023", "2022-12-01", "2023-01-01"), ("2024", "2024-06-01", "2024-06-15")]
    catalog = []
    for version, published, effective in versions:
        catalog += [
            {"drug_code": DN, "negotiated": True},
            {"drug_code": DX, "negotiated": version == "2023"},
            {"drug_code": DE, "negotiated": True, "negotiated_valid_to": "2024-06-10"},
            {"drug_code": DY, "negotiated": False},
        ]
        for row in catalog[-4:]:
            row.update(catalog_version=version, published_on=published, effective_from=effective)
    insert(warehouse, "insurance.drug_catalog", catalog)
    insert(warehouse, "insurance.dual_channel_pharmacies", [
        {"pharmacy_code": P1},
        {"pharmacy_code": P2, "revoked_on": "2024-06-20"},
        {"pharmacy_code": P3},
    ])
    insert(warehouse, "insurance.settlements", [
        # P1
        line("L1", P1, DN, "2024-06-05T10:00:00+08:00", [tc(1)]),            # sold next day: traced
        line("L2", P1, DN, "2024-06-05T10:00:00+08:00", [tc(2)], "12.34"),   # 2 days later: untraced
        line("L3", P1, DN, "2024-06-05T10:00:00+08:00", [], "5.00"),         # no trace code: untraced
        line("L4", P1, DN, "2024-06-05T10:00:00+08:00", [tc(3), tc(4)], "7.50"),  # one code sold elsewhere
        line("L5", P1, DX, "2024-06-14T10:00:00+08:00", [tc(5)]),            # DX negotiated in 2023: traced
        line("L6", P1, DX, "2024-06-16T10:00:00+08:00", []),                 # 2024: DX not negotiated
        line("L7", P1, DN, "2024-06-30T16:30:00Z", []),                      # 07-01 00:30 UTC+08:00: July
        line("L8", P1, DN, "2024-05-31T16:30:00Z", [tc(8)]),                 # 06-01 00:30 UTC+08:00: June
        line("L9", P1, DE, "2024-06-10T10:00:00+08:00", [tc(9)]),            # agreement ends 06-10: counts
        line("LA", P1, DE, "2024-06-11T10:00:00+08:00", []),                 # agreement over: not a line
        line("LB", P1, DN, "2024-06-06T10:00:00+08:00", [tc(11)]),           # only a `received` event
        # P2, revoked on 06-20
        line("M1", P2, DN, "2024-06-19T10:00:00+08:00", [tc(21)]),           # traced
        line("M2", P2, DN, "2024-06-20T10:00:00+08:00", []),                 # revoked that day: not a line
        # P3: only a non-negotiated drug → no line, no row
        line("N1", P3, DY, "2024-06-19T10:00:00+08:00", []),
        # an institution is not a dual-channel pharmacy
        line("H1", "H33010200001", DN, "2024-06-19T10:00:00+08:00", []),
    ])
    insert(warehouse, "traceability.trace_events", [
        sale(tc(1), P1, "2024-06-06T09:00:00+08:00"),
        sale(tc(2), P1, "2024-06-07T09:00:00+08:00", "dispensed"),
        sale(tc(3), P1, "2024-06-04T09:00:00+08:00", "dispensed"),  # the day before: within 1 day
        sale(tc(4), P2, "2024-06-05T09:00:00+08:00"),
        sale(tc(5), P1, "2024-06-14T09:00:00+08:00"),
        # 2024-05-31 15:00 UTC = 23:00 on 05-31 in UTC+08:00, one calendar day before 06-01
        sale(tc(8), P1, "2024-05-31T15:00:00Z"),
        sale(tc(9), P1, "2024-06-10T09:00:00+08:00"),
        sale(tc(11), P1, "2024-06-06T09:00:00+08:00", "received"),
        sale(tc(21), P2, "2024-06-19T11:00:00+08:00"),
    ])
    return warehouse


def test_traced_share_per_pharmacy(sales):
    results, findings = run_indicator(sales, PERIOD, "dual_channel_trace")
    rows = by_entity(results)
    # P1 lines: L1 L2 L3 L4 L5 L8 L9 LB = 8; traced L1 L5 L8 L9 = 4 → 4/8 = 0.5 < 1.00
    # P2 lines: M1 = 1; traced 1 → 1.00
    assert {c: (r["numerator"], r["denominator"], r["value"], r["threshold"], r["status"])
            for c, r in rows.items()} == {
        P1: (4, 8, 0.5, 1.0, "breach"),
        P2: (1, 1, 1.0, 1.0, "compliant"),
    }
    assert {r["measure"] for r in results} == {"traced_share"}
    check_findings_behind_breaches(results, findings)


def test_untraced_lines_are_findings_with_their_fund(sales):
    _, findings = run_indicator(sales, PERIOD, "dual_channel_trace")
    got = {f["subject"]: f["amount"] for f in findings}
    assert got == {
        subject("L2"): Decimal("12.34"),
        subject("L3"): Decimal("5.00"),
        subject("L4"): Decimal("7.50"),
        subject("LB"): Decimal("1.00"),
    }
    kinds = {(f["kind"], f["entity_type"], f["entity_code"]) for f in findings}
    assert kinds == {("untraced_line", "pharmacy", P1)}
    l4 = json.loads(next(f["detail"] for f in findings if f["subject"] == subject("L4")))
    assert l4["unmatched_trace_codes"] == [tc(4)] and l4["reason"] == "unmatched_trace_codes"
    l3 = json.loads(next(f["detail"] for f in findings if f["subject"] == subject("L3")))
    assert l3["reason"] == "no_trace_codes"


def test_midnight_line_counts_in_its_local_month(sales):
    # S-L7 (2024-06-30T16:30Z) is 1 July in UTC+08:00: July's only P1 line, untraced (no codes).
    results, findings = run_indicator(sales, "2024-07", "dual_channel_trace")
    assert {c: (r["numerator"], r["denominator"]) for c, r in by_entity(results).items()} == {P1: (0, 1)}
    assert [f["subject"] for f in findings] == [subject("L7")]


def test_window_comes_from_the_policy_file(sales, tmp_path):
    # A 2-day window matches S-L2's dispensing two days later: P1 5/8.
    policy = policy_with(tmp_path, {"dual_channel_trace_window_days": 2})
    results, _ = run_indicator(sales, PERIOD, "dual_channel_trace", policy=policy)
    assert by_entity(results)[P1]["numerator"] == 5


def test_share_bound_comes_from_the_policy_file(sales, tmp_path):
    # With a 0.5 bound P1's 4/8 meets it exactly: compliant, and so no findings at all.
    policy = policy_with(tmp_path, {"dual_channel_trace_min_share": 0.5})
    results, findings = run_indicator(sales, PERIOD, "dual_channel_trace", policy=policy)
    assert by_entity(results)[P1]["status"] == "compliant"
    assert findings == []
