"""A small run of ``make bench`` (python -m tests.bench.run) end to end: files generated, every
measurement taken, the table printed and results.json written with the keys runs are compared by."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.bench.run import (
    HISTORY_KEYS,
    RUNS,
    THREAD_ROLES,
    _cpu_by_thread,
    _ThreadCpuSampler,
    cpu_model,
    record_history,
    table,
)

ROOT = Path(__file__).resolve().parents[1]
KEYS = {
    "ingest_ndjson_rps",
    "ingest_csv_rps",
    "jsonschema_ndjson_rps",
    "raw_parse_ndjson_rps",
    "raw_parse_csv_rps",
    "ratio_vs_jsonschema",
    "ratio_vs_raw_parse",
    "peak_rss_mib",
    "indicators_seconds",
    "cpu_count",
}


def test_bench_runs_small_and_writes_comparable_results(tmp_path):
    lines = 1500
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANYI_")}
    env.update(SANYI_HOME=str(tmp_path / "home"), BENCH_LINES=str(lines), PYTHONPATH=str(ROOT / "plugins"))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ingest NDJSON settlements" in proc.stdout and "ratio vs raw parse" in proc.stdout

    res = json.loads((tmp_path / "home" / "bench" / "results.json").read_text())
    assert KEYS <= set(res)
    assert res["cpu_count"] == os.cpu_count()
    assert set(res["peak_rss_mib"]) == {str(lines), str(5 * lines)}
    assert set(res["indicators_seconds"]) == {str(lines), str(5 * lines), str(10 * lines)}
    # The measurements are of real work: every generated record read, about 1 % of them rejected.
    for fmt in ("ndjson", "csv"):
        run = res["ingest"][fmt]
        assert run["read"] == lines and run["loaded"] + run["rejected"] + run["duplicates"] == lines
        assert 0 < run["rejected"] < lines * 0.05
        assert 0 < run["process_cpu_seconds"] and run["cores_busy"] == run["process_cpu_seconds"] / run[
            "process_seconds"]
        # Its CPU by thread adds up to it: the roles' own threads, and the rest as "other threads".
        by_thread = run["cpu_seconds_by_thread"]
        assert set(by_thread) <= {*THREAD_ROLES.values(), "other threads"} and "loading thread" in by_thread
        assert min(by_thread.values()) >= 0 and sum(by_thread.values()) >= run["process_cpu_seconds"] - 1e-9
    assert "ingest ndjson CPU" in proc.stdout and "; loading thread " in proc.stdout
    assert res["ingest"]["ndjson_5x"]["read"] == 5 * lines
    assert len(res["ingest"]["ndjson"]["process_seconds_runs"]) == RUNS == 3
    assert res["ingest"]["ndjson"]["process_seconds"] == min(res["ingest"]["ndjson"]["process_seconds_runs"])
    out_of_step = res["ingest"]["ndjson_rejected"]
    assert out_of_step["read"] == out_of_step["rejected"] == lines // 10 and out_of_step["loaded"] == 0
    assert res["ingest_ndjson_rejected_rps"] > 0 and "ingest NDJSON, all rejected" in proc.stdout
    assert all(res["indicators"][k]["results"] > 0 for k in res["indicators"])
    # The floor: each part of the unavoidable work measured on the lines the raw parse read, and the Parquet
    # write of every row the NDJSON ingest loaded; its rate is their CPU spread over every core.
    floor = res["floor"]
    assert floor["lines"] == res["raw_parse_ndjson_lines"] and 0.95 * lines < floor["lines"] < lines
    assert floor["loaded_rows_written"] == res["ingest"]["ndjson"]["loaded"]
    parts = floor["cpu_seconds_by_part"]
    assert set(parts) == {"sha256", "parse", "pseudonyms", "parquet_write"} and all(v > 0 for v in parts.values())
    assert floor["cpu_seconds"] == sum(parts.values())
    assert res["floor_ndjson_rps"] == floor["lines"] / (floor["cpu_seconds"] / res["cpu_count"])
    assert res["ratio_vs_raw_parse"]["floor_ndjson"] == res["floor_ndjson_rps"] / res["raw_parse_ndjson_rps"]
    assert "ingest floor NDJSON (no checks)" in proc.stdout
    # The CSV's floor: every line of the file split into cells, the rows the CSV ingest loaded written, no
    # pseudonyms (the trace events hold no resident id).
    floor_csv = res["floor_csv"]
    assert floor_csv["lines"] == lines and floor_csv["loaded_rows_written"] == res["ingest"]["csv"]["loaded"]
    assert set(floor_csv["cpu_seconds_by_part"]) == {"sha256", "parse", "parquet_write"}
    assert res["floor_csv_rps"] == floor_csv["lines"] / (floor_csv["cpu_seconds"] / res["cpu_count"])
    assert res["ratio_vs_raw_parse"]["floor_csv"] == res["floor_csv_rps"] / res["raw_parse_csv_rps"]
    assert "ingest floor CSV (no checks)" in proc.stdout
    assert not list((tmp_path / "home").glob("**/*.readable.ndjson"))
    for key in ("ingest_ndjson_rps", "ingest_csv_rps", "jsonschema_ndjson_rps", "raw_parse_ndjson_rps"):
        assert res[key] > 0
    assert res["ratio_vs_jsonschema"]["ndjson"] == res["ingest_ndjson_rps"] / res["jsonschema_ndjson_rps"]
    # Both readings of the raw-parse target are judged, each against its own comparator.
    met, ratios = res["meets_targets"], res["ratio_vs_raw_parse"]
    assert met["ratio_vs_raw_parse"] == (ratios["ndjson"] >= 0.4)
    assert met["ratio_vs_raw_parse_1thread"] == (ratios["ndjson_vs_1thread"] >= 0.4)
    assert f"{sum(met.values())} of {len(met)}" in proc.stdout
    # Each run is kept in the history, whose first line this is.
    history = (tmp_path / "home" / "bench" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in history] == [{k: res[k] for k in HISTORY_KEYS}]
    assert res["previous_run"] is None and "previous run" not in proc.stdout
    assert res["cpu_model"] == cpu_model() and f"{res['cpu_model']}; load average" in proc.stdout
    if (ROOT / ".git").exists():
        assert res["commit"] and res["commit"] in history[0]
    # A later run of the same size is printed next to this one.
    earlier = {**json.loads(history[0]), "ingest_ndjson_rps": res["ingest_ndjson_rps"] / 2}
    row = next(r for r in table({**res, "previous_run": earlier}).splitlines() if r.startswith("previous run"))
    assert f"{earlier['started_at']} at {res['commit']}: NDJSON ingest now x2.00" in row
    # The generated files are removed (they are large at full size).
    assert not (tmp_path / "home" / "bench" / "work").exists()


def test_a_bench_child_reports_its_own_peak_memory_not_its_parents():
    # ru_maxrss of a child started from a large parent includes the parent's memory at the fork: the
    # bench once reported its own peak for every ingest. The child here holds little; the parent 600 MiB.
    ballast = b"\x01" * (600 << 20)
    proc = subprocess.run(
        [sys.executable, "-c", "from tests.bench.run import _peak_rss_mib; print(_peak_rss_mib())"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) < 300 < len(ballast) >> 20


def _run(lines: int, started_at: str, rps: float, cpu: str = "cpu-a") -> dict:
    return {
        **dict.fromkeys(HISTORY_KEYS),
        "lines": lines,
        "started_at": started_at,
        "ingest_ndjson_rps": rps,
        "cpu_model": cpu,
    }


def test_history_keeps_every_run_and_finds_the_last_of_the_same_size_and_cpu(tmp_path):
    assert record_history(tmp_path, _run(1000, "a", 1.0)) is None
    assert record_history(tmp_path, _run(500, "b", 2.0)) is None  # another size is no comparison
    assert record_history(tmp_path, _run(1000, "c", 3.0))["started_at"] == "a"
    # Nor is another CPU: the first run on it has no previous one, and is not the others' previous run.
    assert record_history(tmp_path, _run(1000, "other", 9.0, cpu="cpu-b")) is None
    # A line cut short by a killed run, or one without the keys, is passed over; the runs around it count.
    with (tmp_path / "history.jsonl").open("a") as fh:
        fh.write('{"lines": 1000, "started_at": "d", "ingest_nd\n')
        fh.write('{"lines": 1000, "started_at": "hand-written"}\n')
        old = {k: v for k, v in _run(1000, "before-cpu-models", 5.0).items() if k != "cpu_model"}
        fh.write(json.dumps(old) + "\n")
    previous = record_history(tmp_path, _run(1000, "e", 4.0))
    assert previous["started_at"] == "c" and previous["ingest_ndjson_rps"] == 3.0
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len(lines) == 8 and json.loads(lines[-1])["started_at"] == "e"
    assert set(json.loads(lines[-1])) == set(HISTORY_KEYS)


def test_ingest_cpu_is_split_by_what_each_thread_does():
    before = {1: ("MainThread", 10.0), 2: ("sanyi-validate_0", 0.5)}
    after = {
        1: ("MainThread", 11.5),  # 1.5 s during the load, not its 10 s before it
        2: ("sanyi-validate_0", 2.0),
        3: ("sanyi-validate_1", 1.5),  # started during the load
        4: ("sanyi-parse_0", 1.0),
        5: ("unrelated", 9.0),  # no role: part of the rest
        6: ("ThreadPoolExecutor-0_0", 0.5),  # pyiceberg's pool
        7: ("sanyi-write_0", 0.25),
    }
    split = _cpu_by_thread(before, after, total=8.0)
    assert split == {
        "validation": 3.0,
        "loading thread": 1.5,
        "Arrow parse": 1.0,
        "Parquet writes": 0.75,
        "other threads": 1.75,
    }
    assert list(split)[-1] == "other threads" and list(split)[:3] == ["validation", "loading thread", "Arrow parse"]
    assert _cpu_by_thread({}, {}, total=7.0) == {}  # no /proc: no split rather than a wrong one


def test_the_sampler_keeps_the_cpu_of_threads_that_ended_during_the_load():
    # The file read and the writers end before the load returns: read only at the end, their CPU was lost
    # in "other threads".
    def burn() -> None:  # as the ingest's threads do, mostly without the GIL (hashlib lets go of it)
        block, end = bytes(1 << 20), time.thread_time() + 0.3
        while time.thread_time() < end:
            hashlib.sha256(block)

    with _ThreadCpuSampler() as readings:
        worker = threading.Thread(target=burn, name="sanyi-load-read")
        worker.start()
        worker.join()
        tid = worker.native_id
        time.sleep(0.02)  # it has ended: no reading can see it any more
    name, cpu = readings[tid]
    # Its last reading: all but what it spent after it (under 50 ms, the sampling interval).
    assert name == "sanyi-load-read" and cpu >= 0.15
    assert _cpu_by_thread({}, readings, total=cpu)["file read"] == cpu
