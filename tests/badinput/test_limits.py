"""Size limits without the DAG: the 100 MB line costs bounded memory, an oversize object is never read.

The corpus run (test_corpus.py) checks the same files' receipts; these tests measure what the corpus
cannot: peak memory in a fresh process, and the default 1 GiB limit with no configuration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

import sanyi
from badinput.corpus import HUGE_LINE_BYTES, SPARSE_BYTES, _huge_line, _sparse
from sanyi.ingest import MAX_RECORD_CHARS, discover, process_file
from sanyi.ledger import Ledger
from sanyi.storage import LocalBucket, open_bucket

_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from sanyi.config import Settings
    from sanyi.ingest import discover, process_file
    from sanyi.warehouse import Warehouse

    settings = Settings.from_env()
    Warehouse(settings=settings).ensure_all()  # every import and the catalog warmed up before the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    receipts = [process_file(settings, i) for i in discover(settings)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = receipts[0]
    print(json.dumps({"base_kib": base, "peak_kib": peak, "status": r.status,
                      "counts": [r.read, r.loaded, r.rejected, r.duplicate_records]}))
    """
)


def test_a_100mb_line_is_one_rejected_record_and_memory_stays_bounded(settings, tmp_path):
    key = "insurance/settlements/2024-10-01/huge.ndjson"
    path = Path(settings.landing_url) / key
    path.parent.mkdir(parents=True)
    _huge_line(path)
    assert path.stat().st_size > HUGE_LINE_BYTES
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANYI_")}
    env.update(
        SANYI_HOME=str(settings.home),
        SANYI_PSEUDONYM_KEY=settings.pseudonym_key.decode(),
        PYTHONPATH=str(Path(sanyi.__file__).parents[1]),
    )
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "loaded_with_rejections"
    assert result["counts"] == [3, 2, 1, 0]
    growth_mib = (result["peak_kib"] - result["base_kib"]) / 1024
    # The file is held once as bytes and once as text (ASCII: one byte a character); a split, a strip, a
    # parsed 100 MB string or a quarantined copy would each add another 100 MB or more.
    assert growth_mib < 2.6 * HUGE_LINE_BYTES / 2**20, f"peak grew by {growth_mib:.0f} MiB"

    errors = open_bucket(settings.receipts_url).read_bytes(key + ".errors.ndjson").decode().splitlines()
    assert [json.loads(e)["rule"] for e in errors] == ["record_too_large"]
    assert f"limit of {MAX_RECORD_CHARS}" in json.loads(errors[0])["message"]


def test_an_oversize_sparse_object_is_refused_by_the_default_limit_without_being_read(settings, monkeypatch):
    assert settings.max_file_bytes == 1 << 30 < SPARSE_BYTES  # the shipped default, nothing configured
    key = "insurance/settlements/2024-10-01/sparse.ndjson"
    path = Path(settings.landing_url) / key
    path.parent.mkdir(parents=True)
    _sparse(path)
    os.utime(path, (datetime(2024, 10, 2, tzinfo=UTC).timestamp(),) * 2)
    assert path.stat().st_size == SPARSE_BYTES and path.stat().st_blocks == 0  # sparse: no disk used

    opened: list[str] = []
    real_open = LocalBucket.open

    def spying_open(self, k):
        opened.append(k)
        if k == key:
            raise AssertionError("the oversize object was opened")
        return real_open(self, k)

    monkeypatch.setattr(LocalBucket, "open", spying_open)
    (file_id,) = discover(settings)
    receipt = process_file(settings, file_id)
    assert opened == []
    assert receipt.status == "rejected"
    assert f"over the platform limit of {1 << 30} bytes" in receipt.reason
    assert receipt.sha256 is None  # never hashed, so no digest is claimed
    (row,) = Ledger(settings=settings).all()
    assert row.sha256.startswith("unhashed-") and row.status == "rejected"
    # A second discovery recognises the object by key, size and arrival: still never read.
    assert discover(settings) == []
    assert opened == []


@pytest.mark.parametrize(
    "key",
    [
        "../escape.ndjson",
        "insurance/../../etc/passwd",
        "/abs/key.ndjson",
        "insurance//x.ndjson",
        "insurance/settlements/./x.ndjson",
        "nul\x00byte.ndjson",
        "",
    ],
)
def test_keys_that_could_escape_the_bucket_are_refused_by_the_storage_layer(settings, key):
    from sanyi.storage import UnsafeKey

    landing = open_bucket(settings.landing_url)
    with pytest.raises(UnsafeKey):
        landing.put(key, b"{}\n")
    with pytest.raises(UnsafeKey):
        landing.read_bytes(key)
    assert list(landing.list()) == []
    assert not (Path(settings.landing_url).parent / "escape.ndjson").exists()
