"""ipybgfetch: the web's Background Fetch API for Jupyter kernels.

Start downloads that keep running in the background of your kernel while you work::

    import ipybgfetch
    reg = ipybgfetch.manager().fetch("my-data", ["https://example.org/a.csv"])
    reg.wait()
    df = reg.match("https://example.org/a.csv").to_pandas()

In a notebook: ``%load_ext ipybgfetch`` then ``%bgfetch my-data URL...``.
"""

import logging as _logging
from typing import Any as _Any

from . import _display
from ._data.archive import UnsafeArchiveError
from ._engine.retry import RetryPolicy
from ._events import BackgroundFetchEvent, BackgroundFetchUpdateUIEvent
from ._exceptions import (
    AbortError,
    BackgroundFetchError,
    FetchError,
    InvalidStateError,
    NeedsCredentialsError,
    QuotaExceededError,
)
from ._manager import BackgroundFetchManager, manager
from ._models import Request, Response
from ._records import BackgroundFetchRecord, RecordList
from ._registration import BackgroundFetchRegistration
from ._registry import Registry
from ._secrets import RedactingFilter as _RedactingFilter

__version__ = "0.1.0"

# Every line of the "ipybgfetch" logger goes out with secret query parameters redacted.
_logging.getLogger("ipybgfetch").addFilter(_RedactingFilter())


def _present(kind: str, obj: _Any, include: _Any, exclude: _Any) -> dict[str, _Any]:
    """The panel, for the public objects' ``_repr_mimebundle_`` (imported on first use:
    anywidget and traitlets cost time that a script never showing a panel need not pay)."""
    from ._jupyter.widget import manager_mimebundle, registration_mimebundle

    show = registration_mimebundle if kind == "registration" else manager_mimebundle
    return show(obj, include=include, exclude=exclude)


_display.set_presenter(_present)


def load_ipython_extension(ipython: _Any) -> None:
    """``%load_ext ipybgfetch``: register the ``%bgfetch`` / ``%%bgfetch`` magics."""
    from ._jupyter.magic import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: _Any) -> None:
    from ._jupyter.magic import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "AbortError",
    "BackgroundFetchError",
    "BackgroundFetchEvent",
    "BackgroundFetchManager",
    "BackgroundFetchRecord",
    "BackgroundFetchRegistration",
    "BackgroundFetchUpdateUIEvent",
    "FetchError",
    "InvalidStateError",
    "NeedsCredentialsError",
    "QuotaExceededError",
    "RecordList",
    "Registry",
    "Request",
    "Response",
    "RetryPolicy",
    "UnsafeArchiveError",
    "__version__",
    "load_ipython_extension",
    "manager",
    "unload_ipython_extension",
]
