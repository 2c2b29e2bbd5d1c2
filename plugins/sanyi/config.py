"""The one configuration object: every location and secret Sanyi uses, read from the environment.

Defaults put all state under ``SANYI_HOME`` (``./var``): buckets as folders, the Iceberg warehouse,
the SQLite catalog/ledger database and Airflow's own home. Each location can be moved on its own
(``SANYI_LANDING_URL``… accept a local path or ``s3://bucket/prefix``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with :meth:`from_env`; pass it explicitly everywhere."""

    home: Path
    landing_url: str
    receipts_url: str
    published_url: str
    warehouse_url: str
    catalog_uri: str
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    pseudonym_key: bytes = field(default=b"", repr=False)
    max_file_bytes: int = 1 << 30
    schemas_dir: Path = PROJECT_ROOT / "schemas"
    sql_dir: Path = PROJECT_ROOT / "sql"
    policy_file: Path = PROJECT_ROOT / "policy" / "parameters.toml"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, create_key: bool = False) -> Settings:
        """Read ``SANYI_*`` variables.

        ``create_key`` lets the demo generate a pseudonym key into ``$SANYI_HOME/secrets`` when none
        is configured; otherwise a missing key is an error when something needs it.
        """
        env = dict(os.environ if env is None else env)
        home = Path(env.get("SANYI_HOME", "var")).expanduser().resolve()
        key = env.get("SANYI_PSEUDONYM_KEY", "").encode()
        if not key:
            key = _key_from_home(home, create=create_key)
        catalog_uri = env.get("SANYI_CATALOG_URI") or f"sqlite:///{home / 'sanyi.db'}"
        _ensure_sqlite_folder(catalog_uri)
        return cls(
            home=home,
            landing_url=env.get("SANYI_LANDING_URL") or str(home / "buckets" / "landing"),
            receipts_url=env.get("SANYI_RECEIPTS_URL") or str(home / "buckets" / "receipts"),
            published_url=env.get("SANYI_PUBLISHED_URL") or str(home / "buckets" / "published"),
            warehouse_url=env.get("SANYI_WAREHOUSE_URL") or str(home / "warehouse"),
            catalog_uri=catalog_uri,
            s3_endpoint_url=s3_endpoint_from_env(env),
            s3_region=s3_region_from_env(env),
            pseudonym_key=key,
            max_file_bytes=int(env.get("SANYI_MAX_FILE_BYTES", str(1 << 30))),
        )

    def require_key(self) -> bytes:
        if not self.pseudonym_key:
            raise RuntimeError(
                "no pseudonym key: set SANYI_PSEUDONYM_KEY (a platform secret) "
                "or run `sanyi init` to generate one under $SANYI_HOME/secrets"
            )
        return self.pseudonym_key


def s3_endpoint_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """``SANYI_S3_ENDPOINT_URL`` (MinIO, Ceph, moto…); None means AWS's own endpoints."""
    env = os.environ if env is None else env
    return env.get("SANYI_S3_ENDPOINT_URL") or None


def s3_region_from_env(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or None


def _ensure_sqlite_folder(uri: str) -> None:
    # SQLite creates its file but not the folder. With every bucket on S3 nothing else creates
    # SANYI_HOME, and the first connection would fail with "unable to open database file".
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:///:memory:"):
        path = uri.removeprefix("sqlite:///").split("?", 1)[0]
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def _key_from_home(home: Path, *, create: bool) -> bytes:
    path = home / "secrets" / "pseudonym.key"
    if path.exists():
        return path.read_bytes().strip()
    if not create:
        return b""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(secrets.token_hex(32).encode())
    path.chmod(0o600)
    return path.read_bytes().strip()
