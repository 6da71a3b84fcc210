"""File names for downloaded bodies: derived from the URL or Content-Disposition, made safe.

A server or URL may propose any name at all (``../../.bashrc``, ``/etc/passwd``, ``CON``,
names with control characters or 4,000 characters). :func:`safe_filename` turns whatever
was proposed into one plain name component that stays inside the destination folder;
:class:`NameReservations` de-duplicates names within a folder (``a.csv``, ``a-2.csv``...).
"""

from __future__ import annotations

import os
import re
import unicodedata
from email.message import Message
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["NameReservations", "filename_from_disposition", "filename_from_url", "safe_filename"]

DEFAULT_NAME = "download"
MAX_NAME_BYTES = 200  # leaves room for "-NNN" and ".part" under the common 255-byte limit
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')


def safe_filename(proposed: str | None, default: str = DEFAULT_NAME) -> str:
    """Return a single, harmless path component for ``proposed``.

    >>> safe_filename("../../etc/passwd")
    'passwd'
    >>> safe_filename("a\\x00b.csv")
    'a_b.csv'
    """
    name = unicodedata.normalize("NFC", proposed or "")
    # Keep only the last component, whatever separator the sender used.
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE_CHARS.sub("_", name)
    name = name.strip().strip(".").strip()
    if not name or set(name) <= {"_", " "}:
        name = default
    if _WINDOWS_RESERVED.match(name):
        name = "_" + name
    if name.endswith(".part"):
        name = name + "_"
    return _truncate(name)


def _truncate(name: str) -> str:
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16:
        stem, ext = name, ""
    ext_part = ("." + ext) if ext else ""
    budget = MAX_NAME_BYTES - len(ext_part.encode("utf-8"))
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    return cut + ext_part


def filename_from_url(url: str) -> str:
    """The last non-empty segment of the URL path, percent-decoded and made safe."""
    path = urlsplit(url).path
    segments = [s for s in path.split("/") if s]
    return safe_filename(unquote(segments[-1]) if segments else None)


def filename_from_disposition(value: str | None) -> str | None:
    """The ``filename*``/``filename`` of a Content-Disposition header, made safe, else None."""
    if not value:
        return None
    msg = Message()
    msg["content-disposition"] = value
    try:
        raw = msg.get_filename()
    except (ValueError, LookupError, TypeError):
        raw = None
    if not raw:
        return None
    return safe_filename(raw)


class NameReservations:
    """Hands out unique final paths inside one folder.

    A name is free when no other record of this process reserved it and no file exists
    there already: existing user files are never overwritten.
    """

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def reserve(self, folder: Path, name: str) -> Path:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem:
            stem, dot, ext = name, "", ""
        n = 1
        while True:
            candidate = name if n == 1 else f"{stem}-{n}{dot}{ext}"
            path = folder / candidate
            key = os.path.normcase(str(path))
            if (
                key not in self._taken
                and not os.path.lexists(path)
                and not os.path.lexists(f"{path}.part")
            ):
                self._taken.add(key)
                return path
            n += 1

    def claim(self, path: Path) -> None:
        """Mark an already chosen path (from a restored registration) as taken."""
        self._taken.add(os.path.normcase(str(path)))

    def release(self, path: Path) -> None:
        self._taken.discard(os.path.normcase(str(path)))
