"""Indicator 11, submission_completeness: reporting completeness and timeliness per scheduled dataset
(indicators.md 11). Schedules from the policy file: settlements, procurement_orders and trace_events
daily (due before 00:00 UTC+08:00 of business date + 2 days); formulary, chronic_registry and
dual_channel_pharmacies monthly (due before 00:00 of the 6th of the next month).
Expected values are worked out in the comments. The default arrival of a submission in the helper is
02:00 UTC+08:00 the day after its business date (on time).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

DAILY = ("insurance/settlements", "insurance/procurement_orders", "traceability/trace_events")
MONTHLY = ("health/formulary", "health/chronic_registry", "insurance/dual_channel_pharmacies")
FEBRUARY = [date(2024, 2, 1) + timedelta(days=i) for i in range(29)]


def sub(dataset: str, business_date: date | str, status: str = "loaded", arrived_at: str | None = None
        ) -> dict[str, Any]:
    """A ``sanyi.submissions`` row for ``agency/dataset``; arrival defaults to the helper's on-time one."""
    agency, name = dataset.split("/")
    row = {"agency": agency, "dataset": name, "business_date": business_date, "status": status}
    if arrived_at is not None:
        row["arrived_at"] = arrived_at
    return row


def _rows(results):
    return {(r["entity_code"], r["measure"]): (r["numerator"], r["denominator"], r["threshold"], r["status"])
            for r in results}


def test_daily_and_monthly_after_every_deadline(warehouse, insert, run_indicator):
    special = {date(2024, 2, d) for d in (10, 11, 12, 13, 14, 15)}
    rows = [sub("insurance/settlements", d) for d in FEBRUARY if d not in special]
    rows += [
        # 02-10: the rejected file does not count; the loaded one arrives at 00:00 of 02-12, the deadline
        # itself ("before 00:00" is on time) -> late.
        sub("insurance/settlements", "2024-02-10", "rejected"),
        sub("insurance/settlements", "2024-02-10", arrived_at="2024-02-12T00:00:00+08:00"),
        # 02-11: one second before its deadline (02-13 00:00) -> on time.
        sub("insurance/settlements", "2024-02-11", arrived_at="2024-02-12T23:59:59+08:00"),
        # 02-12: only a duplicate (replay) -> missing.
        sub("insurance/settlements", "2024-02-12", "duplicate"),
        # 02-13: loaded with rejections counts as received.
        sub("insurance/settlements", "2024-02-13", "loaded_with_rejections"),
        # 02-14: the earliest loaded file decides (on time), a later one does not make it late.
        sub("insurance/settlements", "2024-02-14", arrived_at="2024-02-15T10:00:00+08:00"),
        sub("insurance/settlements", "2024-02-14", arrived_at="2024-02-20T10:00:00+08:00"),
        # 02-15: 2024-02-16T16:30Z is 02-17 00:30 in UTC+08:00, after the 02-17 00:00 deadline -> late.
        sub("insurance/settlements", "2024-02-15", arrived_at="2024-02-16T16:30:00Z"),
    ]
    rows += [sub("insurance/procurement_orders", d) for d in FEBRUARY]
    # traceability/trace_events: nothing at all.
    rows += [
        sub("health/formulary", "2024-02-29", arrived_at="2024-03-05T23:59:00+08:00"),  # on time
        sub("health/chronic_registry", "2024-02-01", arrived_at="2024-03-06T00:00:00+08:00"),  # late
        sub("insurance/dual_channel_pharmacies", "2024-02-20", "rejected"),   # does not count
        sub("insurance/dual_channel_pharmacies", "2024-03-01"),               # another period
        sub("health/institutions", "2024-02-01"),                             # no schedule: no row
    ]
    insert(warehouse, "sanyi.submissions", rows)

    results, findings = run_indicator(warehouse, "2024-02", "submission_completeness")
    assert all(r["entity_type"] == "dataset" for r in results)
    assert _rows(results) == {
        # settlements: 29 dates expected; received 29 - 1 (02-12) = 28; on time 28 - 2 (02-10, 02-15) = 26.
        ("insurance/settlements", "completeness"): (28.0, 29.0, 1.0, "breach"),
        ("insurance/settlements", "timeliness"): (26.0, 29.0, 1.0, "breach"),
        ("insurance/procurement_orders", "completeness"): (29.0, 29.0, 1.0, "compliant"),
        ("insurance/procurement_orders", "timeliness"): (29.0, 29.0, 1.0, "compliant"),
        ("traceability/trace_events", "completeness"): (0.0, 29.0, 1.0, "breach"),
        ("traceability/trace_events", "timeliness"): (0.0, 29.0, 1.0, "breach"),
        ("health/formulary", "completeness"): (1.0, 1.0, 1.0, "compliant"),
        ("health/formulary", "timeliness"): (1.0, 1.0, 1.0, "compliant"),
        ("health/chronic_registry", "completeness"): (1.0, 1.0, 1.0, "compliant"),
        ("health/chronic_registry", "timeliness"): (0.0, 1.0, 1.0, "breach"),
        ("insurance/dual_channel_pharmacies", "completeness"): (0.0, 1.0, 1.0, "breach"),
        ("insurance/dual_channel_pharmacies", "timeliness"): (0.0, 1.0, 1.0, "breach"),
    }
    settlements = next(r for r in results if r["entity_code"] == "insurance/settlements"
                       and r["measure"] == "completeness")
    assert settlements["value"] == pytest.approx(28 / 29)

    got = sorted((f["entity_code"], f["kind"], f["subject"]) for f in findings)
    expected = [("health/chronic_registry", "late_submission", "2024-02"),
                ("insurance/dual_channel_pharmacies", "missing_submission", "2024-02"),
                ("insurance/settlements", "late_submission", "2024-02-10"),
                ("insurance/settlements", "late_submission", "2024-02-15"),
                ("insurance/settlements", "missing_submission", "2024-02-12")]
    # trace_events: every one of the 29 dates missing, none also late.
    expected += [("traceability/trace_events", "missing_submission", d.isoformat()) for d in FEBRUARY]
    assert got == sorted(expected)
    late = next(json.loads(f["detail"]) for f in findings if f["subject"] == "2024-02-15")
    assert (late["deadline_local"], late["first_arrival_local"]) == (
        "2024-02-17 00:00:00", "2024-02-17 00:30:00")


def test_month_not_yet_over_expects_only_past_deadlines(warehouse, insert, run_indicator):
    insert(warehouse, "sanyi.submissions",
           [sub("insurance/settlements", d) for d in FEBRUARY[:9]]       # 02-01 .. 02-09
           + [sub("health/formulary", "2024-02-05")])
    # Computed at 2024-02-10 00:00 in UTC+08:00 (given in UTC): the deadline of 02-08 (02-10 00:00) has
    # just passed, that of 02-09 has not -> 8 dates expected. Monthly datasets: nothing due before 03-06.
    now = datetime(2024, 2, 9, 16, 0, tzinfo=UTC)
    results, findings = run_indicator(warehouse, "2024-02", "submission_completeness", now=now)
    rows = _rows(results)
    assert rows[("insurance/settlements", "completeness")] == (8.0, 8.0, 1.0, "compliant")
    assert rows[("insurance/settlements", "timeliness")] == (8.0, 8.0, 1.0, "compliant")
    assert rows[("insurance/procurement_orders", "completeness")] == (0.0, 8.0, 1.0, "breach")
    # Received (formulary) or not, nothing is due yet: pending, nothing counted, no value, no threshold.
    for dataset in MONTHLY:
        for measure in ("completeness", "timeliness"):
            assert rows[(dataset, measure)] == (0.0, 0.0, None, "pending")
    assert all(r["value"] is None for r in results if r["entity_code"] in MONTHLY)
    assert sorted((f["entity_code"], f["subject"]) for f in findings) == sorted(
        (ds, f"2024-02-0{d}") for ds in ("insurance/procurement_orders", "traceability/trace_events")
        for d in range(1, 9))


def test_month_over_expects_every_date_even_before_its_deadline(warehouse, insert, run_indicator):
    # Computed on 2024-03-01 12:00 UTC+08:00: February is over, so (indicators.md 11: the "only dates whose
    # deadline has passed" rule is for a month *not yet over*) all 29 dates and the monthly files are
    # expected, although 02-29 is due only before 03-02 00:00 and the monthly files before 03-06 00:00.
    # settlements: 28 of 29 received, all on time -> 28/29; formulary: nothing yet -> 0/1, missing.
    insert(warehouse, "sanyi.submissions", [sub("insurance/settlements", d) for d in FEBRUARY[:28]])
    now = datetime(2024, 3, 1, 4, 0, tzinfo=UTC)
    results, findings = run_indicator(warehouse, "2024-02", "submission_completeness", now=now)
    rows = _rows(results)
    assert rows[("insurance/settlements", "completeness")] == (28.0, 29.0, 1.0, "breach")
    assert rows[("health/formulary", "completeness")] == (0.0, 1.0, 1.0, "breach")
    subjects = {(f["entity_code"], f["kind"], f["subject"]) for f in findings}
    assert ("insurance/settlements", "missing_submission", "2024-02-29") in subjects
    assert ("health/formulary", "missing_submission", "2024-02") in subjects
