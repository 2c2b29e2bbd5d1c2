"""Shared fixtures. Airflow reads its configuration at import time, so its home is set here, first."""

from __future__ import annotations

import getpass
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One Airflow metadata DB for the whole session, outside any test's SANYI_HOME.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="sanyi-test-airflow-"))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

TEST_KEY = "test-pseudonym-key-0123456789abcdef"
PG_HOST, PG_PORT = "127.0.0.1", 5432  # the PostgreSQL of the postgres-marked tests (trust auth, loopback)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """A fresh SANYI_HOME with embedded defaults (local buckets, SQLite catalog) and a test key."""
    from sanyi.config import Settings

    _set_sanyi_env(monkeypatch, tmp_path / "home")
    return Settings.from_env()


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's metadata DB, migrated once per session (dag.test() needs it)."""
    import sys

    home = Path(os.environ["AIRFLOW_HOME"])
    if not (home / "airflow.db").exists():
        airflow = Path(sys.executable).with_name("airflow")
        subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return home


def _set_sanyi_env(mp: pytest.MonkeyPatch, home: Path, **extra: str) -> None:
    """No inherited ``SANYI_*`` variable; ``SANYI_HOME=home``, the test key and ``extra`` instead."""
    for var in [v for v in os.environ if v.startswith("SANYI_")]:
        mp.delenv(var)
    for var, value in {"SANYI_HOME": str(home), "SANYI_PSEUDONYM_KEY": TEST_KEY, **extra}.items():
        mp.setenv(var, value)


@contextmanager
def sanyi_env(home: Path, **extra: str) -> Iterator[pytest.MonkeyPatch]:
    """The ``settings`` fixture's environment for module-scoped fixtures, while the block runs (the DAG's
    tasks read their settings from the environment)."""
    with pytest.MonkeyPatch.context() as mp:
        _set_sanyi_env(mp, home, **extra)
        yield mp


# ----------------------------------------------------------------------------------- PostgreSQL
def _pg_connect(user: str, dbname: str = "postgres"):
    import psycopg2

    return psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=dbname, connect_timeout=3)


def _pg_user() -> str | None:
    import psycopg2

    for user in dict.fromkeys(["postgres", "root", getpass.getuser()]):
        try:
            _pg_connect(user).close()
            return user
        except psycopg2.OperationalError:
            continue
    return None


@pytest.fixture(scope="session")
def pg_user() -> str:
    """A superuser name on the PostgreSQL at 127.0.0.1:5432 (trust auth), starting one if needed."""
    user = _pg_user()
    if user is None:
        script = ROOT / "tests" / "ensure_postgres.sh"
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        user = _pg_user()
    if user is None:
        pytest.fail(f"no PostgreSQL accepting trust connections on {PG_HOST}:{PG_PORT}")
    return user


@contextmanager
def fresh_pg_database(user: str, monkeypatch: pytest.MonkeyPatch | None = None) -> Iterator[str]:
    """The SQLAlchemy URI of a new database while the block runs (also set as ``SANYI_CATALOG_URI`` through
    ``monkeypatch`` when given); dropped afterwards."""
    from sanyi import ledger

    name = f"sanyi_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = _pg_connect(user)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    uri = f"postgresql+psycopg2://{user}@{PG_HOST}:{PG_PORT}/{name}"
    if monkeypatch is not None:
        monkeypatch.setenv("SANYI_CATALOG_URI", uri)
    try:
        yield uri
    finally:
        engine = ledger._ENGINES.pop(uri, None)
        if engine is not None:
            engine.dispose()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_catalog_uri(pg_user, monkeypatch) -> Iterator[str]:
    """A fresh database for this test as ``SANYI_CATALOG_URI``; dropped afterwards."""
    with fresh_pg_database(pg_user, monkeypatch) as uri:
        yield uri
