"""The submission contracts: the JSON Schemas under ``schemas/`` as Python objects, and the conversions
between a dropped record (NDJSON, CSV or Parquet) and the JSON model the schemas judge, and between a
valid record and a warehouse row.

Each ``schemas/<agency>/<dataset>.v<N>.json`` is a draft 2020-12 JSON Schema whose ``x-sanyi`` keyword
carries what JSON Schema cannot say: mode (append/upsert), key, partition column, each field's
*kind* (which fixes its warehouse type) and the ids of the business rules that apply
(``schemas/business_rules.json``). No Airflow import here: agencies' pre-flight tools use it too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa

from sanyi.config import PROJECT_ROOT
from sanyi.privacy import mask_resident_ids

AGENCIES = ("health", "insurance", "traceability")
KINDS = frozenset(
    {"string", "date", "timestamp", "integer", "money", "price", "number", "boolean", "string_list",
     "resident_id"}
)
CST = timezone(timedelta(hours=8), "UTC+08:00")
"""China Standard Time: the calendar of every date derived from a timestamp."""

METADATA_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("_business_date", pa.date32()),
    ("_arrived_at", pa.timestamp("us", tz="UTC")),
    ("_source_file", pa.string()),
    ("_source_sha256", pa.string()),
    ("_line_no", pa.int64()),
)
"""Columns every warehouse table carries after the contract fields; the loader fills them."""

CSV_EXTRA_CELLS = "#extra-cells"
"""Field name under which :func:`record_from_csv` keeps cells beyond the header (reported as extra)."""

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "resident_id": pa.string(),  # holds the pseudonym in the warehouse
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "integer": pa.int64(),
    "money": pa.decimal128(18, 2),
    "price": pa.decimal128(18, 4),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "string_list": pa.list_(pa.string()),
}
_QUANTUM = {"money": Decimal("0.01"), "price": Decimal("0.0001")}
_NUMERIC_KINDS = frozenset({"integer", "money", "price", "number"})

_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_TS_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)
_JSON_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?", re.ASCII)


class ContractError(ValueError):
    """Something does not fit the contracts as a whole (not one record's field): an unusable CSV
    header, a malformed schema file, an unparseable line."""


class UnknownDataset(ContractError):
    """An agency/dataset pair that no contract defines (wrong folder in the landing bucket)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """One dataset's contract (one schema version). Built by :func:`load_datasets`; compared by identity."""

    agency: str
    name: str
    version: str
    mode: str  # "append" or "upsert"
    key: tuple[str, ...]
    fields: tuple[str, ...]  # in schema order
    kinds: dict[str, str]
    nullable: frozenset[str]
    schema: dict[str, Any]  # parsed with parse_float=Decimal, so multipleOf is exact
    business_rules: tuple[str, ...]
    partition: str | None
    file_rules: tuple[str, ...] = ()
    path: Path | None = field(default=None, repr=False)

    @property
    def table_name(self) -> str:
        """Warehouse table, e.g. ``insurance.settlements`` (Iceberg namespace = agency)."""
        return f"{self.agency}.{self.name}"

    @property
    def array_fields(self) -> tuple[str, ...]:
        """Fields of kind ``string_list`` (absent from CSV drops)."""
        return tuple(f for f in self.fields if self.kinds[f] == "string_list")

    @property
    def csv_fields(self) -> tuple[str, ...]:
        """The columns a CSV drop carries: every field except array fields."""
        return tuple(f for f in self.fields if self.kinds[f] != "string_list")

    @property
    def derived_dates(self) -> dict[str, str]:
        """Timestamp field → its derived China-Standard-Time date column (``settled_at`` → ``settled_on``)."""
        return {f: _derived_name(f) for f in self.fields if self.kinds[f] == "timestamp"}

    @cached_property
    def _arrow_schema(self) -> pa.Schema:
        cols: list[pa.Field] = []
        for f in self.fields:
            kind = self.kinds[f]
            cols.append(pa.field(f, _ARROW_TYPES[kind], nullable=f in self.nullable))
            if kind == "timestamp":
                cols.append(pa.field(_derived_name(f), pa.date32(), nullable=f in self.nullable))
        cols.extend(pa.field(n, t, nullable=False) for n, t in METADATA_COLUMNS)
        return pa.schema(cols)

    def arrow_schema(self) -> pa.Schema:
        """The warehouse table's Arrow schema: contract fields in schema order, each timestamp followed by
        its derived date column, then the ``_`` metadata columns. Non-null fields are ``nullable=False``
        (Iceberg *required*)."""
        return self._arrow_schema

    @property
    def warehouse_columns(self) -> tuple[str, ...]:
        """Column names of :meth:`arrow_schema`, in order."""
        return tuple(self._arrow_schema.names)


def _derived_name(timestamp_field: str) -> str:
    stem = timestamp_field[:-3] if timestamp_field.endswith("_at") else timestamp_field
    return f"{stem}_on"


# --------------------------------------------------------------------------------------------- loading
def default_schemas_dir() -> Path:
    """``schemas/`` of the project (the same default as ``Settings.schemas_dir``)."""
    return PROJECT_ROOT / "schemas"


def load_datasets(schemas_dir: Path | None = None) -> dict[tuple[str, str], Dataset]:
    """Every dataset's contract, latest version of each, keyed ``(agency, dataset)`` (cached per folder)."""
    return dict(_load(Path(schemas_dir or default_schemas_dir()).resolve())[0])


def load_all_versions(schemas_dir: Path | None = None) -> dict[tuple[str, str, str], Dataset]:
    """Every schema version, keyed ``(agency, dataset, version)``."""
    return dict(_load(Path(schemas_dir or default_schemas_dir()).resolve())[1])


def load_business_rules(schemas_dir: Path | None = None) -> dict[str, dict[str, str]]:
    """``schemas/business_rules.json``: ``{"record_rules": {id: text}, "file_rules": {id: text}}``."""
    return _load(Path(schemas_dir or default_schemas_dir()).resolve())[2]


@cache
def _load(
    schemas_dir: Path,
) -> tuple[dict[tuple[str, str], Dataset], dict[tuple[str, str, str], Dataset], dict[str, dict[str, str]]]:
    rules_path = schemas_dir / "business_rules.json"
    if not rules_path.is_file():
        raise ContractError(f"no business_rules.json in {schemas_dir}")
    rules = json.loads(rules_path.read_text(encoding="utf-8"))
    record_rules = set(rules.get("record_rules", {}))
    file_rules = set(rules.get("file_rules", {}))
    versions: dict[tuple[str, str, str], Dataset] = {}
    for path in sorted(schemas_dir.glob("*/*.v*.json")):
        ds = _dataset_from_file(path)
        unknown = (set(ds.business_rules) - record_rules) | (set(ds.file_rules) - file_rules)
        if unknown:
            raise ContractError(f"{path}: rules not declared in business_rules.json: {sorted(unknown)}")
        versions[(ds.agency, ds.name, ds.version)] = ds
    if not versions:
        raise ContractError(f"no schemas under {schemas_dir}")
    latest: dict[tuple[str, str], Dataset] = {}
    for (agency, name, _), ds in sorted(versions.items(), key=lambda kv: _version_number(kv[0][2])):
        latest[(agency, name)] = ds
    return latest, versions, rules


def _version_number(version: str) -> int:
    return int(version.lstrip("v"))


def _dataset_from_file(path: Path) -> Dataset:
    schema = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    meta = schema.get("x-sanyi")
    if not isinstance(meta, dict):
        raise ContractError(f"{path}: no x-sanyi metadata")
    agency, name, version = meta["agency"], meta["dataset"], meta["version"]
    if path.parent.name != agency or path.name != f"{name}.{version}.json":
        raise ContractError(f"{path}: x-sanyi names {agency}/{name}.{version}, not this file")
    if not re.fullmatch(r"v[1-9][0-9]*", version):
        raise ContractError(f"{path}: version must look like v1, got {version!r}")
    props: dict[str, Any] = schema["properties"]
    fields = tuple(props)
    kinds = dict(meta["kinds"])
    if set(kinds) != set(fields) or not set(kinds.values()) <= KINDS:
        raise ContractError(f"{path}: x-sanyi.kinds must give one known kind per property")
    if sorted(schema.get("required", [])) != sorted(fields) or schema.get("additionalProperties") is not False:
        raise ContractError(f"{path}: every property must be required and additionalProperties false")
    key = tuple(meta["key"])
    if not key or not set(key) <= set(fields):
        raise ContractError(f"{path}: key {key} must be contract fields")
    if meta["mode"] not in ("append", "upsert"):
        raise ContractError(f"{path}: mode must be append or upsert")
    nullable = frozenset(f for f, s in props.items() if _allows_null(s))
    ds = Dataset(
        agency=agency,
        name=name,
        version=version,
        mode=meta["mode"],
        key=key,
        fields=fields,
        kinds=kinds,
        nullable=nullable,
        schema=schema,
        business_rules=tuple(meta.get("business_rules", ())),
        partition=meta.get("partition"),
        file_rules=tuple(meta.get("file_rules", ())),
        path=path,
    )
    if ds.partition is not None and ds.partition not in ds.warehouse_columns:
        raise ContractError(f"{path}: partition {ds.partition!r} is not a column")
    return ds


def _allows_null(prop: Mapping[str, Any]) -> bool:
    t = prop.get("type")
    return t == "null" or (isinstance(t, list) and "null" in t)


def _safe_name(name: object) -> str:
    text = mask_resident_ids(str(name))
    return repr(text if len(text) <= 60 else text[:57] + "...")


def get_dataset(agency: str, dataset: str, version: str | None = None) -> Dataset:
    """The contract for ``agency/dataset`` (latest version unless ``version`` is given).

    Raises :class:`UnknownDataset` naming what is wrong: an unknown agency, an unknown dataset, or a
    dataset filed under another agency than its own.
    """
    latest = load_datasets()
    if (agency, dataset) in latest:
        if version is None:
            return latest[(agency, dataset)]
        found = load_all_versions().get((agency, dataset, version))
        if found is None:
            raise UnknownDataset(f"dataset {agency}/{dataset} has no schema version {_safe_name(version)}")
        return found
    if agency not in AGENCIES:
        raise UnknownDataset(f"unknown agency {_safe_name(agency)} (agencies: {', '.join(AGENCIES)})")
    owners = sorted(a for a, n in latest if n == dataset)
    if owners:
        raise UnknownDataset(f"dataset {dataset} belongs to agency {owners[0]}, not {agency}")
    names = ", ".join(sorted(n for a, n in latest if a == agency))
    raise UnknownDataset(f"unknown dataset {_safe_name(dataset)} for agency {agency} (datasets: {names})")


# ---------------------------------------------------------------------------------- parsing text forms
def parse_date(value: object) -> date | None:
    """A ``YYYY-MM-DD`` string that is a real calendar date, as a date; otherwise None."""
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def parse_timestamp(value: object) -> datetime | None:
    """An RFC 3339 timestamp (seconds required, fraction optional, ``Z`` or ``±HH:MM``; upper-case ``T``
    and ``Z``) as an aware UTC datetime, otherwise None.

    Rejected besides bad form: impossible dates and times, leap seconds (``:60``, which Python cannot
    represent), and instants whose UTC or UTC+08:00 date falls outside years 1-9999. Fractions beyond
    microseconds are truncated.
    """
    if not isinstance(value, str):
        return None
    m = _TS_RE.fullmatch(value)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m.group(7) or "").ljust(6, "0")[:6])
    offset = m.group(8)
    try:
        if offset == "Z":
            tz = UTC
        else:
            oh, om = int(offset[1:3]), int(offset[4:6])
            if oh > 23 or om > 59:
                return None
            sign = -1 if offset[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=oh, minutes=om))
        local = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
        utc = local.astimezone(UTC)
        utc.astimezone(CST)  # the derived date must exist too
    except (ValueError, OverflowError):
        return None
    return utc


def cst_date(instant: datetime) -> date:
    """The calendar date of an aware datetime in China Standard Time (UTC+08:00)."""
    return instant.astimezone(CST).date()


def _reject_constant(name: str) -> Any:
    raise ContractError(f"{name} is not a JSON number")


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            # A second value under the same name would silently replace the first.
            raise ContractError(f"duplicate field {_safe_name(k)} in one JSON object")
        out[k] = v
    return out


_DECODER = json.JSONDecoder(
    parse_float=Decimal, parse_constant=_reject_constant, object_pairs_hook=_pairs_without_duplicates
)


def parse_json_record(text: str | bytes) -> Any:
    """One NDJSON line → the JSON model: non-integers as ``Decimal`` (exact decimals as written), integers
    as ``int``; ``NaN``/``Infinity`` and duplicate field names are :class:`ContractError`, as is bad JSON.
    The error message never quotes the line (it may hold a resident id)."""
    try:
        if isinstance(text, str) and not text.startswith("\ufeff"):
            return _DECODER.decode(text)  # json.loads with these options, without a new decoder per line
        return json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_pairs_without_duplicates,
        )
    except ContractError:
        raise
    except json.JSONDecodeError as exc:
        raise ContractError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer beyond Python's digit limit
        raise ContractError(f"not valid JSON: {type(exc).__name__}") from None


# ------------------------------------------------------------------------------- CSV / Parquet → JSON
def check_csv_header(ds: Dataset, header: Iterable[str | None]) -> None:
    """Raise :class:`ContractError` when a CSV header cannot be read record by record: it names an array
    field (not allowed in CSV) or names a column twice. Missing or unknown columns are record errors."""
    names = list(header)
    arrays = [f for f in ds.array_fields if f in names]
    if arrays:
        raise ContractError(
            f"CSV header has array field(s) {', '.join(arrays)}: arrays are not allowed in CSV drops of "
            f"{ds.agency}/{ds.name} (use NDJSON or Parquet)"
        )
    seen: set[str | None] = set()
    for n in names:
        if n in seen:
            raise ContractError(f"CSV header names column {_safe_name(n)} twice")
        seen.add(n)


def _csv_number(text: str) -> int | Decimal | str:
    m = _JSON_NUMBER_RE.fullmatch(text)
    if m is None:
        return text  # left as text: validation reports a type error
    if m.group(1) is None and m.group(2) is None:
        try:
            return int(text)
        except ValueError:  # beyond Python's int digit limit
            return Decimal(text)
    return Decimal(text)


def record_from_csv(ds: Dataset, row: Mapping[str | None, str | list[str] | None]) -> dict[str, Any]:
    """One CSV row (header → cell text, as ``csv.DictReader`` gives) → the JSON model.

    Empty or missing cell → None; booleans are ``true``/``false``; number cells that are valid JSON
    numbers become ``int`` (no fraction or exponent) or ``Decimal``, anything else stays text so that
    validation reports the type; array fields are absent and mean ``[]``. Columns outside the contract
    are kept (validation reports them); cells beyond the header (``DictReader``'s ``None`` key) are kept
    under :data:`CSV_EXTRA_CELLS`. A header naming an array field raises :class:`ContractError`.
    """
    check_csv_header(ds, row.keys())
    out: dict[str, Any] = {}
    for name, cell in row.items():
        if name is None:
            out[CSV_EXTRA_CELLS] = cell
            continue
        if cell is None or cell == "":
            out[name] = None
            continue
        kind = ds.kinds.get(name)
        if not isinstance(cell, str):
            out[name] = cell
        elif kind == "boolean":
            out[name] = {"true": True, "false": False}.get(cell, cell)
        elif kind in _NUMERIC_KINDS:
            out[name] = _csv_number(cell)
        else:
            out[name] = cell
    for f in ds.array_fields:
        out[f] = []
    return out


def _from_parquet_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str | Decimal):
        return value
    if isinstance(value, float):
        # A double has no "as written" form; its shortest repr is the closest thing (19.99, not 19.989…).
        return Decimal(repr(value)) if value == value and value not in (float("inf"), float("-inf")) else value
    if isinstance(value, datetime):
        # A naive datetime keeps no offset in its text, so validation rejects it rather than guessing a zone.
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_from_parquet_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _from_parquet_value(v) for k, v in value.items()}
    return value


def record_from_parquet(ds: Dataset, row: Mapping[str, Any]) -> dict[str, Any]:
    """One Parquet row (``Table.to_pylist()`` item) → the JSON model: dates → ``YYYY-MM-DD``, aware
    timestamps → RFC 3339 text, decimals kept, doubles → ``Decimal`` of their shortest repr, lists item by
    item; text columns pass through unchanged (Parquet may hold the NDJSON text form)."""
    del ds  # conversion depends on the Parquet value's type only; kept for a uniform signature
    return {k: _from_parquet_value(v) for k, v in row.items()}


# --------------------------------------------------------------------------------------- JSON → warehouse
def _as_decimal(value: int | float | Decimal) -> Decimal:
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def to_warehouse_row(ds: Dataset, record: Mapping[str, Any]) -> dict[str, Any]:
    """A *valid* record → Python values of the warehouse types: ``date``, aware UTC ``datetime`` (plus the
    derived UTC+08:00 date column of each timestamp), quantised ``Decimal`` for money and prices,
    ``int``, ``float``, ``bool``, ``list``. ``patient_id`` is left as given (the caller pseudonymises) and
    the ``_`` metadata columns are left to the caller. Keys follow :meth:`Dataset.arrow_schema` order."""
    row: dict[str, Any] = {}
    for f in ds.fields:
        kind = ds.kinds[f]
        value = record.get(f)
        if kind == "string_list":
            row[f] = list(value) if value is not None else []
            continue
        if value is None:
            row[f] = None
            if kind == "timestamp":
                row[_derived_name(f)] = None
            continue
        if kind in ("string", "resident_id"):
            row[f] = value
        elif kind == "date":
            row[f] = date.fromisoformat(value) if isinstance(value, str) else value
        elif kind == "timestamp":
            instant = parse_timestamp(value)
            if instant is None:
                raise ValueError(f"{ds.table_name}.{f} is not a valid RFC 3339 timestamp")
            row[f] = instant
            row[_derived_name(f)] = cst_date(instant)
        elif kind == "integer":
            row[f] = int(value)
        elif kind in _QUANTUM:
            row[f] = _as_decimal(value).quantize(_QUANTUM[kind])
        elif kind == "number":
            row[f] = float(value)
        elif kind == "boolean":
            row[f] = bool(value)
    return row
