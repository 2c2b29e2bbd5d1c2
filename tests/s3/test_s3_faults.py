"""S3 faults: transient ones are retried and the load succeeds; permanent ones leave the file pending.

The endpoint sits behind :class:`~faultproxy.FaultProxy` on loopback, which fails chosen requests the
way a real store or network does (503 SlowDown, 500, dropped connections, bodies cut short, 403, the
endpoint gone). Test setup talks to the store directly, so only Sanyi's own requests are faulted.
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from samples import ndjson, resident_id, settlement
from sanyi.ingest import discover, process_file
from sanyi.ledger import Ledger
from sanyi.storage import S3_MAX_ATTEMPTS, ObjectNotFound, S3Bucket, StorageError, open_bucket
from sanyi.warehouse import Warehouse

pytestmark = pytest.mark.s3

KEY = "insurance/settlements/2024-10-01/s1.ndjson"
DATA = ndjson([settlement(i) for i in range(1, 40)])


def _drop(env, key: str = KEY, data: bytes = DATA) -> None:
    env.client.put_object(Bucket="landing", Key=key, Body=data)


def _receipt(env, key: str = KEY) -> dict:
    return json.loads(env.client.get_object(Bucket="receipts", Key=f"{key}.receipt.json")["Body"].read())


def _snapshots(settings, table: str = "insurance.settlements") -> int:
    return len(Warehouse(settings=settings).catalog.load_table(table).snapshots())


def test_transient_faults_on_every_kind_of_request_are_retried_and_the_load_succeeds(fault_proxy):
    env, proxy = fault_proxy
    _drop(env)
    # boto3: listing and reading the drop, writing the receipt.
    faults = [
        proxy.fail("slowdown", method="GET", path_prefix="/landing"),
        proxy.fail("drop", method="GET", path_prefix="/landing"),
        proxy.fail("truncate", method="GET", path_prefix="/landing/insurance/"),
        proxy.fail("internal", times=2, method="PUT", path_prefix="/receipts/"),
        proxy.fail("drop", method="PUT", path_prefix="/receipts/"),
    ]
    # pyarrow (Iceberg FileIO): writing data and metadata files, reading metadata back. Three failures
    # in a row need more attempts than pyarrow's default of 3: Sanyi's ArrowS3Retry must be in use.
    faults += [
        proxy.fail("internal", times=2, method="PUT", path_prefix="/warehouse/"),
        proxy.fail("drop", method="PUT", path_prefix="/warehouse/"),
        proxy.fail("internal", method="GET", path_prefix="/warehouse/"),
    ]

    (file_id,) = discover(env.settings)
    receipt = process_file(env.settings, file_id)

    assert [(f.kind, f.injected) for f in faults] == [(f.kind, f.times) for f in faults]
    first_put = proxy.requests("PUT", "/warehouse/")[:4]
    assert len({s.path for s in first_put}) == 1  # one request, four attempts
    assert [s.outcome for s in first_put] == ["internal", "internal", "drop", "forwarded"]
    assert receipt.status == "loaded" and receipt.loaded == 39
    # The body cut short mid-way was resumed, not restarted or lost: the hash is the dropped bytes'.
    assert _receipt(env)["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert Warehouse(settings=env.settings).scan("insurance.settlements").num_rows == 39
    row = Ledger(settings=env.settings).get(file_id)
    assert (row.status, row.attempts, row.last_error) == ("loaded", 1, None)  # retried inside, not rerun


def test_transient_errors_beyond_the_retry_budget_leave_the_file_pending_then_it_loads(fault_proxy):
    env, proxy = fault_proxy
    _drop(env)
    (file_id,) = discover(env.settings)
    outage = proxy.fail("internal", times=1000, method="PUT", path_prefix="/receipts/")

    with pytest.raises(StorageError, match="still failing after"):
        process_file(env.settings, file_id)

    assert len(proxy.requests("PUT", "/receipts/")) == S3_MAX_ATTEMPTS
    row = Ledger(settings=env.settings).get(file_id)
    assert row.status == "pending"
    assert f"s3://receipts/{KEY}.receipt.json" in row.last_error and "InternalError" in row.last_error
    committed = _snapshots(env.settings)  # the rows were committed before the receipt failed

    outage.times = 0  # the store recovers
    assert discover(env.settings) == [file_id]
    receipt = process_file(env.settings, file_id)
    assert receipt.status == "loaded" and receipt.loaded == 39
    assert _snapshots(env.settings) == committed  # the earlier commit was found, not repeated
    assert Warehouse(settings=env.settings).scan("insurance.settlements").num_rows == 39
    row = Ledger(settings=env.settings).get(file_id)
    assert (row.status, row.attempts, row.last_error) == ("loaded", 2, None)


def test_access_denied_is_not_retried_and_leaves_the_file_pending(fault_proxy):
    env, proxy = fault_proxy
    _drop(env)
    (file_id,) = discover(env.settings)
    denied = proxy.fail("denied", times=1000, method="PUT", path_prefix="/receipts/")

    with pytest.raises(StorageError, match="AccessDenied"):
        process_file(env.settings, file_id)

    assert len(proxy.requests("PUT", "/receipts/")) == 1  # permanent: no futile back-off
    row = Ledger(settings=env.settings).get(file_id)
    assert row.status == "pending"
    assert "refused: AccessDenied" in row.last_error and f"s3://receipts/{KEY}.receipt.json" in row.last_error

    denied.times = 0  # the bucket policy is fixed
    assert process_file(env.settings, file_id).status == "loaded"
    assert Warehouse(settings=env.settings).scan("insurance.settlements").num_rows == 39


def test_endpoint_down_for_good_fails_fast_leaves_the_file_pending_and_a_later_run_loads_it(fault_proxy):
    env, proxy = fault_proxy
    _drop(env)
    (file_id,) = discover(env.settings)

    proxy.stop()  # connections refused from now on
    started = time.monotonic()
    # boto3 (StorageError) or pyarrow (OSError), whichever the load asks first, after its retries.
    with pytest.raises((StorageError, OSError)) as info:
        process_file(env.settings, file_id)
    assert time.monotonic() - started < 30  # a bounded back-off, not a hang
    assert "connect" in str(info.value).lower()
    with pytest.raises(StorageError, match="Could not connect"):
        discover(env.settings)  # an unreachable landing bucket is an error, not an empty one
    row = Ledger(settings=env.settings).get(file_id)
    assert row.status == "pending" and "connect" in row.last_error.lower()
    assert env.client.list_objects_v2(Bucket="receipts").get("KeyCount") == 0

    proxy.start()  # same port: the endpoint is back
    assert discover(env.settings) == [file_id]
    assert process_file(env.settings, file_id).status == "loaded"
    assert _receipt(env)["counts"]["loaded"] == 39
    assert [r.status for r in Ledger(settings=env.settings).all()] == ["loaded"]


@pytest.mark.slow
def test_a_missing_receipts_bucket_leaves_the_file_pending_and_the_dag_loads_it_once_created(
    s3_settings, airflow_db
):
    from sanyi.cli import run_dag

    env = s3_settings
    env.client.delete_bucket(Bucket="receipts")
    _drop(env)
    (file_id,) = discover(env.settings)
    with pytest.raises(StorageError, match="NoSuchBucket"):
        process_file(env.settings, file_id)
    row = Ledger(settings=env.settings).get(file_id)
    assert row.status == "pending" and "refused: NoSuchBucket" in row.last_error
    committed = _snapshots(env.settings)

    env.client.create_bucket(Bucket="receipts")
    assert run_dag("sanyi_ingest") == "success"
    row = Ledger(settings=env.settings).get(file_id)
    assert (row.status, row.records_loaded, row.last_error) == ("loaded", 39, None)
    assert _receipt(env)["counts"] == {"read": 39, "loaded": 39, "rejected": 0, "duplicate_records": 0}
    assert _snapshots(env.settings) == committed
    assert Warehouse(settings=env.settings).scan("insurance.settlements").num_rows == 39


def test_s3_bucket_tells_missing_objects_from_refusals(fault_proxy):
    env, proxy = fault_proxy
    receipts = open_bucket("s3://receipts/some/prefix")
    receipts.put("a/b.json", b"{}")
    assert env.client.get_object(Bucket="receipts", Key="some/prefix/a/b.json")["Body"].read() == b"{}"
    assert [o.key for o in receipts.list("a/")] == ["a/b.json"]
    assert receipts.exists("a/b.json") and not receipts.exists("a/c.json")
    with pytest.raises(ObjectNotFound):
        receipts.read_bytes("a/c.json")

    with pytest.raises(ObjectNotFound) as info:
        receipts.read_bytes(f"a/{resident_id(7)}.json")
    assert resident_id(7) not in str(info.value)  # error texts reach logs and the ledger

    fresh = S3Bucket(bucket="fresh", endpoint_url=env.settings.s3_endpoint_url)
    fresh.ensure()
    fresh.ensure()  # idempotent
    assert "fresh" in [b["Name"] for b in env.client.list_buckets()["Buckets"]]

    proxy.fail("denied", times=1000, method="HEAD")
    with pytest.raises(StorageError, match="refused") as info:
        receipts.exists("a/c.json")  # "cannot look" must not pass for "absent"
    assert not isinstance(info.value, ObjectNotFound)


def test_s3_bucket_stores_a_file_and_copies_an_object(fault_proxy, tmp_path):
    env, _ = fault_proxy
    receipts = open_bucket("s3://receipts/some/prefix")
    src = tmp_path / "errors.ndjson"
    src.write_bytes(b'{"line": 1}\n' * 1000)
    receipts.put_file("a/x.errors.ndjson", src)
    receipts.copy("a/x.errors.ndjson", "a/x.0123456789ab.errors.ndjson")
    for key in ("a/x.errors.ndjson", "a/x.0123456789ab.errors.ndjson"):
        body = env.client.get_object(Bucket="receipts", Key=f"some/prefix/{key}")["Body"].read()
        assert body == b'{"line": 1}\n' * 1000
    with pytest.raises(StorageError):
        receipts.copy("a/missing", "a/y")


def test_s3_clients_are_shared_per_endpoint_and_credentials(monkeypatch):
    a = S3Bucket(bucket="landing", endpoint_url="http://127.0.0.1:9")
    b = S3Bucket(bucket="receipts", endpoint_url="http://127.0.0.1:9")
    assert a.client is b.client  # building a client costs ~0.3 s: once per process, not per file
    assert S3Bucket(bucket="landing", endpoint_url="http://127.0.0.1:10").client is not a.client
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "rotated-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "rotated-secret")
    rotated = S3Bucket(bucket="landing", endpoint_url="http://127.0.0.1:9")
    assert rotated.client is not a.client
    assert rotated.client._request_signer._credentials.access_key == "rotated-key"
