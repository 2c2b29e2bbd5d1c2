"""The Iceberg warehouse: pyiceberg's SqlCatalog for metadata, Parquet (zstd) data files.

Wraps a ``pyiceberg.catalog.sql.SqlCatalog`` on ``Settings.catalog_uri`` with data under
``Settings.warehouse_url`` (local folder or ``s3://``). Every load is one Iceberg commit whose
snapshot properties name the source file and its sha256, which makes a replay or an interrupted
load detectable after the fact. Queries go through DuckDB over Arrow scans (:meth:`duckdb`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, ValidationException
from pyiceberg.expressions import AlwaysTrue, EqualTo
from pyiceberg.table import Table
from pyiceberg.transforms import MonthTransform
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from sanyi.config import Settings
from sanyi.contracts import Dataset, load_datasets
from sanyi.indicators import FINDINGS_SCHEMA, RESULTS_SCHEMA

log = logging.getLogger(__name__)

PROP_SHA = "sanyi.source-sha256"
PROP_FILE = "sanyi.source-file"
PROP_LEDGER = "sanyi.ledger-id"
PROP_COUNTS = "sanyi.counts"

# pyiceberg (0.12) retries a conflicting commit by itself, re-basing the very same rows on the new
# table state: an append would then store keys the other writer has just stored, and an upsert's
# overwrite would delete the other writer's rows (or fail validation). What Sanyi writes is derived
# from the table, so a conflict must come back to Warehouse.commit, which rebuilds from fresh state.
NUM_RETRIES = "commit.retry.num-retries"

# Parquet dictionaries stop at 512 KiB per column chunk (pyiceberg's default is 2 MiB). With 2 MiB, columns of
# mostly distinct values (line numbers, timestamps, amounts, settlement ids) were dictionary-encoded nearly
# whole before the writer fell back to plain: 990k settlement rows written as the ingest writes them (4 files)
# took 0.95 CPU-s and 66.8 MB, against 0.71 CPU-s and 61.5 MB now (measured). Catalog-sized columns still
# fit a dictionary: 30,000 provider codes or 19,000 drug codes.
DICT_SIZE = "write.parquet.dict-size-bytes"
# Set again on a table whenever it differs: commits are only correct with it.
_ENFORCED = {NUM_RETRIES: "0"}
# Set on a table that lacks it (made before Sanyi set it): an operator may tune it.
_DEFAULTED = {DICT_SIZE: str(512 << 10)}
# What Sanyi sets on every table it makes.
TABLE_PROPERTIES = {"write.parquet.compression-codec": "zstd", "format-version": "2", **_ENFORCED, **_DEFAULTED}

QUARANTINE = "sanyi.quarantine"
RESULTS = "indicators.results"
FINDINGS = "indicators.findings"

QUARANTINE_SCHEMA = pa.schema(
    [
        ("agency", pa.string()),
        ("dataset", pa.string()),
        ("source_file", pa.string()),
        ("source_sha256", pa.string()),
        ("business_date", pa.date32()),
        ("line_no", pa.int64()),
        ("record", pa.string()),  # JSON, resident ids pseudonymised or masked
        ("errors", pa.string()),  # JSON list of {path, rule, message}
        ("quarantined_at", pa.timestamp("us", tz="UTC")),
    ]
)


def catalog_properties(settings: Settings) -> dict[str, str]:
    """Properties for pyiceberg's SqlCatalog: catalog DB, warehouse location and its S3 FileIO.

    Credentials are deliberately not passed: pyarrow's S3 filesystem finds them through the AWS
    default chain (environment, shared config, instance or pod role), exactly like boto3 does for
    the buckets, so temporary credentials with a session token keep working.
    """
    uri = settings.catalog_uri
    if uri.startswith("sqlite") and "timeout=" not in uri:
        # pysqlite waits 5 s for a lock by default; workers committing at once (and the ledger,
        # which waits 60 s in the same file) can hold it longer than that.
        uri += ("&" if "?" in uri else "?") + "timeout=60"
    props = {"uri": uri, "warehouse": _warehouse_location(settings.warehouse_url)}
    if not settings.catalog_uri.startswith("sqlite"):
        # A pooled server connection can die (restart, failover, idle timeout): test it before use.
        props["pool_pre_ping"] = "true"
    if settings.warehouse_url.startswith("s3://"):
        if settings.s3_endpoint_url:
            props["s3.endpoint"] = settings.s3_endpoint_url
        props["s3.region"] = settings.s3_region or "us-east-1"
        props["s3.retry-strategy-impl"] = "sanyi.storage.ArrowS3Retry"
    return props


def _warehouse_location(url: str) -> str:
    if "://" in url:
        return url
    path = Path(url).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"file://{path}"


def write_data_files(table: Table, data: pa.Table, *, write_uuid: uuid.UUID,
                     counter: Iterator[int], parts: int = 1) -> list[Any]:
    """Parquet data files of ``data`` for ``table``, written but not committed (pyiceberg DataFile objects).

    pyiceberg's ``_dataframe_to_data_files``, except when every row falls in one partition (a drop file
    usually covers one month): then the rows are written as they are, where pyiceberg would filter the
    table by partition value and copy every column first (a third of the write's time); and in ``parts``
    files of as many rows each (more when one would pass the table's target file size), written side by
    side.
    """
    from pyiceberg.io.pyarrow import _dataframe_to_data_files, bin_pack_arrow_table, pyarrow_to_schema, write_file
    from pyiceberg.table import DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE, TableProperties, WriteTask
    from pyiceberg.utils.config import Config
    from pyiceberg.utils.properties import property_as_int

    meta = table.metadata
    key = _single_partition(table, data)
    if key is None:
        return list(_dataframe_to_data_files(
            table_metadata=meta, df=data, io=table.io, write_uuid=write_uuid, counter=counter
        ))
    target = property_as_int(
        meta.properties,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
    )
    task_schema = pyarrow_to_schema(
        data.schema,
        name_mapping=meta.schema().name_mapping,
        downcast_ns_timestamp_to_us=Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE) or False,
        format_version=meta.format_version,
    )
    step = max(-(-data.num_rows // parts), 1)
    tasks = (
        WriteTask(write_uuid=write_uuid, task_id=next(counter), record_batches=batches, partition_key=key,
                  schema=task_schema)
        for start in range(0, data.num_rows, step)
        for batches in bin_pack_arrow_table(data.slice(start, step), target)
    )
    return list(write_file(io=table.io, table_metadata=meta, tasks=tasks))


def _single_partition(table: Table, data: pa.Table) -> Any:
    """The pyiceberg ``PartitionKey`` shared by every row of ``data``; None when the table is unpartitioned,
    the rows span several partitions, or there are none."""
    from pyiceberg.partitioning import PartitionFieldValue, PartitionKey

    spec, schema = table.metadata.spec(), table.metadata.schema()
    if not spec.fields or data.num_rows == 0:
        return None
    values = []
    for field in spec.fields:
        source = schema.find_field(field.source_id)
        column = data.column(schema.find_column_name(field.source_id))
        distinct = pc.unique(field.transform.pyarrow_transform(source.field_type)(column))
        if len(distinct) != 1:
            return None
        values.append(PartitionFieldValue(field=field, value=distinct[0].as_py()))
    return PartitionKey(field_values=values, partition_spec=spec, schema=schema)


class Warehouse:
    """The Sanyi warehouse: table creation, idempotent per-file commits, scans and SQL."""

    def __init__(self, *, settings: Settings) -> None:
        self.settings = settings
        for attempt in range(3):
            try:
                self.catalog = SqlCatalog("sanyi", **catalog_properties(settings))
                break
            except (OperationalError, ProgrammingError, IntegrityError):
                # On a fresh database, workers starting together race to create the catalog's own
                # tables ("table iceberg_tables already exists": OperationalError from SQLite,
                # ProgrammingError from PostgreSQL): the loser finds them made.
                if attempt == 2:
                    raise
                time.sleep(0.1 * (1 + random.random()))

    # ----------------------------------------------------------------- tables
    def table(self, name: str, schema: pa.Schema | None = None, partition: str | None = None) -> Table:
        """Load ``name`` ("namespace.table"), creating it (and its namespace) when a schema is given."""
        try:
            table = self.catalog.load_table(name)
        except NoSuchTableError:
            if schema is None:
                raise
            # A concurrent writer may create the namespace between pyiceberg's existence check and its insert:
            # the IntegrityError then says it exists, which is what this wanted.
            with contextlib.suppress(IntegrityError):
                self.catalog.create_namespace_if_not_exists(name.split(".")[0])
            table = self.catalog.create_table_if_not_exists(name, schema=schema, properties=TABLE_PROPERTIES)
        # The spec is a second commit after the table's creation, so a table loaded here may lack it for
        # a moment (another worker just made it): it is added, or found added, before anything is written
        # (files written unpartitioned and committed once the spec exists broke pyiceberg's manifest writer).
        if partition and not table.spec().fields:
            # Added here, or by another writer first (CommitFailedException): the reload below has it either way.
            with contextlib.suppress(CommitFailedException), table.update_spec() as spec:
                spec.add_field(partition, MonthTransform(), f"{partition}_month")
            table = self.catalog.load_table(name)
        return self._with_table_properties(table)

    def dataset_table(self, ds: Dataset) -> Table:
        return self.table(ds.table_name, ds.arrow_schema(), ds.partition)

    def ensure_all(self) -> None:
        """Create every contract table plus quarantine and indicator tables (idempotent)."""
        for ds in load_datasets().values():
            self.dataset_table(ds)
        self.table(QUARANTINE, QUARANTINE_SCHEMA)
        self.table(RESULTS, RESULTS_SCHEMA)
        self.table(FINDINGS, FINDINGS_SCHEMA)

    def table_names(self) -> list[str]:
        names = []
        for ns in self.catalog.list_namespaces():
            for ident in self.catalog.list_tables(ns):
                names.append(".".join(ident))
        return sorted(names)

    # ---------------------------------------------------------------- commits
    @staticmethod
    def find_commit(table: Table, *, sha256: str, ledger_id: int) -> tuple[int, dict[str, Any]] | None:
        """The snapshot (id, counts) a given ledger file already committed to ``table``, if any.

        An overwrite commits a delete snapshot then an append snapshot, both with the file's
        properties: the last one is the snapshot that holds the file's rows.
        """
        found = None
        for snap in table.snapshots():
            props = snap.summary.additional_properties if snap.summary else {}
            if props.get(PROP_SHA) == sha256 and props.get(PROP_LEDGER) == str(ledger_id):
                found = snap.snapshot_id, json.loads(props.get(PROP_COUNTS, "{}"))
        return found

    def commit(
        self,
        name: str,
        build: Callable[[Table], tuple[pa.Table, str]],
        *,
        properties: dict[str, str],
        attempts: int = 8,
    ) -> int | None:
        """Commit what ``build(table)`` returns, retrying on a conflicting concurrent commit.

        ``build`` gets a freshly loaded table and returns ``(arrow_table, mode)`` where mode is
        ``append`` or ``replace`` (overwrite the whole table), or ``(data_files, "files")`` to add data
        files already written (a streamed load) in one snapshot — it is called again after a conflict
        so that what it derives from the table (duplicates, upsert merges) is recomputed.
        pyiceberg's own retry is switched off on the table for that reason (see ``NUM_RETRIES``), so
        a conflict surfaces here as ``CommitFailedException`` (or ``ValidationException``). Returns
        the new snapshot id, or ``None`` when there was nothing to write.
        """
        for attempt in range(attempts):
            table = self._with_table_properties(self.catalog.load_table(name))
            data, mode = build(table)
            if data is None:
                return None
            try:
                if mode == "append":  # a pa.Table, or a RecordBatchReader for an unpartitioned table
                    if isinstance(data, pa.Table) and data.num_rows == 0:
                        return None
                    table.append(data, snapshot_properties=properties)
                elif mode == "files":
                    if not data:
                        return None
                    with table.transaction() as tx:
                        with tx.update_snapshot(snapshot_properties=properties).fast_append() as add:
                            for data_file in data:
                                add.append_data_file(data_file)
                elif mode == "replace":
                    table.overwrite(data, overwrite_filter=AlwaysTrue(), snapshot_properties=properties)
                else:
                    raise ValueError(mode)
            except (CommitFailedException, ValidationException):
                if attempt == attempts - 1:
                    raise
                delay = min(5.0, 0.05 * 2**attempt) * (1 + random.random())
                log.info("commit conflict on %s, retrying in %.2fs", name, delay)
                time.sleep(delay)
                continue
            # The committed table object holds the metadata this commit produced; reloading could
            # return a later snapshot made by another writer in the meantime.
            return table.current_snapshot().snapshot_id
        raise AssertionError("unreachable")

    def _with_table_properties(self, table: Table) -> Table:
        """``table`` with pyiceberg's own commit retry off, and the dictionary cap if it has none (a table
        created before Sanyi set them at creation gets them now)."""
        have = table.metadata.properties
        missing = {k: v for k, v in _ENFORCED.items() if have.get(k) != v}
        missing.update({k: v for k, v in _DEFAULTED.items() if k not in have})
        if not missing:
            return table
        try:
            with table.transaction() as tx:
                tx.set_properties(missing)
        except CommitFailedException:
            pass  # another writer changed the table first: the caller's reload sees who won
        return self.catalog.load_table(table.name())

    def replace_where(self, name: str, column: str, value: str, data: pa.Table, *, properties: dict) -> int:
        """Atomically replace the rows where ``column == value`` by ``data`` (one commit)."""
        for attempt in range(8):
            table = self.catalog.load_table(name)
            try:
                table.overwrite(data, overwrite_filter=EqualTo(column, value), snapshot_properties=properties)
            except (CommitFailedException, ValidationException):
                time.sleep(min(5.0, 0.05 * 2**attempt) * (1 + random.random()))
                continue
            return table.current_snapshot().snapshot_id  # this commit's, not a later writer's
        raise CommitFailedException(f"could not replace {column}={value} in {name}")

    # ------------------------------------------------------------------ reads
    def scan(self, name: str, columns: Iterable[str] | None = None, row_filter: Any = None) -> pa.Table:
        table = self.catalog.load_table(name)
        kwargs: dict[str, Any] = {}
        if columns is not None:
            kwargs["selected_fields"] = tuple(columns)
        if row_filter is not None:
            kwargs["row_filter"] = row_filter
        return table.scan(**kwargs).to_arrow()

    def snapshot_ids(self) -> dict[str, int | None]:
        out = {}
        for name in self.table_names():
            snap = self.catalog.load_table(name).current_snapshot()
            out[name] = snap.snapshot_id if snap else None
        return out

    def duckdb(
        self,
        *,
        tables: Iterable[str] | None = None,
        snapshots: dict[str, int] | None = None,
        extra: dict[str, pa.Table] | None = None,
    ) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection where every warehouse table is a view under its qualified name.

        ``snapshots`` pins tables to given snapshot ids (time travel for supervisors).
        ``extra`` registers further Arrow tables, e.g. ``{"sanyi.submissions": …}``.
        """
        conn = duckdb.connect()
        wanted = list(tables) if tables is not None else self.table_names()
        for name in wanted:
            table = self.catalog.load_table(name)
            snap = (snapshots or {}).get(name)
            arrow = table.scan(snapshot_id=snap).to_arrow() if snap else table.scan().to_arrow()
            register(conn, name, arrow)
        for name, arrow in (extra or {}).items():
            register(conn, name, arrow)
        return conn


def register(conn: duckdb.DuckDBPyConnection, name: str, arrow: pa.Table) -> None:
    """Expose an Arrow table in DuckDB as the qualified view ``name`` ("schema.table")."""
    schema, _, table = name.rpartition(".")
    hidden = "__arrow_" + name.replace(".", "__")
    conn.register(hidden, arrow)
    if schema:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'CREATE OR REPLACE VIEW "{schema}"."{table}" AS SELECT * FROM "{hidden}"')
    else:
        conn.execute(f'CREATE OR REPLACE VIEW "{table}" AS SELECT * FROM "{hidden}"')


def key_filter_mask(existing: pa.Table, incoming: pa.Table, key: tuple[str, ...]) -> pa.Array:
    """Boolean mask over ``incoming``: True where its key is not in ``existing``.

    Keys are compared on their text form so that timestamps compare as instants (they are UTC).
    """
    if existing.num_rows == 0:
        return pa.array([True] * incoming.num_rows)
    existing_keys = _key_strings(existing, key)
    incoming_keys = _key_strings(incoming, key)
    return pc.invert(pc.is_in(incoming_keys, value_set=existing_keys))


def _key_strings(table: pa.Table, key: tuple[str, ...]) -> pa.Array:
    parts = [pc.cast(table.column(k), pa.string()) for k in key]
    if len(parts) == 1:
        return parts[0].combine_chunks() if hasattr(parts[0], "combine_chunks") else parts[0]
    return pc.binary_join_element_wise(*parts, "\x1f")
