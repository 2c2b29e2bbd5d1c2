"""Airflow Assets: one per warehouse table, so downstream DAGs run when a table changes."""

from __future__ import annotations

from airflow.sdk import Asset

from sanyi.contracts import load_datasets


def table_asset(table_name: str) -> Asset:
    """The Asset for warehouse table ``table_name`` ("insurance.settlements")."""
    namespace, _, table = table_name.partition(".")
    return Asset(name=table_name, uri=f"iceberg://sanyi/{namespace}/{table}", group="sanyi-warehouse")


def dataset_assets() -> dict[str, Asset]:
    """Every contract table's Asset, by table name, in a stable order."""
    return {name: table_asset(name) for name in sorted(ds.table_name for ds in load_datasets().values())}
