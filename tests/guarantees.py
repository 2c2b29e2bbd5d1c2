"""Reusable end-state checks: nothing lost, nothing doubled, no resident id outside the landing bucket.

Import these from any test that has run ingestion (the bad-input corpus, fault injection, end-to-end):

- :func:`assert_every_object_accounted_for` — every landing object's current bytes have exactly one
  ledger row, in a terminal state, with one receipt that agrees with the ledger; every warehouse and
  quarantine row traces back to a ledger row, and the counts add up (no record lost or stored twice).
- :func:`find_leaks` / :func:`assert_no_resident_ids` — every valid resident id in what Sanyi wrote:
  warehouse tables (every row of every table, through ``Warehouse.scan``), receipts and error files,
  published exports, and any extra texts (captured logs).

They read state only through the platform's own interfaces (buckets, ledger, warehouse), and never
read an object over the platform's size limit (those must stay unread).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from sanyi import contracts, privacy
from sanyi.config import Settings
from sanyi.ingest import receipt_key, sha256_of
from sanyi.ledger import FileRow, Ledger
from sanyi.storage import Bucket, open_bucket
from sanyi.warehouse import QUARANTINE, Warehouse

EVERY_RECORD_REJECTED = "every record was rejected"
_ESCAPE = re.compile(r"\\u[0-9a-fA-F]{4}|\\x[0-9a-fA-F]{2}")
_HEX64 = re.compile(r"(?<![0-9A-Fa-f])[0-9a-f]{64}(?![0-9A-Fa-f])")


def current_rows(settings: Settings) -> dict[str, FileRow]:
    """The ledger row of every landing object's current bytes, by key (asserting there is exactly one)."""
    landing = open_bucket(settings.landing_url, settings=settings)
    ledger = Ledger(settings=settings)
    rows = ledger.all()
    by_identity: dict[tuple[str, str], list[FileRow]] = defaultdict(list)
    for r in rows:
        by_identity[(r.key, r.sha256)].append(r)
    out: dict[str, FileRow] = {}
    problems = []
    for obj in landing.list():
        if obj.size > settings.max_file_bytes:
            # Over the limit: identified by key, size and arrival, and never read (not even here).
            row = ledger.find(obj.key, size=obj.size, arrived_at=obj.last_modified)
            matches = [row] if row is not None and row.sha256.startswith("unhashed-") else []
        else:
            # The key's current version is its latest ledger row, which must be for these bytes (a key may
            # hold the same bytes again after others: A, B, A gives A its own row again).
            latest = max((r for r in rows if r.key == obj.key), key=lambda r: r.id, default=None)
            sha = sha256_of(landing, obj.key)
            matches = [latest] if latest is not None and latest.sha256 == sha else []
            matches += [r for r in by_identity.get((obj.key, sha), []) if r is not latest and not r.terminal]
        if len(matches) != 1:
            problems.append(f"{obj.key}: {len(matches)} ledger rows for its current bytes")
            continue
        out[obj.key] = matches[0]
    assert not problems, "\n".join(problems)
    return out


def _receipt(receipts: Bucket, path: str) -> dict[str, Any] | None:
    return json.loads(receipts.read_bytes(path)) if receipts.exists(path) else None


def _rejected_whole(row: FileRow) -> bool:
    return row.status == "rejected" and not (row.reason or "").startswith(EVERY_RECORD_REJECTED)


def assert_every_object_accounted_for(settings: Settings) -> None:
    """Nothing lost, nothing doubled, for everything in the landing bucket.

    - each object's current bytes have exactly one ledger row, in a terminal state;
    - that row has exactly one receipt, at the object's receipt path, agreeing with the ledger (sha256,
      status, counts), with ``read = loaded + rejected + duplicate_records`` and a reason when the file
      was rejected or a duplicate; every receipt in the bucket belongs to a ledger row;
    - an earlier version of a key (re-dropped with other bytes) kept its receipt, archived;
    - every warehouse row comes from a file whose receipt says it loaded, no key is stored twice, and an
      append table holds exactly the records the receipts count as loaded (an upsert table at most those);
    - quarantine holds exactly the rejected records of the files not rejected whole, and each file with
      rejected records has an errors file.
    """
    receipts = open_bucket(settings.receipts_url, settings=settings)
    current = current_rows(settings)
    rows = Ledger(settings=settings).all()
    problems: list[str] = []

    expected_receipts: set[str] = set()
    for key, row in current.items():
        if not row.terminal:
            problems.append(f"{key}: ledger status {row.status!r} is not terminal")
            continue
        base = receipt_key(row.key, row.sha256)
        path = f"{base}.receipt.json"
        expected_receipts.add(path)
        r = _receipt(receipts, path)
        if r is None:
            problems.append(f"{key}: no receipt at {path}")
            continue
        problems += [f"{key}: {p}" for p in _receipt_problems(row, r)]
        has_errors = receipts.exists(f"{base}.errors.ndjson")
        if has_errors != bool(row.records_rejected and not _rejected_whole(row)):
            problems.append(f"{key}: errors file present={has_errors}, {row.records_rejected} rejected ({row.reason})")

    # Earlier versions of a key: their receipts are archived next to the current one.
    for row in rows:
        now = current.get(row.key)
        if now is None or now.id == row.id or now.id < row.id or not now.terminal:
            continue
        archived = f"{receipt_key(now.key, now.sha256)}.{row.sha256[:12]}.receipt.json"
        expected_receipts.add(archived)
        r = _receipt(receipts, archived)
        if r is None or r.get("sha256") != row.sha256:
            problems.append(f"{row.key}: version {row.sha256[:12]} has no archived receipt at {archived}")

    stray = {o.key for o in receipts.list() if o.key.endswith(".receipt.json")} - expected_receipts
    problems += [f"receipt {k} belongs to no landing object" for k in sorted(stray)]

    problems += _warehouse_problems(settings, rows)
    assert not problems, "\n".join(problems)


def _receipt_problems(row: FileRow, r: dict[str, Any]) -> list[str]:
    out = []
    sha = None if row.sha256.startswith("unhashed-") else row.sha256
    if r.get("sha256") != sha:
        out.append(f"receipt sha256 {r.get('sha256')} is not the ledger's {sha}")
    if r.get("status") != row.status:
        out.append(f"receipt status {r.get('status')} is not the ledger's {row.status}")
    c = r.get("counts", {})
    if c.get("read") != c.get("loaded", 0) + c.get("rejected", 0) + c.get("duplicate_records", 0):
        out.append(f"counts do not add up: {c}")
    ledger_counts = (row.records_read, row.records_loaded, row.records_rejected, row.duplicate_records)
    if tuple(c.get(k) for k in ("read", "loaded", "rejected", "duplicate_records")) != ledger_counts:
        out.append(f"receipt counts {c} are not the ledger's {ledger_counts}")
    if row.status in ("rejected", "duplicate") and not r.get("reason"):
        out.append(f"{row.status} without a reason")
    if row.status == "duplicate" and c.get("read") != 0:
        out.append("a duplicate file must count nothing")
    return out


def _warehouse_problems(settings: Settings, rows: list[FileRow]) -> list[str]:
    wh = Warehouse(settings=settings)
    tables = set(wh.table_names())
    by_source: dict[tuple[str, str], FileRow] = {}
    for r in rows:
        # The same bytes under one key can have several rows (A, B, A): the one that loaded owns the rows.
        prev = by_source.get((r.key, r.sha256))
        if prev is None or prev.status not in ("loaded", "loaded_with_rejections"):
            by_source[(r.key, r.sha256)] = r
    out: list[str] = []
    for ds in contracts.load_datasets().values():
        expected_total = sum(
            r.records_loaded or 0
            for r in rows
            if (r.agency, r.dataset) == (ds.agency, ds.name) and r.status in ("loaded", "loaded_with_rejections")
        )
        if ds.table_name not in tables:
            if expected_total:
                out.append(f"{ds.table_name}: receipts count {expected_total} loaded records, the table does not exist")
            continue
        data = wh.scan(ds.table_name, columns=[*ds.key, "_source_file", "_source_sha256"]).to_pylist()
        keys = Counter(tuple(_key_text(d[k]) for k in ds.key) for d in data)
        doubled = [k for k, n in keys.items() if n > 1]
        if doubled:
            out.append(f"{ds.table_name}: {len(doubled)} keys stored more than once, e.g. {doubled[0]}")
        per_file = Counter((d["_source_file"], d["_source_sha256"]) for d in data)
        for source, n in per_file.items():
            r = by_source.get(source)
            if r is None or r.status not in ("loaded", "loaded_with_rejections"):
                out.append(f"{ds.table_name}: {n} rows from {source[0]}, which did not load ({r and r.status})")
            elif (r.agency, r.dataset) != (ds.agency, ds.name):
                out.append(f"{ds.table_name}: {n} rows from {source[0]}, a file of {r.agency}/{r.dataset}")
            elif n > (r.records_loaded or 0) or (ds.mode == "append" and n != r.records_loaded):
                out.append(f"{ds.table_name}: {n} rows from {source[0]}, its receipt says {r.records_loaded} loaded")
        if ds.mode == "append" and len(data) != expected_total:
            out.append(f"{ds.table_name}: {len(data)} rows, the receipts count {expected_total} loaded")
        missing = [
            r.key
            for r in rows
            if (r.agency, r.dataset) == (ds.agency, ds.name)
            and ds.mode == "append"
            and r.records_loaded
            and (r.key, r.sha256) not in per_file
        ]
        out += [f"{ds.table_name}: nothing from {k}, whose receipt counts loaded records" for k in missing]

    quarantined: Counter = Counter()
    if QUARANTINE in tables:
        for q in wh.scan(QUARANTINE, columns=["source_file", "source_sha256"]).to_pylist():
            quarantined[(q["source_file"], q["source_sha256"])] += 1
    for r in rows:
        want = 0 if _rejected_whole(r) or not r.terminal else (r.records_rejected or 0)
        got = quarantined.pop((r.key, r.sha256), 0)
        if got != want:
            out.append(f"quarantine holds {got} records of {r.key}, expected {want} ({r.status})")
    out += [f"quarantine holds {n} records of {k[0]}, which has no ledger row" for k, n in quarantined.items()]
    return out


def _key_text(value: Any) -> str:
    # Timestamps are UTC in the warehouse: their text compares as instants.
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


# ------------------------------------------------------------------------------------------- privacy
def _texts_of_bucket(bucket: Bucket) -> Iterable[tuple[str, str]]:
    for obj in bucket.list():
        yield f"{bucket.url}/{obj.key} (key)", obj.key
        data = bucket.read_bytes(obj.key)
        if obj.key.endswith(".parquet"):
            import io

            import pyarrow.parquet as pq

            text = json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), default=str, ensure_ascii=False)
        else:
            text = data.decode("utf-8", errors="replace")
        yield f"{bucket.url}/{obj.key}", text


def find_leaks(settings: Settings, *, extra: dict[str, str] | None = None) -> dict[str, int]:
    """How many valid resident ids are in each place Sanyi wrote outside the landing bucket.

    Scans every row of every warehouse table (quarantine and indicator tables included), the
    receipts and published buckets (object keys and contents; Parquet decoded), and ``extra`` texts
    (captured logs, CLI output). Only counts are reported, so a failing assertion leaks nothing either.
    """
    found: dict[str, int] = {}
    wh = Warehouse(settings=settings)
    snapshot_ids = sorted(
        (str(snap.snapshot_id) for name in wh.table_names() for snap in wh.catalog.load_table(name).snapshots()),
        key=len,
        reverse=True,
    )

    def scan(place: str, text: str) -> None:
        # Random numbers the platform itself writes can pass the id check by chance: 63-bit snapshot ids
        # (~1% of them), and digit runs inside sha256 digests and 64-hex pseudonyms (~1e-4 per value, which
        # over thousands of pseudonyms is a sure false alarm). Neither can carry an agency's id.
        text = _HEX64.sub("<hex64>", text)
        for sid in snapshot_ids:
            text = text.replace(sid, "<snapshot>")
        # An escaped character (JSON's \u0001, repr's \x01) next to an id joins their digits into a longer
        # run, which is not an id by definition but hides one: escapes are read as the boundary they are.
        text = _ESCAPE.sub(" ", text)
        ids = privacy.find_resident_ids(text)
        if ids:
            # The place itself (an object key) may hold the id: report it masked.
            found[privacy.mask_resident_ids(place)] = found.get(privacy.mask_resident_ids(place), 0) + len(ids)

    for name in wh.table_names():
        for i, row in enumerate(wh.scan(name).to_pylist()):
            scan(f"warehouse {name} row {i}", json.dumps(row, default=str, ensure_ascii=False))
    for url in (settings.receipts_url, settings.published_url):
        for place, text in _texts_of_bucket(open_bucket(url, settings=settings)):
            scan(place, text)
    for place, text in (extra or {}).items():
        scan(place, text)
    return found


def assert_no_resident_ids(settings: Settings, *, extra: dict[str, str] | None = None) -> None:
    leaks = find_leaks(settings, extra=extra)
    assert not leaks, "resident ids outside the landing bucket:\n" + "\n".join(
        f"{k}: {n} id(s)" for k, n in leaks.items()
    )
