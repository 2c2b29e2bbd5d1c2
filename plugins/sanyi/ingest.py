"""Ingestion: landing bucket → ledger → parse + validate → Iceberg → receipt, one file at a time.

The two entry points are what the ingest DAG's tasks call:

- :func:`discover` lists the landing bucket and registers every new object version in the ledger;
- :func:`process_file` takes one ledger row to a terminal state and writes its receipt.

``process_file`` is idempotent and crash-safe: every commit carries the ledger id and sha256 in its
snapshot properties, so a rerun after a crash at any point finds what was already committed and
finishes the job instead of loading twice.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import gc
import gzip
import hashlib
import io
import itertools
import json
import logging
import os
import queue
import re
import tempfile
import threading
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sanyi import contracts, extension, fastpath, privacy, validation
from sanyi.config import Settings
from sanyi.ledger import FileRow, Ledger, claim_owner
from sanyi.storage import Bucket, open_bucket
from sanyi.warehouse import (
    PROP_COUNTS,
    PROP_FILE,
    PROP_LEDGER,
    PROP_SHA,
    QUARANTINE,
    Warehouse,
    write_data_files,
)

log = logging.getLogger(__name__)

_DATE_DIR = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SUFFIXES = (
    (".gb18030.csv.gz", "csv", True, "gb18030"),
    (".gb18030.csv", "csv", False, "gb18030"),
    (".ndjson.gz", "ndjson", True, "utf-8"),
    (".jsonl.gz", "ndjson", True, "utf-8"),
    (".csv.gz", "csv", True, "utf-8"),
    (".ndjson", "ndjson", False, "utf-8"),
    (".jsonl", "ndjson", False, "utf-8"),
    (".csv", "csv", False, "utf-8"),
    (".parquet", "parquet", False, None),
)
_MAX_NESTING = 64
# The longest legitimate record (a settlement line with many trace codes) is a few tens of KB; past this
# a line is refused unparsed, so one giant line can neither exhaust memory nor land in quarantine.
MAX_RECORD_CHARS = 1 << 20
_REPLACED = "the object was replaced by other bytes before it was processed"
# What Sanyi writes about rejected records (json.dumps with options builds an encoder at every call).
_JSON = json.JSONEncoder(ensure_ascii=False)
_JSON_ANY = json.JSONEncoder(ensure_ascii=False, default=str)  # and any other value as its text


class FileRejected(Exception):
    """The whole file is rejected; the message is the receipt's reason (never holds a resident id)."""


class FileBusy(Exception):
    """Another worker holds a live claim on the file (it is being processed); try again later."""


@dataclass(frozen=True)
class DropPath:
    agency: str
    dataset: str
    business_date: date
    name: str
    fmt: str
    gzipped: bool
    encoding: str | None


def parse_key(key: str) -> DropPath:
    """Check ``key`` against the drop convention ``<agency>/<dataset>/<YYYY-MM-DD>/<file>``."""
    if privacy.mask_resident_ids(key) != key:
        # A key is copied into the warehouse, receipts, logs and exports: an id in it would leak everywhere.
        raise FileRejected(
            f"the file path {privacy.mask_resident_ids(key)!r} contains a resident id; a resident id may appear "
            "only in patient_id: rename the file and drop it again"
        )
    parts = key.split("/")
    if len(parts) != 4 or any(not p for p in parts):
        raise FileRejected(f"path {key!r} does not follow the drop convention <agency>/<dataset>/<YYYY-MM-DD>/<file>")
    agency, dataset, day, name = parts
    try:
        contracts.get_dataset(agency, dataset)
    except contracts.UnknownDataset as exc:
        raise FileRejected(str(exc)) from exc
    try:
        if not _DATE_DIR.fullmatch(day):
            raise ValueError(day)
        business_date = date.fromisoformat(day)
    except ValueError as exc:
        raise FileRejected(f"business date folder {day!r} is not a real YYYY-MM-DD date") from exc
    lower = name.lower()
    for suffix, fmt, gz, enc in _SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return DropPath(agency, dataset, business_date, name, fmt, gz, enc)
    raise FileRejected(
        f"file type of {name!r} is not accepted (use .ndjson, .jsonl, .csv, .parquet; "
        "text types may end in .gz; GB18030 CSV as .gb18030.csv)"
    )


# ------------------------------------------------------------------------------------------ discover
def discover(settings: Settings, *, landing: Bucket | None = None, ledger: Ledger | None = None) -> list[int]:
    """Register every new object version in the landing bucket; return the ids still pending."""
    landing = landing or open_bucket(settings.landing_url, settings=settings)
    ledger = ledger or Ledger(settings=settings)
    for obj in landing.list():
        if ledger.find(obj.key, size=obj.size, arrived_at=obj.last_modified) is not None:
            continue
        agency = dataset = business_date = None
        try:
            drop = parse_key(obj.key)
            agency, dataset, business_date = drop.agency, drop.dataset, drop.business_date
        except FileRejected:
            pass  # still registered: the file gets a receipt saying why it was rejected
        if obj.size > settings.max_file_bytes:
            # Never read an oversize object, not even to hash it.
            digest = "unhashed-" + hashlib.sha256(f"{obj.key}|{obj.size}|{obj.last_modified}".encode()).hexdigest()[9:]
        else:
            digest = sha256_of(landing, obj.key)
        ledger.register(
            key=obj.key,
            sha256=digest,
            size=obj.size,
            arrived_at=obj.last_modified,
            agency=agency,
            dataset=dataset,
            business_date=business_date,
        )
    return [row.id for row in ledger.pending()]


def sha256_of(bucket: Bucket, key: str) -> str:
    """The hex SHA-256 of an object's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with bucket.open(key) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- parse
@dataclass
class Parsed:
    """One record as read from the file: either a JSON-model dict or the reason it is unreadable."""

    line: int
    record: dict[str, Any] | None
    errors: list[validation.RecordError] = field(default_factory=list)


def read_bytes_checked(landing: Bucket, row: FileRow, drop: DropPath, settings: Settings) -> bytes:
    if row.size > settings.max_file_bytes:
        raise FileRejected(
            f"file is {row.size} bytes, over the platform limit of {settings.max_file_bytes} bytes; "
            "split it into smaller files"
        )
    data = landing.read_bytes(row.key)
    if row.sha256 != hashlib.sha256(data).hexdigest():
        raise FileRejected(
            f"{_REPLACED}; "
            "the new bytes are processed as their own submission"
        )
    if drop.gzipped:
        data = _gunzip(data, limit=settings.max_file_bytes)
    return data


def _gunzip(data: bytes, *, limit: int) -> bytes:
    if data[:2] != b"\x1f\x8b":
        raise FileRejected("file name ends in .gz but the content is not gzip")
    out = bytearray()
    try:
        stream = gzip.GzipFile(fileobj=io.BytesIO(data))
        while chunk := stream.read(1 << 20):
            out += chunk
            if len(out) > limit:
                raise FileRejected(f"gzip content expands beyond the platform limit of {limit} bytes")
    except (OSError, EOFError, zlib.error) as exc:
        raise FileRejected(f"gzip content is corrupt or truncated ({type(exc).__name__})") from exc
    return bytes(out)


def _decode(data: bytes, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise _undecodable(encoding, exc.start) from exc
    return text.removeprefix("\ufeff")


def parse_records(data: bytes, drop: DropPath, ds: contracts.Dataset) -> list[Parsed]:
    if drop.fmt == "ndjson":
        return list(_parse_ndjson(_decode(data, drop.encoding or "utf-8")))
    if drop.fmt == "csv":
        return list(_parse_csv(_decode(data, drop.encoding or "utf-8"), ds))
    return list(_parse_parquet(data, ds))


def _parse_ndjson(text: str) -> Iterator[Parsed]:
    # Walk the text by offsets rather than split(): no second copy of a large file, and an overlong
    # line is measured without ever being sliced out.
    n, pos, size = 0, 0, len(text)
    while pos < size:
        n += 1
        end = text.find("\n", pos)
        if end == -1:
            end = size
        if end - pos > MAX_RECORD_CHARS:
            yield Parsed(n, None, [validation.RecordError("", "record_too_large", _too_large(end - pos))])
        else:
            line = text[pos:end].removesuffix("\r")
            if line.strip():
                yield _parse_json_line(n, line)
        pos = end + 1


def _too_large(length: int) -> str:
    return f"the record is {length} characters long, over the platform limit of {MAX_RECORD_CHARS} per record"


def _parse_json_line(n: int, line: str) -> Parsed:
    def err(rule: str, msg: str) -> Parsed:
        return Parsed(n, None, [validation.RecordError("", rule, msg)])

    if _nesting(line) > _MAX_NESTING:
        return err("json_syntax", f"JSON nested deeper than {_MAX_NESTING} levels")
    try:
        value = contracts.parse_json_record(line)
    except contracts.ContractError as exc:
        rule = "duplicate_key" if "duplicate field" in str(exc) else "json_syntax"
        return err(rule, privacy.mask_resident_ids(str(exc)))
    if not isinstance(value, dict):
        return err("json_object", f"each line must be one JSON object, got a JSON {type(value).__name__}")
    if "\\u" in line and _has_lone_surrogate(value):
        # json accepts an escaped half of a surrogate pair; such a string cannot be stored as UTF-8.
        return err("json_syntax", "a string holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)")
    return Parsed(n, value)


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _nesting(line: str) -> int:
    """How deep ``line``'s JSON nests (0 when it plainly cannot reach the limit)."""
    if line.count("[") + line.count("{") <= _MAX_NESTING:
        return 0  # cannot be too deep: no scan for an ordinary record
    # Brackets inside string values are text, not nesting (a name may well contain "[[["). One linear pass:
    # a regex for strings would backtrack quadratically on a line of unterminated quotes.
    depth = best = 0
    in_string = escaped = False
    for ch in line:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


class _LineTooLong(Exception):
    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length


_NEWLINE = re.compile(r"\r\n|\r|\n")


class _Lines:
    """The physical lines of ``text`` with their ends (as a file opened with ``newline=""`` gives them),
    counted in ``n``; a line over :data:`MAX_RECORD_CHARS` raises :class:`_LineTooLong` instead of
    reaching the csv parser (which would otherwise build one cell per comma of it)."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.n = text, 0, 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.text):
            raise StopIteration
        m = _NEWLINE.search(self.text, self.pos)
        start, self.pos = self.pos, m.end() if m else len(self.text)
        self.n += 1
        if self.pos - start > MAX_RECORD_CHARS:
            raise _LineTooLong(self.pos - start)
        return self.text[start : self.pos]


def _parse_csv(text: str, ds: contracts.Dataset) -> Iterator[Parsed]:
    lines = _Lines(text)
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise FileRejected(f"CSV header could not be read: {exc}") from exc
    except _LineTooLong as exc:
        raise FileRejected(f"CSV header could not be read: {_too_large(exc.length)}") from exc
    if header is None:
        return
    header = [h.strip() for h in header]
    if len(header) == 1 and any(sep in header[0] for sep in (";", "\t", "|")):
        raise FileRejected("CSV header has a single column: the delimiter must be a comma")
    try:
        contracts.check_csv_header(ds, header)
    except contracts.ContractError as exc:
        raise FileRejected(str(exc)) from exc
    while True:
        # The physical line the next record starts on (a quoted cell may span several lines).
        line = lines.n + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Parsed(line, None, [validation.RecordError("", "csv_syntax", f"malformed CSV: {exc}")])
            continue
        except _LineTooLong as exc:
            yield Parsed(line, None, [validation.RecordError("", "record_too_large", _too_large(exc.length))])
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            yield Parsed(
                line,
                None,
                [validation.RecordError("", "csv_shape", f"row has {len(row)} cells, the header has {len(header)}")],
            )
            continue
        try:
            yield Parsed(line, contracts.record_from_csv(ds, dict(zip(header, row, strict=True))))
        except contracts.ContractError as exc:
            raise FileRejected(str(exc)) from exc


def _parse_parquet(data: bytes, ds: contracts.Dataset) -> Iterator[Parsed]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for a non-Parquet body
        raise FileRejected(f"not a readable Parquet file ({type(exc).__name__})") from exc
    n = 0
    batches = pf.iter_batches(batch_size=65536)
    while True:
        try:
            batch = next(batches, None)
            recs = batch.to_pylist() if batch is not None else None
        except Exception as exc:  # a corrupt page, or text that is not UTF-8, shows up only when decoded
            raise FileRejected(f"Parquet content could not be read after row {n} ({type(exc).__name__})") from exc
        if recs is None:
            return
        for rec in recs:
            n += 1
            try:
                yield Parsed(n, contracts.record_from_parquet(ds, rec))
            except (TypeError, ValueError) as exc:
                yield Parsed(
                    n, None, [validation.RecordError("", "parquet_value", privacy.mask_resident_ids(str(exc)))]
                )


# ----------------------------------------------------------------------------------------- process
@dataclass
class Receipt:
    file: str
    dataset: str | None
    schema_version: str | None
    sha256: str | None
    status: str
    read: int = 0
    loaded: int = 0
    rejected: int = 0
    duplicate_records: int = 0
    reason: str | None = None
    snapshot_id: int | None = None
    arrived_at: str | None = None
    processed_at: str | None = None
    duplicate_of: str | None = None
    supersedes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["counts"] = {
            "read": d.pop("read"),
            "loaded": d.pop("loaded"),
            "rejected": d.pop("rejected"),
            "duplicate_records": d.pop("duplicate_records"),
        }
        return d


def process_file(settings: Settings, file_id: int, *, warehouse: Warehouse | None = None) -> Receipt:
    """Take ledger row ``file_id`` to a terminal state and write its receipt (idempotent).

    The worker first claims the file in the ledger; :class:`FileBusy` means another worker holds
    it (it finishes the file; retry later). A worker that dies keeps its claim until its lease ends,
    or until a worker on the same host sees that its process is gone.
    """
    ledger = Ledger(settings=settings)
    row = ledger.get(file_id)
    if row.terminal:
        return _existing_receipt(settings, row)
    # One worker per file: a second task on it (an overlapping run, a manual retry) backs off.
    if not ledger.claim(file_id, claim_owner()):
        row = ledger.get(file_id)
        if row.terminal:
            return _existing_receipt(settings, row)
        until = row.claimed_until.isoformat() if row.claimed_until else "?"
        key = privacy.mask_resident_ids(row.key)
        raise FileBusy(f"{key} is being processed by {row.claimed_by} until {until}")
    landing = open_bucket(settings.landing_url, settings=settings)
    receipts = open_bucket(settings.receipts_url, settings=settings)
    warehouse = warehouse or Warehouse(settings=settings)
    try:
        receipt, errors = _process(settings, row, ledger, landing, warehouse)
        if receipt.reason:
            receipt.reason = privacy.mask_resident_ids(receipt.reason)
        _write_receipt(receipts, row, receipt, errors, ledger)
    except Exception as exc:
        # Not terminal: the row stays pending for the next run, which finds any commit already made.
        ledger.mark_error(file_id, privacy.mask_resident_ids(f"{type(exc).__name__}: {exc}"))
        raise
    ledger.finish(
        file_id,
        status=receipt.status,
        reason=receipt.reason,
        read=receipt.read,
        loaded=receipt.loaded,
        rejected=receipt.rejected,
        duplicate_records=receipt.duplicate_records,
        snapshot_id=receipt.snapshot_id,
        duplicate_of=_dup_id(ledger, row),
    )
    log.info("file %s: %s (%d read, %d loaded)", receipt.file, receipt.status, receipt.read, receipt.loaded)
    return receipt


def _dup_id(ledger: Ledger, row: FileRow) -> int | None:
    prev = _replay_of(ledger, row)
    return prev.id if prev is not None else None


def _replay_of(ledger: Ledger, row: FileRow) -> FileRow | None:
    """An earlier submission of the same bytes that was read the same way (format, gzip, encoding).

    Bytes rejected under one name and dropped again under a name that reads them otherwise (a GB18030
    CSV renamed from ``.csv`` to ``.gb18030.csv``) are the corrected submission, not a replay of it.
    """
    # The original is the earliest arrival, whatever order the (parallel) load tasks run in; it may
    # still be pending, in which case it is loaded by its own task.
    earlier = ledger.same_bytes(row)  # none for a key that names no dataset, which parse_key would refuse
    if not earlier:
        return None
    now = parse_key(row.key)
    for prev in earlier:
        if (prev.arrived_at, prev.id) > (row.arrived_at, row.id):
            break
        if prev.status == "duplicate" or (prev.reason or "").startswith(_REPLACED):
            continue  # a replaced object's bytes were never read: this copy is the only one
        before = parse_key(prev.key)
        if (before.fmt, before.gzipped, before.encoding) == (now.fmt, now.gzipped, now.encoding):
            return prev
    return None


def _base_receipt(row: FileRow, ds: contracts.Dataset | None, status: str) -> Receipt:
    return Receipt(
        file=privacy.mask_resident_ids(row.key),  # the receipt is logged and returned to Airflow (XCom)
        dataset=ds.table_name.replace(".", "/") if ds else None,
        schema_version=ds.version if ds else None,
        sha256=None if row.sha256.startswith("unhashed-") else row.sha256,
        status=status,
        arrived_at=row.arrived_at.isoformat(),
        processed_at=datetime.now(UTC).isoformat(),
    )


def _process(
    settings: Settings, row: FileRow, ledger: Ledger, landing: Bucket, warehouse: Warehouse
) -> tuple[Receipt, _ErrorLines | None]:
    try:
        drop = parse_key(row.key)
    except FileRejected as exc:
        receipt = _base_receipt(row, None, "rejected")
        receipt.reason = str(exc)
        return receipt, None
    ds = contracts.get_dataset(drop.agency, drop.dataset)

    replay = _replay_of(ledger, row)
    if replay is not None:
        receipt = _base_receipt(row, ds, "duplicate")
        receipt.duplicate_of = replay.key
        receipt.reason = f"identical bytes were already submitted as {replay.key}"
        return receipt, None

    try:
        # Streamed: read, checked (sanyi.fastpath) and written chunk by chunk; see _load.
        with _fewer_collections():
            out = _load(settings, row, drop, ds, landing, warehouse)
    except FileRejected as exc:
        receipt = _base_receipt(row, ds, "rejected")
        receipt.reason = str(exc)
        return receipt, None
    if out.file_reason:
        receipt = _base_receipt(row, ds, "rejected")
        receipt.reason = privacy.mask_resident_ids(out.file_reason)
        receipt.read = receipt.rejected = out.read
        return receipt, None

    receipt = _base_receipt(row, ds, "loaded")
    receipt.read = out.read
    receipt.rejected = out.rejected
    receipt.duplicate_records = out.duplicates
    receipt.loaded = receipt.read - receipt.rejected - out.duplicates
    if out.loaded != receipt.loaded:
        log.warning("count mismatch for %s: committed %s, receipt %s", row.key, out.loaded, receipt.loaded)
    receipt.snapshot_id = out.snapshot_id
    if receipt.rejected and receipt.rejected == receipt.read:
        receipt.status = "rejected"
        receipt.reason = "every record was rejected; see the errors file"
    elif receipt.rejected:
        receipt.status = "loaded_with_rejections"
    return receipt, out.errors  # on disk, stored from there as the errors file


class _AlreadyCommitted(Exception):
    def __init__(self, found: tuple[int, dict[str, Any]]) -> None:
        super().__init__(found[0])
        self.found = found


def _check_not_committed(table, props: dict[str, str]) -> None:
    """Raise :class:`_AlreadyCommitted` if ``table`` (freshly loaded) holds this file's commit.

    Checked inside every commit attempt, so that even two workers on one file (a claim taken over
    after its lease ran out) commit it once: the loser of the race retries and finds the winner's.
    """
    found = Warehouse.find_commit(table, sha256=props[PROP_SHA], ledger_id=int(props[PROP_LEDGER]))
    if found is not None:
        raise _AlreadyCommitted(found)


def _commit_rows(
    warehouse: Warehouse, ds: contracts.Dataset, arrow: pa.Table, props: dict[str, str], counts: dict[str, int]
) -> int | None:
    """One commit for the file's good rows; ``counts`` receives loaded/duplicates."""
    from sanyi.warehouse import key_filter_mask

    def build_append(table):
        _check_not_committed(table, props)
        # Within the file, the first occurrence of a key wins; later ones are duplicates.
        keys = [tuple(_key_text(r[k]) for k in ds.key) for r in arrow.select(list(ds.key)).to_pylist()]
        seen: set[tuple] = set()
        first = []
        for k in keys:
            first.append(k not in seen)
            seen.add(k)
        unique = arrow.filter(pa.array(first, pa.bool_()))
        existing = table.scan(selected_fields=tuple(ds.key)).to_arrow()
        new = unique.filter(key_filter_mask(existing, unique, ds.key)) if unique.num_rows else unique
        counts["loaded"] = new.num_rows
        counts["duplicates"] = arrow.num_rows - new.num_rows
        props[PROP_COUNTS] = json.dumps(counts)
        return new, "append"

    def build_upsert(table):
        _check_not_committed(table, props)
        existing = table.scan().to_arrow()
        merged = _merge_upsert(ds, existing, arrow)
        counts["loaded"] = arrow.num_rows
        counts["duplicates"] = 0
        props[PROP_COUNTS] = json.dumps(counts)
        if arrow.num_rows == 0:
            return None, "replace"
        return merged, "replace"

    build = build_append if ds.mode == "append" else build_upsert
    return warehouse.commit(ds.table_name, build, properties=props)


def _key_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


def _merge_upsert(ds: contracts.Dataset, existing: pa.Table, incoming: pa.Table) -> pa.Table:
    """Latest business date wins, then latest arrival, then the later line (contracts.md)."""
    existing = existing.select(incoming.schema.names).cast(incoming.schema)
    combined = pa.concat_tables([existing, incoming])
    rows = combined.select([*ds.key, "_business_date", "_arrived_at", "_line_no"]).to_pylist()
    n_existing = existing.num_rows
    best: dict[tuple, int] = {}
    for i, r in enumerate(rows):
        k = tuple(_key_text(r[c]) for c in ds.key)
        rank = (r["_business_date"], r["_arrived_at"], i >= n_existing, r["_line_no"])
        j = best.get(k)
        if j is None or rank >= _rank(rows[j], j >= n_existing):
            best[k] = i
    keep = sorted(best.values())
    merged = combined.take(pa.array(keep, pa.int64()))
    return _apply_version_attributes(ds, merged, incoming)


def _rank(r: dict[str, Any], incoming: bool) -> tuple:
    return (r["_business_date"], r["_arrived_at"], incoming, r["_line_no"])


def _apply_version_attributes(ds: contracts.Dataset, merged: pa.Table, incoming: pa.Table) -> pa.Table:
    """Catalog versions carry one published_on/effective_from; a later file's dates hold for all rows."""
    if ds.table_name != "insurance.drug_catalog" or incoming.num_rows == 0:
        return merged
    dates = {}
    for r in incoming.select(["catalog_version", "published_on", "effective_from"]).to_pylist():
        dates[r["catalog_version"]] = (r["published_on"], r["effective_from"])
    versions = merged.column("catalog_version").to_pylist()
    pub = merged.column("published_on").to_pylist()
    eff = merged.column("effective_from").to_pylist()
    for i, v in enumerate(versions):
        if v in dates:
            pub[i], eff[i] = dates[v]
    for name, values in (("published_on", pub), ("effective_from", eff)):
        idx = merged.schema.get_field_index(name)
        # Keep the schema's field (its non-null flag) so the table still matches Iceberg's schema.
        merged = merged.set_column(idx, merged.schema.field(idx), pa.array(values, pa.date32()))
    return merged


def _safe_records_json(records: list[dict[str, Any] | None], key: bytes) -> list[str | None]:
    """Each rejected record as JSON, with a valid patient_id pseudonymised and any other id masked."""
    prepared = [None if r is None else _pseudonymised(r, key) for r in records]
    texts = [None if p is None else _JSON_ANY.encode(p[0]) for p in prepared]
    maskable = fastpath.maskable_ids(pa.array(texts, pa.string())).to_pylist()
    for i, text in enumerate(texts):
        # Nothing to mask when no id shows in the text: JSON punctuation keeps every value's digits apart, and
        # a \u escape (whose hex digits could run into an id) is the one case where the text hides a value.
        if text is None or not (maskable[i] or "\\u" in text):
            continue
        rec, pseudonym = prepared[i]
        # Masked value by value (keys included) rather than over the JSON text: masking the text would turn
        # an id sent as a JSON number into an unquoted token and the column into invalid JSON.
        masked = _masked(rec)
        if pseudonym is not None:
            # The pseudonym's hex is Sanyi's own: 18 digits in it that happen to carry a valid check character
            # (about one pseudonym in 4,500) are not an id, and masked it would no longer match the warehouse's.
            masked["patient_id"] = pseudonym
        texts[i] = _JSON_ANY.encode(masked)
    return texts


def _pseudonymised(record: dict[str, Any], key: bytes) -> tuple[dict[str, Any], str | None]:
    """(a copy of ``record`` with its patient_id a pseudonym, or masked when it is not a valid id; the
    pseudonym)"""
    rec = dict(record)
    pid = rec.get("patient_id")
    pseudonym = None
    if isinstance(pid, str) and privacy.is_valid_resident_id(pid):
        rec["patient_id"] = pseudonym = "pseudonym:" + privacy.pseudonymise(key, pid)
    elif isinstance(pid, str):
        # An id with a typo is still somebody's id: never keep it, even in quarantine.
        rec["patient_id"] = privacy.MASK
    return rec, pseudonym


def _with_masked_errors(rejected: list[fastpath.Rejected]) -> list[fastpath.Rejected]:
    """A chunk's rejected records with their errors' paths and messages masked, once for both the errors file
    and quarantine, before either writes them as JSON, which could join an id's digits to an escape's (see
    validation._show_value). A path names a member the agency chose, which can be an id. The validator masked
    them already, so one search over the chunk's paths and messages (a line break between each) usually finds
    nothing to mask."""
    if not fastpath.maskable_text("\n".join(f"{e.path}\n{e.message}" for r in rejected for e in r.errors)):
        return rejected
    mask = privacy.mask_resident_ids
    return [
        fastpath.Rejected(r.line, r.record, [validation.RecordError(mask(e.path), e.rule, mask(e.message))
                                             for e in r.errors])
        for r in rejected
    ]


def _masked(value: Any) -> Any:
    """A JSON-ready copy of ``value`` with every resident id masked: in strings and keys, in numbers whose
    digits form one, and in any other type (bytes from a Parquet binary column…) through its text."""
    if isinstance(value, dict):
        return {privacy.mask_resident_ids(str(k)): _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int | Decimal):
        return privacy.MASK if privacy.mask_resident_ids(str(value)) != str(value) else value
    return privacy.mask_resident_ids(value if isinstance(value, str) else str(value))


def receipt_key(key: str, sha256: str) -> str:
    """Where the receipt of the file at ``key`` goes (``<receipt_key>.receipt.json``): the file's own key.

    A key holding a resident id (such a file is rejected) is masked; the version's sha256 prefix keeps
    apart two names that masking makes equal.
    """
    masked = privacy.mask_resident_ids(key)
    return key if masked == key else f"{masked}.{sha256[:12]}"


def _write_receipt(
    receipts: Bucket, row: FileRow, receipt: Receipt, errors: _ErrorLines | None, ledger: Ledger
) -> None:
    base = receipt_key(row.key, row.sha256)
    path = f"{base}.receipt.json"
    errors_path = f"{base}.errors.ndjson"
    # A re-drop of the same key with other bytes keeps the earlier receipt next to the new one.
    for prev in ledger.previous_versions(row):
        if prev.terminal and prev.sha256 != row.sha256:
            receipt.supersedes.append(prev.sha256)
            archived = f"{base}.{prev.sha256[:12]}.receipt.json"
            if receipts.exists(path) and not receipts.exists(archived):
                old = receipts.read_bytes(path)
                if json.loads(old).get("sha256") == prev.sha256:
                    receipts.put(archived, old)
                    if receipts.exists(errors_path):
                        receipts.copy(errors_path, f"{base}.{prev.sha256[:12]}.errors.ndjson")
                        receipts.delete(errors_path)
    if errors:
        receipts.put_file(errors_path, errors.path)  # streamed: a file of rejected lines can be large
    # Only the fields an agency's text can reach are masked: masking the whole text would also hit an
    # 18-digit snapshot id or a run of digits in a sha256 that happens to carry a valid check character.
    d = receipt.to_json()
    for name in ("file", "reason", "duplicate_of"):
        d[name] = privacy.mask_in(d[name])
    receipts.put(path, json.dumps(d, ensure_ascii=False, indent=2).encode())


def _existing_receipt(settings: Settings, row: FileRow) -> Receipt:
    receipts = open_bucket(settings.receipts_url, settings=settings)
    path = f"{receipt_key(row.key, row.sha256)}.receipt.json"
    if receipts.exists(path):
        d = json.loads(receipts.read_bytes(path))
        counts = d.pop("counts", {})
        d.update(
            read=counts.get("read", 0),
            loaded=counts.get("loaded", 0),
            rejected=counts.get("rejected", 0),
            duplicate_records=counts.get("duplicate_records", 0),
        )
        return Receipt(**d)
    return Receipt(
        file=privacy.mask_resident_ids(row.key), dataset=None, schema_version=None, sha256=row.sha256, status=row.status
    )


# ===================================================================================== streaming load
# A file is read, checked and written in bounded pieces, so peak memory follows these sizes and not the
# file's (an upsert dataset, whose merge rewrites its table, still holds the file's good rows).
# Decompressed bytes handed to the validator at a time, cut after a line break. 8 MiB rather than more for
# CSV: the first chunk is checked sooner and the last written sooner, so reading, checking and writing
# overlap longer (measured: 16 MiB is 5 % slower and holds 200 MiB more). NDJSON takes twice that: its
# chunks are checked two at a time, each in pieces on the parse threads, and fewer, larger chunks kept the
# cores busier (measured, 1M lines, 5 interleaved pairs: 5.98 -> 5.57 s, 10.4 -> 9.9 CPU-s, +70 MiB peak).
CHUNK_BYTES = 8 << 20
NDJSON_CHUNK_FACTOR = 2
RAMP_STEPS = 3  # a file's first blocks are 1/8, 1/4 and 1/2 of a chunk (_block_sizes)
WRITE_ROWS = 1 << 18  # good rows buffered before they are written as Iceberg data files
_BOM = b"\xef\xbb\xbf"


def _undecodable(encoding: str, offset: int) -> FileRejected:
    return FileRejected(
        f"file is not valid {encoding.upper()} (first bad byte at offset {offset}); "
        "UTF-8 is the default, GB18030 CSV files must be named *.gb18030.csv"
    )


def _check_size(row: FileRow, settings: Settings) -> None:
    if row.size > settings.max_file_bytes:
        raise FileRejected(
            f"file is {row.size} bytes, over the platform limit of {settings.max_file_bytes} bytes; "
            "split it into smaller files"
        )


@dataclass
class _Outcome:
    read: int = 0
    rejected: int = 0
    loaded: int = 0
    duplicates: int = 0
    snapshot_id: int | None = None
    file_reason: str | None = None
    errors: _ErrorLines | None = None


class _HashingReader:
    """The landing object, read once: every byte goes through sha256 (compared when the file ends)."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.digest = fh, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.digest.update(data)
        return data

    def finish(self) -> str:
        while block := self.fh.read(1 << 20):
            self.digest.update(block)
        return self.digest.hexdigest()


class _Prepend:
    """A reader that first gives back bytes already read from ``raw`` (the gzip magic number)."""

    def __init__(self, head: bytes, raw: _HashingReader) -> None:
        self.head, self.raw = head, raw

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.raw.read(size)
        if size < 0:
            out, self.head = self.head + self.raw.read(), b""
            return out
        out, self.head = self.head[:size], self.head[size:]
        return out + self.raw.read(size - len(out)) if len(out) < size else out


def chunk_bytes(fmt: str) -> int:
    """The size of the chunks a file of format ``fmt`` is read, checked and written in."""
    return CHUNK_BYTES * (NDJSON_CHUNK_FACTOR if fmt == "ndjson" else 1)


def _block_sizes(size: int) -> Iterator[int]:
    """``size`` / 8, / 4, / 2, then ``size`` on: the validators start on the first small block while the
    reader is still a chunk ahead of them, instead of waiting for a whole first chunk to be read and hashed."""
    step = max(size >> RAMP_STEPS, 1)
    while step < size:
        yield step
        step <<= 1
    while True:
        yield size


def _blocks(raw: _HashingReader, gzipped: bool, limit: int, size: int) -> Iterator[bytes]:
    """The file's bytes (decompressed) in blocks growing to ``size`` (:func:`_block_sizes`), raising what
    :func:`_gunzip` raises, in the same order."""
    sizes = _block_sizes(size)
    if not gzipped:
        while block := raw.read(next(sizes)):
            yield block
        return
    head = raw.read(2)
    if head != b"\x1f\x8b":
        raise FileRejected("file name ends in .gz but the content is not gzip")
    total, want = 0, next(sizes)
    pending: list[bytes] = []
    try:
        stream = gzip.GzipFile(fileobj=_Prepend(head, raw))
        while piece := stream.read(1 << 20):  # 1 MiB steps, as _gunzip checks the limit
            total += len(piece)
            if total > limit:
                raise FileRejected(f"gzip content expands beyond the platform limit of {limit} bytes")
            pending.append(piece)
            if sum(map(len, pending)) >= want:
                yield b"".join(pending)
                pending, want = [], next(sizes)
    except (OSError, EOFError, zlib.error) as exc:
        raise FileRejected(f"gzip content is corrupt or truncated ({type(exc).__name__})") from exc
    if pending:
        yield b"".join(pending)


def _line_chunks(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """Blocks re-cut so that each piece ends with a line break (the last one may not)."""
    carry = b""
    for block in blocks:
        cut = block.rfind(b"\n")
        if cut < 0:
            carry += block
            continue
        # One copy of the block at most (blocks are chunk-sized), made without the GIL (the validators go on
        # meanwhile): none when it ends at a line break already.
        piece = block if not carry and cut == len(block) - 1 else extension("_ndjson").joined(carry, block, cut + 1)
        carry = block[cut + 1 :]
        yield piece
    if carry:
        yield carry


_VALIDATING = 2  # NDJSON chunks validated at the same time
# Chunks handed to the validators at a time: one more than they validate, so that a validator done with its
# chunk starts the next at once instead of waiting for the read (measured, 1M lines, 3 rounds: 418-426k ->
# 433-437k rec/s, peak memory +40 MiB).
_IN_FLIGHT = _VALIDATING + 1
_VALIDATORS = ThreadPoolExecutor(_VALIDATING, thread_name_prefix="sanyi-validate")


class _Source:
    """A landing file read in chunks, with the reference's order of whole-file verdicts.

    The reference reads everything before judging anything: a replaced object wins over a broken gzip
    stream, which wins over bad text encoding, which wins over an unreadable CSV header. When streaming
    finds one of them, the rest of the file is still read so that an earlier-ranked verdict found later
    in the file is the one reported.
    """

    def __init__(self, landing: Bucket, row: FileRow, drop: DropPath, settings: Settings) -> None:
        self.row, self.drop = row, drop
        self.fh = landing.open(row.key)
        self.raw = _HashingReader(self.fh)
        size = chunk_bytes(drop.fmt)
        self.chunks = _line_chunks(_blocks(self.raw, drop.gzipped, settings.max_file_bytes, size))
        self.offset = 0

    def close(self) -> None:
        self.fh.close()

    def _text_ok(self, chunk: bytes, encoding: str) -> None:
        """Check that ``chunk`` decodes (UTF-8 checked by Arrow, much faster than decoding it)."""
        try:
            if encoding != "utf-8":
                raise pa.ArrowInvalid("decode with Python")
            offsets = pa.array([0, len(chunk)], pa.int64()).buffers()[1]
            whole = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(chunk)])
            whole.cast(pa.large_string())  # no copy of the chunk
        except pa.ArrowInvalid:
            self._decoded(chunk, encoding)
            return
        self.offset += len(chunk)

    def _decoded(self, chunk: bytes, encoding: str) -> str:
        try:
            text = chunk.decode(encoding)
        except UnicodeDecodeError as exc:
            raise _undecodable(encoding, self.offset + exc.start) from exc
        self.offset += len(chunk)
        return text

    def _verdict(self, problem: FileRejected) -> FileRejected:
        """The whole-file verdict the reference gives, given that streaming ran into ``problem``."""
        try:
            for _ in self.chunks:  # a broken gzip stream later in the file ranks first
                pass
        except FileRejected as earlier:
            problem = earlier
        if self.raw.finish() != self.row.sha256:
            return FileRejected(f"{_REPLACED}; the new bytes are processed as their own submission")
        return problem

    def _verify(self) -> None:
        if self.raw.finish() != self.row.sha256:
            raise FileRejected(f"{_REPLACED}; the new bytes are processed as their own submission")

    def ndjson(self, ds: contracts.Dataset) -> Iterator[fastpath.ChunkResult]:
        # Two chunks are validated at once (Arrow releases the GIL, so one chunk's parse overlaps the other's
        # checks) and a third waits for the first validator free; results come out in file order.
        line, first = 1, True
        pending: collections.deque[Future[fastpath.ChunkResult]] = collections.deque()
        try:
            for chunk in self.chunks:
                self._text_ok(chunk, "utf-8")
                body = chunk.removeprefix(_BOM) if first else chunk
                first = False
                # The line breaks are found here, once: the next chunk's first line number needs them.
                starts = fastpath.line_starts(body)
                pending.append(_VALIDATORS.submit(fastpath.check_ndjson, ds, body, line, starts=starts))
                line += len(starts) - 1 - (1 if body and not body.endswith(b"\n") else 0)
                if len(pending) >= _IN_FLIGHT:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except FileRejected as exc:
            raise self._verdict(exc) from None
        finally:
            for f in pending:
                f.cancel()
        self._verify()

    def csv(self, ds: contracts.Dataset) -> Iterator[fastpath.ChunkResult]:
        encoding = self.drop.encoding or "utf-8"

        def texts() -> Iterator[str]:
            first = True
            for chunk in self.chunks:
                text = self._decoded(chunk, encoding)
                yield text.removeprefix("\ufeff") if first else text
                first = False

        pieces = texts()
        try:
            yield from fastpath.iter_csv(ds, pieces)
        except fastpath.HeaderRejected as exc:
            problem = FileRejected(str(exc))
            try:
                for _ in pieces:  # the reference decodes the whole file before it reads the header
                    pass
            except FileRejected as earlier:
                problem = earlier
            raise self._verdict(problem) from None
        except FileRejected as exc:
            raise self._verdict(exc) from None
        self._verify()


def _results(settings: Settings, row: FileRow, drop: DropPath, ds: contracts.Dataset,
             landing: Bucket) -> Iterator[fastpath.ChunkResult]:
    """The file's records, validated chunk by chunk; raises :class:`FileRejected` for the whole file."""
    _check_size(row, settings)
    if drop.fmt == "parquet":
        # Parquet needs random access to its footer: the file is read whole, as the reference does.
        data = read_bytes_checked(landing, row, drop, settings)
        batch: list[Parsed] = []
        for p in _parse_parquet(data, ds):
            batch.append(p)
            if len(batch) >= 65536:
                yield _judge_parsed(ds, batch)
                batch = []
        if batch:
            yield _judge_parsed(ds, batch)
        return
    source = _Source(landing, row, drop, settings)
    try:
        yield from source.ndjson(ds) if drop.fmt == "ndjson" else source.csv(ds)
    finally:
        source.close()


def _judge_parsed(ds: contracts.Dataset, parsed: list[Parsed]) -> fastpath.ChunkResult:
    unreadable = [fastpath.Rejected(p.line, None, p.errors) for p in parsed if p.record is None or p.errors]
    readable = [(p.line, p.record) for p in parsed if p.record is not None and not p.errors]
    result = fastpath.check_records(ds, readable)
    result.rejected = sorted(result.rejected + unreadable, key=lambda r: r.line)
    result.read = len(parsed)
    return result


def _finish_rows(
    ds: contracts.Dataset, good: pa.Table, row: FileRow, drop: DropPath, key: bytes
) -> pa.Table:
    """A chunk's good rows as warehouse rows: pseudonyms, and the ``_`` metadata columns."""
    n = good.num_rows
    cols: dict[str, pa.Array] = {name: fastpath.one_array(good.column(name)) for name in good.column_names}
    if "patient_id" in cols:
        cols["patient_id"] = privacy.pseudonymise_array(key, cols["patient_id"])
    cols["_business_date"] = pa.repeat(pa.scalar(drop.business_date, pa.date32()), n)
    cols["_arrived_at"] = pa.repeat(pa.scalar(row.arrived_at, pa.timestamp("us", tz="UTC")), n)
    cols["_source_file"] = pa.repeat(pa.scalar(row.key, pa.string()), n)
    cols["_source_sha256"] = pa.repeat(pa.scalar(row.sha256, pa.string()), n)
    schema = ds.arrow_schema()
    return pa.Table.from_arrays([cols[f.name].cast(f.type) for f in schema], schema=schema)


def _key_texts(table: pa.Table | pa.RecordBatch, key: tuple[str, ...]) -> pa.Array:
    """Each row's key as one text: its columns as text (timestamps and dates by their integer value),
    joined by U+001F. Equal texts are equal keys, timestamps compared as instants."""
    parts = [pc.cast(_key_part(table.column(k)), pa.string()) for k in key]
    joined = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "\x1f")
    return fastpath.one_array(joined)


def _key_part(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    # Timestamps (all UTC, microseconds) and dates compare as their integer value: equal integers are equal
    # instants and days, and casting an integer to text is much cheaper than formatting a timestamp.
    if pa.types.is_timestamp(values.type):
        return values.cast(pa.int64())
    if pa.types.is_date32(values.type):
        return values.cast(pa.int32())
    return values


def _min_max(values: pa.ChunkedArray | pa.Array) -> tuple[Any, Any]:
    found = pc.min_max(values)
    return found["min"].as_py(), found["max"].as_py()


def _sql(settings: Settings, name: str) -> str:
    return (settings.sql_dir / "ingest" / name).read_text(encoding="utf-8")


class _UpsertSink:
    """Good rows of an upsert dataset: the merge rewrites the table, so they are kept until the commit."""

    def __init__(self, ds: contracts.Dataset) -> None:
        self.ds, self.tables = ds, []

    def add(self, table: pa.Table) -> None:
        self.tables.append(table)

    def commit(self, warehouse: Warehouse, props: dict[str, str], counts: dict[str, int]) -> int | None:
        arrow = pa.concat_tables(self.tables) if self.tables else self.ds.arrow_schema().empty_table()
        return _commit_rows(warehouse, self.ds, arrow, props, counts)

    def discard(self) -> None:
        self.tables = []


@dataclass
class _Written:
    files: list[Any]  # pyiceberg DataFiles, written but not committed
    first_line: int
    last_line: int


class _Background:
    """Tasks started in order on ``threads`` background threads, at most ``depth`` of them queued or running
    at a time (which bounds the memory they hold). A task's failure is raised by the next :meth:`submit` or
    :meth:`drain`."""

    def __init__(self, name: str, *, depth: int = 2, threads: int = 1) -> None:
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self.depth = depth
        self.queued: collections.deque[Future[None]] = collections.deque()

    def submit(self, fn: Any, *args: Any) -> None:
        while self.queued and (self.queued[0].done() or len(self.queued) >= self.depth):
            self.queued.popleft().result()  # re-raises a failure of the background work
        self.queued.append(self.pool.submit(fn, *args))

    def drain(self) -> None:
        """Wait for every task; then raise the first failure, if any."""
        failure: BaseException | None = None
        while self.queued:
            try:
                self.queued.popleft().result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, once nothing runs any more
                failure = failure or exc
        if failure is not None:
            raise failure

    def close(self) -> None:
        self.queued.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


class _AppendSink:
    """Good rows of an append dataset, written as Iceberg data files as they arrive; one commit at the end.

    Keys go to a DuckDB table, which spills to the load's work folder past DuckDB's memory limit, so that
    duplicates — a later line with a key already seen in the file, or a key already stored — are found
    however large the file. Written files that hold a duplicate line are rewritten without it before the
    commit (usually there are none).

    Key inserts (one thread) and data-file writes (two) run in the background (DuckDB and Parquet release the
    GIL), so the loading thread goes on with the next chunk. The commit looks for duplicates as soon as the
    last keys are in, while the last data file is still being written (measured on 1M lines, 2 cores: the
    commit took 0.22-0.23 s instead of 0.26-0.28, in a tail where one core was mostly idle).
    """

    def __init__(self, settings: Settings, warehouse: Warehouse, ds: contracts.Dataset, work: Path) -> None:
        import duckdb

        self.settings, self.ds = settings, ds
        self.table = warehouse.dataset_table(ds)
        self.uuid, self.counter = uuid.uuid4(), itertools.count()
        self.written: list[_Written] = []
        self.buffer: list[pa.Table] = []
        self.buffered = self.rows = 0
        self.conn = duckdb.connect(
            # In memory, not a database file: the table lives only as long as the load, and DuckDB spills an
            # in-memory table to temp_directory past memory_limit just as well (measured: 10M keys, 260 MiB
            # resident, 184 MiB spilled), without writing every insert to a log first and the whole table at
            # each checkpoint and at close (1M keys: inserts 0.14 → 0.09 CPU-s, close 39 → 7 ms).
            ":memory:",
            # Uncompressed: compressing the table cost a third of the inserts' CPU (measured with a database
            # file: 0.6 → 0.4 CPU-s per million keys). One thread for the inserts, which run beside the load:
            # DuckDB's second thread cost more CPU than it saved (measured, 1M lines: its threads 0.24-0.29 →
            # 0.11-0.14 CPU-s). The duplicates query, in the load's tail, sets two (duplicate_lines.sql: 1M-line
            # CSV, 3 A/B pairs, 597-639k → 624-655k rec/s; NDJSON unchanged, its tail has a Parquet write).
            config={
                "memory_limit": "128MB",
                "threads": 1,
                "temp_directory": str(work / "spill"),
                "force_compression": "uncompressed",
            },
        )
        self.conn.execute(_sql(settings, "incoming_keys.sql"))
        # Bounds of the file's keys, to read back only the stored keys that can match (file statistics and
        # partitions prune the rest): the first key column, and the partition column when a key fixes it.
        self.bound_columns = [ds.key[0]]
        fixed = ds.partition in ds.key or any(ds.derived_dates.get(k) == ds.partition for k in ds.key)
        if ds.partition and fixed:
            self.bound_columns.append(ds.partition)
        self.bounds: dict[str, list[Any]] = {}
        self.keys = _Background("sanyi-keys")  # one thread: one DuckDB connection, inserts in file order
        # Two threads: the last rows' write starts at once instead of after the write before it, which began
        # near the end of the file and, with the duplicates query beside it, held up the commit (measured, 1M
        # lines: the commit waited 0.14 s for it after the query was done).
        self.writes = _Background("sanyi-write", threads=2)

    def _insert_keys(self, keys: pa.Table) -> None:
        self.conn.register("chunk_keys", keys)
        self.conn.execute(_sql(self.settings, "add_keys.sql"))
        self.conn.unregister("chunk_keys")

    def add(self, table: pa.Table) -> None:
        keys = pa.table({"k": _key_texts(table, self.ds.key), "line": table.column("_line_no")})
        self.keys.submit(self._insert_keys, keys)
        for name in self.bound_columns:
            lo, hi = _min_max(table.column(name))
            have = self.bounds.setdefault(name, [lo, hi])
            have[0], have[1] = min(have[0], lo), max(have[1], hi)
        self.rows += table.num_rows
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.buffered >= WRITE_ROWS:
            self._flush()

    def _flush(self, *, last: bool = False) -> None:
        if not self.buffer:
            return
        data = pa.concat_tables(self.buffer)
        self.buffer, self.buffered = [], 0
        # The last rows are written while nothing else is left to do: as two files, on two cores, when they
        # are many (measured, 1M lines: the load's last 0.4 s ran on one core, writing 210k rows).
        self.writes.submit(self._write, data, 2 if last and data.num_rows >= WRITE_ROWS // 4 else 1)

    def _write(self, data: pa.Table, parts: int = 1) -> None:
        first, last = _min_max(data.column("_line_no"))
        files = write_data_files(self.table, data, write_uuid=self.uuid, counter=self.counter, parts=parts)
        self.written.append(_Written(files, first, last))

    def _stored_keys(self, table: Any) -> pa.RecordBatchReader:
        from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual

        row_filter = None
        for name, (lo, hi) in self.bounds.items():
            if isinstance(lo, datetime):
                continue
            part = And(GreaterThanOrEqual(name, lo), LessThanOrEqual(name, hi))
            row_filter = part if row_filter is None else And(row_filter, part)
        selected = tuple(dict.fromkeys([*self.ds.key, *self.bounds]))
        scan = table.scan(row_filter=row_filter, selected_fields=selected) if row_filter else table.scan(
            selected_fields=selected)
        schema = pa.schema([("k", pa.string())])
        batches = (
            pa.record_batch([_key_texts(b, self.ds.key)], schema=schema) for b in scan.to_arrow_batch_reader()
        )
        return pa.RecordBatchReader.from_batches(schema, batches)

    def _without_duplicates(self, table: Any) -> int:
        """Find the duplicate lines against ``table`` and drop them from the written files; their number."""
        self.conn.register("stored_keys", self._stored_keys(table))
        self.conn.execute(_sql(self.settings, "duplicate_lines.sql"))
        self.conn.unregister("stored_keys")
        # fetchall, not fetchone: DuckDB 2 keeps a result open until fetched to the end, and the next
        # register (a commit retry after a conflict) then fails with ResourceInUseException.
        ((duplicates,),) = self.conn.execute(_sql(self.settings, "duplicate_count.sql")).fetchall()
        self.writes.drain()  # the files, all written, are what the commit adds (or rewrites, below)
        if duplicates:
            for w in self.written:
                lines = self.conn.execute(
                    _sql(self.settings, "duplicate_lines_between.sql"), [w.first_line, w.last_line]
                ).fetchall()
                if lines:
                    self._rewrite(w, pa.array([line for (line,) in lines], pa.int64()))
        return int(duplicates)

    def _rewrite(self, w: _Written, drop_lines: pa.Array) -> None:
        import pyarrow.parquet as pq

        io_ = self.table.io
        parts = []
        for f in w.files:
            with io_.new_input(f.file_path).open() as fh:
                parts.append(pq.read_table(fh))
        data = pa.concat_tables(parts).select(self.ds.arrow_schema().names).cast(self.ds.arrow_schema())
        keep = data.filter(pc.invert(pc.is_in(data.column("_line_no"), value_set=drop_lines)))
        old = w.files
        w.files = (
            write_data_files(self.table, keep, write_uuid=self.uuid, counter=self.counter) if keep.num_rows else []
        )
        for f in old:
            io_.delete(f.file_path)

    def commit(self, warehouse: Warehouse, props: dict[str, str], counts: dict[str, int]) -> int | None:
        self._flush(last=True)
        self.keys.drain()  # the last data file may still be being written: _without_duplicates waits for it

        def build(table: Any) -> tuple[list[Any], str]:
            _check_not_committed(table, props)
            duplicates = self._without_duplicates(table)  # again after a conflict: new keys may be stored
            counts["loaded"] = self.rows - duplicates
            counts["duplicates"] = duplicates
            props[PROP_COUNTS] = json.dumps(counts)
            return [f for w in self.written for f in w.files], "files"

        return warehouse.commit(self.ds.table_name, build, properties=props)

    def discard(self) -> None:
        """Delete what was written (nothing of it is committed); best effort."""
        self.buffer = []
        for background in (self.keys, self.writes):
            try:
                background.drain()  # a write still running would leave its files behind
            except Exception:  # noqa: BLE001 - the load fails anyway; delete what was written
                log.warning("background work failed while the load was being discarded", exc_info=True)
        for w in self.written:
            for f in w.files:
                try:
                    self.table.io.delete(f.file_path)
                except Exception:  # noqa: BLE001 - an orphan file is harmless; the first error matters
                    log.warning("could not delete uncommitted data file %s", f.file_path)
        self.written = []

    def close(self) -> None:
        self.keys.close()
        self.writes.close()
        self.conn.close()


class _ErrorLines:
    """The errors file, written to disk line by line as the errors come, and stored from there: memory does
    not grow with the number of rejected records."""

    def __init__(self, path: Path, keep_alive: Any) -> None:
        self.path, self.keep_alive, self.count = path, keep_alive, 0
        self.fh = path.open("w", encoding="utf-8")

    def add(self, rejected: list[fastpath.Rejected]) -> None:
        """The errors of a chunk's rejected records (masked: :func:`_with_masked_errors`)."""
        errors = [(r.line, e) for r in rejected for e in r.errors]
        if not errors:
            return
        text = validation.error_lines(errors)
        self.fh.write(privacy.mask_resident_ids(text) if fastpath.maskable_text(text) else text)
        self.count += len(errors)

    def close(self) -> None:
        self.fh.close()  # idempotent

    def __bool__(self) -> bool:
        return self.count > 0

    def __len__(self) -> int:
        return self.count


class _Quarantine:
    """Rejected records as quarantine rows, spilled to an Arrow file; appended to the table in one commit."""

    def __init__(self, path: Path, ds: contracts.Dataset, row: FileRow, drop: DropPath, key: bytes) -> None:
        from sanyi.warehouse import QUARANTINE_SCHEMA

        self.path, self.ds, self.row, self.drop, self.key = path, ds, row, drop, key
        self.schema = QUARANTINE_SCHEMA
        self.writer = pa.ipc.new_file(str(path), QUARANTINE_SCHEMA)
        self.closed = False
        self.count = 0
        self.now = datetime.now(UTC)

    def add(self, rejected: list[fastpath.Rejected]) -> None:
        if not rejected:
            return
        n = len(rejected)
        columns = {
            "agency": self.ds.agency,
            "dataset": self.ds.name,
            "source_file": self.row.key,
            "source_sha256": self.row.sha256,
            "business_date": self.drop.business_date,
            "line_no": [r.line for r in rejected],
            "record": _safe_records_json([r.record for r in rejected], self.key),
            "errors": [_JSON.encode([e.as_dict() for e in r.errors]) for r in rejected],
            "quarantined_at": self.now,
        }
        arrays = [
            pa.array(v, f.type) if isinstance(v, list) else pa.repeat(pa.scalar(v, f.type), n)
            for f, v in zip(self.schema, columns.values(), strict=True)
        ]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.count += n

    def close(self) -> None:
        if not self.closed:
            self.writer.close()
            self.closed = True

    def _reader(self) -> pa.RecordBatchReader:
        source = pa.ipc.open_file(pa.memory_map(str(self.path)))
        batches = (source.get_batch(i) for i in range(source.num_record_batches))
        return pa.RecordBatchReader.from_batches(self.schema, batches)

    def commit(self, warehouse: Warehouse, props: dict[str, str]) -> None:
        q_props = {k: v for k, v in props.items() if k != PROP_COUNTS}
        warehouse.table(QUARANTINE, self.schema)

        def build(table: Any) -> tuple[pa.RecordBatchReader | None, str]:
            try:
                _check_not_committed(table, q_props)
            except _AlreadyCommitted:
                return None, "append"
            return self._reader(), "append"  # streamed from the spill file: the table is unpartitioned

        warehouse.commit(QUARANTINE, build, properties=q_props)


_DONE = object()


def _prefetched(items: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """``items`` produced on a worker thread, ``depth`` ahead of the consumer; its exceptions re-raised here.
    If the consumer stops early, the worker is told to stop and the generator is closed on its thread."""
    out: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        out.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            else:
                out.put(("done", _DONE))
                return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            out.put(("error", exc))
            return
        finally:
            if stop.is_set() and hasattr(items, "close"):
                items.close()

    worker = threading.Thread(target=work, name="sanyi-load-read", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = out.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        while worker.is_alive():
            try:
                out.get(timeout=0.1)
            except queue.Empty:
                pass
        worker.join()


@cache
def _arrow_memory_pool() -> None:
    """Arrow's buffers from jemalloc rather than its default, mimalloc, unless the operator chose one
    (``ARROW_DEFAULT_MEMORY_POOL``). mimalloc keeps taking fresh memory, which the kernel hands out as 2 MiB
    huge pages zeroed on first touch: 8 % of a load's CPU (perf), 1 % with jemalloc, which reuses what was
    freed. Process-wide; a buffer allocated earlier is still freed to its own pool."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:
        log.info("pyarrow was built without jemalloc: Arrow keeps its default allocator (%s)",
                 pa.default_memory_pool().backend_name)


# Young objects the garbage collector lets pile up before it runs, while a load runs (CPython's default is
# 700). A rejected record is a few dozen short-lived dicts, lists and Decimals; at the default the collector
# ran some 1,700 times on a 100k-line file of rejected lines and took a sixth of its CPU (measured: 7.0 ->
# 5.7 s, 7.7 -> 6.4 CPU-s; the 1 %-invalid file gains 1-3 %). Cycles are still collected, just later.
GC_YOUNG_THRESHOLD = 50_000
_gc_lock = threading.Lock()
_gc_loads = 0
_gc_saved: tuple[int, ...] = ()


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """The collector's first threshold raised to :data:`GC_YOUNG_THRESHOLD` while any load of this process
    runs (process-wide, counted, so loads on several threads overlap safely); restored after the last."""
    global _gc_loads, _gc_saved
    with _gc_lock:
        if _gc_loads == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(GC_YOUNG_THRESHOLD, _gc_saved[0]), *_gc_saved[1:])
        _gc_loads += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_loads -= 1
            if _gc_loads == 0:
                gc.set_threshold(*_gc_saved)


def _tmp_root(settings: Settings) -> Path:
    root = settings.home / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _load(settings: Settings, row: FileRow, drop: DropPath, ds: contracts.Dataset, landing: Bucket,
          warehouse: Warehouse) -> _Outcome:
    """Read, check and load one file chunk by chunk: one commit on the dataset's table, one on quarantine.

    Raises :class:`FileRejected` (nothing committed) for a verdict on the whole file.
    """
    key = settings.require_key()
    _arrow_memory_pool()
    props = {PROP_SHA: row.sha256, PROP_FILE: row.key, PROP_LEDGER: str(row.id)}
    found = Warehouse.find_commit(warehouse.dataset_table(ds), sha256=row.sha256, ledger_id=row.id)
    tmp = tempfile.TemporaryDirectory(prefix="load-", dir=_tmp_root(settings))
    work = Path(tmp.name)
    out = _Outcome()
    errors = _ErrorLines(work / "errors.ndjson", keep_alive=tmp)
    quarantine = _Quarantine(work / "quarantine.arrow", ds, row, drop, key)
    sink: _AppendSink | _UpsertSink | None = None
    if found is None:  # else committed before a crash: read again for the receipt, write nothing
        sink = _AppendSink(settings, warehouse, ds, work) if ds.mode == "append" else _UpsertSink(ds)
    appender = sink if isinstance(sink, _AppendSink) else None
    file_records: list[Any] | None = [] if ds.file_rules else None
    try:
        # Chunk k+1 is read and validated on a worker thread while chunk k is written (Arrow and Parquet
        # release the GIL); at most four chunks are in memory beyond the one being written (_IN_FLIGHT, and one
        # validated, waiting).
        for result in _prefetched(_results(settings, row, drop, ds, landing)):
            out.read += result.read
            rejected = _with_masked_errors(result.rejected)
            errors.add(rejected)
            quarantine.add(rejected)
            if file_records is not None and result.records:
                file_records.extend(result.records)
            if sink is not None and result.good.num_rows:
                sink.add(_finish_rows(ds, result.good, row, drop, key))
        errors.close()
        quarantine.close()
        out.rejected = quarantine.count
        if file_records is not None:
            out.file_reason = validation.validate_file(ds, file_records)
            if out.file_reason:
                if sink is not None:
                    sink.discard()
                return out
        counts: dict[str, int] = {}
        if found is not None:
            out.snapshot_id, counts = found
        else:
            assert sink is not None
            try:
                out.snapshot_id = sink.commit(warehouse, props, counts)
            except _AlreadyCommitted as done:  # a worker that took over an expired claim got there first
                sink.discard()
                out.snapshot_id, counts = done.found
            sink = None  # committed (or superseded): nothing of it is to be deleted any more
        out.loaded = counts.get("loaded", 0)
        out.duplicates = counts.get("duplicates", 0)
        if quarantine.count:
            quarantine.commit(warehouse, props)
        out.errors = errors
        return out
    except BaseException:
        if sink is not None:
            sink.discard()
        raise
    finally:
        errors.close()
        quarantine.close()
        if appender is not None:
            appender.close()
