"""A registry: a pinned list of URLs, each with an optional integrity value.

The habit comes from pooch: keep the list of files a project needs in a small text file
next to the code, one line per file, with the hash that pins it::

    # data.txt — the inputs of the analysis
    https://example.org/a.csv sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=
    https://example.org/b.pq sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
    https://example.org/c.txt

Format of a line: ``URL [INTEGRITY ...]``, separated by whitespace. Blank lines and
comments (``#`` at the start of a line or of a word) are ignored; a ``#`` inside a URL is
part of the URL. Integrity tokens are SRI (``sha256-<base64>``, ``sha384-``, ``sha512-``,
several allowed) or pooch style (``sha256:<hex>``, bare 64-hex); they are normalised to SRI.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple, overload

from ._exceptions import BackgroundFetchError, FetchError
from ._integrity import parse_integrity
from ._models import validate_url

__all__ = ["Registry", "RegistryEntry", "RegistryError"]


class RegistryError(BackgroundFetchError, ValueError):
    """A registry line (or entry) is malformed. ``lineno`` is 1-based, or None."""

    def __init__(self, message: str, *, lineno: int | None = None, text: str | None = None):
        super().__init__(message)
        self.lineno = lineno
        self.text = text


class RegistryEntry(NamedTuple):
    """One pinned file: its URL and its normalised SRI integrity value (or None)."""

    url: str
    integrity: str | None = None


def _check_url(url: object) -> str:
    """Return ``url`` if fetch() would accept it (the same rule), else raise ValueError."""
    if isinstance(url, str) and any(ch.isspace() for ch in url):
        raise ValueError(f"{url!r} is not a URL (URLs cannot contain spaces)")
    try:
        return validate_url(url)
    except FetchError as exc:
        raise ValueError(str(exc)) from None


def _split_line(line: str) -> list[str]:
    """The words of a line, up to the first word that starts a comment."""
    words: list[str] = []
    for word in line.split():
        if word.startswith("#"):
            break
        words.append(word)
    return words


class Registry:
    """A pinned list of ``(url, integrity_or_None)`` entries.

    >>> reg = Registry.from_text('''
    ... # comment
    ... https://ex.org/a.csv sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
    ... https://ex.org/b.csv
    ... ''')
    >>> len(reg), reg.urls
    (2, ['https://ex.org/a.csv', 'https://ex.org/b.csv'])
    >>> reg[0].integrity
    'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='

    Iterating yields :class:`RegistryEntry` tuples, so ``for url, integrity in reg:``
    works. Duplicate URLs are kept (a fetch may list the same request twice).
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Iterable[str | tuple[str, str | None]] = ()) -> None:
        """Build from ``(url, integrity)`` pairs or bare URL strings.

        Integrity values are validated and normalised to SRI; bad entries raise
        :class:`RegistryError` naming the entry's position.
        """
        if isinstance(entries, str):
            raise TypeError(
                "Registry(...) takes a list of entries; to parse registry text use "
                "Registry.from_text(text), for a file Registry.from_file(path)."
            )
        checked: list[RegistryEntry] = []
        for index, item in enumerate(entries):
            if isinstance(item, str):
                url, integrity = item, None
            else:
                try:
                    url, integrity = item
                except (TypeError, ValueError):
                    raise RegistryError(
                        f"Registry entry {index}: expected a URL or a (url, integrity) "
                        f"pair, got {item!r}."
                    ) from None
            try:
                checked.append(_make_entry(url, integrity))
            except ValueError as exc:
                raise RegistryError(f"Registry entry {index}: {str(exc).rstrip('.')}.") from None
        self._entries: tuple[RegistryEntry, ...] = tuple(checked)

    @classmethod
    def from_text(cls, text: str, *, source: str | None = None) -> Registry:
        """Parse registry text (see the module docstring for the format).

        ``source`` (a file name) is only used in error messages. Raises
        :class:`RegistryError` with the line number and the offending text.
        """
        where = f"{source}, line" if source else "Registry line"
        entries: list[RegistryEntry] = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            words = _split_line(line)
            if not words:
                continue
            url, tokens = words[0], words[1:]
            try:
                entry = _make_entry(url, " ".join(tokens) if tokens else None)
            except ValueError as exc:
                raise RegistryError(
                    f"{where} {lineno}: {str(exc).rstrip('.')}. The line was: {line.strip()!r}. "
                    "Each line is 'URL [INTEGRITY ...]', e.g. "
                    "'https://example.org/a.csv sha256-<base64>'.",
                    lineno=lineno,
                    text=line,
                ) from None
            entries.append(entry)
        registry = cls.__new__(cls)
        registry._entries = tuple(entries)
        return registry

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Registry:
        """Read and parse a registry file (UTF-8, a leading BOM is ignored)."""
        path = Path(path)
        text = path.read_text(encoding="utf-8-sig")
        return cls.from_text(text, source=str(path))

    def to_text(self) -> str:
        """The registry as text, one ``URL [INTEGRITY]`` line per entry.

        ``Registry.from_text(reg.to_text()) == reg`` always holds.
        """
        lines = [
            url if integrity is None else f"{url} {integrity}" for url, integrity in self._entries
        ]
        return "".join(line + "\n" for line in lines)

    def to_file(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_text` to ``path`` (UTF-8)."""
        Path(path).write_text(self.to_text(), encoding="utf-8")

    @property
    def urls(self) -> list[str]:
        """The URLs, in order (duplicates kept)."""
        return [entry.url for entry in self._entries]

    @property
    def entries(self) -> tuple[RegistryEntry, ...]:
        """The entries, in order."""
        return self._entries

    def integrity_for(self, url: str) -> str | None:
        """The integrity value pinned for ``url`` (first match), None if unpinned.

        Raises ``KeyError`` if ``url`` is not in the registry.
        """
        for entry in self._entries:
            if entry.url == url:
                return entry.integrity
        raise KeyError(url)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[RegistryEntry]:
        return iter(self._entries)

    def __contains__(self, url: object) -> bool:
        return any(entry.url == url for entry in self._entries)

    @overload
    def __getitem__(self, index: int) -> RegistryEntry: ...
    @overload
    def __getitem__(self, index: slice) -> Registry: ...
    def __getitem__(self, index: int | slice) -> RegistryEntry | Registry:
        if isinstance(index, slice):
            registry = Registry.__new__(Registry)
            registry._entries = self._entries[index]
            return registry
        return self._entries[index]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Registry):
            return NotImplemented
        return self._entries == other._entries

    def __hash__(self) -> int:
        return hash(self._entries)

    def __repr__(self) -> str:
        if len(self._entries) <= 3:
            inner = ", ".join(repr(tuple(entry)) for entry in self._entries)
            return f"Registry([{inner}])"
        return f"Registry(<{len(self._entries)} entries, first {self._entries[0].url!r}>)"


def _make_entry(url: str, integrity: str | None) -> RegistryEntry:
    _check_url(url)
    if integrity is None:
        return RegistryEntry(url, None)
    return RegistryEntry(url, parse_integrity(integrity))
