"""Indicators: recompute the joint-supervision indicators when warehouse tables change, then publish.

Scheduled on the warehouse Assets (any table changing triggers it). Asset-triggered runs have no
logical date: the periods come from the triggering events (or the ``periods`` param for a manual
run). Wiring only; the logic is :mod:`sanyi.indicators` and :mod:`sanyi.publish`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import reduce

from airflow.sdk import Param, dag, task

from sanyi.assets import dataset_assets

ASSETS = dataset_assets()


@dag(
    dag_id="sanyi_indicators",
    schedule=reduce(lambda a, b: a | b, ASSETS.values()),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "periods": Param([], type="array", description="YYYY-MM periods; empty = from the triggering events"),
    },
    tags=["sanyi", "indicators"],
    doc_md=__doc__,
)
def sanyi_indicators():
    @task
    def plan(params=None, triggering_asset_events=None) -> list[str]:
        from sanyi.config import Settings
        from sanyi.publish import plan_periods

        requested = list((params or {}).get("periods") or [])
        from_events: list[str] = []
        for events in (triggering_asset_events or {}).values():
            for event in events:
                from_events.extend((event.extra or {}).get("periods", []))
        return plan_periods(Settings.from_env(), requested=requested, touched=from_events)

    @task(map_index_template="{{ period }}")
    def compute(period: str) -> dict:
        from sanyi.config import Settings
        from sanyi.publish import compute_and_store

        return compute_and_store(Settings.from_env(), period)

    @task
    def publish(summaries) -> dict:
        from sanyi.config import Settings
        from sanyi.publish import publish_periods

        periods = [summaries[i]["period"] for i in range(len(summaries)) if summaries[i]]
        return publish_periods(Settings.from_env(), periods)

    publish(compute.expand(period=plan()))


sanyi_indicators()
