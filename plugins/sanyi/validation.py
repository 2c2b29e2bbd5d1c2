"""Record validation: the reference semantics of the contracts.

A record (the JSON model of one line or row, see :mod:`sanyi.contracts`) is judged in two steps:

1. its dataset's JSON Schema, with the ``jsonschema`` package's Draft 2020-12 validator, extended so
   that numbers are judged on the decimal value as written (``Decimal`` is a number, an integral value
   such as ``3.0`` is an integer, ``multipleOf`` is exact), and with strict ``date`` / ``date-time``
   format checks (real calendar dates; RFC 3339 with seconds) — :func:`schema_errors`;
2. every business rule the dataset lists in ``x-sanyi.business_rules`` — :func:`business_rule_errors`,
   skipping the rules whose inputs already broke the schema (one mistake, one error line).

Any faster path (vectorised Arrow checks, ``jsonschema-rs``) must produce the same errors as
:func:`validate_record` on every record; the two steps are separate functions so it can replace step 1
and keep step 2, and be differential-tested against this module.

Messages never contain a resident id: values are masked with :func:`sanyi.privacy.mask_resident_ids`,
and the value of a ``resident_id`` field (``patient_id``) is never quoted at all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal, Inexact
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import extend

from sanyi.contracts import Dataset, parse_date, parse_timestamp
from sanyi.privacy import MASK, find_resident_ids, is_valid_resident_id, mask_in, mask_resident_ids

__all__ = [
    "FILE_RULES",
    "RECORD_RULES",
    "RecordError",
    "business_rule_errors",
    "normalise_numbers",
    "schema_errors",
    "validate_file",
    "validate_record",
    "validator_for",
]

_MAX_SHOWN = 60  # characters of a value quoted in a message


@dataclass(frozen=True)
class RecordError:
    """One broken rule of one record.

    ``path`` is a JSON pointer to the field (``/amount``, ``/trace_codes/2``; ``""`` for the record as a
    whole); a missing or unexpected field is reported at its own path. ``rule`` is the JSON Schema
    keyword (``required``, ``type``, ``pattern``, …) or a business-rule id. ``message`` is for people and
    never holds a resident id.
    """

    path: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """``{"path", "rule", "message"}`` for an errors file line."""
        # Not dataclasses.asdict, which deep-copies each field: a fifth of an errors file line's cost.
        return {"path": self.path, "rule": self.rule, "message": self.message}


# JSON allows these raw inside a string; escaped, so that a line of an errors file is one line for every reader.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def error_line(line: int, error: RecordError) -> str:
    """``error`` of the record at ``line`` as one line of an errors file (contracts.md), without the line
    break: JSON, other languages' text as it is, except U+0085, U+2028 and U+2029, which are escaped. A
    reader that splits text at every Unicode line break (Python's ``str.splitlines``, many editors) would
    otherwise cut an error whose message quotes a value holding one."""
    return error_lines([(line, error)])[:-1]


def error_lines(errors: Iterable[tuple[int, RecordError]]) -> str:
    """:func:`error_line` of each (line, error), each followed by a line break, as one text."""
    text = "".join([_ERROR_JSON.encode({"line": line, **e.as_dict()}) + "\n" for line, e in errors])
    return text.translate(_LINE_BREAKS) if any(c in text for c in _BREAK_CHARS) else text


_ERROR_JSON = json.JSONEncoder(ensure_ascii=False)
_BREAK_CHARS = ("\x85", "\u2028", "\u2029")


# ------------------------------------------------------------------------------------------ the validator
def _is_number(checker: Any, instance: object) -> bool:
    if isinstance(instance, bool):
        return False
    if isinstance(instance, int):
        return True
    if isinstance(instance, float):
        return math.isfinite(instance)
    if isinstance(instance, Decimal):
        return instance.is_finite()
    return False


def _is_integer(checker: Any, instance: object) -> bool:
    # JSON Schema: an integer is a number with a zero fractional part, however it is written (3.0, 1E+2).
    if not _is_number(checker, instance):
        return False
    if isinstance(instance, int):
        return True
    if isinstance(instance, float):
        return instance.is_integer()
    assert isinstance(instance, Decimal)
    return instance == instance.to_integral_value()


def _multiple_of(validator: Validator, divisor: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[
    ValidationError
]:
    """``multipleOf`` on exact decimals (jsonschema's own uses ``%``, which fails on very large Decimals)."""
    if not validator.is_type(instance, "number"):
        return
    d, q = _to_decimal(instance), _to_decimal(divisor)
    digits = len(d.as_tuple().digits) + len(q.as_tuple().digits) + 5
    ctx = Context(prec=digits, Emax=999_999_999_999_999_999, Emin=-999_999_999_999_999_999)
    quotient = ctx.divide(d, q)
    # An exact multiple has an integral quotient with no more digits than the dividend, so an inexact
    # division (or a fractional quotient) means "not a multiple".
    if ctx.flags[Inexact] or quotient != quotient.to_integral_value(context=ctx):
        yield ValidationError(f"{instance!r} is not a multiple of {divisor}")


def _to_decimal(value: int | float | Decimal) -> Decimal:
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


_FORMATS = FormatChecker(formats=())
_FORMATS.checks("date")(lambda instance: not isinstance(instance, str) or parse_date(instance) is not None)
_FORMATS.checks("date-time")(
    lambda instance: not isinstance(instance, str) or parse_timestamp(instance) is not None
)

_SanyiValidator = extend(
    Draft202012Validator,
    validators={"multipleOf": _multiple_of},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"number": _is_number, "integer": _is_integer}
    ),
)


@cache
def validator_for(ds: Dataset) -> Validator:
    """The compiled reference validator of a dataset's schema (cached per dataset)."""
    return _SanyiValidator(ds.schema, format_checker=_FORMATS)


def normalise_numbers(value: Any) -> Any:
    """A copy of a JSON-model value with finite floats replaced by the ``Decimal`` of their shortest repr,
    so every number is judged as written (a caller that parsed ``19.99`` as a float still gets 19.99)."""
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: normalise_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise_numbers(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------- messages
def _pointer(parts: Iterable[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _field_of(path: str) -> str:
    head = path.split("/")[1] if path.startswith("/") else ""
    return head.replace("~1", "/").replace("~0", "~")


def _show_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        text = str(value)
    else:
        # Masked before it is quoted too: quoting writes a control character as \u0001, whose digits would
        # join an id's next to it into a longer run, which masking leaves (it is not an id by definition).
        value = mask_in(value)
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = type(value).__name__
    text = mask_resident_ids(text)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def _type_name(t: Any) -> str:
    return " or ".join(t) if isinstance(t, list) else str(t)


def _shown(ds: Dataset, path: str, value: Any) -> str:
    field = _field_of(path)
    if ds.kinds.get(field) == "resident_id":
        return f"the {field} value"  # never quoted, even when it is not a valid id
    if path == "":
        return "the record"
    return _show_value(value)


def _message(ds: Dataset, err: ValidationError, path: str) -> str:
    kw, expected, value = err.validator, err.validator_value, err.instance
    shown = _shown(ds, path, value)
    description = err.schema.get("description") if isinstance(err.schema, Mapping) else None
    if kw == "type":
        if path == "":
            return "the record is not a JSON object"
        text = f"{shown} is not of type {_type_name(expected)}"
    elif kw == "enum":
        options = ", ".join(_show_value(v) for v in expected)
        text = f"{shown} is not one of {options}"
    elif kw == "const":
        text = f"{shown} is not {_show_value(expected)}"
    elif kw == "pattern":
        text = f"{shown} does not have the required form" + (f" ({description})" if description else "")
    elif kw == "format":
        form = "a real calendar date YYYY-MM-DD" if expected == "date" else (
            "an RFC 3339 timestamp with seconds and Z or an offset, e.g. 2024-10-03T09:12:00+08:00"
        )
        text = f"{shown} is not {form}"
    elif kw == "minLength":
        text = f"{shown} is shorter than {expected} characters"
    elif kw == "maxLength":
        text = f"{shown} is longer than {expected} characters"
    elif kw == "minimum":
        text = f"{shown} is less than {expected}"
    elif kw == "maximum":
        text = f"{shown} is greater than {expected}"
    elif kw == "exclusiveMinimum":
        text = f"{shown} is not greater than {expected}"
    elif kw == "exclusiveMaximum":
        text = f"{shown} is not less than {expected}"
    elif kw == "multipleOf":
        places = -_to_decimal(expected).as_tuple().exponent
        is_power_of_ten = _to_decimal(expected).as_tuple().digits == (1,)
        text = (
            f"{shown} has more than {places} decimal places"
            if is_power_of_ten and places > 0
            else f"{shown} is not a multiple of {expected}"
        )
    elif kw == "uniqueItems":
        seen: set[Any] = set()
        repeated = []
        for item in value if isinstance(value, list) else []:
            key = json.dumps(item, sort_keys=True, default=str)
            if key in seen and item not in repeated:
                repeated.append(item)
            seen.add(key)
        text = "items repeat: " + ", ".join(_show_value(v) for v in repeated)
    else:
        # Keywords the contracts do not use today. Not jsonschema's message: it quotes the value with repr,
        # whose escapes (\x01) can hide an id from masking, as above.
        text = f"{shown} breaks {kw}"
    text = mask_resident_ids(text)
    # A constraint from a conditional (allOf / if / then) says why in its description.
    schema_path = list(err.schema_path)
    if len(schema_path) >= 2 and schema_path[0] == "allOf":
        why = ds.schema["allOf"][schema_path[1]].get("description")
        if why:
            text = f"{text}: {why}"
    return text


def _convert(ds: Dataset, err: ValidationError) -> Iterator[RecordError]:
    base = list(err.absolute_path)
    if err.validator == "required" and isinstance(err.instance, dict):
        for name in err.validator_value:
            if name not in err.instance:
                yield RecordError(_pointer([*base, name]), "required", f"field {name} is missing")
        return
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = err.schema.get("properties", {})
        for name in err.instance:
            if name not in known:
                path = mask_resident_ids(_pointer([*base, name]))
                label = _safe_label(name)
                yield RecordError(
                    path,
                    "additionalProperties",
                    f"field {label} is not in the {ds.agency}/{ds.name} {ds.version} contract",
                )
        return
    path = _pointer(base)
    yield RecordError(mask_resident_ids(path), str(err.validator), _message(ds, err, path))


def _safe_label(name: object) -> str:
    return _show_value(str(name))


# -------------------------------------------------------------------------------------------- step 1
def schema_errors(ds: Dataset, record: Any) -> list[RecordError]:
    """The record's JSON Schema errors, one per (path, rule), ordered by the dataset's field order."""
    order = {f: i for i, f in enumerate(ds.fields)}
    out: dict[tuple[str, str], RecordError] = {}
    for err in validator_for(ds).iter_errors(normalise_numbers(record)):
        for e in _convert(ds, err):
            out.setdefault((e.path, e.rule), e)
    return sorted(out.values(), key=lambda e: (order.get(_field_of(e.path), len(order)), e.path, e.rule))


# -------------------------------------------------------------------------------------------- step 2
RuleCheck = Callable[[Dataset, dict[str, Any], frozenset[str]], Iterable[RecordError]]
RECORD_RULES: dict[str, RuleCheck] = {}
FILE_RULES: dict[str, Callable[[Dataset, list[Any]], str | None]] = {}


def _record_rule(rule_id: str) -> Callable[[RuleCheck], RuleCheck]:
    def register(fn: RuleCheck) -> RuleCheck:
        RECORD_RULES[rule_id] = fn
        return fn

    return register


def _strings(value: Any, path: list[str | int]) -> Iterator[tuple[list[str | int], str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 10**16:
        # An id typed into a number field (line_no, quantity …) would be stored as a number: the
        # privacy rule covers its digits too (contracts.md names string fields; we read it broadly).
        yield path, str(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, [*path, k])
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, [*path, i])


@_record_rule("resident_id_in_wrong_field")
def _resident_id_in_wrong_field(ds: Dataset, record: dict[str, Any], bad: frozenset[str]) -> Iterator[
    RecordError
]:
    for name, value in record.items():
        if ds.kinds.get(name) == "resident_id":
            continue
        for parts, text in _strings(value, [name]):
            if find_resident_ids(text):
                path = mask_resident_ids(_pointer(parts))
                yield RecordError(
                    path,
                    "resident_id_in_wrong_field",
                    f"{path[1:]} contains a resident id ({MASK}); a resident id may appear only in "
                    "patient_id",
                )


@_record_rule("resident_id_check_character")
def _resident_id_check_character(ds: Dataset, record: dict[str, Any], bad: frozenset[str]) -> Iterator[
    RecordError
]:
    for name in ds.fields:
        if ds.kinds[name] != "resident_id" or name in bad:
            continue
        value = record.get(name)
        if isinstance(value, str) and not is_valid_resident_id(value):
            yield RecordError(
                f"/{name}",
                "resident_id_check_character",
                f"{name} has an incorrect check character (GB 11643, ISO 7064 MOD 11-2)",
            )


def _numbers(record: dict[str, Any], bad: frozenset[str], *names: str) -> list[Decimal] | None:
    if any(n in bad for n in names):
        return None
    values = [record.get(n) for n in names]
    if not all(_is_number(None, v) for v in values):
        return None
    return [_to_decimal(v) for v in values]


@_record_rule("amount_equals_quantity_times_price")
def _amount_rule(ds: Dataset, record: dict[str, Any], bad: frozenset[str]) -> Iterator[RecordError]:
    nums = _numbers(record, bad, "quantity", "unit_price", "amount")
    if nums is None:
        return
    quantity, unit_price, amount = nums
    digits = len(quantity.as_tuple().digits) + len(unit_price.as_tuple().digits) + 40
    ctx = Context(prec=digits, rounding=ROUND_HALF_UP)
    expected = ctx.multiply(quantity, unit_price).quantize(Decimal("0.01"), context=ctx)
    if amount != expected:
        yield RecordError(
            "/amount",
            "amount_equals_quantity_times_price",
            f"amount {amount} is not quantity {quantity} x unit_price {unit_price} = {expected} "
            "(rounded half-up to the cent)",
        )


def _not_above(rule_id: str, lower: str, upper: str) -> RuleCheck:
    def check(ds: Dataset, record: dict[str, Any], bad: frozenset[str]) -> Iterator[RecordError]:
        nums = _numbers(record, bad, lower, upper)
        if nums is not None and nums[0] > nums[1]:
            yield RecordError(f"/{lower}", rule_id, f"{lower} {nums[0]} is greater than {upper} {nums[1]}")

    return _record_rule(rule_id)(check)


_not_above("eligible_not_above_amount", "eligible_amount", "amount")
_not_above("fund_paid_not_above_eligible", "fund_paid", "eligible_amount")


def _not_before(rule_id: str, later: str, earlier: str) -> RuleCheck:
    def check(ds: Dataset, record: dict[str, Any], bad: frozenset[str]) -> Iterator[RecordError]:
        if later in bad or earlier in bad:
            return
        a, b = parse_date(record.get(later)), parse_date(record.get(earlier))
        if a is not None and b is not None and a < b:
            yield RecordError(f"/{later}", rule_id, f"{later} {a} is before {earlier} {b}")

    return _record_rule(rule_id)(check)


_not_before("delisted_not_before_listed", "delisted_on", "listed_on")
_not_before("delivered_not_before_ordered", "delivered_on", "ordered_on")
_not_before("effective_not_before_published", "effective_from", "published_on")


def business_rule_errors(ds: Dataset, record: Any, bad_fields: Iterable[str] = ()) -> list[RecordError]:
    """Errors of the dataset's business rules, in the order the schema lists them. A rule is skipped when
    a field it reads is in ``bad_fields`` (already reported by the schema)."""
    if not isinstance(record, dict):
        return []
    bad = frozenset(bad_fields)
    record = normalise_numbers(record)
    out: list[RecordError] = []
    for rule_id in ds.business_rules:
        out.extend(RECORD_RULES[rule_id](ds, record, bad))
    return out


def validate_record(ds: Dataset, record: Any) -> list[RecordError]:
    """Every rule the record breaks (empty when it is valid): schema errors, then business-rule errors."""
    errors = schema_errors(ds, record)
    bad = frozenset(_field_of(e.path) for e in errors)
    return errors + business_rule_errors(ds, record, bad)


# -------------------------------------------------------------------------------------------- file rules
def _catalog_version_dates_consistent(ds: Dataset, records: list[Any]) -> str | None:
    dates: dict[str, dict[str, set[str]]] = {}
    for record in records:
        if not isinstance(record, dict):
            continue
        version = record.get("catalog_version")
        if not (isinstance(version, str) and len(version) == 4 and version.isascii() and version.isdigit()):
            continue
        for name in ("published_on", "effective_from"):
            # Invalid dates are the record's own error; only real dates can disagree.
            if parse_date(record.get(name)) is not None:
                dates.setdefault(version, {}).setdefault(name, set()).add(record[name])
    problems = [
        f"catalog_version {version} has {len(values)} different {name} values ({', '.join(sorted(values))})"
        for version, by_name in sorted(dates.items())
        for name, values in by_name.items()
        if len(values) > 1
    ]
    if not problems:
        return None
    return (
        "; ".join(problems)
        + ": every row of a catalog version must carry the same published_on and effective_from"
    )


FILE_RULES["catalog_version_dates_consistent"] = _catalog_version_dates_consistent


def validate_file(ds: Dataset, records: list[Any]) -> str | None:
    """File-level rules (``x-sanyi.file_rules``): a reason to reject the whole file, or None."""
    reasons = [r for rule_id in ds.file_rules if (r := FILE_RULES[rule_id](ds, records))]
    return "; ".join(reasons) if reasons else None
