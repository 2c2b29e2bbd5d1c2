"""The ledger's claim on a file: one worker at a time, taken over when its lease ends or its process died."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy as sa

from samples import ndjson, settlement
from sanyi.ingest import FileBusy, discover, process_file
from sanyi.ledger import Ledger, claim_owner, files
from sanyi.storage import open_bucket
from sanyi.warehouse import Warehouse

from .harness import drop, settings_at

KEY = "insurance/settlements/2024-10-01/s.ndjson"
HOST = socket.gethostname()


@pytest.fixture
def pending(settings) -> int:
    drop(settings, KEY, ndjson([settlement(1), settlement(2)]))
    (file_id,) = discover(settings)
    return file_id


def _dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(child.stdout)


def test_a_claim_excludes_others_until_released_and_a_terminal_file_cannot_be_claimed(settings, pending):
    ledger = Ledger(settings=settings)
    a, b = claim_owner(), claim_owner()
    assert a != b
    assert ledger.claim(pending, a)
    assert not ledger.claim(pending, b)
    assert ledger.get(pending).claimed_by == a

    ledger.mark_error(pending, "OSError: disk went away")  # a failure releases the file for a retry
    assert ledger.get(pending).claimed_by is None
    assert ledger.claim(pending, b)

    ledger.finish(
        pending,
        status="loaded",
        reason=None,
        read=2,
        loaded=2,
        rejected=0,
        duplicate_records=0,
        snapshot_id=1,
    )
    row = ledger.get(pending)
    assert row.claimed_by is None and row.claimed_until is None
    assert not ledger.claim(pending, a)
    assert ledger.get(pending).attempts == 2  # each successful claim is an attempt


def test_an_expired_lease_is_taken_over(settings, pending):
    ledger = Ledger(settings=settings)
    assert ledger.claim(pending, f"elsewhere:1:{os.urandom(4).hex()}", lease=timedelta(0))
    assert ledger.claim(pending, claim_owner())


@pytest.mark.parametrize(
    ("holder", "taken_over"),
    [
        (lambda: f"{HOST}:{_dead_pid()}:abcd", True),  # died on this host: no need to wait for the lease
        (lambda: f"{HOST}:{os.getpid()}:abcd", False),  # alive on this host
        (lambda: "another-host:1:abcd", False),  # cannot tell from here: wait for the lease
    ],
)
def test_a_live_lease_is_taken_over_only_from_a_process_known_dead(settings, pending, holder, taken_over):
    ledger = Ledger(settings=settings)
    owner = holder()
    assert ledger.claim(pending, owner, lease=timedelta(hours=1))
    assert ledger.claim(pending, claim_owner()) is taken_over
    assert (ledger.get(pending).claimed_by == owner) is not taken_over


def test_process_file_backs_off_from_a_file_another_worker_holds(settings, pending):
    ledger = Ledger(settings=settings)
    assert ledger.claim(pending, "another-host:1:abcd")

    with pytest.raises(FileBusy, match="another-host:1:abcd"):
        process_file(settings, pending)

    row = ledger.get(pending)
    assert row.status == "pending" and row.attempts == 1 and row.claimed_by == "another-host:1:abcd"
    assert not open_bucket(settings.receipts_url).exists(f"{KEY}.receipt.json")
    assert "insurance.settlements" not in Warehouse(settings=settings).table_names()

    ledger.mark_error(pending, "worker lost")  # what the holder does when it fails
    assert process_file(settings, pending).status == "loaded"
    assert process_file(settings, pending).status == "loaded"  # a terminal file: its receipt, no claim
    assert ledger.get(pending).attempts == 2


def test_a_ledger_made_before_claims_existed_gets_the_claim_columns(tmp_path, catalog_uri):
    settings = settings_at(tmp_path / "home", "test-pseudonym-key-0123456789abcdef", catalog_uri)
    engine = sa.create_engine(settings.catalog_uri)
    old = sa.MetaData()
    columns = [c for c in files.columns if not c.name.startswith("claimed_")]
    sa.Table(files.name, old, *[sa.Column(c.name, c.type, primary_key=c.primary_key) for c in columns])
    old.create_all(engine)
    engine.dispose()

    drop(settings, KEY, ndjson([settlement(1)]))
    (file_id,) = discover(settings)
    assert {"claimed_by", "claimed_until"} <= {c["name"] for c in sa.inspect(engine).get_columns(files.name)}
    assert process_file(settings, file_id).status == "loaded"
    engine.dispose()
