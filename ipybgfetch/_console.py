"""Live progress in a terminal while ``reg.wait()`` / ``%bgfetch wait`` block.

One updating line per registration (bytes, rate, ETA, files done), redrawn a few times a
second on standard error, as tqdm does; nothing at all when standard error is not a
terminal (a Jupyter kernel's streams, a pipe, a log file), so logs stay clean.

Plain carriage-return lines rather than tqdm: tqdm would be a new dependency for one line
of text, its multi-bar mode (``position=``) leaves stray lines when bars close out of
order, and a registration's total is not known until every size is (tqdm wants it up
front). The line reads only public attributes, so it works with any registration.

``IPYBGFETCH_PROGRESS=0`` turns it off, ``=1`` forces it on (e.g. under a pager).
"""

from __future__ import annotations

import collections
import inspect
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ._sizes import format_size

__all__ = ["ProgressLines", "progress_enabled", "wait_with_progress"]

#: Seconds between redraws.
REDRAW_INTERVAL = 0.2
#: The rate is measured over this many seconds (a moving window).
RATE_WINDOW = 3.0
#: No ETA before the transfer has run this long: early rates are wildly optimistic.
ETA_AFTER = 1.0
PROGRESS_ENV = "IPYBGFETCH_PROGRESS"


def progress_enabled(stream: TextIO | None = None) -> bool:
    """Draw progress on ``stream`` (standard error by default)?"""
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return False
    if forced in ("1", "true", "yes", "on"):
        return True
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def _clock(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Meter:
    """The rate and ETA of one registration, from samples of ``downloaded``."""

    def __init__(self) -> None:
        self.samples: collections.deque[tuple[float, int]] = collections.deque()
        self.first: float | None = None

    def sample(self, now: float, downloaded: int) -> None:
        if self.samples and downloaded < self.samples[-1][1]:
            self.samples.clear()  # a restart from zero: the old rate means nothing
        self.samples.append((now, downloaded))
        if self.first is None:
            self.first = now
        while len(self.samples) > 2 and now - self.samples[0][0] > RATE_WINDOW:
            self.samples.popleft()

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def eta(self, now: float, remaining: int | None) -> float | None:
        rate = self.rate()
        if remaining is None or rate <= 0 or self.first is None or now - self.first < ETA_AFTER:
            return None
        return max(0.0, remaining / rate)


def _expected(reg: Any) -> int | None:
    expected = getattr(reg, "expected_bytes", None)
    return expected if isinstance(expected, int) and expected > 0 else None


def _files(reg: Any) -> tuple[int, int]:
    return int(getattr(reg, "records_done", 0) or 0), int(getattr(reg, "records_total", 0) or 0)


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split()) or "failed"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ProgressLines:
    """Draws one line per registration on ``stream``, updating them in place."""

    def __init__(self, regs: Sequence[Any], stream: TextIO | None = None) -> None:
        self.regs = list(regs)
        self.stream = stream if stream is not None else sys.stderr
        self.meters = [_Meter() for _ in self.regs]
        self.drawn = 0  # lines currently on screen
        self.width = 0

    def line(self, reg: Any, meter: _Meter, now: float) -> str:
        downloaded = int(getattr(reg, "downloaded", 0) or 0)
        meter.sample(now, downloaded)
        expected = _expected(reg)
        state = str(getattr(reg, "state", "") or "")
        size = format_size(downloaded)
        if expected:
            size = f"{size} / {format_size(expected)} ({100 * downloaded / expected:.0f}%)"
        parts = [f"{reg.id}: {size}"]
        done, total = _files(reg)
        if total:
            parts.append(f"{done}/{total} files")
        if state == "active":
            retrying = getattr(reg, "retrying", None) or []
            if retrying:
                _url, why, seconds = retrying[0]
                more = f" (+{len(retrying) - 1} more)" if len(retrying) > 1 else ""
                parts.append(f"retrying ({_short(why)}) in {seconds:.0f} s{more}")
            rate = meter.rate()
            if rate > 0:
                parts.append(f"{format_size(int(rate))}/s")
            eta = meter.eta(now, expected - downloaded if expected else None)
            parts.append(f"ETA {_clock(eta)}" if eta is not None else "ETA —")
        else:
            reason = getattr(reg, "failure_reason", "")
            parts.append(f"{state}: {reason}" if reason and state != "aborted" else state)
        return "  ".join(parts)

    def draw(self, final: bool = False) -> None:
        now = time.monotonic()
        lines = [self.line(r, m, now) for r, m in zip(self.regs, self.meters, strict=True)]
        out = []
        if self.drawn > 1:
            out.append(f"\x1b[{self.drawn - 1}A")  # back to the first line
        out.append("\r")
        out.append("\n".join(f"{line}\x1b[K" for line in lines))
        if final:
            out.append("\n")
            self.drawn = 0
        else:
            self.drawn = len(lines)
        try:
            self.stream.write("".join(out))
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: progress is not essential
            pass


def wait_with_progress(
    regs: Sequence[Any], timeout: float | None = None, stream: TextIO | None = None
) -> None:
    """Wait until every registration settled, drawing progress when on a terminal.

    Raises ``TimeoutError`` (from ``reg.wait``) when ``timeout`` passes first.
    """
    regs = list(regs)
    deadline = None if timeout is None else time.monotonic() + timeout
    if not progress_enabled(stream):
        _wait_each(regs, deadline, timeout)
        return
    lines = ProgressLines(regs, stream)
    try:
        while not all(getattr(r, "settled", True) for r in regs):
            lines.draw()
            step = REDRAW_INTERVAL
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    break
            time.sleep(step)
    finally:
        lines.draw(final=True)
    _wait_each(regs, deadline, timeout)  # the handlers' end, or the TimeoutError


def _wait_each(regs: Sequence[Any], deadline: float | None, timeout: float | None) -> None:
    for reg in regs:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            _plain_wait(reg, left)
        except TimeoutError:  # said with the caller's timeout, not what was left of it
            raise TimeoutError(
                f"registration {reg.id!r} is still {reg.state} after {timeout:g} s "
                f"({format_size(int(reg.downloaded or 0))} downloaded); wait longer or "
                "abort() it"
            ) from None


def _plain_wait(reg: Any, timeout: float | None) -> None:
    """``reg.wait(timeout)`` without drawing (again): a registration-like object whose
    ``wait`` has no ``progress`` keyword is waited for as it is."""
    try:
        takes_progress = "progress" in inspect.signature(reg.wait).parameters
    except (TypeError, ValueError):  # no signature to read
        takes_progress = False
    if takes_progress:
        reg.wait(timeout, progress=False)
    elif timeout is not None:
        reg.wait(timeout)
    else:
        reg.wait()
