"""ensure_postgres.sh, the fallback the PostgreSQL fixture runs when nothing answers on 127.0.0.1:5432.

Exercised on a spare port, so that it really initialises and starts a cluster even on a machine
where the usual server is up (as on the developers' and CI machines).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.postgres

SCRIPT = Path(__file__).resolve().parent / "ensure_postgres.sh"


def test_ensure_postgres_starts_a_loopback_only_trust_server_and_is_idempotent():
    import psycopg2

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = Path(f"/var/tmp/sanyi-pg-test-{port}")  # readable by the `postgres` account, unlike tmp_path
    env = {**os.environ, "PGPORT": str(port), "SANYI_PG_DIR": str(data)}
    try:
        first = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
        assert first.returncode == 0, first.stderr
        assert f"started on 127.0.0.1:{port}" in first.stdout

        conn = psycopg2.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=5
        )
        with conn, conn.cursor() as cur:  # trust auth: no password
            cur.execute("SHOW listen_addresses")
            assert cur.fetchone()[0] == "127.0.0.1"
        conn.close()

        again = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "already accepting" in again.stdout
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2)
