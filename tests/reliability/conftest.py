"""Fixtures of the reliability tests: the catalog/ledger database to run against."""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Iterator

import pytest

PG = {"host": "127.0.0.1", "port": 5432, "connect_timeout": 3}


def _pg_admin():
    """An autocommit connection to the PostgreSQL server on 127.0.0.1:5432 (trust auth), or None."""
    import psycopg2

    for user in dict.fromkeys(["postgres", "root", getpass.getuser()]):
        try:
            conn = psycopg2.connect(user=user, dbname="postgres", **PG)
        except psycopg2.OperationalError:
            continue
        conn.autocommit = True
        return conn, user
    return None, None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog_uri(request) -> Iterator[str | None]:
    """None for the default SQLite file in SANYI_HOME, or the URI of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    admin, user = _pg_admin()
    if admin is None:
        pytest.skip("no PostgreSQL accepting trust connections on 127.0.0.1:5432")
    name = f"sanyi_reliability_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    uri = f"postgresql+psycopg2://{user}@{PG['host']}:{PG['port']}/{name}"
    try:
        yield uri
    finally:
        from sanyi import ledger

        engine = ledger._ENGINES.pop(uri, None)
        if engine is not None:
            engine.dispose()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
