"""Resident-id recognition, masking and pseudonyms (sanyi.privacy).

Every id here is synthetic: a made-up body whose check character is computed below with the
ISO 7064 MOD 11-2 formula written out independently of the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import threading
import time
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanyi import fastpath, privacy
from sanyi.privacy import MASK, find_resident_ids, is_valid_resident_id, mask_in, mask_resident_ids, pseudonymise


def iso7064_check(body17: str) -> str:
    """ISO 7064 MOD 11-2, straight from the standard: the check value c makes
    (sum of digit_i * 2^(18-i) for i=1..17) + c ≡ 1 (mod 11); c = 10 is written X."""
    total = sum(int(d) * (2 ** (18 - i)) for i, d in enumerate(body17, start=1))
    c = (1 - total) % 11
    return "X" if c == 10 else str(c)


def synthetic_id(seq: int, area: str = "990101", birth: str = "20000101") -> str:
    body = f"{area}{birth}{seq % 1000:03d}"
    return body + iso7064_check(body)


def id_with_check(char: str) -> str:
    """A synthetic id whose check character is ``char``."""
    for seq in range(1000):
        rid = synthetic_id(seq)
        if rid[-1] == char:
            return rid
    raise AssertionError(f"no synthetic id with check character {char}")


def wrong_check(rid: str) -> str:
    return rid[:17] + ("0" if rid[17] != "0" else "1")


ID = synthetic_id(7)
ID_X = id_with_check("X")


# ----------------------------------------------------------------------------------- check character
@pytest.mark.parametrize("char", list("0123456789X"))
def test_every_check_character_is_accepted_when_correct(char: str) -> None:
    rid = id_with_check(char)
    assert is_valid_resident_id(rid)
    assert privacy.check_character(rid[:17]) == char


def test_check_character_agrees_with_the_standard_formula_on_random_bodies() -> None:
    rng = random.Random(11643)
    for _ in range(500):
        body = "".join(rng.choice("0123456789") for _ in range(17))
        assert privacy.check_character(body) == iso7064_check(body)
        assert is_valid_resident_id(body + iso7064_check(body))
        assert not is_valid_resident_id(wrong_check(body + iso7064_check(body)))


@pytest.mark.parametrize(
    "value",
    [
        ID_X[:17] + "x",  # ids are case-sensitive: a lower-case x is invalid
        ID[:17],  # 17 characters
        ID + "0",  # 19 characters
        " " + ID[1:],
        "١" + ID[1:],  # an Arabic-Indic digit is a digit to str.isdigit, not to GB 11643
        ID[:16] + "X" + ID[17],  # X only as the check character
        None,
        int(ID[:-1] + "0") if ID[-1] == "0" else 0,
    ],
)
def test_invalid_forms_are_rejected(value: object) -> None:
    assert not is_valid_resident_id(value)


def test_wrong_check_character_is_rejected() -> None:
    assert is_valid_resident_id(ID)
    assert not is_valid_resident_id(wrong_check(ID))
    assert not is_valid_resident_id(wrong_check(ID_X))


def test_check_character_needs_17_ascii_digits() -> None:
    with pytest.raises(ValueError):
        privacy.check_character(ID[:16])


# ------------------------------------------------------------------------------------------- finding
def test_find_returns_ids_in_order_with_any_surrounding_non_digits() -> None:
    text = f"patient {ID}, spouse:{ID_X};"
    assert find_resident_ids(text) == [ID, ID_X]
    assert find_resident_ids(f"H{ID}") == [ID]  # letters are not further digits


def test_find_ignores_ids_adjacent_to_further_digits_and_invalid_ones() -> None:
    assert find_resident_ids("1" + ID) == []
    assert find_resident_ids(ID + "2") == []
    assert find_resident_ids(ID_X + "5") == []  # the X is followed by a digit
    assert find_resident_ids(wrong_check(ID)) == []
    assert find_resident_ids(ID_X[:17] + "x") == []
    # A 20-digit trace code contains 18-digit windows but no id.
    trace = ID + "12"
    assert find_resident_ids(trace) == []


def _windows_by_definition(text: str) -> list[tuple[int, str]]:
    """Every 18-character window that is 17 ASCII digits and a digit, ``X`` or ``x``, with no ASCII digit
    right before or right after it: the contract's definition, position by position."""
    digits = "0123456789"
    found = []
    for i in range(len(text) - 17):
        window = text[i : i + 18]
        if (
            all(c in digits for c in window[:17])
            and window[17] in digits + "Xx"
            and (i == 0 or text[i - 1] not in digits)
            and (i + 18 == len(text) or text[i + 18] not in digits)
        ):
            found.append((i, window))
    return found


def test_finding_and_masking_agree_with_the_definition_on_random_texts() -> None:
    # Digit runs of every length around 18, ids at the very start and end, X/x checks, non-ASCII digits
    # (not digits for the contract) and separators: the cases a faster pattern could get wrong.
    rng = random.Random(20261124)
    pieces = [ID, ID_X, ID_X[:17] + "x", wrong_check(ID), "7", "42", "X", "x", " ", '"', ":", "-", "٣", "a"]
    for _ in range(4000):
        text = "".join(rng.choice(pieces) if rng.random() < 0.5 else rng.choice("0123456789")
                       for _ in range(rng.randint(0, 12)))
        windows = _windows_by_definition(text)
        assert find_resident_ids(text) == [w for _, w in windows if iso7064_check(w[:17]) == w[17]], text
        # What the loader asks before masking a chunk's texts (sanyi._checks): would masking change it?
        assert fastpath.maskable_text(text) == any(iso7064_check(w[:17]) == w[17].upper() for _, w in windows)
        masked, end = [], 0
        for i, w in windows:  # windows never overlap: each is bounded by non-digits
            masked.append(text[end:i])
            masked.append(MASK if iso7064_check(w[:17]) == w[17].upper() else w)
            end = i + 18
        assert mask_resident_ids(text) == "".join(masked) + text[end:], text


# ------------------------------------------------------------------------------------------- masking
def test_mask_replaces_each_id_with_a_fixed_token() -> None:
    masked = mask_resident_ids(f"{ID} and {ID_X}!")
    assert masked == f"{MASK} and {MASK}!"
    assert ID not in masked and ID_X not in masked


def test_mask_also_hides_a_lower_case_x_variant_but_leaves_non_ids() -> None:
    lower = ID_X[:17] + "x"
    assert mask_resident_ids(f"[{lower}]") == f"[{MASK}]"
    assert mask_resident_ids(wrong_check(ID)) == wrong_check(ID)
    trace = ID + "12"
    assert mask_resident_ids(trace) == trace
    assert mask_resident_ids("short") == "short"


def test_mask_in_walks_nested_values_and_keys() -> None:
    value = {"a": [ID, {"b": f"x{ID_X}"}], ID: 3, "n": 1.5, "none": None}
    masked = mask_in(value)
    assert masked == {"a": [MASK, {"b": f"x{MASK}"}], MASK: 3, "n": 1.5, "none": None}
    assert ID in str(value)  # the input is not modified


# ---------------------------------------------------------------------------------------- pseudonyms
def test_pseudonym_is_hmac_sha256_hex_of_the_id() -> None:
    key = b"k" * 32
    expected = hmac.new(key, ID.encode(), hashlib.sha256).hexdigest()
    p = pseudonymise(key, ID)
    assert p == expected
    assert len(p) == 64 and set(p) <= set("0123456789abcdef")
    assert ID not in p


def test_pseudonym_is_stable_per_key_and_differs_across_keys_and_ids() -> None:
    k1, k2 = b"platform-key-1", b"platform-key-2"
    assert pseudonymise(k1, ID) == pseudonymise(k1, ID)
    assert pseudonymise(k1, ID) != pseudonymise(k2, ID)
    assert pseudonymise(k1, ID) != pseudonymise(k1, synthetic_id(8))


def test_pseudonym_does_not_normalise_case() -> None:
    key = b"platform-key"
    assert pseudonymise(key, ID_X) != pseudonymise(key, ID_X[:17] + "x")


@pytest.mark.parametrize("key", [b"k", b"platform-key", b"k" * 64, b"k" * 65, bytes(range(200))])
def test_pseudonym_is_the_hmac_for_every_key_length(key: bytes) -> None:
    # Keys up to one SHA-256 block are padded, longer ones hashed first (RFC 2104): both branches of
    # hmac_pads, which pseudonymise_array's C hashing uses too.
    for rid in (ID, ID_X, synthetic_id(8), "身份证" + ID):
        assert pseudonymise(key, rid) == hmac.new(key, rid.encode(), hashlib.sha256).hexdigest()
    with pytest.raises(ValueError):
        privacy.hmac_pads(b"")


def test_pseudonym_needs_a_key() -> None:
    with pytest.raises(ValueError):
        pseudonymise(b"", ID)
    with pytest.raises(TypeError):
        pseudonymise(b"key", 110101)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- pseudonyms of a chunk
def reference(key: bytes, ids: list[str | None]) -> list[str | None]:
    return [None if v is None else hmac.new(key, v.encode(), hashlib.sha256).hexdigest() for v in ids]


# After the 64-byte pad, an id of up to 55 bytes fits one more SHA-256 block with the hash's own 9 bytes of
# padding; one of 56 bytes or more takes two: ids of 55, 56 and 64 bytes sit on both sides of that edge.
EDGE_IDS = [ID, ID_X, None, ID, "", "身份证" + ID, "a" * 55, "b" * 56, "c" * 64, "d" * 1000, ID.lower(), None]


@pytest.mark.parametrize("key", [b"k", b"platform-key", b"k" * 64, b"k" * 65, bytes(range(200))])
def test_pseudonymise_array_is_pseudonymise_for_every_key_length(key: bytes) -> None:
    # The loader hashes a chunk's ids in C (sanyi._hmac); the warehouse must hold exactly the pseudonyms
    # pseudonymise gives (which the seed's report, quarantine rows and other agencies' files rely on).
    got = privacy.pseudonymise_array(key, pa.array(EDGE_IDS, pa.string())).to_pylist()
    assert got == reference(key, EDGE_IDS) == [None if v is None else pseudonymise(key, v) for v in EDGE_IDS]


def test_pseudonymise_array_takes_chunked_sliced_large_and_empty_input() -> None:
    key = b"platform-key"
    expected = reference(key, EDGE_IDS)
    chunked = pa.chunked_array([EDGE_IDS[:5], EDGE_IDS[5:]], pa.string())
    assert privacy.pseudonymise_array(key, chunked).to_pylist() == expected
    # A slice's ids start inside its buffers (offset 3), its nulls inside its validity bitmap.
    sliced = pa.array(["x", "y", "z", *EDGE_IDS], pa.string()).slice(3)
    assert sliced.offset == 3 and privacy.pseudonymise_array(key, sliced).to_pylist() == expected
    assert privacy.pseudonymise_array(key, pa.array(EDGE_IDS, pa.large_string())).to_pylist() == expected
    assert privacy.pseudonymise_array(key, pa.array([], pa.string())).to_pylist() == []
    assert privacy.pseudonymise_array(key, pa.chunked_array([], pa.string())).to_pylist() == []
    assert privacy.pseudonymise_array(key, pa.array([None, None], pa.string())).to_pylist() == [None, None]
    with pytest.raises(TypeError, match="strings"):
        privacy.pseudonymise_array(key, pa.array([110101], pa.int64()))
    with pytest.raises(ValueError):
        privacy.pseudonymise_array(b"", pa.array([ID]))


@settings(max_examples=300, deadline=None)
@given(key=st.binary(min_size=1, max_size=100), ids=st.lists(st.none() | st.text(max_size=80), max_size=40))
def test_pseudonymise_array_agrees_with_the_hmac_on_any_text(key: bytes, ids: list[str | None]) -> None:
    assert privacy.pseudonymise_array(key, pa.array(ids, pa.string())).to_pylist() == reference(key, ids)


def test_the_extension_refuses_buffers_that_do_not_describe_a_string_array() -> None:
    # It reads raw memory: a malformed call must be an error, never a read beyond a buffer.
    from sanyi import _hmac

    inner, outer = privacy.hmac_pads(b"key")
    offsets = pa.array([0, 2, 4], pa.int32()).buffers()[1]
    assert _hmac.hmac_sha256_hex(inner, outer, offsets, b"abcd", 0, 2)[1] == (
        hmac.new(b"key", b"ab", hashlib.sha256).hexdigest() + hmac.new(b"key", b"cd", hashlib.sha256).hexdigest()
    ).encode()
    # From an offset into the buffers, as a sliced array's: its first string is the second one there.
    assert _hmac.hmac_sha256_hex(inner, outer, offsets, b"abcd", 1, 1) == (
        bytes(pa.array([0, 64], pa.int32()).buffers()[1]),
        hmac.new(b"key", b"cd", hashlib.sha256).hexdigest().encode(),
    )
    bad = {
        "short pad": (inner[:63], outer, offsets, b"abcd", 0, 2),
        "more strings than offsets": (inner, outer, offsets, b"abcd", 0, 3),
        "offset past the offsets": (inner, outer, offsets, b"abcd", 1, 2),
        "negative offset": (inner, outer, offsets, b"abcd", -1, 1),
        "offsets beyond the data": (inner, outer, offsets, b"abc", 0, 2),
        "offsets out of order": (inner, outer, pa.array([0, 3, 2], pa.int32()).buffers()[1], b"abcd", 0, 2),
        "negative first offset": (inner, outer, pa.array([-1, 2], pa.int32()).buffers()[1], b"abcd", 0, 1),
    }
    for name, args in bad.items():
        with pytest.raises(ValueError):
            _hmac.hmac_sha256_hex(*args)
            pytest.fail(name)


def assert_lets_other_threads_run(call: Any, what: str) -> None:
    """``call()`` in a thread while this one spins: this one gets turns all along (the call lets go of
    the GIL), not only before and after it."""
    window: list[float] = []

    def timed() -> None:
        window.append(time.perf_counter())
        call()
        window.append(time.perf_counter())

    worker = threading.Thread(target=timed)
    turns: list[float] = []
    worker.start()
    while worker.is_alive():
        turns.append(time.perf_counter())
    worker.join()
    start, end = window
    inside = [start] + [t for t in turns if start < t < end] + [end]
    longest_wait = max(b - a for a, b in zip(inside, inside[1:], strict=False))
    assert end - start > 0.02, f"too little {what} to see"
    assert longest_wait < (end - start) / 2, f"no turn for {longest_wait:.3f} s of a {end - start:.3f} s call"


def test_the_extension_lets_other_threads_run_while_it_hashes() -> None:
    # Why it is in C: the validator threads go on while the loader hashes a chunk. Holding the GIL, the
    # call would leave this thread no turn from its start to its end (measured so: 90 of its 97 ms).
    from sanyi import _hmac

    ids = pa.array([f"{i:018d}" for i in range(400_000)], pa.string())
    _, offsets, data = ids.buffers()
    inner, outer = privacy.hmac_pads(b"platform-key")
    assert_lets_other_threads_run(
        lambda: _hmac.hmac_sha256_hex(inner, outer, offsets, data, 0, len(ids)), "hashing"
    )
