"""The contract files (schemas/) and sanyi.contracts: loading, Dataset, and the CSV / Parquet / warehouse
conversions. Expected contracts are written out here from contracts.md, independently of the schemas."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sanyi import contracts, validation
from sanyi.contracts import (
    ContractError,
    UnknownDataset,
    get_dataset,
    load_datasets,
    parse_json_record,
    parse_timestamp,
    record_from_csv,
    record_from_parquet,
    to_warehouse_row,
)
from test_privacy import synthetic_id

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
PID = synthetic_id(42)
DRUG = "XA10BAE033A001010100482"

# (agency, dataset): mode, key, {field: (kind, nullable)} — transcribed from contracts.md.
S, N = False, True
CONTRACTS: dict[tuple[str, str], tuple[str, tuple[str, ...], dict[str, tuple[str, bool]]]] = {
    ("health", "divisions"): ("upsert", ("division_code",), {
        "division_code": ("string", S), "name": ("string", S), "level": ("string", S),
        "parent_code": ("string", N)}),
    ("health", "institutions"): ("upsert", ("institution_code",), {
        "institution_code": ("string", S), "name": ("string", S), "division_code": ("string", S),
        "level": ("integer", S), "grade": ("string", S), "category": ("string", S), "specialty": ("string", N),
        "ownership": ("string", S), "valid_from": ("date", S), "valid_to": ("date", N)}),
    ("health", "formulary"): ("upsert", ("institution_code", "drug_code"), {
        "institution_code": ("string", S), "drug_code": ("string", S), "listed_on": ("date", S),
        "delisted_on": ("date", N)}),
    ("health", "committee_meetings"): ("append", ("institution_code", "meeting_on", "catalog_version"), {
        "institution_code": ("string", S), "meeting_on": ("date", S), "catalog_version": ("string", S)}),
    ("health", "chronic_registry"): ("upsert", ("patient_id", "disease"), {
        "patient_id": ("resident_id", S), "disease": ("string", S), "institution_code": ("string", S),
        "filed_on": ("date", S)}),
    ("insurance", "drug_catalog"): ("upsert", ("catalog_version", "drug_code"), {
        "catalog_version": ("string", S), "published_on": ("date", S), "effective_from": ("date", S),
        "drug_code": ("string", S), "generic_name": ("string", S), "catalog_class": ("string", S),
        "negotiated": ("boolean", S), "negotiated_valid_to": ("date", N), "specialty": ("string", N)}),
    ("insurance", "dual_channel_pharmacies"): ("upsert", ("pharmacy_code",), {
        "pharmacy_code": ("string", S), "name": ("string", S), "division_code": ("string", S),
        "designated_on": ("date", S), "revoked_on": ("date", N), "traceability_enabled": ("boolean", S)}),
    ("insurance", "settlements"): ("append", ("settlement_id", "line_no"), {
        "settlement_id": ("string", S), "line_no": ("integer", S), "patient_id": ("resident_id", S),
        "insurance_type": ("string", S), "provider_code": ("string", S), "visit_type": ("string", S),
        "diagnosis_code": ("string", S), "drug_code": ("string", S), "quantity": ("number", S),
        "unit_price": ("price", S), "amount": ("money", S), "eligible_amount": ("money", S),
        "fund_paid": ("money", S), "days_supply": ("integer", S), "settled_at": ("timestamp", S),
        "trace_codes": ("string_list", S)}),
    ("insurance", "vbp_groups"): ("upsert", ("batch_id", "product_group"), {
        "batch_id": ("string", S), "product_group": ("string", S), "exec_start": ("date", S),
        "cycle_months": ("integer", S), "price_cap": ("price", N), "exemption": ("string", N)}),
    ("insurance", "vbp_products"): ("upsert", ("batch_id", "drug_code"), {
        "batch_id": ("string", S), "product_group": ("string", S), "drug_code": ("string", S),
        "selected": ("boolean", S), "winning_price": ("price", N)}),
    ("insurance", "vbp_agreements"): ("upsert", ("batch_id", "product_group", "institution_code"), {
        "batch_id": ("string", S), "product_group": ("string", S), "institution_code": ("string", S),
        "agreed_volume": ("integer", S)}),
    ("insurance", "procurement_orders"): ("append", ("order_id",), {
        "order_id": ("string", S), "institution_code": ("string", S), "drug_code": ("string", S),
        "quantity": ("integer", S), "unit_price": ("price", S), "ordered_on": ("date", S),
        "delivered_on": ("date", N), "supplier_code": ("string", S)}),
    ("traceability", "trace_events"): ("append", ("trace_code", "event", "party_code", "event_at"), {
        "trace_code": ("string", S), "drug_code": ("string", S), "event": ("string", S),
        "party_code": ("string", S), "event_at": ("timestamp", S), "batch_no": ("string", S),
        "expires_on": ("date", S)}),
}  # fmt: skip

PARTITIONS = {("insurance", "settlements"): "settled_on", ("traceability", "trace_events"): "event_on",
              ("insurance", "procurement_orders"): "ordered_on"}  # fmt: skip

# One valid record per dataset (the JSON model: decimals as Decimal, as parse_json_record gives them).
VALID: dict[tuple[str, str], dict] = {
    ("health", "divisions"): {"division_code": "330102", "name": "上城区", "level": "county",
                              "parent_code": "330100"},
    ("health", "institutions"): {
        "institution_code": "H33010200017", "name": "杭州市第一人民医院", "division_code": "330102", "level": 3,
        "grade": "A", "category": "general", "specialty": None, "ownership": "public",
        "valid_from": "2000-01-01", "valid_to": None},
    ("health", "formulary"): {"institution_code": "H33010200017", "drug_code": DRUG, "listed_on": "2024-01-15",
                              "delisted_on": None},
    ("health", "committee_meetings"): {"institution_code": "H33010200017", "meeting_on": "2024-03-01",
                                       "catalog_version": "2024"},
    ("health", "chronic_registry"): {"patient_id": PID, "disease": "hypertension",
                                     "institution_code": "H33010200017", "filed_on": "2024-02-01"},
    ("insurance", "drug_catalog"): {
        "catalog_version": "2024", "published_on": "2024-11-28", "effective_from": "2025-01-01",
        "drug_code": DRUG, "generic_name": "二甲双胍", "catalog_class": "A", "negotiated": True,
        "negotiated_valid_to": "2026-12-31", "specialty": None},
    ("insurance", "dual_channel_pharmacies"): {
        "pharmacy_code": "P33010200003", "name": "国大药房（湖滨店）", "division_code": "330102",
        "designated_on": "2024-01-01", "revoked_on": None, "traceability_enabled": True},
    ("insurance", "settlements"): {
        "settlement_id": "S2024100300001", "line_no": 1, "patient_id": PID, "insurance_type": "resident",
        "provider_code": "H33010200017", "visit_type": "outpatient", "diagnosis_code": "E11.9",
        "drug_code": DRUG, "quantity": 3, "unit_price": Decimal("6.6650"), "amount": Decimal("20.00"),
        "eligible_amount": Decimal("19.99"), "fund_paid": Decimal("12.00"), "days_supply": 30,
        "settled_at": "2024-10-03T09:12:00+08:00", "trace_codes": ["81234567890123456789"]},
    ("insurance", "vbp_groups"): {
        "batch_id": "VBP-2024-09", "product_group": "氨氯地平 口服常释剂型", "exec_start": "2024-10-01",
        "cycle_months": 24, "price_cap": Decimal("0.5000"), "exemption": None},
    ("insurance", "vbp_products"): {
        "batch_id": "VBP-2024-09", "product_group": "氨氯地平 口服常释剂型", "drug_code": DRUG,
        "selected": True, "winning_price": Decimal("0.1234")},
    ("insurance", "vbp_agreements"): {
        "batch_id": "VBP-2024-09", "product_group": "氨氯地平 口服常释剂型", "institution_code": "H33010200017",
        "agreed_volume": 120000},
    ("insurance", "procurement_orders"): {
        "order_id": "PO2024100100001", "institution_code": "H33010200017", "drug_code": DRUG, "quantity": 1000,
        "unit_price": Decimal("0.1234"), "ordered_on": "2024-10-01", "delivered_on": "2024-10-03",
        "supplier_code": "E91330100004"},
    ("traceability", "trace_events"): {
        "trace_code": "81234567890123456789", "drug_code": DRUG, "event": "sold", "party_code": "P33010200003",
        "event_at": "2024-10-03T09:30:00+08:00", "batch_no": "B240901", "expires_on": "2026-09-01"},
}  # fmt: skip


def valid(agency: str, dataset: str, **over: object) -> dict:
    rec = copy.deepcopy(VALID[(agency, dataset)])
    rec.update(over)
    return rec


# ------------------------------------------------------------------------------------------ schema files
def schema_files() -> list[Path]:
    return sorted(SCHEMAS.glob("*/*.json"))


def test_one_schema_file_per_dataset_and_nothing_else() -> None:
    found = {(p.parent.name, p.name) for p in schema_files()}
    assert found == {(a, f"{d}.v1.json") for a, d in CONTRACTS}
    assert set(load_datasets()) == set(CONTRACTS)


@pytest.mark.parametrize("path", schema_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_schema_is_valid_draft_2020_12_and_self_describing(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    # The same check on the Decimal-parsed form the validator actually uses.
    jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal))
    agency, name = path.parent.name, path.name.removesuffix(".v1.json")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://sanyi.example/schemas/{agency}/{name}.v1.json"
    assert schema["title"] and schema["description"]
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == list(schema["properties"])
    for prop in schema["properties"].values():
        assert prop["title"] and prop["description"]
    meta = schema["x-sanyi"]
    mode, key, fields = CONTRACTS[(agency, name)]
    assert (meta["agency"], meta["dataset"], meta["version"]) == (agency, name, "v1")
    assert meta["mode"] == mode and tuple(meta["key"]) == key
    assert meta["partition"] == PARTITIONS.get((agency, name))
    assert meta["kinds"] == {f: kind for f, (kind, _) in fields.items()}


def all_patterns(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for v in node.values() for p in all_patterns(v)]
    if isinstance(node, list):
        return [p for v in node for p in all_patterns(v)]
    return []


def test_patterns_are_anchored_at_both_ends_without_dollar() -> None:
    # Python's re.search lets `$` match before a trailing newline; every pattern ends with (?![\s\S]).
    for path in schema_files():
        for pattern in all_patterns(json.loads(path.read_text(encoding="utf-8"))):
            assert pattern.startswith("^") and pattern.endswith(r"(?![\s\S])"), (path, pattern)
            assert "$" not in pattern and r"\d" not in pattern, (path, pattern)  # \d matches non-ASCII digits
            re.compile(pattern)


def test_patterns_behave_the_same_in_jsonschema_rs() -> None:
    # The future fast path (jsonschema-rs, ECMA-262 style regexes) must read the patterns the same way.
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    schema = json.loads((SCHEMAS / "insurance" / "settlements.v1.json").read_text(encoding="utf-8"))
    prop = jsonschema_rs.Draft202012Validator(schema["properties"]["provider_code"])
    assert prop.is_valid("H33010200017") and not prop.is_valid("H33010200017\n")


def test_business_rules_are_declared_and_implemented() -> None:
    declared = json.loads((SCHEMAS / "business_rules.json").read_text(encoding="utf-8"))
    assert set(declared["record_rules"]) == set(validation.RECORD_RULES)
    assert set(declared["file_rules"]) == set(validation.FILE_RULES)
    used = {r for ds in load_datasets().values() for r in ds.business_rules}
    assert used == set(declared["record_rules"])
    for ds in load_datasets().values():
        assert "resident_id_in_wrong_field" in ds.business_rules
        assert ("resident_id_check_character" in ds.business_rules) == ("patient_id" in ds.fields)
    assert get_dataset("insurance", "drug_catalog").file_rules == ("catalog_version_dates_consistent",)


# -------------------------------------------------------------------------------------------- Dataset
@pytest.mark.parametrize("pair", sorted(CONTRACTS), ids="/".join)
def test_dataset_matches_the_contract(pair: tuple[str, str]) -> None:
    ds = get_dataset(*pair)
    mode, key, fields = CONTRACTS[pair]
    assert (ds.agency, ds.name, ds.version, ds.mode, ds.key) == (*pair, "v1", mode, key)
    assert ds.fields == tuple(fields)
    assert ds.kinds == {f: k for f, (k, _) in fields.items()}
    assert ds.nullable == {f for f, (_, n) in fields.items() if n}
    assert ds.table_name == f"{pair[0]}.{pair[1]}"
    assert ds.partition == PARTITIONS.get(pair)
    assert list(ds.schema["properties"]) == list(ds.fields)


def test_decimals_in_schema_are_parsed_exactly() -> None:
    ds = get_dataset("insurance", "settlements")
    assert ds.schema["properties"]["amount"]["multipleOf"] == Decimal("0.01")
    assert isinstance(ds.schema["properties"]["unit_price"]["multipleOf"], Decimal)


def test_csv_fields_leave_out_arrays() -> None:
    ds = get_dataset("insurance", "settlements")
    assert "trace_codes" not in ds.csv_fields
    assert ds.csv_fields == ds.fields[:-1]
    assert get_dataset("health", "formulary").csv_fields == get_dataset("health", "formulary").fields


ARROW = {
    "string": pa.string(), "resident_id": pa.string(), "date": pa.date32(), "timestamp": pa.timestamp("us", "UTC"),
    "integer": pa.int64(), "money": pa.decimal128(18, 2), "price": pa.decimal128(18, 4), "number": pa.float64(),
    "boolean": pa.bool_(), "string_list": pa.list_(pa.string()),
}  # fmt: skip
META = ["_business_date", "_arrived_at", "_source_file", "_source_sha256", "_line_no"]


@pytest.mark.parametrize("pair", sorted(CONTRACTS), ids="/".join)
def test_arrow_schema_has_the_agreed_warehouse_types(pair: tuple[str, str]) -> None:
    ds = get_dataset(*pair)
    schema = ds.arrow_schema()
    for f, (kind, nullable) in CONTRACTS[pair][2].items():
        assert schema.field(f).type == ARROW[kind], f
        assert schema.field(f).nullable == nullable, f
    assert schema.names[-5:] == META
    assert [schema.field(m).type for m in META] == [
        pa.date32(), pa.timestamp("us", "UTC"), pa.string(), pa.string(), pa.int64()
    ]
    if ds.partition:
        assert ds.partition in schema.names
    assert ds.arrow_schema() == schema  # stable


def test_derived_dates_follow_their_timestamps() -> None:
    names = get_dataset("insurance", "settlements").arrow_schema().names
    assert names[names.index("settled_at") + 1] == "settled_on"
    trace = get_dataset("traceability", "trace_events").arrow_schema()
    assert trace.names[trace.names.index("event_at") + 1] == "event_on"
    assert trace.field("event_on").type == pa.date32()


# ------------------------------------------------------------------------------------------ get_dataset
def test_get_dataset_explains_what_is_wrong() -> None:
    with pytest.raises(UnknownDataset, match="unknown agency 'pharma'"):
        get_dataset("pharma", "settlements")
    with pytest.raises(UnknownDataset, match="unknown dataset 'bills' for agency insurance"):
        get_dataset("insurance", "bills")
    with pytest.raises(UnknownDataset, match="dataset settlements belongs to agency insurance, not health"):
        get_dataset("health", "settlements")
    with pytest.raises(UnknownDataset, match="no schema version 'v9'"):
        get_dataset("health", "divisions", "v9")
    assert get_dataset("health", "divisions", "v1") is get_dataset("health", "divisions")
    assert issubclass(UnknownDataset, ContractError)


def test_unknown_dataset_message_masks_a_resident_id() -> None:
    with pytest.raises(UnknownDataset) as info:
        get_dataset("health", PID)
    assert PID not in str(info.value)


def test_load_datasets_reads_another_folder_and_checks_it(tmp_path: Path) -> None:
    (tmp_path / "health").mkdir()
    (tmp_path / "business_rules.json").write_text(json.dumps({"record_rules": {}, "file_rules": {}}))
    src = json.loads((SCHEMAS / "health" / "committee_meetings.v1.json").read_text(encoding="utf-8"))
    (tmp_path / "health" / "committee_meetings.v1.json").write_text(json.dumps(src))
    with pytest.raises(ContractError, match="not declared in business_rules.json"):
        load_datasets(tmp_path)
    src["x-sanyi"]["business_rules"] = []
    other = tmp_path / "other"
    (other / "health").mkdir(parents=True)
    (other / "business_rules.json").write_text(json.dumps({"record_rules": {}, "file_rules": {}}))
    (other / "health" / "committee_meetings.v1.json").write_text(json.dumps(src))
    assert set(load_datasets(other)) == {("health", "committee_meetings")}


# ------------------------------------------------------------------------------------------- parse JSON
def test_parse_json_record_keeps_decimals_as_written() -> None:
    rec = parse_json_record('{"a": 19.99, "b": 3, "c": 3.0, "d": 1e2}')
    assert rec == {"a": Decimal("19.99"), "b": 3, "c": Decimal("3.0"), "d": Decimal("1e2")}
    assert isinstance(rec["b"], int) and isinstance(rec["a"], Decimal)


@pytest.mark.parametrize("line", ['{"a": NaN}', '{"a": Infinity}', '{"a": 1, "a": 2}', f'{{"p": "{PID}"', "1" * 5000])
def test_parse_json_record_rejects_without_quoting_the_line(line: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_json_record(line)
    assert PID not in str(info.value)


# ----------------------------------------------------------------------------------------- timestamps
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-10-03T09:12:00+08:00", datetime(2024, 10, 3, 1, 12, tzinfo=UTC)),
        ("2024-10-03T01:12:00Z", datetime(2024, 10, 3, 1, 12, tzinfo=UTC)),
        ("2024-10-02T20:12:00-05:00", datetime(2024, 10, 3, 1, 12, tzinfo=UTC)),
        ("2024-10-03T01:12:00-00:00", datetime(2024, 10, 3, 1, 12, tzinfo=UTC)),
        ("2024-10-03T01:12:00.5Z", datetime(2024, 10, 3, 1, 12, 0, 500000, tzinfo=UTC)),
        # beyond microseconds: truncated, not rounded
        ("2024-10-03T01:12:00.1234569Z", datetime(2024, 10, 3, 1, 12, 0, 123456, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_gives_the_utc_instant(text: str, expected: datetime) -> None:
    got = parse_timestamp(text)
    assert got == expected and got.tzinfo == UTC


@pytest.mark.parametrize(
    "text",
    [
        "2024-10-03T09:12+08:00",  # seconds required
        "2024-10-03T09:12:00",  # offset required
        "2024-10-03 09:12:00Z",
        "2024-10-03t09:12:00Z",  # pinned: upper-case T and Z only (as jsonschema's rfc3339 checker)
        "2024-10-03T09:12:00z",
        "2024-10-03T09:12:60Z",  # leap second: not representable
        "2024-10-03T24:00:00Z",
        "2025-02-30T00:00:00Z",
        "2024-10-03T09:12:00+24:00",
        "2024-10-03T09:12:00+0800",
        "9999-12-31T23:59:59-01:00",  # UTC instant in year 10000
        "0001-01-01T00:00:00+08:00",  # UTC instant in year 0
        "2024-10-03T09:12:00Z\n",
    ],
)
def test_parse_timestamp_rejects(text: str) -> None:
    assert parse_timestamp(text) is None


# ----------------------------------------------------------------------------------------------- CSV
def csv_rows(ds: contracts.Dataset, records: list[dict]) -> list[dict]:
    """Records written to CSV text the way an agency would, then read back with csv.DictReader."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(ds.csv_fields)
    for r in records:
        writer.writerow(["" if r[f] is None else str(r[f]).lower() if isinstance(r[f], bool) else r[f]
                         for f in ds.csv_fields])
    return list(csv.DictReader(io.StringIO(buf.getvalue())))


@pytest.mark.parametrize("pair", sorted(CONTRACTS), ids="/".join)
def test_csv_round_trip_of_every_valid_sample_is_valid(pair: tuple[str, str]) -> None:
    ds = get_dataset(*pair)
    record = record_from_csv(ds, csv_rows(ds, [VALID[pair]])[0])
    expected = dict(VALID[pair])
    if "trace_codes" in expected:
        expected["trace_codes"] = []
    assert record == expected
    assert validation.validate_record(ds, record) == []


def test_csv_cells_become_json_values() -> None:
    ds = get_dataset("insurance", "settlements")
    row = dict.fromkeys(ds.csv_fields, "x")
    row.update(line_no="3.0", quantity="2", unit_price="9.995", amount="19.99", eligible_amount="1e1",
               fund_paid="abc", days_supply="", settled_at="2024-10-03T09:12:00+08:00", extra_col="5")
    rec = record_from_csv(ds, row)
    assert rec["line_no"] == Decimal("3.0")
    assert rec["quantity"] == 2 and isinstance(rec["quantity"], int)
    assert rec["unit_price"] == Decimal("9.995") and isinstance(rec["unit_price"], Decimal)
    assert rec["eligible_amount"] == Decimal("10")
    assert rec["fund_paid"] == "abc"  # left as text: a type error in validation
    assert rec["days_supply"] is None
    assert rec["extra_col"] == "5"  # unknown column kept, so it is reported
    assert rec["trace_codes"] == []
    assert rec["settlement_id"] == "x"


@pytest.mark.parametrize(("cell", "value"), [("true", True), ("false", False), ("True", "True"), ("1", "1"),
                                             ("", None)])  # fmt: skip
def test_csv_booleans_are_lower_case_words(cell: str, value: object) -> None:
    ds = get_dataset("insurance", "dual_channel_pharmacies")
    row = {f: "x" for f in ds.csv_fields} | {"traceability_enabled": cell}
    assert record_from_csv(ds, row)["traceability_enabled"] == value


@pytest.mark.parametrize("cell", ["+3", "03", "3.", ".5", "1e", "0x10", " 3", "3 ", "NaN", "Infinity", "١"])
def test_csv_numbers_must_be_json_numbers(cell: str) -> None:
    ds = get_dataset("insurance", "procurement_orders")
    rec = record_from_csv(ds, {f: "x" for f in ds.csv_fields} | {"quantity": cell})
    assert rec["quantity"] == cell
    assert ("/quantity", "type") in {(e.path, e.rule) for e in validation.validate_record(ds, rec)}


def test_csv_header_with_an_array_field_is_a_file_error() -> None:
    ds = get_dataset("insurance", "settlements")
    with pytest.raises(ContractError, match="trace_codes"):
        contracts.check_csv_header(ds, [*ds.csv_fields, "trace_codes"])
    with pytest.raises(ContractError, match="trace_codes"):
        record_from_csv(ds, dict.fromkeys(ds.fields, "x"))
    with pytest.raises(ContractError, match="twice"):
        contracts.check_csv_header(ds, [*ds.csv_fields, "amount"])
    contracts.check_csv_header(ds, ds.csv_fields)  # fine


def test_csv_cells_beyond_the_header_are_reported_as_an_extra_field() -> None:
    ds = get_dataset("health", "committee_meetings")
    text = "institution_code,meeting_on,catalog_version\nH33010200017,2024-03-01,2024,oops\n"
    rows = list(csv.DictReader(io.StringIO(text)))
    rec = record_from_csv(ds, rows[0])
    errors = validation.validate_record(ds, rec)
    assert [(e.path, e.rule) for e in errors] == [(f"/{contracts.CSV_EXTRA_CELLS}", "additionalProperties")]


# ------------------------------------------------------------------------------------------- Parquet
def parquet_rows(table: pa.Table) -> list[dict]:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return pq.read_table(io.BytesIO(buf.getvalue())).to_pylist()


def test_parquet_natural_types_become_the_json_model() -> None:
    ds = get_dataset("insurance", "settlements")
    rec = VALID[("insurance", "settlements")]
    cst = timezone(timedelta(hours=8))
    table = pa.table({
        "settlement_id": [rec["settlement_id"]], "line_no": pa.array([1], pa.int32()), "patient_id": [PID],
        "insurance_type": ["resident"], "provider_code": ["H33010200017"], "visit_type": ["outpatient"],
        "diagnosis_code": ["E11.9"], "drug_code": [DRUG], "quantity": pa.array([3.0], pa.float64()),
        "unit_price": pa.array([Decimal("6.665")], pa.decimal128(10, 3)),
        "amount": pa.array([20.0], pa.float64()),
        "eligible_amount": pa.array([Decimal("19.99")], pa.decimal128(18, 2)),
        "fund_paid": ["12.00"],  # text form
        "days_supply": pa.array([30], pa.int64()),
        "settled_at": pa.array([datetime(2024, 10, 3, 9, 12, tzinfo=cst)], pa.timestamp("ms", "Asia/Shanghai")),
        "trace_codes": pa.array([["81234567890123456789"]], pa.list_(pa.string())),
    })  # fmt: skip
    out = record_from_parquet(ds, parquet_rows(table)[0])
    assert out["settled_at"] == "2024-10-03T09:12:00+08:00"
    assert parse_timestamp(out["settled_at"]) == datetime(2024, 10, 3, 1, 12, tzinfo=UTC)
    assert out["quantity"] == Decimal("3.0") and out["amount"] == Decimal("20.0")
    assert out["unit_price"] == Decimal("6.665") and out["eligible_amount"] == Decimal("19.99")
    assert out["fund_paid"] == "12.00"
    assert out["trace_codes"] == ["81234567890123456789"]
    errors = validation.validate_record(ds, out)
    assert [(e.path, e.rule) for e in errors] == [("/fund_paid", "type")]  # text is not a number
    assert validation.validate_record(ds, out | {"fund_paid": Decimal("12")}) == []


def test_parquet_dates_and_doubles_as_written() -> None:
    ds = get_dataset("insurance", "procurement_orders")
    rec = VALID[("insurance", "procurement_orders")]
    table = pa.table({
        "order_id": [rec["order_id"]], "institution_code": ["H33010200017"], "drug_code": [DRUG],
        "quantity": pa.array([1000], pa.int64()), "unit_price": pa.array([0.1234], pa.float64()),
        "ordered_on": pa.array([date(2024, 10, 1)], pa.date32()), "delivered_on": pa.array([None], pa.date32()),
        "supplier_code": ["E91330100004"],
    })  # fmt: skip
    out = record_from_parquet(ds, parquet_rows(table)[0])
    assert out["ordered_on"] == "2024-10-01" and out["delivered_on"] is None
    assert out["unit_price"] == Decimal("0.1234")  # the double's shortest repr, not 0.12339999…
    assert validation.validate_record(ds, out) == []


def test_parquet_naive_timestamp_is_rejected_not_guessed() -> None:
    ds = get_dataset("traceability", "trace_events")
    row = dict(VALID[("traceability", "trace_events")], event_at=datetime(2024, 10, 3, 9, 30))
    out = record_from_parquet(ds, row)
    assert out["event_at"] == "2024-10-03T09:30:00"
    rules = {(e.path, e.rule) for e in validation.validate_record(ds, out)}
    assert ("/event_at", "format") in rules


# ------------------------------------------------------------------------------------------ warehouse
def test_warehouse_row_has_python_values_of_the_warehouse_types() -> None:
    ds = get_dataset("insurance", "settlements")
    rec = valid("insurance", "settlements", line_no=Decimal("1.0"), unit_price=Decimal("6.665"),
                amount=Decimal("20"), settled_at="2024-10-31T16:30:00Z")  # fmt: skip
    assert validation.validate_record(ds, rec) == []
    row = to_warehouse_row(ds, rec)
    assert list(row) == [n for n in ds.arrow_schema().names if not n.startswith("_")]
    assert row["line_no"] == 1 and type(row["line_no"]) is int
    assert row["quantity"] == 3.0 and type(row["quantity"]) is float
    assert row["unit_price"] == Decimal("6.6650") and row["unit_price"].as_tuple().exponent == -4
    assert row["amount"].as_tuple().exponent == -2 and row["amount"] == Decimal("20.00")
    assert row["settled_at"] == datetime(2024, 10, 31, 16, 30, tzinfo=UTC)
    assert row["settled_on"] == date(2024, 11, 1)  # 00:30 in UTC+08:00 is the next day
    assert row["patient_id"] == PID  # left for the caller to pseudonymise
    assert row["trace_codes"] == ["81234567890123456789"]


def test_derived_date_is_the_china_standard_time_date_whatever_the_offset() -> None:
    ds = get_dataset("traceability", "trace_events")
    cases = [
        ("2024-10-31T23:59:59+08:00", date(2024, 10, 31)),
        ("2024-10-31T16:00:00Z", date(2024, 11, 1)),
        ("2024-10-31T10:59:59-05:00", date(2024, 10, 31)),
        ("2024-10-31T11:00:00-05:00", date(2024, 11, 1)),
    ]
    for text, day in cases:
        row = to_warehouse_row(ds, valid("traceability", "trace_events", event_at=text))
        assert row["event_on"] == day, text


@pytest.mark.parametrize("pair", sorted(CONTRACTS), ids="/".join)
def test_warehouse_rows_fit_the_arrow_schema(pair: tuple[str, str]) -> None:
    ds = get_dataset(*pair)
    row = to_warehouse_row(ds, VALID[pair]) | {
        "_business_date": date(2024, 10, 3), "_arrived_at": datetime(2024, 10, 4, tzinfo=UTC),
        "_source_file": "x.ndjson", "_source_sha256": "0" * 64, "_line_no": 1}  # fmt: skip
    table = pa.Table.from_pylist([row], schema=ds.arrow_schema())
    assert table.num_rows == 1
    for f, (kind, _) in CONTRACTS[pair][2].items():
        if kind == "date" and VALID[pair][f] is not None:
            assert table.column(f)[0].as_py() == date.fromisoformat(VALID[pair][f])
