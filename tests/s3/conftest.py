"""Fixtures for the production-shaped profiles: a real S3 endpoint and a real PostgreSQL server.

- ``moto_endpoint`` (session): moto's standalone S3 server as a subprocess on 127.0.0.1 (a free
  port). Sanyi talks to it over HTTP only, exactly as to MinIO or AWS; nothing is mocked in-process.
- ``s3_settings``: fresh buckets (moto reset) and the ``SANYI_*``/``AWS_*`` environment of the S3
  profile; returns the resolved :class:`~sanyi.config.Settings`.
- ``fault_proxy``: the same, with the endpoint behind :class:`~faultproxy.FaultProxy`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3.faultproxy import FaultProxy
from s3.support import S3Env, s3_client
from sanyi.config import Settings

HERE = Path(__file__).resolve().parent
BUCKETS = ("landing", "receipts", "published", "warehouse")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a moto S3 server subprocess, for the whole session."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    for _ in range(3):  # the free port can be taken between probing and binding
        port = _free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        endpoint = f"http://127.0.0.1:{port}"
        if _wait_http(f"{endpoint}/moto-api/data.json", proc):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail(f"moto S3 server did not start; see {log}")
    yield endpoint
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def s3_profile(home: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str, sanyi_endpoint: str) -> S3Env:
    """Reset the store, create the buckets and set the S3 profile's environment (SANYI_HOME ``home``)."""
    req = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=10).close()
    client = s3_client(endpoint)
    for bucket in BUCKETS:
        client.create_bucket(Bucket=bucket)
    for var in list(os.environ):
        if var.startswith(("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN")):
            monkeypatch.delenv(var)
    env = {
        "SANYI_S3_ENDPOINT_URL": sanyi_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        # Keep a developer's ~/.aws (profiles, addressing style, proxies) out of the tests.
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "SANYI_LANDING_URL": "s3://landing",
        "SANYI_RECEIPTS_URL": "s3://receipts",
        "SANYI_PUBLISHED_URL": "s3://published",
        "SANYI_WAREHOUSE_URL": "s3://warehouse/iceberg",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return S3Env(Settings.from_env(), client, endpoint)


@pytest.fixture
def s3_settings(settings, monkeypatch, moto_endpoint) -> S3Env:
    """The S3 profile on fresh, empty buckets (SQLite catalog/ledger under the test's SANYI_HOME)."""
    return s3_profile(settings.home, monkeypatch, moto_endpoint, moto_endpoint)


@pytest.fixture
def fault_proxy(settings, monkeypatch, moto_endpoint) -> Iterator[tuple[S3Env, FaultProxy]]:
    """The S3 profile with Sanyi's endpoint behind a fault-injecting proxy."""
    proxy = FaultProxy(upstream_port=int(moto_endpoint.rsplit(":", 1)[1])).start()
    try:
        yield s3_profile(settings.home, monkeypatch, moto_endpoint, proxy.url), proxy
    finally:
        proxy.stop()
