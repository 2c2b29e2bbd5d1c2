"""The bad-input corpus: every kind of broken (or odd but legal) drop, built in code.

Each :class:`Case` is one landing object with what its receipt must say: the status, a substring of the
whole-file reason, the rules that must appear in its errors file, and the record counts. Nothing here is
a stored binary: the bytes are generated (the 2 GB file is sparse, the 100 MB line is written in chunks),
so the corpus costs nothing in git.

:func:`drop_corpus` writes all of it into a landing bucket with distinct arrival times, in list order
(which is also the processing order within a business date, so "first submission, then its replay"
pairs come out right).
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from samples import division, ndjson, resident_id, settlement
from sanyi.config import Settings
from sanyi.storage import open_bucket

T0 = datetime(2024, 10, 2, 1, 0, tzinfo=UTC)
FIRST_DAY = date(2024, 8, 1)
DIV_HEADER = "division_code,name,level,parent_code"
FORMULAS = ("=cmd|' /C calc'!A0", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1")
HUGE_LINE_BYTES = 100 * 1024 * 1024
GZIP_BOMB_BYTES = 200 * 1024 * 1024
SPARSE_BYTES = 2 * 1024**3
# The corpus runs with this limit: over the 100 MB line file, under the gzip bomb's expansion.
MAX_FILE_BYTES = 160 * 1024 * 1024

Maker = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    """One landing object and what its receipt must say.

    ``key`` may hold ``{day}``: each case then gets a business date of its own, so that no two cases
    are byte-identical replays of each other by accident. ``data`` is the object's bytes (or a function
    building them); ``make`` instead writes the object file itself (sparse or very large objects).
    """

    name: str
    key: str
    status: str
    data: bytes | Callable[[], bytes] | None = None
    make: Maker | None = None
    reason: str | None = None
    rules: tuple[str, ...] = ()
    counts: tuple[int, int, int, int] | None = None  # read, loaded, rejected, duplicate_records
    error_lines: tuple[int, ...] | None = None
    never_read: bool = False  # the platform must refuse it without reading a byte

    def bytes(self) -> bytes:
        return self.data() if callable(self.data) else (self.data or b"")


_ids = itertools.count(1)


def s(**over) -> dict:
    """A valid settlement line with a settlement_id no other case uses (the dataset appends by key)."""
    return settlement(next(_ids), **over)


def line(record: dict) -> bytes:
    return ndjson([record])


def div_csv(*rows: str, header: str = DIV_HEADER, newline: str = "\n") -> str:
    return "".join(r + newline for r in (header, *rows))


def parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _invalid_utf8_parquet() -> bytes:
    offsets = pa.py_buffer(pa.array([0, 2], pa.int32()).buffers()[1])
    name = pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(b"\xff\xfe")])
    return parquet(
        pa.table({"division_code": ["330102"], "name": name, "level": ["county"], "parent_code": ["330100"]})
    )


def _huge_line(path: Path) -> None:
    """Good line, one 100 MB line (a settlement with a 100 MB unknown field), good line."""
    head = json.dumps(s(), default=float).encode()[:-1] + b', "note": "'
    chunk = b"x" * (1 << 20)
    with path.open("wb") as fh:
        fh.write(line(s()))
        fh.write(head)
        for _ in range(HUGE_LINE_BYTES // len(chunk)):
            fh.write(chunk)
        fh.write(b'"}\n')
        fh.write(line(s()))


def _gzip_bomb(path: Path) -> None:
    zeros = bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=1) as fh:
        for _ in range(GZIP_BOMB_BYTES // len(zeros)):
            fh.write(zeros)


def _sparse(path: Path) -> None:
    with path.open("wb") as fh:
        os.truncate(fh.fileno(), SPARSE_BYTES)


def _drug_catalog_row(code: str, published: str) -> dict:
    return {
        "catalog_version": "2024",
        "published_on": published,
        "effective_from": "2024-12-01",
        "drug_code": code,
        "generic_name": "二甲双胍",
        "catalog_class": "A",
        "negotiated": False,
        "negotiated_valid_to": None,
        "specialty": None,
    }


def _without(record: dict, *names: str) -> dict:
    return {k: v for k, v in record.items() if k not in names}


def _rec_text(record: dict) -> str:
    return ndjson([record]).decode().rstrip("\n")


SET = "insurance/settlements/{day}/"
DIV = "health/divisions/{day}/"
_GOOD_GZ = gzip.compress(ndjson([s(), s()]), mtime=0)


def good_div_csv(first: str) -> str:
    """Two valid divisions; ``first`` is a code of its own (divisions upsert by code, and a later case with
    the same codes would replace these rows)."""
    return div_csv(f"{first},上城区,county,330100", f"{int(first) + 1},西湖区,county,330100")


_GOOD_DIV_CSV = good_div_csv("330102")
_PRETTY = json.dumps(s(), default=float, indent=2).encode() + b"\n"
_RNG = random.Random(5)

CASES: list[Case] = [
    # ---------------------------------------------------------------- empty, compression, encodings
    Case("zero_byte_ndjson", SET + "zero.ndjson", "loaded", b"", counts=(0, 0, 0, 0)),
    Case("blank_lines_only", SET + "blank.ndjson", "loaded", b"\n  \n\t\r\n\n", counts=(0, 0, 0, 0)),
    Case("zero_byte_csv", DIV + "zero.csv", "loaded", b"", counts=(0, 0, 0, 0)),
    Case("header_only_csv", DIV + "header.csv", "loaded", (DIV_HEADER + "\n").encode(), counts=(0, 0, 0, 0)),
    Case("zero_byte_parquet", DIV + "zero.parquet", "rejected", b"", reason="not a readable Parquet"),
    Case("zero_byte_gzip", SET + "zero.ndjson.gz", "rejected", b"", reason="not gzip"),
    Case("gzip_ok", "insurance/settlements/2024-07-01/ok.ndjson.gz", "loaded", _GOOD_GZ, counts=(2, 2, 0, 0)),
    Case(
        "gzip_replay_under_other_name",
        "insurance/settlements/2024-07-01/ok-again.ndjson.gz",
        "duplicate",
        _GOOD_GZ,
        reason="identical bytes were already submitted as insurance/settlements/2024-07-01/ok.ndjson.gz",
        counts=(0, 0, 0, 0),
    ),
    Case("truncated_gzip", SET + "t.ndjson.gz", "rejected", _GOOD_GZ[:-12], reason="corrupt or truncated"),
    Case("not_gzip_despite_gz", SET + "plain.ndjson.gz", "rejected", line(s()), reason="content is not gzip"),
    Case(
        "gzip_inside_gzip",
        SET + "double.ndjson.gz",
        "rejected",
        gzip.compress(gzip.compress(line(s()), mtime=0), mtime=0),
        reason="not valid UTF-8",
    ),
    Case("gzip_bomb", SET + "bomb.ndjson.gz", "rejected", make=_gzip_bomb, reason="expands beyond the platform limit"),
    Case(
        "invalid_utf8",
        SET + "latin1.ndjson",
        "rejected",
        '{"name": "café"}\n'.encode("latin-1"),
        reason="not valid UTF-8 (first bad byte at offset 13)",
    ),
    Case(
        "utf16_with_bom",
        SET + "utf16.ndjson",
        "rejected",
        line(s()).decode().encode("utf-16"),
        reason="not valid UTF-8",
    ),
    Case("random_binary", SET + "noise.ndjson", "rejected", b"\xff" + _RNG.randbytes(4096), reason="not valid UTF-8"),
    Case("utf8_bom_ndjson", SET + "bom.ndjson", "loaded", b"\xef\xbb\xbf" + ndjson([s(), s()]), counts=(2, 2, 0, 0)),
    Case(
        "utf8_bom_csv",
        DIV + "bom.csv",
        "loaded",
        b"\xef\xbb\xbf" + good_div_csv("330501").encode(),
        counts=(2, 2, 0, 0),
    ),
    Case("crlf_ndjson", SET + "crlf.ndjson", "loaded", ndjson([s(), s()]).replace(b"\n", b"\r\n"), counts=(2, 2, 0, 0)),
    Case(
        "crlf_csv",
        DIV + "crlf.csv",
        "loaded",
        good_div_csv("330511").replace("\n", "\r\n").encode(),
        counts=(2, 2, 0, 0),
    ),
    Case(
        "gb18030_bytes_in_utf8_csv",
        "health/divisions/2024-07-02/legacy.csv",
        "rejected",
        good_div_csv("330521").encode("gb18030"),
        reason="must be named *.gb18030.csv",
    ),
    Case(
        # The same bytes renamed as the contract asks: a corrected submission, not a replay of the rejected one.
        "gb18030_named_csv_after_rejection",
        "health/divisions/2024-07-02/legacy.gb18030.csv",
        "loaded",
        good_div_csv("330521").encode("gb18030"),
        counts=(2, 2, 0, 0),
    ),
    Case(
        "nul_byte_after_record",
        SET + "nul.ndjson",
        "rejected",
        line(s()).rstrip(b"\n") + b"\x00\n",
        rules=("json_syntax",),
        counts=(1, 0, 1, 0),
    ),
    Case(
        "lone_surrogate_escape",
        DIV + "surrogate.ndjson",
        "loaded_with_rejections",
        b'{"division_code":"330102","name":"\\ud800","level":"county","parent_code":"330100"}\n'
        + b'{"division_code":"330106","name":"\\ud83d\\ude00 a valid pair","level":"county","parent_code":"330100"}\n',
        rules=("json_syntax",),
        counts=(2, 1, 1, 0),
        error_lines=(1,),
    ),
    # ------------------------------------------------------------------------- size and shape
    Case(
        "huge_single_line_100mb",
        SET + "huge.ndjson",
        "loaded_with_rejections",
        make=_huge_line,
        rules=("record_too_large",),
        counts=(3, 2, 1, 0),
        error_lines=(2,),
    ),
    Case(
        "huge_csv_line_of_commas",
        DIV + "commas.csv",
        "loaded_with_rejections",
        div_csv("," * (2 << 20), "330106,西湖区,county,330100").encode(),
        rules=("record_too_large",),
        counts=(2, 1, 1, 0),
        error_lines=(2,),
    ),
    Case(
        "csv_cell_over_field_limit",
        DIV + "bigcell.csv",
        "loaded_with_rejections",
        div_csv("330102," + "x" * 200_000 + ",county,330100", "330106,西湖区,county,330100").encode(),
        rules=("csv_syntax",),
        counts=(2, 1, 1, 0),
        error_lines=(2,),
    ),
    Case(
        "deeply_nested_json",
        SET + "nested.ndjson",
        "loaded_with_rejections",
        line(s()) + b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
        rules=("json_syntax",),
        counts=(2, 1, 1, 0),
        error_lines=(2,),
    ),
    Case(
        # 60 levels is within the limit: judged by the contract (an unknown field), not refused as too deep.
        "nested_60_levels_in_unknown_field",
        SET + "nested60.ndjson",
        "rejected",
        _rec_text(s()).encode()[:-1] + b', "x": ' + b"[" * 60 + b"]" * 60 + b"}\n",
        rules=("additionalProperties",),
        counts=(1, 0, 1, 0),
    ),
    Case(
        # Brackets inside a string are text: counting them as nesting would refuse a legal name.
        "brackets_inside_strings",
        DIV + "brackets.ndjson",
        "loaded",
        line(division("330601", name="[" * 50 + "{" * 40)),
        counts=(1, 1, 0, 0),
    ),
    Case(
        "unterminated_quotes_and_brackets",
        SET + "quotes.ndjson",
        "rejected",
        b"[" * 65 + b'"\\"' * 300_000 + b"\n",
        rules=("json_syntax",),
        counts=(1, 0, 1, 0),
    ),
    Case(
        "json_array_not_ndjson",
        SET + "array.ndjson",
        "rejected",
        json.dumps([s(), s()], default=float).encode() + b"\n",
        rules=("json_object",),
        counts=(1, 0, 1, 0),
    ),
    Case(
        "pretty_printed_json",
        SET + "pretty.ndjson",
        "rejected",
        _PRETTY,
        rules=("json_syntax",),
        counts=(_PRETTY.count(b"\n"), 0, _PRETTY.count(b"\n"), 0),
    ),
    Case(
        "json_scalars_per_line",
        SET + "scalars.ndjson",
        "rejected",
        b'null\n42\n"text"\ntrue\n',
        rules=("json_object",),
        counts=(4, 0, 4, 0),
    ),
    Case(
        "two_objects_on_one_line",
        SET + "two.ndjson",
        "rejected",
        line(s()).rstrip(b"\n") + b" " + line(s()),
        rules=("json_syntax",),
        counts=(1, 0, 1, 0),
    ),
    Case(
        "comments_and_trailing_commas",
        SET + "js.ndjson",
        "rejected",
        b'// a comment\n{"settlement_id": "S1234567",}\n',
        rules=("json_syntax",),
        counts=(2, 0, 2, 0),
    ),
    Case(
        "duplicate_keys_in_object",
        SET + "dupkey.ndjson",
        "rejected",
        line(s()).rstrip(b"}\n") + b', "quantity": 4}\n',
        rules=("duplicate_key",),
        counts=(1, 0, 1, 0),
    ),
    Case(
        "nan_and_infinity",
        SET + "nan.ndjson",
        "rejected",
        b"".join(
            _rec_text(s()).replace('"quantity": 3', f'"quantity": {c}').encode() + b"\n"
            for c in ("NaN", "Infinity", "-Infinity")
        ),
        rules=("json_syntax",),
        counts=(3, 0, 3, 0),
    ),
    Case(
        "integer_beyond_digit_limit",
        SET + "bigint.ndjson",
        "rejected",
        _rec_text(s()).replace('"line_no": 1', '"line_no": ' + "9" * 5000).encode() + b"\n",
        rules=("json_syntax",),
        counts=(1, 0, 1, 0),
    ),
    # ------------------------------------------------------------------------- record contents
    Case(
        "numbers_as_strings",
        SET + "strnum.ndjson",
        "rejected",
        _rec_text(s()).replace('"quantity": 3', '"quantity": "3"').encode() + b"\n",
        rules=("type",),
        counts=(1, 0, 1, 0),
    ),
    Case(
        "wrong_types",
        SET + "types.ndjson",
        "rejected",
        ndjson([s(line_no=True), s(trace_codes="81234567890123456789"), s(days_supply=30.5), s(settled_at=1727745120)]),
        rules=("type",),
        counts=(4, 0, 4, 0),
    ),
    Case(
        "null_in_non_nullable_field",
        SET + "null.ndjson",
        "rejected",
        line(s(provider_code=None)),
        rules=("type",),
        counts=(1, 0, 1, 0),
    ),
    Case(
        "missing_required_fields",
        SET + "missing.ndjson",
        "rejected",
        line(_without(s(), "drug_code", "settled_at")),
        rules=("required",),
        counts=(1, 0, 1, 0),
    ),
    Case(
        "extra_field",
        SET + "extra.ndjson",
        "rejected",
        line({**s(), "remark": "ok"}),
        rules=("additionalProperties",),
        counts=(1, 0, 1, 0),
    ),
    Case(
        "metadata_columns_spoofed",
        SET + "spoof.ndjson",
        "rejected",
        line({**s(), "_source_file": "health/divisions/2024-10-01/x.ndjson", "_business_date": "2020-01-01"}),
        rules=("additionalProperties",),
        counts=(1, 0, 1, 0),
    ),
    Case(
        "impossible_dates",
        SET + "dates.ndjson",
        "rejected",
        ndjson([s(settled_at="2025-02-30T09:00:00+08:00"), s(settled_at="2024-10-01T09:00:00")]),
        rules=("format",),
        counts=(2, 0, 2, 0),
    ),
    Case(
        "business_rule_amount",
        SET + "amount.ndjson",
        "loaded_with_rejections",
        ndjson([s(), s(amount=21.00), s(), s(eligible_amount=30.00), s()]),
        rules=("amount_equals_quantity_times_price", "eligible_not_above_amount"),
        counts=(5, 3, 2, 0),
        error_lines=(2, 4),
    ),
    Case(
        "same_key_twice_in_file",
        SET + "dupes.ndjson",
        "loaded",
        (lambda rec: ndjson([rec, {**rec, "fund_paid": 1.0}]))(s()),
        counts=(2, 1, 0, 1),
    ),
    Case(
        "file_rule_catalog_dates",
        "insurance/drug_catalog/{day}/catalog.ndjson",
        "rejected",
        ndjson(
            [
                _drug_catalog_row("XA10BAE033A001010100482", "2024-11-01"),
                _drug_catalog_row("XA10BAE033A001010100483", "2024-11-02"),
            ]
        ),
        reason="published_on",
        counts=(2, 0, 2, 0),
    ),
    # ---------------------------------------------------------------------------------- CSV
    Case(
        "csv_semicolon_delimiter",
        DIV + "semi.csv",
        "rejected",
        _GOOD_DIV_CSV.replace(",", ";").encode(),
        reason="the delimiter must be a comma",
    ),
    Case(
        "csv_tab_delimiter",
        DIV + "tab.csv",
        "rejected",
        _GOOD_DIV_CSV.replace(",", "\t").encode(),
        reason="the delimiter must be a comma",
    ),
    Case(
        "csv_ragged_rows",
        DIV + "ragged.csv",
        "loaded_with_rejections",
        div_csv("330102,上城区,county", "330106,西湖区,county,330100", "330108,滨江区,county,330100,extra").encode(),
        rules=("csv_shape",),
        counts=(3, 1, 2, 0),
        error_lines=(2, 4),
    ),
    Case(
        # Valid quoted newlines: records start on lines 2, 4, 5 and 7; only the one on line 5 is wrong.
        "csv_quoted_newlines",
        DIV + "multiline.csv",
        "loaded_with_rejections",
        div_csv(
            '330401,"上城\n区",county,330400',
            "330402,西湖区,county,330400",
            '330403,"a\r\nb",bogus,330400',
            "330404,拱墅区,county,330400",
        ).encode(),
        rules=("enum",),
        counts=(4, 3, 1, 0),
        error_lines=(5,),
    ),
    Case(
        "csv_unterminated_quote",
        DIV + "quote.csv",
        "rejected",
        div_csv('330102,"上城区,county,330100', "330106,西湖区,county,330100").encode(),
        rules=("csv_syntax",),
        counts=(1, 0, 1, 0),
        error_lines=(2,),
    ),
    Case(
        "csv_unknown_column",
        DIV + "unknown.csv",
        "rejected",
        div_csv("330102,上城区,county,330100,x", header=DIV_HEADER + ",remark").encode(),
        rules=("additionalProperties",),
        counts=(1, 0, 1, 0),
    ),
    Case(
        "csv_missing_column",
        DIV + "short.csv",
        "rejected",
        div_csv("330102,上城区,county", header="division_code,name,level").encode(),
        rules=("required",),
        counts=(1, 0, 1, 0),
    ),
    Case(
        "csv_duplicate_column",
        DIV + "twice.csv",
        "rejected",
        div_csv("330102,上城区,county,330100,上城区", header=DIV_HEADER + ",name").encode(),
        reason="names column 'name' twice",
    ),
    Case(
        "csv_array_column",
        SET + "arrays.csv",
        "rejected",
        b"settlement_id,trace_codes\nS20241001000001,[]\n",
        reason="arrays are not allowed in CSV",
    ),
    Case(
        "csv_bad_boolean_and_number",
        "insurance/dual_channel_pharmacies/{day}/p.csv",
        "rejected",
        b"pharmacy_code,name,division_code,designated_on,revoked_on,traceability_enabled\n"
        b"P33010200003,Pharmacy,330102,2024-01-01,,yes\n"
        b"P33010200004,Pharmacy,330102,2024-01-01,,TRUE\n",
        rules=("type",),
        counts=(2, 0, 2, 0),
    ),
    # ------------------------------------------------------------------------------ Parquet
    Case(
        "parquet_natural_types",
        DIV + "good.parquet",
        "loaded",
        parquet(pa.Table.from_pylist([division("330102"), division("330106", name="西湖区")])),
        counts=(2, 2, 0, 0),
    ),
    Case(
        "parquet_wrong_schema",
        DIV + "other.parquet",
        "rejected",
        parquet(pa.table({"foo": [1, 2], "bar": ["x", "y"]})),
        rules=("required", "additionalProperties"),
        counts=(2, 0, 2, 0),
    ),
    Case(
        "parquet_wrong_types",
        DIV + "types.parquet",
        "rejected",
        parquet(pa.table({"division_code": [330102], "name": [{"a": 1}], "level": [3], "parent_code": [None]})),
        rules=("type",),
        counts=(1, 0, 1, 0),
    ),
    Case(
        "parquet_not_parquet",
        DIV + "fake.parquet",
        "rejected",
        b"PAR1 this is not parquet PAR1",
        reason="not a readable Parquet file",
    ),
    Case(
        "parquet_truncated",
        DIV + "half.parquet",
        "rejected",
        (lambda b: b[: len(b) // 2])(parquet(pa.Table.from_pylist([division()]))),
        reason="not a readable Parquet file",
    ),
    Case(
        "parquet_text_not_utf8",
        DIV + "latin.parquet",
        "rejected",
        _invalid_utf8_parquet,
        reason="Parquet content could not be read",
    ),
    Case("parquet_without_columns", DIV + "empty.parquet", "loaded", parquet(pa.table({})), counts=(0, 0, 0, 0)),
    Case(
        "ndjson_named_parquet",
        DIV + "wrong-ext.parquet",
        "rejected",
        line(division()),
        reason="not a readable Parquet file",
    ),
    # ------------------------------------------------------------------------------- keys and paths
    Case("unknown_agency", "pharma/settlements/{day}/x.ndjson", "rejected", line(s()), reason="agency"),
    Case("unknown_dataset", "insurance/claims/{day}/x.ndjson", "rejected", line(s()), reason="claims"),
    Case(
        "dataset_under_wrong_agency",
        "health/settlements/{day}/x.ndjson",
        "rejected",
        line(s()),
        reason="belongs to agency insurance",
    ),
    Case(
        "date_folder_month_13",
        "insurance/settlements/2024-13-01/x.ndjson",
        "rejected",
        line(s()),
        reason="not a real YYYY-MM-DD date",
    ),
    Case(
        "date_folder_february_30",
        "insurance/settlements/2025-02-30/x.ndjson",
        "rejected",
        line(s()),
        reason="not a real YYYY-MM-DD date",
    ),
    Case(
        "date_folder_compact",
        "insurance/settlements/20241001/x.ndjson",
        "rejected",
        line(s()),
        reason="not a real YYYY-MM-DD date",
    ),
    Case(
        "date_folder_fullwidth_digits",
        "insurance/settlements/２０２４-１０-０１/x.ndjson",
        "rejected",
        line(s()),
        reason="not a real YYYY-MM-DD date",
    ),
    Case("missing_date_folder", "insurance/settlements/x.ndjson", "rejected", line(s()), reason="drop convention"),
    Case(
        "nested_too_deep", "insurance/settlements/{day}/sub/x.ndjson", "rejected", line(s()), reason="drop convention"
    ),
    Case("file_at_bucket_root", "stray.ndjson", "rejected", line(s()), reason="drop convention"),
    Case("unaccepted_extension", SET + "x.xlsx", "rejected", line(s()), reason="is not accepted"),
    Case("json_extension", SET + "x.json", "rejected", line(s()), reason="is not accepted"),
    Case("suffix_only_name", SET + ".ndjson", "rejected", line(s()), reason="is not accepted"),
    Case("upper_case_suffix", SET + "UPPER.NDJSON", "loaded", line(s()), counts=(1, 1, 0, 0)),
    Case("key_with_spaces", SET + "my file (1) .ndjson", "loaded", ndjson([s(), s()]), counts=(2, 2, 0, 0)),
    Case("key_with_unicode", SET + "结算 数据①—é.ndjson", "loaded", ndjson([s(), s()]), counts=(2, 2, 0, 0)),
    Case("unicode_agency_folder", "医保/settlements/{day}/x.ndjson", "rejected", line(s()), reason="agency"),
    Case(
        "resident_id_in_file_name",
        SET + f"{resident_id(7)}.ndjson",
        "rejected",
        line(s()),
        reason="contains a resident id",
    ),
    Case(
        "sparse_2gb_object",
        SET + "sparse.ndjson",
        "rejected",
        make=_sparse,
        reason="over the platform limit",
        never_read=True,
    ),
    # ------------------------------------------------------------------------- formula injection
    Case(
        "formula_injection_in_text",
        "health/divisions/2024-07-03/formulas.ndjson",
        "loaded",
        ndjson([division(f"3302{i:02d}", name=text) for i, text in enumerate(FORMULAS)]),
        counts=(len(FORMULAS), len(FORMULAS), 0, 0),
    ),
]


def case_key(index: int, case: Case) -> str:
    """The landing key of ``case``: its ``{day}`` is a business date no other case uses."""
    return case.key.replace("{day}", (FIRST_DAY + timedelta(days=index)).isoformat())


def keyed_cases(cases: list[Case] | None = None) -> list[tuple[str, Case]]:
    out = [(case_key(i, c), c) for i, c in enumerate(cases if cases is not None else CASES)]
    keys = [k for k, _ in out]
    assert len(set(keys)) == len(keys), "two corpus cases share a key"
    return out


def drop_corpus(settings: Settings, cases: list[Case] | None = None) -> dict[str, Case]:
    """Write every case into the landing bucket (arrival = case order); return the cases by key."""
    landing = open_bucket(settings.landing_url, settings=settings)
    out = {}
    for i, (key, case) in enumerate(keyed_cases(cases)):
        at = T0 + timedelta(seconds=i)
        if case.make is not None:
            # Written in place (local landing folder): these objects are too big to hold in memory.
            path = Path(settings.landing_url) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            case.make(path)
            os.utime(path, (at.timestamp(), at.timestamp()))
        else:
            landing.put(key, case.bytes(), last_modified=at)
        out[key] = case
    return out
