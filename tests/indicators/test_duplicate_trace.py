"""Indicator 5, duplicate_trace: re-sold drugs, trace codes sold twice (indicators.md 5).

Codes T1..T10 each tell one story; June 2024 is the period under test unless said.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from .conftest import by_entity, insert, run_indicator

P1, P2 = "P33010200001", "P33010200002"
PROVINCE = "330000"


def T(n: int) -> str:
    return f"{n:020d}"


def line(
    sid: str, at: str, codes: list[str], fund: str = "1.00", *, provider: str = P1, line_no: int = 1
) -> dict:
    return {"settlement_id": f"STL-{sid}", "line_no": line_no, "settled_at": at, "trace_codes": codes,
            "provider_code": provider, "unit_price": fund}


def subject(sid: str, line_no: int = 1) -> str:
    return f"STL-{sid}#{line_no}"


def event(code: str, at: str, kind: str = "sold", party: str = P1) -> dict:
    return {"trace_code": code, "event_at": at, "event": kind, "party_code": party}


@pytest.fixture
def history(warehouse):
    insert(warehouse, "health.divisions", [
        {"division_code": PROVINCE, "level": "province", "parent_code": None},
    ])
    insert(warehouse, "insurance.settlements", [
        # T1: sold in May by P1, again in June by P2 (seen in an earlier period) → June's line suspicious;
        # and a third time on 1 July 01:00 UTC+08:00 (30 June 17:00 UTC) → July.
        line("A0000001", "2024-05-20T10:00:00+08:00", [T(1)], "10.00"),
        line("B0000001", "2024-06-03T10:00:00+08:00", [T(1)], "20.00", provider=P2),
        line("J0000001", "2024-06-30T17:00:00Z", [T(1)], "3.00"),
        # T2: sold, returned, sold again: a legitimate return and re-sale
        line("C0000001", "2024-06-05T10:00:00+08:00", [T(2)]),
        line("D0000001", "2024-06-07T10:00:00+08:00", [T(2)]),
        # T3: two lines of the same settlement: not a duplicate
        line("E0000001", "2024-06-08T10:00:00+08:00", [T(3)], line_no=1),
        line("E0000001", "2024-06-08T10:00:00+08:00", [T(3)], line_no=2),
        # T4: two settlements at the same instant. F sorts before G (settlement_id breaks the tie, not the
        # order of loading), so G is the later line and the suspicious one.
        line("G0000001", "2024-06-10T12:00:00+08:00", [T(4)], "30.00"),
        line("F0000001", "2024-06-10T12:00:00+08:00", [T(4)], "99.00"),
        # T5 earlier in the same period; T6 rides along on the suspicious line but is not duplicated
        line("I0000001", "2024-06-11T10:00:00+08:00", [T(5)]),
        line("H0000001", "2024-06-12T10:00:00+08:00", [T(5), T(6)], "40.50"),
        # T10: sold, returned, re-sold (fine), then sold again with no return (suspicious)
        line("K0000001", "2024-06-01T10:00:00+08:00", [T(10)]),
        line("L0000001", "2024-06-03T10:00:00+08:00", [T(10)]),
        line("M0000001", "2024-06-04T10:00:00+08:00", [T(10)], "0.01"),
    ])
    insert(warehouse, "traceability.trace_events", [
        event(T(2), "2024-06-06T10:00:00+08:00", "returned"),
        event(T(10), "2024-06-02T10:00:00+08:00", "returned"),
        # T7: sold in May by P1, sold again in June by P2 with no return → re-sold by events in June
        event(T(7), "2024-05-28T10:00:00+08:00", "sold"),
        event(T(7), "2024-06-15T10:00:00+08:00", "sold", party=P2),
        # T8: sold, returned, sold: fine
        event(T(8), "2024-06-01T10:00:00+08:00", "sold"),
        event(T(8), "2024-06-02T10:00:00+08:00", "returned"),
        event(T(8), "2024-06-03T10:00:00+08:00", "sold", party=P2),
        # T9: dispensed 20 June, sold 30 June 16:30 UTC = 1 July 00:30 UTC+08:00 → re-sold in July
        event(T(9), "2024-06-20T10:00:00+08:00", "dispensed"),
        event(T(9), "2024-06-30T16:30:00Z", "sold", party=P2),
        # non-sale events never count: received twice is normal stock movement
        event(T(11), "2024-06-01T10:00:00+08:00", "received"),
        event(T(11), "2024-06-02T10:00:00+08:00", "received"),
    ])
    return warehouse


def test_june_province_counts(history):
    results, _ = run_indicator(history, "2024-06", "duplicate_trace")
    rows = {r["measure"]: r for r in results}
    # suspicious lines: B (T1), G (T4), H (T5), M (T10); not D (return between), not E#2 (same settlement)
    assert rows["suspicious_lines"]["value"] == 4
    # flagged codes: T1, T4, T5, T10 (lines) + T7 (events) = 5; T6 only rides along
    assert rows["flagged_trace_codes"]["value"] == 5
    # suspicious fund = 20.00 (B) + 30.00 (G) + 40.50 (H) + 0.01 (M) = 90.51
    assert rows["suspicious_fund"]["value"] == pytest.approx(90.51)
    for r in results:
        assert (r["entity_type"], r["entity_code"], r["status"]) == ("province", PROVINCE, "not_applicable")
        assert r["threshold"] is None and r["numerator"] is None and r["denominator"] is None


def test_june_findings_per_flagged_code(history):
    _, findings = run_indicator(history, "2024-06", "duplicate_trace")
    got = {f["subject"]: f["amount"] for f in findings}
    assert got == {
        T(1): Decimal("20.00"),
        T(4): Decimal("30.00"),
        T(5): Decimal("40.50"),
        T(10): Decimal("0.01"),
        T(7): None,                 # flagged by events only
    }
    assert {(f["kind"], f["entity_type"], f["entity_code"]) for f in findings} == {
        ("duplicate_trace_code", "province", PROVINCE)}
    t1 = json.loads(next(f["detail"] for f in findings if f["subject"] == T(1)))
    assert [x["line"] for x in t1["lines"]] == [subject("B0000001")]
    assert [x["line"] for x in t1["lines"][0]["earlier_lines"]] == [subject("A0000001")]
    assert t1["providers"] == [P1, P2]
    assert t1["lines"][0]["settled_at"] == "2024-06-03T10:00:00+08:00"
    t7 = json.loads(next(f["detail"] for f in findings if f["subject"] == T(7)))
    assert t7["lines"] is None
    assert [(e["party_code"], e["previous_party_code"]) for e in t7["resale_events"]] == [(P2, P1)]
    t10 = json.loads(next(f["detail"] for f in findings if f["subject"] == T(10)))
    # M is suspicious against L only: the return on 06-02 lies between K and M
    assert [x["line"] for x in t10["lines"]] == [subject("M0000001")]
    assert [x["line"] for x in t10["lines"][0]["earlier_lines"]] == [subject("L0000001")]


def test_july_sees_the_midnight_line_and_event(history):
    results, findings = run_indicator(history, "2024-07", "duplicate_trace")
    rows = {r["measure"]: r["value"] for r in results}
    # J (1 July 01:00 local) repeats T1 → 1 line, 3.00; T9's sale at 00:30 local on 1 July → events
    assert rows == {"suspicious_lines": 1, "flagged_trace_codes": 2, "suspicious_fund": 3.0}
    assert {f["subject"]: f["amount"] for f in findings} == {T(1): Decimal("3.00"), T(9): None}
    t1 = json.loads(next(f["detail"] for f in findings if f["subject"] == T(1)))
    assert [x["line"] for x in t1["lines"][0]["earlier_lines"]] == [subject("A0000001"), subject("B0000001")]


def test_a_quiet_month_still_reports_zeros(history):
    results, findings = run_indicator(history, "2024-04", "duplicate_trace")
    assert by_entity(results, "suspicious_lines")[PROVINCE]["value"] == 0
    assert by_entity(results, "suspicious_fund")[PROVINCE]["value"] == 0
    assert findings == []


def test_earliest_line_is_never_suspicious(warehouse):
    # Two lines only, one day apart in May: May has the original sale, nothing suspicious;
    # without a province division, the province comes from the provider code (P33… → 330000).
    insert(warehouse, "insurance.settlements", [
        line("A0000001", "2024-05-01T10:00:00+08:00", [T(1)]),
        line("B0000001", "2024-06-01T10:00:00+08:00", [T(1)]),
    ])
    results, _ = run_indicator(warehouse, "2024-05", "duplicate_trace")
    assert by_entity(results, "suspicious_lines")[PROVINCE]["value"] == 0
    results, _ = run_indicator(warehouse, "2024-06", "duplicate_trace")
    assert by_entity(results, "suspicious_lines")[PROVINCE]["value"] == 1
