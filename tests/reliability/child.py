"""A worker process for the reliability tests: optionally install a fault, then ingest.

Run as ``python child.py '<json spec>'`` with ``SANYI_HOME``/``SANYI_PSEUDONYM_KEY`` in the
environment. The spec names a ``fault`` (a stage boundary where the process SIGKILLs itself, the way
an OOM killer or a lost node ends a worker: no exception handler, no cleanup) and its ``nth`` call.
Without a fault the child runs ``discover`` + ``process_file`` for everything pending and prints
the receipts as JSON on its last stdout line.

The faults wrap the real functions at the boundary and call them through, so everything before
the boundary really happened (files parsed, data files written, commits made) when the kill lands.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

STAGES = (
    "after_parse",  # the (first chunk of the) file was read and parsed, nothing validated or written
    "mid_validation",  # on the nth row the reference judges (rows the vectorised check rejects)
    "before_commit",  # data files and manifests written, catalog not yet pointing at them
    "before_quarantine_commit",  # the dataset commit is in the catalog, quarantine not yet
    "before_receipt",  # every commit made, no receipt, ledger still pending
    "before_ledger_finish",  # receipt written, ledger still pending
)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _on_nth(nth: int, original: Callable[..., Any], *, after: bool = False) -> Callable[..., Any]:
    """``original`` wrapped to SIGKILL the process on its ``nth`` call (before it runs, or just after)."""
    calls = 0

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth and not after:
            _die()
        out = original(*args, **kwargs)
        if calls == nth and after:
            _die()
        return out

    return wrapped


def install_fault(stage: str, nth: int = 1) -> None:
    """Patch the function at ``stage``'s boundary so that the process kills itself there."""
    import sanyi.fastpath as fastpath
    import sanyi.ingest as ingest
    import sanyi.ledger as ledger

    if stage == "after_parse":
        # NDJSON is parsed chunk by chunk by the fast path (its plain lines by the C reader, the others by
        # Arrow's JSON reader); other formats, and NDJSON the fast path cannot take, through parse_records.
        fastpath._read_plain = _on_nth(nth, fastpath._read_plain, after=True)
        fastpath._parse_all = _on_nth(nth, fastpath._parse_all, after=True)
        ingest.parse_records = _on_nth(nth, ingest.parse_records, after=True)
    elif stage == "mid_validation":
        # Each row the vectorised checks reject is judged by the reference through fastpath._judge (which
        # may find its errors remembered and not call validation.validate_record at all).
        fastpath._judge = _on_nth(nth, fastpath._judge)
    elif stage in ("before_commit", "before_quarantine_commit"):
        from pyiceberg.catalog.sql import SqlCatalog
        from pyiceberg.table.update import AddSnapshotUpdate

        # pyiceberg writes the data files, manifests and manifest list first, then calls
        # commit_table: killing on entry leaves written-but-uncommitted files behind. Only commits
        # that add a snapshot count (table creation and partition-spec updates also commit).
        original = SqlCatalog.commit_table
        target = nth if stage == "before_commit" else nth + 1
        calls = 0

        def commit_table(self, table, requirements, updates):  # type: ignore[no-untyped-def]
            nonlocal calls
            if any(isinstance(u, AddSnapshotUpdate) for u in updates):
                calls += 1
                if calls == target:
                    _die()
            return original(self, table, requirements, updates)

        SqlCatalog.commit_table = commit_table  # type: ignore[method-assign]
    elif stage == "before_receipt":
        ingest._write_receipt = _on_nth(nth, ingest._write_receipt)
    elif stage == "before_ledger_finish":
        ledger.Ledger.finish = _on_nth(nth, ledger.Ledger.finish)  # type: ignore[method-assign]
    else:
        raise ValueError(stage)


def ingest_all() -> list[dict[str, Any]]:
    """``discover`` + ``process_file`` for everything pending; the receipts as JSON dicts."""
    from sanyi.config import Settings
    from sanyi.ingest import discover, process_file

    settings = Settings.from_env()
    return [process_file(settings, file_id).to_json() for file_id in discover(settings)]


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1]) if len(argv) > 1 else {}
    if spec.get("fault"):
        install_fault(spec["fault"], spec.get("nth", 1))
    receipts = ingest_all()
    print(json.dumps(receipts, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
