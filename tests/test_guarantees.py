"""Nothing lost, nothing doubled; no resident id outside the landing bucket; agencies kept apart.

The first half drives ingestion file by file (``discover`` / ``process_file``) through replays, re-drops
and races, checking each end state with :func:`guarantees.assert_every_object_accounted_for`. The second
half plants resident ids everywhere an agency could put one, runs the real ingest DAG in a child process
with Airflow logging at INFO (so its task logs, returned values and Sanyi's own log lines are all
captured), publishes a period and exports every table through the CLI, then scans all of it.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import hmac
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sanyi
from conftest import TEST_KEY, sanyi_env
from guarantees import assert_every_object_accounted_for, assert_no_resident_ids, current_rows, find_leaks
from samples import division, ndjson, resident_id, settlement
from sanyi import privacy
from sanyi.config import Settings
from sanyi.contracts import AGENCIES
from sanyi.ingest import discover, process_file, receipt_key
from sanyi.ledger import Ledger
from sanyi.storage import open_bucket
from sanyi.warehouse import QUARANTINE, Warehouse

T0 = datetime(2024, 10, 2, 1, 0, tzinfo=UTC)
KEY = "insurance/settlements/2024-10-01/s.ndjson"
DIV_KEY = "health/divisions/2024-10-01/d.ndjson"


def drop(settings: Settings, key: str, data: bytes, *, at: datetime = T0) -> None:
    open_bucket(settings.landing_url).put(key, data, last_modified=at)


def run(settings: Settings, *, reverse: bool = False) -> None:
    """Discover, then process what is pending (in reverse order to mimic parallel tasks finishing out of order)."""
    ids = discover(settings)
    for file_id in reversed(ids) if reverse else ids:
        process_file(settings, file_id)


def receipt(settings: Settings, key: str) -> dict:
    (row,) = [r for k, r in current_rows(settings).items() if k == key]
    return json.loads(open_bucket(settings.receipts_url).read_bytes(f"{receipt_key(key, row.sha256)}.receipt.json"))


def rows(settings: Settings, table: str) -> list[dict]:
    return Warehouse(settings=settings).scan(table).to_pylist()


def snapshots(settings: Settings, table: str) -> int:
    return len(Warehouse(settings=settings).catalog.load_table(table).snapshots())


# ------------------------------------------------------------------------- nothing lost, nothing doubled
def test_the_same_bytes_dropped_again_under_the_same_key_change_nothing(settings):
    data = ndjson([settlement(1), settlement(2)])
    drop(settings, KEY, data)
    run(settings)
    first = receipt(settings, KEY)
    before = snapshots(settings, "insurance.settlements")

    drop(settings, KEY, data, at=T0 + timedelta(hours=1))  # re-uploaded: new mtime, same bytes
    assert discover(settings) == []
    assert receipt(settings, KEY) == first
    assert len(Ledger(settings=settings).all()) == 1
    assert snapshots(settings, "insurance.settlements") == before
    assert len(rows(settings, "insurance.settlements")) == 2
    assert_every_object_accounted_for(settings)


def test_the_same_bytes_under_another_key_are_a_duplicate_whatever_the_processing_order(settings):
    data = ndjson([settlement(1), settlement(2)])
    copy = "insurance/settlements/2024-10-01/copy of s.ndjson"
    drop(settings, KEY, data)
    drop(settings, copy, data, at=T0 + timedelta(minutes=5))
    # Both pending at once, the copy processed first (parallel mapped tasks finish in any order): the
    # earlier arrival is still the original.
    run(settings, reverse=True)
    assert receipt(settings, KEY)["status"] == "loaded"
    dup = receipt(settings, copy)
    assert dup["status"] == "duplicate" and dup["duplicate_of"] == KEY
    assert dup["counts"] == {"read": 0, "loaded": 0, "rejected": 0, "duplicate_records": 0}
    assert len(rows(settings, "insurance.settlements")) == 2
    assert_every_object_accounted_for(settings)


def test_the_same_file_name_on_another_date_is_a_new_submission_that_stores_nothing_twice(settings):
    settle = ndjson([settlement(1), settlement(2)])
    divs = ndjson([division("330102"), division("330106", name="西湖区")])
    drop(settings, KEY, settle)
    drop(settings, DIV_KEY, divs)
    run(settings)
    drop(settings, KEY.replace("2024-10-01", "2024-10-02"), settle, at=T0 + timedelta(days=1))
    drop(settings, DIV_KEY.replace("2024-10-01", "2024-10-02"), divs, at=T0 + timedelta(days=1))
    run(settings)

    again = receipt(settings, KEY.replace("2024-10-01", "2024-10-02"))
    assert again["status"] == "loaded"
    assert again["counts"] == {"read": 2, "loaded": 0, "rejected": 0, "duplicate_records": 2}
    assert len(rows(settings, "insurance.settlements")) == 2
    # Upsert: the later business date now owns the rows, one per key, same values.
    stored = rows(settings, "health.divisions")
    assert sorted((r["division_code"], r["name"], str(r["_business_date"])) for r in stored) == [
        ("330102", "上城区", "2024-10-02"),
        ("330106", "西湖区", "2024-10-02"),
    ]
    assert_every_object_accounted_for(settings)


def test_changed_bytes_under_a_seen_key_are_a_new_submission_reported_as_superseding(settings):
    drop(settings, KEY, ndjson([settlement(1), settlement(2)]))
    drop(settings, DIV_KEY, ndjson([division("330102", name="旧名")]))
    run(settings)
    old_settle, old_div = receipt(settings, KEY), receipt(settings, DIV_KEY)

    drop(settings, KEY, ndjson([settlement(2), settlement(3)]), at=T0 + timedelta(hours=2))
    drop(settings, DIV_KEY, ndjson([division("330102", name="新名")]), at=T0 + timedelta(hours=2))
    run(settings)

    new_settle = receipt(settings, KEY)
    assert new_settle["supersedes"] == [old_settle["sha256"]]
    # Settlement 2 was already stored by the first version: a duplicate record, not a second copy.
    assert new_settle["counts"] == {"read": 2, "loaded": 1, "rejected": 0, "duplicate_records": 1}
    assert sorted(r["settlement_id"] for r in rows(settings, "insurance.settlements")) == sorted(
        settlement(i)["settlement_id"] for i in (1, 2, 3)
    )
    assert receipt(settings, DIV_KEY)["supersedes"] == [old_div["sha256"]]
    assert [r["name"] for r in rows(settings, "health.divisions")] == ["新名"]
    archive = open_bucket(settings.receipts_url)
    for key, old in ((KEY, old_settle), (DIV_KEY, old_div)):
        assert json.loads(archive.read_bytes(f"{key}.{old['sha256'][:12]}.receipt.json")) == old
    assert_every_object_accounted_for(settings)


def test_bytes_renamed_after_a_rejection_caused_by_their_name_are_loaded(settings):
    data = ndjson([settlement(1)])
    wrong = "insurance/settlements/2024-10-01/s.ndjson.gz"  # says gzip, is not
    drop(settings, wrong, data)
    run(settings)
    assert receipt(settings, wrong)["status"] == "rejected"
    drop(settings, KEY, data, at=T0 + timedelta(minutes=1))
    run(settings)
    assert receipt(settings, KEY)["status"] == "loaded"
    assert len(rows(settings, "insurance.settlements")) == 1
    assert_every_object_accounted_for(settings)


def test_an_object_replaced_before_processing_loses_neither_version(settings):
    first, second = ndjson([settlement(1)]), ndjson([settlement(2)])
    drop(settings, KEY, first)
    (file_id,) = discover(settings)
    drop(settings, KEY, second, at=T0 + timedelta(minutes=1))  # replaced while still pending
    assert "replaced" in process_file(settings, file_id).reason
    run(settings)
    assert receipt(settings, KEY)["status"] == "loaded"
    # The first bytes were never read; a copy of them dropped later is their first real submission.
    copy = "insurance/settlements/2024-10-01/first again.ndjson"
    drop(settings, copy, first, at=T0 + timedelta(minutes=2))
    run(settings)
    assert receipt(settings, copy)["status"] == "loaded"
    assert len(rows(settings, "insurance.settlements")) == 2
    assert_every_object_accounted_for(settings)


def test_a_key_switched_back_to_earlier_bytes_gets_a_receipt_for_them(settings):
    a, b = ndjson([settlement(1)]), ndjson([settlement(2)])
    drop(settings, KEY, a)
    run(settings)
    drop(settings, KEY, b, at=T0 + timedelta(hours=1))
    run(settings)
    drop(settings, KEY, a, at=T0 + timedelta(hours=2))
    run(settings)
    assert_every_object_accounted_for(settings)
    receipt = json.loads(open_bucket(settings.receipts_url).read_bytes(KEY + ".receipt.json"))
    assert receipt["sha256"] == hashlib.sha256(a).hexdigest()
    assert receipt["status"] == "duplicate"  # the same bytes were loaded from this key before


def test_the_checker_catches_a_missing_receipt_and_a_doubled_row(settings):
    drop(settings, KEY, ndjson([settlement(1)]))
    run(settings)
    assert_every_object_accounted_for(settings)
    receipts = open_bucket(settings.receipts_url)
    saved = receipts.read_bytes(f"{KEY}.receipt.json")
    receipts.delete(f"{KEY}.receipt.json")
    with pytest.raises(AssertionError, match="no receipt"):
        assert_every_object_accounted_for(settings)
    receipts.put(f"{KEY}.receipt.json", saved)
    wh = Warehouse(settings=settings)
    table = wh.catalog.load_table("insurance.settlements")
    table.append(table.scan().to_arrow())  # the same row stored a second time
    with pytest.raises(AssertionError, match="stored more than once"):
        assert_every_object_accounted_for(settings)


# -------------------------------------------------------------------------------- agencies kept apart
def test_a_file_under_one_agency_never_writes_another_agencys_table(settings):
    drop(settings, "health/settlements/2024-10-01/s.ndjson", ndjson([settlement(1)]))
    drop(settings, "traceability/divisions/2024-10-01/d.ndjson", ndjson([division()]))
    drop(settings, "insurance/chronic_registry/2024-10-01/c.ndjson", b'{"patient_id": "x"}\n')
    wh = Warehouse(settings=settings)
    wh.ensure_all()
    run(settings)
    for key in ("health/settlements/2024-10-01/s.ndjson", "traceability/divisions/2024-10-01/d.ndjson"):
        r = receipt(settings, key)
        assert r["status"] == "rejected" and "belongs to agency" in r["reason"]
    assert len(wh.table_names()) > 13
    assert all(wh.scan(t).num_rows == 0 for t in wh.table_names())
    assert_every_object_accounted_for(settings)


def test_receipts_go_only_under_the_agency_prefix_of_their_file(settings):
    drop(settings, KEY, ndjson([settlement(1), settlement(2, amount=1)]))
    drop(settings, DIV_KEY, ndjson([division()]))
    drop(settings, "traceability/trace_events/2024-10-01/t.ndjson", b"not json\n")
    drop(settings, "health/settlements/2024-10-01/wrong.ndjson", ndjson([settlement(3)]))
    run(settings)
    receipts = open_bucket(settings.receipts_url)
    landing = [o.key for o in open_bucket(settings.landing_url).list()]
    for agency in AGENCIES:
        mine = {o.key for o in receipts.list(f"{agency}/")}
        expected = {k for k in landing if k.startswith(f"{agency}/")}
        assert {k.rsplit(".", 2)[0] for k in mine} == expected, agency
    assert {o.key.split("/")[0] for o in receipts.list()} <= set(AGENCIES)


# ---------------------------------------------------------------------------------------- pseudonyms
def test_the_pseudonym_joins_across_agencies_and_changes_with_the_key(settings, tmp_path):
    chronic = "health/chronic_registry/2024-10-01/r.ndjson"
    registry = ndjson(
        [
            {
                "patient_id": resident_id(i),
                "disease": "hypertension",
                "institution_code": "H33010200017",
                "filed_on": "2024-09-01",
            }
            for i in (1, 2)
        ]
    )
    drop(settings, KEY, ndjson([settlement(1), settlement(2), settlement(3)]))
    drop(settings, chronic, registry)
    run(settings)
    conn = Warehouse(settings=settings).duckdb()
    joined = conn.execute(
        "SELECT s.settlement_id FROM insurance.settlements s JOIN health.chronic_registry c USING (patient_id) "
        "ORDER BY 1"
    ).fetchall()
    assert [r[0] for r in joined] == [settlement(1)["settlement_id"], settlement(2)["settlement_id"]]
    first = {r["patient_id"] for r in rows(settings, "health.chronic_registry")}
    assert first == {hmac.new(TEST_KEY.encode(), resident_id(i).encode(), hashlib.sha256).hexdigest() for i in (1, 2)}

    other = Settings.from_env({"SANYI_HOME": str(tmp_path / "other"), "SANYI_PSEUDONYM_KEY": "another-key-" + "9" * 24})
    drop(other, chronic, registry)
    run(other)
    second = {r["patient_id"] for r in rows(other, "health.chronic_registry")}
    assert len(second) == 2 and second.isdisjoint(first)


def test_a_resident_id_sent_as_a_number_is_not_stored(settings):
    rid = next(resident_id(i) for i in range(50) if resident_id(i)[-1] != "X")
    drop(settings, KEY, ndjson([settlement(1, line_no=int(rid))]))
    run(settings)
    receipt = json.loads(open_bucket(settings.receipts_url).read_bytes(KEY + ".receipt.json"))
    assert receipt["status"] == "rejected"
    errors = open_bucket(settings.receipts_url).read_bytes(KEY + ".errors.ndjson").decode()
    assert "resident_id_in_wrong_field" in errors
    assert_no_resident_ids(settings)


def test_the_leak_scan_ignores_digests_and_snapshot_ids_but_finds_ids(settings):
    rid = resident_id(7)
    digest = "ab" + rid + "c" * 44  # a 64-hex value whose digits happen to pass the id check
    receipts = open_bucket(settings.receipts_url)
    receipts.put("insurance/settlements/2024-10-01/a.receipt.json", json.dumps({"sha256": digest}).encode())
    assert find_leaks(settings) == {}
    receipts.put("insurance/settlements/2024-10-01/b.receipt.json", json.dumps({"note": f"x{rid}y"}).encode())
    assert list(find_leaks(settings).values()) == [1]


# ------------------------------------------------------------------------------ ids planted everywhere
def _id(n: int) -> str:
    return resident_id(n, area="110101", birth="19900307")


def _bad_check(rid: str) -> str:
    return rid[:17] + ("0" if rid[17] != "0" else "1")


def _csv(header: list[str], *rows: list[str], encoding: str = "utf-8") -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue().encode(encoding)


def _numeric_id(start: int) -> str:
    return next(_id(i) for i in range(start, start + 50) if _id(i)[-1] != "X")


def planted_drops() -> dict[str, bytes]:
    """Files carrying resident ids in every place an agency could put one (and valid ones in patient_id)."""
    p = "insurance/settlements/2024-10-01/"
    d = "health/divisions/2024-10-01/"
    div_header = ["division_code", "name", "level", "parent_code"]
    registry = [
        {
            "patient_id": resident_id(i),
            "disease": "diabetes",
            "institution_code": "H33010200017",
            "filed_on": "2024-09-01",
        }
        for i in (1, 2)
    ]
    return {
        p + "patients.ndjson": ndjson(
            [settlement(1), settlement(2), settlement(3), settlement(4, patient_id=_bad_check(resident_id(4)))]
        )
        + _rec_line(settlement(5), "patient_id", _numeric_id(100), as_number=True),
        p + "wrong-fields.ndjson": ndjson(
            [
                settlement(10, settlement_id=_id(10)),
                settlement(11, diagnosis_code=f"I10 {_id(11)}"),
                settlement(12, provider_code=_id(12)),
                settlement(13, trace_codes=[_id(13)]),
                settlement(14, settled_at=_id(14)),
                settlement(15, drug_code=_id(15)),
                settlement(16, insurance_type=_id(16)),
                settlement(17, visit_type=f"{_id(17)}X"),
            ]
        ),
        p + "unknown-fields.ndjson": ndjson(
            [
                {**settlement(20), "remark": f"身份证号{_id(20)}"},
                {**settlement(21), "extra": {"id": _id(21), "list": [_id(22)]}},
                {**settlement(23), _id(23): "a key"},
                {**settlement(24), "contact": {_id(24): _id(25)}},
                # Next to characters messages and JSON write as escapes (\u0001), whose digits would run on
                # into the id's.
                {**settlement(26), "\x01" + _id(26): "\u2028" + _id(27), "note": [f"\x7f{_id(28)}\x1f"]},
                {**settlement(29), "settlement_id": "\x02" + _id(29)},
            ]
        ),
        p + "bad-json.ndjson": (
            f'{{"patient_id": "{_id(30)}", broken\n'
            f"{_numeric_id(31)}\n"
            f'"{_id(32)}"\n'
            f'{{"{_id(33)}": 1, "{_id(33)}": 2}}\n'
            f'{{"patient_id": "{_id(34)}", "quantity": NaN}}\n'
            f'[{{"patient_id": "{_id(35)}"}}]\n'
        ).encode(),
        d + "header.csv": _csv([*div_header, _id(40)], ["330102", "上城区", "county", "330100", "x"]),
        d + "dup-header.csv": _csv([*div_header, _id(41), _id(41)], ["330102", "上城区", "county", "330100", "a", "b"]),
        d + "cells.csv": _csv(
            div_header,
            ["330102", f"张三{_id(42)}", "county", "330100"],
            ["330106", "西湖区", "county", _id(43)],
            ["330108", _id(44), "county"],
        ),
        d + "legacy.gb18030.csv": _csv(
            div_header, ["330110", f"李四 {_id(45)}", "county", "330100"], encoding="gb18030"
        ),
        d + "cols.parquet": _parquet(
            pa.table(
                {
                    "division_code": ["330112", "330114"],
                    "name": [_id(46), "临平区"],
                    "level": ["county", "county"],
                    "parent_code": ["330100", "330100"],
                    _id(47): ["x", "y"],
                    "raw": pa.array([_id(48).encode(), b"-"], pa.binary()),
                }
            )
        ),
        p + f"{_id(50)}.ndjson": ndjson([settlement(50)]),
        p + f"export-{_id(51)}-final.csv.gz": gzip.compress(b"x"),
        f"insurance/settlements/{_id(52)}/x.ndjson": ndjson([settlement(52)]),
        f"{_id(53)}/settlements/2024-10-01/x.ndjson": ndjson([settlement(53)]),
        f"insurance/{_id(54)}/2024-10-01/x.ndjson": ndjson([settlement(54)]),
        "health/chronic_registry/2024-10-01/registry.ndjson": ndjson(
            [*registry, {**registry[0], "institution_code": _id(60)}]
        ),
        "insurance/dual_channel_pharmacies/2024-10-01/p.ndjson": ndjson(
            [
                {
                    "pharmacy_code": "P33010200003",
                    "name": f"大药房 {_id(61)}",
                    "division_code": "330102",
                    "designated_on": "2024-01-01",
                    "revoked_on": None,
                    "traceability_enabled": True,
                }
            ]
        ),
    }


def _rec_line(record: dict, field: str, value: str, *, as_number: bool) -> bytes:
    text = json.dumps({**record, field: "@@"}, default=float, ensure_ascii=False)
    return text.replace('"@@"', value if as_number else json.dumps(value)).encode() + b"\n"


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


_CHILD = """
import sys
from sanyi.cli import run_dag
print("DAG_STATE", run_dag("sanyi_ingest"))
"""


@dataclass
class Planted:
    settings: Settings
    dag_state: str
    logs: dict[str, str]
    exports: dict[str, str]


@pytest.fixture(scope="module")
def planted(tmp_path_factory, airflow_db) -> Planted:
    from sanyi.publish import compute_and_store, publish_periods

    home = tmp_path_factory.mktemp("privacy")
    env = {"SANYI_HOME": str(home), "SANYI_PSEUDONYM_KEY": TEST_KEY}
    settings = Settings.from_env(env)
    for i, (key, data) in enumerate(planted_drops().items()):
        drop(settings, key, data, at=T0 + timedelta(seconds=i))

    # The real DAG in a child process, with Airflow's logging at INFO: task logs, returned values
    # (XCom), Sanyi's own log lines, everything the run prints goes to one log file.
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SANYI_")}
    child_env.update(env, AIRFLOW__LOGGING__LOGGING_LEVEL="INFO", PYTHONPATH=str(Path(sanyi.__file__).parents[1]))
    log_file = home / "ingest-run.log"
    started = time.time()
    with log_file.open("w") as fh:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD], env=child_env, stdout=fh, stderr=subprocess.STDOUT, timeout=600
        )
    run_log = log_file.read_text(errors="replace")
    assert done.returncode == 0, run_log[-3000:]
    state = run_log.rsplit("DAG_STATE", 1)[-1].split()[0]
    logs = {"ingest DAG run (Airflow INFO, stdout+stderr)": run_log}
    for path in Path(os.environ["AIRFLOW_HOME"], "logs").rglob("*"):
        if path.is_file() and path.stat().st_mtime >= started:
            logs[f"airflow log {path.name}"] = path.read_text(errors="replace")

    exports: dict[str, str] = {}
    with sanyi_env(home):
        # Publishing and the CLI in this process, Python logging captured to a file at DEBUG.
        handler = _file_handler(home / "publish.log")
        try:
            compute_and_store(settings, "2024-10")
            publish_periods(settings, ["2024-10"])
            exports.update(_cli_exports(settings))
        finally:
            _remove_handler(handler)
        logs["publish and CLI (Python logging, DEBUG)"] = (home / "publish.log").read_text(errors="replace")
    return Planted(settings, state, logs, exports)


def _file_handler(path: Path):
    import logging

    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    handler._saved_level = root.level  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    return handler


def _remove_handler(handler) -> None:
    import logging

    root = logging.getLogger()
    root.removeHandler(handler)
    root.setLevel(handler._saved_level)
    handler.close()


def _cli_exports(settings: Settings) -> dict[str, str]:
    """``sanyi query`` output of the tables an agency's text reaches (each call loads every table: keep few)."""
    from sanyi.cli import main

    out = {}
    for table, fmt in (
        ("sanyi.quarantine", "csv"),
        ("sanyi.quarantine", "json"),
        ("sanyi.submissions", "csv"),
        ("insurance.settlements", "json"),
        ("indicators.findings", "csv"),
    ):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["query", f"SELECT * FROM {table}", "--format", fmt]) == 0
        out[f"sanyi query {table} --format {fmt}"] = buf.getvalue()
    return out


@pytest.mark.slow
def test_planted_run_succeeds_and_every_planted_file_is_accounted_for(planted):
    assert planted.dag_state == "success"
    assert_every_object_accounted_for(planted.settings)


@pytest.mark.slow
def test_the_planted_ids_really_are_in_the_landing_bucket(planted):
    # Otherwise the scan below would pass for the wrong reason.
    landing = open_bucket(planted.settings.landing_url)
    text = "\n".join(
        o.key + "\n" + landing.read_bytes(o.key).decode("gb18030", errors="replace") for o in landing.list()
    )
    parquet_cols = pq.read_table(io.BytesIO(landing.read_bytes("health/divisions/2024-10-01/cols.parquet")))
    text += json.dumps(parquet_cols.schema.names + parquet_cols.column("name").to_pylist())
    planted_ids = {_id(n) for n in (10, 11, 12, 13, 14, 20, 21, 23, 30, 33, 40, 41, 42, 45, 46, 47, 50, 52, 53, 60, 61)}
    assert planted_ids <= set(privacy.find_resident_ids(text))


@pytest.mark.slow
def test_no_resident_id_in_warehouse_receipts_errors_logs_or_exports(planted):
    assert_no_resident_ids(planted.settings, extra={**planted.logs, **planted.exports})


@pytest.mark.slow
def test_what_was_scanned_is_not_empty(planted):
    """The scan covered real content: quarantine rows, errors files, log lines, exports, published files."""
    wh = Warehouse(settings=planted.settings)
    assert wh.scan(QUARANTINE).num_rows >= 20
    receipts = [o.key for o in open_bucket(planted.settings.receipts_url).list()]
    assert sum(k.endswith(".errors.ndjson") for k in receipts) >= 6
    assert any("[resident-id]" in k for k in receipts)  # receipts of id-named files, at masked keys
    run_log = planted.logs["ingest DAG run (Airflow INFO, stdout+stderr)"]
    assert "Returned value was" in run_log and "[sanyi.ingest]" in run_log
    assert "file insurance/settlements/2024-10-01/[resident-id].ndjson: rejected" in run_log
    assert any(k.endswith(".csv") for k in (o.key for o in open_bucket(planted.settings.published_url).list()))
    assert all(planted.exports.values())


@pytest.mark.slow
def test_resident_ids_are_pseudonymised_or_masked_where_they_were_planted(planted):
    settle = rows(planted.settings, "insurance.settlements")
    assert {r["settlement_id"] for r in settle} == {settlement(i)["settlement_id"] for i in (1, 2, 3)}
    assert all(len(r["patient_id"]) == 64 for r in settle)
    receipt_id_named = [
        json.loads(open_bucket(planted.settings.receipts_url).read_bytes(o.key))
        for o in open_bucket(planted.settings.receipts_url).list()
        if o.key.endswith(".receipt.json") and "[resident-id]" in o.key
    ]
    assert len(receipt_id_named) == 5
    assert all(r["status"] == "rejected" and "contains a resident id" in r["reason"] for r in receipt_id_named)
    quarantined = {
        q["line_no"]: q for q in rows(planted.settings, QUARANTINE) if q["source_file"].endswith("patients.ndjson")
    }
    assert json.loads(quarantined[4]["record"])["patient_id"] == privacy.MASK
    assert json.loads(quarantined[5]["record"])["patient_id"] == privacy.MASK  # an id sent as a JSON number
