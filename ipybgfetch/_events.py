"""Events and the thread that runs user callbacks.

User callbacks (event handlers, progress listeners) never run on the engine loop: a slow
or failing handler must not stall transfers. The engine queues them here; one daemon
thread runs them in order. A handler's exception is logged and printed (to stderr, which
a notebook shows under the cell), never swallowed and never fatal.
"""

from __future__ import annotations

import collections
import logging
import queue
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._exceptions import InvalidStateError

if TYPE_CHECKING:
    from ._registration import BackgroundFetchRegistration

__all__ = [
    "MANAGER_EVENTS",
    "BackgroundFetchEvent",
    "BackgroundFetchUpdateUIEvent",
    "CallbackThread",
    "ListenerSet",
]

log = logging.getLogger("ipybgfetch")

MANAGER_EVENTS = (
    "backgroundfetchsuccess",
    "backgroundfetchfail",
    "backgroundfetchabort",
    "backgroundfetchclick",
)


class BackgroundFetchEvent:
    """Passed to handlers: ``event.type`` and ``event.registration``."""

    def __init__(self, type: str, registration: BackgroundFetchRegistration) -> None:
        self.type = type
        self.registration = registration

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.type} id={self.registration.id!r}>"


class BackgroundFetchUpdateUIEvent(BackgroundFetchEvent):
    """A success/fail event: handlers may call :meth:`update_ui` once, while they run."""

    def __init__(self, type: str, registration: BackgroundFetchRegistration) -> None:
        super().__init__(type, registration)
        self._dispatching = False
        self._ui_updated = False

    def update_ui(
        self, title: str | None = None, icons: Sequence[dict[str, str]] | None = None
    ) -> None:
        """Change the registration's title and/or icons (shown in its panel)."""
        if not self._dispatching:
            raise InvalidStateError(
                "update_ui() can only be called while the event handler is running; "
                "call it inside the handler, before it returns."
            )
        if self._ui_updated:
            raise InvalidStateError(
                "update_ui() was already called for this event; pass title and icons "
                "together in a single call."
            )
        self.registration._update_ui(title=title, icons=icons)  # validates first
        self._ui_updated = True


class ListenerSet:
    """Listeners by event type, safe to change from any thread."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self._allowed = tuple(allowed)
        self._lock = threading.Lock()
        self._listeners: dict[str, list[Callable[[Any], Any]]] = {t: [] for t in allowed}

    def add(self, type: str, callback: Callable[[Any], Any]) -> None:
        self._check(type, callback)
        with self._lock:
            if callback not in self._listeners[type]:
                self._listeners[type].append(callback)

    def remove(self, type: str, callback: Callable[[Any], Any]) -> None:
        self._check(type, callback)
        with self._lock, _suppress_value_error():
            self._listeners[type].remove(callback)

    def get(self, type: str) -> list[Callable[[Any], Any]]:
        with self._lock:
            return list(self._listeners[type])

    def _check(self, type: str, callback: Callable[[Any], Any]) -> None:
        if type not in self._allowed:
            raise ValueError(f"unknown event type {type!r}; use one of: {', '.join(self._allowed)}")
        if not callable(callback):
            raise TypeError(
                f"the listener must be callable (a function taking the event), "
                f"got {type(callback).__name__}"
            )


class _suppress_value_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is ValueError


class CallbackThread:
    """Runs queued callbacks, in order, on one daemon thread."""

    def __init__(self, name: str = "ipybgfetch-events") -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._name = name
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.errors: collections.deque[BaseException] = collections.deque(maxlen=100)

    def is_current(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put((fn, args))

    def _main(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except BaseException as exc:  # SystemExit too: this thread must live on
                self.report(exc, fn)

    def report(self, exc: BaseException, where: Any) -> None:
        self.errors.append(exc)
        # Not repr(where): a repr can fail too (a closed manager's, a user object's).
        name = getattr(where, "__qualname__", None) or type(where).__name__
        log.error("ipybgfetch: callback %s raised %r", name, exc)
        print(f"ipybgfetch: the callback {name} raised an exception:", file=sys.stderr)
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)

    def stop(self) -> None:
        self._queue.put(None)
