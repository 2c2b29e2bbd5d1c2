"""The ``sanyi`` command: seed, run the DAGs in-process, query the warehouse, pre-flight a file.

sanyi demo                      seed a synthetic province (if the landing bucket is empty) and run
sanyi seed [--seed N]           write the synthetic province into the landing bucket
sanyi run [--period YYYY-MM]    run the ingest and indicators DAGs in-process (``dag.test()``)
sanyi query "SQL" [--format]    SQL over every warehouse table (DuckDB over Arrow scans)
sanyi validate FILE --as KEY    check a file against its contract before dropping it
sanyi status                    the file ledger, by status
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from collections import Counter
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sanyi.config import PROJECT_ROOT, Settings


# --------------------------------------------------------------------------------------- airflow
def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment for an in-process Airflow whose home (and metadata DB) lives under SANYI_HOME."""
    env = {
        "AIRFLOW_HOME": str(settings.home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    env.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"))
    return env


def prepare_airflow(settings: Settings) -> None:
    """Point Airflow at SANYI_HOME and create its metadata DB once. Call before importing airflow."""
    # Known-harmless library chatter that would bury the demo's output.
    warnings.filterwarnings("ignore", message="Delete operation did not match any records")
    warnings.filterwarnings("ignore", message=".*httpx.*starlette.*")
    env = airflow_env(settings)
    for k, v in env.items():
        os.environ.setdefault(k, v)
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "airflow.db").exists():
        airflow = Path(sys.executable).with_name("airflow")
        cmd = [str(airflow)] if airflow.exists() else [sys.executable, "-m", "airflow"]
        subprocess.run([*cmd, "db", "migrate"], check=True, env=os.environ.copy(), capture_output=True)


def load_dag(name: str):
    """Import ``dags/<name>.py`` and return its DAG object."""
    path = Path(os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", PROJECT_ROOT / "dags")) / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"sanyi_dag_{name}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    from airflow.sdk import DAG

    dags = [v for v in vars(module).values() if isinstance(v, DAG)]
    if not dags:
        # @dag-decorated factories register on call; find the instance in the module's globals.
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(path))
        return bag.dags[name]
    return dags[0]


def run_dag(name: str, *, conf: dict[str, Any] | None = None) -> str:
    """Run a DAG in-process with ``dag.test()`` and return the run's final state."""
    dag = load_dag(name)
    run = dag.test(run_conf=conf or {})
    state = getattr(run, "state", "unknown")
    return str(getattr(state, "value", state))


def run_pipeline(settings: Settings, *, periods: list[str] | None = None) -> dict[str, Any]:
    """Ingest everything pending, then compute and publish the indicators."""
    from sanyi.ledger import Ledger
    from sanyi.publish import plan_periods
    from sanyi.warehouse import Warehouse

    prepare_airflow(settings)
    Warehouse(settings=settings).ensure_all()
    before = {r.id for r in Ledger(settings=settings).all() if r.terminal}
    ingest_state = run_dag("sanyi_ingest")
    rows = Ledger(settings=settings).all()
    touched = sorted({r.business_date.strftime("%Y-%m") for r in rows if r.id not in before and r.business_date})
    todo = periods or plan_periods(settings, requested=[], touched=touched) if (periods or touched) else []
    indicators_state = run_dag("sanyi_indicators", conf={"periods": todo}) if todo else "skipped"
    return {"ingest": ingest_state, "indicators": indicators_state, "periods": todo}


# -------------------------------------------------------------------------------------- commands
def cmd_init(settings: Settings, _args: argparse.Namespace) -> int:
    from sanyi.warehouse import Warehouse

    Warehouse(settings=settings).ensure_all()
    prepare_airflow(settings)
    print(f"Sanyi home: {settings.home}")
    return 0


def cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    from sanyi.seed import generate
    from sanyi.storage import open_bucket

    landing = open_bucket(settings.landing_url, settings=settings)
    report = generate(
        landing,
        seed=args.seed,
        start=args.start,
        months=args.months,
        scale=args.scale,
        pseudonym_key=settings.require_key(),
    )
    out = settings.home / "seed" / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.to_json())
    print(
        f"seeded {len(report.files)} files, {report.records} records "
        f"({report.invalid_records} invalid on purpose) into {settings.landing_url}"
    )
    print(f"planted violations: {len(report.planted)} (listed in {out})")
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    outcome = run_pipeline(settings, periods=args.period or None)
    print_summary(settings, outcome)
    return 0 if _ok(outcome["ingest"]) and _ok(outcome["indicators"]) else 1


def _ok(state: str) -> bool:
    return state == "skipped" or state.lower().endswith("success")


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from sanyi.storage import open_bucket

    landing = open_bucket(settings.landing_url, settings=settings)
    if next(iter(landing.list()), None) is None:
        args.seed, args.start, args.months, args.scale = 7, "2024-09", 4, "demo"
        cmd_seed(settings, args)
    args.period = None
    return cmd_run(settings, args)


def print_summary(settings: Settings, outcome: dict[str, Any]) -> None:
    from sanyi.ledger import Ledger
    from sanyi.publish import summary_table

    rows = Ledger(settings=settings).all()
    status = Counter(r.status for r in rows)
    print()
    print(f"DAG runs: ingest {outcome['ingest']}, indicators {outcome['indicators']}")
    print(f"Files: {len(rows)} — " + ", ".join(f"{k} {v}" for k, v in sorted(status.items())))
    read = sum(r.records_read or 0 for r in rows)
    print(
        f"Records: {read} read, {sum(r.records_loaded or 0 for r in rows)} loaded, "
        f"{sum(r.records_rejected or 0 for r in rows)} rejected, "
        f"{sum(r.duplicate_records or 0 for r in rows)} duplicate"
    )
    if outcome["periods"]:
        print(f"\nIndicators for {outcome['periods'][0]} … {outcome['periods'][-1]}:")
        table = summary_table(settings, outcome["periods"])
        _print_table(table, ["indicator", "entities_assessed", "breaches", "findings", "money_involved"])
    print(f"\nReceipts:   {settings.receipts_url}")
    print(f"Warehouse:  {settings.warehouse_url} (catalog {settings.catalog_uri})")
    print(f"Published:  {settings.published_url}")
    print("Query it:   sanyi query \"SELECT * FROM indicators.results WHERE status = 'breach' LIMIT 20\"")


def _print_table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, Decimal):
        return format(v, "f")
    return str(v)


def cmd_query(settings: Settings, args: argparse.Namespace) -> int:
    from sanyi.ledger import Ledger
    from sanyi.publish import submissions_table
    from sanyi.warehouse import Warehouse

    wh = Warehouse(settings=settings)
    snapshots = dict(s.split("=", 1) for s in args.snapshot or [])
    conn = wh.duckdb(
        snapshots={k: int(v) for k, v in snapshots.items()},
        extra={"sanyi.submissions": submissions_table(Ledger(settings=settings))},
    )
    cur = conn.execute(args.sql)
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    if args.format == "json":
        print(json.dumps(rows, default=_json_default, ensure_ascii=False, indent=2))
    elif args.format == "csv":
        from sanyi.publish import neutralise

        w = csv.writer(sys.stdout)
        w.writerow(cols)
        for r in rows:
            w.writerow([neutralise(_fmt(r[c])) if isinstance(r[c], str) else _fmt(r[c]) for c in cols])
    else:
        _print_table(rows, cols)
    return 0


def _json_default(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, datetime | date):
        return v.isoformat()
    return str(v)


def cmd_validate(settings: Settings, args: argparse.Namespace) -> int:
    """Agencies' pre-flight: the same parsing and validation as the platform, nothing stored."""
    from sanyi import contracts, ingest, validation

    path = Path(args.file)
    key = args.as_key or "/".join(path.parts[-4:])
    try:
        drop = ingest.parse_key(key)
        ds = contracts.get_dataset(drop.agency, drop.dataset)
        data = path.read_bytes()
        if drop.gzipped:
            data = ingest._gunzip(data, limit=settings.max_file_bytes)
        parsed = ingest.parse_records(data, drop, ds)
    except ingest.FileRejected as exc:
        print(f"REJECTED: {exc}")
        return 2
    bad = 0
    for p in parsed:
        if p.record is not None and not p.errors:
            p.errors = validation.validate_record(ds, p.record)
        for e in p.errors:
            print(validation.error_line(p.line, e))
        bad += bool(p.errors)
    reason = validation.validate_file(ds, [p.record for p in parsed if not p.errors])
    if reason:
        print(f"REJECTED: {reason}")
        return 2
    print(f"{len(parsed)} records, {len(parsed) - bad} valid, {bad} would be rejected")
    return 1 if bad else 0


def cmd_status(settings: Settings, _args: argparse.Namespace) -> int:
    from sanyi.ledger import Ledger

    rows = Ledger(settings=settings).all()
    for status, n in sorted(Counter(r.status for r in rows).items()):
        print(f"{status:<24}{n}")
    for r in rows:
        if not r.terminal and r.last_error:
            print(f"pending {r.key}: {r.last_error}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sanyi", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create local state (warehouse tables, pseudonym key, Airflow DB)")
    p = sub.add_parser("seed", help="write a synthetic province into the landing bucket")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start", default="2024-09")
    p.add_argument("--months", type=int, default=4)
    p.add_argument("--scale", default="demo", choices=["tiny", "demo"])
    p = sub.add_parser("run", help="process everything pending and compute the indicators")
    p.add_argument("--period", action="append", help="YYYY-MM (repeatable); default: the periods touched")
    sub.add_parser("demo", help="seed (if empty) + run + summary")
    p = sub.add_parser("query", help="SQL over the warehouse")
    p.add_argument("sql")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--snapshot", action="append", help="TABLE=SNAPSHOT_ID: query a table as of a snapshot")
    p = sub.add_parser("validate", help="pre-flight check of a file against its contract")
    p.add_argument("file")
    p.add_argument("--as", dest="as_key", help="the key it will be dropped under: agency/dataset/YYYY-MM-DD/name")
    sub.add_parser("status", help="the file ledger by status")
    args = parser.parse_args(argv)
    settings = Settings.from_env(create_key=args.command in ("init", "demo", "run", "seed"))
    handler = {
        "init": cmd_init,
        "seed": cmd_seed,
        "run": cmd_run,
        "demo": cmd_demo,
        "query": cmd_query,
        "validate": cmd_validate,
        "status": cmd_status,
    }[args.command]
    return handler(settings, args)


if __name__ == "__main__":
    sys.exit(main())
