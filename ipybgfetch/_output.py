"""Where output printed by event handlers and progress listeners goes.

Callbacks run on ipybgfetch's callback thread. Left alone, what they print lands in some
other cell (ipykernel 6: the cell that was running when the thread started; ipykernel 7:
the latest cell). ipybgfetch captures :func:`output_target` when ``fetch()`` is called, on
the user's thread, and runs each callback of that registration inside
``with output_to(target):``, so a registration's callbacks print under the cell that
started it, on ipykernel 6 and 7. Outside a kernel both are no-ops.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["output_target", "output_to"]


# --- where output from background threads goes ----------------------------------------
#
# Findings (ipykernel sources, checked on 6.31 and 7.4):
# - ipykernel 6.29-6.x patches threading.Thread: print() from a thread goes to the cell that
#   was running when its top-level ancestor thread was *created* (for an engine thread that
#   starts lazily: forever the first cell that used ipybgfetch); display() from a thread goes
#   to the latest cell. ipykernel < 6.29: both go to the latest cell.
# - ipykernel 7 (ipython/ipykernel#1451): no guessing; output from a thread goes to the
#   latest cell (the one running now, else the last one run) unless the thread calls
#   ``shell.set_thread_parent(parent)``.
# ipybgfetch's rule: output of a registration's callbacks goes to the cell that started the
# registration. The engine captures ``output_target()`` in fetch() (on the caller's thread)
# and runs each callback inside ``with output_to(target):`` on its dispatcher thread.


def _kernel_shell() -> Any:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None  # never imported: not in a kernel (and importing it costs ~0.15 s)
    shell = ipython.get_ipython()
    if shell is None or not hasattr(shell, "get_parent"):
        return None  # plain python or terminal IPython: output goes to the terminal anyway
    return shell


def output_target() -> Any:
    """The kernel request (cell) the calling thread is producing output for, or ``None``.

    Call it on the thread running the user's code (e.g. inside ``fetch()``); pass the
    result to :func:`output_to` on another thread. Outside a kernel it returns ``None``.
    """
    shell = _kernel_shell()
    if shell is None:
        return None
    try:
        parent = shell.get_parent()
    except Exception:  # pragma: no cover - defensive: never break fetch() over this
        return None
    return parent or None


@contextlib.contextmanager
def output_to(target: Any) -> Iterator[None]:
    """Send ``print()`` (and, on ipykernel 7, ``display()``) of the calling thread to ``target``.

    ``target`` comes from :func:`output_target`. With ``None`` or outside a kernel this does
    nothing. Thread-local: other threads (the cell running now) are not affected.
    """
    shell = _kernel_shell() if target is not None else None
    if shell is None:
        yield
        return
    set_thread = getattr(shell, "set_thread_parent", None)
    reset_thread = getattr(shell, "reset_thread_parent", None)
    if set_thread is not None and reset_thread is not None:  # ipykernel >= 7
        tokens = set_thread(target)
        try:
            yield
        finally:
            reset_thread(tokens)
        return
    # ipykernel 6: OutStream looks its parent up in a ContextVar first (private, but the only
    # per-thread hook there is); display() keeps going to the latest cell.
    header = target.get("header", target) if isinstance(target, dict) else target
    resets: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]] = []
    for stream in (sys.stdout, sys.stderr):
        var = getattr(stream, "_parent_header", None)
        if isinstance(var, contextvars.ContextVar):
            resets.append((var, var.set(header)))
    try:
        yield
    finally:
        for var, token in reversed(resets):
            var.reset(token)
