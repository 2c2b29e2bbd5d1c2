"""The bad-input corpus through the real ingest DAG (``dag.test()``), once; then each case's receipt.

The run happens with ``SANYI_MAX_FILE_BYTES`` at 160 MiB (the 100 MB line file is under it, the gzip bomb
expands past it, the 2 GB sparse object is far over it), and with the landing bucket's ``open`` booby-trapped
for the objects that must never be read.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import pytest

from badinput.corpus import CASES, FORMULAS, MAX_FILE_BYTES, Case, drop_corpus, keyed_cases
from conftest import TEST_KEY, sanyi_env
from guarantees import assert_every_object_accounted_for, current_rows
from sanyi.config import Settings
from sanyi.ingest import receipt_key
from sanyi.ledger import TERMINAL, FileRow
from sanyi.storage import LocalBucket, open_bucket
from sanyi.warehouse import Warehouse

pytestmark = pytest.mark.slow

KEYED = keyed_cases()


@dataclass
class CorpusRun:
    settings: Settings
    cases: dict[str, Case]
    state: str
    reads_of_untouchables: list[str]
    rows: dict[str, FileRow]  # the ledger row of each object's current bytes


class ReadForbidden(AssertionError):
    pass


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, airflow_db) -> CorpusRun:
    from sanyi.cli import run_dag

    home = tmp_path_factory.mktemp("badinput")
    with sanyi_env(home, SANYI_MAX_FILE_BYTES=str(MAX_FILE_BYTES)) as mp:
        settings = Settings.from_env()
        cases = drop_corpus(settings)
        untouchable = {k for k, c in cases.items() if c.never_read}
        landing_root = LocalBucket(root=settings.landing_url).root
        reads: list[str] = []
        real_open = LocalBucket.open

        def guarded_open(self, key):
            if self.root == landing_root and key in untouchable:
                reads.append(key)
                raise ReadForbidden(f"{key} is over the size limit and must never be read")
            return real_open(self, key)

        mp.setattr(LocalBucket, "open", guarded_open)
        # The trap is live: reading the sparse object would fail its task (and this check proves it).
        with pytest.raises(ReadForbidden):
            open_bucket(settings.landing_url).read_bytes(next(iter(untouchable)))
        reads.clear()
        state = run_dag("sanyi_ingest")
        reads_during_run = list(reads)
        yield CorpusRun(settings, cases, state, reads_during_run, current_rows(settings))


def test_the_corpus_is_broad():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


def test_the_dag_run_succeeds_and_every_file_reaches_a_terminal_state(corpus_run):
    assert corpus_run.state == "success"
    rows = corpus_run.rows
    assert set(rows) == set(corpus_run.cases)
    assert all(r.status in TERMINAL for r in rows.values())


def test_nothing_lost_nothing_doubled(corpus_run):
    assert_every_object_accounted_for(corpus_run.settings)


def test_exactly_one_receipt_per_file_and_no_other(corpus_run):
    rows = corpus_run.rows
    receipts = sorted(
        o.key for o in open_bucket(corpus_run.settings.receipts_url).list() if o.key.endswith(".receipt.json")
    )
    assert receipts == sorted(f"{receipt_key(k, r.sha256)}.receipt.json" for k, r in rows.items())


def test_objects_over_the_size_limit_are_refused_unread(corpus_run):
    assert corpus_run.reads_of_untouchables == []
    rows = corpus_run.rows
    for key, case in corpus_run.cases.items():
        if case.never_read:
            assert rows[key].sha256.startswith("unhashed-")
            assert rows[key].size > MAX_FILE_BYTES


@pytest.mark.parametrize(("key", "case"), KEYED, ids=[c.name for _, c in KEYED])
def test_case_receipt(corpus_run, key, case):
    settings = corpus_run.settings
    row = corpus_run.rows[key]
    receipts = open_bucket(settings.receipts_url)
    base = receipt_key(key, row.sha256)
    r = json.loads(receipts.read_bytes(f"{base}.receipt.json"))
    counts = r["counts"]
    assert r["status"] == case.status, r
    assert row.status == case.status
    if case.reason is not None:
        assert case.reason in (r["reason"] or ""), r["reason"]
    if r["status"] in ("rejected", "duplicate"):
        assert r["reason"], "a rejected or duplicate file says why"
    if case.counts is not None:
        assert (counts["read"], counts["loaded"], counts["rejected"], counts["duplicate_records"]) == case.counts
    assert counts["read"] == counts["loaded"] + counts["rejected"] + counts["duplicate_records"]
    errors_path = f"{base}.errors.ndjson"
    if case.rules or case.error_lines:
        errors = [json.loads(x) for x in receipts.read_bytes(errors_path).decode().splitlines()]
        assert all(e["message"] for e in errors)
        assert set(case.rules) <= {e["rule"] for e in errors}, errors
        if case.error_lines is not None:
            assert sorted({e["line"] for e in errors}) == list(case.error_lines)
    elif counts["rejected"] == 0:
        assert not receipts.exists(errors_path)


def _loaded_rows(settings: Settings, table: str, key: str) -> list[dict]:
    return [r for r in Warehouse(settings=settings).scan(table).to_pylist() if r["_source_file"] == key]


def test_quoted_newlines_load_with_the_line_each_record_starts_on(corpus_run):
    (key,) = [k for k, c in corpus_run.cases.items() if c.name == "csv_quoted_newlines"]
    rows = _loaded_rows(corpus_run.settings, "health.divisions", key)
    assert {r["_line_no"]: r["name"] for r in rows} == {2: "上城\n区", 4: "西湖区", 7: "拱墅区"}


def test_bom_and_crlf_do_not_leak_into_values(corpus_run):
    for name, first in (("utf8_bom_csv", 330501), ("crlf_csv", 330511), ("gb18030_named_csv_after_rejection", 330521)):
        (key,) = [k for k, c in corpus_run.cases.items() if c.name == name]
        rows = _loaded_rows(corpus_run.settings, "health.divisions", key)
        assert sorted((r["division_code"], r["name"], r["parent_code"]) for r in rows) == [
            (str(first), "上城区", "330100"),
            (str(first + 1), "西湖区", "330100"),
        ], name


def test_a_file_under_the_wrong_agency_writes_nothing_anywhere(corpus_run):
    (key,) = [k for k, c in corpus_run.cases.items() if c.name == "dataset_under_wrong_agency"]
    wh = Warehouse(settings=corpus_run.settings)
    for table in wh.table_names():
        if "_source_file" in wh.scan(table).schema.names:
            assert _loaded_rows(corpus_run.settings, table, key) == [], table


# ------------------------------------------------------------------------------ formula injection
def _formula_cells(rows: list[list[str]]) -> list[str]:
    return [cell for row in rows for cell in row if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]


def test_formulas_are_neutralised_in_csv_exports(corpus_run):
    from sanyi.publish import to_csv_bytes

    table = Warehouse(settings=corpus_run.settings).scan("health.divisions")
    assert set(FORMULAS) <= set(table.column("name").to_pylist())  # stored as sent: data is not altered
    data = to_csv_bytes(table)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    names = [r[rows[0].index("name")] for r in rows[1:]]
    assert {"'" + f for f in FORMULAS} <= set(names)
    assert _formula_cells(rows) == []


def test_formulas_are_neutralised_in_query_csv_output(corpus_run, capsys, monkeypatch):
    from sanyi.cli import main

    for var, value in (("SANYI_HOME", str(corpus_run.settings.home)), ("SANYI_PSEUDONYM_KEY", TEST_KEY)):
        monkeypatch.setenv(var, value)
    assert main(["query", "SELECT division_code, name FROM health.divisions ORDER BY 1", "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out, newline="")))
    assert {"'" + f for f in FORMULAS} <= {r[1] for r in rows[1:]}
    assert _formula_cells(rows) == []
