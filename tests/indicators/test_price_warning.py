"""Indicator 10, price_warning: change of a drug's quantity-weighted mean procurement price against the
latest earlier month with orders of the code (indicators.md 10, seed 001). Band 0.20 (our default).
Expected values are worked out in the comments.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

P1, P2, P3, P4, P5, P6 = (f"X{n:022d}" for n in range(1, 7))


def order(drug: str, day: str, qty: int, price: str) -> dict[str, Any]:
    """A procurement order of ``qty`` units of ``drug`` at ``price`` on ``day``."""
    return {"drug_code": drug, "ordered_on": day, "quantity": qty, "unit_price": price}


def test_price_change_rows_and_findings(warehouse, insert, run_indicator):
    insert(warehouse, "insurance.procurement_orders", [
        # P1: January mean (100 x 1.00 + 300 x 1.20) / 400 = 1.15; nothing in February and March;
        # April 1.38 = 1.15 x 1.20: exactly +20% over a gap of several months -> compliant.
        order(P1, "2024-01-05", 100, "1.0000"),
        order(P1, "2024-01-25", 300, "1.2000"),
        order(P1, "2024-04-02", 200, "1.3800"),
        # P2: the latest earlier month is March (2.00), not January (1.00): April 1.50 -> -25% breach.
        order(P2, "2024-01-10", 10, "1.0000"),
        order(P2, "2024-03-31", 10, "2.0000"),
        order(P2, "2024-04-01", 10, "1.5000"),
        order(P2, "2024-04-30", 30, "1.5000"),
        # P3: first ordered in April: no earlier period -> not_applicable.
        order(P3, "2024-04-10", 5, "3.0000"),
        # P4: March 1.00, April 1.2001 -> +20.01% breach.
        order(P4, "2024-03-10", 1, "1.0000"),
        order(P4, "2024-04-10", 1, "1.2001"),
        # P6: March 1.05, April 0.84 -> exactly -20% (0.84 / 1.05 - 1 = -0.20000000000000007 in binary
        # floating point: compliant thanks to the 1e-9 tolerance).
        order(P6, "2024-03-10", 1, "1.0500"),
        order(P6, "2024-04-10", 1, "0.8400"),
        # P5: no order in April -> no row (May orders are later than the period).
        order(P5, "2024-03-10", 1, "1.0000"),
        order(P5, "2024-05-10", 1, "9.0000"),
    ])
    results, findings = run_indicator(warehouse, "2024-04", "price_warning")
    rows = {r["entity_code"]: r for r in results}
    assert set(rows) == {P1, P2, P3, P4, P6}
    assert all(r["entity_type"] == "drug" and r["measure"] == "price_change" for r in results)

    p1 = rows[P1]
    assert (p1["numerator"], p1["denominator"]) == (pytest.approx(1.38), pytest.approx(1.15))
    assert p1["value"] == pytest.approx(0.20)
    assert (p1["threshold"], p1["status"]) == (0.20, "compliant")
    assert (rows[P2]["value"], rows[P2]["denominator"], rows[P2]["status"]) == (
        pytest.approx(-0.25), pytest.approx(2.0), "breach")
    assert (rows[P3]["value"], rows[P3]["numerator"], rows[P3]["denominator"], rows[P3]["threshold"],
            rows[P3]["status"]) == (None, 3.0, None, None, "not_applicable")
    assert (rows[P4]["value"], rows[P4]["status"]) == (pytest.approx(0.2001), "breach")
    assert (rows[P6]["value"], rows[P6]["status"]) == (pytest.approx(-0.20), "compliant")

    assert sorted((f["entity_code"], f["kind"], f["subject"], f["amount"]) for f in findings) == [
        (P2, "price_change", P2, None),
        (P4, "price_change", P4, None),
    ]
    detail = json.loads(next(f["detail"] for f in findings if f["subject"] == P2))
    assert detail["mean_unit_price"] == pytest.approx(1.5)
    assert detail["earlier_mean_unit_price"] == pytest.approx(2.0)
    assert detail["earlier_period"] == "2024-03"


def test_first_month_has_nothing_to_compare(warehouse, insert, run_indicator):
    insert(warehouse, "insurance.procurement_orders", [order(P1, "2024-01-05", 100, "1.0000")])
    results, findings = run_indicator(warehouse, "2024-01", "price_warning")
    assert [(r["entity_code"], r["status"], r["threshold"]) for r in results] == [
        (P1, "not_applicable", None)]
    assert findings == []
