"""Fixtures of the reliability tests: the catalog/ledger database to run against."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import fresh_pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog_uri(request) -> Iterator[str | None]:
    """None for the default SQLite file in SANYI_HOME, or the URI of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with fresh_pg_database(request.getfixturevalue("pg_user")) as uri:
        yield uri
