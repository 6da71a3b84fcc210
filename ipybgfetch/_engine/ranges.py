"""Byte-range arithmetic for segmented downloads: pure, no I/O, no asyncio.

A file of ``total`` bytes is fetched as several ranges at once. :class:`Splitter` hands
out those ranges: :meth:`Splitter.take` gives a free connection the next piece in file
order, and, once every byte is taken, the upper half of the largest range still being
fetched (as aria2 does), so the slowest connection never decides when the file is done.
A :class:`Segment`'s ``end`` can only shrink, and only while its owner is still fetching
below it; the owner checks ``end`` before storing each chunk.

:class:`RangeSet` is the map of finished byte ranges: what is written, checkpointed in
SQLite as text (``"0-1048576,2097152-3145728"``: half-open ``start-end`` pairs) so that a
new process re-requests only what is missing.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

__all__ = ["RangeSet", "Segment", "Splitter"]


class RangeSet:
    """Disjoint, sorted, half-open byte ranges ``[start, end)``; adjacent ones merge."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if not 0 <= start <= end:
            raise ValueError(f"not a byte range: [{start}, {end})")
        if start == end:
            return
        starts, ends = self._starts, self._ends
        # every range that touches or overlaps [start, end) merges into one
        lo = bisect.bisect_left(ends, start)
        hi = bisect.bisect_right(starts, end)
        if lo < hi:
            start = min(start, starts[lo])
            end = max(end, ends[hi - 1])
        starts[lo:hi] = [start]
        ends[lo:hi] = [end]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=True)

    def __len__(self) -> int:
        return len(self._starts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"RangeSet({self.dumps()!r})"

    @property
    def size(self) -> int:
        """Bytes covered."""
        return sum(e - s for s, e in self)

    def prefix(self) -> int:
        """End of the contiguous run from byte 0 (0 if byte 0 is missing)."""
        return self._ends[0] if self._starts and self._starts[0] == 0 else 0

    def missing(self, total: int) -> list[tuple[int, int]]:
        """The gaps in ``[0, total)``."""
        out, pos = [], 0
        for s, e in self:
            if s >= total:
                break
            if s > pos:
                out.append((pos, s))
            pos = max(pos, e)
        if pos < total:
            out.append((pos, total))
        return out

    def covers(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self._starts, start) - 1
        return start >= end or (i >= 0 and self._ends[i] >= end)

    def dumps(self) -> str:
        return ",".join(f"{s}-{e}" for s, e in self)

    @classmethod
    def loads(cls, text: str) -> RangeSet:
        """The inverse of :meth:`dumps`; a damaged value gives an empty set (refetch)."""
        out = cls()
        try:
            for item in filter(None, text.split(",")):
                s, e = item.split("-")
                out.add(int(s), int(e))
        except ValueError:
            return cls()
        return out


class Segment:
    """One connection's range: bytes ``[pos, end)`` still to fetch. ``pos`` grows as bytes
    arrive; ``end`` shrinks when another connection steals the upper part."""

    __slots__ = ("end", "pos", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = self.pos = start
        self.end = end

    @property
    def remaining(self) -> int:
        return max(0, self.end - self.pos)

    def __repr__(self) -> str:
        return f"Segment({self.start}, pos={self.pos}, end={self.end})"


class Splitter:
    """Hands out the ranges of one file, in file order; knows which are being fetched.

    :meth:`take` gives a free connection the next piece of the lowest missing range, so
    the bytes arrive near the front of the file and the hashes (fed in file order) keep
    up with the download; when nothing is left to take, :meth:`take` steals the upper
    half of the largest range still being fetched (as aria2 does), so the slowest
    connection never decides the end. ``steal_min``: a range is halved only if both
    halves get at least this many bytes, and no piece leaves a smaller sliver behind.
    """

    def __init__(self, missing: Iterable[tuple[int, int]], steal_min: int) -> None:
        self.steal_min = max(1, steal_min)
        self._pending: list[tuple[int, int]] = sorted(r for r in missing if r[1] > r[0])
        self.active: list[Segment] = []

    @staticmethod
    def pieces(length: int, n: int, min_size: int) -> int:
        """How many pieces of ``length`` bytes, at most ``n``, each >= ``min_size``."""
        return max(1, min(n, length // max(1, min_size)))

    def take(self, size: int) -> Segment | None:
        """A range for a free connection: the first ``size`` bytes of the lowest missing
        range, else half of the largest active range (:meth:`steal`), else None."""
        if not self._pending:
            return self.steal()
        start, end = self._pending[0]
        cut = min(end, start + max(1, size))
        if end - cut < self.steal_min:
            cut = end  # no sliver left behind
        if cut == end:
            self._pending.pop(0)
        else:
            self._pending[0] = (cut, end)
        seg = Segment(start, cut)
        self.active.append(seg)
        return seg

    def cut(self, seg: Segment, end: int) -> None:
        """Shorten an active range to end at ``end``; the rest is pending again (for
        :meth:`take`)."""
        end = max(end, seg.pos)
        if end < seg.end:
            bisect.insort(self._pending, (end, seg.end))
            seg.end = end

    def steal(self) -> Segment | None:
        """Take the upper half of the largest active range, if both halves are worth it."""
        victim = max(self.active, key=lambda seg: seg.remaining, default=None)
        if victim is None or victim.remaining < 2 * self.steal_min:
            return None
        mid = victim.pos + victim.remaining // 2
        seg = Segment(mid, victim.end)
        victim.end = mid
        self.active.append(seg)
        return seg

    def give_back(self, seg: Segment) -> None:
        """A connection stopped before the end of its range (an error): what is left of
        it is pending again, for the next free connection."""
        self.done(seg)
        if seg.pos < seg.end:
            bisect.insort(self._pending, (seg.pos, seg.end))

    def done(self, seg: Segment) -> None:
        """A connection reached the end of its range."""
        try:
            self.active.remove(seg)
        except ValueError:
            pass

    @property
    def finished(self) -> bool:
        return not self._pending and not any(seg.remaining for seg in self.active)

    @property
    def has_work(self) -> bool:
        """A free connection would get a range from :meth:`take`."""
        return bool(self._pending) or any(
            seg.remaining >= 2 * self.steal_min for seg in self.active
        )
