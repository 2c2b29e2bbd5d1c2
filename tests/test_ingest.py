"""Ingestion of single files through the library (no Airflow): receipts, counts, keys, privacy."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from samples import division, ndjson, resident_id, settlement
from sanyi.ingest import discover, process_file
from sanyi.ledger import Ledger
from sanyi.storage import open_bucket
from sanyi.warehouse import QUARANTINE, Warehouse

T0 = datetime(2024, 10, 2, 1, 0, tzinfo=UTC)


def drop(settings, key: str, data: bytes, *, at: datetime = T0) -> None:
    open_bucket(settings.landing_url).put(key, data, last_modified=at)


def run(settings) -> dict[str, dict]:
    """Discover and process everything pending; return receipts by key."""
    out = {}
    for file_id in discover(settings):
        r = process_file(settings, file_id)
        out[r.file] = r
    return out


def receipt_json(settings, key: str) -> dict:
    return json.loads(open_bucket(settings.receipts_url).read_bytes(f"{key}.receipt.json"))


def rows(settings, table: str) -> list[dict]:
    return Warehouse(settings=settings).scan(table).to_pylist()


SETTLE_KEY = "insurance/settlements/2024-10-01/s1.ndjson"


def test_good_and_bad_records_receipt_errors_quarantine_and_pseudonyms(settings):
    good = [settlement(i) for i in (1, 2, 3)]
    bad_amount = settlement(4, amount=21.00)  # 3 × 6.665 = 19.995 → 20.00, not 21.00
    bad_id_in_field = settlement(5, settlement_id=resident_id(99))
    drop(settings, SETTLE_KEY, ndjson([*good, bad_amount, bad_id_in_field]))
    run(settings)

    r = receipt_json(settings, SETTLE_KEY)
    assert r["status"] == "loaded_with_rejections"
    assert r["counts"] == {"read": 5, "loaded": 3, "rejected": 2, "duplicate_records": 0}
    assert r["dataset"] == "insurance/settlements" and r["schema_version"] == "v1"
    assert r["sha256"] == hashlib.sha256(open_bucket(settings.landing_url).read_bytes(SETTLE_KEY)).hexdigest()
    assert isinstance(r["snapshot_id"], int)

    errors_text = open_bucket(settings.receipts_url).read_bytes(SETTLE_KEY + ".errors.ndjson").decode()
    errors = [json.loads(line) for line in errors_text.splitlines()]
    assert {e["line"] for e in errors} == {4, 5}
    assert all({"line", "path", "rule", "message"} <= set(e) for e in errors)
    assert any(e["line"] == 4 and e["path"] == "/amount" for e in errors)
    assert any(e["line"] == 5 and e["rule"] == "resident_id_in_wrong_field" for e in errors)

    loaded = rows(settings, "insurance.settlements")
    assert len(loaded) == 3
    key = settings.pseudonym_key
    expected = {hmac.new(key, resident_id(i).encode(), hashlib.sha256).hexdigest() for i in (1, 2, 3)}
    assert {r["patient_id"] for r in loaded} == expected
    assert {r["_line_no"] for r in loaded} == {1, 2, 3}

    quarantined = rows(settings, QUARANTINE)
    assert sorted(q["line_no"] for q in quarantined) == [4, 5]
    everything = json.dumps(quarantined, default=str) + errors_text + json.dumps(r)
    for i in (1, 2, 3, 4, 5, 99):
        assert resident_id(i) not in everything


def test_replay_is_a_noop_and_same_bytes_on_another_date_are_duplicate_records(settings):
    data = ndjson([settlement(1), settlement(2)])
    drop(settings, SETTLE_KEY, data)
    run(settings)
    snaps = len(Warehouse(settings=settings).catalog.load_table("insurance.settlements").snapshots())

    drop(settings, "insurance/settlements/2024-10-01/copy.ndjson", data, at=T0 + timedelta(hours=1))
    drop(settings, "insurance/settlements/2024-10-02/s1.ndjson", data, at=T0 + timedelta(hours=2))
    run(settings)

    replay = receipt_json(settings, "insurance/settlements/2024-10-01/copy.ndjson")
    assert replay["status"] == "duplicate"
    assert replay["counts"] == {"read": 0, "loaded": 0, "rejected": 0, "duplicate_records": 0}
    other_day = receipt_json(settings, "insurance/settlements/2024-10-02/s1.ndjson")
    assert other_day["status"] == "loaded"
    assert other_day["counts"] == {"read": 2, "loaded": 0, "rejected": 0, "duplicate_records": 2}
    assert len(rows(settings, "insurance.settlements")) == 2
    table = Warehouse(settings=settings).catalog.load_table("insurance.settlements")
    assert len(table.snapshots()) == snaps  # neither file committed anything


def test_in_file_duplicate_keys_count_as_duplicates(settings):
    drop(settings, SETTLE_KEY, ndjson([settlement(1), settlement(1, fund_paid=1.00)]))
    run(settings)
    r = receipt_json(settings, SETTLE_KEY)
    assert r["counts"] == {"read": 2, "loaded": 1, "rejected": 0, "duplicate_records": 1}
    assert [x["fund_paid"] for x in rows(settings, "insurance.settlements")] == [pytest.approx(12)]


def test_upsert_latest_business_date_wins_whatever_the_processing_order(settings):
    later = "health/divisions/2024-10-05/d.ndjson"
    earlier = "health/divisions/2024-10-01/d.ndjson"
    drop(settings, later, ndjson([division(name="新名")]), at=T0)
    run(settings)
    drop(
        settings, earlier, ndjson([division(name="旧名"), division("330106", name="西湖区")]), at=T0 + timedelta(days=1)
    )
    run(settings)
    names = {r["division_code"]: r["name"] for r in rows(settings, "health.divisions")}
    assert names == {"330102": "新名", "330106": "西湖区"}


@pytest.mark.parametrize(
    ("key", "data", "reason"),
    [
        ("health/settlements/2024-10-01/x.ndjson", b"{}\n", "belongs to agency insurance"),
        ("pharma/settlements/2024-10-01/x.ndjson", b"{}\n", "agency"),
        ("insurance/settlements/2024-02-30/x.ndjson", b"{}\n", "not a real"),
        ("insurance/settlements/x.ndjson", b"{}\n", "drop convention"),
        ("insurance/settlements/2024-10-01/x.xlsx", b"{}\n", "not accepted"),
        ("insurance/settlements/2024-10-01/x.ndjson.gz", b"not gzip", "not gzip"),
        (
            "insurance/settlements/2024-10-01/t.ndjson.gz",
            gzip.compress(ndjson([settlement(i) for i in range(50)]))[:300],
            "corrupt or truncated",
        ),
        ("insurance/settlements/2024-10-01/x.ndjson", b'{"a": "\xff"}\n', "not valid UTF-8"),
        ("insurance/settlements/2024-10-01/x.csv", b"settlement_id,trace_codes\n", "arrays are not allowed in CSV"),
        ("insurance/settlements/2024-10-01/x.parquet", b"PAR1 not really", "Parquet"),
    ],
)
def test_files_rejected_whole_get_one_receipt_with_a_reason(settings, key, data, reason):
    drop(settings, key, data)
    run(settings)
    r = receipt_json(settings, key)
    assert r["status"] == "rejected"
    assert reason in r["reason"]
    assert r["counts"]["loaded"] == 0
    (row,) = Ledger(settings=settings).all()
    assert row.status == "rejected"


def test_zero_record_file_is_loaded_and_counts_as_received(settings):
    drop(settings, SETTLE_KEY, b"\n  \n")
    run(settings)
    r = receipt_json(settings, SETTLE_KEY)
    assert r["status"] == "loaded" and r["counts"]["read"] == 0


def test_redrop_with_changed_bytes_is_a_new_submission_and_keeps_the_old_receipt(settings):
    drop(settings, SETTLE_KEY, ndjson([settlement(1)]))
    run(settings)
    first = receipt_json(settings, SETTLE_KEY)
    drop(settings, SETTLE_KEY, ndjson([settlement(2)]), at=T0 + timedelta(hours=3))
    run(settings)
    second = receipt_json(settings, SETTLE_KEY)
    assert second["sha256"] != first["sha256"]
    assert second["supersedes"] == [first["sha256"]]
    archived = f"{SETTLE_KEY}.{first['sha256'][:12]}.receipt.json"
    assert json.loads(open_bucket(settings.receipts_url).read_bytes(archived))["sha256"] == first["sha256"]
    assert len(rows(settings, "insurance.settlements")) == 2
    assert [r.status for r in Ledger(settings=settings).all()] == ["loaded", "loaded"]


def test_rerun_after_processing_changes_nothing(settings):
    drop(settings, SETTLE_KEY, ndjson([settlement(1), settlement(2, amount=1)]))
    run(settings)
    table = Warehouse(settings=settings).catalog.load_table("insurance.settlements")
    before = len(table.snapshots())
    assert run(settings) == {}
    table = Warehouse(settings=settings).catalog.load_table("insurance.settlements")
    assert len(table.snapshots()) == before


def test_quarantined_record_json_masks_ids_wherever_they_are_and_is_plain_json_otherwise():
    from decimal import Decimal

    from sanyi import privacy

    key = b"k" * 32
    pid, other = resident_id(1), resident_id(2)
    plain = {"patient_id": pid, "amount": Decimal("12.30"), "codes": ["8" * 20], "n": 1.5, "none": None}
    text = safe_json(plain, key)
    assert json.loads(text) == {**json.loads(json.dumps(plain, default=str)),
                                "patient_id": "pseudonym:" + privacy.pseudonymise(key, pid)}
    # An id anywhere else — a value, a key, a number, a lower-case check character — is masked, and the
    # column stays valid JSON.
    lower_x = privacy.check_character(other[:17]) == "X"
    odd = {
        "patient_id": pid[:17] + ("0" if pid[17] != "0" else "1"),
        "note": f"call {other}",
        other: 1,
        "line_no": int(other) if other[17] != "X" else 7,
        "codes": [other[:17] + "x" if lower_x else other],
    }
    masked = json.loads(safe_json(odd, key))
    assert other not in json.dumps(masked) and other[:17] not in json.dumps(masked)
    assert masked["patient_id"] == privacy.MASK and masked["note"] == f"call {privacy.MASK}"
    assert masked[privacy.MASK] == 1
    # A control character before an id is escaped as \u0001 in JSON: its hex digits run into the id's.
    escaped = json.loads(safe_json({"note": "\x01" + other + "\x02"}, key))
    assert escaped == {"note": "\x01" + privacy.MASK + "\x02"}
    # Long digit runs that are not ids (trace and drug codes) are kept as they are.
    codes = {"drug_code": "XA" + "0" * 21, "trace_codes": ["8" * 20, other + "12"]}
    assert json.loads(safe_json(codes, key)) == codes


def safe_json(record: dict, key: bytes) -> str | None:
    from sanyi import ingest

    (text,) = ingest._safe_records_json([record], key)
    return text


def test_a_quarantined_pseudonym_is_never_masked_even_when_its_hex_looks_like_an_id():
    from sanyi import privacy

    key = b"k" * 32
    # About one pseudonym in 4,500 holds 18 digits with a valid check character between its letters.
    ids = (resident_id(n, birth=f"1980{n // 1000:04d}") for n in range(100_000))
    pid, hexes = next((p, h) for p in ids if privacy.mask_resident_ids(h := privacy.pseudonymise(key, p)) != h)
    pseudonym = "pseudonym:" + hexes  # the warehouse's pseudonym, so that the rows can be matched
    other = resident_id(100_001)
    # Alone (the text check finds the hex's digits) and next to an id that must be masked.
    alone = json.loads(safe_json({"patient_id": pid, "n": 1}, key))
    assert alone == {"patient_id": pseudonym, "n": 1}
    beside = json.loads(safe_json({"patient_id": pid, "note": f"see {other}"}, key))
    assert beside == {"patient_id": pseudonym, "note": f"see {privacy.MASK}"}


@pytest.mark.parametrize("failing", ["second", "last"])
def test_a_failed_background_write_fails_the_load_and_leaves_no_data_file(settings, monkeypatch, failing):
    # Data files are written on a background thread: its failure must reach the load (nothing committed,
    # the row left pending with the error) and every file already written must be deleted. The last write
    # runs while the commit looks for duplicates: its failure must stop the commit all the same.
    from pathlib import Path

    import pyarrow.compute as pc

    from sanyi import ingest

    monkeypatch.setattr(ingest, "WRITE_ROWS", 2)
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 600)  # a line or two per chunk: several writes
    real, calls, lines = ingest.write_data_files, [], 7

    def failing_write(table, data, **kwargs):
        calls.append(1)
        if failing == "second":
            planted = len(calls) == 2
        else:
            planted = pc.max(data.column("_line_no")).as_py() == lines  # the write that holds the last line
        if planted:
            raise OSError("disk full (planted)")
        return real(table, data, **kwargs)

    monkeypatch.setattr(ingest, "write_data_files", failing_write)
    drop(settings, SETTLE_KEY, ndjson([settlement(i) for i in range(1, lines + 1)]))
    (file_id,) = discover(settings)
    with pytest.raises(OSError, match="planted"):
        process_file(settings, file_id)
    assert len(calls) >= 2
    row = Ledger(settings=settings).get(file_id)
    assert not row.terminal and "planted" in (row.last_error or "")
    assert rows(settings, "insurance.settlements") == []
    assert not list(Path(settings.warehouse_url).rglob("*.parquet"))


@pytest.mark.parametrize(("lines", "files"), [(40, 2), (10, 1)])
def test_the_last_rows_are_written_as_two_files_when_they_are_many(settings, monkeypatch, lines, files):
    # Nothing else is left to do while they are written: two files keep both cores busy. A few rows stay
    # one file.
    from pathlib import Path

    from sanyi import ingest

    monkeypatch.setattr(ingest, "WRITE_ROWS", 64)  # a quarter: 16 rows
    drop(settings, SETTLE_KEY, ndjson([settlement(i) for i in range(1, lines + 1)]))
    (file_id,) = discover(settings)
    assert process_file(settings, file_id).loaded == lines
    assert len(list(Path(settings.warehouse_url).rglob("*.parquet"))) == files
    assert len(rows(settings, "insurance.settlements")) == lines


def test_the_last_rows_write_does_not_wait_for_the_write_before_it(settings, monkeypatch):
    # The write before the last often starts near the end of the file: queued behind it, the last rows'
    # write held up the commit. Here the first write finishes only once another write has started.
    import itertools
    import threading

    from sanyi import ingest

    monkeypatch.setattr(ingest, "WRITE_ROWS", 8)
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 600)  # a line or two per chunk: the rows come a few at a time
    real, started, calls, waited = ingest.write_data_files, threading.Event(), itertools.count(), []

    def write(table, data, **kwargs):
        if next(calls) == 0:
            waited.append(started.wait(timeout=10))  # False: the writes ran one after the other
        else:
            started.set()
        return real(table, data, **kwargs)

    monkeypatch.setattr(ingest, "write_data_files", write)
    drop(settings, SETTLE_KEY, ndjson([settlement(i) for i in range(1, 13)]))  # 8 rows or so, then the last
    (file_id,) = discover(settings)
    assert process_file(settings, file_id).loaded == 12
    assert waited == [True]
    assert len(rows(settings, "insurance.settlements")) == 12


def test_loads_take_arrow_memory_from_jemalloc_unless_the_operator_chose_a_pool(settings, monkeypatch):
    # mimalloc's fresh 2 MiB huge pages, zeroed by the kernel, cost 8 % of a load's CPU (11 % for CSV).
    import pyarrow as pa

    from sanyi import ingest

    before = pa.default_memory_pool()
    try:
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
        ingest._arrow_memory_pool.__wrapped__()
        assert pa.default_memory_pool().backend_name == "mimalloc"
        monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL")
        ingest._arrow_memory_pool.cache_clear()
        landing = open_bucket(settings.landing_url, settings=settings)
        landing.put("insurance/settlements/2024-10-31/a.ndjson", ndjson([settlement(1), settlement(2)]))
        (file_id,) = discover(settings)
        assert process_file(settings, file_id).status == "loaded"
        assert pa.default_memory_pool().backend_name == "jemalloc"
    finally:
        pa.set_memory_pool(before)


def test_loads_run_with_fewer_collections_and_restore_the_collector_after(settings, monkeypatch):
    # The collector's default first threshold (700) took a sixth of the CPU of a file of rejected lines.
    # Raised while a load runs, whatever its outcome; the process's own setting is back afterwards, also
    # when loads on two threads overlap.
    import gc
    import threading

    from sanyi import ingest

    before = gc.get_threshold()
    seen = []
    real_load = ingest._load

    def spying(*args, **kwargs):
        seen.append(gc.get_threshold())
        return real_load(*args, **kwargs)

    monkeypatch.setattr(ingest, "_load", spying)
    try:
        gc.set_threshold(700, 10, 10)
        drop(settings, SETTLE_KEY, ndjson([settlement(1), {"unknown": 1}]))
        drop(settings, "insurance/settlements/2024-10-01/bad.ndjson", b"{not json at all\n" * 3)
        receipts = run(settings)
        assert {r.status for r in receipts.values()} == {"loaded_with_rejections", "rejected"}
        assert seen == [(ingest.GC_YOUNG_THRESHOLD, 10, 10)] * 2
        assert gc.get_threshold() == (700, 10, 10)

        inside, release = threading.Event(), threading.Event()

        def long_load() -> None:
            with ingest._fewer_collections():
                inside.set()
                release.wait(10)

        other = threading.Thread(target=long_load)
        other.start()
        inside.wait(10)
        with pytest.raises(RuntimeError), ingest._fewer_collections():
            raise RuntimeError("a load that fails")
        assert gc.get_threshold()[0] == ingest.GC_YOUNG_THRESHOLD  # the other load still runs
        release.set()
        other.join()
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_errors_file_masks_member_names_and_an_earlier_versions_file_is_archived(settings):
    someone = resident_id(42)
    v1 = ndjson([settlement(1), settlement(2, amount=21.00), {**settlement(3), someone: 1}])
    drop(settings, SETTLE_KEY, v1)
    run(settings)
    receipts = open_bucket(settings.receipts_url)
    first = receipts.read_bytes(SETTLE_KEY + ".errors.ndjson").decode()
    assert someone not in first  # an unknown member named after a person
    assert {json.loads(line)["line"] for line in first.splitlines()} == {2, 3}

    drop(settings, SETTLE_KEY, ndjson([settlement(1, quantity=0)]), at=T0 + timedelta(hours=1))
    run(settings)
    archived = f"{SETTLE_KEY}.{hashlib.sha256(v1).hexdigest()[:12]}.errors.ndjson"
    assert receipts.read_bytes(archived).decode() == first
    now = [json.loads(line) for line in receipts.read_bytes(SETTLE_KEY + ".errors.ndjson").decode().splitlines()]
    assert {e["line"] for e in now} == {1}


def test_errors_file_lines_are_masked_whole_whatever_the_validator_left(tmp_path):
    from sanyi.fastpath import Rejected
    from sanyi.ingest import _ErrorLines
    from sanyi.validation import RecordError

    someone = resident_id(42)
    errors = _ErrorLines(tmp_path / "errors.ndjson", keep_alive=None)
    error = RecordError(path=f"/{someone}", rule=someone, message=f"{someone} is unexpected")
    errors.add([Rejected(7, None, [error])])
    errors.close()
    text = (tmp_path / "errors.ndjson").read_text(encoding="utf-8")
    assert someone not in text and len(errors) == 1
    assert json.loads(text)["line"] == 7


def test_errors_file_is_stored_from_disk_not_built_in_memory(settings, monkeypatch):
    import tracemalloc

    import sanyi.ingest as ingest

    lines = 20_000
    drop(settings, SETTLE_KEY, ndjson([settlement(i, amount=21.00) for i in range(1, lines + 1)]))
    peaks = []
    write_receipt = ingest._write_receipt

    def traced(*args, **kwargs):
        tracemalloc.start()
        try:
            write_receipt(*args, **kwargs)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()

    monkeypatch.setattr(ingest, "_write_receipt", traced)
    run(settings)
    size = len(open_bucket(settings.receipts_url).read_bytes(SETTLE_KEY + ".errors.ndjson"))
    assert size > 2_000_000 and receipt_json(settings, SETTLE_KEY)["counts"]["rejected"] == lines
    assert peaks and peaks[0] < size / 10  # the file's text was never held whole


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_file_is_read_in_blocks_growing_to_a_chunk_and_loses_no_byte(gzipped):
    # The first blocks are small so that validation starts before a whole chunk is read and hashed.
    import io
    import itertools

    from sanyi import ingest

    assert list(itertools.islice(ingest._block_sizes(16 << 20), 6)) == [2 << 20, 4 << 20, 8 << 20] + [16 << 20] * 3
    assert list(itertools.islice(ingest._block_sizes(3), 3)) == [1, 2, 3]  # never a block of 0 bytes
    mib = 1 << 20
    data = bytes(range(256)) * (20 * mib // 256)
    # gzip content is decompressed 1 MiB at a time: blocks of the sizes asked for, in whole MiB
    size = 8 * mib if gzipped else 1 << 17
    raw = ingest._HashingReader(io.BytesIO(gzip.compress(data, compresslevel=1) if gzipped else data))
    blocks = list(ingest._blocks(raw, gzipped, limit=1 << 30, size=size))
    assert b"".join(blocks) == data
    first = [1 * mib, 2 * mib, 4 * mib] if gzipped else [16384, 32768, 65536]
    assert [len(b) for b in blocks[:4]] == [*first, size]
    assert all(len(b) == size for b in blocks[3:-1])
