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
from email.utils import collapse_rfc2231_value
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["NameReservations", "filename_from_disposition", "filename_from_url", "safe_filename"]

DEFAULT_NAME = "download"
MAX_NAME_BYTES = 200  # leaves room for "-NNN" and ".part" under the common 255-byte limit
# Windows device names, matched against the part of a name before its first dot with
# trailing spaces removed ("CON .txt" names the device). Superscript digits count too.
_WINDOWS_RESERVED = re.compile(
    r"con|prn|aux|nul|conin\$|conout\$|(com|lpt)[0-9\u00b9\u00b2\u00b3]", re.IGNORECASE
)
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
# Unicode categories replaced by "_": controls (Cc, incl. C1), format characters (Cf:
# bidi overrides and isolates, zero-width characters, BOM, soft hyphen, but also ZWJ/ZWNJ,
# an accepted cost), lone surrogates (Cs: not encodable), private use (Co: some layers,
# e.g. Cygwin and macOS SMB, map it back to characters such as ":" or "*"), unassigned
# (Cn: may be a format character to a newer Unicode than ours) and line/paragraph
# separators (Zl, Zp). They are replaced rather than dropped: the "_" shows that something
# was there, and dropping could join neighbours into a new name ("CO\u200bN" -> "CON").
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Leading or trailing whitespace and dots; Windows drops trailing spaces and dots itself.
_EDGE_JUNK = re.compile(r"^[\s.]+|[\s.]+$")
_TRAILING_JUNK = re.compile(r"[\s.]+$")
_PART_SUFFIX = ".part"  # in-flight bodies are written to "<final>.part"
# ASCII letters, digits, "_", "-" and inner dots, with a letter or digit somewhere
_PLAIN_NAME = re.compile(r"(?=[._-]*[A-Za-z0-9])[A-Za-z0-9_-](?:[A-Za-z0-9._-]*[A-Za-z0-9_-])?")
# an http(s) URL of printable ASCII whose host part needs no checking: its path is
# what urlsplit would find (tested), without urlsplit
_URL_PATH = re.compile(r"https?://[A-Za-z0-9.:@-]*((?:/[!-\"$->@-~]*)?)(?:[?#][!-~]*)?")


def safe_filename(proposed: str | None, default: str = DEFAULT_NAME) -> str:
    """Return a single, harmless path component for ``proposed``.

    >>> safe_filename("../../etc/passwd")
    'passwd'
    >>> safe_filename("a\\x00b.csv")
    'a_b.csv'
    >>> safe_filename("invoice\\u202efdp.exe")
    'invoice_fdp.exe'
    >>> safe_filename("CON .txt")
    '_CON .txt'
    >>> safe_filename("data.PART")
    'data.PART_'
    """
    if proposed and _plain_name(proposed):
        return proposed  # the usual case: nothing below would change it (tested)
    name = unicodedata.normalize("NFC", proposed or "")
    # Keep only the last component, whatever separator the sender used.
    name = re.split(r"[/\\]", name)[-1]
    name = _replace_unsafe(name)
    name = _EDGE_JUNK.sub("", name)
    if not name or set(name) <= {"_", " "}:
        name = default
    name = _truncate(name)
    if _is_windows_reserved(name):
        name = _truncate("_" + name)  # truncation keeps the prefix
    if _is_part_name(name):
        name = _truncate(name + "_")  # truncation keeps ".part_" as the extension
    return name


def _plain_name(name: str) -> bool:
    """Whether ``name`` is short ASCII letters, digits and ``._-``, starts and ends with no
    dot, has a letter or digit, and is neither a device name nor a ``.part`` name: such a
    name is safe as it is.

    >>> _plain_name("data-2024.csv"), _plain_name("..x"), _plain_name("nul.txt")
    (True, False, False)
    """
    return (
        len(name) <= MAX_NAME_BYTES
        and _PLAIN_NAME.fullmatch(name) is not None
        and not _is_windows_reserved(name)
        and not _is_part_name(name)
    )


def _replace_unsafe(name: str) -> str:
    """Replace path syntax, controls and invisible or reordering characters by ``_``.

    >>> _replace_unsafe("a:b\\u2066c\\u2028d")
    'a_b_c_d'
    """
    name = _UNSAFE_CHARS.sub("_", name)
    if name.isascii():  # the usual case: ASCII's only unsafe category (Cc) is done above
        return name
    return "".join("_" if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in name)


def _is_windows_reserved(name: str) -> bool:
    """Whether Windows would open a device for ``name`` (after its own trimming).

    >>> [_is_windows_reserved(n) for n in ("nul .csv", "COM\u00b9", "CONSOLE")]
    [True, True, False]
    """
    base = name.rstrip(" .").split(".", 1)[0].rstrip(" ")
    return _WINDOWS_RESERVED.fullmatch(base) is not None


def _is_part_name(name: str) -> bool:
    """Whether ``name`` ends like an in-flight file, in any case.

    >>> _is_part_name("data.PART"), _is_part_name("data.part_")
    (True, False)
    """
    return name.casefold().endswith(_PART_SUFFIX)


def _truncate(name: str) -> str:
    """Cut ``name`` to :data:`MAX_NAME_BYTES`, keeping a short extension and its start.

    >>> _truncate("a" * 300 + ".csv") == "a" * (MAX_NAME_BYTES - 4) + ".csv"
    True
    """
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16:
        stem, ext = name, ""
    ext_part = ("." + ext) if ext else ""
    budget = MAX_NAME_BYTES - len(ext_part.encode("utf-8"))
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    # The cut may end in dots or spaces, which Windows would silently drop.
    return _TRAILING_JUNK.sub("", cut) + ext_part


def filename_from_url(url: str) -> str:
    """The last non-empty segment of the URL path, percent-decoded and made safe."""
    plain = _URL_PATH.fullmatch(url)
    path = plain.group(1) if plain else urlsplit(url).path
    segments = [s for s in path.split("/") if s]
    return safe_filename(unquote(segments[-1]) if segments else None)


def filename_from_disposition(value: str | None) -> str | None:
    """The ``filename*``/``filename`` of a Content-Disposition header, made safe, else None."""
    if not value:
        return None
    msg = Message()
    msg["content-disposition"] = value
    try:
        # RFC 6266 4.3: ``filename*`` wins over ``filename`` wherever it stands (the
        # plain one is only the fallback for old clients); email's get_filename takes
        # whichever comes first
        raw = _extended_filename(msg) or msg.get_filename()
    except (ValueError, LookupError, TypeError):
        raw = None
    if not raw:
        return None
    return safe_filename(raw)


def _extended_filename(msg: Message) -> str | None:
    """The decoded ``filename*`` parameter, if any (email gives it as a tuple)."""
    for name, param in msg.get_params(header="content-disposition") or []:
        if name.lower() == "filename" and isinstance(param, tuple):
            return collapse_rfc2231_value(param)
    return None


class NameReservations:
    """Hands out unique final paths inside one folder.

    A name is free when no other record of this process reserved it and no file exists
    there already: existing user files are never overwritten.
    """

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def reserve(self, folder: Path, name: str) -> Path:
        """A final path in ``folder`` for ``name`` (``name-2.ext``... when taken), with its
        ``.part`` file created empty: O_EXCL makes the claim atomic, so two processes
        sharing a folder never pick the same name."""
        path, fd = self.reserve_open(folder, name)
        os.close(fd)
        return path

    def reserve_open(self, folder: Path, name: str) -> tuple[Path, int]:
        """:meth:`reserve`, and the ``.part`` file's descriptor, open for writing (the
        caller closes it): the body is written through it, without opening it again."""
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem:
            stem, dot, ext = name, "", ""
        base = os.path.join(folder, "")  # "folder/": string operations, one Path at the end
        n = 1
        while True:
            candidate = name if n == 1 else f"{stem}-{n}{dot}{ext}"
            path = base + candidate
            key = os.path.normcase(path)
            if key not in self._taken and not os.path.lexists(path):
                fd = _claim(path + ".part")
                if fd >= 0:
                    self._taken.add(key)
                    return folder / candidate, fd
            n += 1

    def claim(self, path: Path) -> None:
        """Mark an already chosen path (from a restored registration) as taken."""
        self._taken.add(os.path.normcase(str(path)))

    def release(self, path: Path) -> None:
        self._taken.discard(os.path.normcase(str(path)))


def _claim(part: str) -> int:
    """Create ``part`` empty if nobody has it yet (in this or any other process): its
    descriptor, open for writing; -1 if it exists."""
    try:
        return os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return -1
