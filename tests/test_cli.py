"""``sanyi validate``: the agencies' pre-flight check, against what the platform does with the same file."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from samples import ndjson, settlement
from sanyi.cli import main
from sanyi.storage import open_bucket
from test_ingest import drop, run

KEY = "insurance/settlements/2024-10-01/pre.ndjson"


def preflight(path: Path, key: str = KEY) -> tuple[int, list[str]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["validate", str(path), "--as", key])
    return code, out.getvalue().split("\n")[:-1]


def test_a_valid_file_passes(settings, tmp_path) -> None:
    path = tmp_path / "pre.ndjson"
    path.write_bytes(ndjson([settlement(i) for i in (1, 2, 3)]))
    assert preflight(path) == (0, ["3 records, 3 valid, 0 would be rejected"])


def test_the_errors_printed_are_the_platforms_errors_file(settings, tmp_path) -> None:
    # The pre-flight must tell an agency what the platform will say: the same lines as the errors file.
    # One value quotes line separators (U+2028, U+0085) in its message: each error stays on one line.
    records = [
        settlement(1),
        settlement(2, amount=21.00),  # 3 × 6.665 = 19.995 → 20.00
        settlement(3, settlement_id="S\u2028x\x85"),
        settlement(4, quantity="3"),
    ]
    data = ndjson(records)
    path = tmp_path / "pre.ndjson"
    path.write_bytes(data)
    code, lines = preflight(path)
    assert code == 1
    assert lines[-1] == "4 records, 1 valid, 3 would be rejected"

    drop(settings, KEY, data)
    run(settings)
    errors_file = open_bucket(settings.receipts_url).read_bytes(KEY + ".errors.ndjson").decode()
    assert lines[:-1] == errors_file.splitlines()
    errors = [json.loads(line) for line in lines[:-1]]
    assert [(e["line"], e["path"]) for e in errors] == [(2, "/amount"), (3, "/settlement_id"), (4, "/quantity")]
    assert "S\u2028x\x85" in errors[1]["message"]
    assert "\u2028" not in errors_file and "\x85" not in errors_file  # escaped: \\u2028, \\u0085


def test_a_file_the_platform_would_reject_whole_exits_2(settings, tmp_path) -> None:
    path = tmp_path / "pre.ndjson"
    path.write_bytes(b"\xff\xfe not utf-8\n")
    code, lines = preflight(path)
    assert code == 2
    assert lines[0].startswith("REJECTED: file is not valid UTF-8")
