"""``sanyi.patterns`` (pattern keywords as byte DFAs) and ``sanyi._checks.matches`` (through
``fastpath._matches``) against the reference, Python's ``re.search`` as jsonschema applies it, and against
RE2, on generated, mutated and arbitrary values, for every pattern of the contracts and for hand-made
patterns that reach each construct the compiler handles."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanyi import _checks, contracts, fastpath, patterns
from test_checks import mutated
from test_differential import SETTINGS

END = "(?![\\s\\S])"


def contract_patterns() -> list[str]:
    """Every ``pattern`` keyword of every contract (fields and list items), as the schemas write it."""
    found: set[str] = set()
    for ds in contracts.load_datasets().values():
        for spec in ds.schema["properties"].values():
            for where in (spec, spec.get("items", {})):
                if "pattern" in where:
                    found.add(where["pattern"])
    return sorted(found)


HAND_MADE = [
    "^[0-9]{1,4}[0-9]{2}" + END,  # repeats that overlap: the split is found whatever it is
    "^(ab|a)(bc|c)?" + END,  # alternation, an optional group
    "^a+b*?c{2,}" + END,  # unbounded and lazy repeats
    "^x.y" + END,  # "." is one character, of one to four bytes, but not a line feed
    "^é[a-z]?" + END,  # a non-ASCII literal is its UTF-8 bytes
    "^[A-Z]{2}",  # no end anchor: a prefix match
    "^[0-9]+$",  # Python's $: before a final line feed too
    "^((a|b){2}c)?d" + END,
    "^\\.\\-\\\\" + END,  # escaped punctuation and a backslash
    "^" + END,
    "^a{0}b" + END,
    "^(?:[HP]|E1)[0-9]{3}" + END,
]
DECLINED = [
    "[0-9]{4}" + END,  # a match anywhere
    "^[^a]" + END,  # a negated set holds non-ASCII characters
    "^\\d" + END,  # so do the categories in Python
    "^\\w+" + END,
    "^[éa]" + END,  # a set with a non-ASCII member
    "(?i)^a" + END,
    "^a(?=b)",
    "^(a)\\1" + END,
    "^a\\b",
    "^[a-z]{300}" + END,  # more states than the matcher's byte allows
]


def re2(pattern: str) -> str:
    out = fastpath._re2_pattern(pattern)
    assert out is not None, pattern
    return out


def assert_agrees(pattern: str, texts: list[str | None]) -> None:
    expected = [t is not None and re.search(pattern, t) is not None for t in texts]
    for arr in (pa.array(texts, pa.string()), pa.array(["x", *texts], pa.string()).slice(1)):
        assert fastpath._matches(arr, re2(pattern)).to_pylist() == expected, (pattern, texts)
        assert fastpath._f(pc.match_substring_regex(arr, re2(pattern))).to_pylist() == expected


# The characters the patterns' classes hold, their neighbours, and characters of two to four bytes.
MUTATIONS = "0aAbcdzZX9-.:+\n\\ é０\u2028😀"


def test_every_contract_pattern_runs_as_a_dfa() -> None:
    found = contract_patterns()
    assert len(found) >= 10
    for pattern in found:
        assert patterns.dfa(re2(pattern)) is not None, pattern


def test_unsupported_patterns_are_declined_and_still_checked() -> None:
    for pattern in DECLINED:
        form = fastpath._re2_pattern(pattern)
        if form is None:
            continue  # RE2 cannot take it either: the reference judges such a field
        assert patterns.dfa(form) is None, pattern
        assert_agrees(pattern, ["a", "ab", "٣", "é", "0000", "a" * 300, None])


@pytest.mark.parametrize("pattern", contract_patterns() + HAND_MADE)
def test_matches_agree_with_the_reference(pattern: str) -> None:
    assert patterns.dfa(re2(pattern)) is not None
    valid = st.from_regex(pattern.removesuffix(END).removesuffix("$") + "\\Z", fullmatch=True)
    values = st.one_of(valid, mutated(valid, MUTATIONS), st.text(max_size=30), st.none())

    @SETTINGS
    @given(texts=st.lists(values, max_size=20))
    def run(texts: list[str | None]) -> None:
        assert_agrees(pattern, texts)

    run()


def test_hand_made_values_at_the_edges() -> None:
    cases = {
        "^[0-9]{1,4}[0-9]{2}" + END: ["12", "123456", "1234567", "1", "12\n", "١٢"],
        "^x.y" + END: ["xay", "xéy", "x😀y", "x\ny", "xy", "xaay", "x\u2028y"],
        "^é[a-z]?" + END: ["é", "éa", "e", "éé", "é\n"],
        "^[A-Z]{2}": ["AB", "ABé\n", "A", "aB"],
        "^[0-9]+$": ["1", "1\n", "1\n\n", "\n", "12\r\n"],
        "^" + END: ["", " ", "\n"],
        "^\\.\\-\\\\" + END: [".-\\", ".-", "a-\\"],
    }
    for pattern, texts in cases.items():
        assert_agrees(pattern, texts)
    assert fastpath._matches(pa.array(["x😀y", "x\ny"]), re2("^x.y" + END)).to_pylist() == [True, False]


def test_malformed_tables_and_arrays_are_refused() -> None:
    tables, states, classes = patterns.dfa(re2("^[0-9]{2}" + END))
    data = b"12"
    offsets = pa.array([0, 2], pa.int32()).buffers()[1]
    assert _checks.matches(offsets, data, 0, 1, tables, states, classes) == b"\x01"
    bad_tables = {
        "short": (tables[:-1], states, classes),
        "a class beyond the classes": (bytes([classes]) + tables[1:], states, classes),
        "a transition beyond the states": (tables[:-1] + bytes([states]), states, classes),
        "one state": (tables, 1, classes),
        "no class": (tables, states, 0),
    }
    for name, args in bad_tables.items():
        with pytest.raises(ValueError):
            _checks.matches(offsets, data, 0, 1, *args)
            pytest.fail(name)
    with pytest.raises(ValueError):
        _checks.matches(offsets, data[:-1], 0, 1, tables, states, classes)  # beyond the data
    with pytest.raises(ValueError):
        _checks.matches(offsets, data, 0, 2, tables, states, classes)  # more strings than offsets


def test_a_chunk_checks_its_patterns_without_re2(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.bench import generate

    ds = contracts.get_dataset("insurance", "settlements")
    batches = generate.settlements_batches(300, invalid_rate=0.0)
    data = b"".join(line.encode() for batch in batches for line in batch.to_pylist())
    fastpath._plan(ds)  # planning asks RE2 to compile each pattern once
    calls: list[str] = []
    real = pc.match_substring_regex
    monkeypatch.setattr(fastpath.pc, "match_substring_regex", lambda v, p, **k: calls.append(p) or real(v, p, **k))
    result = fastpath.check_ndjson(ds, data, 1)
    assert result.good.num_rows == 300 and not result.rejected
    assert calls == []
    bad = re.sub(rb'"provider_code": "[HP]', b'"provider_code": "Q', data, count=1)  # fails its pattern
    result = fastpath.check_ndjson(ds, bad, 1)
    assert [r.line for r in result.rejected] == [1] and result.rejected[0].errors[0].path == "/provider_code"
    assert calls == []
