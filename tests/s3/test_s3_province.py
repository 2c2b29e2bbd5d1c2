"""The whole end-to-end test again, on the two production-shaped profiles: S3 over HTTP for every bucket
and the warehouse, with the catalog and ledger in SQLite, then in PostgreSQL.

The checks are those of ``tests/test_end_to_end.py``, imported so that they run here against this
module's ``province`` fixture; only where the province lives differs. On S3 a file's arrival time is
the moment it was put (S3 sets ``LastModified`` itself), so every seeded file arrives "late" here:
the planted violations must still all show up, they are simply not the only timeliness findings.
"""

from __future__ import annotations

import contextlib

import pytest

from conftest import fresh_pg_database, sanyi_env
from s3.conftest import s3_profile
from sanyi.storage import S3Bucket, open_bucket
from sanyi.warehouse import Warehouse
from test_end_to_end import (  # noqa: F401 (the test_* functions are collected here, against this module's fixture)
    seed_and_run_tiny_province,
    test_a_second_run_over_the_same_drops_changes_nothing,
    test_both_dags_succeed,
    test_counts_add_up_in_warehouse_and_quarantine,
    test_every_dropped_file_has_one_terminal_state_and_one_receipt,
    test_every_planted_violation_shows_up,
    test_indicators_are_published_for_every_period,
    test_no_raw_resident_id_leaves_the_landing_bucket,
)

pytestmark = [pytest.mark.slow, pytest.mark.s3]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def province(request, tmp_path_factory, airflow_db, moto_endpoint):
    """The tiny province seeded into the S3 landing bucket and run end to end once, per catalog database."""
    home = tmp_path_factory.mktemp(f"e2e-s3-{request.param}")
    with sanyi_env(home) as mp:
        s3_profile(home, mp, moto_endpoint, moto_endpoint)
        postgres = request.param == "postgres"
        with fresh_pg_database(request.getfixturevalue("pg_user"), mp) if postgres else contextlib.nullcontext():
            yield seed_and_run_tiny_province()


def test_the_province_really_lives_on_s3_and_in_its_catalog_database(province, request):
    settings, _, _ = province
    for url in (settings.landing_url, settings.receipts_url, settings.published_url):
        assert isinstance(open_bucket(url, settings=settings), S3Bucket)
    scheme = {"sqlite": "sqlite:///", "postgres": "postgresql+psycopg2://"}[request.node.callspec.params["province"]]
    assert settings.catalog_uri.startswith(scheme)
    table = Warehouse(settings=settings).table("insurance.settlements")
    files = [task.file.file_path for task in table.scan().plan_files()]
    assert files and all(f.startswith("s3://warehouse/iceberg/insurance/settlements/data/") for f in files)
