"""The fast, exact validation path: chunks parsed by Arrow, checked with vectorised kernels, and the
reference (:func:`sanyi.validation.validate_record`) asked about every row a check cannot clear.

The contract stays the JSON Schema: this module only *accepts* a row when every keyword and business rule
of its dataset has been checked on it in a way that agrees with the reference on every input; any row it
cannot clear — a failed check, a value outside what the vectorised checks model, a line Arrow cannot
parse — is judged by the reference on the record as written, which gives the exact errors (and may still
find the row valid). Acceptance is sound by construction; ``tests/test_differential.py`` checks that the
two paths agree. For a rejected row whose shape was cleared, the reference runs only on the fields and
rules that failed (:func:`_judge`), which gives the same errors at a fraction of the cost.

NDJSON (:func:`check_ndjson`): the plain lines — a flat object of contract fields, strings with JSON's
escapes at most, numbers of at most 15 digits — are read in one pass by the C reader ``sanyi._ndjson``
(:func:`_read_plain`) into exactly what Arrow's reader gives; the others are screened
(:func:`_structural_suspects`) and the rest parsed by ``pyarrow.json`` in ~1 MiB pieces on a small thread
pool with an explicit schema (numbers as float64); then every field, conditional and business rule is
checked column-wise (dates, timestamps and resident ids by the C kernels of ``sanyi._checks``). A line whose
members are the problem (one unknown to the contract, one missing, a value of the wrong JSON type) is read
by the reference reader and written again with only the contract fields of the right type
(:func:`_repaired`), so that a file out of step with the contract on every line is still checked
column-wise. CSV (:func:`iter_csv`): quote-free pieces are cut by ``pyarrow.csv`` as text; a file with
quotes continues through Python's ``csv`` module as the reference reads it; the checks are the same.

Traps this module is built around (each has a differential test):

- Arrow's JSON reader converts a JSON *string* into a decimal column, wraps decimals that overflow 128 bits,
  reads ``NaN``/``Infinity``, skips blank lines, reads ``{..} {..}`` on one line as two rows, turns an absent
  field into null, builds an invalid array when it infers an unknown field's ``[null, "x"]``, and crashes on
  a block that starts with ``null``. So numbers are read as float64 (strict: a string there is a parse
  error), unknown fields are an error, only lines starting with ``{`` reach Arrow, row counts are checked,
  and a nullable field that reads as null must be present in its line.
- A float64 is exactly the number as written only when the text has at most 15 digits and no exponent; every
  line with a longer number goes to the reference. With that guarantee bounds, ``multipleOf`` and integers
  are exact on the floats, and Arrow's float-to-decimal cast gives the written value (19.99, not the float's
  binary 19.989999…).
- Arrow rolls 2025-02-30 into March and Python's ``$`` matches before a trailing newline: dates and times are
  read by ``sanyi._checks`` with the reference's calendar rules, and patterns are translated to RE2 only from
  a safe subset of syntax.
"""

from __future__ import annotations

import bisect
import collections
import csv
import dataclasses
import io
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from re import _parser as sre_parse  # type: ignore[attr-defined]  # stable since 3.11, used read-only
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from sanyi import contracts, extension, patterns, validation
from sanyi.contracts import Dataset
from sanyi.validation import RecordError

__all__ = [
    "ChunkResult",
    "HeaderRejected",
    "Rejected",
    "check_ndjson",
    "check_records",
    "iter_csv",
    "line_starts",
    "supports",
]

# Bytes per Arrow JSON parse call: big enough to amortise the call, small enough that re-parsing the rest of
# a piece after a bad line stays cheap. Pieces are parsed by a small thread pool (Arrow releases the GIL).
PIECE_BYTES = 1 << 20
_POOL_SIZE = 2
_DEC = pa.decimal128(38, 18)  # every numeric value is held exactly at this type while it is checked
_DEC_INT_DIGITS = 20  # 38 - 18
_CST_US = 8 * 3600 * 1_000_000
# A number token (after a colon) that a float64 may not hold exactly: 16+ digits, or an exponent.
_LONG_NUMBER = r":[ \t\r]*-?(?:(?:[0-9]\.?){16}|[0-9]+(?:\.[0-9]*)?[eE])"
_DATE_RE2 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\z"
# Written as the contracts' pattern translates (groups and all), so that a field whose pattern is the shape
# is not matched twice (_field_ok).
_TS_RE2 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})\z"
_CSV_NUMBER = r"^-?(?:0|[1-9][0-9]{0,19})(?:\.[0-9]{1,18})?\z"  # JSON numbers the decimal type holds
_ROW_IN_ERROR = re.compile(r"\bin row (\d+)\b")
# Per dataset: whether the last NDJSON chunk had lines Arrow could not parse (the next is screened first).
_SCREEN_FIRST: dict[str, bool] = {}


class HeaderRejected(Exception):
    """The CSV header makes the whole file unreadable; the message is the receipt's reason."""


@dataclass
class Rejected:
    """One record the reference rejected: its line, its JSON model (None if unreadable) and its errors."""

    line: int
    record: dict[str, Any] | None
    errors: list[RecordError]


@dataclass
class ChunkResult:
    """What one chunk of a file holds once validated.

    ``good`` has the warehouse columns of the contract fields (each timestamp followed by its derived date;
    ``patient_id`` still raw — the loader pseudonymises it) plus ``_line_no``; ``rejected`` is in line order;
    ``read`` counts records (blank lines are not records); ``fallback`` counts rows the reference judged.
    """

    good: pa.Table
    rejected: list[Rejected]
    read: int
    fallback: int = 0
    records: list[dict[str, Any]] | None = None  # JSON models of the good rows, for file-level rules


def contract_schema(ds: Dataset) -> pa.Schema:
    """The warehouse schema without the ``_`` metadata columns the loader adds, plus ``_line_no``."""
    return _contract_schema(ds)


@cache
def _contract_schema(ds: Dataset) -> pa.Schema:
    schema = ds.arrow_schema()
    fields = [f for f in schema if not f.name.startswith("_")]
    return pa.schema([*fields, pa.field("_line_no", pa.int64(), nullable=False)])


# ============================================================================================ the plan
@dataclass
class _Cond:
    """``allOf: [{if: {required: [a], properties: {a: {const: v} | {not: {const: v}}}}},
    then: {properties: {b: {type: T}}}}]``"""

    field: str
    const: Any
    negate: bool
    target: str
    types: frozenset[str]


@dataclass
class _Field:
    name: str
    kind: str
    types: frozenset[str]
    null_ok: bool  # null passes every keyword of the field (type, enum)
    supported: bool = True
    pattern: str | None = None  # RE2 form
    min_len: int | None = None
    max_len: int | None = None
    enum: pa.Array | None = None
    fmt: str | None = None
    bounds: list[tuple[str, Decimal]] = field(default_factory=list)
    places: int | None = None  # multipleOf 10^-places
    item_pattern: str | None = None
    unique_items: bool = False
    scan_ids: bool = False  # may hold a resident id (rule resident_id_in_wrong_field)


@dataclass
class _Plan:
    ds: Dataset
    fields: dict[str, _Field]
    conds: list[_Cond]
    rules: tuple[str, ...]
    supported: bool
    json_schema: pa.Schema  # what Arrow's JSON reader is told
    wrong_type: str  # RE2: a member whose value starts like another JSON type (see _screened)
    # (field, value key) → the field's reference errors for that value (see _field_errors)
    field_errors: dict[tuple[str, Any], tuple[RecordError, ...]] = field(default_factory=dict)
    # member names outside the contract → the reference's additionalProperties errors (see _extra_errors)
    extra_errors: dict[tuple[str, ...], tuple[RecordError, ...]] = field(default_factory=dict)


_FIELD_KEYWORDS = frozenset(
    {
        "title",
        "description",
        "type",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "enum",
        "minLength",
        "maxLength",
        "items",
        "uniqueItems",
    }
)
_ITEM_KEYWORDS = frozenset({"title", "description", "type", "pattern"})
_ROOT_KEYWORDS = frozenset(
    {
        "$schema",
        "$id",
        "title",
        "description",
        "type",
        "properties",
        "required",
        "additionalProperties",
        "x-sanyi",
        "allOf",
    }
)
_KIND_TYPES = {
    "string": {"string"},
    "resident_id": {"string"},
    "date": {"string"},
    "timestamp": {"string"},
    "integer": {"integer", "number"},
    "number": {"number"},
    "money": {"number"},
    "price": {"number"},
    "boolean": {"boolean"},
    "string_list": {"array"},
}
_RULES = frozenset(
    {
        "resident_id_in_wrong_field",
        "resident_id_check_character",
        "amount_equals_quantity_times_price",
        "eligible_not_above_amount",
        "fund_paid_not_above_eligible",
        "delisted_not_before_listed",
        "delivered_not_before_ordered",
        "effective_not_before_published",
    }
)
_NOT_BEFORE = {
    "delisted_not_before_listed": ("delisted_on", "listed_on"),
    "delivered_not_before_ordered": ("delivered_on", "ordered_on"),
    "effective_not_before_published": ("effective_from", "published_on"),
}
_NOT_ABOVE = {
    "eligible_not_above_amount": ("eligible_amount", "amount"),
    "fund_paid_not_above_eligible": ("fund_paid", "eligible_amount"),
}


def supports(ds: Dataset) -> bool:
    """Whether every keyword and rule of the dataset is modelled (else every row goes to the reference)."""
    return _plan(ds).supported


@cache
def _plan(ds: Dataset) -> _Plan:
    schema = ds.schema
    supported = set(schema) <= _ROOT_KEYWORDS and not ds.file_rules
    fields = {name: _field_plan(ds, name, schema["properties"][name]) for name in ds.fields}
    conds: list[_Cond] = []
    for sub in schema.get("allOf", []):
        cond = _cond_plan(ds, sub)
        if cond is None:
            supported = False
        else:
            conds.append(cond)
    rules = tuple(ds.business_rules)
    if not set(rules) <= _RULES or not all(f.supported for f in fields.values()):
        supported = False
    for rule in rules:
        names = {"amount_equals_quantity_times_price": ("quantity", "unit_price", "amount")}.get(rule, ())
        names = names or _NOT_ABOVE.get(rule, ()) or _NOT_BEFORE.get(rule, ())
        if any(n not in fields for n in names):
            supported = False
    if "resident_id_in_wrong_field" in rules:
        for f in fields.values():
            f.scan_ids = f.kind != "resident_id" and _may_hold_id(f)
    return _Plan(ds, fields, conds, rules, supported, _json_schema(ds), _wrong_type_regex(ds))


def _json_schema(ds: Dataset) -> pa.Schema:
    out = []
    for name in ds.fields:
        kind = ds.kinds[name]
        if kind in ("integer", "number", "money", "price"):
            t: pa.DataType = pa.float64()  # strict: a JSON string here is a parse error, unlike decimals
        elif kind == "boolean":
            t = pa.bool_()
        elif kind == "string_list":
            t = pa.list_(pa.string())
        else:
            t = pa.string()
        out.append(pa.field(name, t))
    return pa.schema(out)


_FIRST_CHAR = {  # what a value of each JSON type may start with (after the member name and colon)
    "number": r"[^-0-9n \t\r]",
    "string": r'[^"n \t\r]',
    "boolean": r"[^tfn \t\r]",
    "array": r"[^\[n \t\r]",
}


def _wrong_type_regex(ds: Dataset) -> str:
    """One RE2 for a member whose value does not start like its field's JSON type. A member name in quotes
    followed by a colon is a real member (inside a string every quote is escaped)."""
    groups: dict[str, list[str]] = {}
    for name in ds.fields:
        kind = ds.kinds[name]
        category = (
            "number"
            if kind in ("integer", "number", "money", "price")
            else "boolean"
            if kind == "boolean"
            else "array"
            if kind == "string_list"
            else "string"
        )
        groups.setdefault(category, []).append(re.escape(name))
    ws = r"[ \t\r]*"
    parts = []
    for category, names in sorted(groups.items()):
        parts.append(f'"(?:{"|".join(names)})"{ws}:{ws}{_FIRST_CHAR[category]}')
    # A member whose name is none of the contract's (Arrow stops at it too).
    parts.append(f'[{{,]{ws}"(?:{_not_one_of(list(ds.fields))}){ws}:')
    return "|".join(parts)


def _not_one_of(names: list[str]) -> str:
    """RE2 for the rest of a member name after its opening quote, closing quote included, when the name is
    none of ``names`` (built along their trie; a name with an escape counts as unknown)."""
    terminal = "" in names
    children = sorted({n[0] for n in names if n})
    alternatives = [] if terminal else ['"']
    excluded = "".join(re.escape(c) for c in children)
    alternatives.append(f'[^"{excluded}][^"]*"')
    for c in children:
        alternatives.append(
            re.escape(c) + "(?:" + _not_one_of([n[1:] for n in names if n and n[0] == c]) + ")"
        )
    return "|".join(alternatives)


def _types(spec: dict[str, Any]) -> frozenset[str]:
    t = spec.get("type")
    return frozenset(t if isinstance(t, list) else [t]) if t is not None else frozenset()


def _field_plan(ds: Dataset, name: str, spec: dict[str, Any]) -> _Field:
    kind = ds.kinds[name]
    types = _types(spec)
    enum = spec.get("enum")
    null_ok = "null" in types and (enum is None or any(v is None for v in enum))
    f = _Field(name=name, kind=kind, types=types, null_ok=null_ok)
    value_types = types - {"null"}
    if not set(spec) <= _FIELD_KEYWORDS or not value_types or not value_types <= _KIND_TYPES[kind]:
        f.supported = False
        return f
    if kind == "integer" and value_types != {"integer"}:
        f.supported = False  # a "number"-typed integer kind would need other warehouse semantics
        return f
    if "pattern" in spec:
        f.pattern = _re2_pattern(spec["pattern"])
        f.supported &= f.pattern is not None
    if "minLength" in spec or "maxLength" in spec:
        f.min_len, f.max_len = spec.get("minLength"), spec.get("maxLength")
        f.supported &= kind in ("string", "resident_id", "date", "timestamp")
    if enum is not None:
        strings = [v for v in enum if isinstance(v, str)]
        others = [v for v in enum if v is not None and not isinstance(v, str)]
        f.enum = pa.array(strings, pa.string())
        f.supported &= not others and kind in ("string", "resident_id", "date", "timestamp")
    if "format" in spec:
        f.fmt = spec["format"]
        f.supported &= (f.fmt, kind) in (("date", "date"), ("date-time", "timestamp"))
    elif kind in ("date", "timestamp"):
        f.supported = False  # the warehouse conversion needs the format's guarantee
    for op in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if op in spec:
            bound = spec[op]
            f.bounds.append((op, bound if isinstance(bound, Decimal) else Decimal(bound)))
    if f.bounds:
        f.supported &= kind in ("integer", "number", "money", "price")
    if "multipleOf" in spec:
        q = Decimal(spec["multipleOf"])
        digits, exponent = q.as_tuple().digits, int(q.as_tuple().exponent)
        if digits == (1,) and -18 <= exponent <= 0:
            f.places = -exponent
        else:
            f.supported = False
    if kind in ("money", "price"):
        # Exact only when multipleOf is the warehouse quantum and the bound keeps the value in 18 digits.
        quantum = 2 if kind == "money" else 4
        upper = [b for op, b in f.bounds if op in ("maximum", "exclusiveMaximum")]
        f.supported &= f.places == quantum and bool(upper) and min(upper) <= Decimal(10) ** (18 - quantum)
    if kind == "string_list":
        items = spec.get("items", {})
        f.unique_items = bool(spec.get("uniqueItems", False))
        if not set(items) <= _ITEM_KEYWORDS or _types(items) != {"string"}:
            f.supported = False
        elif "pattern" in items:
            f.item_pattern = _re2_pattern(items["pattern"])
            f.supported &= f.item_pattern is not None
    elif "items" in spec or "uniqueItems" in spec:
        f.supported = False
    return f


def _cond_plan(ds: Dataset, sub: dict[str, Any]) -> _Cond | None:
    if not set(sub) <= {"description", "if", "then"} or "if" not in sub or "then" not in sub:
        return None
    cond, then = sub["if"], sub["then"]
    if set(cond) != {"required", "properties"} or set(then) != {"properties"}:
        return None
    props, tprops = cond["properties"], then["properties"]
    if len(props) != 1 or len(tprops) != 1 or cond["required"] != list(props):
        return None
    (a, spec), (b, tspec) = next(iter(props.items())), next(iter(tprops.items()))
    negate = set(spec) == {"not"}
    inner = spec["not"] if negate else spec
    if set(inner) != {"const"} or set(tspec) != {"type"} or a not in ds.kinds or b not in ds.kinds:
        return None
    types = _types(tspec)
    if not types <= {"null", "string", "number", "boolean"}:
        return None
    const = inner["const"]
    if not isinstance(const, str | bool) or (ds.kinds[a] == "boolean") != isinstance(const, bool):
        return None
    return _Cond(a, const, negate, b, types)


# ------------------------------------------------------------------------------------------- patterns
_SAFE_OPS = {"LITERAL", "IN", "RANGE", "MAX_REPEAT", "MIN_REPEAT", "SUBPATTERN", "BRANCH", "AT", "ANY"}
_END_ANCHOR = "(?![\\s\\S])"


def _re2_pattern(pattern: str) -> str | None:
    """``pattern`` as RE2 with the same meaning under ``re.search``, or None when it uses syntax whose
    meaning differs (Unicode classes, flags, look-arounds other than the closing ``(?![\\s\\S])``)."""
    body = pattern.removesuffix(_END_ANCHOR)
    closing = "\\z" if body != pattern else ""
    if body.endswith("$") and not body.endswith("\\$") and not closing:
        body, closing = body[:-1], "\\n?\\z"  # Python's $ also matches before a final newline
    try:
        parsed = sre_parse.parse(body)
    except re.error:
        return None
    if parsed.state.flags & ~re.UNICODE or not _safe(parsed):
        return None
    try:  # RE2 must accept the text too (it lacks some Python escapes, caps repeats at 1000)
        pc.match_substring_regex(pa.array([""], pa.string()), body + closing)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return body + closing


def _safe(items: Any) -> bool:
    for op, arg in items:
        name = str(op)
        if name not in _SAFE_OPS:
            return False
        if name == "AT" and str(arg) not in ("AT_BEGINNING", "AT_BEGINNING_STRING"):
            return False  # "$" inside the pattern, \b, …
        if name == "IN" and any(str(o) not in ("LITERAL", "RANGE") for o, _ in arg):
            return False  # negated sets and categories (\d, \s, \w) are Unicode in Python, ASCII in RE2
        if name in ("MAX_REPEAT", "MIN_REPEAT") and not _safe(arg[2]):
            return False
        if name == "SUBPATTERN" and (arg[1] or arg[2] or not _safe(arg[3])):
            return False  # inline flags
        if name == "BRANCH" and not all(_safe(b) for b in arg[1]):
            return False
    return True


def _may_hold_id(f: _Field) -> bool:
    """False when no value that passes the field's checks can hold 18 consecutive digits."""
    if f.kind in ("integer", "number", "money", "price", "boolean"):
        return False  # numbers and booleans are not strings once valid
    if f.enum is not None:
        return any(re.search("[0-9]{18}", v) for v in f.enum.to_pylist())
    if f.kind == "date":
        return False  # the format fixes YYYY-MM-DD
    pattern = f.item_pattern if f.kind == "string_list" else f.pattern
    if f.kind == "timestamp" or pattern is None:
        return True
    parsed = sre_parse.parse(pattern.replace("\\z", "").replace("\\n?", ""))
    if (width := _all_digits_width(parsed)) is not None:
        return width == 18  # the value is one run of digits: an id is a run of exactly 18
    run = _max_digit_run(parsed)
    return run is None or run >= 18


def _all_digits_width(items: Any) -> int | None:
    """The length of every match when the pattern matches ASCII digits only, a fixed number of them
    (``^[0-9]{20}``); else None."""
    width = 0
    for op, arg in items:
        name = str(op)
        if name == "AT":
            continue
        if name == "MAX_REPEAT" and arg[0] == arg[1] and _all_digits_width(arg[2]) == 1:
            width += arg[0]
        elif name == "IN" and list(arg) == [(sre_parse.RANGE, (48, 57))]:
            width += 1
        elif name == "LITERAL" and 48 <= arg <= 57:
            width += 1
        else:
            return None
    return width


def _max_digit_run(items: Any) -> int | None:
    """An upper bound of consecutive ASCII digits in a match (None: unbounded); conservative."""
    best = cur = 0
    for op, arg in items:
        name = str(op)
        if name == "AT":
            continue
        if name in ("LITERAL", "IN", "ANY"):
            if _can_be_digit(op, arg):
                cur += 1
            else:
                cur = 0
        elif name in ("SUBPATTERN", "BRANCH"):
            subs = [arg[3]] if name == "SUBPATTERN" else arg[1]
            inner_runs = [_max_digit_run(s) for s in subs]
            if any(r is None for r in inner_runs):
                return None
            inner = max(r for r in inner_runs if r is not None)
            cur = cur + inner if inner else 0  # an over-estimate, which is the safe side
        elif name in ("MAX_REPEAT", "MIN_REPEAT"):
            low, high, sub = arg
            inner = _max_digit_run(sub)
            if inner is None:
                return None
            if inner == 0:
                cur = 0
            elif high is sre_parse.MAXREPEAT:
                return None
            else:
                cur += inner * high  # crude but safe
        else:
            return None
        best = max(best, cur)
    return best


def _can_be_digit(op: Any, arg: Any) -> bool:
    if str(op) == "ANY":
        return True
    if str(op) == "LITERAL":
        return 48 <= arg <= 57
    for o, a in arg:
        if str(o) == "LITERAL" and 48 <= a <= 57:
            return True
        if str(o) == "RANGE" and a[0] <= 57 and a[1] >= 48:
            return True
        if str(o) not in ("LITERAL", "RANGE"):
            return True
    return False


# ========================================================================================== the checks
def _falses(n: int) -> pa.Array:
    return pa.nulls(n, pa.bool_()).fill_null(False)


def _trues(n: int) -> pa.Array:
    return pa.nulls(n, pa.bool_()).fill_null(True)


def _all(masks: Iterable[pa.Array], n: int) -> pa.Array:
    out: pa.Array | None = None
    for m in masks:
        out = m if out is None else pc.and_(out, m)
    return _trues(n) if out is None else out


def _f(mask: pa.Array) -> pa.Array:
    """A mask with nulls read as False (a comparison on a null value clears nothing)."""
    return mask.fill_null(False) if mask.null_count else mask


def one_array(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``values`` as one array: a column's only chunk as it is (``combine_chunks`` copies even that one, and
    was paid per column and per chunk: 2 ms a 16 MiB chunk)."""
    if isinstance(values, pa.Array):
        return values
    return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()


def _rows_with(n: int, rows: pa.Array) -> pa.Array:
    """Mask of length n, True at the given row indices."""
    if len(rows) == 0:
        return _falses(n)
    return pc.is_in(_iota(n), value_set=rows.cast(pa.int64()))


_IOTA = pa.array([], pa.int64())


def _iota(n: int) -> pa.Array:
    """0, 1, …, n - 1 (int64): a slice of one array, built by Arrow — ``pa.array(range(n))`` costs 90 ms a
    million rows, and was paid per column and per chunk."""
    global _IOTA
    iota = _IOTA  # read once: validator threads may swap the cached array meanwhile
    if len(iota) < n:
        size = max(n, 2 * len(iota))
        iota = _IOTA = pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), size)), 1)
    return iota.slice(0, n)


@dataclass(frozen=True)
class _Grid:
    """Floats x read on the grid of 10^-places (``sanyi._checks.grid``: Arrow's multiply, round half to even
    and divide, in one pass): ``multiple``, x is a multiple of 10^-places (the places check); ``exact``, that
    and |x| < 1e15 / 10^places, so ``scaled`` (x · 10^places as int64, 0 where not exact; nulls kept) is
    exactly the number as written, in units of 10^-places. False for a null."""

    multiple: pa.Array
    exact: pa.Array
    scaled: pa.Array

    @classmethod
    def of(cls, x: pa.Array, places: int) -> _Grid:
        n = len(x)
        validity, values = x.buffers()
        multiple, exact, scaled = extension("_checks").grid(
            validity if x.null_count else b"", values, x.offset, n, places
        )
        ints = pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(scaled)])
        if x.null_count:
            ints = pc.if_else(pc.is_valid(x), ints, pa.scalar(None, pa.int64()))
        return cls(_bitmap(multiple, n), _bitmap(exact, n), ints)

    def decimals(self, keep: pa.Array, type_: pa.Decimal128Type) -> pa.Array | None:
        """The kept rows' numbers as decimals of ``type_`` (whose scale is these places), or None unless every
        multiple is exact (the kept rows passed the places check, so they are multiples)."""
        if self.exact.true_count != self.multiple.true_count:
            return None
        ints = pc.filter(self.scaled, keep)
        if ints.offset:  # the buffers from their start, as widened and from_buffers read them
            ints = pa.concat_arrays([ints])
        wide = extension("_checks").widened(ints.buffers()[1], len(ints)) if len(ints) else b""
        validity = ints.buffers()[0] if ints.null_count else None
        return pa.Array.from_buffers(type_, len(ints), [validity, pa.py_buffer(wide)])


def _bitmap(bits: bytes, n: int) -> pa.Array:
    return pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(bits)])


@dataclass
class _Values:
    """One field's values in a chunk, as the checks see them (the JSON model, column-wise)."""

    values: pa.Array | None  # strings / list<string> / bool; numbers read from text: exact decimal (38, 18)
    null: pa.Array  # the field is null (or, for NDJSON, null-or-absent: see ``_absent``)
    ok: pa.Array  # representation checks passed (CSV: the cell is a number / boolean; NDJSON: finite)
    floats: pa.Array | None = None  # numbers as float64 (kind "number" is stored as a double)
    exact: bool = False  # the float64 is exactly the number as written (NDJSON, <= 15 digits, no exponent)
    parsed: Any = None  # dates: days; timestamps: UTC microseconds (filled by the checks)
    grids: dict[int, _Grid] = field(default_factory=dict)  # by places: see grid

    def grid(self, places: int) -> _Grid:
        """The exact floats (``exact``) on the grid of 10^-places, computed once per field and places (the
        places check, the amount rule and the warehouse's decimals all read it)."""
        if places not in self.grids:
            assert self.floats is not None and self.exact
            self.grids[places] = _Grid.of(self.floats, places)
        return self.grids[places]

    def taken(self, rows: pa.Array) -> _Values:
        """These values at ``rows`` only (for a check that a few rows need), before any is parsed."""

        def take(x: pa.Array | None) -> pa.Array | None:
            return None if x is None else pc.take(x, rows)

        return _Values(take(self.values), take(self.null), take(self.ok), take(self.floats), self.exact)

    def decimal(self, scale: int = 18) -> pa.Array:
        """The numbers as exact decimals: decimal128(38, 18) in general; with ``scale`` < 18, valid for the
        rows whose number is a multiple of 10^-scale (the others are rejected anyway)."""
        if self.values is not None:
            return self.values
        assert self.floats is not None and self.exact
        x = self.floats
        if scale < 18:
            limit = 10.0 ** (38 - scale - 1)
            safe = pc.if_else(_f(pc.less(pc.abs(x), limit)), x, 0.0)
            return pc.cast(safe, pa.decimal128(38, scale))  # exact: <= 15 digits, and a multiple
        # The shortest text that reads back as the float is the number as written (<= 15 digits).
        safe = pc.if_else(_f(pc.is_finite(x)), x, 0.0)
        return pc.cast(pc.cast(safe, pa.string()), _DEC)


class _Frame:
    """A chunk's values by field, plus row-level flags the source found (structure, long numbers)."""

    def __init__(self, n: int, values: dict[str, _Values], row_ok: pa.Array) -> None:
        self.n, self.values, self.row_ok = n, values, row_ok


def _evaluate_fields(plan: _Plan, frame: _Frame) -> tuple[pa.Array, dict[str, pa.Array], dict[str, pa.Array]]:
    """(rows the reference certainly accepts, per field: rows whose value passes all of the field's
    keywords, per business rule: rows it certainly passes). A row whose only failures are field values
    and rules is judged by the reference on those alone (see :func:`_judge`)."""
    n = frame.n
    if not plan.supported or n == 0:
        return _falses(n), {}, {}
    fields = {f.name: _field_ok(f, frame.values[f.name], n) for f in plan.fields.values()}
    rules = _rules_ok(plan, frame)
    masks = [frame.row_ok, *fields.values(), *rules.values()]
    for cond in plan.conds:
        masks.append(_cond_ok(plan, cond, frame))
    return _all(masks, n), fields, rules


def _field_ok(f: _Field, v: _Values, n: int) -> pa.Array:
    vals = v.values
    checks: list[pa.Array] = [v.ok]
    kind = f.kind
    if kind in ("string", "resident_id", "date", "timestamp"):
        if f.pattern is not None and not (
            (f.fmt == "date" and f.pattern == _DATE_RE2) or (f.fmt == "date-time" and f.pattern == _TS_RE2)
        ):
            checks.append(_matches(vals, f.pattern))
        if f.min_len is not None or f.max_len is not None:
            length = pc.utf8_length(vals)
            if f.min_len is not None:
                checks.append(_f(pc.greater_equal(length, f.min_len)))
            if f.max_len is not None:
                checks.append(_f(pc.less_equal(length, f.max_len)))
        if f.enum is not None:
            checks.append(pc.is_in(vals, value_set=f.enum))
        if f.fmt == "date":
            days, ok = _parse_dates(vals)
            v.parsed = days
            checks.append(ok)
        elif f.fmt == "date-time":
            us, ok = _parse_timestamps(vals)
            v.parsed = us
            checks.append(ok)
    elif kind in ("integer", "number", "money", "price"):
        checks.extend(_float_checks(f, v) if v.exact else _number_checks(f, vals))
    elif kind == "string_list":
        checks.extend(_list_checks(f, vals, n))
    nonnull_ok = _all(checks, n)
    if v.null.true_count == 0:
        return nonnull_ok
    null_ok = v.ok if f.null_ok else _falses(n)
    return pc.if_else(v.null, null_ok, nonnull_ok)


_OPS = {
    "minimum": pc.greater_equal,
    "maximum": pc.less_equal,
    "exclusiveMinimum": pc.greater,
    "exclusiveMaximum": pc.less,
}


def _float_checks(f: _Field, v: _Values) -> list[pa.Array]:
    """The number checks on float64 values that are exactly the numbers as written (at most 15 digits, so
    |value| < 1e15 and distinct numbers are distinct floats): comparisons with a bound that is itself a
    float of at most 15 digits are exact; so is "a multiple of 10^-k" tested by rounding x·10^k and
    dividing back (a non-multiple has more than k decimals, so |x·10^k| < 1e14, well inside 2^53)."""
    x = v.floats
    assert x is not None
    out: list[pa.Array] = []
    for op, bound in f.bounds:
        if abs(bound) >= Decimal(10) ** 15:
            if (bound > 0) != (op in ("maximum", "exclusiveMaximum")):
                out.append(_falses(len(x)))
            continue
        if Decimal(float(bound)) == bound and len(bound.normalize().as_tuple().digits) <= 15:
            out.append(_f(_OPS[op](x, float(bound))))
        else:
            out.append(_f(_OPS[op](v.decimal(), pa.scalar(bound, _DEC))))
    if f.places is not None:
        out.append(v.grid(f.places).multiple)
    if f.kind == "integer":
        out.append(_f(pc.equal(pc.floor(x), x)))
    return out


def _number_checks(f: _Field, d: pa.Array) -> list[pa.Array]:
    out: list[pa.Array] = []
    for op, bound in f.bounds:
        if abs(bound) >= Decimal(10) ** _DEC_INT_DIGITS:
            # Outside what the decimal holds, so every held value is on one side of it.
            holds = (bound > 0) == (op in ("maximum", "exclusiveMaximum"))
            if not holds:
                out.append(_falses(len(d)))
            continue
        out.append(_f(_OPS[op](d, pa.scalar(bound, _DEC))))
    if f.places is not None and f.places < 18:
        out.append(_f(pc.equal(pc.round(d, f.places), d)))
    if f.kind == "integer":
        out.append(_f(pc.equal(pc.round(d, 0), d)))
    return out


def _list_checks(f: _Field, lists: pa.Array, n: int) -> list[pa.Array]:
    flat = pc.list_flatten(lists)
    if len(flat) == 0:
        return []
    parents = pc.list_parent_indices(lists)
    bad = flat.is_null()
    if f.item_pattern is not None:
        bad = pc.or_(bad, pc.invert(_matches(flat, f.item_pattern)))
    out = []
    if bad.true_count:
        out.append(pc.invert(_rows_with(n, pc.filter(parents, bad))))
    if f.unique_items:
        lengths = pc.list_value_length(lists).fill_null(0)
        if pc.max(lengths).as_py() >= 2:
            pairs = pa.table({"p": parents, "v": flat})
            counts = pairs.group_by(["p", "v"]).aggregate([([], "count_all")])
            dup = pc.filter(counts.column("p"), pc.greater(counts.column("count_all"), 1))
            if len(dup):
                out.append(pc.invert(_rows_with(n, dup)))
    return out


def _cond_ok(plan: _Plan, cond: _Cond, frame: _Frame) -> pa.Array:
    a, b = frame.values[cond.field], frame.values[cond.target]
    equal = _f(pc.equal(a.values, pa.scalar(cond.const, a.values.type)))
    applies = pc.invert(equal) if cond.negate else equal
    kind = plan.fields[cond.target].kind
    category = {
        "boolean": "boolean",
        "integer": "number",
        "number": "number",
        "money": "number",
        "price": "number",
    }.get(kind, "array" if kind == "string_list" else "string")
    ok = _falses(frame.n)
    if "null" in cond.types:
        ok = pc.or_(ok, b.null)
    if category in cond.types:
        ok = pc.or_(ok, pc.invert(b.null))
    return pc.or_(pc.invert(applies), ok)


def _rules_ok(plan: _Plan, frame: _Frame) -> dict[str, pa.Array]:
    """Per business rule: rows on which the reference certainly reports nothing for it."""
    rules: dict[str, pa.Array] = {}
    vals = frame.values
    for rule in plan.rules:
        out: list[pa.Array] = []
        if rule == "resident_id_in_wrong_field":
            for f in plan.fields.values():
                if not f.scan_ids:
                    continue
                v = vals[f.name].values
                if f.kind == "string_list":
                    flat = pc.list_flatten(v)
                    if len(flat):
                        hit = _holds_valid_id(flat)
                        if hit.true_count:
                            parents = pc.list_parent_indices(v)
                            out.append(pc.invert(_rows_with(frame.n, pc.filter(parents, hit))))
                else:
                    out.append(pc.invert(_holds_valid_id(v)))
        elif rule == "resident_id_check_character":
            for f in plan.fields.values():
                if f.kind == "resident_id":
                    out.append(_check_characters_ok(vals[f.name].values))
        elif rule == "amount_equals_quantity_times_price":
            out.append(_amount_rule_ok(plan, vals))
        elif rule in _NOT_ABOVE:
            lower, upper = _NOT_ABOVE[rule]
            lo, hi = vals[lower], vals[upper]
            if lo.exact and hi.exact:
                out.append(_f(pc.less_equal(lo.floats, hi.floats)))
            else:
                out.append(_f(pc.less_equal(lo.decimal(), hi.decimal())))
        elif rule in _NOT_BEFORE:
            later, earlier = _NOT_BEFORE[rule]
            a, b = vals[later].parsed, vals[earlier].parsed
            # A null or unparseable date skips the rule (the schema reports what is wrong with it).
            out.append(pc.invert(_f(pc.less(a, b))))
        rules[rule] = _all(out, frame.n)
    return rules


def _amount_rule_ok(plan: _Plan, vals: dict[str, _Values]) -> pa.Array:
    """Rows where amount = quantity × unit_price rounded half-up to the cent, as the reference's decimals
    decide. In integers (quantity in thousandths, price in ten-thousandths of a yuan, amount in cents) for
    the rows whose three numbers are exactly on those grids and whose product fits in 63 bits — nearly all;
    in 256-bit decimals for the others."""
    q, p, a = vals["quantity"], vals["unit_price"], vals["amount"]
    fast: pa.Array | None = None
    if q.exact and p.exact and a.exact:
        (qi, q_ok), (pi, p_ok), (ai, a_ok) = ((g.scaled, g.exact) for g in (q.grid(3), p.grid(4), a.grid(2)))
        fits = _f(pc.less(pc.abs(pc.multiply(q.floats, p.floats)), 9e11))  # product < 9e18 ten-millionths
        fast = _f(pc.and_(pc.and_(q_ok, p_ok), pc.and_(a_ok, fits)))
        product = pc.multiply(pc.if_else(fast, qi, 0), pc.if_else(fast, pi, 0))
        cents = pc.divide(pc.add(pc.abs(product), 50_000), 100_000)  # half away from zero, as ROUND_HALF_UP
        expected = pc.if_else(pc.less(product, 0), pc.negate(cents), cents)
        int_ok = _f(pc.and_(fast, pc.equal(pc.if_else(fast, ai, 0), expected)))
        if fast.true_count == len(fast):
            return int_ok
        # The other rows (a null, an off-grid number: a few a chunk) in decimals, alone: the decimal casts and
        # the 256-bit product cost about a third of a CPU-second a million rows.
        slow = pc.invert(fast)
        rows = pc.indices_nonzero(slow)
        dec_ok = _amount_decimal_ok(plan, *(v.taken(rows) for v in (q, p, a)))
        return pc.replace_with_mask(int_ok, slow, dec_ok)
    return _amount_decimal_ok(plan, q, p, a)


def _amount_decimal_ok(plan: _Plan, q: _Values, p: _Values, a: _Values) -> pa.Array:
    """:func:`_amount_rule_ok` in 256-bit decimals, for any rows."""
    qd = q.decimal()
    pd = p.decimal(4 if plan.fields["unit_price"].places == 4 else 18)
    ad = a.decimal(2 if plan.fields["amount"].places == 2 else 18)
    product = pc.multiply(pc.cast(qd, pa.decimal256(38, 18)), pc.cast(pd, pa.decimal256(24, 4), safe=False))
    rounded = pc.round(product, 2, round_mode="half_towards_infinity")
    return _f(pc.equal(pc.cast(ad, rounded.type), rounded))


def _leading_id_valid(texts: pa.Array) -> pa.Array:
    """Per value: its first 18 characters are 17 ASCII digits and the right check character (GB 11643,
    ISO 7064 MOD 11-2; ``X`` upper-case), as :func:`sanyi.privacy.is_valid_resident_id` decides."""
    return _in_c("leading_ids", texts)[0]


def _check_characters_ok(ids: pa.Array) -> pa.Array:
    """Per row: the value is an 18-character id with the right check character. Anything else goes to the
    reference (which reports the pattern or the check character)."""
    return pc.and_(_leading_id_valid(ids), _f(pc.equal(pc.binary_length(ids), 18)))  # 18 ASCII bytes


def _matches(texts: pa.Array, pattern: str) -> pa.Array:
    """Per value: the RE2 ``pattern`` matches it, False for a null; by its DFA (:mod:`sanyi.patterns`) when
    it has one."""
    if (tables := patterns.dfa(pattern)) is None:
        return _f(pc.match_substring_regex(texts, pattern))
    return _in_c("matches", texts, *tables)[0]


def _in_c(check: str, texts: pa.Array, *args: Any) -> tuple[pa.Array, bytes]:
    """(per value: it passes ``sanyi._checks.<check>`` (given ``args`` too), False for a null; what else the
    check gives)."""
    n = len(texts)
    if n == 0:
        return pa.array([], pa.bool_()), b""
    texts = texts.cast(pa.string())  # int32 offsets, as the extension reads them
    _, offsets, data = texts.buffers()
    out = getattr(extension("_checks"), check)(offsets, data if data is not None else b"", texts.offset, n, *args)
    bits, rest = (out, b"") if isinstance(out, bytes) else out
    ok = pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(bits)])
    return (pc.and_(ok, pc.is_valid(texts)) if texts.null_count else ok), rest


def maskable_ids(texts: pa.Array) -> pa.Array:
    """Per value: :func:`sanyi.privacy.mask_resident_ids` would change it; False for a null."""
    return _in_c("maskable_ids", texts)[0]


def maskable_text(text: str) -> bool:
    """:func:`sanyi.privacy.mask_resident_ids` would change ``text`` (one pass in C, without the GIL)."""
    return maskable_ids(pa.array([text], pa.string()))[0].as_py()


def _holds_valid_id(texts: pa.Array) -> pa.Array:
    """Per value: :func:`sanyi.privacy.find_resident_ids` finds an id in it (rule
    ``resident_id_in_wrong_field``); False for a null."""
    return _in_c("holding_ids", texts)[0]


# ------------------------------------------------------------------------------------- dates and times
def _parse_dates(vals: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(days since 1970-01-01 or null, ok) for ``YYYY-MM-DD`` strings that are real calendar dates in years
    1-9999, as :func:`sanyi.contracts.parse_date` reads them (``sanyi._checks.dates``)."""
    ok, days = _in_c("dates", vals)
    return pc.if_else(ok, _int64s(days, len(vals)), pa.scalar(None, pa.int64())), ok


def _parse_timestamps(vals: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(UTC microseconds or null, ok) with exactly the rules of :func:`sanyi.contracts.parse_timestamp`
    (``sanyi._checks.timestamps``: shape, calendar, offset, fraction truncated, years 1-9999 in UTC and
    UTC+08:00)."""
    ok, micros = _in_c("timestamps", vals)
    return pc.if_else(ok, _int64s(micros, len(vals)), pa.scalar(None, pa.int64())), ok


# ======================================================================================= conversion
def _convert(plan: _Plan, frame: _Frame, keep: pa.Array, line_nos: pa.Array) -> pa.Table:
    """The warehouse columns of the rows in ``keep`` (all of whose checks passed)."""
    schema = contract_schema(plan.ds)
    columns: dict[str, pa.Array] = {}
    for name in plan.ds.fields:
        f, v = plan.fields[name], frame.values[name]
        kind = f.kind
        if kind in ("string", "resident_id"):
            col = pc.filter(v.values, keep)
        elif kind == "date":
            col = pc.cast(pc.cast(pc.filter(v.parsed, keep), pa.int32()), pa.date32())
        elif kind == "timestamp":
            us = pc.filter(v.parsed, keep)
            col = us.cast(pa.timestamp("us", tz="UTC"))
            columns[plan.ds.derived_dates[name]] = (
                pc.add(us, _CST_US).cast(pa.timestamp("us")).cast(pa.date32())
            )
        elif kind == "integer":
            col = pc.cast(pc.filter(v.floats if v.exact else v.values, keep), pa.int64())
        elif kind in ("money", "price"):
            # Kept rows are multiples of the quantum inside the bound: the cast is exact (float or decimal);
            # the grid's integers, when every multiple is exact, are those decimals already.
            to = schema.field(name).type
            col = v.grid(to.scale).decimals(keep, to) if v.exact and f.places == to.scale else None
            if col is None:
                col = pc.cast(pc.filter(v.floats if v.exact else v.values, keep), to)
        elif kind == "number":
            col = pc.filter(v.floats, keep)
        elif kind == "boolean":
            col = pc.filter(v.values, keep)
        else:  # string_list
            col = pc.filter(v.values, keep)
        columns[name] = col
    columns["_line_no"] = pc.filter(line_nos, keep)
    arrays = [columns[f.name].cast(f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _reference_rows(plan: _Plan, good: list[tuple[int, dict[str, Any]]]) -> pa.Table:
    rows = []
    for line, record in good:
        row = contracts.to_warehouse_row(plan.ds, record)
        row["_line_no"] = line
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=contract_schema(plan.ds))


@dataclass(frozen=True)
class _Failing:
    """What the vectorised checks found wrong with a row: fields whose value failed, rules that failed.
    ``repaired``: the row was checked as :func:`_repaired` wrote it: its failing fields include those it lacks
    and those of the wrong JSON type, and its members outside the contract are judged apart."""

    fields: tuple[str, ...]
    rules: tuple[str, ...]
    repaired: bool = False
    # Members whose values the vectorised id scan did not clear (rule resident_id_in_wrong_field): failing
    # values of fields it skips, and the members a repaired line left out.
    scan: tuple[str, ...] = ()


def _judge(
    plan: _Plan,
    line: int,
    record: Any,
    errors: list[RecordError] | None,
    good: list,
    bad: list,
    failing: _Failing | None = None,
) -> None:
    """The reference verdict for one record (``errors`` given when it could not even be read).

    ``failing``: the fields and business rules that failed the vectorised checks, which cleared everything
    else, including the record's shape (no member unknown, no conditional schema) unless the row was
    ``repaired``. The reference then runs on those fields and rules only, and for a repaired row on its
    members outside the contract (:func:`_extra_errors`) — the same errors as
    :func:`validation.validate_record` on the whole record (a field is judged alone, ``required`` and
    ``additionalProperties`` look at names only, and a rule that passed the vectorised check reports
    nothing, skipped or not), at a fraction of the cost."""
    if (
        errors is None
        and failing is not None
        and isinstance(record, dict)
        and (failing.repaired or set(record) <= set(plan.ds.fields))
    ):
        errors = []
        for name in failing.fields:  # contract order, as validate_record sorts them
            errors += _field_errors(plan, name, record[name]) if name in record else _missing_errors(plan.ds, name)
        if failing.repaired:
            errors += _extra_errors(plan, record)  # sorted last, by path, as validate_record sorts them
        rules = failing.rules
        unscanned = {k: record[k] for k in failing.scan if k in record}
        if unscanned and _ID_RULE not in rules and _holds_id(plan, unscanned):
            rules = tuple(r for r in plan.rules if r in rules or r == _ID_RULE)
        if rules:
            errors += validation.business_rule_errors(
                _rules_dataset(plan.ds, rules), record, {validation._field_of(e.path) for e in errors}
            )
    elif errors is None:
        errors = validation.validate_record(plan.ds, record)
    if errors:
        bad.append(Rejected(line, record if isinstance(record, dict) else None, errors))
    else:
        good.append((line, record))


_FIELD_ERRORS_KEPT = 1 << 16  # values remembered per dataset; then the memo starts afresh
_MEMO_CHARS = 256  # longer values are judged each time


def _field_errors(plan: _Plan, name: str, value: Any) -> list[RecordError]:
    """The reference's errors of one field's value (:func:`validation.validate_record` on the field alone),
    remembered per value: they depend on nothing else, and a bad value usually recurs (the same wrong code
    or impossible date on many lines). Resident ids are not remembered (each person's differs)."""
    key = None if plan.fields[name].kind == "resident_id" else _value_key(value)
    found = plan.field_errors.get((name, key)) if key is not None else None
    if found is None:
        found = tuple(validation.validate_record(_sub_dataset(plan.ds, (name,)), {name: value}))
        if key is not None:
            if len(plan.field_errors) >= _FIELD_ERRORS_KEPT:
                plan.field_errors.clear()
            plan.field_errors[(name, key)] = found
    return list(found)


def _value_key(value: Any) -> Any:
    """A key equal only for values the reference cannot tell apart (``1``, ``1.0``, ``True`` and
    ``Decimal("1.00")`` all differ), or None when the value is not worth remembering."""
    if value is None or isinstance(value, bool | int):
        return (type(value).__name__, value)
    if isinstance(value, str):
        return ("str", value) if len(value) <= _MEMO_CHARS else None
    if isinstance(value, Decimal | float):
        return (type(value).__name__, repr(value))
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and sum(map(len, value)) <= _MEMO_CHARS:
        return ("list", tuple(value))
    return None


def _extra_errors(plan: _Plan, record: dict[str, Any]) -> list[RecordError]:
    """The reference's ``additionalProperties`` errors of the record's members outside the contract,
    remembered per list of names (the messages name the members, never their values)."""
    extras = tuple(k for k in record if k not in plan.fields)
    if not extras:
        return []
    found = plan.extra_errors.get(extras)
    if found is None:
        found = tuple(validation.schema_errors(_sub_dataset(plan.ds, ()), dict.fromkeys(extras)))
        if sum(map(len, extras)) <= _MEMO_CHARS:
            if len(plan.extra_errors) >= _FIELD_ERRORS_KEPT:
                plan.extra_errors.clear()
            plan.extra_errors[extras] = found
    return list(found)


@cache
def _missing_errors(ds: Dataset, name: str) -> tuple[RecordError, ...]:
    """The reference's error for a record without the contract field ``name`` (one field at a time: the
    cache stays as small as the contract)."""
    return tuple(validation.schema_errors(_sub_dataset(ds, (name,)), {}))


@cache
def _sub_dataset(ds: Dataset, names: tuple[str, ...]) -> Dataset:
    """``ds`` narrowed to some of its fields and without business rules: the reference validator on it
    reports exactly those fields' errors (every field of the contract is required and judged alone)."""
    props = ds.schema["properties"]
    schema = {
        "$schema": ds.schema.get("$schema"),
        "type": "object",
        "properties": {name: props[name] for name in names},
        "required": list(names),
        "additionalProperties": False,
    }
    return dataclasses.replace(
        ds, schema=schema, fields=names, nullable=ds.nullable & set(names), business_rules=(), file_rules=()
    )


@cache
def _rules_dataset(ds: Dataset, rules: tuple[str, ...]) -> Dataset:
    """``ds`` with only some of its business rules (in the contract's order)."""
    return dataclasses.replace(ds, business_rules=rules)


def _assemble(
    plan: _Plan, fast: pa.Table | None, good: list, bad: list, read: int, fallback: int
) -> ChunkResult:
    parts = [t for t in (fast,) if t is not None and t.num_rows]
    if good:
        parts.append(_reference_rows(plan, good))
    if not parts:
        table = contract_schema(plan.ds).empty_table()
    else:
        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        # The rows come as their readers took them (the C reader's lines first, then Arrow's, the
        # reference's last): in the file's order again, sorted once.
        line_no = table.column("_line_no")
        if len(line_no) > 1 and not pc.all(pc.less(line_no[:-1], line_no[1:])).as_py():
            table = table.sort_by("_line_no")
    bad.sort(key=lambda r: r.line)
    # A file-level rule needs the good records as read; such datasets are judged by the reference only.
    records = [rec for _, rec in sorted(good, key=lambda g: g[0])] if plan.ds.file_rules else None
    return ChunkResult(table, bad, read, fallback, records)


def check_records(ds: Dataset, records: Iterable[tuple[int, Any]]) -> ChunkResult:
    """The reference on already-parsed records ``(line, JSON model)`` (Parquet drops, file-rule datasets)."""
    plan = _plan(ds)
    good: list = []
    bad: list = []
    n = 0
    for line, record in records:
        n += 1
        _judge(plan, line, record, None, good, bad)
    return _assemble(plan, None, good, bad, n, n)


# ============================================================================================== NDJSON
_pool_lock = threading.Lock()
_pools: dict[str, ThreadPoolExecutor] = {}


def _executor(purpose: str = "parse") -> ThreadPoolExecutor:
    """The process's thread pool for ``purpose``. CSV batches get their own ("csv"): a task there waits
    for parse tasks, and a task never waits for another task of its own pool."""
    with _pool_lock:
        if purpose not in _pools:
            _pools[purpose] = ThreadPoolExecutor(_POOL_SIZE, thread_name_prefix=f"sanyi-{purpose}")
        return _pools[purpose]


def _read_json(plan: _Plan, buf: pa.Buffer) -> pa.Table:
    # One block per call, so an error's "in row N" counts from the start of this buffer.
    return pa_json.read_json(
        pa.BufferReader(buf),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=max(len(buf) + 1, 1 << 16)),
        # "error", not "infer": inferring an unknown field's type can build an invalid array ([null, "x"]).
        parse_options=pa_json.ParseOptions(
            explicit_schema=plan.json_schema, unexpected_field_behavior="error"
        ),
    )


@dataclass
class _Piece:
    """Lines of the chunk parsed together: runs of consecutive lines, ascending, given to Arrow as one text
    (a slice of the chunk when there is one run, a copy of the runs otherwise)."""

    runs: list[range]

    @property
    def lines(self) -> Sequence[int]:
        return self.runs[0] if len(self.runs) == 1 else [i for r in self.runs for i in r]


def _piece(lines: Sequence[int]) -> _Piece:
    """The piece of ``lines`` (ascending, not empty), cut into its runs of consecutive lines."""
    if isinstance(lines, range):
        return _Piece([lines])
    runs, start = [], 0
    for k in range(1, len(lines)):
        if lines[k] != lines[k - 1] + 1:
            runs.append(range(lines[start], lines[k - 1] + 1))
            start = k
    runs.append(range(lines[start], lines[-1] + 1))
    return _Piece(runs)


def _parse_piece(
    plan: _Plan, data: bytes, starts: Sequence[int], lines: pa.Array, piece: _Piece
) -> tuple[list[tuple[pa.Table, Sequence[int]]], list[int]]:
    """Parse one piece with Arrow; returns (tables with the indices of their lines, lines left out).

    A table is only accepted when it has exactly one row per line (no line given to Arrow is blank, so a
    line with two objects shows as an extra row). When Arrow stops at a line, the piece's lines are
    screened for wrong JSON types and unknown members (the usual reasons) and the others parsed again in
    one go; a line is otherwise isolated with the row number of Arrow's error, or by halving.
    """
    buf, view = pa.py_buffer(data), memoryview(data)
    tables: list[tuple[pa.Table, Sequence[int]]] = []
    failed: list[int] = []
    todo = [(piece, True)]
    while todo:
        p, screen = todo.pop()
        idx = p.lines
        if len(p.runs) > 1:
            body = pa.py_buffer(b"".join(view[starts[r.start] : starts[r.stop]] for r in p.runs))
        else:
            body = buf.slice(starts[idx[0]], starts[idx[-1] + 1] - starts[idx[0]])
        try:
            table = _read_json(plan, body)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            if len(idx) == 1:
                failed.append(idx[0])
                continue
            m = _ROW_IN_ERROR.search(str(exc))
            row = int(m.group(1)) if m else -1
            bad = {row} if 0 <= row < len(idx) else set()
            if screen:
                bad |= set(_screened(plan, pc.take(lines, pa.array(idx, pa.int64()))))
            if bad:
                failed.extend(idx[r] for r in bad)
                rest = [i for r, i in enumerate(idx) if r not in bad]
                if rest:
                    todo.append((_piece(rest), False))
            else:
                half = len(idx) // 2
                todo += [(_piece(idx[:half]), False), (_piece(idx[half:]), False)]
            continue
        if table.num_rows != len(idx):  # a line with two objects: isolate it
            if len(idx) == 1:
                failed.append(idx[0])
                continue
            half = len(idx) // 2
            todo += [(_piece(idx[:half]), False), (_piece(idx[half:]), False)]
            continue
        tables.append((table, idx))
    return tables, failed


def _screened(plan: _Plan, lines: pa.Array) -> list[int]:
    """Lines Arrow would stop at: a value whose first character is not of its field's JSON type, or a
    member that is not a field of the contract. A heuristic for speed only — Arrow's errors stay the guard."""
    return pc.indices_nonzero(_f(pc.match_substring_regex(lines, plan.wrong_type))).to_pylist()


def _pieces(starts: Sequence[int], todo: list[int]) -> list[_Piece]:
    """The lines ``todo`` (ascending), in order, in pieces of about :data:`PIECE_BYTES`: a piece ends with the
    first line that brings it to that size. A piece runs on over the lines left out between its runs: an
    Arrow call costs about 0.2 ms whatever its size, and copying the runs together costs less than a call
    per run (with a line left out every few hundred, that was half the parse's CPU)."""
    out: list[_Piece] = []
    runs: list[range] = []
    size = 0
    for run in _piece(todo).runs if todo else []:
        first, stop = run.start, run.stop
        while first < stop:
            end = min(bisect.bisect_left(starts, starts[first] + PIECE_BYTES - size, first + 1, stop + 1), stop)
            runs.append(range(first, end))
            size += starts[end] - starts[first]
            first = end
            if size >= PIECE_BYTES:
                out.append(_Piece(runs))
                runs, size = [], 0
    if runs:
        out.append(_Piece(runs))
    return out


def check_ndjson(ds: Dataset, data: bytes, first_line: int, *, starts: Sequence[int] | None = None) -> ChunkResult:
    """Validate a chunk of NDJSON: whole lines of valid UTF-8 (no BOM), numbered from ``first_line``.

    Same verdicts, errors and warehouse values as the reference on each line
    (``ingest._parse_ndjson`` then :func:`validation.validate_record`). ``starts``: the chunk's
    :func:`line_starts`, when the caller has them already.
    """
    plan = _plan(ds)
    if starts is None:
        starts = line_starts(data)
    n = len(starts) - 1
    raw = _Lines(data, starts)
    lines = _line_array(data, starts)
    tables: list[tuple[pa.Table, Sequence[int] | pa.Array]] = []
    rest = _iota(n)  # the lines the C reader declined: Arrow's and the reference's
    if plan.supported:
        plain, plain_idx, rest = _read_plain(plan, lines)
        if len(plain_idx):
            tables.append((plain, plain_idx))
    rest_lines = lines if len(rest) == n else pc.take(lines, rest)
    # When the last chunk had lines Arrow stopped at, this one is screened before parsing, rather than
    # parse pieces twice (a piece is parsed again, without the bad lines, after Arrow stops in it).
    screen = bool(_SCREEN_FIRST.get(ds.table_name)) and plan.supported
    suspect = _structural_suspects(plan, rest_lines, screen=screen)
    screened = len(_screened(plan, pc.filter(rest_lines, suspect))) if screen else 0
    fallback_idx = set(pc.filter(rest, suspect).to_pylist())
    failing: dict[int, _Failing | None] = {}
    fast = None
    todo = pc.filter(rest, pc.invert(suspect)).to_pylist()
    if todo:
        parsed_tables, failed = _parse_all(plan, data, starts, lines, todo)
        tables += parsed_tables
        fallback_idx.update(failed)
        _SCREEN_FIRST[ds.table_name] = bool(failed) or screened > 0
    # The lines left out are read by the reference reader once; those with members missing, unknown or of
    # the wrong JSON type are checked again as _repaired writes them, with the others.
    parsed = {i: _reference_line(raw[i], first_line + i) for i in sorted(fallback_idx)}
    repaired, repairs = _repaired(plan, parsed)
    tables += repaired
    if tables:
        frame, line_idx = _ndjson_frame(plan, raw, tables, repairs)
        accept, fields, rules = _evaluate_fields(plan, frame)
        fast = _convert(plan, frame, accept, pc.add(line_idx, first_line))
        failing = _failing_fields(plan, frame, accept, fields, rules, line_idx, repairs)
        fallback_idx.update(failing)
    good: list = []
    bad: list = []
    blank = 0
    for i in sorted(fallback_idx):
        parsed_i = parsed[i] if i in parsed else _reference_line(raw[i], first_line + i)
        if parsed_i is None:
            blank += 1
            continue
        _judge(plan, parsed_i.line, parsed_i.record, parsed_i.errors or None, good, bad, failing.get(i))
    return _assemble(plan, fast, good, bad, n - blank, len(fallback_idx) - blank)


@dataclass(frozen=True)
class _Repair:
    """What the repaired line left out: contract fields (absent from the record, or of the wrong JSON type),
    which fail whatever their null reads as, and the record's members (those of the wrong type and those
    outside the contract), which the vectorised id scan did not see."""

    fields: frozenset[str]
    members: tuple[str, ...]


_REPAIR_ENCODER = msgspec.json.Encoder(decimal_format="number")  # a Decimal as the number it was written as
# The Python types the reference reader gives a value Arrow reads into each kind's column (bool is not an
# int here: JSON true is no number).
_STRING = frozenset({str})
_JSON_TYPES: dict[str, frozenset[type]] = {
    "integer": frozenset({int, Decimal}),
    "number": frozenset({int, Decimal}),
    "money": frozenset({int, Decimal}),
    "price": frozenset({int, Decimal}),
    "boolean": frozenset({bool}),
    "string_list": frozenset({list}),
}


def _repaired(
    plan: _Plan, parsed: dict[int, Any]
) -> tuple[list[tuple[pa.Table, Sequence[int]]], dict[int, _Repair]]:
    """Arrow's parse of the lines whose record has members missing, unknown or of the wrong JSON type,
    written again with only the contract fields of the right type (the reference judges the others alone,
    see :func:`_judge`). A whole file with an extra column, a dropped one or quoted numbers is then
    checked column-wise rather than record by record. Returns the tables (indexed by the chunk's lines)
    and, per line that reached a table, what was repaired."""
    if not parsed or not _repairable(plan):
        return [], {}
    types = {name: _JSON_TYPES.get(f.kind, _STRING) for name, f in plan.fields.items()}
    names = types.keys()
    texts: list[bytes] = []
    lines: list[int] = []
    found: dict[int, _Repair] = {}
    for i, p in parsed.items():
        record = p.record if p is not None and not p.errors else None
        if not isinstance(record, dict):
            continue
        members = record.keys()
        extras = not members <= names  # set operations on the keys views run in C
        missing = frozenset(names - members)
        wrong = [  # the reference reader's exact types
            name for name, value in record.items()
            if value is not None and name in types and type(value) not in types[name]
        ]
        if not (missing or wrong or extras):
            continue  # left out for another reason (a long number, a blank …): the reference judges it
        kept = {name: record[name] for name in plan.ds.fields if name in record and name not in wrong}
        try:
            texts.append(_REPAIR_ENCODER.encode(kept))
        except (TypeError, ValueError, OverflowError):  # anything msgspec cannot write: the reference judges it
            continue
        lines.append(i)
        found[i] = _Repair(missing | set(wrong), tuple(k for k in record if k not in kept))
    if not texts:
        return [], {}
    data = b"\n".join(texts) + b"\n"
    starts = line_starts(data)
    arr = _line_array(data, starts)
    todo = pc.indices_nonzero(pc.invert(_structural_suspects(plan, arr))).to_pylist()
    tables, _ = _parse_all(plan, data, starts, arr, todo)
    out = [(table, [lines[k] for k in idx]) for table, idx in tables]
    return out, {i: found[i] for _, idx in out for i in idx}


_ID_RULE = "resident_id_in_wrong_field"


def _holds_id(plan: _Plan, members: dict[str, Any]) -> bool:
    """Whether the reference's rule ``resident_id_in_wrong_field`` (if the dataset has it) finds an id in
    these members: then it runs on the whole record, for its exact errors."""
    return _ID_RULE in plan.rules and bool(
        validation.business_rule_errors(_rules_dataset(plan.ds, (_ID_RULE,)), members)
    )


def _repairable(plan: _Plan) -> bool:
    """Whether member names can be judged apart: no conditional schema, every contract field required and
    no other member allowed (what :func:`_missing_errors` and :func:`_extra_errors` reproduce)."""
    schema = plan.ds.schema
    return (
        plan.supported
        and not plan.conds
        and schema.get("additionalProperties") is False
        and set(schema.get("required", ())) == set(plan.ds.fields)
    )


def _failing_fields(
    plan: _Plan,
    frame: _Frame,
    accept: pa.Array,
    fields: dict[str, pa.Array],
    rules: dict[str, pa.Array],
    line_idx: pa.Array,
    repairs: dict[int, _Repair] | None = None,
) -> dict[int, _Failing | None]:
    """Rejected rows (by line index) with the fields and rules that failed their checks, or None when the
    partial reference does not apply (a row-level flag, a conditional schema)."""
    repairs = repairs or {}
    rows = pc.indices_nonzero(pc.invert(accept))
    lines = pc.take(line_idx, rows).to_pylist()
    if plan.conds or not fields:
        return dict.fromkeys(lines)
    row_level = pc.take(frame.row_ok, rows).to_pylist()
    per_field = {name: pc.take(mask, rows).to_pylist() for name, mask in fields.items()}
    per_rule = {name: pc.take(mask, rows).to_pylist() for name, mask in rules.items()}
    unscanned = {f.name for f in plan.fields.values() if not f.scan_ids and f.kind != "resident_id"}
    out: dict[int, _Failing | None] = {}
    for k, line in enumerate(lines):
        repair = repairs.get(line)
        if repair is None and not row_level[k]:
            out[line] = None
            continue
        # A field the repaired line left out reads as null there, which may pass: it fails all the same.
        left_out = frozenset() if repair is None else repair.fields
        bad = tuple(name for name in plan.ds.fields if not per_field[name][k] or name in left_out)
        failed = tuple(rule for rule in plan.rules if not per_rule[rule][k])
        # An invalid value of a field the id scan skips (its pattern rules ids out) may hold one; so may a
        # member the repaired line left out. _judge asks the rule about those members first.
        scan = tuple(name for name in bad if name in unscanned) + (() if repair is None else repair.members)
        out[line] = _Failing(bad, failed, repaired=repair is not None, scan=scan)
    return out


def _structural_suspects(plan: _Plan, lines: pa.Array, *, screen: bool = False) -> pa.Array:
    """Lines Arrow must not be given (the reference judges them): a line that does not start with ``{`` (a
    blank line would shift rows against lines; a block starting with ``null`` crashes Arrow), a bare CR
    (Arrow ends a row there), a number a float64 may not hold exactly (16+ digits, an exponent), a line
    over the reference's record size limit, or every line when the plan does not model the dataset.

    ``screen`` adds the lines :func:`_screened` finds, in the same regex pass, which costs about what the
    screen alone costs (measured per byte of a 16 MiB chunk: the long-number pattern 0.65 ns, which RE2 skips
    through from colon to colon; the screen 2.1 ns; both 2.2 ns). Only the lines the C reader declined are
    given to it (:func:`check_ndjson`)."""
    n = len(lines)
    if not plan.supported or n == 0:
        return _trues(n)
    suspect = pc.or_(
        pc.invert(pc.starts_with(lines, "{")), pc.greater(pc.binary_length(lines), _max_line() + 1)
    )
    pattern = f"{_LONG_NUMBER}|{plan.wrong_type}" if screen else _LONG_NUMBER
    # The bare CR joins the same regex pass (RE2 skips from colon or CR to the next): looking for a CR in the
    # whole chunk first cost a pass over it, and the lines given are usually a few the C reader declined.
    return pc.or_(suspect, _f(pc.match_substring_regex(lines, rf"{pattern}|\r[^\n]")))


def _parse_all(
    plan: _Plan, data: bytes, starts: Sequence[int], lines: pa.Array, todo: list[int]
) -> tuple[list[tuple[pa.Table, Sequence[int]]], list[int]]:
    """Arrow's parse of the lines ``todo``, piece by piece on a small thread pool (Arrow releases the GIL)."""
    pieces = _pieces(starts, todo)
    if len(pieces) == 1:
        results = [_parse_piece(plan, data, starts, lines, pieces[0])]
    else:
        results = list(_executor().map(lambda p: _parse_piece(plan, data, starts, lines, p), pieces))
    tables = [t for r in results for t in r[0]]
    failed = [i for r in results for i in r[1]]
    return tables, failed


def line_starts(data: bytes) -> Sequence[int]:
    """Offsets where each line starts, and the end of the data (a last line may lack its line break): int32,
    the offsets of :func:`_line_array`'s string array, found by ``memchr`` in ``sanyi._ndjson`` without the
    GIL (a list of ints took it for 2-3 ms a 16 MiB chunk)."""
    return memoryview(extension("_ndjson").line_starts(data)).cast("i")


_READER_KINDS = {pa.float64(): "f", pa.bool_(): "b", pa.list_(pa.string()): "l", pa.string(): "s"}


@cache
def _reader_fields(ds: Dataset) -> tuple[tuple[bytes, ...], bytes]:
    """The contract's field names and their kinds as the C reader takes them (from what Arrow is told)."""
    schema = _plan(ds).json_schema
    return tuple(f.name.encode() for f in schema), "".join(_READER_KINDS[f.type] for f in schema).encode()


def _read_plain(plan: _Plan, lines: pa.Array) -> tuple[pa.Table, pa.Array, pa.Array]:
    """(the plain lines as Arrow would read them, their indices, the indices of the other lines).

    Plain: one flat object of contract fields, each once, strings whose escapes are JSON's (no lone
    surrogate, no ``\u0000``), numbers of at most 15 digits without exponent, no line over the
    reference's size limit. ``sanyi._ndjson`` reads them in one
    pass without the GIL, into the values Arrow's reader gives (tests/test_ndjson_reader.py compares the
    two); every other line is declined and goes to Arrow and the reference as before."""
    names, kinds = _reader_fields(plan.ds)
    _, offsets, data = lines.buffers()
    plain, declined, columns = extension("_ndjson").read_plain_lines(
        names, kinds, offsets, data, lines.offset, len(lines), _max_line()
    )
    rows = len(plain) // 8
    arrays = []
    for f, kind, buffers in zip(plan.json_schema, kinds.decode(), columns, strict=True):
        bufs = [pa.py_buffer(b) for b in buffers]
        if kind == "l":
            items = pa.Array.from_buffers(pa.string(), len(buffers[2]) // 4 - 1, [None, bufs[2], bufs[3]])
            arrays.append(pa.Array.from_buffers(f.type, rows, bufs[:2], children=[items]))
        else:
            arrays.append(pa.Array.from_buffers(f.type, rows, bufs))
    table = pa.Table.from_arrays(arrays, schema=plan.json_schema)
    return table, _int64s(plain), _int64s(declined)


def _int64s(buffer: bytes, n: int | None = None) -> pa.Array:
    """The int64 values of ``buffer`` (its first ``n``) as an array, without a copy."""
    return pa.Array.from_buffers(pa.int64(), len(buffer) // 8 if n is None else n, [None, pa.py_buffer(buffer)])


def _line_array(data: bytes, starts: Sequence[int]) -> pa.Array:
    """Each line with its line break as an Arrow string array over ``data`` itself (no copy)."""
    return pa.Array.from_buffers(pa.string(), len(starts) - 1, [None, pa.py_buffer(starts), pa.py_buffer(data)])


class _Lines:
    """Line ``i`` of a chunk, without its line break, sliced out when asked for."""

    def __init__(self, data: bytes, starts: Sequence[int]) -> None:
        self.data, self.starts = data, starts

    def __getitem__(self, i: int) -> bytes:
        a, b = self.starts[i], self.starts[i + 1]
        return self.data[a : b - 1] if self.data[b - 1 : b] == b"\n" else self.data[a:b]


def _reference_line(raw: bytes, line: int) -> Any:
    """The reference reader on one line (``ingest._parse_ndjson``): its Parsed, or None when blank."""
    from sanyi import ingest

    for parsed in ingest._parse_ndjson(raw.decode("utf-8")):
        parsed.line = line
        return parsed
    return None


def _max_line() -> int:
    from sanyi import ingest

    return int(ingest.MAX_RECORD_CHARS)


def _ndjson_frame(
    plan: _Plan,
    raw: _Lines,
    tables: list[tuple[pa.Table, Sequence[int]]],
    repairs: dict[int, _Repair] | None = None,
) -> tuple[_Frame, pa.Array]:
    """Stack the parsed pieces and turn Arrow's values into the checks' view of the JSON model; also the
    index of each row's line in the chunk. Repaired rows (``repairs``, by line) are never accepted: their
    record is not what Arrow read, and which fields it lacks is known already."""
    names = list(plan.fields)
    table = pa.concat_tables([t.select(names) for t, _ in tables]).combine_chunks()
    n = table.num_rows
    line_idx = pa.concat_arrays(
        [
            idx if isinstance(idx, pa.Array)
            else pc.add(_iota(len(idx)), idx[0]) if isinstance(idx, range)
            else pa.array(idx, pa.int64())
            for _, idx in tables
        ]
    )
    row_ok = _trues(n)
    values: dict[str, _Values] = {}
    for name, f in plan.fields.items():
        col = one_array(table.column(name))
        null = col.is_null()
        if f.kind in ("integer", "number", "money", "price"):
            # NaN and Infinity are read by Arrow, never by the reference. Otherwise the float is exactly the
            # number as written: _structural_suspects sent every line with a longer number elsewhere.
            ok = pc.or_(null, _f(pc.is_finite(col)))
            values[name] = _Values(None, null, ok, floats=col, exact=True)
        else:
            values[name] = _Values(col, null, _trues(n))
    repaired = _falses(n)
    if repairs:
        repaired = pc.is_in(line_idx, value_set=pa.array(list(repairs), pa.int64()))
        row_ok = pc.invert(repaired)
    # A nullable field left out of its line fails its check (the reference reports it as missing).
    for name, absent in _absent(plan, raw, values, line_idx, repaired).items():
        values[name].ok = pc.and_(values[name].ok, pc.invert(absent))
    return _Frame(n, values, row_ok), line_idx


def _absent(
    plan: _Plan, lines: _Lines, values: dict[str, _Values], line_idx: pa.Array, skip: pa.Array
) -> dict[str, pa.Array]:
    """Per nullable field: rows where it reads as null but the line does not hold it as ``null`` (Arrow
    reads a member left out as null too). Rows in ``skip`` are not looked at.

    The regex can only match a real key: inside a JSON string every quote is escaped, so ``{"`` / ``,"``
    followed by the name and a colon starts a member. A key written with escapes is not found: the field
    then fails its check and the reference judges it (which is right either way).
    """
    n = len(line_idx)
    patterns = {
        f.name: re.compile(
            rb'[{,][ \t\r]*"' + re.escape(f.name.encode()) + rb'"[ \t\r]*:[ \t\r]*null[ \t\r]*[,}]'
        )
        for f in plan.fields.values()
        if f.null_ok
    }
    need = {name: pc.and_(values[name].null, pc.invert(skip)) for name in patterns}
    out: dict[str, pa.Array] = {}
    idx: list[int] | None = None
    for name, rx in patterns.items():
        if need[name].true_count == 0:
            continue
        idx = line_idx.to_pylist() if idx is None else idx
        absent = [r for r in pc.indices_nonzero(need[name]).to_pylist() if not rx.search(lines[idx[r]])]
        if absent:
            out[name] = _rows_with(n, pa.array(absent, pa.int64()))
    return out


# ================================================================================================== CSV
_NEWLINE = re.compile(r"\r\n|\r|\n")


def iter_csv(ds: Dataset, texts: Iterator[str], *, batch_rows: int = 65536) -> Iterator[ChunkResult]:
    """Validate a CSV drop given as decoded text pieces that end at line breaks (the first without BOM).

    Same records, line numbers, errors and warehouse values as ``ingest._parse_csv`` plus the reference.
    Pieces without quotes, bare CRs, NULs or overlong lines are cut into cells by Arrow; from the first piece
    that has one, the rest of the file is read by Python's ``csv`` module exactly like the reference. Raises
    :class:`HeaderRejected` for a header that makes the file unreadable.
    """
    plan = _plan(ds)
    texts = iter(texts)
    first = ""
    for first in texts:
        if first:
            break
    if not first:
        return
    header_end = first.find("\n")
    header_text = first if header_end < 0 else first[: header_end + 1]
    bare = header_text.removesuffix("\n").removesuffix("\r")
    if '"' in header_text or "\r" in bare or "\x00" in header_text or len(header_text) > _csv_line_limit():
        yield from _csv_python(
            plan, _chain_text(first, texts), header=None, line_offset=0, batch_rows=batch_rows
        )
        return
    header = _csv_header(plan, bare)
    line = 2
    # Two simple pieces are checked at once (Arrow releases the GIL); results come out in file order.
    pending: collections.deque[Future[tuple[ChunkResult, int]]] = collections.deque()
    try:
        for piece in _chain_text(first[len(header_text) :], texts):
            if not piece:
                continue
            if not _csv_simple(piece):
                while pending:
                    yield pending.popleft().result()[0]
                rest = _chain_text(piece, texts)
                yield from _csv_python(plan, rest, header=header, line_offset=line - 1, batch_rows=batch_rows)
                return
            pending.append(_executor("csv").submit(_csv_arrow, plan, header, piece, line))
            line += piece.count("\n")  # only the last piece may lack its final line break
            if len(pending) >= _POOL_SIZE:
                yield pending.popleft().result()[0]
        while pending:
            yield pending.popleft().result()[0]
    finally:
        for f in pending:
            f.cancel()


def _csv_simple(piece: str) -> bool:
    """No quotes, NULs, bare CRs or long lines: every line is one row whose cells split on commas."""
    if '"' in piece or "\x00" in piece or ("\r" in piece and piece.count("\r") != piece.count("\r\n")):
        return False
    # A line longer than the limit holds a whole aligned window of half the limit without a line break.
    half = _csv_line_limit() // 2
    return all(piece.find("\n", start, start + half) >= 0 for start in range(0, len(piece) - half + 1, half))


def _csv_line_limit() -> int:
    """Lines up to this long cannot hit the record limit nor Python csv's field size limit (a csv.Error)."""
    return min(_max_line(), csv.field_size_limit())


def _chain_text(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _csv_header(plan: _Plan, text: str) -> list[str]:
    """The reference's header handling (``ingest._parse_csv``) on a quote-free header line."""
    header = [h.strip() for h in next(csv.reader([text], strict=True), [])]
    _check_header(plan, header)
    return header


def _check_header(plan: _Plan, header: list[str]) -> None:
    if len(header) == 1 and any(sep in header[0] for sep in (";", "\t", "|")):
        raise HeaderRejected("CSV header has a single column: the delimiter must be a comma")
    try:
        contracts.check_csv_header(plan.ds, header)
    except contracts.ContractError as exc:
        raise HeaderRejected(str(exc)) from exc


def _csv_arrow(plan: _Plan, header: list[str], text: str, first_line: int) -> tuple[ChunkResult, int]:
    """A simple piece: Arrow cuts cells; a piece with odd lines (wrong cell count, blank lines) goes line
    by line through the reference's rules."""
    lines_total = text.count("\n") + (0 if text.endswith("\n") else 1)
    odd: list[Any] = []
    table = None
    # Arrow drops a byte order mark at the start of what it reads: a piece whose first row starts with U+FEFF
    # would lose it from its first cell (the reference keeps it, and rejects the value).
    if not text.startswith(("\n", "\r\n", "\ufeff")) and "\n\n" not in text and "\n\r\n" not in text:
        try:
            table = pa_csv.read_csv(
                io.BytesIO(text.encode("utf-8")),
                read_options=pa_csv.ReadOptions(column_names=header, use_threads=True, block_size=1 << 24),
                parse_options=pa_csv.ParseOptions(
                    quote_char=False,
                    escape_char=False,
                    ignore_empty_lines=False,
                    invalid_row_handler=lambda row: odd.append(row) or "skip",
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types={h: pa.string() for h in header},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowKeyError):
            table = None
    if table is None or odd or table.num_rows != lines_total:
        rows = list(_csv_rows_by_line(text, first_line, len(header)))
        return _csv_batch(plan, header, rows, len(rows)), lines_total
    columns = {h: one_array(table.column(i)) for i, h in enumerate(header)}
    line_nos = pc.add(_iota(lines_total), first_line)
    return _csv_evaluate(plan, header, columns, line_nos, [], [], lines_total), lines_total


def _csv_rows_by_line(
    text: str, first_line: int, width: int
) -> Iterator[tuple[int, list[str] | RecordError]]:
    """Simple lines as the reference's ``csv.reader`` loop sees them: blank ones skipped, a wrong number of
    cells an error (no quotes, so a line is a row and its cells are split on commas)."""
    last = text.count("\n")
    for i, raw in enumerate(text.split("\n")):
        line = raw.removesuffix("\r")
        if i == last and not line:
            break
        row = next(csv.reader([line], strict=True), [])
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != width:
            yield (
                first_line + i,
                RecordError("", "csv_shape", f"row has {len(row)} cells, the header has {width}"),
            )
        else:
            yield first_line + i, row


class _StreamLines:
    """``ingest._Lines`` over a stream of pieces: physical lines with their ends, counted in ``n``; a line
    over the record limit raises ``ingest._LineTooLong``."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self.pieces, self.buf, self.pos, self.n = pieces, "", 0, 0
        self.limit = _max_line()

    def __iter__(self) -> _StreamLines:
        return self

    def __next__(self) -> str:
        from sanyi import ingest

        while True:
            m = _NEWLINE.search(self.buf, self.pos)
            if m is not None and (m.group() != "\r" or m.end() < len(self.buf)):
                break  # a whole line (a CR at the very end might still be followed by LF)
            more = next(self.pieces, None)
            if more is None:
                break
            self.buf, self.pos = self.buf[self.pos :] + more, 0
        if self.pos >= len(self.buf):
            raise StopIteration
        m = _NEWLINE.search(self.buf, self.pos)
        start, self.pos = self.pos, m.end() if m else len(self.buf)
        self.n += 1
        if self.pos - start > self.limit:
            raise ingest._LineTooLong(self.pos - start)
        return self.buf[start : self.pos]


def _csv_python(
    plan: _Plan, texts: Iterator[str], *, header: list[str] | None, line_offset: int, batch_rows: int
) -> Iterator[ChunkResult]:
    """The rest of a CSV file through Python's ``csv`` module, with the reference's loop verbatim."""
    from sanyi import ingest

    lines = _StreamLines(texts)
    reader = csv.reader(lines, strict=True)
    if header is None:
        try:
            raw = next(reader, None)
        except csv.Error as exc:
            raise HeaderRejected(f"CSV header could not be read: {exc}") from exc
        except ingest._LineTooLong as exc:
            raise HeaderRejected(f"CSV header could not be read: {ingest._too_large(exc.length)}") from exc
        if raw is None:
            return
        header = [h.strip() for h in raw]
        _check_header(plan, header)
    batch: list[tuple[int, list[str] | RecordError]] = []
    while True:
        line = lines.n + 1 + line_offset  # where the next record starts (a quoted cell may span lines)
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            batch.append((line, RecordError("", "csv_syntax", f"malformed CSV: {exc}")))
            continue
        except ingest._LineTooLong as exc:
            batch.append((line, RecordError("", "record_too_large", ingest._too_large(exc.length))))
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            batch.append(
                (
                    line,
                    RecordError("", "csv_shape", f"row has {len(row)} cells, the header has {len(header)}"),
                )
            )
            continue
        batch.append((line, row))
        if len(batch) >= batch_rows:
            yield _csv_batch(plan, header, batch, len(batch))
            batch = []
    if batch:
        yield _csv_batch(plan, header, batch, len(batch))


def _csv_batch(
    plan: _Plan, header: list[str], rows: list[tuple[int, list[str] | RecordError]], read: int
) -> ChunkResult:
    unreadable = [(line, r) for line, r in rows if isinstance(r, RecordError)]
    cells = [(line, r) for line, r in rows if not isinstance(r, RecordError)]
    columns = {h: pa.array([r[i] for _, r in cells], pa.string()) for i, h in enumerate(header)}
    line_nos = pa.array([line for line, _ in cells], pa.int64())
    bad = [Rejected(line, None, [err]) for line, err in unreadable]
    return _csv_evaluate(plan, header, columns, line_nos, bad, [], read)


def _csv_evaluate(
    plan: _Plan,
    header: list[str],
    columns: dict[str, pa.Array],
    line_nos: pa.Array,
    bad: list[Rejected],
    good: list,
    read: int,
) -> ChunkResult:
    n = len(line_nos)
    fast = None
    fallback = 0
    if n:
        exact_header = sorted(header) == sorted(plan.ds.csv_fields)
        failing: dict[int, _Failing | None] = {}
        if plan.supported and exact_header:
            frame = _csv_frame(plan, columns, n)
            accept, fields, rules = _evaluate_fields(plan, frame)
            fast = _convert(plan, frame, accept, line_nos)
            failing = _failing_fields(plan, frame, accept, fields, rules, _iota(n))
        else:
            accept = _falses(n)
        rejected = pc.indices_nonzero(pc.invert(accept))
        fallback = len(rejected)
        if fallback:
            rows = rejected.to_pylist()
            lines = pc.take(line_nos, rejected).to_pylist()
            texts = [pc.take(columns[h], rejected).to_pylist() for h in header]
            for i, line in enumerate(lines):
                record = contracts.record_from_csv(plan.ds, {h: texts[j][i] for j, h in enumerate(header)})
                _judge(plan, line, record, None, good, bad, failing.get(rows[i]))
    return _assemble(plan, fast, good, bad, read, fallback)


def _csv_frame(plan: _Plan, columns: dict[str, pa.Array], n: int) -> _Frame:
    """Cell texts as the JSON model ``contracts.record_from_csv`` builds: empty → null, ``true``/``false``
    booleans, JSON-number texts numbers (anything else stays text, a type error), arrays empty."""
    values: dict[str, _Values] = {}
    row_ok = _trues(n)
    for name, f in plan.fields.items():
        if f.kind == "string_list":
            empty = pa.repeat(pa.scalar([], pa.list_(pa.string())), n)
            values[name] = _Values(empty, _falses(n), _trues(n))
            continue
        text = columns[name]
        null = pc.equal(text, "")
        if f.kind in ("integer", "number", "money", "price"):
            # The reference scans an integer of 17+ digits for resident ids (rule resident_id_in_wrong_field):
            # such rows are left to it (NDJSON sends every number of 16+ digits there anyway).
            row_ok = pc.and_(row_ok, pc.invert(_f(pc.match_substring_regex(text, r"^[1-9][0-9]{16,}\z"))))
            held = pc.or_(null, _f(pc.match_substring_regex(text, _CSV_NUMBER)))
            safe = pc.if_else(pc.and_(held, pc.invert(null)), text, pa.scalar(None, pa.string()))
            dec = pc.cast(safe, _DEC)
            floats = pc.cast(safe, pa.float64())
            values[name] = _Values(dec, null, held, floats=floats)
        elif f.kind == "boolean":
            is_true, is_false = pc.equal(text, "true"), pc.equal(text, "false")
            values[name] = _Values(is_true, null, pc.or_(null, pc.or_(is_true, is_false)))
        else:
            values[name] = _Values(pc.if_else(null, pa.scalar(None, pa.string()), text), null, _trues(n))
    return _Frame(n, values, row_ok)
