"""The whole platform on embedded defaults: seed a tiny province, run both DAGs with dag.test()."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import TEST_KEY, sanyi_env
from sanyi.config import Settings
from sanyi.ledger import TERMINAL, Ledger
from sanyi.storage import open_bucket
from sanyi.warehouse import FINDINGS, QUARANTINE, RESULTS, Warehouse

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def province(tmp_path_factory, airflow_db):
    """A seeded tiny province run end to end once; tests below inspect what it left."""
    with sanyi_env(tmp_path_factory.mktemp("e2e")):
        yield seed_and_run_tiny_province()


def seed_and_run_tiny_province() -> tuple[Settings, Any, dict[str, Any]]:
    """Seed the tiny province into the landing bucket of the environment's settings and run both DAGs:
    (settings, the seed's report, the run's outcome)."""
    from sanyi.cli import run_pipeline
    from sanyi.seed import generate

    settings = Settings.from_env()
    landing = open_bucket(settings.landing_url, settings=settings)
    report = generate(landing, seed=11, scale="tiny", pseudonym_key=TEST_KEY.encode())
    return settings, report, run_pipeline(settings)


def test_both_dags_succeed(province):
    _, _, outcome = province
    assert outcome["ingest"] == "success"
    assert outcome["indicators"] == "success"
    assert outcome["periods"]


def test_every_dropped_file_has_one_terminal_state_and_one_receipt(province):
    settings, report, _ = province
    landing = sorted(o.key for o in open_bucket(settings.landing_url).list())
    assert sorted(report.files) == landing
    ledger = Ledger(settings=settings).all()
    assert sorted(r.key for r in ledger) == landing
    assert all(r.status in TERMINAL for r in ledger)
    receipts = {o.key for o in open_bucket(settings.receipts_url).list() if o.key.endswith(".receipt.json")}
    assert receipts == {f"{k}.receipt.json" for k in landing}
    statuses = {r.status for r in ledger}
    assert {"loaded", "loaded_with_rejections", "duplicate", "rejected"} <= statuses


def test_counts_add_up_in_warehouse_and_quarantine(province):
    settings, report, _ = province
    ledger = Ledger(settings=settings).all()
    wh = Warehouse(settings=settings)
    for r in ledger:
        assert r.records_read == r.records_loaded + r.records_rejected + r.duplicate_records
    appended = {}
    for r in ledger:
        if r.status in ("loaded", "loaded_with_rejections") and r.dataset in (
            "settlements",
            "procurement_orders",
            "trace_events",
            "committee_meetings",
        ):
            appended[f"{r.agency}.{r.dataset}"] = appended.get(f"{r.agency}.{r.dataset}", 0) + r.records_loaded
    for table, n in appended.items():
        assert wh.scan(table).num_rows == n, table
    rejected_in_loaded_files = sum(
        r.records_rejected
        for r in ledger
        if r.status in ("loaded_with_rejections",)
        or (r.status == "rejected" and r.records_rejected and r.reason and "every record" in r.reason)
    )
    assert wh.scan(QUARANTINE).num_rows == rejected_in_loaded_files
    assert report.invalid_records > 0 and rejected_in_loaded_files > 0


def test_no_raw_resident_id_leaves_the_landing_bucket(province):
    from guarantees import assert_every_object_accounted_for, assert_no_resident_ids

    settings, _, _ = province
    assert_no_resident_ids(settings)
    assert_every_object_accounted_for(settings)


def test_indicators_are_published_for_every_period(province):
    settings, _, outcome = province
    wh = Warehouse(settings=settings)
    results = wh.scan(RESULTS)
    assert results.num_rows > 0
    assert set(results.column("period").to_pylist()) == set(outcome["periods"])
    assert wh.scan(FINDINGS).num_rows > 0
    published = {o.key for o in open_bucket(settings.published_url).list()}
    for period in outcome["periods"]:
        for name in ("results.csv", "results.parquet", "findings.csv", "findings.parquet", "manifest.json"):
            assert f"{period}/{name}" in published
        for agency in ("health", "insurance", "traceability"):
            assert f"{period}/notices/{agency}.md" in published


def test_a_second_run_over_the_same_drops_changes_nothing(province):
    from sanyi.cli import run_pipeline

    settings, _, _ = province
    wh = Warehouse(settings=settings)
    before = wh.snapshot_ids()
    ledger_before = [(r.id, r.status, r.records_loaded) for r in Ledger(settings=settings).all()]
    receipts = open_bucket(settings.receipts_url)
    receipts_before = {o.key: receipts.read_bytes(o.key) for o in receipts.list()}
    outcome = run_pipeline(settings)
    assert outcome["ingest"] == "success"
    assert outcome["periods"] == []  # nothing new landed, nothing to recompute
    assert wh.snapshot_ids() == before
    assert [(r.id, r.status, r.records_loaded) for r in Ledger(settings=settings).all()] == ledger_before
    assert {o.key: receipts.read_bytes(o.key) for o in receipts.list()} == receipts_before


def test_every_planted_violation_shows_up(province):
    settings, report, _ = province
    wh = Warehouse(settings=settings)
    results = wh.scan(RESULTS).to_pylist()
    findings = wh.scan(FINDINGS).to_pylist()
    breaches = {
        (r["indicator"], r["period"], r["entity_type"], r["entity_code"]) for r in results if r["status"] == "breach"
    }
    from sanyi.indicators import INDICATORS

    assert {p["indicator"] for p in report.planted} == set(INDICATORS)
    missing = []
    for p in report.planted:
        row = (p["indicator"], p["period"], p["entity_type"], p["entity_code"])
        if p["kind"] == "breach":
            ok = row in breaches
        else:
            ok = any(
                (f["indicator"], f["period"], f["kind"]) == (p["indicator"], p["period"], p["kind"])
                and (
                    p["entity_code"] is None
                    or (f["entity_type"], f["entity_code"]) == (p["entity_type"], p["entity_code"])
                )
                and (p["subject"] is None or f["subject"] == p["subject"])
                for f in findings
            )
        if not ok:
            missing.append(p)
    assert missing == []
