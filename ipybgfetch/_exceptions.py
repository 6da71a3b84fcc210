"""The exceptions ipybgfetch raises.

Each one subclasses what the Background Fetch spec (or the DOM) throws in the same
situation, so both ``except TypeError`` and ``except ipybgfetch.FetchError`` work::

    Exception
    └── BackgroundFetchError            (base of everything below)
        ├── FetchError(TypeError)       bad arguments to fetch(): URL, id, request, size
        ├── AbortError                  a record was aborted before its response arrived
        ├── InvalidStateError           the call is not allowed in the current state
        ├── QuotaExceededError          not enough space for the download
        └── NeedsCredentialsError(InvalidStateError)
                                        a resumed registration needs headers/auth again

Every message says what was wrong and what to do instead.
"""

from __future__ import annotations

__all__ = [
    "AbortError",
    "BackgroundFetchError",
    "FetchError",
    "InvalidStateError",
    "NeedsCredentialsError",
    "QuotaExceededError",
]


class BackgroundFetchError(Exception):
    """Base class of every ipybgfetch error."""


class FetchError(BackgroundFetchError, TypeError):
    """Invalid arguments to ``fetch()`` (the spec throws a ``TypeError``)."""


class AbortError(BackgroundFetchError):
    """The record was aborted (the spec rejects with an ``AbortError`` DOMException)."""


class InvalidStateError(BackgroundFetchError):
    """The operation is not allowed in the object's current state."""


class QuotaExceededError(BackgroundFetchError):
    """There is not enough space (disk or quota) for the download."""


class NeedsCredentialsError(InvalidStateError):
    """A registration restored from disk needs its credentials again (never stored)."""
