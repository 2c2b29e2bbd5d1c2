"""``make bench``: ingest and indicator benchmarks, measured side by side in one run on the same files.

Sizes scale with ``BENCH_LINES`` (default 1,000,000 = N):

- ingest records/s of Sanyi's real ingest (``discover`` is timed apart; ``process_file`` = read, parse,
  validate, pseudonymise, write, commit, quarantine, receipt) for an N-line settlements NDJSON and an
  N-line trace-events CSV (1 % invalid records each), next to record-by-record ``jsonschema`` (Sanyi's
  reference validator, and the bare ``jsonschema`` package) and a raw Arrow parse of the same files;
  and for an N/10-line NDJSON whose every line is rejected (an unknown member on each); with each ingest's
  CPU-seconds split by what its threads do (:data:`THREAD_ROLES`: validation, file read,
  Parquet writes…, sampled during the load), so that what limits the rate shows in every run;
- the ingest's floor: the CPU-seconds of the work any ingest of the NDJSON file (and of the CSV file) does,
  checks left out (hash, parse, pseudonyms, Parquet write; :func:`child_floor`), spread over every core —
  the best rate, and ratio to the raw parse, that any ingest with these parts could reach;
- peak resident memory of the ingest process for N and 5N lines of NDJSON;
- indicator computation time for a generated month of N, 5N and 10N settlement lines (and as many trace
  events).

The 1N ingest rates, the record-by-record rates and the raw parses are each the best of :data:`RUNS` runs:
every side of a ratio is measured the same way.

Every measurement that needs its own memory runs in a child process. Results are printed as a table and
written to ``$SANYI_HOME/bench/results.json``. The generated files live in ``$SANYI_HOME/bench/work`` and
are deleted at the end unless ``BENCH_KEEP=1``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

JSONSCHEMA_SAMPLE = 20_000  # lines validated record by record (the rate is per record; the file is the same)
# Every rate is the best of as many runs, so that a busy moment of a shared machine does not decide a ratio,
# nor one side having more tries than the other (the raw parses had three, the ingest two: measured on one
# machine, Arrow's multi-threaded parse moved 1.20-1.35M rec/s between runs); each run's time is kept in
# results.json.
RUNS = 3
# What each run appends to history.jsonl: the keys, and what tells runs apart.
HISTORY_KEYS = (
    "started_at",
    "commit",
    "lines",
    "cpu_count",
    "cpu_model",
    "ingest_ndjson_rps",
    "ingest_csv_rps",
    "jsonschema_ndjson_rps",
    "raw_parse_ndjson_rps",
    "raw_parse_ndjson_1thread_rps",
    "raw_parse_csv_rps",
    "ratio_vs_jsonschema",
    "ratio_vs_raw_parse",
    "peak_rss_mib",
    "indicators_seconds",
    "meets_targets",
)
TARGETS = {
    "ratio_vs_jsonschema": 25.0,
    "ratio_vs_raw_parse": 0.4,
    "peak_rss_mib_5x": 1536.0,
    "indicators_seconds_10x": 120.0,
}


def _lines() -> int:
    return max(int(os.environ.get("BENCH_LINES", "1000000")), 100)


def _home() -> Path:
    return Path(os.environ.get("SANYI_HOME", "var")).expanduser().resolve()


def _child(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m tests.bench.run --child …`` and return the JSON it prints last."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", "--child", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=Path(__file__).parents[2],
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _best_child(*args: str) -> dict[str, Any]:
    """The fastest of :data:`RUNS` runs of a child, with every run's ``process_seconds``."""
    runs = [_child(*args) for _ in range(RUNS)]
    best = min(runs, key=lambda r: r["process_seconds"])
    return {**best, "process_seconds_runs": [r["process_seconds"] for r in runs]}


def _peak_rss_mib() -> float:
    """This process's peak resident memory. On Linux, VmHWM of its own address space: ``ru_maxrss`` also
    counts the parent's memory at the time of the fork (the exec folds the old address space's peak into
    it), so every child reported the bench parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            status = fh.read()
    except OSError:  # no /proc (not Linux): ru_maxrss, below
        status = ""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ============================================================================================ children
def _use_home(home: Path) -> None:
    """This child's Sanyi: everything under ``home``, on local storage, with the bench's pseudonym key."""
    os.environ["SANYI_HOME"] = str(home)
    os.environ.setdefault("SANYI_PSEUDONYM_KEY", "bench-pseudonym-key")
    os.environ["SANYI_MAX_FILE_BYTES"] = str(64 << 30)
    for var in (
        "SANYI_LANDING_URL",
        "SANYI_RECEIPTS_URL",
        "SANYI_PUBLISHED_URL",
        "SANYI_WAREHOUSE_URL",
        "SANYI_CATALOG_URI",
    ):
        os.environ.pop(var, None)


def child_ingest(fmt: str, path: str, work: str) -> dict[str, Any]:
    """Ingest one file into a fresh SANYI_HOME with Sanyi's real code; time it and report peak memory."""
    home = Path(work)
    shutil.rmtree(home, ignore_errors=True)
    _use_home(home)
    from sanyi.config import Settings
    from sanyi.ingest import discover, process_file
    from sanyi.warehouse import Warehouse

    settings = Settings.from_env()
    key = ("insurance/settlements" if fmt == "ndjson" else "traceability/trace_events") + "/2024-10-31/"
    key += Path(path).name
    target = Path(settings.landing_url) / key
    target.parent.mkdir(parents=True, exist_ok=True)
    os.link(path, target)  # the same bytes, not a copy
    Warehouse(settings=settings).ensure_all()  # table creation is not part of a file's load
    t0 = time.perf_counter()
    (file_id,) = discover(settings)
    t1 = time.perf_counter()
    threads0 = _thread_cpu()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    with _ThreadCpuSampler() as threads1:
        receipt = process_file(settings, file_id)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    t2 = time.perf_counter()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "cpu_seconds_by_thread": _cpu_by_thread(threads0, threads1, cpu),
        "discover_seconds": t1 - t0,
        "process_seconds": t2 - t1,
        # What limits the rate: CPU-seconds of all the process's threads, and how many cores that kept busy.
        "process_cpu_seconds": cpu,
        "cores_busy": cpu / (t2 - t1),
        "read": receipt.read,
        "loaded": receipt.loaded,
        "rejected": receipt.rejected,
        "duplicates": receipt.duplicate_records,
        "status": receipt.status,
        "peak_rss_mib": _peak_rss_mib(),
    }


# What each of the ingest's threads does, for the CPU breakdown, by thread-name prefix (threads named by
# ``sanyi.ingest`` and ``sanyi.fastpath``; the loading thread is the one that called ``process_file``; the
# pool without a name is pyiceberg's, which writes the Parquet files).
THREAD_ROLES = {
    "MainThread": "loading thread",  # pseudonyms, errors file, quarantine rows, commits
    "sanyi-validate": "validation",  # screen, checks, the exact errors of rejected lines
    "sanyi-parse": "Arrow parse",  # the lines the C reader declined (in the validation threads otherwise)
    "sanyi-csv": "CSV batches",
    "sanyi-load-read": "file read",  # the read, its SHA-256, the chunks' lines
    "sanyi-keys": "duplicate keys",
    "sanyi-write": "Parquet writes",  # hands the files to pyiceberg's pool
    "ThreadPoolExecutor": "Parquet writes",
}
# How often the threads' CPU is read during a load: a thread that ends (the file read, the writers) keeps
# the CPU of its last reading; what it spent after that (under this interval's worth) is "other threads".
SAMPLE_SECONDS = 0.05


class _ThreadCpuSampler:
    """The CPU of every Python thread of this process, read every :data:`SAMPLE_SECONDS` while the block
    runs and once at its end: the last reading of each thread, ended ones included (see :func:`_thread_cpu`)."""

    def __init__(self) -> None:
        self.readings: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(SAMPLE_SECONDS):
            self.readings.update(_thread_cpu())

    def __enter__(self) -> dict[int, tuple[str, float]]:
        self.thread.start()
        return self.readings

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.readings.update(_thread_cpu())


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU-seconds so far of each live Python thread of this process, by native id, with its name; empty
    where ``/proc`` does not give them (not Linux)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {}
    for thread in threading.enumerate():
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[thread.native_id] = (thread.name, (int(fields[11]) + int(fields[12])) / tick)  # utime, stime
    return out


def _cpu_by_thread(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], total: float
) -> dict[str, float]:
    """CPU-seconds spent between ``before`` and ``after`` by role (:data:`THREAD_ROLES`, by name prefix);
    "other threads" is the rest of ``total``: native threads (Arrow's, DuckDB's), the sampler's own, and
    what threads spent after their last reading (:class:`_ThreadCpuSampler`)."""
    if not after:
        return {}
    out: dict[str, float] = {}
    for tid, (name, cpu) in after.items():
        role = next((r for prefix, r in THREAD_ROLES.items() if name.startswith(prefix)), None)
        if role is not None:
            out[role] = out.get(role, 0.0) + cpu - before.get(tid, (name, 0.0))[1]
    out = dict(sorted(out.items(), key=lambda kv: -kv[1]))
    out["other threads"] = max(total - sum(out.values()), 0.0)
    return out


def child_indicators(sizes: str) -> dict[str, Any]:
    """For each size: generate a month of that many settlement lines and trace events as Arrow tables,
    register them in a fresh DuckDB connection, and time ``sanyi.indicators.compute`` on it."""
    import gc

    import duckdb
    from tests.bench import generate

    from sanyi import indicators
    from sanyi.warehouse import register

    out = {}
    for size in sizes.split(","):
        t0 = time.perf_counter()
        tables = generate.month_tables(int(size))
        t1 = time.perf_counter()
        conn = duckdb.connect()
        for name, table in tables.items():
            register(conn, name, table)
        t2 = time.perf_counter()
        results, findings = indicators.compute(
            conn, generate.MONTH, now=datetime(2024, 11, 20, 2, tzinfo=UTC)
        )
        t3 = time.perf_counter()
        out[size] = {
            "generate_seconds": t1 - t0,
            "compute_seconds": t3 - t2,
            "results": results.num_rows,
            "findings": findings.num_rows,
        }
        conn.close()
        del tables, conn, results, findings
        gc.collect()
    return out


def child_floor(fmt: str, path: str, home: str) -> dict[str, Any]:
    """CPU-seconds of the work any ingest of the ``fmt`` file does whatever its checks cost, each part
    measured alone, one thread:

    - the file's SHA-256 (a drop's identity in the ledger: replays and duplicates are found by it);
    - the parse: for the settlements NDJSON (``path`` without the lines Arrow cannot read, as the raw parse),
      as the ingest parses a plain line: its line breaks found and the line read by the C reader
      (``fastpath._read_plain``), in pieces of ``fastpath.PIECE_BYTES`` of whole lines; for the trace-events
      CSV, Arrow's split of each ``ingest.chunk_bytes`` piece into text cells, as the raw parse reads the
      file (no conversion to typed columns: less than any ingest's parse);
    - the pseudonyms (NDJSON: the trace events hold no resident id), with the ingest's own
      ``privacy.pseudonymise_array``, once per NDJSON chunk's worth of pieces (``ingest.chunk_bytes``: each
      distinct id of a chunk hashed once);
    - the Parquet write of the rows the ingest loaded into ``home`` (read back first, not timed), with the
      warehouse's own writer (``write_data_files``: the files are written, never committed).

    Validation, masking, quarantine, receipts and duplicate keys are left out: the sum is less than what an
    ingest can cost, so spread over every core it bounds the ingest's rate from above."""
    import hashlib
    import io
    import itertools
    import uuid

    import pyarrow as pa
    import pyarrow.csv as pa_csv

    from sanyi import contracts, fastpath, ingest, privacy
    from sanyi.config import Settings
    from sanyi.warehouse import Warehouse, write_data_files

    _use_home(Path(home))
    settings = Settings.from_env()
    ds = contracts.get_dataset(*(("insurance", "settlements") if fmt == "ndjson" else ("traceability", "trace_events")))
    if fmt == "csv":
        with open(path, encoding="utf-8") as fh:
            names = fh.readline().strip().split(",")
    plan = fastpath._plan(ds)
    warehouse = Warehouse(settings=settings)
    loaded = warehouse.scan(ds.table_name).combine_chunks()
    out = {"sha256": 0.0, "parse": 0.0, "pseudonyms": 0.0, "parquet_write": 0.0}
    if fmt == "csv":
        del out["pseudonyms"]

    def timed(part: str, fn: Any, *args: Any) -> Any:
        c0 = time.process_time()
        result = fn(*args)
        out[part] += time.process_time() - c0
        return result

    sha = hashlib.sha256()
    key = settings.require_key()
    ids: list[pa.Array] = []  # the patient ids of the pieces since the last NDJSON chunk's worth

    def pseudonymise() -> None:
        if ids:
            timed("pseudonyms", privacy.pseudonymise_array, key, pa.chunked_array(ids))
            ids.clear()

    def parse_ndjson(data: bytes) -> pa.Table:
        return fastpath._read_plain(plan, fastpath._line_array(data, fastpath.line_starts(data)))[0]

    def parse_csv(data: bytes) -> pa.Table:
        return pa_csv.read_csv(
            io.BytesIO(data),
            read_options=pa_csv.ReadOptions(column_names=names, use_threads=False, block_size=1 << 24),
            convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
        )

    lines = pending = 0
    size = fastpath.PIECE_BYTES if fmt == "ndjson" else ingest.chunk_bytes("csv")
    for n, data in enumerate(_whole_lines(Path(path), size)):
        timed("sha256", sha.update, data)
        if fmt == "csv":
            table = timed("parse", parse_csv, data[data.index(b"\n") + 1 :] if n == 0 else data)
        else:
            table = timed("parse", parse_ndjson, data)
            ids.extend(table.column("patient_id").chunks)
        lines += table.num_rows
        pending += len(data)
        if pending >= ingest.chunk_bytes("ndjson"):
            pseudonymise()
            pending = 0
    pseudonymise()
    timed("sha256", sha.hexdigest)
    table = warehouse.catalog.load_table(ds.table_name)
    timed("parquet_write", lambda: write_data_files(table, loaded, write_uuid=uuid.uuid4(), counter=itertools.count()))
    return {
        "lines": lines,
        "loaded_rows_written": loaded.num_rows,
        "cpu_seconds_by_part": out,
        "cpu_seconds": sum(out.values()),
    }


# ============================================================================================ baselines
def _best(fn: Any, repeat: int = RUNS) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def raw_parse(readable: Path, kept: int, csv_path: Path) -> dict[str, float]:
    """Arrow's own readers on the same files, no validation: the practical ceiling.

    A strict JSON read stops at the first value of the wrong type (that is what validation is for), so the
    NDJSON rate is measured on ``readable``, the same file without its lines Arrow cannot read at all (about
    0.2 %: a number written as a string, an unknown field; :func:`_readable_copy`), ``kept`` lines — all the
    parse work of the file, none of the checks."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.json as pa_json

    from sanyi import contracts, fastpath

    schema = fastpath._plan(contracts.get_dataset("insurance", "settlements")).json_schema
    names = csv_path.open(encoding="utf-8").readline().strip().split(",")
    csv_lines = _count_lines(csv_path) - 1

    def json_read(threads: bool) -> None:
        pa_json.read_json(
            str(readable),
            read_options=pa_json.ReadOptions(use_threads=threads),
            parse_options=pa_json.ParseOptions(explicit_schema=schema),
        )

    def csv_read(threads: bool) -> None:
        pa_csv.read_csv(
            str(csv_path),
            read_options=pa_csv.ReadOptions(use_threads=threads),
            convert_options=pa_csv.ConvertOptions(column_types={n: pa.string() for n in names}),
        )

    out = {
        "raw_parse_ndjson_rps": kept / _best(lambda: json_read(True)),
        "raw_parse_ndjson_1thread_rps": kept / _best(lambda: json_read(False)),
        "raw_parse_csv_rps": csv_lines / _best(lambda: csv_read(True)),
        "raw_parse_csv_1thread_rps": csv_lines / _best(lambda: csv_read(False)),
        "raw_parse_ndjson_lines": kept,
    }
    return out


def _whole_lines(path: Path, size: int) -> Iterator[bytes]:
    """``path`` read ``size`` bytes at a time, each piece cut after its last line break (the generated files
    end with one; a last line without it is left out)."""
    with path.open("rb") as fh:
        carry = b""
        while block := fh.read(size):
            data = carry + block
            cut = data.rfind(b"\n") + 1
            yield data[:cut]
            carry = data[cut:]


def _readable_copy(ndjson: Path) -> tuple[Path, int]:
    """``ndjson`` without the lines a strict Arrow read stops at (found as the fast path screens them)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from sanyi import contracts, fastpath

    plan = fastpath._plan(contracts.get_dataset("insurance", "settlements"))
    out = ndjson.with_suffix(".readable.ndjson")
    kept = 0
    with out.open("wb") as dst:
        for data in _whole_lines(ndjson, 32 << 20):
            lines = pa.array(data.split(b"\n")[:-1], pa.string())
            screened = pa.array(fastpath._screened(plan, lines), pa.int64())
            bad = pc.or_(
                pc.invert(pc.starts_with(lines, "{")),
                pc.is_in(pa.array(range(len(lines)), pa.int64()), value_set=screened),
            )
            good = pc.filter(lines, pc.invert(bad)).to_pylist()
            dst.write(("\n".join(good) + "\n").encode())
            kept += len(good)
    return out, kept


def jsonschema_rates(ndjson: Path, csv_path: Path, sample: int) -> dict[str, float]:
    """Record-by-record validation of the first ``sample`` records of each file: Sanyi's reference
    (``parse_json_record`` / ``record_from_csv`` + ``validate_record``, i.e. the ``jsonschema`` package with
    Sanyi's exact number and date rules and the business rules), and the bare package (``json.loads`` +
    ``Draft202012Validator`` with a format checker, no business rules)."""
    import csv
    import itertools

    import jsonschema

    from sanyi import contracts, validation

    settle = contracts.get_dataset("insurance", "settlements")
    trace = contracts.get_dataset("traceability", "trace_events")
    with ndjson.open(encoding="utf-8") as fh:
        nd = list(itertools.islice(fh, sample))
    with csv_path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(itertools.islice(reader, sample))

    def reference_nd() -> None:
        for line in nd:
            validation.validate_record(settle, contracts.parse_json_record(line))

    def plain_nd() -> None:
        check = jsonschema.Draft202012Validator(
            json.loads(settle.path.read_text()), format_checker=jsonschema.FormatChecker()
        )
        for line in nd:
            list(check.iter_errors(json.loads(line)))

    def reference_csv() -> None:
        for row in rows:
            validation.validate_record(
                trace, contracts.record_from_csv(trace, dict(zip(header, row, strict=True)))
            )

    return {
        "jsonschema_ndjson_rps": len(nd) / _best(reference_nd),
        "jsonschema_plain_ndjson_rps": len(nd) / _best(plain_nd),
        "jsonschema_csv_rps": len(rows) / _best(reference_csv),
    }


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 24):
            count += block.count(b"\n")
    return count


# ================================================================================================= main
def run() -> dict[str, Any]:
    from tests.bench import generate

    n = _lines()
    out_dir = _home() / "bench"
    work = out_dir / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    res: dict[str, Any] = {
        "lines": n,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
    }
    try:
        import pyarrow

        res["pyarrow"] = pyarrow.__version__
        print(f"generating files ({n:,} and {5 * n:,} lines)…", flush=True)
        nd = work / f"settlements-{n}.ndjson"
        nd5 = work / f"settlements-{5 * n}.ndjson"
        csv_path = work / f"trace_events-{n}.csv"
        generate.write_lines(nd, generate.settlements_batches(n))
        generate.write_lines(csv_path, generate.trace_events_batches(n), header=generate.TRACE_HEADER)
        generate.write_lines(nd5, generate.settlements_batches(5 * n))
        # A tenth of N lines, every one rejected: what a file from an exporter out of step with the contract
        # costs (each rejected record gets its errors, its receipt line and its quarantine row).
        nd_out = work / f"settlements-out-of-step-{max(n // 10, 100)}.ndjson"
        generate.write_lines(nd_out, generate.settlements_out_of_step_batches(max(n // 10, 100)))
        # The files are written back to disk now, not while the first measurements run (gigabytes of dirty
        # pages flushed during an ingest cost it a quarter of its speed, measured).
        os.sync()
        res["file_bytes"] = {
            "ndjson": nd.stat().st_size,
            "csv": csv_path.stat().st_size,
            "ndjson_5x": nd5.stat().st_size,
            "ndjson_rejected": nd_out.stat().st_size,
        }

        print("raw parse and record-by-record jsonschema…", flush=True)
        readable, kept = _readable_copy(nd)
        res.update(raw_parse(readable, kept, csv_path))
        res.update(jsonschema_rates(nd, csv_path, min(JSONSCHEMA_SAMPLE, n)))

        print("ingest (child processes)…", flush=True)
        ingest_nd = _best_child("ingest", "ndjson", str(nd), str(work / "home-ndjson"))
        ingest_csv = _best_child("ingest", "csv", str(csv_path), str(work / "home-csv"))
        ingest_nd5 = _child("ingest", "ndjson", str(nd5), str(work / "home-ndjson-5x"))
        ingest_out = _child("ingest", "ndjson", str(nd_out), str(work / "home-ndjson-rejected"))
        res["ingest"] = {
            "ndjson": ingest_nd,
            "csv": ingest_csv,
            "ndjson_5x": ingest_nd5,
            "ndjson_rejected": ingest_out,
        }
        res["ingest_ndjson_rps"] = ingest_nd["read"] / ingest_nd["process_seconds"]
        res["ingest_csv_rps"] = ingest_csv["read"] / ingest_csv["process_seconds"]
        res["ingest_ndjson_5x_rps"] = ingest_nd5["read"] / ingest_nd5["process_seconds"]
        res["ingest_ndjson_rejected_rps"] = ingest_out["read"] / ingest_out["process_seconds"]
        res["ratio_vs_jsonschema"] = {
            "ndjson": res["ingest_ndjson_rps"] / res["jsonschema_ndjson_rps"],
            "csv": res["ingest_csv_rps"] / res["jsonschema_csv_rps"],
        }
        res["ratio_vs_raw_parse"] = {
            "ndjson": res["ingest_ndjson_rps"] / res["raw_parse_ndjson_rps"],
            "ndjson_vs_1thread": res["ingest_ndjson_rps"] / res["raw_parse_ndjson_1thread_rps"],
            "csv": res["ingest_csv_rps"] / res["raw_parse_csv_rps"],
        }
        # What any ingest must spend on each file, checks left out, next to what Sanyi's spends (child_floor);
        # the CSV's tells whether any ingest of it could reach 0.4x of Arrow's untyped CSV parse.
        for fmt, path, name in (("ndjson", readable, "floor"), ("csv", csv_path, "floor_csv")):
            floor = res[name] = _child("floor", fmt, str(path), str(work / f"home-{fmt}"))
            res[f"floor_{fmt}_rps"] = floor["lines"] / (floor["cpu_seconds"] / res["cpu_count"])
            res["ratio_vs_raw_parse"][f"floor_{fmt}"] = res[f"floor_{fmt}_rps"] / res[f"raw_parse_{fmt}_rps"]
        res["ratio_vs_raw_parse"]["floor_ndjson_vs_1thread"] = (
            res["floor_ndjson_rps"] / res["raw_parse_ndjson_1thread_rps"]
        )
        readable.unlink()
        res["peak_rss_mib"] = {str(n): ingest_nd["peak_rss_mib"], str(5 * n): ingest_nd5["peak_rss_mib"]}
        for path in (nd5,):
            path.unlink(missing_ok=True)
        shutil.rmtree(work / "home-ndjson-5x", ignore_errors=True)

        print("indicators (child processes)…", flush=True)
        res["indicators"] = _child("indicators", f"{n},{5 * n},{10 * n}")
        res["indicators_seconds"] = {k: v["compute_seconds"] for k, v in res["indicators"].items()}
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
    res["bench_seconds"] = time.perf_counter() - started
    res["load_average_at_end"] = list(os.getloadavg())
    res["targets"] = TARGETS
    res["meets_targets"] = {
        "ratio_vs_jsonschema": min(res["ratio_vs_jsonschema"].values()) >= TARGETS["ratio_vs_jsonschema"],
        "ratio_vs_raw_parse": res["ratio_vs_raw_parse"]["ndjson"] >= TARGETS["ratio_vs_raw_parse"],
        # The issue measured its raw-parse ceiling on one core; which parse the 0.4x is of is an open spec
        # question, so both readings are kept (the one above, against Arrow's default threads, is the stricter).
        "ratio_vs_raw_parse_1thread": res["ratio_vs_raw_parse"]["ndjson_vs_1thread"] >= TARGETS["ratio_vs_raw_parse"],
        "peak_rss_mib_5x": res["peak_rss_mib"][str(5 * n)] <= TARGETS["peak_rss_mib_5x"],
        "indicators_seconds_10x": res["indicators_seconds"][str(10 * n)] <= TARGETS["indicators_seconds_10x"],
    }
    res["commit"] = _commit()
    out_dir.mkdir(parents=True, exist_ok=True)
    res["previous_run"] = record_history(out_dir, res)
    (out_dir / "results.json").write_text(json.dumps(res, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return res


def _commit() -> str | None:
    """The code measured: the checkout's commit (``-dirty`` when it has changes), or None outside git."""
    try:
        proc = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=Path(__file__).parents[2],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def cpu_model() -> str | None:
    """The processor's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere), or None. The ratio
    to the raw parse depends on it: Arrow's parser gains more than the ingest from a faster CPU (measured:
    a one-thread parse 1.6x faster on one 2-core machine than on another, the ingest 1.27x)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def record_history(out_dir: Path, res: dict[str, Any]) -> dict[str, Any] | None:
    """Append this run's headline figures to ``history.jsonl`` (results.json keeps only the last run) and
    return the latest earlier run of the same size on the same CPU model, or None: a rate measured on other
    hardware is no comparison. A line that does not parse or lacks a key (a run killed while writing it, a
    hand edit, a run recorded before the CPU model was) is skipped, not fatal: the history is a record, not
    an input."""
    path = out_dir / "history.jsonl"
    previous = None
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if (
                isinstance(entry, dict)
                and set(HISTORY_KEYS) <= set(entry)
                and (entry["lines"], entry["cpu_model"]) == (res["lines"], res["cpu_model"])
            ):
                previous = entry
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({k: res.get(k) for k in HISTORY_KEYS}, sort_keys=True) + "\n")
    return previous


def table(res: dict[str, Any]) -> str:
    n = res["lines"]
    rows = [
        ("ingest NDJSON settlements", f"{res['ingest_ndjson_rps']:,.0f} rec/s", f"{n:,} lines"),
        ("ingest CSV trace events", f"{res['ingest_csv_rps']:,.0f} rec/s", f"{n:,} lines"),
        (
            "ingest NDJSON, all rejected",
            f"{res['ingest_ndjson_rejected_rps']:,.0f} rec/s",
            f"{res['ingest']['ndjson_rejected']['read']:,} lines, each with an unknown member",
        ),
        (
            "jsonschema, Sanyi reference (NDJSON)",
            f"{res['jsonschema_ndjson_rps']:,.0f} rec/s",
            "record by record",
        ),
        ("jsonschema, bare package (NDJSON)", f"{res['jsonschema_plain_ndjson_rps']:,.0f} rec/s", "no rules"),
        ("jsonschema, Sanyi reference (CSV)", f"{res['jsonschema_csv_rps']:,.0f} rec/s", "record by record"),
        (
            "raw pyarrow.json.read_json",
            f"{res['raw_parse_ndjson_rps']:,.0f} rec/s",
            f"1 thread: {res['raw_parse_ndjson_1thread_rps']:,.0f}",
        ),
        (
            "raw pyarrow.csv.read_csv",
            f"{res['raw_parse_csv_rps']:,.0f} rec/s",
            f"1 thread: {res['raw_parse_csv_1thread_rps']:,.0f}",
        ),
        (
            "ratio vs jsonschema",
            f"{res['ratio_vs_jsonschema']['ndjson']:.1f}x NDJSON",
            f"{res['ratio_vs_jsonschema']['csv']:.1f}x CSV (target 25x)",
        ),
        (
            "ratio vs raw parse",
            f"{res['ratio_vs_raw_parse']['ndjson']:.2f}x NDJSON",
            f"{res['ratio_vs_raw_parse']['csv']:.2f}x CSV; vs 1-thread NDJSON "
            f"{res['ratio_vs_raw_parse']['ndjson_vs_1thread']:.2f}x (target 0.4x)",
        ),
    ]
    rows += [
        (
            f"ingest floor {label} (no checks)",
            f"{res[f'floor_{fmt}_rps']:,.0f} rec/s",
            f"{floor['cpu_seconds']:.1f} CPU-s on {res['cpu_count']} cores: "
            + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in floor["cpu_seconds_by_part"].items()),
        )
        for fmt, label, floor in (("ndjson", "NDJSON", res["floor"]), ("csv", "CSV", res["floor_csv"]))
    ]
    rows.append(
        (
            "floor ratio vs raw parse",
            f"{res['ratio_vs_raw_parse']['floor_ndjson']:.2f}x NDJSON",
            f"{res['ratio_vs_raw_parse']['floor_csv']:.2f}x CSV; NDJSON vs 1-thread "
            f"{res['ratio_vs_raw_parse']['floor_ndjson_vs_1thread']:.2f}x: no ingest doing these parts can beat it",
        )
    )
    rows += [
        (
            f"ingest {fmt} CPU",
            f"{res['ingest'][fmt]['process_cpu_seconds']:.1f} CPU-s",
            f"{res['ingest'][fmt]['cores_busy']:.2f} of {res['cpu_count']} cores busy"
            + _split_text(res["ingest"][fmt].get("cpu_seconds_by_thread", {})),
        )
        for fmt in ("ndjson", "csv")
    ]
    rows += [
        (f"peak RSS, {int(k):,} NDJSON lines", f"{v:,.0f} MiB", "target 1536 MiB at 5N")
        for k, v in res["peak_rss_mib"].items()
    ]
    rows += [
        (f"indicators, {int(k):,}-line month", f"{v:.1f} s", "target 120 s at 10N")
        for k, v in res["indicators_seconds"].items()
    ]
    prev = res.get("previous_run")
    if prev:
        change = res["ingest_ndjson_rps"] / prev["ingest_ndjson_rps"]
        rows.append(
            (
                "previous run, same size and CPU",
                f"{prev['ingest_ndjson_rps']:,.0f} rec/s",
                f"{prev['started_at']} at {prev['commit']}: NDJSON ingest now x{change:.2f}, ratio vs raw parse "
                f"then {prev['ratio_vs_raw_parse']['ndjson']:.2f}x (all runs: history.jsonl)",
            )
        )
    met = res["meets_targets"]
    missed = [name for name, ok in met.items() if not ok]
    rows.append(
        ("targets met", f"{len(met) - len(missed)} of {len(met)}", "missed: " + ", ".join(missed) if missed else "all")
    )
    rows.append(
        (
            "cores",
            str(res["cpu_count"]),
            f"{res['cpu_model'] or 'CPU model unknown'}; load average at start "
            + " ".join(f"{x:.2f}" for x in res["load_average_at_start"]),
        )
    )
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:>18}  {c}" for a, b, c in rows)


def _split_text(split: dict[str, float]) -> str:
    return "; " + ", ".join(f"{role} {cpu:.1f}" for role, cpu in split.items()) if split else ""


def main(argv: list[str]) -> int:
    if len(argv) > 1 and argv[1] == "--child":
        kind, *args = argv[2:]
        children = {"ingest": child_ingest, "floor": child_floor, "indicators": child_indicators}
        out = children[kind](*args)
        print(json.dumps(out))
        return 0
    res = run()
    print(table(res))
    print(f"\nresults: {_home() / 'bench' / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
