"""Ingest: pick up new drops in the landing bucket, validate, load into Iceberg, write receipts.

Wiring only; the logic is :mod:`sanyi.ingest`. One mapped task per file (files are independent and
fan out across workers); each warehouse table's Asset gets an event when a file loaded rows into it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowSkipException

from sanyi.assets import dataset_assets

ASSETS = dataset_assets()


@dag(
    dag_id="sanyi_ingest",
    schedule=timedelta(minutes=5),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
    tags=["sanyi", "ingest"],
    doc_md=__doc__,
)
def sanyi_ingest():
    @task
    def discover() -> list[int]:
        from sanyi.config import Settings
        from sanyi.ingest import discover as discover_files

        return discover_files(Settings.from_env())

    @task(map_index_template="{{ file_id }}")
    def load(file_id: int) -> dict:
        from sanyi.config import Settings
        from sanyi.ingest import FileBusy, process_file

        try:
            receipt = process_file(Settings.from_env(), file_id)
        except FileBusy as exc:
            # Another worker holds the file's claim and will finish it; nothing to do here.
            raise AirflowSkipException(str(exc)) from exc
        return {
            "file": receipt.file,
            "table": (receipt.dataset or "").replace("/", "."),
            "status": receipt.status,
            "loaded": receipt.loaded,
            "snapshot_id": receipt.snapshot_id,
            "business_date": receipt.file.split("/")[2] if receipt.dataset else None,
        }

    @task(trigger_rule="all_done")
    def summarise(summaries) -> dict[str, list[dict]]:
        """Loaded files by table (index access: iterating the lazy XCom sequence probes past its end)."""
        by_table: dict[str, list[dict]] = {}
        for i in range(len(summaries)):
            s = summaries[i]
            if s and s["loaded"]:
                by_table.setdefault(s["table"], []).append(s)
        return by_table

    by_table = summarise(load.expand(file_id=discover()))

    for table_name, asset in ASSETS.items():

        @task(task_id=f"announce_{table_name.replace('.', '__')}", outlets=[asset])
        def announce(by_table, *, outlet_events=None, _table=table_name, _asset=asset) -> dict:
            mine = by_table.get(_table, [])
            if not mine:
                raise AirflowSkipException(f"no rows loaded into {_table}")
            extra = {
                "table": _table,
                "files": [s["file"] for s in mine],
                "snapshot_id": max(s["snapshot_id"] for s in mine if s["snapshot_id"]),
                "periods": sorted({s["business_date"][:7] for s in mine if s["business_date"]}),
            }
            outlet_events[_asset].extra = extra
            return extra

        announce(by_table)


sanyi_ingest()
