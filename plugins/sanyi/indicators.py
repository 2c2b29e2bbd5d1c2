"""The indicator engine: runs ``sql/indicators/*.sql`` on a DuckDB connection for one period.

Each indicator is two SQL files (``<id>.sql`` → results rows, ``<id>.findings.sql`` → findings), single
SELECTs over the warehouse tables, plus an optional ``<id>.base.sql``: ``CREATE OR REPLACE TEMP TABLE
<id>__<name> AS …`` statements holding the logic both SELECTs share, run just before them, so that the
findings stand on exactly the rows the results judged. Tables, not views: a view is computed again at
every reference, and the findings' correlated subqueries referred to the costly ones (the trace-code
self-join) several times each. Computed once, the bench's month took half the time at 1M lines
(10.3 → 4.9 s) and 0.7 of it at 10M (42.7 → 29.4 s). They are dropped once the indicator's two SELECTs
have been read. Before any of them, the engine registers two
tables the SQL reads — ``params`` (one row: every policy parameter in force for the period, plus
``period``, ``period_start``, ``period_end`` and ``now_local``) and ``schedules`` (the submission
schedules) — and runs the shared views of ``sql/indicators/_common.sql``. Policy parameters are data
(:class:`Policy`, read from ``policy/parameters.toml``): the SQL holds no threshold, window or cap.

No Airflow or Iceberg import here: the caller hands over a connection where every warehouse table is
visible under its qualified name (``insurance.settlements``…) and ``sanyi.submissions`` exists.
"""

from __future__ import annotations

import calendar
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from sanyi.config import PROJECT_ROOT

INDICATORS: tuple[str, ...] = (
    "nego_allocation",
    "committee_linkage",
    "county_dual_channel",
    "dual_channel_trace",
    "duplicate_trace",
    "vbp_execution",
    "two_diseases",
    "reimbursement_ratio",
    "catalog_compliance",
    "price_warning",
    "submission_completeness",
)
"""The indicator ids of indicators.md, in its order (results are returned in this order)."""

DEFAULT_POLICY_FILE = PROJECT_ROOT / "policy" / "parameters.toml"
DEFAULT_SQL_DIR = PROJECT_ROOT / "sql" / "indicators"
COMMON_SQL = "_common.sql"
BASE_SUFFIX = ".base.sql"
"""``<id>.base.sql``: the optional temp tables an indicator's results and findings SELECTs both read."""

CST = timezone(timedelta(hours=8), "UTC+08:00")

ENTITY_TYPES = frozenset(
    {"institution", "pharmacy", "county", "province", "agreement", "disease", "insurance_class", "drug",
     "dataset"}
)
STATUSES = frozenset({"compliant", "breach", "pending", "exempt", "not_applicable"})

RESULT_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("indicator", pa.string()),
    ("period", pa.string()),
    ("entity_type", pa.string()),
    ("entity_code", pa.string()),
    ("measure", pa.string()),
    ("value", pa.float64()),
    ("numerator", pa.float64()),
    ("denominator", pa.float64()),
    ("threshold", pa.float64()),
    ("status", pa.string()),
)
FINDING_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("indicator", pa.string()),
    ("period", pa.string()),
    ("entity_type", pa.string()),
    ("entity_code", pa.string()),
    ("kind", pa.string()),
    ("subject", pa.string()),
    ("amount", pa.decimal128(18, 2)),
    ("detail", pa.string()),
)
_ADDED_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("computed_at", pa.timestamp("us", tz="UTC")),
    ("source_snapshots", pa.string()),
)
# The one definition of the ``indicators.results``/``indicators.findings`` table schemas: warehouse.py
# imports them from here (this module stays free of Iceberg imports).
RESULTS_SCHEMA = pa.schema(RESULT_COLUMNS + _ADDED_COLUMNS)
FINDINGS_SCHEMA = pa.schema(FINDING_COLUMNS + _ADDED_COLUMNS)

# Was True while the indicators were being written. A missing file is an error: a silently absent
# indicator would look "all clear" to supervisors.
SKIP_MISSING_SQL = False

_PERIOD_RE = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])", re.ASCII)
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)
_RESERVED_PARAMS = frozenset({"period", "period_start", "period_end", "now_local"})
_ENGINE_SECTION = "engine"
_SCHEDULES_SECTION = "schedules"
_FREQUENCIES = frozenset({"daily", "monthly"})

# Declared parameter types → Arrow types of the ``params`` columns. Without ``type`` the TOML value
# decides (float → double, int → bigint, string, bool, date, list of strings).
_PARAM_TYPES: dict[str, pa.DataType] = {
    "double": pa.float64(),
    "integer": pa.int64(),
    "money": pa.decimal128(18, 2),
    "price": pa.decimal128(18, 4),
    "string": pa.string(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "string_list": pa.list_(pa.string()),
}


class PolicyError(ValueError):
    """The policy file is malformed, or a parameter has no value in force for a period."""


class IndicatorError(RuntimeError):
    """An indicator's SQL is missing or returned rows that break the agreed output shape."""


# ---------------------------------------------------------------------------------------------- periods
@dataclass(frozen=True)
class Period:
    """A calendar month ``YYYY-MM`` with its first and last day."""

    code: str
    start: date
    end: date

    @classmethod
    def parse(cls, code: str) -> Period:
        """Parse ``YYYY-MM``; anything else (``2024-13``, ``2024-1``) is a ValueError."""
        m = _PERIOD_RE.fullmatch(code)
        if not m:
            raise ValueError(f"period must be YYYY-MM, got {code!r}")
        year, month = int(m.group(1)), int(m.group(2))
        return cls(code, date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1]))


# ----------------------------------------------------------------------------------------------- policy
@dataclass(frozen=True)
class Parameter:
    """One policy parameter: its dated values (sorted by ``effective_from``), unit and source."""

    name: str
    section: str
    unit: str
    source: str
    type: pa.DataType
    values: tuple[tuple[date, Any], ...]
    description: str = ""

    def value_at(self, day: date) -> Any:
        """The value with the latest ``effective_from`` on or before ``day``."""
        in_force = [v for start, v in self.values if start <= day]
        if not in_force:
            raise PolicyError(f"parameter {self.name} has no value in force on {day.isoformat()}")
        return in_force[-1]


@dataclass(frozen=True)
class Schedule:
    """A dataset's submission schedule: dated ``(frequency, due_offset_days)`` entries."""

    dataset: str
    source: str
    values: tuple[tuple[date, str | None, int | None], ...]

    def at(self, day: date) -> tuple[str, int] | None:
        """The schedule in force on ``day``; None when the dataset has none then (``frequency = "none"``)."""
        in_force = [(f, d) for start, f, d in self.values if start <= day]
        if not in_force or in_force[-1][0] is None:
            return None
        frequency, offset = in_force[-1]
        assert offset is not None
        return frequency, offset


@dataclass(frozen=True)
class Policy:
    """The policy parameters and schedules of ``policy/parameters.toml`` (see the file's header)."""

    parameters: Mapping[str, Parameter]
    schedules: Mapping[str, Schedule]
    path: Path | None = None

    @classmethod
    def load(cls, path: Path | str | None = None) -> Policy:
        """Read and validate a policy file (default: the project's ``policy/parameters.toml``)."""
        file = Path(path) if path is not None else DEFAULT_POLICY_FILE
        with file.open("rb") as fh:
            try:
                doc = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise PolicyError(f"{file}: {exc}") from exc
        return cls.from_dict(doc, path=file)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, path: Path | None = None) -> Policy:
        """Build a policy from the parsed TOML document, checking every rule of the format."""
        parameters: dict[str, Parameter] = {}
        schedules: dict[str, Schedule] = {}
        for section, body in doc.items():
            if section == _SCHEDULES_SECTION:
                for dataset, spec in _table(body, section).items():
                    schedules[dataset] = _parse_schedule(dataset, spec)
                continue
            if section != _ENGINE_SECTION and section not in INDICATORS:
                raise PolicyError(f"unknown section [{section}]: expected an indicator id, engine, schedules")
            for name, spec in _table(body, section).items():
                if name in parameters:
                    raise PolicyError(f"parameter {name} is defined twice")
                parameters[name] = _parse_parameter(section, name, spec)
        return cls(parameters=parameters, schedules=schedules, path=path)

    def values_for(self, period: str) -> dict[str, Any]:
        """Every parameter's value in force for ``period`` (latest ``effective_from`` ≤ its first day)."""
        first = Period.parse(period).start
        return {name: p.value_at(first) for name, p in sorted(self.parameters.items())}

    def schedules_for(self, period: str) -> list[dict[str, Any]]:
        """The schedules in force on the period's first day: ``{dataset, frequency, due_offset_days}``."""
        first = Period.parse(period).start
        out = []
        for dataset, schedule in sorted(self.schedules.items()):
            current = schedule.at(first)
            if current is not None:
                out.append({"dataset": dataset, "frequency": current[0], "due_offset_days": current[1]})
        return out

    def params_table(self, period: str, now: datetime) -> pa.Table:
        """The one-row ``params`` table the SQL reads for ``period`` computed at ``now``."""
        p = Period.parse(period)
        fields = [
            pa.field("period", pa.string()),
            pa.field("period_start", pa.date32()),
            pa.field("period_end", pa.date32()),
            pa.field("now_local", pa.timestamp("us")),
        ]
        values: list[Any] = [p.code, p.start, p.end, _local_wall_clock(now)]
        for name, value in self.values_for(period).items():
            fields.append(pa.field(name, self.parameters[name].type))
            values.append(value)
        return pa.Table.from_arrays([pa.array([v], type=f.type) for v, f in zip(values, fields, strict=True)],
                                    schema=pa.schema(fields))

    def schedules_table(self, period: str) -> pa.Table:
        """The ``schedules`` table the SQL reads for ``period``."""
        schema = pa.schema(
            [("dataset", pa.string()), ("frequency", pa.string()), ("due_offset_days", pa.int32())]
        )
        return pa.Table.from_pylist(self.schedules_for(period), schema=schema)


def _table(body: Any, where: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise PolicyError(f"[{where}] must be a table")
    return body


def _parse_parameter(section: str, name: str, spec: Any) -> Parameter:
    spec = _table(spec, f"{section}.{name}")
    if not _NAME_RE.fullmatch(name) or name in _RESERVED_PARAMS:
        raise PolicyError(f"parameter name {name!r}: snake_case, not one of {sorted(_RESERVED_PARAMS)}")
    if not name.startswith(section + "_"):
        raise PolicyError(f"parameter {name} must be prefixed by its section id ({section}_)")
    unknown = set(spec) - {"unit", "source", "values", "type", "description"}
    if unknown:
        raise PolicyError(f"parameter {name}: unknown keys {sorted(unknown)}")
    for key in ("unit", "source"):
        if not isinstance(spec.get(key), str) or not spec[key].strip():
            raise PolicyError(f"parameter {name} needs a non-empty {key!r}")
    raw_values = spec.get("values")
    if not isinstance(raw_values, list) or not raw_values:
        raise PolicyError(f"parameter {name} needs values = [{{effective_from = …, value = …}}, …]")
    dated: list[tuple[date, Any]] = []
    for entry in raw_values:
        entry = _table(entry, f"{name}.values")
        if set(entry) != {"effective_from", "value"}:
            raise PolicyError(f"parameter {name}: each value has exactly effective_from and value")
        start = entry["effective_from"]
        if not isinstance(start, date) or isinstance(start, datetime):
            raise PolicyError(f"parameter {name}: effective_from must be a TOML date (YYYY-MM-DD)")
        dated.append((start, entry["value"]))
    dated.sort(key=lambda item: item[0])
    starts = [d for d, _ in dated]
    if len(set(starts)) != len(starts):
        raise PolicyError(f"parameter {name}: two values share an effective_from")
    declared = spec.get("type")
    if declared is not None and declared not in _PARAM_TYPES:
        raise PolicyError(f"parameter {name}: type must be one of {sorted(_PARAM_TYPES)}")
    kinds = {declared or _infer_type(name, v) for _, v in dated}
    if len(kinds) != 1:
        raise PolicyError(f"parameter {name}: values of different types {sorted(kinds)}")
    kind = kinds.pop()
    converted = tuple((d, _convert(name, kind, v)) for d, v in dated)
    return Parameter(
        name=name,
        section=section,
        unit=spec["unit"],
        source=spec["source"],
        type=_PARAM_TYPES[kind],
        values=converted,
        description=str(spec.get("description", "")),
    )


def _infer_type(name: str, value: Any) -> str:
    # bool before int: True is an int in Python.
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, date) and not isinstance(value, datetime):
        return "date"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "string_list"
    raise PolicyError(f"parameter {name}: unsupported value {value!r}")


def _convert(name: str, kind: str, value: Any) -> Any:
    if kind in ("money", "price"):
        # Money and prices are decimal: converting through the TOML text keeps 0.1 exact.
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise PolicyError(f"parameter {name}: {kind} value must be a number or a decimal string")
        dec = Decimal(str(value))
        places = Decimal("0.01") if kind == "money" else Decimal("0.0001")
        if dec != dec.quantize(places):
            raise PolicyError(f"parameter {name}: {value!r} has too many decimals for {kind}")
        return dec.quantize(places)
    if kind == "double" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if _infer_type(name, value) != kind:
        raise PolicyError(f"parameter {name}: value {value!r} is not a {kind}")
    return value


def _parse_schedule(dataset: str, spec: Any) -> Schedule:
    spec = _table(spec, f"schedules.{dataset}")
    agency, _, name = dataset.partition("/")
    if not agency or not name or "/" in name:
        raise PolicyError(f"schedule key {dataset!r} must be 'agency/dataset'")
    if not isinstance(spec.get("source"), str) or not spec["source"].strip():
        raise PolicyError(f"schedule {dataset} needs a non-empty 'source'")
    raw = spec.get("values")
    if not isinstance(raw, list) or not raw:
        raise PolicyError(f"schedule {dataset} needs values = [{{effective_from, frequency, …}}]")
    dated: list[tuple[date, str | None, int | None]] = []
    for entry in raw:
        entry = _table(entry, f"schedules.{dataset}.values")
        start, frequency = entry.get("effective_from"), entry.get("frequency")
        if not isinstance(start, date) or isinstance(start, datetime):
            raise PolicyError(f"schedule {dataset}: effective_from must be a TOML date")
        if frequency == "none":
            dated.append((start, None, None))
            continue
        offset = entry.get("due_offset_days")
        valid_offset = isinstance(offset, int) and not isinstance(offset, bool) and offset >= 1
        if frequency not in _FREQUENCIES or not valid_offset:
            raise PolicyError(f"schedule {dataset}: frequency daily|monthly|none and due_offset_days ≥ 1")
        dated.append((start, frequency, offset))
    dated.sort(key=lambda item: item[0])
    if len({d for d, _, _ in dated}) != len(dated):
        raise PolicyError(f"schedule {dataset}: two values share an effective_from")
    return Schedule(dataset=dataset, source=spec["source"], values=tuple(dated))


def _local_wall_clock(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(CST).replace(tzinfo=None)


# ----------------------------------------------------------------------------------------------- engine
def compute(
    conn: duckdb.DuckDBPyConnection,
    period: str,
    *,
    policy: Policy | None = None,
    now: datetime | None = None,
    indicators: Sequence[str] | None = None,
    source_snapshots: dict | None = None,
    sql_dir: Path | str | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Compute ``indicators`` (default: all of :data:`INDICATORS`) for ``period`` on ``conn``.

    ``conn`` must already expose every warehouse table under its qualified name and ``sanyi.submissions``.
    Registers ``params`` and ``schedules`` as temporary tables, runs ``_common.sql``, then for each
    indicator its ``<id>.base.sql`` (when present) and its results and findings SELECTs. Returns
    ``(results, findings)`` as Arrow tables with the :data:`RESULTS_SCHEMA` / :data:`FINDINGS_SCHEMA`
    columns (the one definition of the warehouse's ``indicators.*`` tables), sorted so that recomputing
    the same data gives identical tables. ``computed_at`` is ``now`` (UTC); ``source_snapshots`` the JSON text of
    the given table → snapshot id map.
    """
    Period.parse(period)
    policy = policy if policy is not None else Policy.load()
    now = now if now is not None else datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    folder = Path(sql_dir) if sql_dir is not None else DEFAULT_SQL_DIR
    wanted = list(INDICATORS if indicators is None else indicators)
    unknown = [i for i in wanted if i not in INDICATORS]
    if unknown:
        raise IndicatorError(f"unknown indicators {unknown}; known: {list(INDICATORS)}")

    _register(conn, "params", policy.params_table(period, now))
    _register(conn, "schedules", policy.schedules_table(period))
    _run_statements(conn, folder / COMMON_SQL)

    results: list[pa.Table] = []
    findings: list[pa.Table] = []
    for indicator in (i for i in INDICATORS if i in wanted):
        files = (folder / f"{indicator}.sql", folder / f"{indicator}.findings.sql")
        missing = [f.name for f in files if not f.exists()]
        if missing:
            if SKIP_MISSING_SQL:
                continue
            raise IndicatorError(f"indicator {indicator}: missing SQL {missing} in {folder}")
        try:
            # Re-run for every computation: the tables are computed with this period's params.
            _run_statements(conn, folder / f"{indicator}{BASE_SUFFIX}")
            res = _run(conn, files[0], RESULT_COLUMNS)
            fnd = _run(conn, files[1], FINDING_COLUMNS)
        finally:
            _drop_base_tables(conn, indicator)
        _check_results(indicator, period, res)
        _check_findings(indicator, period, fnd)
        results.append(res)
        findings.append(fnd)

    stamp = pa.scalar(now.astimezone(UTC), type=pa.timestamp("us", tz="UTC"))
    snapshots = json.dumps(source_snapshots or {}, sort_keys=True, default=str)
    return (
        _finish(results, RESULT_COLUMNS, RESULTS_SCHEMA, stamp, snapshots,
                ("entity_type", "entity_code", "measure")),
        _finish(findings, FINDING_COLUMNS, FINDINGS_SCHEMA, stamp, snapshots,
                ("entity_type", "entity_code", "kind", "subject", "detail")),
    )


def _register(conn: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    # A temp table, not a view over a Python object: it outlives this call for the SQL that reads it,
    # and temp comes first on DuckDB's search path, so a stray main.params can never be read instead.
    hidden = f"__sanyi_{name}_arrow"
    conn.register(hidden, table)
    try:
        conn.execute(f'CREATE OR REPLACE TEMP TABLE "{name}" AS SELECT * FROM "{hidden}"')
    finally:
        conn.unregister(hidden)


def _run_statements(conn: duckdb.DuckDBPyConnection, file: Path) -> None:
    """Execute a file of SQL statements (view definitions) when it exists."""
    if not file.exists():
        return
    try:
        conn.execute(file.read_text(encoding="utf-8"))
    except duckdb.Error as exc:
        raise IndicatorError(f"{file.name}: {exc}") from exc


def _drop_base_tables(conn: duckdb.DuckDBPyConnection, indicator: str) -> None:
    """Drop the temp tables ``<indicator>__*`` of its base file: their memory is not held through the
    next indicators."""
    names = conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE temporary AND starts_with(table_name, ?)",
        [f"{indicator}__"],
    ).fetchall()
    for (name,) in names:
        conn.execute(f'DROP TABLE IF EXISTS temp.main."{name}"')


def _run(
    conn: duckdb.DuckDBPyConnection, file: Path, columns: tuple[tuple[str, pa.DataType], ...]
) -> pa.Table:
    try:
        relation = conn.sql(file.read_text(encoding="utf-8"))
        # DuckDB 2 names it to_arrow_table; older releases return a Table from arrow().
        fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
        table = fetch()
    except duckdb.Error as exc:
        raise IndicatorError(f"{file.name}: {exc}") from exc
    names = [n for n, _ in columns]
    if table.column_names != names:
        raise IndicatorError(f"{file.name} returned columns {table.column_names}, expected {names}")
    try:
        return table.cast(pa.schema(columns))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise IndicatorError(f"{file.name}: cannot cast to the agreed types: {exc}") from exc


def _check_common(indicator: str, period: str, table: pa.Table, what: str) -> None:
    # Checked column-wise (a month has hundreds of thousands of findings); the first offending row named.
    ok_id = pc.and_(pc.equal(table.column("indicator"), indicator), pc.equal(table.column("period"), period))
    ok_entity = pc.and_(pc.is_in(table.column("entity_type"), value_set=pa.array(sorted(ENTITY_TYPES))),
                        pc.greater(pc.utf8_length(table.column("entity_code")), 0))
    for ok, message in ((ok_id, "got {indicator} {period}"), (ok_entity, "entity {entity_type!r} {entity_code!r}")):
        bad = pc.indices_nonzero(pc.invert(pc.fill_null(ok, False)))
        if len(bad):
            row = table.slice(bad[0].as_py(), 1).to_pylist()[0]
            raise IndicatorError(f"{indicator} {what}: " + message.format(**row))


def _check_results(indicator: str, period: str, table: pa.Table) -> None:
    _check_common(indicator, period, table, "results")
    seen: set[tuple[str, str, str]] = set()
    for row in table.select(["entity_type", "entity_code", "measure", "status"]).to_pylist():
        if row["status"] not in STATUSES:
            raise IndicatorError(f"{indicator}: status {row['status']!r} not in {sorted(STATUSES)}")
        key = (row["entity_type"], row["entity_code"], row["measure"])
        if key in seen:
            raise IndicatorError(f"{indicator}: two result rows for {key}")
        seen.add(key)


_RAW_JSON = msgspec.json.Decoder(msgspec.Raw)  # decodes to the undecoded text: checks syntax only


def _check_findings(indicator: str, period: str, table: pa.Table) -> None:
    _check_common(indicator, period, table, "findings")
    for detail in table.column("detail").to_pylist():
        if detail is None:
            continue
        try:
            # msgspec checks the syntax without building objects (30x json.loads on a month's findings). It
            # is strict RFC 8259, so what it refuses is judged by json.loads, which also takes the NaN and
            # Infinity that DuckDB's json_object writes for such doubles.
            _RAW_JSON.decode(detail)
        except (msgspec.DecodeError, UnicodeEncodeError):
            try:
                json.loads(detail)
            except ValueError as exc:
                raise IndicatorError(f"{indicator}: finding detail is not JSON: {detail[:80]!r}") from exc


def _finish(
    parts: list[pa.Table],
    columns: tuple[tuple[str, pa.DataType], ...],
    schema: pa.Schema,
    stamp: pa.Scalar,
    snapshots: str,
    sort_keys: tuple[str, ...],
) -> pa.Table:
    base = pa.schema(columns)
    table = pa.concat_tables(parts) if parts else base.empty_table()
    # Deterministic order: indicator order of indicators.md, then the row's identifying columns.
    rank = pc.index_in(table.column("indicator"), value_set=pa.array(INDICATORS))
    table = table.append_column("__rank", rank)
    table = table.sort_by([("__rank", "ascending"), *[(k, "ascending") for k in sort_keys]])
    table = table.drop_columns("__rank")
    n = table.num_rows
    table = table.append_column(schema.field("computed_at"), pa.repeat(stamp, n))
    return table.append_column(schema.field("source_snapshots"), pa.repeat(pa.scalar(snapshots, pa.string()), n))
