"""When and how long to wait before trying a request again."""

from __future__ import annotations

import dataclasses
import email.utils
import random
import time
from collections.abc import Collection

import httpx

__all__ = ["RetryPolicy", "SpeedCheck", "parse_retry_after"]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How a record recovers from network errors and transient statuses.

    ``retries`` counts consecutive attempts that made no progress: a big file on a flaky
    link that keeps moving forward is never given up on. Waits grow exponentially from
    ``backoff`` seconds up to ``max_backoff``, with jitter, and honour ``Retry-After``.
    Only GET requests are retried and resumed: any other (POST, PUT, DELETE...) may
    already have had its effect, so it is sent once unless ``retry_non_idempotent=True``.
    ``read_timeout`` is the stall detector: no byte for that long counts as a dropped
    connection (then resumed). ``speed_limit``/``speed_time`` catch a body that trickles
    (like curl's ``--speed-limit``/``--speed-time``): fewer than ``speed_limit`` bytes per
    second over ``speed_time`` seconds counts as a dropped connection too (0 turns it off).
    ``max_restarts`` caps how often one record starts again from byte 0 (its bytes
    discarded because the file changed on the server or the server ignored Range) before
    it fails: a server that changes the file on every answer is not downloaded forever.

    >>> RetryPolicy(retries=10, backoff=1.0)  # doctest: +ELLIPSIS
    RetryPolicy(retries=10, ...)
    """

    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 300.0
    statuses: Collection[int] = RETRY_STATUSES
    retry_non_idempotent: bool = False
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    speed_limit: float = 1024.0
    speed_time: float = 60.0
    max_restarts: int = 5

    def __post_init__(self) -> None:
        for name in ("retries", "max_restarts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        for name in (
            "backoff",
            "max_backoff",
            "max_retry_after",
            "connect_timeout",
            "read_timeout",
            "speed_limit",
            "speed_time",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0 seconds, got {value!r}")

    @classmethod
    def coerce(cls, value: RetryPolicy | int | None, default: RetryPolicy) -> RetryPolicy:
        if value is None:
            return default
        if isinstance(value, RetryPolicy):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return dataclasses.replace(default, retries=value)
        raise TypeError(
            f"retries must be an int or an ipybgfetch.RetryPolicy, got {type(value).__name__}"
        )

    def timeout(self) -> httpx.Timeout:
        """The httpx timeouts of this policy (the read timeout is the stall detector)."""
        return httpx.Timeout(self.read_timeout, connect=self.connect_timeout, pool=None)

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        base = min(self.max_backoff, self.backoff * (2.0 ** max(failures - 1, 0)))
        return base * random.uniform(0.5, 1.0)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP-date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return max(0.0, parsed.timestamp() - (time.time() if now is None else now))


class SpeedCheck:
    """curl's ``--speed-limit``/``--speed-time`` for one transfer: fewer than ``limit``
    bytes a second over ``period`` seconds is a stalled transfer (checked as bytes
    arrive; no bytes at all is the read timeout's job)."""

    __slots__ = ("_bytes", "_limit", "_period", "_start")

    def __init__(self, policy: RetryPolicy) -> None:
        self._limit, self._period = policy.speed_limit, policy.speed_time
        self._start = time.monotonic()
        self._bytes = 0

    def slow(self, n: int) -> str | None:
        """Count ``n`` bytes; why the transfer is too slow, or None."""
        if not self._limit or not self._period:
            return None
        self._bytes += n
        elapsed = time.monotonic() - self._start
        if elapsed < self._period:
            return None
        if self._bytes < self._limit * elapsed:
            return (
                f"the transfer was too slow: {self._bytes} bytes in {elapsed:.1f} s, under "
                f"the {self._limit:g} bytes/s of RetryPolicy.speed_limit over speed_time"
            )
        self._start, self._bytes = time.monotonic(), 0
        return None
