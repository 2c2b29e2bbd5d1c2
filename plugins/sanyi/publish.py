"""Compute indicators into the warehouse and publish them for supervisors and agencies.

- :func:`compute_and_store` runs the indicator engine (:mod:`sanyi.indicators`) for one period on
  DuckDB over Arrow scans pinned to the current snapshots, and replaces that period's rows of
  ``indicators.results`` / ``indicators.findings`` in one commit each.
- :func:`publish_periods` writes, per period, Parquet and CSV exports (UTF-8 with BOM, formula cells
  neutralised), a notice per agency listing the breaches it must act on, and a manifest naming the
  snapshots used, into the published bucket.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.expressions import EqualTo

from sanyi import indicators
from sanyi.config import Settings
from sanyi.contracts import load_datasets
from sanyi.ledger import TERMINAL, Ledger
from sanyi.storage import open_bucket
from sanyi.warehouse import FINDINGS, FINDINGS_SCHEMA, RESULTS, RESULTS_SCHEMA, Warehouse

CST = timezone(timedelta(hours=8))

SUBMISSIONS_SCHEMA = pa.schema(
    [
        ("agency", pa.string()),
        ("dataset", pa.string()),
        ("business_date", pa.date32()),
        ("status", pa.string()),
        ("arrived_at", pa.timestamp("us", tz="UTC")),
        ("arrived_local", pa.timestamp("us")),
        ("file", pa.string()),
    ]
)

# Which agency must act on a breach: health commission → institutions; insurance bureau →
# pharmacies, VBP and fund; traceability platform → trace codes. Completeness goes to the dataset's owner.
AGENCY_OF_INDICATOR = {
    "nego_allocation": {"institution": "health", "pharmacy": "insurance"},
    "committee_linkage": "health",
    "county_dual_channel": "insurance",
    "dual_channel_trace": "insurance",
    "duplicate_trace": "traceability",
    "vbp_execution": "insurance",
    "two_diseases": "insurance",
    "reimbursement_ratio": "insurance",
    "catalog_compliance": "insurance",
    "price_warning": "insurance",
}


def submissions_table(ledger: Ledger) -> pa.Table:
    """The ``sanyi.submissions`` view: one row per file that reached a terminal state."""
    rows = []
    for r in ledger.all():
        if r.status not in TERMINAL or r.agency is None or r.business_date is None:
            continue
        rows.append(
            {
                "agency": r.agency,
                "dataset": r.dataset,
                "business_date": r.business_date,
                "status": r.status,
                "arrived_at": r.arrived_at,
                "arrived_local": r.arrived_at.astimezone(CST).replace(tzinfo=None),
                "file": r.key,
            }
        )
    return pa.Table.from_pylist(rows, schema=SUBMISSIONS_SCHEMA)


def plan_periods(settings: Settings, *, requested: list[str], touched: list[str]) -> list[str]:
    """Periods to (re)compute.

    Explicit requests win. Otherwise every period from the earliest touched one to the latest with
    data: later periods depend on earlier data (duplicate trace codes, price changes, annual caps).
    """
    if requested:
        return sorted(set(requested))
    months = sorted({r.business_date.strftime("%Y-%m") for r in Ledger(settings=settings).all() if r.business_date})
    if not months:
        return []
    start = min(touched) if touched else months[0]
    return [m for m in _month_range(start, months[-1])]


def _month_range(start: str, end: str) -> list[str]:
    y, m = map(int, start.split("-"))
    out = []
    while f"{y:04d}-{m:02d}" <= end:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def compute_and_store(settings: Settings, period: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Compute every indicator for ``period`` and replace the period's rows in the warehouse."""
    wh = Warehouse(settings=settings)
    wh.ensure_all()
    dataset_tables = sorted(ds.table_name for ds in load_datasets().values())
    snapshots = {name: sid for name, sid in wh.snapshot_ids().items() if name in dataset_tables and sid}
    conn = wh.duckdb(
        tables=dataset_tables,
        snapshots=snapshots,
        extra={"sanyi.submissions": submissions_table(Ledger(settings=settings))},
    )
    try:
        results, findings = indicators.compute(conn, period, now=now or datetime.now(UTC), source_snapshots=snapshots)
    finally:
        conn.close()
    results = results.select(RESULTS_SCHEMA.names).cast(RESULTS_SCHEMA)
    findings = findings.select(FINDINGS_SCHEMA.names).cast(FINDINGS_SCHEMA)
    props = {"sanyi.period": period, "sanyi.source-snapshots": json.dumps(snapshots)}
    wh.replace_where(RESULTS, "period", period, results, properties=props)
    wh.replace_where(FINDINGS, "period", period, findings, properties=props)
    return {
        "period": period,
        "results": results.num_rows,
        "findings": findings.num_rows,
        "breaches": sum(1 for s in results.column("status").to_pylist() if s == "breach"),
    }


def neutralise(value: Any) -> Any:
    """Make a text cell safe for spreadsheets: a leading = + - @ (or tab/CR) would start a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv_bytes(table: pa.Table) -> bytes:
    """CSV in UTF-8 with BOM (so spreadsheets in China detect the encoding), formulas neutralised."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(table.schema.names)
    text_cols = {f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)}
    names = table.schema.names
    for row in table.to_pylist():
        writer.writerow([neutralise(row[n]) if n in text_cols else _plain(row[n]) for n in names])
    return b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8")


def _plain(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def publish_periods(settings: Settings, periods: list[str]) -> dict[str, Any]:
    """Write each period's exports, agency notices and manifest into the published bucket."""
    wh = Warehouse(settings=settings)
    bucket = open_bucket(settings.published_url, settings=settings)
    written: dict[str, list[str]] = {}
    for period in sorted(set(periods)):
        results = wh.scan(RESULTS, row_filter=EqualTo("period", period))
        findings = wh.scan(FINDINGS, row_filter=EqualTo("period", period))
        results = results.sort_by([(c, "ascending") for c in ("indicator", "entity_type", "entity_code", "measure")])
        findings = findings.sort_by(
            [(c, "ascending") for c in ("indicator", "entity_type", "entity_code", "kind", "subject")]
        )
        files: dict[str, bytes] = {
            f"{period}/results.parquet": _parquet_bytes(results),
            f"{period}/results.csv": to_csv_bytes(results),
            f"{period}/findings.parquet": _parquet_bytes(findings),
            f"{period}/findings.csv": to_csv_bytes(findings),
        }
        files[f"{period}/report.html"] = html_report(period, results, findings).encode("utf-8")
        for agency, text in agency_notices(period, results, findings).items():
            files[f"{period}/notices/{agency}.md"] = text.encode("utf-8")
        snapshots = json.loads(results.column("source_snapshots")[0].as_py()) if results.num_rows else {}
        manifest = {
            "period": period,
            "published_at": datetime.now(UTC).isoformat(),
            "source_snapshots": snapshots,
            "indicator_snapshots": {
                RESULTS: wh.catalog.load_table(RESULTS).current_snapshot().snapshot_id,
                FINDINGS: wh.catalog.load_table(FINDINGS).current_snapshot().snapshot_id,
            },
            "rows": {"results": results.num_rows, "findings": findings.num_rows},
            "files": sorted(files),
        }
        files[f"{period}/manifest.json"] = json.dumps(manifest, indent=2, ensure_ascii=False).encode()
        for key, data in files.items():
            bucket.put(key, data)
        written[period] = sorted(files)
    return {"periods": sorted(written), "files": sum(len(v) for v in written.values())}


def _agency_for(indicator: str, entity_type: str, entity_code: str) -> str:
    if indicator == "submission_completeness":
        return entity_code.split("/")[0]
    target = AGENCY_OF_INDICATOR.get(indicator, "insurance")
    if isinstance(target, dict):
        return target.get(entity_type, "insurance")
    return target


def agency_notices(period: str, results: pa.Table, findings: pa.Table) -> dict[str, str]:
    """A Markdown notice per agency: each breach it must act on, with the evidence behind it."""
    by_row: dict[tuple, list[dict]] = defaultdict(list)
    for f in findings.to_pylist():
        by_row[(f["indicator"], f["entity_type"], f["entity_code"])].append(f)
    breaches: dict[str, list[dict]] = defaultdict(list)
    for r in results.to_pylist():
        if r["status"] == "breach":
            breaches[_agency_for(r["indicator"], r["entity_type"], r["entity_code"])].append(r)
    titles = {
        "health": "Health commission",
        "insurance": "Medical insurance bureau",
        "traceability": "Drug traceability platform",
    }
    out = {}
    for agency, title in titles.items():
        lines = [f"# {title}: breaches to act on, {period}", ""]
        rows = breaches.get(agency, [])
        if not rows:
            lines.append("No breaches this period.")
        for r in rows:
            value = "" if r["value"] is None else f"{r['value']:.4g}"
            bound = "" if r["threshold"] is None else f" (threshold {r['threshold']:.4g})"
            lines.append(f"## {r['indicator']} — {r['entity_type']} {r['entity_code']}")
            lines.append(f"{r['measure']} = {value}{bound}")
            for f in by_row.get((r["indicator"], r["entity_type"], r["entity_code"]), []):
                amount = f" — {f['amount']} yuan" if f["amount"] is not None else ""
                lines.append(f"- {f['kind']}: {neutralise(f['subject'] or '')}{amount}")
            lines.append("")
        out[agency] = "\n".join(lines) + "\n"
    return out


def summary_table(settings: Settings, periods: list[str]) -> list[dict[str, Any]]:
    """Per indicator: entities assessed, breaches, and money involved in its findings."""
    wh = Warehouse(settings=settings)
    conn = wh.duckdb(tables=[RESULTS, FINDINGS])
    conn.execute("CREATE TEMP TABLE wanted(period VARCHAR)")
    conn.executemany("INSERT INTO wanted VALUES (?)", [[p] for p in periods])
    sql = (settings.sql_dir / "reports" / "summary.sql").read_text()
    cur = conn.execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


_STATUS_ORDER = {"breach": 0, "pending": 1, "compliant": 2, "exempt": 3, "not_applicable": 4}


def html_report(period: str, results: pa.Table, findings: pa.Table) -> str:
    """A self-contained HTML page for supervisors: per indicator, the breaches first, with evidence."""
    from html import escape

    by_row: dict[tuple, list[dict]] = defaultdict(list)
    for f in findings.to_pylist():
        by_row[(f["indicator"], f["entity_type"], f["entity_code"])].append(f)
    by_indicator: dict[str, list[dict]] = defaultdict(list)
    for r in results.to_pylist():
        by_indicator[r["indicator"]].append(r)
    parts = [
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>",
        f"<title>Sanyi joint supervision — {escape(period)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;width:100%}"
        "td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}"
        ".breach{background:#fde2e2}.pending{background:#fff6d5}.compliant{background:#e6f4ea}"
        "ul{margin:0;padding-left:1.2em}</style></head><body>",
        f"<h1>Joint-supervision indicators, {escape(period)}</h1>",
    ]
    summary = []
    for ind in sorted(by_indicator):
        rows = by_indicator[ind]
        summary.append(
            f"<tr><td><a href='#{escape(ind)}'>{escape(ind)}</a></td><td>{len(rows)}</td>"
            f"<td>{sum(r['status'] == 'breach' for r in rows)}</td></tr>"
        )
    parts.append("<table><tr><th>indicator</th><th>rows</th><th>breaches</th></tr>" + "".join(summary) + "</table>")
    for ind in sorted(by_indicator):
        rows = sorted(
            by_indicator[ind],
            key=lambda r: (_STATUS_ORDER.get(r["status"], 9), r["entity_type"], r["entity_code"], r["measure"]),
        )
        parts.append(
            f"<h2 id='{escape(ind)}'>{escape(ind)}</h2><table><tr><th>entity</th><th>measure</th>"
            "<th>value</th><th>threshold</th><th>status</th><th>evidence</th></tr>"
        )
        for r in rows:
            evidence = "".join(
                f"<li>{escape(f['kind'])}: {escape(str(f['subject'] or ''))}"
                + (f" — {escape(str(f['amount']))} yuan" if f["amount"] is not None else "")
                + "</li>"
                for f in by_row.get((r["indicator"], r["entity_type"], r["entity_code"]), [])
                if r["status"] == "breach"
            )
            value = "" if r["value"] is None else f"{r['value']:.4g}"
            bound = "" if r["threshold"] is None else f"{r['threshold']:.4g}"
            parts.append(
                f"<tr class='{escape(r['status'])}'><td>{escape(r['entity_type'])} {escape(r['entity_code'])}</td>"
                f"<td>{escape(r['measure'])}</td><td>{value}</td><td>{bound}</td><td>{escape(r['status'])}</td>"
                f"<td><ul>{evidence}</ul></td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
