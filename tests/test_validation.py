"""sanyi.validation: the reference semantics of the contracts (JSON Schema via jsonschema + business rules).

Besides the hand-written cases, every keyword constraint of every field of every schema is broken once,
mechanically, and the error must name that field and that keyword.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest

from sanyi.contracts import get_dataset, load_datasets
from sanyi.privacy import MASK
from sanyi.validation import (
    RecordError,
    business_rule_errors,
    schema_errors,
    validate_file,
    validate_record,
)
from test_contracts import CONTRACTS, PID, VALID, valid
from test_privacy import id_with_check, synthetic_id, wrong_check

ID_X = id_with_check("X")


def rules_of(errors: list[RecordError]) -> set[tuple[str, str]]:
    return {(e.path, e.rule) for e in errors}


def check(agency: str, dataset: str, **over: Any) -> set[tuple[str, str]]:
    return rules_of(validate_record(get_dataset(agency, dataset), valid(agency, dataset, **over)))


# ------------------------------------------------------------------------------------------ valid data
@pytest.mark.parametrize("pair", sorted(CONTRACTS), ids="/".join)
def test_valid_sample_passes(pair: tuple[str, str]) -> None:
    assert validate_record(get_dataset(*pair), copy.deepcopy(VALID[pair])) == []


def test_nullable_fields_accept_null() -> None:
    for pair, (_, _, fields) in CONTRACTS.items():
        ds = get_dataset(*pair)
        for f, (_, nullable) in fields.items():
            if nullable and f not in ("specialty", "winning_price", "parent_code"):  # conditionals: below
                assert validate_record(ds, valid(*pair, **{f: None})) == [], (pair, f)


# ---------------------------------------------------------------------- every keyword, mechanically
def breaking_values(prop: dict[str, Any], good: Any) -> list[tuple[str, Any]]:
    """(keyword, value) pairs, each breaking exactly that keyword of a property schema."""
    out: list[tuple[str, Any]] = []
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    wrong_type = {"string": 5, "integer": "3", "number": "3", "boolean": "true", "array": "x"}[types[0]]
    out.append(("type", wrong_type))
    if "pattern" in prop:
        out.append(("pattern", good + "\n"))  # the `$` trap: must not match
        out.append(("pattern", "?" + good[1:]))
    if "enum" in prop:
        out.append(("enum", "nope"))
        upper = good.upper() if good != good.upper() else good.lower()
        out.append(("enum", upper))  # enums are case-sensitive
    if "minLength" in prop:
        out.append(("minLength", ""))
    if "maxLength" in prop:
        out.append(("maxLength", "字" * (prop["maxLength"] + 1)))  # counted in characters, not bytes
    if "minimum" in prop:
        out.append(("minimum", prop["minimum"] - (1 if "integer" in types else Decimal("0.01"))))
    if "maximum" in prop:
        out.append(("maximum", prop["maximum"] + 1))
    if "exclusiveMinimum" in prop:
        out.append(("exclusiveMinimum", prop["exclusiveMinimum"]))
    if "exclusiveMaximum" in prop:
        out.append(("exclusiveMaximum", prop["exclusiveMaximum"]))
    if "multipleOf" in prop:
        out.append(("multipleOf", Decimal(good) + prop["multipleOf"] / 10))
    if prop.get("format") == "date":
        out.append(("format", "2025-02-30"))
    if prop.get("format") == "date-time":
        out.append(("format", "2025-02-29T10:00:00+08:00"))
    if prop.get("uniqueItems"):
        out.append(("uniqueItems", [good[0], good[0]]))
    return out


def keyword_cases() -> list[tuple[tuple[str, str], str, str, Any]]:
    cases = []
    for pair in sorted(CONTRACTS):
        ds = get_dataset(*pair)
        for f, prop in ds.schema["properties"].items():
            good = VALID[pair][f]
            if good is None:
                good = {"specialty": "oncology", "negotiated_valid_to": "2026-12-31", "valid_to": "2030-01-01",
                        "delisted_on": "2025-01-01", "revoked_on": "2025-01-01", "exemption": "shortage",
                        "delivered_on": "2025-01-01"}.get(f, good)  # fmt: skip
            for keyword, value in breaking_values(prop, good):
                cases.append((pair, f, keyword, value))
    return cases


KEYWORD_CASES = keyword_cases()


@pytest.mark.parametrize(
    ("pair", "field", "keyword", "value"),
    KEYWORD_CASES,
    ids=[f"{p[1]}.{f}.{k}.{i}" for i, (p, f, k, _) in enumerate(KEYWORD_CASES)],
)
def test_each_keyword_constraint_is_enforced(pair: tuple[str, str], field: str, keyword: str, value: Any) -> None:
    ds = get_dataset(*pair)
    errors = validate_record(ds, valid(*pair, **{field: value}))
    assert (f"/{field}", keyword) in rules_of(errors)
    # The mistake is reported on that field only (business rules reading it are skipped).
    assert {e.path.split("/")[1] for e in errors} == {field}, errors
    for e in errors:
        assert e.message and PID not in e.message


def test_keyword_cases_cover_every_keyword_used() -> None:
    used = set()
    for ds in load_datasets().values():
        for prop in ds.schema["properties"].values():
            used |= set(prop) - {"title", "description", "items"}
            used |= set(prop.get("items", {})) - {"title", "description"}
    covered = {k for _, _, k, _ in KEYWORD_CASES}
    assert used - {"type"} <= covered | {"type"}
    assert {"type", "pattern", "enum", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
            "exclusiveMaximum", "multipleOf", "format", "uniqueItems"} <= covered  # fmt: skip


@pytest.mark.parametrize("pair", sorted(CONTRACTS), ids="/".join)
def test_every_field_is_required(pair: tuple[str, str]) -> None:
    ds = get_dataset(*pair)
    for f in ds.fields:
        rec = valid(*pair)
        del rec[f]
        errors = validate_record(ds, rec)
        assert rules_of(errors) == {(f"/{f}", "required")}, (f, errors)
        assert f in errors[0].message


@pytest.mark.parametrize("pair", sorted(CONTRACTS), ids="/".join)
def test_unknown_field_is_rejected(pair: tuple[str, str]) -> None:
    errors = validate_record(get_dataset(*pair), valid(*pair, amout=Decimal("1.00")))
    assert rules_of(errors) == {("/amout", "additionalProperties")}
    assert "amout" in errors[0].message


def test_non_object_record_is_one_error_on_the_whole_record() -> None:
    ds = get_dataset("health", "divisions")
    for record in ([1, 2], "330102", None, 5):
        assert rules_of(validate_record(ds, record)) == {("", "type")}


def test_items_of_trace_codes_are_checked_one_by_one() -> None:
    errors = check("insurance", "settlements", trace_codes=["81234567890123456789", "8123456789012345678X", 7])
    assert errors == {("/trace_codes/1", "pattern"), ("/trace_codes/2", "type")}


def test_trace_codes_may_be_empty_and_duplicates_are_one_uniqueitems_error() -> None:
    assert check("insurance", "settlements", trace_codes=[]) == set()
    code = "81234567890123456789"
    ds = get_dataset("insurance", "settlements")
    errors = validate_record(ds, valid("insurance", "settlements", trace_codes=[code, "1" * 20, code]))
    assert rules_of(errors) == {("/trace_codes", "uniqueItems")}
    assert code in errors[0].message  # trace codes are not personal data: the repeated one is named


# ----------------------------------------------------------------------- the named traps of the brief
def test_trailing_newline_does_not_pass_a_pattern() -> None:
    assert check("health", "formulary", institution_code="H33010200017\n") == {("/institution_code", "pattern")}
    assert check("health", "formulary", institution_code="H33010200017") == set()


def test_impossible_calendar_date_is_a_format_error() -> None:
    assert check("health", "formulary", listed_on="2025-02-30") == {("/listed_on", "format")}
    assert check("health", "formulary", listed_on="2024-02-29") == set()
    assert check("health", "formulary", listed_on="0000-01-01") == {("/listed_on", "format")}


def test_badly_formed_date_breaks_pattern_and_format() -> None:
    assert check("health", "formulary", listed_on="2024-1-15") == {("/listed_on", "pattern"), ("/listed_on", "format")}


def test_integral_decimal_is_an_integer() -> None:
    assert check("insurance", "settlements", line_no=Decimal("3.0")) == set()
    assert check("insurance", "settlements", line_no=3.0) == set()
    assert check("insurance", "settlements", line_no=Decimal("1E+2")) == set()
    assert check("insurance", "settlements", line_no=Decimal("3.5")) == {("/line_no", "type")}


def test_string_number_and_boolean_are_not_numbers() -> None:
    assert check("insurance", "settlements", quantity="3") == {("/quantity", "type")}
    assert check("insurance", "settlements", line_no=True) == {("/line_no", "type")}
    assert check("insurance", "dual_channel_pharmacies", traceability_enabled=1) == {
        ("/traceability_enabled", "type")
    }


def test_non_finite_numbers_are_not_numbers() -> None:
    for value in (float("nan"), float("inf"), Decimal("NaN"), Decimal("-Infinity")):
        assert check("insurance", "settlements", quantity=value) == {("/quantity", "type")}


def test_money_decimals_are_checked_as_written() -> None:
    amounts = {"quantity": 1, "unit_price": Decimal("19.99"), "eligible_amount": Decimal("1"), "fund_paid": 1}
    assert check("insurance", "settlements", amount=Decimal("19.99"), **amounts) == set()
    # A caller that parsed JSON with floats still gets 19.99 judged as written, not as 19.989999…
    assert check("insurance", "settlements", amount=19.99, **amounts) == set()
    assert check("insurance", "settlements", amount=Decimal("19.999"), **amounts) == {("/amount", "multipleOf")}
    assert check("insurance", "settlements", amount=Decimal("19.990"), **amounts) == set()  # trailing zero


def test_prices_take_four_decimals_and_not_five() -> None:
    ds = get_dataset("insurance", "procurement_orders")
    assert validate_record(ds, valid("insurance", "procurement_orders", unit_price=Decimal("0.0001"))) == []
    errors = validate_record(ds, valid("insurance", "procurement_orders", unit_price=Decimal("0.00005")))
    assert rules_of(errors) == {("/unit_price", "multipleOf")}
    assert "more than 4 decimal places" in errors[0].message


def test_huge_numbers_are_bounded_without_crashing() -> None:
    assert check("insurance", "settlements", quantity=Decimal("1e999999999")) == {("/quantity", "exclusiveMaximum")}
    assert check("insurance", "procurement_orders", quantity=10**30) == {("/quantity", "maximum")}
    assert ("/amount", "exclusiveMaximum") in check("insurance", "settlements", amount=Decimal("1E+30"))
    # Decimal's default 28-digit context would fail on this remainder; the result must just be "not a multiple".
    assert ("/amount", "multipleOf") in check("insurance", "settlements", amount=Decimal("1" * 40 + ".001"))


def test_enum_is_case_sensitive() -> None:
    assert check("insurance", "settlements", visit_type="Outpatient") == {("/visit_type", "enum")}
    assert check("insurance", "drug_catalog", catalog_class="a") == {("/catalog_class", "enum")}


@pytest.mark.parametrize(
    ("value", "ok"),
    [("I10", True), ("E11.9", True), ("E11.9001", True), ("E11.90011", False), ("e11.9", False), ("I1", False),
     ("I10.", False)],
)  # fmt: skip
def test_diagnosis_codes(value: str, ok: bool) -> None:
    assert (check("insurance", "settlements", diagnosis_code=value) == set()) is ok


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("provider_code", "P33010200003", True),
        ("provider_code", "E91330100004", False),
        ("drug_code", "ZA10BAE033A001010100482", True),
        ("drug_code", "xA10BAE033A001010100482", False),
        ("drug_code", "XA10BAE033A00101010048", False),
        ("drug_code", "Xa10BAE033A001010100482", False),
        ("settlement_id", "S-2024-1", True),
        ("settlement_id", "S-2024_1", False),
        ("settlement_id", "S202410", False),
        ("settlement_id", "S" * 41, False),
        ("provider_code", "H３3010200017", False),  # a full-width digit is not [0-9]
    ],
)
def test_code_forms(field: str, value: str, ok: bool) -> None:
    assert (check("insurance", "settlements", **{field: value}) == set()) is ok


def test_party_code_may_be_provider_or_enterprise() -> None:
    for code in ("H33010200017", "P33010200003", "E91330100004"):
        assert check("traceability", "trace_events", party_code=code) == set()
    assert check("traceability", "trace_events", party_code="X91330100004") == {("/party_code", "pattern")}


@pytest.mark.parametrize(
    "value",
    ["2024-10-03T09:12:00.123+08:00", "2024-10-03T01:12:00Z", "2024-10-02T20:12:00-05:00"],
)
def test_timestamps_accepted(value: str) -> None:
    assert check("traceability", "trace_events", event_at=value) == set()


@pytest.mark.parametrize(
    ("value", "rules"),
    [
        ("2024-10-03T09:12+08:00", {"pattern", "format"}),  # seconds required
        ("2024-10-03T09:12:00", {"pattern", "format"}),  # offset required
        ("2024-10-03T09:12:00z", {"pattern", "format"}),  # pinned: upper-case Z
        ("2024-10-03T09:12:61+08:00", {"format"}),
        ("2024-10-03T09:12:00+08:00\n", {"pattern", "format"}),
    ],
)
def test_timestamps_rejected(value: str, rules: set[str]) -> None:
    assert check("traceability", "trace_events", event_at=value) == {("/event_at", r) for r in rules}


# ------------------------------------------------------------------------------------- conditionals
def test_specialty_exactly_when_specialist() -> None:
    assert check("health", "institutions", category="specialist", specialty="oncology") == set()
    errors = validate_record(get_dataset("health", "institutions"),
                             valid("health", "institutions", category="specialist", specialty=None))  # fmt: skip
    assert rules_of(errors) == {("/specialty", "type")}
    assert "specialist" in errors[0].message  # the conditional's reason is given
    assert check("health", "institutions", category="general", specialty="oncology") == {("/specialty", "type")}


def test_winning_price_exactly_when_selected() -> None:
    assert check("insurance", "vbp_products", selected=True, winning_price=None) == {("/winning_price", "type")}
    assert check("insurance", "vbp_products", selected=False, winning_price=Decimal("1")) == {
        ("/winning_price", "type")
    }
    assert check("insurance", "vbp_products", selected=False, winning_price=None) == set()


def test_negotiated_valid_to_null_when_not_negotiated() -> None:
    assert check("insurance", "drug_catalog", negotiated=False, negotiated_valid_to="2026-12-31") == {
        ("/negotiated_valid_to", "type")
    }
    assert check("insurance", "drug_catalog", negotiated=False, negotiated_valid_to=None) == set()
    # Pinned: a negotiated drug may have no end date (indicators.md: "null or on/after D").
    assert check("insurance", "drug_catalog", negotiated=True, negotiated_valid_to=None) == set()


def test_parent_code_null_only_for_province() -> None:
    assert check("health", "divisions", level="city", parent_code=None) == {("/parent_code", "type")}
    assert check("health", "divisions", level="county", parent_code=None) == {("/parent_code", "type")}
    assert check("health", "divisions", division_code="330000", level="province", parent_code=None) == set()
    # Pinned: "null only for province" is one-way; a province may name a parent (e.g. a national code).
    assert check("health", "divisions", division_code="330000", level="province", parent_code="100000") == set()


def test_conditional_does_not_fire_when_its_trigger_field_is_missing() -> None:
    rec = valid("health", "institutions", specialty="oncology")
    del rec["category"]
    assert rules_of(validate_record(get_dataset("health", "institutions"), rec)) == {("/category", "required")}


# ----------------------------------------------------------------------------------- business rules
def rule_case(rule: str, agency: str, dataset: str, path: str, **over: Any) -> list[RecordError]:
    """Validate a sample changed by ``over``; the only error must be ``rule`` at ``path``."""
    errors = validate_record(get_dataset(agency, dataset), valid(agency, dataset, **over))
    assert rules_of(errors) == {(path, rule)}, errors
    return errors


def test_amount_must_be_quantity_times_price_half_up() -> None:
    ok = {"eligible_amount": Decimal("0"), "fund_paid": Decimal("0")}
    # 2 x 0.0125 = 0.025: half-up gives 0.03 (half-even would give 0.02)
    half = {"quantity": 2, "unit_price": Decimal("0.0125")}
    assert check("insurance", "settlements", amount=Decimal("0.03"), **half, **ok) == set()
    errors = rule_case("amount_equals_quantity_times_price", "insurance", "settlements", "/amount",
                       quantity=2, unit_price=Decimal("0.0125"), amount=Decimal("0.02"), **ok)  # fmt: skip
    assert "0.03" in errors[0].message
    # 3 x 6.665 = 19.995 -> 20.00; quantity may be fractional
    assert check("insurance", "settlements", quantity=Decimal("0.5"), unit_price=Decimal("3.3333"),
                 amount=Decimal("1.67"), **ok) == set()  # fmt: skip
    # Float inputs are judged as written too: 0.1 x 3 is 0.3, not 0.30000000000000004.
    assert check("insurance", "settlements", quantity=0.1, unit_price=3, amount=0.3, **ok) == set()


def test_eligible_amount_not_above_amount() -> None:
    rule_case("eligible_not_above_amount", "insurance", "settlements", "/eligible_amount",
              eligible_amount=Decimal("20.01"), fund_paid=Decimal("0"))  # fmt: skip
    assert check("insurance", "settlements", eligible_amount=Decimal("20.00")) == set()


def test_fund_paid_not_above_eligible() -> None:
    rule_case("fund_paid_not_above_eligible", "insurance", "settlements", "/fund_paid", fund_paid=Decimal("20.00"))
    assert check("insurance", "settlements", fund_paid=Decimal("19.99")) == set()


def test_delisted_not_before_listed() -> None:
    rule_case("delisted_not_before_listed", "health", "formulary", "/delisted_on", delisted_on="2024-01-14")
    assert check("health", "formulary", delisted_on="2024-01-15") == set()


def test_delivered_not_before_ordered() -> None:
    rule_case("delivered_not_before_ordered", "insurance", "procurement_orders", "/delivered_on",
              delivered_on="2024-09-30")  # fmt: skip
    assert check("insurance", "procurement_orders", delivered_on="2024-10-01") == set()


def test_effective_not_before_published() -> None:
    rule_case("effective_not_before_published", "insurance", "drug_catalog", "/effective_from",
              effective_from="2024-11-27")  # fmt: skip
    assert check("insurance", "drug_catalog", effective_from="2024-11-28") == set()


def test_patient_id_check_character_is_checked_and_never_echoed() -> None:
    bad = wrong_check(PID)
    for pair in (("insurance", "settlements"), ("health", "chronic_registry")):
        errors = rule_case("resident_id_check_character", *pair, "/patient_id", patient_id=bad)
        assert bad not in errors[0].message and PID[:17] not in errors[0].message
    assert check("health", "chronic_registry", patient_id=ID_X) == set()
    assert check("health", "chronic_registry", patient_id=ID_X[:17] + "x") == {("/patient_id", "pattern")}


@pytest.mark.parametrize("value", [wrong_check(PID), PID + "\n", int(PID[:17]), PID[:17], " " + PID])
def test_patient_id_value_is_never_quoted(value: Any) -> None:
    errors = validate_record(get_dataset("health", "chronic_registry"), valid("health", "chronic_registry",
                                                                               patient_id=value))
    assert errors
    for e in errors:
        assert PID[:17] not in e.message and PID[:17] not in e.path


def test_resident_id_in_another_field_is_rejected_and_masked() -> None:
    errors = validate_record(get_dataset("health", "divisions"), valid("health", "divisions", name=f"张三 {PID}"))
    assert rules_of(errors) == {("/name", "resident_id_in_wrong_field")}
    assert PID not in errors[0].message and MASK in errors[0].message


def test_resident_id_in_a_coded_field_breaks_both_and_is_masked_everywhere() -> None:
    errors = validate_record(get_dataset("insurance", "settlements"),
                             valid("insurance", "settlements", provider_code=ID_X, settlement_id=PID))  # fmt: skip
    assert rules_of(errors) == {
        ("/provider_code", "pattern"), ("/provider_code", "resident_id_in_wrong_field"),
        ("/settlement_id", "resident_id_in_wrong_field"),
    }  # fmt: skip
    # (an 18-digit settlement id fits [A-Za-z0-9-]{8,40}, so only the id rule fires there)
    text = json.dumps([e.as_dict() for e in errors], ensure_ascii=False)
    assert PID not in text and ID_X not in text and MASK in text


def test_resident_id_in_trace_codes_and_unknown_fields_is_found() -> None:
    errors = check("insurance", "settlements", trace_codes=[PID], note={"who": [f"id {ID_X}"]})
    assert ("/trace_codes/0", "resident_id_in_wrong_field") in errors
    assert ("/note/who/0", "resident_id_in_wrong_field") in errors
    assert ("/note", "additionalProperties") in errors


def test_unknown_field_named_by_a_resident_id_is_masked_in_path_and_message() -> None:
    errors = validate_record(get_dataset("health", "divisions"), valid("health", "divisions", **{PID: 1}))
    assert rules_of(errors) == {(f"/{MASK}", "additionalProperties")}
    assert PID not in errors[0].message


def test_id_like_digits_that_are_not_an_id_are_allowed() -> None:
    # A 20-digit trace code contains 18-digit windows; an id with a wrong check character is not an id.
    assert check("insurance", "settlements", trace_codes=[PID + "12"]) == set()
    assert check("health", "divisions", name=f"no {wrong_check(PID)}") == set()
    assert check("health", "divisions", name=f"1{PID}") == set()


# One failing record per business rule (the tests above add detail); every declared rule must be here.
RULE_CASES: list[tuple[str, tuple[str, str], str, dict[str, Any]]] = [
    ("amount_equals_quantity_times_price", ("insurance", "settlements"), "/amount", {"amount": Decimal("19.99")}),
    ("eligible_not_above_amount", ("insurance", "settlements"), "/eligible_amount",
     {"eligible_amount": Decimal("20.01"), "fund_paid": 0}),
    ("fund_paid_not_above_eligible", ("insurance", "settlements"), "/fund_paid", {"fund_paid": Decimal("20")}),
    ("delisted_not_before_listed", ("health", "formulary"), "/delisted_on", {"delisted_on": "2023-12-31"}),
    ("delivered_not_before_ordered", ("insurance", "procurement_orders"), "/delivered_on",
     {"delivered_on": "2024-09-01"}),
    ("effective_not_before_published", ("insurance", "drug_catalog"), "/effective_from",
     {"effective_from": "2024-01-01"}),
    ("resident_id_check_character", ("health", "chronic_registry"), "/patient_id", {"patient_id": wrong_check(PID)}),
    ("resident_id_in_wrong_field", ("traceability", "trace_events"), "/batch_no", {"batch_no": PID}),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "pair", "path", "over"), RULE_CASES, ids=[c[0] for c in RULE_CASES])
def test_business_rule_case(rule: str, pair: tuple[str, str], path: str, over: dict[str, Any]) -> None:
    errors = rule_case(rule, *pair, path, **over)
    assert PID not in errors[0].message


def test_every_business_rule_has_a_failing_case() -> None:
    declared = {r for ds in load_datasets().values() for r in ds.business_rules}
    assert {c[0] for c in RULE_CASES} == declared
    for rule, pair, _, _ in RULE_CASES:
        assert rule in get_dataset(*pair).business_rules


def test_business_rules_skip_fields_that_broke_the_schema() -> None:
    # One mistake, one error line: a malformed amount is not also "not quantity x price".
    assert check("insurance", "settlements", amount="20.00") == {("/amount", "type")}
    assert check("health", "formulary", delisted_on="2024-01-1") == {("/delisted_on", "pattern"),
                                                                      ("/delisted_on", "format")}
    ds = get_dataset("insurance", "settlements")
    rec = valid("insurance", "settlements", amount=Decimal("1.00"), eligible_amount=Decimal("1.00"), fund_paid=0)
    assert rules_of(business_rule_errors(ds, rec)) == {("/amount", "amount_equals_quantity_times_price")}
    assert business_rule_errors(ds, rec, {"amount"}) == []


def test_errors_are_ordered_by_field_then_schema_before_rules() -> None:
    ds = get_dataset("insurance", "settlements")
    rec = valid("insurance", "settlements", trace_codes=["x"], line_no=0, amount=Decimal("1.00"), zzz=1,
                eligible_amount=Decimal("1.00"), fund_paid=0)  # fmt: skip
    errors = validate_record(ds, rec)
    assert [(e.path, e.rule) for e in errors] == [
        ("/line_no", "minimum"), ("/trace_codes/0", "pattern"), ("/zzz", "additionalProperties"),
        ("/amount", "amount_equals_quantity_times_price"),
    ]  # fmt: skip
    assert errors == validate_record(ds, rec)  # deterministic
    assert schema_errors(ds, rec) == errors[:3]


def test_validation_does_not_modify_the_record() -> None:
    rec = valid("insurance", "settlements", amount=19.99)
    before = copy.deepcopy(rec)
    validate_record(get_dataset("insurance", "settlements"), rec)
    assert rec == before and isinstance(rec["amount"], float)


def test_no_message_anywhere_contains_a_resident_id() -> None:
    # Every string field of every dataset stuffed with an id, in several shapes: nothing leaks.
    ids = [PID, ID_X, synthetic_id(3)]
    for pair in CONTRACTS:
        ds = get_dataset(*pair)
        # A character a message escapes ("\x01" as \u0001) must not join the id's digits to the escape's.
        for shape in ("{}", "x{}", "{} y", "H{}", "\x01{}", "{}\x1f", "\u2028{}", "\x7f{}\x00"):
            rec = valid(*pair)
            for i, f in enumerate(ds.fields):
                if isinstance(rec[f], str) or rec[f] is None:
                    rec[f] = shape.format(ids[i % 3])
            rec[ids[1]] = ids[2]
            rec[shape.format(ids[0])] = [shape.format(ids[2])]
            rec["list"] = [shape.format(ids[1]), {shape.format(ids[0]): shape.format(ids[2])}]
            text = json.dumps([e.as_dict() for e in validate_record(ds, rec)], ensure_ascii=False)
            for rid in ids:
                assert rid not in text, (pair, shape)


# ---------------------------------------------------------------------------------------- file rules
def catalog_row(version: str, drug_no: int, published: str = "2024-11-28", effective: str = "2025-01-01") -> dict:
    return valid("insurance", "drug_catalog", catalog_version=version, published_on=published,
                 effective_from=effective, drug_code=f"X{drug_no:022d}")  # fmt: skip


def test_catalog_version_dates_must_agree_within_a_file() -> None:
    ds = get_dataset("insurance", "drug_catalog")
    rows = [catalog_row("2024", 1), catalog_row("2024", 2), catalog_row("2023", 3, "2023-11-28", "2024-01-01")]
    assert validate_file(ds, rows) is None  # different versions may have different dates
    reason = validate_file(ds, [*rows, catalog_row("2024", 4, published="2024-11-29")])
    assert reason is not None
    assert "catalog_version 2024" in reason and "published_on" in reason and "2024-11-29" in reason
    reason = validate_file(ds, [*rows, catalog_row("2024", 4, effective="2025-02-01")])
    assert reason is not None and "effective_from" in reason and "2023" not in reason.split(":")[0]


def test_catalog_file_rule_ignores_values_that_are_record_errors() -> None:
    ds = get_dataset("insurance", "drug_catalog")
    rows = [catalog_row("2024", 1), catalog_row("2024", 2, published="2024-02-30"), {"not": "a catalog row"}, []]
    assert validate_file(ds, rows) is None


def test_other_datasets_have_no_file_rules() -> None:
    ds = get_dataset("insurance", "settlements")
    assert validate_file(ds, [valid("insurance", "settlements")] * 2) is None
    assert validate_file(get_dataset("insurance", "drug_catalog"), []) is None
