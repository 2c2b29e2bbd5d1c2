"""JSON Schema ``pattern`` keywords compiled to byte DFAs, for ``sanyi._checks.matches``.

Why: Arrow's regex kernel (RE2) costs about 65 ns a value however short the value and the pattern; the
contracts' patterns are anchored runs of character classes (``^[XZ][A-Z0-9]{22}\\z``), which a DFA walks at
a table lookup a byte. :func:`dfa` takes a pattern in the RE2 form ``sanyi.fastpath`` gives it (its meaning
under Python's ``re.search`` already checked to be RE2's) and returns the DFA's tables, or None when the
pattern uses anything this compiler does not handle — the caller then keeps RE2, so declining is always
safe. Handled: ``^`` at the start (required: a match anchored at the start), ASCII and non-ASCII literals,
sets of ASCII characters and ranges, ``.``, repeats (greedy or lazy: the same matches for a yes/no answer),
groups without flags, alternation, and a closing ``\\z``, ``\\n?\\z`` or none (a prefix match).

The values are valid UTF-8 (Arrow strings), so a set of ASCII characters never matches a byte of a
multi-byte character, a literal is its UTF-8 bytes, and ``.`` is one character's bytes other than a line
feed.
"""

from __future__ import annotations

import re
from functools import cache
from re import _parser as sre_parse  # type: ignore[attr-defined]  # stable since 3.11, used read-only
from typing import Any

MAX_STATES = 256  # the C matcher's states are bytes
_MAX_NFA = 4096  # a pattern whose repeats expand beyond this stays with RE2
_ALL = (1 << 256) - 1
_ASCII_BUT_LF = ((1 << 128) - 1) & ~(1 << 10)
_CONTINUATION = sum(1 << b for b in range(0x80, 0xC0))
_LEADS = {1: range(0xC2, 0xE0), 2: range(0xE0, 0xF0), 3: range(0xF0, 0xF5)}  # by continuation bytes


class _Unsupported(Exception):
    pass


class _Nfa:
    """Thompson NFA over bytes: each state has byte-set edges (a 256-bit mask each) and epsilon edges."""

    def __init__(self) -> None:
        self.edges: list[list[tuple[int, int]]] = []
        self.eps: list[list[int]] = []

    def state(self) -> int:
        if len(self.edges) >= _MAX_NFA:
            raise _Unsupported("too many states")
        self.edges.append([])
        self.eps.append([])
        return len(self.edges) - 1

    def byte_edge(self, src: int, mask: int) -> int:
        dst = self.state()
        self.edges[src].append((mask, dst))
        return dst

    def sequence(self, items: Any, cur: int) -> int:
        """States for ``items`` (sre_parse's list) from ``cur``; returns the state they end in."""
        for op, arg in items:
            name = str(op)
            if name == "LITERAL":
                for b in chr(arg).encode("utf-8", "surrogatepass"):
                    cur = self.byte_edge(cur, 1 << b)
            elif name == "IN":
                cur = self.byte_edge(cur, _set_mask(arg))
            elif name == "ANY":
                end = self.state()
                self.edges[cur].append((_ASCII_BUT_LF, end))
                for count, leads in _LEADS.items():
                    s = self.byte_edge(cur, sum(1 << b for b in leads))
                    for _ in range(count - 1):
                        s = self.byte_edge(s, _CONTINUATION)
                    self.edges[s].append((_CONTINUATION, end))
                cur = end
            elif name in ("MAX_REPEAT", "MIN_REPEAT"):
                cur = self.repeat(arg, cur)
            elif name == "SUBPATTERN":
                if arg[1] or arg[2]:
                    raise _Unsupported("inline flags")
                cur = self.sequence(arg[3], cur)
            elif name == "BRANCH":
                end = self.state()
                for alt in arg[1]:
                    self.eps[self.sequence(alt, cur)].append(end)
                cur = end
            else:  # anchors inside the pattern, categories, look-arounds, back-references, …
                raise _Unsupported(name)
        return cur

    def repeat(self, arg: Any, cur: int) -> int:
        lo, hi, sub = arg
        for _ in range(lo):
            cur = self.sequence(sub, cur)
        if hi == sre_parse.MAXREPEAT:
            loop = self.state()
            self.eps[cur].append(loop)
            self.eps[self.sequence(sub, loop)].append(loop)
            return loop
        for _ in range(hi - lo):  # x{0,3} as x?x?x?: the same strings
            end = self.state()
            self.eps[cur].append(end)
            self.eps[self.sequence(sub, cur)].append(end)
            cur = end
        return cur

    def closure(self, states: set[int]) -> frozenset[int]:
        todo, seen = list(states), set(states)
        while todo:
            for t in self.eps[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return frozenset(seen)


def _set_mask(items: Any) -> int:
    mask = 0
    for op, arg in items:
        name = str(op)
        if name == "LITERAL" and arg < 128:
            mask |= 1 << arg
        elif name == "RANGE" and arg[1] < 128:
            mask |= ((1 << (arg[1] + 1)) - 1) & ~((1 << arg[0]) - 1)
        else:  # negated sets and categories (their members are Unicode), non-ASCII members
            raise _Unsupported(name)
    return mask


@cache
def dfa(pattern: str) -> tuple[bytes, int, int] | None:
    """``pattern`` (RE2 form, see the module text) as ``(tables, states, classes)`` for
    ``sanyi._checks.matches``, or None when it is not handled here.

    ``tables`` is 256 class numbers (one per byte), then an accepting flag per state, then the transitions
    (``states`` rows of ``classes`` next states). State 0 is the dead state, state 1 the start.
    """
    body, mode = _closing(pattern)
    try:
        parsed = sre_parse.parse(body)
        if parsed.state.flags & ~re.UNICODE:
            raise _Unsupported("flags")
        items = list(parsed)
        if not items or str(items[0][0]) != "AT" or str(items[0][1]) not in ("AT_BEGINNING", "AT_BEGINNING_STRING"):
            raise _Unsupported("a match anywhere")  # every contract pattern starts with ^
        nfa = _Nfa()
        start = nfa.state()
        end = nfa.sequence(items[1:], start)
        if mode == "newline":
            after = nfa.byte_edge(end, 1 << 10)
            nfa.eps[end].append(after)
            end = after
        elif mode == "prefix":
            nfa.edges[end].append((_ALL, end))  # once matched, anything may follow
        return _determinise(nfa, start, end)
    except (_Unsupported, sre_parse.error, RecursionError):
        return None


def _closing(pattern: str) -> tuple[str, str]:
    """(the pattern before its closing, which closing: "newline", "end" or "prefix")."""
    if pattern.endswith("\\n?\\z"):
        return pattern[:-5], "newline"
    if pattern.endswith("\\z"):
        return pattern[:-2], "end"
    return pattern, "prefix"


def _determinise(nfa: _Nfa, start: int, accept: int) -> tuple[bytes, int, int] | None:
    masks = sorted({m for edges in nfa.edges for m, _ in edges})
    signature: dict[tuple[bool, ...], int] = {}
    classes = bytes(signature.setdefault(tuple(bool(m >> b & 1) for m in masks), len(signature)) for b in range(256))
    representative = {c: classes.index(c) for c in set(classes)}
    order = [frozenset(), nfa.closure({start})]  # the dead state (no NFA state left) and the start
    ids = {states: i for i, states in enumerate(order)}
    rows: list[list[int]] = []
    for current in order:  # grows while it is walked
        row = []
        for c in range(len(representative)):
            b = representative[c]
            nxt = nfa.closure({t for s in current for m, t in nfa.edges[s] if m >> b & 1})
            if nxt not in ids:
                if len(order) == MAX_STATES:
                    return None
                ids[nxt] = len(order)
                order.append(nxt)
            row.append(ids[nxt])
        rows.append(row)
    accepting = bytes(accept in s for s in order)
    return classes + accepting + bytes(t for row in rows for t in row), len(order), len(representative)
