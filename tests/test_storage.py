from datetime import UTC, datetime

import pytest

from sanyi.storage import LocalBucket, ObjectNotFound, UnsafeKey, check_key, open_bucket


def test_local_bucket_round_trip_and_listing(tmp_path):
    b = LocalBucket(root=tmp_path / "b")
    when = datetime(2024, 10, 3, 1, 2, 3, tzinfo=UTC)
    b.put("health/divisions/2024-10-01/a.ndjson", b"x", last_modified=when)
    b.put("insurance/settlements/2024-10-01/b.csv", b"yz")
    assert b.read_bytes("health/divisions/2024-10-01/a.ndjson") == b"x"
    listed = {o.key: o for o in b.list()}
    assert set(listed) == {"health/divisions/2024-10-01/a.ndjson", "insurance/settlements/2024-10-01/b.csv"}
    assert listed["health/divisions/2024-10-01/a.ndjson"].last_modified == when
    assert listed["insurance/settlements/2024-10-01/b.csv"].size == 2
    assert [o.key for o in b.list("insurance/")] == ["insurance/settlements/2024-10-01/b.csv"]
    b.delete("insurance/settlements/2024-10-01/b.csv")
    assert not b.exists("insurance/settlements/2024-10-01/b.csv")


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "a//b", "", "a/./b"])
def test_unsafe_keys_are_refused(key, tmp_path):
    with pytest.raises(UnsafeKey):
        check_key(key)
    with pytest.raises(UnsafeKey):
        LocalBucket(root=tmp_path).put(key, b"x")


def test_open_bucket_by_url(tmp_path):
    assert isinstance(open_bucket(str(tmp_path)), LocalBucket)
    assert open_bucket("s3://bucket/prefix").url == "s3://bucket/prefix"


def test_local_bucket_stores_a_file_and_copies_an_object(tmp_path):
    b = LocalBucket(root=tmp_path / "b")
    src = tmp_path / "errors.ndjson"
    src.write_bytes(b'{"line": 1}\n' * 1000)
    b.put_file("r/x.errors.ndjson", src)
    b.copy("r/x.errors.ndjson", "r/x.0123456789ab.errors.ndjson")
    src.write_bytes(b"changed")  # the stored object is a copy, not a link to the local file
    assert b.read_bytes("r/x.errors.ndjson") == b'{"line": 1}\n' * 1000
    assert b.read_bytes("r/x.0123456789ab.errors.ndjson") == b'{"line": 1}\n' * 1000
    assert sorted(o.key for o in b.list()) == ["r/x.0123456789ab.errors.ndjson", "r/x.errors.ndjson"]
    with pytest.raises(ObjectNotFound):
        b.copy("r/missing", "r/y")
    with pytest.raises(UnsafeKey):
        b.put_file("../x", src)
