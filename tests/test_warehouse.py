"""sanyi.warehouse: write_data_files (the same data files as pyiceberg's own writer, without its copy), and the
Parquet settings tables are made with."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.io.pyarrow import _dataframe_to_data_files, _get_parquet_writer_kwargs

from sanyi.warehouse import DICT_SIZE, NUM_RETRIES, Warehouse, write_data_files

SCHEMA = pa.schema([("id", pa.int64()), ("at", pa.timestamp("us", tz="UTC")), ("note", pa.string())])


def _rows(months: list[int]) -> pa.Table:
    n = 3000
    return pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "at": pa.array([datetime(2024, months[i % len(months)], 1 + i % 28, 8, tzinfo=UTC) for i in range(n)],
                           SCHEMA.field("at").type),
            "note": pa.array([f"row {i}" for i in range(n)]),
        },
        schema=SCHEMA,
    )


def _write(table, data, fn):
    files = fn(table, data)
    with table.transaction() as tx, tx.update_snapshot().fast_append() as add:
        for f in files:
            add.append_data_file(f)
    return files


def _ours(table, data):
    return write_data_files(table, data, write_uuid=uuid.uuid4(), counter=itertools.count())


def _pyiceberg(table, data):
    return list(_dataframe_to_data_files(table_metadata=table.metadata, df=data, io=table.io,
                                         write_uuid=uuid.uuid4(), counter=itertools.count()))


@pytest.mark.parametrize("months", [[10], [9, 10, 11]], ids=["one-month", "three-months"])
def test_data_files_hold_the_rows_with_the_partition_pyiceberg_gives(settings, months):
    wh = Warehouse(settings=settings)
    mine = wh.table("t.mine", SCHEMA, "at")
    theirs = wh.table("t.theirs", SCHEMA, "at")
    data = pa.concat_tables([_rows(months).slice(0, 1000), _rows(months).slice(1000)])  # several chunks
    ours = _write(mine, data, _ours)
    ref = _write(theirs, data, _pyiceberg)
    assert sorted(str(f.partition) for f in ours) == sorted(str(f.partition) for f in ref)
    assert len(ours) == len(months)
    assert sum(f.record_count for f in ours) == data.num_rows
    got = wh.table("t.mine").scan().to_arrow().sort_by("id")
    assert got.equals(wh.table("t.theirs").scan().to_arrow().sort_by("id"))
    assert got.column("id").to_pylist() == list(range(3000))
    # Partition pruning works on what we wrote: a filter on one month reads that month's rows only.
    october = mine.refresh().scan(row_filter="at >= '2024-10-01T00:00:00+00:00' and at < '2024-11-01T00:00:00+00:00'")
    assert october.to_arrow().num_rows == sum(1 for i in range(3000) if months[i % len(months)] == 10)


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_rows_can_be_written_as_several_files_side_by_side(settings, parts):
    # The load's last rows: several files, so that the cores share the write nothing else waits on.
    wh = Warehouse(settings=settings)
    table = wh.table("t.parts", SCHEMA, "at")
    data = pa.concat_tables([_rows([10]).slice(0, 1000), _rows([10]).slice(1000)])
    files = _write(table, data, lambda t, d: write_data_files(
        t, d, write_uuid=uuid.uuid4(), counter=itertools.count(), parts=parts))
    each = -(-3000 // parts)
    assert [f.record_count for f in files] == [each] * (parts - 1) + [3000 - (parts - 1) * each]
    assert wh.table("t.parts").scan().to_arrow().sort_by("id").column("id").to_pylist() == list(range(3000))
    assert _write(table, data.slice(0, 0), lambda t, d: write_data_files(
        t, d, write_uuid=uuid.uuid4(), counter=itertools.count(), parts=parts)) == []


def test_unpartitioned_tables_and_empty_data_go_through_pyiceberg(settings):
    wh = Warehouse(settings=settings)
    table = wh.table("t.flat", SCHEMA)
    files = _write(table, _rows([10]), _ours)
    assert len(files) == 1 and files[0].record_count == 3000
    assert wh.table("t.flat").scan().to_arrow().num_rows == 3000


def test_a_column_of_distinct_values_gets_a_dictionary_of_512_kib_at_most(settings):
    # pyiceberg's default (2 MiB) dictionary-encoded such a column nearly whole before falling back to plain
    # pages: more CPU and larger files (warehouse.DICT_SIZE). 300,000 distinct random int64 would make a 2 MiB
    # dictionary page; zstd cannot shrink random bytes, so the page's size on disk shows the cap.
    wh = Warehouse(settings=settings)
    table = wh.table("t.distinct", pa.schema([("x", pa.int64())]))
    assert _get_parquet_writer_kwargs(table.metadata.properties)["dictionary_pagesize_limit"] == 512 << 10
    rng = random.Random(7)
    values = pa.array(list({rng.getrandbits(63) for _ in range(300_000)}), pa.int64())
    (data_file,) = _write(table, pa.table({"x": values}), _ours)
    chunk = pq.ParquetFile(data_file.file_path.removeprefix("file://")).metadata.row_group(0).column(0)
    assert chunk.dictionary_page_offset is not None
    dictionary_bytes = chunk.data_page_offset - chunk.dictionary_page_offset
    # The writer checks the cap after each batch of values it encodes (20,000: pyiceberg's page row limit).
    assert 256 << 10 < dictionary_bytes <= (512 << 10) + 20_000 * 8 + 1024, dictionary_bytes
    assert wh.table("t.distinct").scan().to_arrow().column("x").combine_chunks().equals(values)
    assert table.metadata.properties[DICT_SIZE] == str(512 << 10)


def test_a_dictionary_cap_an_operator_set_is_kept(settings):
    wh = Warehouse(settings=settings)
    wh.catalog.create_namespace("t")
    wh.catalog.create_table("t.tuned", schema=SCHEMA, properties={DICT_SIZE: str(1 << 20)})
    props = wh.table("t.tuned").metadata.properties
    assert props[DICT_SIZE] == str(1 << 20) and props[NUM_RETRIES] == "0"


def test_a_table_found_without_its_partition_spec_gets_it_before_anything_is_written(settings):
    # Another worker creates a table and adds its spec in a second commit: loaded in between, the table is
    # unpartitioned, and files written from it then were committed under the spec (pyiceberg's manifest
    # writer failed: tests/reliability/test_concurrency.py hit it about once in a dozen runs).
    wh = Warehouse(settings=settings)
    wh.catalog.create_namespace("t")
    wh.catalog.create_table("t.racing", schema=SCHEMA)  # as the other worker left it, for a moment
    table = wh.table("t.racing", SCHEMA, "at")
    assert [f.name for f in table.spec().fields] == ["at_month"]
    files = write_data_files(table, _rows([10, 11]), write_uuid=uuid.uuid4(), counter=itertools.count())
    assert sorted(str(f.partition) for f in files) == ["Record[657]", "Record[658]"]  # months since 1970
    assert wh.table("t.racing", SCHEMA, "at").spec() == table.spec()  # found, not added twice
