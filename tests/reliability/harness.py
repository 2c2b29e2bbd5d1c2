"""Shared helpers: run a worker in a real child process, and fingerprint everything a load leaves behind."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sanyi.config import Settings
from sanyi.ingest import discover, process_file
from sanyi.ledger import Ledger
from sanyi.storage import open_bucket
from sanyi.warehouse import PROP_LEDGER, Warehouse

HERE = Path(__file__).resolve().parent
PLUGINS = HERE.parents[1] / "plugins"
T0 = datetime(2024, 10, 2, 1, 0, tzinfo=UTC)

# Wall-clock columns differ between any two runs; everything else must match exactly.
WALL_CLOCK = ("quarantined_at", "computed_at")


def settings_at(home: Path, key: str, catalog_uri: str | None = None) -> Settings:
    """Settings for a SANYI_HOME of its own (local buckets; SQLite catalog unless ``catalog_uri``)."""
    return Settings.from_env(sanyi_env(home, key, catalog_uri))


def sanyi_env(home: Path, key: str, catalog_uri: str | None = None) -> dict[str, str]:
    env = {"SANYI_HOME": str(home), "SANYI_PSEUDONYM_KEY": key}
    if catalog_uri:
        env["SANYI_CATALOG_URI"] = catalog_uri
    return env


def child_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANYI_")}
    env.update(sanyi_env(settings.home, settings.pseudonym_key.decode(), settings.catalog_uri))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PLUGINS), str(HERE.parent), env.get("PYTHONPATH")) if p
    )
    return env


def run_child(settings: Settings, *, fault: str | None = None, nth: int = 1) -> subprocess.CompletedProcess:
    """Run ``child.py`` (discover + process everything pending) in a fresh Python process."""
    spec = json.dumps({"fault": fault, "nth": nth})
    return subprocess.run(
        [sys.executable, str(HERE / "child.py"), spec],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def drop(settings: Settings, key: str, data: bytes, *, at: datetime = T0) -> None:
    open_bucket(settings.landing_url).put(key, data, last_modified=at)


def ingest_here(settings: Settings) -> dict[str, Any]:
    """Discover and process everything pending in this process; receipts by file key."""
    return {r.file: r for r in (process_file(settings, i) for i in discover(settings))}


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def warehouse_state(settings: Settings) -> dict[str, dict[str, Any]]:
    """Per table: row count, a content hash of the sorted rows, and the snapshots each ledger file made.

    Wall-clock columns are left out of the hash; ``_arrived_at`` is not wall clock (it is the
    object's arrival time in the landing bucket) and is kept.
    """
    wh = Warehouse(settings=settings)
    state = {}
    for name in wh.table_names():
        table = wh.catalog.load_table(name)
        arrow = table.scan().to_arrow()
        arrow = arrow.drop_columns([c for c in WALL_CLOCK if c in arrow.column_names])
        rows = sorted(
            json.dumps(r, sort_keys=True, default=str, ensure_ascii=False) for r in arrow.to_pylist()
        )
        # Snapshots per ledger file: a file loaded twice shows up as extra snapshots with its id
        # (an upsert commit is a delete + an append snapshot, so compare with a clean run).
        snapshots = Counter(
            (s.summary.additional_properties or {}).get(PROP_LEDGER) for s in table.snapshots() if s.summary
        )
        snapshots.pop(None, None)
        state[name] = {"rows": len(rows), "sha256": _digest(rows), "snapshots": dict(snapshots)}
    return state


def ledger_state(settings: Settings) -> list[tuple]:
    """Every ledger row's outcome (ids, keys, statuses and counts; not timestamps or attempts)."""
    return [
        (
            r.id,
            r.key,
            r.status,
            r.reason,
            r.records_read,
            r.records_loaded,
            r.records_rejected,
            r.duplicate_records,
        )
        for r in Ledger(settings=settings).all()
    ]


def receipts_state(settings: Settings) -> dict[str, Any]:
    """Receipts and errors files by key, without the processing wall clock and the random snapshot id."""
    bucket = open_bucket(settings.receipts_url)
    out: dict[str, Any] = {}
    for obj in bucket.list():
        body = bucket.read_bytes(obj.key)
        if obj.key.endswith(".receipt.json"):
            d = json.loads(body)
            d.pop("processed_at")
            d["has_snapshot"] = d.pop("snapshot_id") is not None
            out[obj.key] = d
        else:
            out[obj.key] = body.decode()
    return out


def everything(settings: Settings) -> dict[str, Any]:
    return {
        "warehouse": warehouse_state(settings),
        "ledger": ledger_state(settings),
        "receipts": receipts_state(settings),
    }
