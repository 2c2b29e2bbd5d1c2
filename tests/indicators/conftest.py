"""Fixtures for indicator tests: an empty warehouse in DuckDB with the agreed column types, a helper
that inserts hand-built rows (filling the columns a test does not care about), and a runner.

The table shapes come from the contracts (``sanyi.contracts``), the same source the loader uses, so a
test's warehouse has exactly the types of the real one. ``sanyi.submissions`` is a plain table here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from sanyi import indicators
from sanyi.contracts import load_datasets
from sanyi.publish import SUBMISSIONS_SCHEMA

CST = timezone(timedelta(hours=8))

DRUG = "XA10BAE033A001010100482"
"""A valid drug code, the default wherever a test does not name one."""


CENT = Decimal("0.01")

_counter = itertools.count(1)


def table_schemas() -> dict[str, pa.Schema]:
    """Qualified table name → Arrow schema of every warehouse table a computation reads."""
    out = {ds.table_name: ds.arrow_schema() for ds in load_datasets().values()}
    out["sanyi.submissions"] = SUBMISSIONS_SCHEMA
    return out


def _fresh(prefix: str, width: int = 8) -> str:
    return f"{prefix}{next(_counter):0{width}d}"


# Defaults per table: a value, or a callable of the row built so far (so derived fields follow the
# fields a test did give, e.g. amount = quantity × unit_price).
DEFAULTS: dict[str, dict[str, Any]] = {
    "health.divisions": {
        "division_code": "330102", "name": "division", "level": "county", "parent_code": "330100",
    },
    "health.institutions": {
        "institution_code": "H33010200001", "name": "institution", "division_code": "330102", "level": 3,
        "grade": "A", "category": "general", "specialty": None, "ownership": "public",
        "valid_from": "2020-01-01", "valid_to": None,
    },
    "health.formulary": {
        "institution_code": "H33010200001", "drug_code": DRUG, "listed_on": "2020-01-01", "delisted_on": None,
    },
    "health.committee_meetings": {
        "institution_code": "H33010200001", "meeting_on": "2024-01-15", "catalog_version": "2024",
    },
    "health.chronic_registry": {
        "patient_id": "a" * 64, "disease": "hypertension", "institution_code": "H33010200001",
        "filed_on": "2024-01-01",
    },
    "insurance.drug_catalog": {
        "catalog_version": "2024", "published_on": "2023-12-01", "effective_from": "2024-01-01",
        "drug_code": DRUG, "generic_name": "generic", "catalog_class": "B", "negotiated": False,
        "negotiated_valid_to": None, "specialty": None,
    },
    "insurance.dual_channel_pharmacies": {
        "pharmacy_code": "P33010200001", "name": "pharmacy", "division_code": "330102",
        "designated_on": "2020-01-01", "revoked_on": None, "traceability_enabled": True,
    },
    "insurance.settlements": {
        "settlement_id": lambda r: _fresh("S"), "line_no": 1, "patient_id": "a" * 64,
        "insurance_type": "employee", "provider_code": "H33010200001", "visit_type": "outpatient",
        "diagnosis_code": "I10", "drug_code": DRUG, "quantity": 1, "unit_price": "10.00",
        "amount": lambda r: (Decimal(str(r["quantity"])) * Decimal(str(r["unit_price"]))).quantize(CENT),
        "eligible_amount": lambda r: r["amount"], "fund_paid": lambda r: r["eligible_amount"],
        "days_supply": 30, "settled_at": "2024-01-15T10:00:00+08:00", "trace_codes": [],
    },
    "insurance.vbp_groups": {
        "batch_id": "VBP-2024-01", "product_group": "group", "exec_start": "2024-01-01", "cycle_months": 12,
        "price_cap": None, "exemption": None,
    },
    "insurance.vbp_products": {
        "batch_id": "VBP-2024-01", "product_group": "group", "drug_code": DRUG, "selected": True,
        "winning_price": lambda r: "1.0000" if r["selected"] else None,
    },
    "insurance.vbp_agreements": {
        "batch_id": "VBP-2024-01", "product_group": "group", "institution_code": "H33010200001",
        "agreed_volume": 1000,
    },
    "insurance.procurement_orders": {
        "order_id": lambda r: _fresh("O"), "institution_code": "H33010200001", "drug_code": DRUG,
        "quantity": 100, "unit_price": "1.0000", "ordered_on": "2024-01-15", "delivered_on": None,
        "supplier_code": "E91330100004",
    },
    "traceability.trace_events": {
        "trace_code": "81234567890123456789", "drug_code": DRUG, "event": "sold",
        "party_code": "P33010200001", "event_at": "2024-01-15T10:00:00+08:00", "batch_no": "B1",
        "expires_on": "2026-12-31",
    },
    "sanyi.submissions": {
        "agency": "insurance", "dataset": "settlements", "business_date": "2024-01-01", "status": "loaded",
        "arrived_at": lambda r: datetime.combine(_to_date(r["business_date"]) + timedelta(days=1),
                                                 datetime.min.time(), tzinfo=CST).replace(hour=2),
        "arrived_local": lambda r: _to_ts(r["arrived_at"]).astimezone(CST).replace(tzinfo=None),
        "file": lambda r: f"{r['agency']}/{r['dataset']}/{r['business_date']}/{_fresh('f')}.ndjson",
    },
}

_DERIVED = {"settled_on": "settled_at", "event_on": "event_at"}


def _to_date(value: Any) -> date | None:
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, datetime):
        return value.date()
    return date.fromisoformat(str(value))


def _to_ts(value: Any) -> datetime | None:
    if value is None:
        return None
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {value!r} needs an offset")
    return ts.astimezone(UTC)


def _convert(value: Any, type_: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_date(type_):
        return _to_date(value)
    if pa.types.is_timestamp(type_):
        if type_.tz is None:
            return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return _to_ts(value)
    if pa.types.is_decimal(type_):
        return Decimal(str(value)).quantize(Decimal(1).scaleb(-type_.scale))
    if pa.types.is_floating(type_):
        return float(value)
    return value


def complete_row(table: str, row: Mapping[str, Any], line_no: int = 1) -> dict[str, Any]:
    """``row`` with every other column of ``table`` filled: contract defaults, the CST date of each
    timestamp, and the ``_`` metadata (business date = that date, or 2024-01-01)."""
    schema = table_schemas()[table]
    unknown = set(row) - set(schema.names)
    if unknown:
        raise KeyError(f"{table} has no columns {sorted(unknown)}")
    out: dict[str, Any] = dict(row)
    for name, default in DEFAULTS.get(table, {}).items():
        if name not in out:
            out[name] = default(out) if callable(default) else default
    for derived, source in _DERIVED.items():
        if derived in schema.names and derived not in out:
            instant = _to_ts(out[source])
            out[derived] = instant.astimezone(CST).date() if instant else None
    if "_business_date" in schema.names:
        day = next((out[d] for d in _DERIVED if d in out), None)
        out.setdefault("_business_date", day or date(2024, 1, 1))
        out.setdefault("_arrived_at", datetime.combine(_to_date(out["_business_date"]), datetime.min.time(),
                                                       tzinfo=CST) + timedelta(days=1))
        out.setdefault("_source_file", f"{table.replace('.', '/')}/test.ndjson")
        out.setdefault("_source_sha256", "0" * 64)
        out.setdefault("_line_no", line_no)
    return {f.name: _convert(out.get(f.name), f.type) for f in schema}


def insert(conn: duckdb.DuckDBPyConnection, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert hand-built rows into ``table`` (qualified name); omitted columns get sensible defaults.

    Dates and timestamps may be ISO strings (timestamps with an offset), money and prices strings
    or numbers (kept decimal)."""
    schema = table_schemas()[table]
    full = [complete_row(table, r, i) for i, r in enumerate(rows, start=1)]
    arrow = pa.Table.from_pylist(full, schema=schema)
    conn.register("__insert_rows", arrow)
    try:
        conn.execute(f"INSERT INTO {table} SELECT * FROM __insert_rows")
    finally:
        conn.unregister("__insert_rows")


def create_warehouse(conn: duckdb.DuckDBPyConnection) -> None:
    """Create every warehouse table (and ``sanyi.submissions``) empty with the agreed column types."""
    for name, schema in table_schemas().items():
        schema_name, table = name.split(".")
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema_name}")
        conn.register("__empty", schema.empty_table())
        try:
            conn.execute(f"CREATE TABLE {schema_name}.{table} AS SELECT * FROM __empty")
        finally:
            conn.unregister("__empty")


def run_indicator(
    conn: duckdb.DuckDBPyConnection,
    period: str,
    indicator: str,
    *,
    policy: indicators.Policy | None = None,
    now: datetime | None = None,
    sql_dir: Path | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Compute one indicator for ``period``: (results, findings) as lists of dicts, without the engine's
    ``computed_at``/``source_snapshots`` columns. ``now`` defaults to well after the period."""
    now = now or datetime(2030, 1, 1, tzinfo=UTC)
    results, findings = indicators.compute(conn, period, policy=policy, now=now, indicators=[indicator],
                                           sql_dir=sql_dir)
    drop = ["computed_at", "source_snapshots"]
    return results.drop_columns(drop).to_pylist(), findings.drop_columns(drop).to_pylist()


def policy_with(
    tmp_path: Path, values: Mapping[str, Any], *, source: Path | None = None
) -> indicators.Policy:
    """A copy of the policy file (default: the project's) with some parameters given one new value
    (in force since 2020-01-01), written under ``tmp_path`` and loaded: a province editing its file."""
    text = (source or indicators.DEFAULT_POLICY_FILE).read_text(encoding="utf-8")
    lines = text.splitlines()
    for name, value in values.items():
        header = next((i for i, line in enumerate(lines) if line.strip().endswith(f".{name}]")), None)
        assert header is not None, f"no parameter {name} in the policy file"
        at = next(i for i in range(header + 1, len(lines)) if lines[i].startswith("values"))
        literal = repr(value) if not isinstance(value, str) else f'"{value}"'
        lines[at] = f"values = [{{ effective_from = 2020-01-01, value = {literal} }}]"
    path = tmp_path / "parameters.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return indicators.Policy.load(path)


def check_findings_behind_breaches(
    results: Sequence[Mapping[str, Any]], findings: Sequence[Mapping[str, Any]]
) -> None:
    """indicators.md: every breach row has at least one finding; findings exist only behind breach rows."""
    breaches = {(r["entity_type"], r["entity_code"]) for r in results if r["status"] == "breach"}
    explained = {(f["entity_type"], f["entity_code"]) for f in findings}
    assert breaches == explained, f"breach rows {sorted(breaches)} vs findings on {sorted(explained)}"


def by_entity(rows: Sequence[Mapping[str, Any]], measure: str | None = None) -> dict[str, dict[str, Any]]:
    """Result rows keyed by entity_code (optionally only one measure); fails on a duplicate code."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if measure is not None and r.get("measure") != measure:
            continue
        assert r["entity_code"] not in out, f"two rows for {r['entity_code']}"
        out[r["entity_code"]] = dict(r)
    return out


@pytest.fixture
def warehouse() -> Iterable[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection holding every warehouse table, empty, with the agreed types."""
    conn = duckdb.connect()
    create_warehouse(conn)
    yield conn
    conn.close()


@pytest.fixture(name="insert")
def insert_fixture() -> Callable[..., None]:
    """The :func:`insert` helper, for tests that prefer fixtures to imports."""
    return insert


@pytest.fixture(name="run_indicator")
def run_indicator_fixture() -> Callable[..., tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """The :func:`run_indicator` helper."""
    return run_indicator
