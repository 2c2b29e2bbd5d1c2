"""``sanyi._checks`` (through ``fastpath._parse_dates``, ``_parse_timestamps``, ``_check_characters_ok``,
``_leading_id_valid``, ``_holds_valid_id`` and ``maskable_ids``) against the reference rules:
``contracts.parse_date`` and ``parse_timestamp``, ``privacy.is_valid_resident_id``, ``find_resident_ids``
and ``mask_resident_ids``, on generated, mutated and hand-made values, nulls and sliced arrays."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanyi import _checks, contracts, fastpath, privacy
from test_differential import SETTINGS, resident_ids, timestamps

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def reference_micros(text: str | None) -> int | None:
    instant = contracts.parse_timestamp(text)
    return None if instant is None else (instant - EPOCH) // timedelta(microseconds=1)


@st.composite
def mutated(draw: st.DrawFn, values: st.SearchStrategy[str], chars: str = "0123456789-:T.Z+zt Xx\n０é") -> str:
    """A value with one character replaced, inserted or deleted, from the characters that matter."""
    text = draw(values)
    at = draw(st.integers(0, len(text)))
    char = draw(st.sampled_from(chars))
    how = draw(st.sampled_from(["replace", "insert", "delete"]))
    if how == "insert":
        return text[:at] + char + text[at:]
    if how == "delete":
        return text[:at] + text[at + 1 :]
    return text[:at] + char + text[at + 1 :]


EDGE_TIMESTAMPS = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+00:01",  # UTC falls before year 1
    "0001-01-01T00:00:00-00:01",
    "9999-12-31T15:59:59.999999Z",  # its UTC+08:00 date is the last there is
    "9999-12-31T16:00:00Z",  # its UTC+08:00 date is not
    "9999-12-31T23:59:59+08:00",
    "0000-06-01T00:00:00Z",
    "0000-12-31T23:30:00-01:00",  # in year 1 in UTC, but written in year 0
    "2024-02-29T12:00:00Z",
    "2023-02-29T12:00:00Z",
    "1900-02-29T12:00:00Z",
    "2000-02-29T12:00:00Z",
    "2024-04-31T12:00:00Z",
    "2024-13-01T12:00:00Z",
    "2024-00-10T12:00:00Z",
    "2024-01-00T12:00:00Z",
    "2024-01-01T24:00:00Z",
    "2024-01-01T23:60:00Z",
    "2024-01-01T23:59:60Z",
    "2024-01-01T00:00:00+24:00",
    "2024-01-01T00:00:00+23:59",
    "2024-01-01T00:00:00-23:59",
    "2024-01-01T00:00:00+23:60",
    "2024-01-01T00:00:00+0800",
    "2024-01-01T00:00:00.Z",
    "2024-01-01T00:00:00.1234567890123Z",  # truncated to microseconds
    "2024-01-01T00:00:00.5+08:00",
    "2024-01-01T00:00:00.000001-05:30",
    "2024-01-01t00:00:00Z",
    "2024-01-01T00:00:00z",
    "2024-01-01T00:00:00",
    "2024-01-01 00:00:00Z",
    "2024-01-01T00:00:00Z\n",
    " 2024-01-01T00:00:00Z",
    "2024-01-01T00:00:0０Z",
    "+2024-01-01T00:00:00Z",
    "2024-1-01T00:00:00Z",
    "",
]


def assert_timestamps_agree(texts: list[str | None]) -> None:
    for arr in (pa.array(texts, pa.string()), pa.array(["x", *texts], pa.string()).slice(1)):
        us, ok = fastpath._parse_timestamps(arr)
        expected = [reference_micros(t) for t in texts]
        assert us.to_pylist() == expected
        assert ok.to_pylist() == [e is not None for e in expected]


def test_hand_made_timestamps_agree_with_the_reference() -> None:
    assert_timestamps_agree([*EDGE_TIMESTAMPS, None])
    assert reference_micros("9999-12-31T15:59:59.999999Z") is not None  # the edges are edges
    assert reference_micros("9999-12-31T16:00:00Z") is None


def test_generated_timestamps_agree_with_the_reference() -> None:
    values = st.one_of(
        timestamps(),
        mutated(timestamps()),
        mutated(st.sampled_from(EDGE_TIMESTAMPS)),
        st.text(max_size=30),
        st.none(),
    )

    @SETTINGS
    @given(texts=st.lists(values, max_size=20))
    def run(texts: list[str | None]) -> None:
        assert_timestamps_agree(texts)

    run()


EDGE_DATES = [
    "0001-01-01",
    "0000-12-31",
    "9999-12-31",
    "2024-02-29",
    "2023-02-29",
    "1900-02-29",
    "2000-02-29",
    "2024-04-31",
    "2024-13-01",
    "2024-00-01",
    "2024-01-00",
    "2024-1-01",
    "2024-01-01 ",
    "2024-01-01T00:00:00Z",
    "2024/01/01",
    "２024-01-01",
    "",
]


def assert_dates_agree(texts: list[str | None]) -> None:
    for arr in (pa.array(texts, pa.string()), pa.array(["x", *texts], pa.string()).slice(1)):
        days, ok = fastpath._parse_dates(arr)
        expected = [None if (d := contracts.parse_date(t)) is None else (d - date(1970, 1, 1)).days for t in texts]
        assert days.to_pylist() == expected
        assert ok.to_pylist() == [e is not None for e in expected]


def test_dates_agree_with_the_reference() -> None:
    assert_dates_agree([*EDGE_DATES, None])
    values = st.one_of(
        st.dates().map(date.isoformat),
        mutated(st.dates().map(date.isoformat)),
        mutated(st.sampled_from(EDGE_DATES)),
        st.text(max_size=12),
        st.none(),
    )

    @SETTINGS
    @given(texts=st.lists(values, max_size=20))
    def run(texts: list[str | None]) -> None:
        assert_dates_agree(texts)

    run()


@st.composite
def texts_with_ids(draw: st.DrawFn) -> str:
    """Text around resident ids (valid or one character off), digits and X next to them or not."""
    parts = draw(
        st.lists(
            st.one_of(
                resident_ids(),
                mutated(resident_ids()),
                resident_ids().map(lambda r: r[:17] + "x"),
                st.from_regex(r"[0-9]{1,20}", fullmatch=True),
                st.sampled_from(["X", "x", "-", " ", "S", "é", ""]),
            ),
            max_size=6,
        )
    )
    return "".join(parts)


def assert_ids_found_as_the_reference_finds_them(texts: list[str | None]) -> None:
    for arr in (pa.array(texts, pa.string()), pa.array(["x", *texts], pa.string()).slice(1)):
        assert fastpath._holds_valid_id(arr).to_pylist() == [
            t is not None and bool(privacy.find_resident_ids(t)) for t in texts
        ]
        # What masking would change: those ids, and ids whose check character is a lower-case x.
        assert fastpath.maskable_ids(arr).to_pylist() == [
            t is not None and privacy.mask_resident_ids(t) != t for t in texts
        ]
    for t in texts:
        if t is not None:
            assert fastpath.maskable_text(t) == (privacy.mask_resident_ids(t) != t)


def test_finding_ids_agrees_with_the_reference() -> None:
    valid = "11010519491231002X"
    cases = [valid, f"a{valid}b", f"1{valid}", f"{valid}1", valid[:17] + "x", f"{valid}{valid}", f"{valid}X"]
    assert_ids_found_as_the_reference_finds_them(cases)
    assert [bool(privacy.find_resident_ids(c)) for c in cases] == [True, True, False, False, False, True, True]
    lower = "11010519491231002x"
    cases = [lower, f"a{lower}", f"{lower}1", f"1{lower}", lower.upper(), "11010519491231002Y", valid[:17]]
    assert_ids_found_as_the_reference_finds_them(cases)
    assert fastpath.maskable_ids(pa.array(cases)).to_pylist() == [True, True, False, False, True, False, False]

    @SETTINGS
    @given(texts=st.lists(st.one_of(texts_with_ids(), st.text(max_size=30), st.none()), max_size=20))
    def run(texts: list[str | None]) -> None:
        assert_ids_found_as_the_reference_finds_them(texts)

    run()


def test_generated_resident_ids_agree_with_the_reference() -> None:
    values = st.one_of(
        resident_ids(),
        mutated(resident_ids()),
        st.from_regex(r"[0-9]{17}[0-9Xx]", fullmatch=True),
        st.text(max_size=20),
        st.none(),
    )

    @SETTINGS
    @given(texts=st.lists(values, max_size=20), tail=st.sampled_from(["", "1", "X", "é", " "]))
    def run(texts: list[str | None], tail: str) -> None:
        for arr in (pa.array(texts, pa.string()), pa.array(["x", *texts], pa.string()).slice(1)):
            assert fastpath._check_characters_ok(arr).to_pylist() == [
                privacy.is_valid_resident_id(t) for t in texts
            ]
        # The leading 18 characters of a longer value (how ids are found inside other fields).
        longer = [None if t is None else t + tail for t in texts]
        assert fastpath._leading_id_valid(pa.array(longer, pa.string())).to_pylist() == [
            t is not None and privacy.is_valid_resident_id(t[:18]) for t in longer
        ]

    run()


def test_an_id_cut_short_is_not_completed_by_the_next_value() -> None:
    # The values lie end to end in one buffer: a check that read past a 17-digit value would find the
    # next value's first character there.
    valid = "11010519491231002X"
    assert privacy.is_valid_resident_id(valid)
    arr = pa.array([valid[:17], valid[17:] + "1", valid], pa.string())
    assert fastpath._leading_id_valid(arr).to_pylist() == [False, False, True]


def test_empty_and_all_null_arrays() -> None:
    for arr in (pa.array([], pa.string()), pa.array([None, None], pa.string())):
        for parse in (fastpath._parse_timestamps, fastpath._parse_dates):
            values, ok = parse(arr)
            assert values.to_pylist() == [None] * len(arr) and ok.to_pylist() == [False] * len(arr)
        assert fastpath._check_characters_ok(arr).to_pylist() == [False] * len(arr)
        assert fastpath._holds_valid_id(arr).to_pylist() == [False] * len(arr)
        assert fastpath.maskable_ids(arr).to_pylist() == [False] * len(arr)


def test_malformed_calls_are_refused_before_any_byte_is_read() -> None:
    data = b"2024-01-01T00:00:00Z"
    good = pa.array([0, len(data)], pa.int32()).buffers()[1]
    bad = {
        "more strings than offsets": (good, data, 0, 2),
        "offset past the offsets": (good, data, 1, 1),
        "negative offset": (good, data, -1, 1),
        "beyond the data": (good, data[:-1], 0, 1),
        "out of order": (pa.array([5, 2], pa.int32()).buffers()[1], data, 0, 1),
        "negative": (pa.array([-1, 2], pa.int32()).buffers()[1], data, 0, 1),
    }
    for check in (_checks.timestamps, _checks.dates, _checks.leading_ids, _checks.holding_ids, _checks.maskable_ids):
        for name, args in bad.items():
            with pytest.raises(ValueError):
                check(*args)
                pytest.fail(name)
    valid, micros = _checks.timestamps(good, data, 0, 1)
    assert valid == b"\x01" and int.from_bytes(micros, "little") == 1704067200 * 10**6


def arrow_grid(x: pa.Array, places: int) -> tuple[list, list, list]:
    """What the grid was, in Arrow's kernels: (multiple, exact, x · 10^places where exact)."""
    import pyarrow.compute as pc

    scale = 10.0**places
    rounded = pc.round(pc.multiply(x, scale))
    multiple = pc.equal(pc.divide(rounded, scale), x).fill_null(False)
    exact = pc.and_(multiple, pc.less(pc.abs(x), 1e15 / scale).fill_null(False))
    return multiple.to_pylist(), exact.to_pylist(), pc.cast(rounded, pa.int64(), safe=False).to_pylist()


# Numbers as NDJSON carries them to the grid: at most 15 digits, a few decimals, either sign; with the
# halves that rounding to even decides and values near the 1e15 bound.
grid_numbers = st.one_of(
    st.builds(lambda i, k: float(Decimal(i).scaleb(-k)), st.integers(-(10**15) + 1, 10**15 - 1), st.integers(0, 6)),
    st.sampled_from([0.0, -0.0, 0.5, 1.5, 2.5, -2.5, 0.005, 0.015, 0.125, 1e15, -1e15, 999999999999.99, 1e13]),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e16, max_value=1e16),
)


@given(st.lists(st.one_of(st.none(), grid_numbers), max_size=40), st.integers(0, 6), st.integers(0, 3))
def test_the_grid_is_what_arrows_kernels_give(values: list[float | None], places: int, cut: int) -> None:
    x = pa.array(values, pa.float64()).slice(min(cut, len(values)))
    grid = fastpath._Grid.of(x, places)
    multiple, exact, scaled = arrow_grid(x, places)
    assert grid.multiple.to_pylist() == multiple
    assert grid.exact.to_pylist() == exact
    assert grid.scaled.to_pylist() == [
        None if v is None else s if e else 0 for v, e, s in zip(x.to_pylist(), exact, scaled, strict=True)
    ]


@given(st.lists(st.one_of(st.none(), grid_numbers), max_size=40), st.integers(0, 4))
def test_grid_decimals_are_the_numbers_as_written(values: list[float | None], places: int) -> None:
    x = pa.array(values, pa.float64())
    grid = fastpath._Grid.of(x, places)
    keep = grid.multiple  # the kept rows passed the places check
    to = pa.decimal128(18, places)
    got = grid.decimals(keep, to)
    kept = [v for v, k in zip(values, keep.to_pylist(), strict=True) if k]
    if grid.exact.true_count != grid.multiple.true_count:
        assert got is None  # a multiple too large for int64 cents: the caller casts instead
        return
    assert got is not None and got.type == to
    assert got.to_pylist() == [Decimal(repr(v)).quantize(Decimal(1).scaleb(-places)) for v in kept]


def test_grid_signs_nulls_and_slices() -> None:
    x = pa.array([None, -12.34, 5.0, -0.01, 0.015, None, -999999999999.99], pa.float64())
    grid = fastpath._Grid.of(x.slice(1), 2)
    assert grid.multiple.to_pylist() == [True, True, True, False, False, True]
    assert grid.scaled.to_pylist() == [-1234, 500, -1, 0, None, -99999999999999]
    got = grid.decimals(grid.multiple, pa.decimal128(18, 2))
    assert got.to_pylist() == [Decimal("-12.34"), Decimal("5.00"), Decimal("-0.01"), Decimal("-999999999999.99")]
    none = fastpath._Grid.of(pa.array([], pa.float64()), 2)
    assert len(none.decimals(none.multiple, pa.decimal128(18, 2))) == 0
    one = b"\0" * 8
    for bad in ((b"", one, 0, 2, 2), (b"", one, 0, 1, 16), (b"", one, -1, 1, 2), (b"\0", one * 10, 0, 9, 2)):
        with pytest.raises(ValueError):
            _checks.grid(*bad)
    with pytest.raises(ValueError):
        _checks.widened(b"\0" * 8, 2)


def test_a_missing_build_says_how_to_build_it() -> None:
    import sanyi

    with pytest.raises(ImportError, match=r"sanyi\._nowhere is not built: install the package \(`make venv`"):
        sanyi.extension("_nowhere")
