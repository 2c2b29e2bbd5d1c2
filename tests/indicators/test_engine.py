"""The indicator engine: registration of ``params``/``schedules``, the output contract, checks on what
the SQL returns, missing files, determinism, and policy changes without code changes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from sanyi import indicators
from sanyi.indicators import INDICATORS, IndicatorError, Policy

from .conftest import check_findings_behind_breaches, create_warehouse, insert, policy_with, run_indicator

NOW = datetime(2024, 7, 10, 1, 2, 3, tzinfo=UTC)
MINE = ("nego_allocation", "committee_linkage", "county_dual_channel", "dual_channel_trace",
        "duplicate_trace")
# Every indicator's base tables file (globbed, so a new one is checked too), without ".sql".
BASE_FILES = sorted(f.name[: -len(".sql")] for f in indicators.DEFAULT_SQL_DIR.glob(f"*{indicators.BASE_SUFFIX}"))
DN = "X" + "N" * 22
P1, P2 = "P33010200001", "P33010300001"
H1 = "H33010200001"


def sample_rows() -> list[tuple[str, dict]]:
    """A small month (2024-06) touching indicators 1-5, as (table, row) pairs."""
    rows = [
        ("health.divisions", {"division_code": "330000", "level": "province", "parent_code": None}),
        ("health.divisions", {"division_code": "330102"}),
        ("health.divisions", {"division_code": "330103"}),
        ("health.institutions", {"institution_code": H1}),
        ("insurance.drug_catalog", {"drug_code": DN, "generic_name": "N", "negotiated": True,
                                    "published_on": "2024-03-01", "effective_from": "2024-04-01"}),
        ("insurance.drug_catalog", {"drug_code": "X" + "M" * 22, "generic_name": "M", "negotiated": True,
                                    "published_on": "2024-03-01", "effective_from": "2024-04-01"}),
        ("health.formulary", {"institution_code": H1, "drug_code": DN}),
        ("insurance.dual_channel_pharmacies", {"pharmacy_code": P1, "division_code": "330102"}),
        ("insurance.dual_channel_pharmacies", {"pharmacy_code": P2, "division_code": "330103",
                                               "revoked_on": "2024-05-01"}),
    ]
    for i, (at, codes) in enumerate([("2024-06-01T10:00:00+08:00", ["1" * 20]),
                                     ("2024-06-02T10:00:00+08:00", ["1" * 20]),
                                     ("2024-06-03T10:00:00+08:00", ["2" * 20, "3" * 20]),
                                     ("2024-06-04T10:00:00+08:00", [])]):
        rows.append(("insurance.settlements", {"settlement_id": f"STL-{i:06d}", "provider_code": P1,
                                               "drug_code": DN, "settled_at": at, "trace_codes": codes,
                                               "unit_price": f"{i + 1}.25"}))
    rows += [
        ("traceability.trace_events", {"trace_code": "1" * 20, "event_at": "2024-06-01T11:00:00+08:00"}),
        ("traceability.trace_events", {"trace_code": "2" * 20, "event_at": "2024-06-03T11:00:00+08:00"}),
        ("traceability.trace_events", {"trace_code": "2" * 20, "event_at": "2024-06-05T11:00:00+08:00",
                                       "party_code": P2}),
    ]
    return rows


def load(conn, rows) -> None:
    for table, row in rows:
        insert(conn, table, [row])


@pytest.fixture
def sample(warehouse):
    load(warehouse, sample_rows())
    return warehouse


def test_output_matches_the_warehouse_tables(sample):
    from sanyi.warehouse import FINDINGS_SCHEMA, RESULTS_SCHEMA

    results, findings = indicators.compute(sample, "2024-06", now=NOW, indicators=MINE,
                                           source_snapshots={"insurance.settlements": 42})
    assert results.schema.equals(RESULTS_SCHEMA) and findings.schema.equals(FINDINGS_SCHEMA)
    assert results.num_rows > 0 and findings.num_rows > 0
    assert set(results.column("computed_at").to_pylist()) == {NOW}
    assert set(findings.column("source_snapshots").to_pylist()) == {'{"insurance.settlements": 42}'}
    # rows come in the order of indicators.md
    order = [INDICATORS.index(i) for i in results.column("indicator").to_pylist()]
    assert order == sorted(order)
    assert {i for i in results.column("indicator").to_pylist()} == set(MINE)


def test_every_breach_has_findings_and_findings_only_explain_breaches(sample):
    for indicator in MINE:
        if indicator == "duplicate_trace":
            continue  # its findings sit on not_applicable province rows by design (indicators.md 5)
        results, findings = run_indicator(sample, "2024-06", indicator)
        check_findings_behind_breaches(results, findings)


def test_recomputing_is_deterministic_whatever_the_load_order(warehouse):
    # The same data loaded in reverse order, in a second warehouse, gives byte-identical tables.
    load(warehouse, sample_rows())
    first = indicators.compute(warehouse, "2024-06", now=NOW, indicators=MINE)
    again = indicators.compute(warehouse, "2024-06", now=NOW, indicators=MINE)
    import duckdb

    other = duckdb.connect()
    create_warehouse(other)
    load(other, list(reversed(sample_rows())))
    reverse = indicators.compute(other, "2024-06", now=NOW, indicators=MINE)
    for a, b, c in zip(first, again, reverse, strict=True):
        assert a.equals(b) and a.equals(c)


def test_a_policy_file_change_changes_the_outcome(sample, tmp_path):
    # The institution stocks 1 of 2 varieties (0.50). Raise the grade-A bound to 0.60 in a copy of the
    # policy file: a breach appears, with its findings, with no code change.
    before, _ = indicators.compute(sample, "2024-06", now=NOW, indicators=["nego_allocation"])
    policy = policy_with(tmp_path, {"nego_allocation_min_rate_l3_general_grade_a": 0.60})
    after, findings = indicators.compute(sample, "2024-06", now=NOW, indicators=["nego_allocation"],
                                         policy=policy)

    def status(table: pa.Table) -> str:
        return next(r["status"] for r in table.to_pylist() if r["entity_code"] == H1)

    assert (status(before), status(after)) == ("compliant", "breach")
    assert [f["subject"] for f in findings.to_pylist() if f["entity_code"] == H1] == ["M"]


def test_a_later_effective_value_applies_from_its_period(sample, tmp_path):
    # The raised bound is in force from 2024-07-01 only: June keeps 0.30, July applies 0.60.
    text = indicators.DEFAULT_POLICY_FILE.read_text(encoding="utf-8").replace(
        "[nego_allocation.nego_allocation_min_rate_l3_general_grade_a]\n",
        "[nego_allocation.nego_allocation_min_rate_l3_general_grade_a]\n# raised from July\n",
    )
    text = re.sub(
        r"(# raised from July\n(?:.*\n){2})values = \[\{ effective_from = 2020-01-01, value = 0.30 \}\]",
        r"\1values = [{ effective_from = 2020-01-01, value = 0.30 },"
        r" { effective_from = 2024-07-01, value = 0.60 }]",
        text,
    )
    path = tmp_path / "parameters.toml"
    path.write_text(text, encoding="utf-8")
    policy = Policy.load(path)
    june, _ = run_indicator(sample, "2024-06", "nego_allocation", policy=policy)
    july, _ = run_indicator(sample, "2024-07", "nego_allocation", policy=policy)
    assert next(r for r in june if r["entity_code"] == H1)["threshold"] == 0.30
    assert next(r for r in july if r["entity_code"] == H1)["threshold"] == 0.60


def write_sql(folder: Path, indicator: str, results: str, findings: str | None = None) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{indicator}.sql").write_text(results, encoding="utf-8")
    (folder / f"{indicator}.findings.sql").write_text(findings or EMPTY_FINDINGS, encoding="utf-8")


RESULT_SQL = """
SELECT 'nego_allocation' AS indicator, p.period, 'province' AS entity_type,
       CAST(p.period_end AS VARCHAR) || ' ' || CAST(p.now_local AS VARCHAR) AS entity_code,
       s.dataset AS measure, p.nego_allocation_min_rate_pharmacy AS value, NULL AS numerator,
       NULL AS denominator, CAST(s.due_offset_days AS DOUBLE) AS threshold, '{status}' AS status
FROM params p JOIN schedules s ON s.dataset = 'insurance/settlements'
"""
EMPTY_FINDINGS = """
SELECT 'nego_allocation' AS indicator, p.period, 'province' AS entity_type, 'x' AS entity_code,
       'k' AS kind, 's' AS subject, CAST(NULL AS DECIMAL(18, 2)) AS amount, '{}' AS detail
FROM params p WHERE FALSE
"""


def test_params_and_schedules_are_registered(warehouse, tmp_path):
    folder = tmp_path / "sql"
    write_sql(folder, "nego_allocation", RESULT_SQL.format(status="not_applicable"))
    (folder / "_common.sql").write_text("CREATE OR REPLACE TEMP VIEW marker AS SELECT 1 AS x;")
    now = datetime(2024, 2, 29, 16, 30, tzinfo=UTC)
    results, findings = indicators.compute(warehouse, "2024-02", now=now, indicators=["nego_allocation"],
                                           sql_dir=folder)
    row = results.to_pylist()[0]
    # period end, and computation time on the UTC+08:00 wall clock (29 Feb 16:30 UTC = 1 Mar 00:30)
    assert row["entity_code"] == "2024-02-29 2024-03-01 00:30:00"
    assert (row["measure"], row["value"], row["threshold"]) == ("insurance/settlements", 0.30, 2.0)
    assert findings.num_rows == 0
    assert warehouse.sql("SELECT x FROM marker").fetchall() == [(1,)]   # _common.sql ran


def test_base_tables_run_before_the_selects_and_read_this_periods_params(warehouse, tmp_path):
    # The SELECT reads a table of the base file; the table reads params, so each period sees its own values.
    write_sql(tmp_path, "nego_allocation", RESULT_SQL.format(status="not_applicable").replace(
        "FROM params p", "FROM nego_allocation__shared v CROSS JOIN params p").replace(
        "CAST(p.period_end AS VARCHAR) || ' ' || CAST(p.now_local AS VARCHAR)", "v.shared_period"))
    (tmp_path / "nego_allocation.base.sql").write_text(
        "CREATE OR REPLACE TEMP TABLE nego_allocation__shared AS SELECT p.period AS shared_period FROM params p;",
        encoding="utf-8")
    for period in ("2024-02", "2024-03"):
        results, _ = indicators.compute(warehouse, period, now=NOW, indicators=["nego_allocation"],
                                        sql_dir=tmp_path)
        assert results.column("entity_code").to_pylist() == [period]


def _base_tables_left(conn) -> list[str]:
    rows = conn.sql("SELECT table_name FROM duckdb_tables() WHERE temporary ORDER BY 1").fetchall()
    return [name for (name,) in rows if any(name.startswith(f"{i}__") for i in INDICATORS)]


def test_base_tables_are_dropped_once_their_indicator_is_read(sample):
    indicators.compute(sample, "2024-06", now=NOW)
    assert _base_tables_left(sample) == []
    # …and only theirs: the registered params and the caller's own temp tables stay.
    assert sample.sql("SELECT COUNT(*) FROM params").fetchall() == [(1,)]


def test_base_tables_are_dropped_when_a_select_fails(warehouse, tmp_path):
    write_sql(tmp_path, "nego_allocation", "SELECT * FROM no_such_table")
    (tmp_path / "nego_allocation.base.sql").write_text(
        "CREATE OR REPLACE TEMP TABLE nego_allocation__shared AS SELECT 1 AS x;", encoding="utf-8")
    with pytest.raises(IndicatorError, match="no_such_table"):
        indicators.compute(warehouse, "2024-02", now=NOW, indicators=["nego_allocation"], sql_dir=tmp_path)
    assert _base_tables_left(warehouse) == []


def test_a_failing_base_file_is_an_indicator_error(warehouse, tmp_path):
    write_sql(tmp_path, "nego_allocation", RESULT_SQL.format(status="breach"))
    (tmp_path / "nego_allocation.base.sql").write_text(
        "CREATE OR REPLACE TEMP VIEW nego_allocation__x AS SELECT * FROM no_such_table;", encoding="utf-8")
    with pytest.raises(IndicatorError, match="nego_allocation.base.sql"):
        indicators.compute(warehouse, "2024-02", now=NOW, indicators=["nego_allocation"], sql_dir=tmp_path)


@pytest.mark.parametrize("name", BASE_FILES)
def test_base_files_only_define_tables_named_after_their_indicator(name):
    # Tables, computed once: as views, the findings' subqueries computed the costly ones again and again.
    indicator = name.split(".")[0]
    assert indicator in INDICATORS
    statements = [st.strip() for st in _code_only(
        (indicators.DEFAULT_SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")).split(";") if st.strip()]
    assert statements
    for statement in statements:
        assert re.match(rf"CREATE OR REPLACE TEMP TABLE {indicator}__[a-z0-9_]+ AS\s", statement), statement[:80]


@pytest.mark.parametrize(
    "sql, message",
    [
        (RESULT_SQL.format(status="fine"), "status"),
        (RESULT_SQL.format(status="breach").replace("p.period,", "'2024-01' AS period,"), "2024-01"),
        (RESULT_SQL.format(status="breach").replace("'province' AS entity_type", "'planet' AS entity_type"),
         "planet"),
        (RESULT_SQL.format(status="breach").replace("AS measure", "AS what"), "columns"),
        (RESULT_SQL.format(status="breach") + " UNION ALL " + RESULT_SQL.format(status="breach"),
         "two result"),
        ("SELECT * FROM no_such_table", "no_such_table"),
    ],
)
def test_sql_breaking_the_output_contract_is_an_error(warehouse, tmp_path, sql, message):
    write_sql(tmp_path, "nego_allocation", sql)
    with pytest.raises(IndicatorError, match=message):
        indicators.compute(warehouse, "2024-02", now=NOW, indicators=["nego_allocation"], sql_dir=tmp_path)


@pytest.mark.parametrize("detail", ["'not json'", """'{"a": 1,}'""", """'{"a": 1} {"b": 2}'""",
                                    """'{"a": "\x01"}'"""])
def test_finding_detail_must_be_json(warehouse, tmp_path, detail):
    # A trailing comma is one of the liberties DuckDB's own json_valid() takes: refused here all the same.
    write_sql(tmp_path, "nego_allocation", RESULT_SQL.format(status="breach"),
              EMPTY_FINDINGS.replace("'{}'", detail).replace("WHERE FALSE", ""))
    with pytest.raises(IndicatorError, match="JSON"):
        indicators.compute(warehouse, "2024-02", now=NOW, indicators=["nego_allocation"], sql_dir=tmp_path)


def test_finding_detail_may_hold_the_non_finite_numbers_duckdb_writes(warehouse, tmp_path):
    # json_object() writes NaN and Infinity for such doubles; Python's json reads them back, so they pass.
    detail = "json_object('ratio', CAST('nan' AS DOUBLE), 'cap', CAST('inf' AS DOUBLE))"
    write_sql(tmp_path, "nego_allocation", RESULT_SQL.format(status="breach"),
              EMPTY_FINDINGS.replace("'{}'", detail).replace("WHERE FALSE", ""))
    _, findings = indicators.compute(warehouse, "2024-02", now=NOW, indicators=["nego_allocation"],
                                     sql_dir=tmp_path)
    assert findings.column("detail").to_pylist() == ['{"ratio":NaN,"cap":Infinity}']


def test_missing_sql_file_is_an_error(warehouse, tmp_path, monkeypatch):
    write_sql(tmp_path, "nego_allocation", RESULT_SQL.format(status="breach"))
    (tmp_path / "nego_allocation.findings.sql").unlink()
    monkeypatch.setattr(indicators, "SKIP_MISSING_SQL", False)
    with pytest.raises(IndicatorError, match="missing SQL"):
        indicators.compute(warehouse, "2024-02", now=NOW, indicators=["nego_allocation"], sql_dir=tmp_path)


def test_every_indicator_has_its_sql_files():
    for indicator in INDICATORS:
        for suffix in (".sql", ".findings.sql"):
            assert (indicators.DEFAULT_SQL_DIR / f"{indicator}{suffix}").is_file(), indicator + suffix
    assert indicators.SKIP_MISSING_SQL is False


def test_all_indicators_run_on_an_empty_warehouse(warehouse):
    # Nothing loaded: indicators 1-5 have no population (no rows); submissions are all missing.
    results, findings = indicators.compute(warehouse, "2024-06", now=NOW)
    assert not set(results.column("indicator").to_pylist()) & set(MINE)
    assert not set(findings.column("indicator").to_pylist()) & set(MINE)


def test_bad_arguments_are_refused(warehouse):
    with pytest.raises(IndicatorError, match="unknown indicators"):
        indicators.compute(warehouse, "2024-06", now=NOW, indicators=["nope"])
    with pytest.raises(ValueError, match="YYYY-MM"):
        indicators.compute(warehouse, "2024-6", now=NOW)
    with pytest.raises(ValueError, match="timezone"):
        indicators.compute(warehouse, "2024-06", now=datetime(2024, 7, 1))


def _code_only(text: str) -> str:
    """SQL without comments and string literals."""
    text = re.sub(r"--[^\n]*", "", text)
    return re.sub(r"'(?:[^']|'')*'", "''", text)


@pytest.mark.parametrize(
    "name", ["_common"] + [f"{i}{s}" for i in MINE for s in ("", ".findings")] + BASE_FILES
)
def test_sql_holds_no_policy_number_and_stays_portable(name):
    text = _code_only((indicators.DEFAULT_SQL_DIR / f"{name}.sql").read_text(encoding="utf-8"))
    # type parameters, substring positions (FROM 1 FOR 3: an ICD-10 category), institution levels
    # (populations) and months per year (month arithmetic) are not policy
    text = re.sub(r"DECIMAL\(18, 2\)|FROM [12] FOR [23]|level = [123]\b|\) \* 12\b", "", text)
    numbers = set(re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", text))
    assert numbers <= {"0", "1", "0.0", "1.0"}, f"{name}.sql has literals {sorted(numbers)}: use params"
    for construct in ("QUALIFY", "list_", "::", "strftime"):
        assert construct.lower() not in text.lower(), f"{name}.sql uses {construct}"
