"""Shared fixtures. Airflow reads its configuration at import time, so its home is set here, first."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One Airflow metadata DB for the whole session, outside any test's SANYI_HOME.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="sanyi-test-airflow-"))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

TEST_KEY = "test-pseudonym-key-0123456789abcdef"


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """A fresh SANYI_HOME with embedded defaults (local buckets, SQLite catalog) and a test key."""
    from sanyi.config import Settings

    for var in list(os.environ):
        if var.startswith("SANYI_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("SANYI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SANYI_PSEUDONYM_KEY", TEST_KEY)
    return Settings.from_env()


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's metadata DB, migrated once per session (dag.test() needs it)."""
    import subprocess
    import sys

    home = Path(os.environ["AIRFLOW_HOME"])
    if not (home / "airflow.db").exists():
        airflow = Path(sys.executable).with_name("airflow")
        subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return home
