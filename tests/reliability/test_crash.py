"""Crash safety: a worker SIGKILLed at any stage of a load leaves nothing a rerun cannot finish.

Each test kills a real child process at one stage boundary while it loads a file mixing good, bad
and duplicate records, checks that the kill landed where intended (what is and is not committed
yet), reruns the load in a fresh process without the fault, and compares everything — every
table's rows (content hash, quarantine included), the snapshots each file made, the ledger, the
receipts and errors files — with a clean run of the same drops in another SANYI_HOME. A further
file then loads the same way in both homes, so no orphan state (claims, written-but-uncommitted
data files) gets in the way of later runs.
"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from samples import division, ndjson, resident_id, settlement
from sanyi.ledger import Ledger
from sanyi.storage import open_bucket
from sanyi.warehouse import PROP_LEDGER, Warehouse

from .child import STAGES
from .harness import T0, drop, everything, ingest_here, run_child, settings_at, warehouse_state

KEY = "test-pseudonym-key-0123456789abcdef"

# Per dataset: a file already loaded, the file the crash hits, and a further file after recovery.
# The middle file mixes good records, rejected ones and duplicates (in the file and, for the
# append dataset, of rows already stored).
SCENARIOS = {
    "settlements": [
        ("insurance/settlements/2024-10-01/a.ndjson", ndjson([settlement(i) for i in (1, 2, 3)])),
        (
            "insurance/settlements/2024-10-02/b.ndjson",
            ndjson(
                [
                    settlement(4),
                    settlement(5),
                    settlement(2),  # already stored by a.ndjson
                    settlement(6, amount=21.00),  # 3 × 6.665 is 20.00, not 21.00
                    settlement(4),  # earlier in this file
                    settlement(7, settlement_id=resident_id(99)),  # a resident id in the wrong field
                    settlement(8),
                ]
            ),
        ),
        ("insurance/settlements/2024-10-03/c.ndjson", ndjson([settlement(9), settlement(5), settlement(10)])),
    ],
    "divisions": [
        (
            "health/divisions/2024-10-01/a.ndjson",
            ndjson(
                [division("330102"), division("330103", name="西湖区"), division("330104", name="拱墅区")]
            ),
        ),
        (
            "health/divisions/2024-10-02/b.ndjson",
            ndjson(
                [
                    division("330102", name="上城区（新）"),  # replaces the stored record
                    division("330105", name="滨江区"),
                    division("330106", level="town"),  # not a level
                    division("330105", name="滨江区（后）"),  # same key later in the file: this one wins
                    division("33010", name="短"),  # not 6 digits
                ]
            ),
        ),
        (
            "health/divisions/2024-10-03/c.ndjson",
            ndjson([division("330103", name="西湖区（新）"), division("330108")]),
        ),
    ],
}
TABLES = {"settlements": "insurance.settlements", "divisions": "health.divisions"}
QUARANTINE = "sanyi.quarantine"

# An upsert's overwrite of a table with no rows yet: pyiceberg warns that its delete matched nothing.
pytestmark = pytest.mark.filterwarnings("ignore:Delete operation did not match any records")


def _data_files(settings) -> set[Path]:
    return set(Path(settings.warehouse_url).rglob("*.parquet"))


def _file_snapshots(state: dict, table: str, ledger_id: int) -> int:
    return state.get(table, {}).get("snapshots", {}).get(str(ledger_id), 0)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("dataset", list(SCENARIOS))
def test_sigkill_at_each_stage_then_rerun_equals_a_clean_run(tmp_path, dataset, stage):
    crash, clean = settings_at(tmp_path / "crash", KEY), settings_at(tmp_path / "clean", KEY)
    (first, first_data), (middle, middle_data), (later, later_data) = SCENARIOS[dataset]
    for s in (crash, clean):
        drop(s, first, first_data)
        ingest_here(s)
        drop(s, middle, middle_data, at=T0 + timedelta(days=1))

    before = warehouse_state(crash)
    files_before = _data_files(crash)
    died = run_child(crash, fault=stage)
    assert died.returncode == -signal.SIGKILL, died.stdout + died.stderr

    # The kill landed where intended: check what is (and is not yet) committed or written.
    after = warehouse_state(crash)
    (row,) = Ledger(settings=crash).pending()
    assert row.key == middle and row.attempts == 1
    # The dead worker's claim is still on the file: the rerun must take it over, not wait for its lease.
    assert row.claimed_by is not None and row.claimed_until > datetime.now(UTC)
    table = TABLES[dataset]
    committed = _file_snapshots(after, table, row.id) > 0
    quarantined = _file_snapshots(after, QUARANTINE, row.id) > 0
    has_receipt = open_bucket(crash.receipts_url).exists(f"{middle}.receipt.json")
    expected = {
        "after_parse": (False, False, False),
        "mid_validation": (False, False, False),
        "before_commit": (False, False, False),
        "before_quarantine_commit": (True, False, False),
        "before_receipt": (True, True, False),
        "before_ledger_finish": (True, True, True),
    }[stage]
    assert (committed, quarantined, has_receipt) == expected
    if not committed:
        assert after == before
    if stage == "before_commit":
        # pyiceberg had written the load's data files when it died: they exist, unreferenced.
        assert _data_files(crash) - files_before

    rerun = run_child(crash)
    assert rerun.returncode == 0, rerun.stderr
    (receipt,) = json.loads(rerun.stdout.splitlines()[-1])
    assert receipt["file"] == middle and receipt["status"] == "loaded_with_rejections"

    # The receipt names the snapshot that holds the file's rows (an upsert commit also made a
    # delete snapshot just before it, in which the table reads as empty).
    wh = Warehouse(settings=crash)
    own = [
        snap.snapshot_id
        for snap in wh.catalog.load_table(table).snapshots()
        if snap.summary.additional_properties.get(PROP_LEDGER) == str(row.id)
    ]
    assert receipt["snapshot_id"] == own[-1]
    at_receipt = wh.catalog.load_table(table).scan(snapshot_id=receipt["snapshot_id"]).to_arrow()
    assert at_receipt.equals(wh.scan(table))

    ingest_here(clean)
    recovered, reference = everything(crash), everything(clean)
    assert recovered == reference
    # The comparison is not vacuous: the file's rows, rejections and duplicates are all in it.
    counts = {"settlements": (7, 3, 2, 2), "divisions": (5, 3, 2, 0)}[dataset]
    (middle_row,) = [r for r in recovered["ledger"] if r[1] == middle]
    assert middle_row[4:] == counts
    assert recovered["warehouse"][QUARANTINE]["rows"] == 2

    # Nothing left behind gets in the way of the next file, and both homes still agree.
    for s in (crash, clean):
        drop(s, later, later_data, at=T0 + timedelta(days=2))
        (r,) = ingest_here(s).values()
        assert r.status == "loaded"
    assert everything(crash) == everything(clean)
    assert all(r.terminal for r in Ledger(settings=crash).all())
