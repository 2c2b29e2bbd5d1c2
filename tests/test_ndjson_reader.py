"""The C reader of plain NDJSON lines (``sanyi._ndjson``, through ``fastpath._read_plain``).

It may decline any line (Arrow and the reference then read it, as before), but a line it reads must come
out exactly as Arrow's reader gives it, and as the reference reader reads it. The end-to-end agreement of
the whole fast path with the reference is ``test_differential.py``'s, which now goes through this reader.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanyi import _ndjson, contracts, fastpath
from sanyi.contracts import get_dataset
from test_contracts import VALID
from test_differential import PAIRS, SETTINGS, SETTLE, dump, line_with, ndjson_texts
from test_privacy import assert_lets_other_threads_run


def read(ds: contracts.Dataset, lines: list[str]) -> tuple[pa.Table, list[int], list[int]]:
    data = "".join(line + "\n" for line in lines).encode()
    arr = fastpath._line_array(data, fastpath.line_starts(data))
    table, plain, declined = fastpath._read_plain(fastpath._plan(ds), arr)
    for column in table.columns:
        column.validate(full=True)
    return table, plain.to_pylist(), declined.to_pylist()


def signed(value: Any) -> Any:
    """A float with its sign (-0.0 is not 0.0 here), lists and other values as they are."""
    if isinstance(value, float):
        return (value, math.copysign(1.0, value))
    if isinstance(value, list):
        return [signed(v) for v in value]
    return value


def rows(table: pa.Table) -> list[dict[str, Any]]:
    return [{k: signed(v) for k, v in row.items()} for row in table.to_pylist()]


def assert_read_as_arrow_and_the_reference_read(ds: contracts.Dataset, lines: list[str]) -> list[int]:
    """Every line the C reader reads: the row Arrow's reader gives for it alone, and the values the
    reference reader gives. Returns the indices of the lines read."""
    table, plain, declined = read(ds, lines)
    assert sorted(plain + declined) == list(range(len(lines)))
    assert plain == sorted(plain) and declined == sorted(declined)
    got = rows(table)
    plan = fastpath._plan(ds)
    for k, i in enumerate(plain):
        arrow = fastpath._read_json(plan, pa.py_buffer((lines[i] + "\n").encode()))
        assert rows(arrow) == [got[k]], lines[i]
        record = contracts.parse_json_record(lines[i])
        for name in ds.fields:
            expected, value = record.get(name), table.column(name)[k].as_py()
            if isinstance(expected, (int, Decimal)) and not isinstance(expected, bool):
                expected = float(expected)  # correctly rounded, as a decimal parse is (and "-0" is 0)
            assert value == expected, (name, lines[i])
    return plain


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}.{n}" for a, n in PAIRS])
def test_lines_read_in_c_are_what_arrow_and_the_reference_read(pair: tuple[str, str]) -> None:
    ds = get_dataset(*pair)

    @SETTINGS
    @given(text=ndjson_texts(ds))
    def run(text: str) -> None:
        assert_read_as_arrow_and_the_reference_read(ds, text.split("\n"))

    run()


def test_numbers_of_fifteen_digits_are_read_exactly() -> None:
    # The reader's one piece of arithmetic: an integer of at most 15 digits over a power of ten, which
    # IEEE division rounds as a correct decimal parse does. Compared with Arrow and float(text).
    ds = get_dataset(*SETTLE)
    texts = st.from_regex(r"-?(0|[1-9][0-9]{0,14})(\.[0-9]{1,14})?", fullmatch=True).filter(
        lambda t: sum(c.isdigit() for c in t) <= 15
    )

    @SETTINGS
    @given(numbers=st.lists(texts, min_size=1, max_size=20))
    def run(numbers: list[str]) -> None:
        lines = [line_with(SETTLE, "unit_price", t) for t in numbers]
        assert assert_read_as_arrow_and_the_reference_read(ds, lines) == list(range(len(lines)))
        table, _, _ = read(ds, lines)
        assert [signed(v) for v in table.column("unit_price").to_pylist()] == [signed(float(t)) for t in numbers]

    run()


# Each: the raw JSON of the settlement's unit_price (a number field), and whether the line is plain.
NUMBERS = [
    ("12.5", True),
    ("-0", True),  # -0.0, as Arrow reads it
    ("-0.0", True),
    ("0", True),
    ("999999999999999", True),  # 15 digits
    ("0.00000000000001", True),  # 15 digits, the leading zero counted
    ("1000000000000000", False),  # 16 digits: a float may not hold such a number exactly
    ("0.000000000000001", False),
    ("1e2", False),
    ("1E-2", False),
    ("01", False),  # not JSON
    ("1.", False),
    (".5", False),
    ("+1", False),
    ("-", False),
    ("NaN", False),
    ("Infinity", False),
    ("nul", False),
    ("null", True),
    ('"12.5"', False),  # a string where a number belongs: Arrow and the reference say so
    ("true", False),
    ("[1]", False),
]


@pytest.mark.parametrize(("raw", "plain"), NUMBERS, ids=[r for r, _ in NUMBERS])
def test_a_number_is_read_only_when_a_float_holds_it_exactly(raw: str, plain: bool) -> None:
    ds = get_dataset(*SETTLE)
    lines = [line_with(SETTLE, "unit_price", raw)]
    assert assert_read_as_arrow_and_the_reference_read(ds, lines) == ([0] if plain else [])


def _plain_sample() -> str:
    return dump(VALID[SETTLE])


EVERY_ESCAPE = r'"\" \\ \/ \b \f \n \r \t \u00e9 \u7cd6 \ud83d\ude00 \u001F"'
# The code points on either side of each UTF-8 length, and the first and last pairs of surrogates.
UTF8_EDGES = r'"\u0001\u007F\u0080\u07FF\u0800\uFFFF\uD800\uDC00\uDBFF\uDFFF"'
# Each: a settlement line as written, and whether the reader reads it (else Arrow and the reference do).
LINES = [
    ("sample", lambda s: s, True),
    ("no spaces", lambda s: json.dumps(json.loads(s), separators=(",", ":")), True),
    ("tabs around members", lambda s: s.replace(", ", ",\t").replace(": ", " :\t"), True),
    ("members in another order", lambda s: json.dumps(dict(reversed(list(json.loads(s).items())))), True),
    ("crlf", lambda s: s + "\r", True),
    ("empty object", lambda s: "{}", True),
    ("one member", lambda s: '{"line_no": 1}', True),
    ("non-ASCII text", lambda s: s.replace('"E11.9"', '"E11.9 糖尿病"'), True),
    ("escaped quote", lambda s: s.replace('"E11.9"', '"E11.9\\""'), True),
    ("escaped letters", lambda s: s.replace('"E11.9"', '"\\u0045\\u0031\\u0031.9"'), True),
    ("every escape", lambda s: s.replace('"E11.9"', EVERY_ESCAPE), True),
    ("the edges of UTF-8", lambda s: s.replace('"E11.9"', UTF8_EDGES), True),
    ("escaped text only", lambda s: s.replace('"E11.9"', '"\\u7cd6\\u5c3f\\u75c5"'), True),
    ("a lone high surrogate", lambda s: s.replace('"E11.9"', '"\\ud83d x"'), False),
    ("a lone low surrogate", lambda s: s.replace('"E11.9"', '"\\ude00"'), False),
    ("two high surrogates", lambda s: s.replace('"E11.9"', '"\\ud83d\\ud83d"'), False),
    ("an escaped NUL", lambda s: s.replace('"E11.9"', '"a\\u0000"'), False),
    ("an escape that is not JSON", lambda s: s.replace('"E11.9"', '"a\\x41"'), False),
    ("a short \\u escape", lambda s: s.replace('"E11.9"', '"a\\u12"'), False),
    ("a \\u escape without hex", lambda s: s.replace('"E11.9"', '"a\\u12g4"'), False),
    ("a backslash at the end", lambda s: s.replace('"E11.9"', '"a\\'), False),
    ("tab inside a string", lambda s: s.replace('"E11.9"', '"E11.9\t"'), False),
    ("bare CR", lambda s: s.replace(", ", ",\r ", 1), False),
    ("space before the object", lambda s: " " + s, False),
    ("space after the object", lambda s: s + " ", False),
    ("two objects", lambda s: s + s, False),
    ("a member twice", lambda s: s[:-1] + ', "line_no": 2}', False),
    ("a member outside the contract", lambda s: s[:-1] + ', "note": "x"}', False),
    ("an escaped member name", lambda s: s.replace('"line_no"', '"line\\u005fno"'), False),
    ("a nested object", lambda s: s.replace('"E11.9"', '{"code": "E11.9"}'), False),
    ("truncated", lambda s: s[:-1], False),
    ("trailing comma", lambda s: s[:-1] + ",}", False),
    ("blank", lambda s: "", False),
    ("null line", lambda s: "null", False),
    ("array line", lambda s: "[" + s + "]", False),
]


@pytest.mark.parametrize(("name", "edit", "plain"), LINES, ids=[n for n, _, _ in LINES])
def test_which_lines_are_plain(name: str, edit: Any, plain: bool) -> None:
    ds = get_dataset(*SETTLE)
    sample = _plain_sample()
    lines = [edit(sample)]
    assert (lines[0] == sample) == (name == "sample")
    assert assert_read_as_arrow_and_the_reference_read(ds, lines) == ([0] if plain else []), name


def test_a_list_field_reads_strings_and_null_and_declines_the_rest() -> None:
    ds = get_dataset(*SETTLE)
    cases = {
        '["8123", "81234567890123456789"]': True,
        "[]": True,
        "[ ]": True,
        "null": True,
        '[null]': False,
        "[1]": False,
        '["a",]': False,
        '["a\\n", "\\u7cd6"]': True,
        '["a\\u0000"]': False,
        '"8123"': False,
    }
    lines = [line_with(SETTLE, "trace_codes", raw) for raw in cases]
    plain = assert_read_as_arrow_and_the_reference_read(ds, lines)
    assert plain == [i for i, ok in enumerate(cases.values()) if ok]


def test_a_line_over_the_size_limit_is_declined(monkeypatch) -> None:
    # The reference says such a line is too long; the reader leaves it to the reference.
    ds = get_dataset(*SETTLE)
    sample = _plain_sample()
    monkeypatch.setattr(fastpath, "_max_line", lambda: len(sample))
    assert read(ds, [sample, sample + "\r"])[1] == [0]  # the CR of CRLF counts, as the reference counts it


def test_a_chunk_of_plain_lines_is_read_without_arrow(monkeypatch) -> None:
    # What the reader is for: Arrow's reader is not called for plain lines, and the chunk's outcome is the
    # reference's (the agreement on every kind of line is test_differential's).
    ds = get_dataset(*SETTLE)
    calls: list[int] = []
    real = fastpath._read_json
    monkeypatch.setattr(fastpath, "_read_json", lambda plan, buf: calls.append(len(buf)) or real(plan, buf))
    lines = [line_with(SETTLE, "line_no", str(i + 1)) for i in range(50)]
    lines[7] = lines[7] + " "  # declined (a space after the object): Arrow reads this one
    result = fastpath.check_ndjson(ds, ("\n".join(lines) + "\n").encode(), 1)
    assert calls == [len(lines[7]) + 1]
    assert result.good.num_rows == 50 and not result.rejected and result.fallback == 0
    assert result.good.column("_line_no").to_pylist() == list(range(1, 51))  # back in the file's order


def test_line_starts() -> None:
    def reference(data: bytes) -> list[int]:
        starts = [0] + [i + 1 for i, b in enumerate(data) if b == ord("\n")]
        return starts if starts[-1] == len(data) else [*starts, len(data)]

    @SETTINGS
    @given(data=st.binary(max_size=40) | st.lists(st.sampled_from([b"\n", b"ab", b"\r\n", b"{}"])).map(b"".join))
    def run(data: bytes) -> None:
        assert fastpath.line_starts(data).tolist() == reference(data)

    run()
    assert fastpath.line_starts(memoryview(b"a\nb")).tolist() == [0, 2, 3]
    lines = fastpath._line_array(b"a\nbc\n", fastpath.line_starts(b"a\nbc\n"))  # offsets Arrow reads as they are
    lines.validate(full=True)
    assert lines.to_pylist() == ["a\n", "bc\n"]


def test_finding_line_starts_lets_other_threads_run() -> None:
    data = (b"x" * 60 + b"\n") * 4_000_000
    assert_lets_other_threads_run(lambda: _ndjson.line_starts(data), "line breaks")


def test_malformed_calls_are_refused_before_any_byte_is_read() -> None:
    names, kinds = (b"a",), b"s"
    data = b'{"a": "x"}\n'
    good = pa.array([0, len(data)], pa.int32()).buffers()[1]
    with pytest.raises(ValueError):
        _ndjson.read_plain_lines(names, b"sf", good, data, 0, 1, 100)  # a kind too many
    with pytest.raises(ValueError):
        _ndjson.read_plain_lines(names, b"x", good, data, 0, 1, 100)  # no such kind
    with pytest.raises(ValueError):
        _ndjson.read_plain_lines((), b"", good, data, 0, 1, 100)
    with pytest.raises(TypeError):
        _ndjson.read_plain_lines(("a",), kinds, good, data, 0, 1, 100)  # names as str
    bad_offsets = {
        "more lines than offsets": (good, 0, 2),
        "offset past the offsets": (good, 1, 1),
        "negative offset": (good, -1, 1),
        "beyond the data": (pa.array([0, len(data) + 1], pa.int32()).buffers()[1], 0, 1),
        "out of order": (pa.array([5, 2], pa.int32()).buffers()[1], 0, 1),
        "negative": (pa.array([-1, 2], pa.int32()).buffers()[1], 0, 1),
    }
    for name, (offsets, offset, length) in bad_offsets.items():
        with pytest.raises(ValueError):
            _ndjson.read_plain_lines(names, kinds, offsets, data, offset, length, 100)
            pytest.fail(name)
    plain, declined, columns = _ndjson.read_plain_lines(names, kinds, good, data, 0, 1, 100)
    assert (plain, declined) == ((0).to_bytes(8, "little"), b"")
    assert columns == [(b"\x01", (0).to_bytes(4, "little") + (1).to_bytes(4, "little"), b"x")]


def test_the_reader_lets_other_threads_run_while_it_reads() -> None:
    # Why it is in C: the validator threads read chunks side by side, and the loader goes on meanwhile.
    ds = get_dataset(*SETTLE)
    data = ((_plain_sample() + "\n") * 200_000).encode()  # about 90 MB: 0.1 s of reading here
    arr = fastpath._line_array(data, fastpath.line_starts(data))
    names, kinds = fastpath._reader_fields(ds)
    _, offsets, buf = arr.buffers()
    assert_lets_other_threads_run(
        lambda: _ndjson.read_plain_lines(names, kinds, offsets, buf, 0, len(arr), 10**6), "reading"
    )


def test_joined_is_the_head_and_the_start_of_the_body() -> None:
    for head, body, length in [(b"", b"", 0), (b"ab", b"cd\nef", 3), (b"", b"x\n", 2), (b"a" * 5, b"", 0)]:
        assert _ndjson.joined(head, body, length) == head + body[:length]
    assert _ndjson.joined(b"a", memoryview(b"bc"), 1) == b"ab"
    for length in (-1, 3):
        with pytest.raises(ValueError):
            _ndjson.joined(b"a", b"bc", length)


@SETTINGS
@given(blocks=st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\0", b"\n")), max_size=8))
def test_chunks_are_cut_after_line_breaks_and_lose_no_byte(blocks: list[bytes]) -> None:
    from sanyi.ingest import _line_chunks

    pieces = list(_line_chunks(iter(blocks)))
    assert b"".join(pieces) == b"".join(blocks)
    assert all(p and p.endswith(b"\n") for p in pieces[:-1])
    assert sum(b.count(b"\n") for b in blocks) == sum(p.count(b"\n") for p in pieces)


def test_joining_a_chunk_lets_other_threads_run() -> None:
    # Why it is in C: the file's reader cuts each 16 MiB chunk after its last line break while the
    # validators run; bytes.join of a memoryview keeps the GIL through the copy.
    body = b"x" * (256 << 20)
    assert_lets_other_threads_run(lambda: _ndjson.joined(b"head", body, len(body) - 1), "copying")


def test_lines_arrow_must_not_be_given_are_found_in_one_pass() -> None:
    # A bare CR would end Arrow's row mid-line; a 16-digit number or an exponent is not exact in a float64; a
    # line that does not open an object would shift rows against lines. Lines with a CR before their line
    # break, numbers of 15 digits and decimals are given to Arrow.
    plan = fastpath._plan(get_dataset("insurance", "settlements"))
    lines = {
        '{"line_no": 1}\n': False,
        '{"line_no": 1}\r\n': False,
        '{"amount": 123456789012.345}\n': False,
        '{"line_no":\r1}\n': True,
        '{"line_no": 1234567890123456}\n': True,
        '{"amount": 1e3}\n': True,
        "[1]\n": True,
        "\n": True,
    }
    got = fastpath._structural_suspects(plan, pa.array(list(lines), pa.string()))
    assert got.to_pylist() == list(lines.values())
