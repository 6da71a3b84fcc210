"""When and how long to wait before trying a request again."""

from __future__ import annotations

import dataclasses
import email.utils
import random
import time
from collections.abc import Collection

import httpx

__all__ = ["RetryPolicy", "parse_retry_after"]

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
    connection (then resumed).

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

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {self.retries!r}")
        for name in (
            "backoff",
            "max_backoff",
            "max_retry_after",
            "connect_timeout",
            "read_timeout",
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
