"""Policy parameters as data: the file format, effective dates, and the ``params``/``schedules`` tables."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from sanyi.indicators import DEFAULT_POLICY_FILE, DEFAULT_SQL_DIR, INDICATORS, Policy, PolicyError

MY_SECTIONS = ("nego_allocation", "committee_linkage", "county_dual_channel", "dual_channel_trace",
               "duplicate_trace", "engine")


def param(values, **extra) -> dict:
    return {"unit": "ratio", "source": "test", "values": values, **extra}


def doc(**params) -> dict:
    return {"nego_allocation": params}


def test_project_policy_file_is_complete():
    policy = Policy.load()
    assert policy.path == DEFAULT_POLICY_FILE
    for name, p in policy.parameters.items():
        assert p.unit.strip() and p.source.strip(), name
        assert name.startswith(p.section + "_")
        assert p.section in INDICATORS or p.section == "engine"
    # every parameter of indicators 1-5 and of the engine is read by some SQL (no dead policy),
    # and every parameter those files read exists
    sql = {f.name: f.read_text(encoding="utf-8") for f in DEFAULT_SQL_DIR.glob("*.sql")}
    mine = {n: t for n, t in sql.items() if n.split(".")[0] in MY_SECTIONS or n == "_common.sql"}
    used = {m for text in mine.values() for m in re.findall(r"\bp\.([a-z_0-9]+)", text)}
    reserved = {"period", "period_start", "period_end", "now_local"}
    assert used - reserved <= set(policy.parameters)
    for name, p in policy.parameters.items():
        if p.section in MY_SECTIONS:
            assert any(f"p.{name}" in text for text in sql.values()), f"{name} is not used by any SQL"


def test_default_values_of_indicators_1_to_5():
    values = Policy.load().values_for("2024-06")
    assert values["nego_allocation_min_rate_l3_general_grade_a"] == 0.30
    assert values["nego_allocation_min_rate_l3_general_other_grade"] == 0.20
    assert values["nego_allocation_min_rate_l3_tcm"] == 0.20
    assert values["nego_allocation_min_rate_l3_specialist"] == 0.60
    assert values["nego_allocation_min_rate_pharmacy"] == 0.30
    assert values["nego_allocation_pharmacy_window_days"] == 90
    assert values["committee_linkage_deadline_months"] == 3
    assert values["county_dual_channel_min_pharmacies"] == 1
    assert values["dual_channel_trace_window_days"] == 1
    assert values["dual_channel_trace_min_share"] == 1.0
    assert values["engine_tolerance"] == 1e-9


def test_value_in_force_follows_effective_dates():
    policy = Policy.from_dict(doc(nego_allocation_x=param([
        {"effective_from": date(2024, 4, 1), "value": 0.5},       # order in the file does not matter
        {"effective_from": date(2020, 1, 1), "value": 0.3},
        {"effective_from": date(2024, 3, 15), "value": 0.4},
    ])))
    # the value in force is the latest effective_from on or before the period's first day
    assert policy.values_for("2024-02")["nego_allocation_x"] == 0.3
    assert policy.values_for("2024-03")["nego_allocation_x"] == 0.3   # 15 March is after 1 March
    assert policy.values_for("2024-04")["nego_allocation_x"] == 0.5   # 1 April: in force that day
    assert policy.values_for("2030-01")["nego_allocation_x"] == 0.5
    with pytest.raises(PolicyError, match="no value in force"):
        policy.values_for("2019-12")


@pytest.mark.parametrize(
    "document, message",
    [
        (doc(nego_allocation_x={"unit": "ratio", "values": [{"effective_from": date(2020, 1, 1),
                                                             "value": 1}]}), "source"),
        (doc(nego_allocation_x=param([])), "values"),
        (doc(other_x=param([{"effective_from": date(2020, 1, 1), "value": 1}])), "prefixed"),
        (doc(nego_allocation_x=param([{"effective_from": "2020-01-01", "value": 1}])), "TOML date"),
        (doc(nego_allocation_x=param([{"effective_from": date(2020, 1, 1), "value": 1},
                                      {"effective_from": date(2020, 1, 1), "value": 2}])), "share"),
        (doc(nego_allocation_x=param([{"effective_from": date(2020, 1, 1), "value": 1},
                                      {"effective_from": date(2021, 1, 1), "value": "a"}])), "types"),
        (doc(nego_allocation_x=param([{"effective_from": date(2020, 1, 1), "value": 1, "note": "x"}])),
         "exactly"),
        (doc(nego_allocation_x=param([{"effective_from": date(2020, 1, 1), "value": 1}], typo="x")),
         "unknown keys"),
        ({"no_such_indicator": {}}, "unknown section"),
        ({"nego_allocation": {"period": param([{"effective_from": date(2020, 1, 1), "value": 1}])}},
         "snake_case"),
        ({"schedules": {"settlements": {"source": "s", "values": []}}}, "agency/dataset"),
        ({"schedules": {"insurance/settlements": {"source": "s", "values": [
            {"effective_from": date(2020, 1, 1), "frequency": "weekly", "due_offset_days": 2}]}}},
         "frequency"),
    ],
)
def test_malformed_policy_is_refused(document, message):
    with pytest.raises(PolicyError, match=message):
        Policy.from_dict(document)


def test_parameter_defined_twice_is_refused():
    p = param([{"effective_from": date(2020, 1, 1), "value": 1}])
    with pytest.raises(PolicyError, match="twice"):
        # names are unique across the file, whichever section repeats one
        Policy.from_dict({"nego_allocation": {"nego_allocation_x": p}, "engine": {"nego_allocation_x": p}})


def test_money_parameters_are_decimal():
    policy = Policy.from_dict(doc(nego_allocation_cap=param(
        [{"effective_from": date(2020, 1, 1), "value": 2500.1}], type="money")))
    assert policy.values_for("2024-01")["nego_allocation_cap"] == Decimal("2500.10")
    table = policy.params_table("2024-01", datetime(2024, 2, 1, tzinfo=UTC))
    assert table.schema.field("nego_allocation_cap").type == pa.decimal128(18, 2)
    with pytest.raises(PolicyError, match="decimals"):
        Policy.from_dict(doc(nego_allocation_cap=param(
            [{"effective_from": date(2020, 1, 1), "value": 0.001}], type="money")))


def test_params_table_has_one_row_with_period_columns():
    policy = Policy.load()
    # 2024-02-29T16:30Z is 1 March 00:30 on the UTC+08:00 wall clock
    table = policy.params_table("2024-02", datetime(2024, 2, 29, 16, 30, tzinfo=UTC))
    assert table.num_rows == 1
    row = table.to_pylist()[0]
    assert row["period"] == "2024-02"
    assert row["period_start"] == date(2024, 2, 1) and row["period_end"] == date(2024, 2, 29)
    assert row["now_local"] == datetime(2024, 3, 1, 0, 30)
    assert table.schema.field("now_local").type == pa.timestamp("us")
    assert set(policy.parameters) <= set(table.column_names)
    assert table.schema.field("nego_allocation_pharmacy_window_days").type == pa.int64()
    assert table.schema.field("nego_allocation_min_rate_pharmacy").type == pa.float64()


def test_schedules_of_the_project_policy():
    schedules = Policy.load().schedules_for("2024-06")
    rows = {r["dataset"]: (r["frequency"], r["due_offset_days"]) for r in schedules}
    assert rows == {
        "insurance/settlements": ("daily", 2),
        "insurance/procurement_orders": ("daily", 2),
        "traceability/trace_events": ("daily", 2),
        "health/formulary": ("monthly", 6),
        "health/chronic_registry": ("monthly", 6),
        "insurance/dual_channel_pharmacies": ("monthly", 6),
    }


def test_schedules_follow_effective_dates():
    policy = Policy.from_dict({"schedules": {"insurance/vbp_groups": {"source": "s", "values": [
        {"effective_from": date(2020, 1, 1), "frequency": "monthly", "due_offset_days": 6},
        {"effective_from": date(2024, 7, 1), "frequency": "none"},
    ]}}})
    assert policy.schedules_for("2024-06") == [
        {"dataset": "insurance/vbp_groups", "frequency": "monthly", "due_offset_days": 6}]
    assert policy.schedules_for("2024-07") == []
    table = policy.schedules_table("2024-06")
    assert table.schema.field("due_offset_days").type == pa.int32()


def test_bad_toml_is_a_policy_error(tmp_path: Path):
    path = tmp_path / "parameters.toml"
    path.write_text("[nego_allocation.nego_allocation_x\n", encoding="utf-8")
    with pytest.raises(PolicyError):
        Policy.load(path)


def test_bad_period_is_refused():
    with pytest.raises(ValueError):
        Policy.load().values_for("2024-13")
