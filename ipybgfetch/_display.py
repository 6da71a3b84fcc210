"""How the public objects show themselves in Jupyter without importing the Jupyter front.

The Jupyter front (the panel) sits above the public objects, so they cannot import it.
The package's ``__init__`` plugs it in with :func:`set_presenter`; a registration's or the
manager's ``_repr_mimebundle_`` calls :func:`mimebundle`, which hands the object to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Presenter", "mimebundle", "set_presenter"]

#: ``presenter(kind, obj, include, exclude)`` -> a mimebundle; kind is "registration" or
#: "manager".
Presenter = Callable[[str, Any, "Iterable[str] | None", "Iterable[str] | None"], dict[str, Any]]

_presenter: Presenter | None = None


def set_presenter(presenter: Presenter | None) -> None:
    global _presenter
    _presenter = presenter


def mimebundle(
    kind: str, obj: Any, include: Iterable[str] | None, exclude: Iterable[str] | None
) -> dict[str, Any]:
    """``obj`` as Jupyter shows it: the presenter's bundle, else its repr as text."""
    if _presenter is None:
        return {"text/plain": repr(obj)}
    return _presenter(kind, obj, include, exclude)
