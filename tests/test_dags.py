"""DAG integrity: every DAG file imports cleanly and is wired as documented."""

from __future__ import annotations

from conftest import ROOT


def test_dag_folder_imports_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert {"sanyi_ingest", "sanyi_indicators"} <= set(bag.dag_ids)


def test_ingest_dag_maps_files_and_announces_every_table():
    from airflow.dag_processing.dagbag import DagBag

    from sanyi.assets import dataset_assets

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["sanyi_ingest"]
    ids = set(dag.task_ids)
    assert {"discover", "load"} <= ids
    announce = [t for t in dag.tasks if t.task_id.startswith("announce_")]
    assert len(announce) == len(dataset_assets()) == 13
    assert {o.name for t in announce for o in t.outlets} == set(dataset_assets())


def test_indicators_dag_is_scheduled_on_the_warehouse_assets():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["sanyi_indicators"]
    assert {"plan", "compute", "publish"} <= set(dag.task_ids)
    assert "insurance.settlements" in repr(dag.timetable.asset_condition)
