"""Indicator 6, vbp_execution: volume-based procurement execution per agreement (indicators.md 6).

Every expected number below is worked out by hand in the comments. Drug codes: SEL is the group's
selected (winning) product at 1.0000 a unit, OTHER a non-selected product of the same group.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

SEL = "X" + "1" * 22
OTHER = "X" + "2" * 22
OTHER_UNCAPPED = "X" + "3" * 22
H1, H2, H3, H4, H9 = (f"H330102000{n:02d}" for n in (1, 2, 3, 4, 9))


def _group(insert, conn, *, batch="B1", group="g1", exec_start="2024-01-01", cycle_months=12,
           price_cap=None, exemption=None, agreements=(), winning_price="1.0000"):
    insert(conn, "insurance.vbp_groups", [{
        "batch_id": batch, "product_group": group, "exec_start": exec_start, "cycle_months": cycle_months,
        "price_cap": price_cap, "exemption": exemption,
    }])
    insert(conn, "insurance.vbp_products", [
        {"batch_id": batch, "product_group": group, "drug_code": SEL, "selected": True,
         "winning_price": winning_price},
        {"batch_id": batch, "product_group": group, "drug_code": OTHER, "selected": False},
    ])
    insert(conn, "insurance.vbp_agreements", [
        {"batch_id": batch, "product_group": group, "institution_code": inst, "agreed_volume": volume}
        for inst, volume in agreements
    ])


def _orders(insert, conn, rows):
    insert(conn, "insurance.procurement_orders", [
        {"order_id": oid, "institution_code": inst, "drug_code": drug, "quantity": qty, "ordered_on": day,
         "unit_price": price}
        for oid, inst, drug, qty, day, price in rows
    ])


def _rows(results):
    return {(r["entity_code"].split("|")[0], r["measure"]): r for r in results}


def _kinds(findings):
    return sorted((f["entity_code"], f["kind"], f["subject"]) for f in findings)


def test_pending_months_then_tolerance_exactly_met(warehouse, insert, run_indicator):
    # 24-month cycle from 2024-01-01, agreed 24000 units each.
    _group(insert, warehouse, cycle_months=24, agreements=[(H1, 24000), (H2, 24000)])
    _orders(insert, warehouse, [
        ("ORDER-0001", H1, SEL, 600, "2024-02-10", "1.0000"),
        ("ORDER-0002", H2, SEL, 599, "2024-02-10", "1.0000"),
    ])

    # Months 1 and 2 are pending (both rows), with no threshold and no finding, whatever the volume.
    for period in ("2024-01", "2024-02"):
        results, findings = run_indicator(warehouse, period, "vbp_execution")
        measures = ("completion", "nonselected_share")
        assert {(r["entity_code"], r["measure"]): (r["status"], r["threshold"]) for r in results} == {
            (f"{h}|B1|g1", m): ("pending", None) for h in (H1, H2) for m in measures
        }
        assert findings == []

    # Month 3: expected progress 3/24 = 0.125, bound 0.125 - 0.10 = 0.025.
    # H1: 600 / 24000 = 0.025 meets the bound exactly (in floating point 0.125 - 0.1 = 0.025000000000000008,
    # so this holds only with the 1e-9 tolerance). H2: 599 / 24000 = 0.02496 misses it.
    results, findings = run_indicator(warehouse, "2024-03", "vbp_execution")
    rows = _rows(results)
    h1 = rows[(H1, "completion")]
    assert h1["status"] == "compliant"
    assert (h1["numerator"], h1["denominator"]) == (600.0, 24000.0)
    assert h1["value"] == pytest.approx(0.025)
    assert h1["threshold"] == pytest.approx(0.025)
    assert rows[(H2, "completion")]["status"] == "breach"
    assert _kinds(findings) == [(f"{H2}|B1|g1", "low_completion", "g1")]
    detail = json.loads(findings[0]["detail"])
    assert detail["selected_volume"] == 599 and detail["execution_month"] == 3
    assert detail["expected_progress"] == pytest.approx(0.125)


def test_not_entered_low_completion_and_nonselected_share(warehouse, insert, run_indicator):
    _group(insert, warehouse, agreements=[(H1, 1200), (H2, 1200), (H3, 1200), (H4, 1200)])
    # An agreement whose group was never sent has no row; a group starting after the month neither.
    insert(warehouse, "insurance.vbp_agreements", [{"batch_id": "NOGROUP", "product_group": "g1",
                                                    "institution_code": H1, "agreed_volume": 10}])
    _group(insert, warehouse, batch="B2", exec_start="2024-05-01", agreements=[(H1, 100)])
    _orders(insert, warehouse, [
        ("ORDER-0101", H1, OTHER, 100, "2024-02-01", "1.0000"),   # H1: only non-selected
        ("ORDER-0102", H2, SEL, 200, "2024-03-31", "1.0000"),     # H2: some selected volume
        ("ORDER-0103", H2, SEL, 500, "2024-05-02", "1.0000"),     # after the month: not in the window
        ("ORDER-0104", H3, SEL, 840, "2024-01-05", "1.0000"),     # H3: 840 selected + 360 other
        ("ORDER-0105", H3, OTHER, 360, "2024-04-30", "1.0000"),
    ])
    # H4 ordered nothing.

    results, findings = run_indicator(warehouse, "2024-04", "vbp_execution")
    assert {r["entity_code"] for r in results} == {f"{h}|B1|g1" for h in (H1, H2, H3, H4)}
    rows = _rows(results)
    # Month 4 of 12: expected 4/12, bound 4/12 - 0.10 = 0.2333...
    bound = 4 / 12 - 0.10
    # H1: selected 0 -> breach (not entered); share 100/100 = 1.0 > 0.30 -> breach.
    assert rows[(H1, "completion")]["status"] == "breach"
    assert rows[(H1, "completion")]["threshold"] == pytest.approx(bound)
    assert rows[(H1, "nonselected_share")]["value"] == 1.0
    assert rows[(H1, "nonselected_share")]["status"] == "breach"
    # H2: 200/1200 = 0.1667 < 0.2333 -> breach (low completion); share 0/200 = 0 -> compliant.
    assert rows[(H2, "completion")]["value"] == pytest.approx(200 / 1200)
    assert rows[(H2, "completion")]["status"] == "breach"
    h2_share = rows[(H2, "nonselected_share")]
    assert (h2_share["value"], h2_share["status"]) == (0.0, "compliant")
    # H3: 840/1200 = 0.70 -> compliant; share 360/(840+360) = 0.30 exactly -> compliant (limit inclusive).
    assert rows[(H3, "completion")]["status"] == "compliant"
    share = rows[(H3, "nonselected_share")]
    assert (share["numerator"], share["denominator"], share["threshold"], share["status"]) == (
        360.0, 1200.0, 0.30, "compliant")
    # H4: nothing ordered -> completion 0 breach (not entered); share null -> not_applicable, no threshold.
    assert rows[(H4, "completion")]["value"] == 0.0
    assert rows[(H4, "completion")]["status"] == "breach"
    h4_share = rows[(H4, "nonselected_share")]
    assert (h4_share["value"], h4_share["threshold"], h4_share["status"]) == (None, None, "not_applicable")

    # not_entered and low_completion never together; findings only behind the breach rows.
    assert _kinds(findings) == [
        (f"{H1}|B1|g1", "high_nonselected_share", "g1"),
        (f"{H1}|B1|g1", "not_entered", "g1"),
        (f"{H2}|B1|g1", "low_completion", "g1"),
        (f"{H4}|B1|g1", "not_entered", "g1"),
    ]
    assert all(f["entity_type"] == "agreement" and f["amount"] is None for f in findings)


def test_exempt_group_has_no_assessment_but_keeps_price_findings(warehouse, insert, run_indicator):
    _group(insert, warehouse, exemption="shortage", agreements=[(H1, 1000)])
    # Month 6, nothing selected bought, all volume non-selected: would breach twice if assessed.
    _orders(insert, warehouse, [
        ("ORDER-0201", H1, OTHER, 100, "2024-06-03", "1.0000"),
        ("ORDER-0202", H1, SEL, 10, "2024-06-04", "1.5000"),   # above the winning price 1.0000
    ])
    results, findings = run_indicator(warehouse, "2024-06", "vbp_execution")
    assert {(r["measure"], r["status"], r["threshold"]) for r in results} == {
        ("completion", "exempt", None), ("nonselected_share", "exempt", None)}
    # Only the price finding: (1.5000 - 1.0000) x 10 = 5.00, on the agreement's completion row.
    assert [(f["entity_type"], f["entity_code"], f["kind"], f["subject"], f["amount"]) for f in findings] == [
        ("agreement", f"{H1}|B1|g1", "price_above_winning", "ORDER-0202", Decimal("5.00"))]


def test_cycle_end_last_row_and_nothing_after(warehouse, insert, run_indicator):
    # exec_start 2024-01-15 + 3 months = 2024-04-15, so the cycle ends 2024-04-14; rows 2024-01..2024-04.
    _group(insert, warehouse, exec_start="2024-01-15", cycle_months=3, agreements=[(H1, 1000), (H2, 1000)])
    _orders(insert, warehouse, [
        ("ORDER-0301", H1, SEL, 500, "2024-01-20", "1.0000"),
        ("ORDER-0302", H1, SEL, 450, "2024-03-10", "1.0000"),
        ("ORDER-0303", H1, SEL, 40, "2024-04-14", "1.2000"),    # last day of the cycle, above winning
        ("ORDER-0304", H1, SEL, 100, "2024-04-20", "1.5000"),   # after the cycle: neither volume nor finding
        ("ORDER-0305", H1, SEL, 10, "2024-01-10", "1.5000"),    # before exec_start: neither
        ("ORDER-0306", H2, SEL, 1000, "2024-02-01", "1.0000"),
        ("ORDER-0307", H1, SEL, 10, "2024-05-03", "1.5000"),    # next period, after the cycle
    ])
    # March (month 3 of 3, before the cycle end): expected min(1, 3/3) = 1, bound 0.90;
    # H1 has 500 + 450 = 950 -> 0.95 compliant.
    results, _ = run_indicator(warehouse, "2024-03", "vbp_execution")
    march = _rows(results)[(H1, "completion")]
    assert (march["value"], march["threshold"], march["status"]) == (0.95, pytest.approx(0.90), "compliant")

    # April contains the cycle end: bound 1.00. H1: 950 + 40 = 990 (the 04-20 order is outside the window)
    # -> 0.99 < 1.00 breach, low_completion. H2: 1000/1000 = 1.00 compliant.
    results, findings = run_indicator(warehouse, "2024-04", "vbp_execution")
    rows = _rows(results)
    assert (rows[(H1, "completion")]["numerator"], rows[(H1, "completion")]["threshold"],
            rows[(H1, "completion")]["status"]) == (990.0, 1.0, "breach")
    assert (rows[(H2, "completion")]["value"], rows[(H2, "completion")]["status"]) == (1.0, "compliant")
    # Price finding of the cycle's last day: (1.2000 - 1.0000) x 40 = 8.00.
    assert [(f["entity_code"], f["kind"], f["subject"], f["amount"]) for f in findings] == [
        (f"{H1}|B1|g1", "low_completion", "g1", None),
        (f"{H1}|B1|g1", "price_above_winning", "ORDER-0303", Decimal("8.00")),
    ]

    # May: after the period containing the cycle end, no row and no finding.
    assert run_indicator(warehouse, "2024-05", "vbp_execution") == ([], [])


def test_price_findings_reference_prices_rounding_and_entity(warehouse, insert, run_indicator):
    _group(insert, warehouse, price_cap="2.0000", agreements=[(H1, 100)])
    # A second group without a cap: its non-selected product has no reference price.
    insert(warehouse, "insurance.vbp_groups", [{"batch_id": "B3", "product_group": "g3", "price_cap": None}])
    insert(warehouse, "insurance.vbp_products", [
        {"batch_id": "B3", "product_group": "g3", "drug_code": OTHER_UNCAPPED, "selected": False}])
    _orders(insert, warehouse, [
        ("ORDER-0400", H1, OTHER_UNCAPPED, 10, "2024-03-01", "99.0000"),  # no cap: nothing
        ("ORDER-0401", H1, SEL, 3, "2024-03-01", "1.2350"),      # (1.2350-1.0000) x 3 = 0.705 -> 0.71
        ("ORDER-0402", H1, SEL, 50, "2024-03-02", "1.0000"),     # at the winning price: nothing
        ("ORDER-0403", H9, OTHER, 200, "2024-03-03", "2.5000"),  # no agreement: entity institution
        ("ORDER-0404", H1, OTHER, 10, "2024-03-04", "2.0000"),   # at the cap: nothing
        ("ORDER-0405", H1, OTHER, 10, "2024-02-28", "9.0000"),   # earlier period: not this period's
    ])
    _, findings = run_indicator(warehouse, "2024-03", "vbp_execution")
    price = [(f["entity_type"], f["entity_code"], f["kind"], f["subject"], f["amount"])
             for f in findings if f["kind"].startswith("price_")]
    assert sorted(price) == [
        ("agreement", f"{H1}|B1|g1", "price_above_winning", "ORDER-0401", Decimal("0.71")),
        # (2.5000 - 2.0000) x 200 = 100.00
        ("institution", H9, "price_above_cap", "ORDER-0403", Decimal("100.00")),
    ]
    cap = next(json.loads(f["detail"]) for f in findings if f["subject"] == "ORDER-0403")
    assert cap["price_cap"] == 2.0 and cap["unit_price"] == 2.5 and cap["quantity"] == 200
