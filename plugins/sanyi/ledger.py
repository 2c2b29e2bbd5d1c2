"""The file ledger: one row per dropped object version, in Sanyi's own database (not Airflow's).

Wraps a SQLAlchemy engine on ``Settings.catalog_uri`` (the same database that holds the Iceberg
SqlCatalog: SQLite by default, PostgreSQL in production). A row is keyed by the object's key and
its sha256, so the same key re-dropped with changed bytes is a new row (a new submission), and the
ledger is the answer to "what happened to every file": each row ends in exactly one terminal state.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from sanyi.config import Settings

PENDING = "pending"
TERMINAL = ("loaded", "loaded_with_rejections", "rejected", "duplicate")
# How long a worker's claim on a file holds before another worker may take the file over. Longer
# than any load; a claimer that died on this host is detected at once (see Ledger.claim).
LEASE = timedelta(minutes=30)

metadata = sa.MetaData()

files = sa.Table(
    "sanyi_files",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("agency", sa.String(40)),
    sa.Column("dataset", sa.String(60)),
    sa.Column("business_date", sa.Date),
    sa.Column("status", sa.String(30), nullable=False, default=PENDING),
    sa.Column("reason", sa.Text),
    sa.Column("records_read", sa.BigInteger),
    sa.Column("records_loaded", sa.BigInteger),
    sa.Column("records_rejected", sa.BigInteger),
    sa.Column("duplicate_records", sa.BigInteger),
    sa.Column("snapshot_id", sa.BigInteger),
    sa.Column("duplicate_of", sa.Integer),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("discovered_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("processed_at", sa.DateTime(timezone=True)),
    sa.Column("claimed_by", sa.String(200)),  # "<host>:<pid>:<nonce>" of the worker processing it
    sa.Column("claimed_until", sa.DateTime(timezone=True)),
    # One row per version of an object: its bytes and when they arrived.
    sa.UniqueConstraint("key", "sha256", "arrived_at", name="uq_sanyi_files_version"),
)
sa.Index("ix_sanyi_files_identity", files.c.agency, files.c.dataset, files.c.business_date, files.c.sha256)


@dataclass
class FileRow:
    id: int
    key: str
    sha256: str
    size: int
    arrived_at: datetime
    agency: str | None
    dataset: str | None
    business_date: date | None
    status: str
    reason: str | None
    records_read: int | None
    records_loaded: int | None
    records_rejected: int | None
    duplicate_records: int | None
    snapshot_id: int | None
    duplicate_of: int | None
    attempts: int
    last_error: str | None
    discovered_at: datetime
    processed_at: datetime | None
    claimed_by: str | None = None
    claimed_until: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class Ledger:
    """Read and write the file ledger."""

    def __init__(self, *, settings: Settings) -> None:
        self.engine = _engine(settings.catalog_uri)
        metadata.create_all(self.engine)
        _add_claim_columns(self.engine)

    def _row(self, r: Any) -> FileRow:
        d = dict(r._mapping)
        for col in ("arrived_at", "discovered_at", "processed_at", "claimed_until"):
            d[col] = _utc(d[col])
        return FileRow(**d)

    def find(self, key: str, *, size: int, arrived_at: datetime) -> FileRow | None:
        """The latest row for this key whose size and arrival match (a cheap "seen it" check)."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(files).where(files.c.key == key, files.c.size == size).order_by(files.c.id.desc())
            ).all()
        for r in rows:
            row = self._row(r)
            if abs((row.arrived_at - arrived_at).total_seconds()) < 1e-3:
                return row
        return None

    def register(
        self,
        *,
        key: str,
        sha256: str,
        size: int,
        arrived_at: datetime,
        agency: str | None,
        dataset: str | None,
        business_date: date | None,
    ) -> FileRow:
        """Insert a pending row unless the key's current version already has these bytes; return the row.

        A key switched back to bytes it held before (A, then B, then A again) is a new submission: it
        gets its own row, and so its own receipt, instead of leaving B's receipt to describe it.
        """
        try:
            return self._register(key, sha256, size, arrived_at, agency, dataset, business_date)
        except sa.exc.IntegrityError:
            # Another discoverer registered the same version at the same moment.
            with self.engine.connect() as c:
                latest = c.execute(
                    sa.select(files).where(files.c.key == key).order_by(files.c.id.desc())
                ).first()
            return self._row(latest)

    def _register(self, key, sha256, size, arrived_at, agency, dataset, business_date) -> FileRow:
        with self.engine.begin() as c:
            latest = c.execute(sa.select(files).where(files.c.key == key).order_by(files.c.id.desc())).first()
            if latest is not None and latest.sha256 == sha256:
                return self._row(latest)
            c.execute(
                files.insert().values(
                    key=key,
                    sha256=sha256,
                    size=size,
                    arrived_at=arrived_at,
                    agency=agency,
                    dataset=dataset,
                    business_date=business_date,
                    status=PENDING,
                    attempts=0,
                    discovered_at=datetime.now(UTC),
                )
            )
            return self._row(
                c.execute(sa.select(files).where(files.c.key == key).order_by(files.c.id.desc())).first()
            )

    def get(self, file_id: int) -> FileRow:
        with self.engine.connect() as c:
            return self._row(c.execute(sa.select(files).where(files.c.id == file_id)).one())

    def pending(self) -> list[FileRow]:
        """Rows not yet in a terminal state, in processing order (business date, arrival, key)."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(files)
                .where(files.c.status.not_in(TERMINAL))
                .order_by(files.c.business_date, files.c.arrived_at, files.c.key, files.c.id)
            ).all()
        return [self._row(r) for r in rows]

    def all(self) -> list[FileRow]:
        with self.engine.connect() as c:
            return [self._row(r) for r in c.execute(sa.select(files).order_by(files.c.id)).all()]

    def previous_versions(self, row: FileRow) -> list[FileRow]:
        """Earlier rows for the same key with other bytes (a re-drop with changed content)."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(files).where(files.c.key == row.key, files.c.id < row.id).order_by(files.c.id)
            ).all()
        return [self._row(r) for r in rows]

    def same_bytes(self, row: FileRow) -> list[FileRow]:
        """Other submissions of ``row``'s bytes for its agency, dataset and business date, earliest
        arrival first (ties by id); empty when the key names no dataset."""
        if row.agency is None or row.dataset is None or row.business_date is None:
            return []
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(files)
                .where(
                    files.c.agency == row.agency,
                    files.c.dataset == row.dataset,
                    files.c.business_date == row.business_date,
                    files.c.sha256 == row.sha256,
                    files.c.id != row.id,
                )
                .order_by(files.c.arrived_at, files.c.id)
            ).all()
        return [self._row(r) for r in rows]

    def claim(self, file_id: int, owner: str, *, lease: timedelta | None = None) -> bool:
        """Atomically make ``owner`` the one worker processing a pending file; False if another holds it.

        A conditional UPDATE (one statement, so atomic in SQLite and PostgreSQL alike) takes the file
        when it is not terminal and nobody holds a live claim: none, an expired lease, or a claimer
        on this host whose process is gone (a SIGKILLed worker retried on the same machine need
        not wait for the lease). Claiming counts an attempt.
        """
        lease = LEASE if lease is None else lease
        now = datetime.now(UTC)
        takeable = sa.or_(files.c.claimed_until.is_(None), files.c.claimed_until < now)
        row = self.get(file_id)
        if row.claimed_by and row.claimed_by != owner and _dead_here(row.claimed_by):
            # Taken over only from that very claim, so two workers cannot both take it over.
            takeable = sa.or_(takeable, files.c.claimed_by == row.claimed_by)
        with self.engine.begin() as c:
            result = c.execute(
                files.update()
                .where(files.c.id == file_id, files.c.status.not_in(TERMINAL), takeable)
                .values(claimed_by=owner, claimed_until=now + lease, attempts=files.c.attempts + 1)
            )
        return result.rowcount == 1

    def mark_error(self, file_id: int, error: str) -> None:
        """Record a non-terminal failure: the file stays pending and is retried by the next run."""
        with self.engine.begin() as c:
            c.execute(
                files.update()
                .where(files.c.id == file_id)
                .values(last_error=error[:2000], claimed_by=None, claimed_until=None)
            )

    def finish(
        self,
        file_id: int,
        *,
        status: str,
        reason: str | None,
        read: int,
        loaded: int,
        rejected: int,
        duplicate_records: int,
        snapshot_id: int | None,
        duplicate_of: int | None = None,
    ) -> None:
        assert status in TERMINAL, status
        with self.engine.begin() as c:
            c.execute(
                files.update()
                .where(files.c.id == file_id)
                .values(
                    status=status,
                    reason=reason,
                    records_read=read,
                    records_loaded=loaded,
                    records_rejected=rejected,
                    duplicate_records=duplicate_records,
                    snapshot_id=snapshot_id,
                    duplicate_of=duplicate_of,
                    last_error=None,
                    processed_at=datetime.now(UTC),
                    claimed_by=None,
                    claimed_until=None,
                )
            )


def claim_owner() -> str:
    """A claim owner name for this process: host and pid (to tell a dead claimer) and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_here(owner: str) -> bool:
    """True when ``owner`` names a process on this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _add_claim_columns(engine: sa.Engine) -> None:
    """Add the claim columns to a ledger created before they existed (create_all skips existing tables)."""
    have = {c["name"] for c in sa.inspect(engine).get_columns(files.name)}
    for column in (files.c.claimed_by, files.c.claimed_until):
        if column.name in have:
            continue
        kind = column.type.compile(dialect=engine.dialect)
        try:
            with engine.begin() as c:
                c.execute(sa.text(f"ALTER TABLE {files.name} ADD COLUMN {column.name} {kind}"))
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            pass  # added by a concurrent worker


_ENGINES: dict[str, sa.Engine] = {}


def _engine(uri: str) -> sa.Engine:
    if uri not in _ENGINES:
        kwargs: dict[str, Any] = {"future": True}
        if uri.startswith("sqlite"):
            # Several processes (Airflow workers) share the file: wait for locks instead of failing.
            kwargs["connect_args"] = {"timeout": 60}
        _ENGINES[uri] = sa.create_engine(uri, **kwargs)
    return _ENGINES[uri]
