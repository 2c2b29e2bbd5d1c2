"""Concurrency: loads racing for the same table in real processes lose no commit and load nothing twice.

pyiceberg's SqlCatalog commits optimistically (swap the metadata pointer only if it is still the
one the writer started from) and raises ``CommitFailedException`` to the loser. pyiceberg 0.12
would then retry on its own by re-basing the same rows on the new table state, which is wrong for
what Sanyi writes (duplicates and upsert merges are derived from the table), so the warehouse turns
that off and ``Warehouse.commit`` reloads the table, rebuilds and retries. The workers are lined up
inside the catalog commit, so all but one of them lose the first round for certain; the tests count
``Warehouse.commit``'s retries to prove the contention happened.
"""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import pytest

from samples import division, ndjson, settlement
from sanyi.ingest import discover
from sanyi.ledger import Ledger
from sanyi.warehouse import PROP_LEDGER, Warehouse

from .harness import T0, drop, sanyi_env, settings_at, warehouse_state
from .workers import load

KEY = "test-pseudonym-key-0123456789abcdef"
QUARANTINE = "sanyi.quarantine"

pytestmark = pytest.mark.filterwarnings("ignore:Delete operation did not match any records")


def race(settings, file_ids: list[int], *, at: str, lease_seconds: float | None = None) -> list[dict]:
    """Run ``process_file`` for each id in its own spawned process, lined up at a barrier ``at``."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(file_ids))
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=load,
            args=(
                sanyi_env(settings.home, KEY, settings.catalog_uri),
                file_id,
                barrier,
                at,
                out,
                lease_seconds,
            ),
        )
        for file_id in file_ids
    ]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=90) for _ in procs]
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():  # a hung worker must not outlive the test
                p.kill()
                p.join()
    return sorted(results, key=lambda r: r["file_id"])


def _retries(results: list[dict], table: str) -> int:
    return sum(r["retries"].get(table, 0) for r in results)


def test_concurrent_appends_to_one_table_lose_no_commit(tmp_path, catalog_uri):
    settings = settings_at(tmp_path / "home", KEY, catalog_uri)
    n = 3
    for f in range(n):
        base = 100 * (f + 1)
        records = [
            settlement(base + 1),
            settlement(base + 2),
            settlement(50),  # in every file: stored once, a duplicate record for all but one
            settlement(base + 1),  # a duplicate within the file
            settlement(base + 3, amount=99.00),  # rejected
        ]
        drop(
            settings,
            f"insurance/settlements/2024-10-0{f + 1}/s{f}.ndjson",
            ndjson(records),
            at=T0 + timedelta(f),
        )
    ids = discover(settings)

    results = race(settings, ids, at="commit")

    assert [r.get("error") for r in results] == [None] * n, [r.get("traceback") for r in results]
    # Everyone waited inside the same first commit: all but one lost it and retried.
    assert _retries(results, "insurance.settlements") >= n - 1
    receipts = [r["receipt"] for r in results]
    assert all(r["status"] == "loaded_with_rejections" for r in receipts)
    assert all(r["counts"]["read"] == 5 and r["counts"]["rejected"] == 1 for r in receipts)
    # Exactly one file stored the shared record: the others counted it as a duplicate.
    assert sorted(r["counts"]["loaded"] for r in receipts) == [2, 2, 3]
    assert sum(r["counts"]["duplicate_records"] for r in receipts) == n + (n - 1)

    wh_rows = warehouse_state(settings)
    expected_ids = {
        f"S2024100100{i:04d}" for f in range(n) for i in (100 * (f + 1) + 1, 100 * (f + 1) + 2)
    } | {"S20241001000050"}
    stored = Warehouse(settings=settings).scan("insurance.settlements").column("settlement_id").to_pylist()
    assert sorted(stored) == sorted(expected_ids)  # every row of every file, each exactly once
    assert wh_rows["insurance.settlements"]["snapshots"] == {str(i): 1 for i in ids}
    assert wh_rows[QUARANTINE]["rows"] == n and wh_rows[QUARANTINE]["snapshots"] == {str(i): 1 for i in ids}

    ledger = Ledger(settings=settings).all()
    assert all(r.status == "loaded_with_rejections" for r in ledger)
    by_id = {r["file_id"]: r["receipt"]["counts"] for r in results}
    assert all(
        (row.records_read, row.records_loaded, row.records_rejected, row.duplicate_records)
        == tuple(by_id[row.id][k] for k in ("read", "loaded", "rejected", "duplicate_records"))
        for row in ledger
    )
    _assert_receipts_name_their_own_snapshot(settings, "insurance.settlements", results)


def _assert_receipts_name_their_own_snapshot(settings, table: str, results: list[dict]) -> None:
    """Each receipt's snapshot id is a snapshot that file committed, not one a racing writer made."""
    snaps = {s.snapshot_id: s for s in Warehouse(settings=settings).catalog.load_table(table).snapshots()}
    for r in results:
        snap = snaps[r["receipt"]["snapshot_id"]]
        assert snap.summary.additional_properties[PROP_LEDGER] == str(r["file_id"])


def test_concurrent_upserts_to_one_table_lose_no_commit_and_the_latest_business_date_wins(tmp_path):
    settings = settings_at(tmp_path / "home", KEY)
    n = 3
    # Arrival order is the reverse of business-date order, and the commit order is whatever the race
    # makes it: the record from the latest business date must win all the same.
    for f in range(n):
        records = [
            division(f"33011{f}", name=f"区{f}"),
            division("330102", name=f"上城区-{f}"),
            division("330199", level="town"),  # rejected
        ]
        drop(
            settings,
            f"health/divisions/2024-10-0{f + 1}/d.ndjson",
            ndjson(records),
            at=T0 + timedelta(days=n - f),
        )
    ids = discover(settings)

    results = race(settings, ids, at="commit")

    assert [r.get("error") for r in results] == [None] * n, [r.get("traceback") for r in results]
    assert _retries(results, "health.divisions") >= n - 1
    assert all(
        r["receipt"]["counts"] == {"read": 3, "loaded": 2, "rejected": 1, "duplicate_records": 0}
        for r in results
    )
    names = {
        r["division_code"]: r["name"]
        for r in Warehouse(settings=settings).scan("health.divisions").to_pylist()
    }
    assert names == {"330102": f"上城区-{n - 1}", **{f"33011{f}": f"区{f}" for f in range(n)}}
    state = warehouse_state(settings)
    assert state[QUARANTINE]["rows"] == n and state[QUARANTINE]["snapshots"] == {str(i): 1 for i in ids}
    assert all(
        r.status == "loaded_with_rejections" and r.records_loaded == 2
        for r in Ledger(settings=settings).all()
    )
    _assert_receipts_name_their_own_snapshot(settings, "health.divisions", results)


GOOD_BAD_DUP = [settlement(1), settlement(2), settlement(1), settlement(3, amount=99.00), settlement(4)]


def test_the_same_file_in_several_processes_at_once_is_processed_by_one(tmp_path, catalog_uri):
    settings = settings_at(tmp_path / "home", KEY, catalog_uri)
    drop(settings, "insurance/settlements/2024-10-01/s.ndjson", ndjson(GOOD_BAD_DUP))
    (file_id,) = discover(settings)

    results = race(settings, [file_id] * 3, at="start")

    # One worker claimed the file; the others backed off (or, had it finished before they looked,
    # would have returned its receipt): none of them read it a second time.
    busy = [r for r in results if r.get("error") == "FileBusy"]
    done = [r for r in results if "receipt" in r]
    assert len(busy) + len(done) == 3 and busy and done, [r.get("traceback") for r in results]
    assert all(
        r["receipt"]["counts"] == {"read": 5, "loaded": 3, "rejected": 1, "duplicate_records": 1}
        for r in done
    )
    (row,) = Ledger(settings=settings).all()
    assert row.attempts == 1 and row.status == "loaded_with_rejections" and row.claimed_by is None
    state = warehouse_state(settings)
    assert state["insurance.settlements"]["rows"] == 3
    assert state["insurance.settlements"]["snapshots"] == {str(file_id): 1}
    assert state[QUARANTINE]["rows"] == 1 and state[QUARANTINE]["snapshots"] == {str(file_id): 1}


@pytest.mark.parametrize(
    ("key", "records", "table", "counts"),
    [
        ("insurance/settlements/2024-10-01/s.ndjson", GOOD_BAD_DUP, "insurance.settlements", (5, 3, 1, 1)),
        (
            "health/divisions/2024-10-01/d.ndjson",
            [division("330102"), division("330103"), division("330104", level="town")],
            "health.divisions",
            (3, 2, 1, 0),
        ),
    ],
)
def test_the_same_file_committed_by_racing_workers_lands_once(tmp_path, key, records, table, counts):
    """Even when claims do not keep workers apart (every lease has expired before it is taken), a file commits once.

    All three workers process the file and meet inside the catalog commit; the losers' retries find
    the winner's commit (its ledger id and sha256 are in the snapshot) and report it instead of
    writing again, with the same counts.
    """
    settings = settings_at(tmp_path / "home", KEY)
    drop(settings, key, ndjson(records))
    (file_id,) = discover(settings)

    # A lease that ended an hour before it was taken: a zero lease is not enough, since a worker
    # whose clock read came before another's claim (then waited on the database lock) would still
    # see that claim as live and back off with FileBusy.
    results = race(settings, [file_id] * 3, at="commit", lease_seconds=-3600)

    assert [r.get("error") for r in results] == [None] * 3, [r.get("traceback") for r in results]
    assert _retries(results, table) >= 2
    read, loaded, rejected, duplicates = counts
    expected = {"read": read, "loaded": loaded, "rejected": rejected, "duplicate_records": duplicates}
    assert all(r["receipt"]["counts"] == expected for r in results)
    assert len({r["receipt"]["snapshot_id"] for r in results}) == 1
    (row,) = Ledger(settings=settings).all()
    assert row.attempts == 3
    assert (row.records_read, row.records_loaded, row.records_rejected, row.duplicate_records) == counts
    state = warehouse_state(settings)
    assert state[table]["rows"] == loaded
    assert sum(state[table]["snapshots"].values()) <= 2  # one commit (an upsert's is delete + append)
    assert state[QUARANTINE]["rows"] == rejected and state[QUARANTINE]["snapshots"] == {str(file_id): 1}


def test_workers_starting_together_on_a_fresh_deployment_create_the_catalog_once(tmp_path):
    """No `sanyi init` first: every worker finds no catalog tables, namespace or table, and makes them.

    pyiceberg's SqlCatalog checks for its tables then creates them (and a namespace likewise), so
    the losers of that race get "table … already exists" / a UNIQUE violation; the warehouse treats
    those as "someone else made it".
    """
    settings = settings_at(tmp_path / "home", KEY)
    n = 4
    for f in range(n):
        drop(settings, f"insurance/settlements/2024-10-0{f + 1}/s.ndjson", ndjson([settlement(10 * f + 1)]))
    ids = discover(settings)

    results = race(settings, ids, at="start")

    assert [r.get("error") for r in results] == [None] * n, [r.get("traceback") for r in results]
    assert all(r["receipt"]["status"] == "loaded" for r in results)
    assert warehouse_state(settings)["insurance.settlements"]["rows"] == n


def test_the_sqlite_catalog_waits_for_a_lock_as_long_as_the_ledger(tmp_path):
    """pysqlite gives up on a locked database after 5 s by default: too short for workers committing at once."""
    settings = settings_at(tmp_path / "home", KEY)
    engines = {
        "catalog": Warehouse(settings=settings).catalog.engine,
        "ledger": Ledger(settings=settings).engine,
    }
    for name, engine in engines.items():
        with engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 60_000, name


def test_a_table_made_before_pyiceberg_retries_were_switched_off_gets_the_setting_on_first_use(tmp_path):
    from sanyi.contracts import get_dataset
    from sanyi.warehouse import DICT_SIZE, NUM_RETRIES

    settings = settings_at(tmp_path / "home", KEY)
    wh = Warehouse(settings=settings)
    ds = get_dataset("insurance", "settlements")
    wh.catalog.create_namespace("insurance")
    wh.catalog.create_table(ds.table_name, schema=ds.arrow_schema())  # pyiceberg's default: 4 own retries
    assert NUM_RETRIES not in wh.catalog.load_table(ds.table_name).metadata.properties

    assert wh.dataset_table(ds).metadata.properties[NUM_RETRIES] == "0"
    assert wh.catalog.load_table(ds.table_name).metadata.properties[NUM_RETRIES] == "0"
    # So does the Parquet dictionary cap, set since (and no other property is touched).
    props = wh.catalog.load_table(ds.table_name).metadata.properties
    assert props[DICT_SIZE] == str(512 << 10) and "write.parquet.compression-codec" not in props
