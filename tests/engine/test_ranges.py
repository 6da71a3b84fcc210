"""The range arithmetic of segmented downloads (ipybgfetch._ranges): no gaps, no overlaps,
every byte written once, whatever order connections advance, finish, fail and steal in."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipybgfetch._engine.ranges import RangeSet, Splitter

ranges = st.lists(st.tuples(st.integers(0, 500), st.integers(0, 60)), max_size=20)


@given(ranges)
def test_rangeset_matches_a_set_of_bytes(items: list[tuple[int, int]]) -> None:
    rs, truth = RangeSet(), set()
    for start, length in items:
        rs.add(start, start + length)
        truth.update(range(start, start + length))
    assert rs.size == len(truth)
    pairs = list(rs)
    for (s1, e1), (s2, e2) in itertools.pairwise(pairs):
        assert s1 < e1 < s2 < e2  # sorted, disjoint, not even touching (merged)
    assert {b for s, e in pairs for b in range(s, e)} == truth
    total = 600
    missing = {b for s, e in rs.missing(total) for b in range(s, e)}
    assert missing == set(range(total)) - truth
    assert rs.prefix() == next(i for i in range(total + 1) if i not in truth)
    assert RangeSet.loads(rs.dumps()) == rs
    for s, e in pairs:
        assert rs.covers(s, e) and not rs.covers(s, e + 1)


def test_rangeset_rejects_and_recovers() -> None:
    with pytest.raises(ValueError):
        RangeSet().add(5, 2)
    assert RangeSet.loads("garbage") == RangeSet()
    assert RangeSet.loads("") == RangeSet()
    assert RangeSet.loads("0-10,10-20").dumps() == "0-20"


def test_take_hands_out_pieces_in_file_order_then_steals() -> None:
    sp = Splitter([(0, 100)], steal_min=10)
    a, b = sp.take(30), sp.take(30)
    assert (a.start, a.end, b.start, b.end) == (0, 30, 30, 60)
    c = sp.take(35)  # 40 left: 35 would leave a 5-byte sliver, so all 40
    assert (c.start, c.end) == (60, 100)
    d = sp.take(30)  # nothing left to take: half of the largest active range
    assert (d.start, d.end) == (80, 100) and c.end == 80
    sp.cut(a, 10)  # a shortened: [10, 30) is pending again, and taken first
    e = sp.take(100)
    assert (e.start, e.end) == (10, 30)


@settings(max_examples=300, deadline=None)
@given(
    done=ranges,
    total=st.integers(1, 700),
    n=st.integers(1, 8),
    steal_min=st.integers(1, 50),
    actions=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 200)), max_size=300),
)
def test_every_missing_byte_is_fetched_exactly_once(
    done: list[tuple[int, int]],
    total: int,
    n: int,
    steal_min: int,
    actions: list[tuple[int, int]],
) -> None:
    have = RangeSet((min(s, total), min(s + k, total)) for s, k in done)
    writes = bytearray(total)
    for s, e in have:
        writes[s:e] = b"\x01" * (e - s)
    sp = Splitter(have.missing(total), steal_min)
    conns = [seg for seg in (sp.take(total) for _ in range(1)) if seg is not None]

    def advance(seg, k):  # a connection receives k bytes (never past its current end)
        k = min(k, seg.remaining)
        for b in range(seg.pos, seg.pos + k):
            writes[b] += 1
        seg.pos += k
        have.add(seg.pos - k, seg.pos)

    def free(i, size):  # connection i is free: it takes another range or closes
        seg = sp.take(size)
        if seg is None:
            conns.pop(i)
        else:
            conns[i] = seg

    for what, k in actions:
        if not conns:
            break
        i = k % len(conns)
        seg = conns[i]
        if what < 5:
            advance(seg, k + 1)
            if seg.remaining == 0:
                sp.done(seg)
                free(i, k + 1)
        elif what < 7:  # the connection drops: the rest of its range goes back
            sp.give_back(seg)
            free(i, k + 1)
        elif what == 7:  # its range is cut short (the first response, once split)
            sp.cut(seg, seg.pos + k)
        elif len(conns) < n:  # a new connection joins (a host slot became free)
            seg = sp.take(k + 1)
            if seg is not None:
                conns.append(seg)
    # then every connection runs to the end, taking more work as it goes
    while conns:
        seg = conns[0]
        advance(seg, seg.remaining)
        sp.done(seg)
        free(0, 1 + seg.end % 97)
    assert sp.finished
    assert not sp.has_work
    assert set(writes) <= {1}, "a byte was written twice or never"
    assert have.missing(total) == []
