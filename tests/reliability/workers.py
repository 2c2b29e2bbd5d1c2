"""Targets for processes started with ``multiprocessing`` (spawn) by the concurrency tests.

Each worker is a real process with its own interpreter, SQLAlchemy engines and pyiceberg catalog,
like two Airflow workers. A shared barrier lines the workers up either at the start or inside the
catalog commit (after each has read the table and written its data files, before it swaps the
table's metadata pointer), so that their commits race for the same table version for certain.
The barrier only synchronises: the commits themselves are pyiceberg's, unchanged.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

BARRIER_TIMEOUT = 30


class _ConflictCounter(logging.Handler):
    """Counts ``Warehouse.commit``'s "commit conflict … retrying" log records (one per retry)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.retries: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("commit conflict on"):
            table = str(record.args[0]) if record.args else "?"
            self.retries[table] = self.retries.get(table, 0) + 1


def _line_up_first_commit(barrier: Any) -> None:
    """Make this process wait at ``barrier`` inside its first snapshot-adding catalog commit."""
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.table.update import AddSnapshotUpdate

    original = SqlCatalog.commit_table
    waited = False

    def commit_table(self, table, requirements, updates):  # type: ignore[no-untyped-def]
        nonlocal waited
        if not waited and any(isinstance(u, AddSnapshotUpdate) for u in updates):
            waited = True
            barrier.wait(BARRIER_TIMEOUT)
        return original(self, table, requirements, updates)

    SqlCatalog.commit_table = commit_table  # type: ignore[method-assign]


def load(
    env: dict[str, str], file_id: int, barrier: Any, at: str, out: Any, lease_seconds: float | None = None
) -> None:
    """``process_file(file_id)`` with the ``SANYI_*`` settings ``env``, lined up at ``barrier`` ``at``
    "start" or "commit"; puts the outcome (receipt or error, commit retries per table) on ``out``."""
    from datetime import timedelta

    from sanyi import ledger
    from sanyi.config import Settings
    from sanyi.ingest import process_file

    counter = _ConflictCounter()
    wlog = logging.getLogger("sanyi.warehouse")
    wlog.setLevel(logging.INFO)
    wlog.addHandler(counter)
    if lease_seconds is not None:
        ledger.LEASE = timedelta(seconds=lease_seconds)
    settings = Settings.from_env(env)
    result: dict[str, Any] = {"file_id": file_id}
    try:
        if at == "commit":
            _line_up_first_commit(barrier)
        else:
            barrier.wait(BARRIER_TIMEOUT)
        result["receipt"] = process_file(settings, file_id).to_json()
    except Exception as exc:  # reported to the test, which decides what was acceptable
        result["error"] = type(exc).__name__
        result["message"] = str(exc)
        result["traceback"] = traceback.format_exc()
    result["retries"] = counter.retries
    out.put(result)
