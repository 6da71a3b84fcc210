"""Safe extraction of downloaded zip and tar archives.

:func:`extract` unpacks zip, tar, tar.gz, tar.bz2, tar.xz (and tar.zst when the
``zstandard`` package is installed) into a folder, refusing hostile archives:

* members with an absolute path, a drive letter, a NUL byte, or ``..`` components that
  climb out of the target folder;
* symlinks whose target is absolute or resolves (following the archive's other links and
  any links already on disk) outside the target folder;
* hardlinks to anything other than a regular file earlier in the same archive (they are
  written as copies, never as links to files on disk);
* device files, fifos and other special members;
* members that would be written through a link, and type clashes (a file and a folder
  with the same name);
* archives that expand beyond ``max_size`` bytes *and* ``max_ratio`` times their own size
  (zip bombs), checked on the declared sizes first and on the bytes actually written.

Every member is checked before anything is written, so a hostile archive writes nothing
at all, not even the harmless members before the bad one. Files appear by rename from a
temporary file in the same folder, so a final path is never a partial file. Symlinks are
created last. This does not rely on Python 3.12's ``tarfile`` extraction filters (the
package supports 3.10); when ``tarfile.data_filter`` exists it is consulted as well.
"""

from __future__ import annotations

import contextlib
import gzip
import lzma
import os
import re
import stat
import tarfile
import tempfile
import time
import unicodedata
import zipfile
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from .._disk import free_space, nearest_existing
from .._exceptions import BackgroundFetchError, QuotaExceededError
from .frames import compression_from_magic

__all__ = [
    "ARCHIVE_FORMATS",
    "DEFAULT_MAX_RATIO",
    "DEFAULT_MAX_SIZE",
    "UnsafeArchiveError",
    "detect_archive_format",
    "extract",
]

#: Values accepted by ``extract(..., format=...)``.
ARCHIVE_FORMATS: tuple[str, ...] = ("zip", "tar", "tar.gz", "tar.bz2", "tar.xz", "tar.zst")

_FORMAT_ALIASES: dict[str, str] = {
    "zip": "zip",
    "tar": "tar",
    "tar.gz": "tar.gz",
    "tgz": "tar.gz",
    "gztar": "tar.gz",
    "tar.gzip": "tar.gz",
    "tar.bz2": "tar.bz2",
    "tbz": "tar.bz2",
    "tbz2": "tar.bz2",
    "bztar": "tar.bz2",
    "tar.xz": "tar.xz",
    "txz": "tar.xz",
    "xztar": "tar.xz",
    "tar.zst": "tar.zst",
    "tar.zstd": "tar.zst",
    "tzst": "tar.zst",
}

_NAME_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".tar.gz", "tar.gz"),
    (".tgz", "tar.gz"),
    (".tar.bz2", "tar.bz2"),
    (".tbz2", "tar.bz2"),
    (".tbz", "tar.bz2"),
    (".tar.xz", "tar.xz"),
    (".txz", "tar.xz"),
    (".tar.zst", "tar.zst"),
    (".tar.zstd", "tar.zst"),
    (".tzst", "tar.zst"),
    (".tar", "tar"),
    (".zip", "zip"),
)

#: Zip-bomb limit of :func:`extract`: an archive is refused only when it expands beyond
#: this many bytes *and* beyond :data:`DEFAULT_MAX_RATIO` times its own size. Compressed
#: data files reach 10-50:1 (deflate cannot exceed ~1032:1), so real datasets pass.
DEFAULT_MAX_SIZE = 1 << 30
#: See :data:`DEFAULT_MAX_SIZE`.
DEFAULT_MAX_RATIO = 1000

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
# A damaged zip member: bad CRC or size, broken deflate/lzma stream, cut short.
_ZIP_MEMBER_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
)
_MAX_LINK_HOPS = 40
_MAX_SYMLINK_TARGET = 4096
_COPY_CHUNK = 1024 * 1024
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_SEPARATORS_RE = re.compile(r"[/\\]")

_Kind = Literal["file", "dir", "symlink", "hardlink"]


class UnsafeArchiveError(BackgroundFetchError, ValueError):
    """The archive holds a member that could write outside the target folder.

    ``member`` is the offending member's name as stored in the archive. Nothing was
    extracted.
    """

    def __init__(self, archive: Path, member: str, problem: str) -> None:
        super().__init__(
            f"Refusing to extract {archive.name!r}: member {member!r} {problem}. Nothing "
            "was extracted. If you trust this archive, unpack it with a tool of your "
            "choice; ipybgfetch only extracts archives whose members stay inside the "
            "target folder."
        )
        self.archive = archive
        self.member = member


@dataclass
class _Entry:
    index: int
    name: str
    kind: _Kind
    parts: tuple[str, ...]
    mode: int = 0o644
    mtime: float | None = None
    size: int = 0
    link: str | None = None  # symlink target as stored
    link_parts: tuple[str, ...] | None = None  # hardlink target, normalised


# --- Detection ---------------------------------------------------------------------------


_TAR_BY_COMPRESSION = {"gzip": "tar.gz", "xz": "tar.xz", "zstd": "tar.zst", "bz2": "tar.bz2"}


def _compression_from_magic(head: bytes) -> str | None:
    """The compressed-tar format these first bytes announce (the same table as the readers)."""
    compression = compression_from_magic(head)
    return _TAR_BY_COMPRESSION.get(compression) if compression else None


def detect_archive_format(archive: str | os.PathLike[str], format: str | None = None) -> str:
    """One of :data:`ARCHIVE_FORMATS` for ``archive``: magic bytes first, then the name.

    Raises ``ValueError`` if ``format`` is unknown or the file is not a zip/tar archive.
    """
    archive = Path(archive)
    if format is not None:
        normalised = _FORMAT_ALIASES.get(format.lower().lstrip("."))
        if normalised is None:
            raise ValueError(
                f"Unsupported archive format={format!r}; use one of {', '.join(ARCHIVE_FORMATS)}."
            )
        return normalised
    with open(archive, "rb") as fh:
        head = fh.read(512)
    if head.startswith(_ZIP_MAGICS):
        return "zip"
    compressed = _compression_from_magic(head)
    if compressed is not None:
        return compressed
    if head[257:262] == b"ustar":
        return "tar"
    name = archive.name.lower()
    for suffix, fmt in _NAME_SUFFIXES:
        if name.endswith(suffix):
            return fmt
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise ValueError(
        f"{archive.name!r} is not a zip or tar archive (checked its first bytes and its "
        f"name). Supported: {', '.join(ARCHIVE_FORMATS)}; pass format='zip' or "
        "format='tar.gz' etc. if the file is one of those. A single compressed data file "
        "(data.csv.gz) needs no extraction: read it directly with read_pandas/read_polars."
    )


# --- Member names ------------------------------------------------------------------------


def _key(parts: Sequence[str]) -> tuple[str, ...]:
    """Comparison key for paths on case-insensitive / normalising file systems."""
    return tuple(unicodedata.normalize("NFC", part).casefold() for part in parts)


def _split(path: str) -> list[str]:
    return _SEPARATORS_RE.split(path)


def _is_absolute(path: str) -> bool:
    return path.startswith(("/", "\\")) or bool(_DRIVE_RE.match(path))


def _safe_parts(archive: Path, name: str) -> tuple[str, ...]:
    """The member name as path components inside the target, or UnsafeArchiveError."""
    if "\x00" in name:
        raise UnsafeArchiveError(archive, name, "has a NUL byte in its name")
    if name.startswith(("/", "\\")):
        raise UnsafeArchiveError(archive, name, "has an absolute path")
    if _DRIVE_RE.match(name):
        raise UnsafeArchiveError(archive, name, "starts with a drive letter")
    parts: list[str] = []
    for part in _split(name):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise UnsafeArchiveError(
                    archive, name, "uses '..' to climb out of the target folder"
                )
            parts.pop()
            continue
        if os.name == "nt" and (":" in part or part.rstrip(" .") != part):
            raise UnsafeArchiveError(
                archive, name, "has a name Windows cannot store safely (':' or trailing dot)"
            )
        parts.append(part)
    return tuple(parts)


# --- Path resolution inside the target ---------------------------------------------------


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class _Resolver:
    """Resolves paths under ``root`` like the OS would after extraction.

    It follows the archive's symlinks (``links``) and symlinks already on disk, and
    reports whether the walk ever leaves ``root``.
    """

    def __init__(self, root: Path, links: dict[tuple[str, ...], str]) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.links = links
        self._disk: dict[tuple[str, ...], list[str] | None] = {}

    def _disk_link(self, stack: list[str]) -> list[str] | None:
        """If root/stack is a symlink on disk: its resolved parts under root.

        Returns None if it is not a link; raises _Escape if it leads outside.
        """
        key = tuple(stack)
        if key not in self._disk:
            path = self.root.joinpath(*stack)
            if not os.path.islink(path):
                self._disk[key] = None
            else:
                real = os.path.realpath(path)
                if not _inside(real, self.real_root):
                    raise _Escape
                rel = os.path.relpath(real, self.real_root)
                self._disk[key] = [] if rel == "." else rel.split(os.sep)
        return self._disk[key]

    def escapes(self, parts: Sequence[str]) -> bool:
        stack: list[str] = []
        queue: deque[str] = deque(parts)
        hops = 0
        try:
            while queue:
                part = queue.popleft()
                if part in ("", "."):
                    continue
                if part == "..":
                    if not stack:
                        return True
                    stack.pop()
                    continue
                stack.append(part)
                target = self.links.get(_key(stack))
                if target is not None:
                    hops += 1
                    if hops > _MAX_LINK_HOPS or _is_absolute(target):
                        return True
                    stack.pop()
                    queue.extendleft(reversed(_split(target)))
                    continue
                on_disk = self._disk_link(stack)
                if on_disk is not None:
                    stack = list(on_disk)
        except _Escape:
            return True
        return False


class _Escape(Exception):
    pass


# --- Validation --------------------------------------------------------------------------


def _validate(archive: Path, entries: list[_Entry], root: Path) -> None:
    """Raise UnsafeArchiveError (or ValueError) unless every entry is safe to write."""
    links: dict[tuple[str, ...], str] = {}
    kinds: dict[tuple[str, ...], str] = {}
    for entry in entries:
        if entry.kind == "symlink":
            links[_key(entry.parts)] = entry.link or ""
    resolver = _Resolver(root, links)

    for entry in entries:
        if not entry.parts:
            if entry.kind == "dir":
                continue
            raise UnsafeArchiveError(archive, entry.name, "has an empty name")
        # Type clashes inside the archive (a file and a folder of the same name, ...).
        group = "dir" if entry.kind == "dir" else "link" if entry.kind == "symlink" else "file"
        previous = kinds.get(entry.parts)
        if previous is not None and previous != group:
            raise UnsafeArchiveError(
                archive, entry.name, f"appears both as a {previous} and as a {group}"
            )
        kinds[entry.parts] = group

        for depth in range(1, len(entry.parts)):
            prefix = entry.parts[:depth]
            if _key(prefix) in links:
                raise UnsafeArchiveError(
                    archive,
                    entry.name,
                    f"would be written through the symlink {'/'.join(prefix)!r}",
                )
        if resolver.escapes(entry.parts[:-1]) or (
            entry.kind == "dir" and resolver.escapes(entry.parts)
        ):
            raise UnsafeArchiveError(
                archive, entry.name, "would be written outside the target folder (via a link)"
            )

        if entry.kind == "symlink":
            target = entry.link or ""
            if not target or "\x00" in target:
                raise UnsafeArchiveError(archive, entry.name, "is a symlink with a bad target")
            if _is_absolute(target):
                raise UnsafeArchiveError(
                    archive, entry.name, f"is a symlink to an absolute path ({target!r})"
                )
            if resolver.escapes([*entry.parts[:-1], *_split(target)]):
                raise UnsafeArchiveError(
                    archive,
                    entry.name,
                    f"is a symlink pointing outside the target folder ({target!r})",
                )
        elif entry.kind == "hardlink":
            assert entry.link_parts is not None
            if kinds.get(entry.link_parts) != "file" or entry.link_parts == entry.parts:
                raise UnsafeArchiveError(
                    archive,
                    entry.name,
                    f"is a hardlink to {entry.link!r}, which is not a file earlier in the archive",
                )
            if resolver.escapes(entry.link_parts):
                raise UnsafeArchiveError(
                    archive, entry.name, f"is a hardlink pointing outside ({entry.link!r})"
                )

    # Clashes with what the archive itself needs as folders.
    for entry in entries:
        for depth in range(1, len(entry.parts)):
            prefix = entry.parts[:depth]
            if kinds.get(prefix, "dir") != "dir":
                raise UnsafeArchiveError(
                    archive,
                    entry.name,
                    f"needs {'/'.join(prefix)!r} to be a folder, but the archive also has "
                    "it as a file",
                )

    # Clashes with what is already on disk.
    for entry in entries:
        if not entry.parts:
            continue
        path = root.joinpath(*entry.parts)
        for depth in range(1, len(entry.parts)):
            parent = root.joinpath(*entry.parts[:depth])
            if os.path.lexists(parent) and not os.path.isdir(parent):
                raise ValueError(
                    f"Cannot extract {archive.name!r}: member {entry.name!r} needs the "
                    f"folder {str(parent)!r}, but a file exists there. Extract into an "
                    "empty folder, or remove that file. Nothing was extracted."
                )
        if entry.kind != "dir" and os.path.isdir(path) and not os.path.islink(path):
            raise ValueError(
                f"Cannot extract {archive.name!r}: member {entry.name!r} is a file, but "
                f"a folder {str(path)!r} already exists. Extract into an empty folder, or "
                "remove that folder. Nothing was extracted."
            )
        if entry.kind == "dir" and os.path.lexists(path) and not os.path.isdir(path):
            raise ValueError(
                f"Cannot extract {archive.name!r}: member {entry.name!r} is a folder, but "
                f"a file {str(path)!r} already exists. Nothing was extracted."
            )


def _check_space(archive: Path, entries: list[_Entry], root: Path) -> None:
    needed = sum(entry.size for entry in entries if entry.kind in ("file", "hardlink"))
    probe = nearest_existing(root)
    free = free_space(root)
    if free is None:
        return
    if needed > free:
        raise QuotaExceededError(
            f"Extracting {archive.name!r} needs {needed:,} bytes but only {free:,} are free "
            f"under {str(probe)!r}. Free some space or extract elsewhere (to=...)."
        )


def _size_limit(archive: Path, max_size: int | None, max_ratio: float | None) -> int | None:
    """How many bytes extracting ``archive`` may write; None for no limit."""
    if max_size is None or max_ratio is None:
        return None
    return max(max_size, int(max_ratio * os.path.getsize(archive)))


def _too_big(archive: Path, limit: int, detail: str) -> ValueError:
    return ValueError(
        f"Refusing to extract {archive.name!r}: {detail}, more than the limit of "
        f"{limit:,} bytes (it must exceed both max_size and max_ratio times the "
        f"{os.path.getsize(archive):,}-byte archive: a zip bomb?). Nothing was extracted. "
        "If you trust this archive, pass a larger max_size=/max_ratio=, or max_size=None "
        "for no limit, e.g. record.extract(max_size=None)."
    )


def _check_expansion(archive: Path, entries: list[_Entry], limit: int | None) -> None:
    """Refuse an archive whose declared sizes exceed ``limit`` (before writing anything)."""
    declared = sum(entry.size for entry in entries if entry.kind in ("file", "hardlink"))
    if limit is not None and declared > limit:
        raise _too_big(archive, limit, f"its members declare {declared:,} bytes")


# --- Reading members ---------------------------------------------------------------------


def _file_mode(mode: int) -> int:
    return 0o755 if mode & 0o100 else 0o644


def _zip_entries(archive: Path, zf: zipfile.ZipFile) -> list[_Entry]:
    entries: list[_Entry] = []
    for index, info in enumerate(zf.infolist()):
        name = info.filename
        parts = _safe_parts(archive, name)
        unix_mode = info.external_attr >> 16
        file_type = stat.S_IFMT(unix_mode)
        try:
            mtime: float | None = time.mktime((*info.date_time, 0, 0, -1))
        except (OverflowError, ValueError):
            mtime = None
        if info.is_dir() or file_type == stat.S_IFDIR:
            entries.append(_Entry(index, name, "dir", parts))
        elif file_type == stat.S_IFLNK:
            if info.file_size > _MAX_SYMLINK_TARGET:
                raise UnsafeArchiveError(archive, name, "is a symlink with an oversized target")
            target = zf.read(info).decode("utf-8", errors="surrogateescape")
            entries.append(_Entry(index, name, "symlink", parts, link=target))
        elif file_type in (0, stat.S_IFREG):
            if info.flag_bits & 0x1:
                raise ValueError(
                    f"Cannot extract {archive.name!r}: member {name!r} is encrypted; "
                    "password-protected zip files are not supported. Nothing was extracted."
                )
            entries.append(
                _Entry(
                    index,
                    name,
                    "file",
                    parts,
                    mode=_file_mode(unix_mode),
                    mtime=mtime,
                    size=info.file_size,
                )
            )
        else:
            raise UnsafeArchiveError(archive, name, "is a special file (device, fifo or socket)")
    return entries


def _tar_filter_check(archive: Path, members: list[tarfile.TarInfo], root: Path) -> None:
    """Also ask Python's own tar data filter (3.12+, backported to 3.10.12/3.11.4)."""
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is None:
        return
    for member in members:
        try:
            data_filter(member, str(root))
        except tarfile.FilterError as exc:
            raise UnsafeArchiveError(
                archive, member.name, f"was refused by tarfile's data filter ({exc})"
            ) from None


def _tar_entries(archive: Path, members: list[tarfile.TarInfo]) -> list[_Entry]:
    entries: list[_Entry] = []
    sizes: dict[tuple[str, ...], int] = {}  # files so far: a hardlink is written as a copy
    for index, member in enumerate(members):
        name = member.name
        parts = _safe_parts(archive, name)
        if member.isdir():
            entry = _Entry(index, name, "dir", parts)
        elif member.isreg():
            entry = _Entry(
                index,
                name,
                "file",
                parts,
                mode=_file_mode(member.mode),
                mtime=float(member.mtime),
                size=member.size,
            )
            sizes[parts] = member.size
        elif member.issym():
            entry = _Entry(index, name, "symlink", parts, link=member.linkname)
        elif member.islnk():
            link = member.linkname
            if "\x00" in link or _is_absolute(link):
                raise UnsafeArchiveError(
                    archive, name, f"is a hardlink to an absolute path ({link!r})"
                )
            try:
                link_parts = _safe_parts(archive, link)
            except UnsafeArchiveError:
                raise UnsafeArchiveError(
                    archive, name, f"is a hardlink pointing outside the target ({link!r})"
                ) from None
            entry = _Entry(
                index,
                name,
                "hardlink",
                parts,
                size=sizes.get(link_parts, 0),
                link=link,
                link_parts=link_parts,
            )
        else:
            raise UnsafeArchiveError(
                archive, name, "is a special file (device, fifo or other non-regular type)"
            )
        entries.append(entry)
    return entries


def _corrupt(archive: Path, fmt: str, exc: BaseException) -> ValueError:
    return ValueError(
        f"{archive.name!r} is not a valid {fmt} archive ({exc}). If it is a single "
        "compressed data file (data.csv.gz), read it directly with read_pandas/read_polars "
        "instead of extracting it."
    )


def _decode_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [tarfile.TarError, EOFError, lzma.LZMAError]
    errors.append(gzip.BadGzipFile)
    errors.append(zlib.error)
    try:
        import zstandard
    except ImportError:
        pass
    else:
        errors.append(zstandard.ZstdError)
    return tuple(errors)


@contextlib.contextmanager
def _open_tar(archive: Path, fmt: str) -> Iterator[tarfile.TarFile]:
    with contextlib.ExitStack() as stack:
        try:
            if fmt == "tar.zst":
                try:
                    import zstandard
                except ImportError as exc:
                    raise ImportError(
                        "Extracting .tar.zst archives needs zstandard, which is not "
                        "installed. Install it with: pip install zstandard"
                    ) from exc
                raw = stack.enter_context(open(archive, "rb"))
                reader = stack.enter_context(
                    zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
                )
                tf = stack.enter_context(tarfile.open(fileobj=reader, mode="r|"))
            else:
                modes: dict[str, Literal["r:", "r:gz", "r:bz2", "r:xz"]] = {
                    "tar": "r:",
                    "tar.gz": "r:gz",
                    "tar.bz2": "r:bz2",
                    "tar.xz": "r:xz",
                }
                tf = stack.enter_context(tarfile.open(archive, mode=modes[fmt]))
        except _decode_errors() as exc:
            raise _corrupt(archive, fmt, exc) from exc
        yield tf


def _tar_members_list(archive: Path, fmt: str, tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    try:
        return tf.getmembers()
    except _decode_errors() as exc:
        raise _corrupt(archive, fmt, exc) from exc


# --- Writing -----------------------------------------------------------------------------


class _Writer:
    """Writes entries under ``root`` and can undo what it created.

    It counts the bytes written and stops beyond ``limit`` (None: no limit), whatever the
    archive's headers declared.
    """

    def __init__(self, archive: Path, root: Path, limit: int | None = None) -> None:
        self.archive = archive
        self.root = root
        self.limit = limit
        self.written = 0
        self.created: list[Path] = []

    def makedirs(self, path: Path) -> None:
        missing: list[Path] = []
        probe = path
        while not os.path.lexists(probe):
            missing.append(probe)
            probe = probe.parent
        for directory in reversed(missing):
            os.mkdir(directory)
            self.created.append(directory)

    def _track(self, path: Path) -> None:
        if not os.path.lexists(path):
            self.created.append(path)

    def write_file(self, path: Path, source: IO[bytes], mode: int, mtime: float | None) -> None:
        self.makedirs(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                self._copy(source, out)
            os.chmod(tmp, mode)
            if mtime is not None:
                with contextlib.suppress(OSError, OverflowError, ValueError):
                    os.utime(tmp, (mtime, mtime))
            self._track(path)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _copy(self, source: IO[bytes], out: IO[bytes]) -> None:
        while chunk := source.read(_COPY_CHUNK):
            self.written += len(chunk)
            if self.limit is not None and self.written > self.limit:
                raise _too_big(
                    self.archive,
                    self.limit,
                    f"it expands to more than its headers declared ({self.written:,} bytes "
                    "written so far, removed again)",
                )
            out.write(chunk)

    def copy_file(self, source: Path, path: Path) -> None:
        mode = stat.S_IMODE(os.stat(source).st_mode)
        mtime = os.stat(source).st_mtime
        with open(source, "rb") as fh:
            self.write_file(path, fh, mode, mtime)

    def symlink(self, target: str, path: Path) -> None:
        self.makedirs(path.parent)
        tmp = path.parent / f".{path.name[:40]}.{os.getpid()}.{id(self)}.link"
        os.symlink(target, tmp)
        try:
            self._track(path)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # Defence in depth: the link must still resolve inside the target.
        real = os.path.realpath(path)
        if not _inside(real, os.path.realpath(self.root)):
            raise UnsafeArchiveError(
                self.archive, str(path), f"is a symlink resolving outside the target ({real!r})"
            )

    def rollback(self) -> None:
        for path in reversed(self.created):
            with contextlib.suppress(OSError):
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
        self.created.clear()


def _write(
    archive: Path,
    entries: list[_Entry],
    root: Path,
    open_member: Iterator[tuple[_Entry, IO[bytes] | None]],
    limit: int | None = None,
) -> list[Path]:
    writer = _Writer(archive, root, limit)
    written: dict[Path, None] = {}
    symlinks: list[_Entry] = []
    try:
        writer.makedirs(root)
        for entry, data in open_member:
            if not entry.parts:
                continue
            path = root.joinpath(*entry.parts)
            if entry.kind == "dir":
                writer.makedirs(path)
            elif entry.kind == "file":
                assert data is not None
                writer.write_file(path, data, entry.mode, entry.mtime)
                written[path] = None
            elif entry.kind == "hardlink":
                assert entry.link_parts is not None
                writer.copy_file(root.joinpath(*entry.link_parts), path)
                written[path] = None
            else:
                symlinks.append(entry)
        for entry in symlinks:
            path = root.joinpath(*entry.parts)
            assert entry.link is not None
            writer.symlink(entry.link, path)
            written[path] = None
    except BaseException:
        writer.rollback()
        raise
    return list(written)


def extract(
    archive: str | os.PathLike[str],
    to: str | os.PathLike[str],
    *,
    format: str | None = None,
    max_size: int | None = DEFAULT_MAX_SIZE,
    max_ratio: float | None = DEFAULT_MAX_RATIO,
) -> list[Path]:
    """Safely unpack a zip or tar archive into the folder ``to`` (created if needed).

    ``format`` is one of :data:`ARCHIVE_FORMATS` (aliases like ``"tgz"`` work); by
    default it is detected from the magic bytes, then the name. Returns the absolute
    paths of the extracted files (regular files, hardlinks written as copies, symlinks),
    in archive order. Existing files with the same names are replaced.

    ``max_size`` / ``max_ratio`` guard against zip bombs: an archive that expands beyond
    ``max_size`` bytes *and* beyond ``max_ratio`` times its own size is refused (defaults:
    1 GiB and 1000:1); ``None`` for either lifts the limit.

    Raises :class:`UnsafeArchiveError` (a ``ValueError``) naming the member if any member
    could escape ``to`` or is a device/fifo; ``ValueError`` if the file is not a valid
    archive, clashes with what is on disk or expands beyond the limit;
    ``QuotaExceededError`` if the declared size does not fit on the disk. In every one of
    these cases nothing is written. If an I/O error, a corrupt member or more bytes than
    the headers declared interrupt the extraction, the files and folders created so far
    are removed.
    """
    archive = Path(archive)
    root = Path(os.path.abspath(to))
    if os.path.lexists(root) and not os.path.isdir(root):
        raise ValueError(f"Cannot extract into {str(root)!r}: it exists and is not a folder.")
    fmt = detect_archive_format(archive, format)
    limit = _size_limit(archive, max_size, max_ratio)

    if fmt == "zip":
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{archive.name!r} is not a valid zip archive ({exc}).") from exc
        with zf:
            return _extract_zip(archive, zf, root, limit)

    with _open_tar(archive, fmt) as tf:
        members = _tar_members_list(archive, fmt, tf)
        entries = _tar_entries(archive, members)
        _validate(archive, entries, root)  # our checks first: their messages are clearer
        _tar_filter_check(archive, members, root)
        _check_expansion(archive, entries, limit)
        _check_space(archive, entries, root)
        if fmt != "tar.zst":  # random access: write from the same handle
            return _write(archive, entries, root, _tar_members(tf, entries), limit)
    with _open_tar(archive, fmt) as tf:  # a stream: read it a second time
        return _write(archive, entries, root, _tar_members(tf, entries), limit)


def _extract_zip(archive: Path, zf: zipfile.ZipFile, root: Path, limit: int | None) -> list[Path]:
    """Check and write the members of an open zip; a damaged member is a ValueError."""
    reading = ""  # the member being read, for the error message
    try:
        entries = _zip_entries(archive, zf)
        _validate(archive, entries, root)
        _check_expansion(archive, entries, limit)
        _check_space(archive, entries, root)

        def zip_members() -> Iterator[tuple[_Entry, IO[bytes] | None]]:
            nonlocal reading
            infos = zf.infolist()
            for entry in entries:
                if entry.kind != "file":
                    yield entry, None
                    continue
                reading = entry.name
                with zf.open(infos[entry.index]) as data:
                    yield entry, data

        return _write(archive, entries, root, zip_members(), limit)
    except _ZIP_MEMBER_ERRORS as exc:  # _write has already removed what it created
        member = f"member {reading!r}" if reading else "a member"
        raise ValueError(
            f"Cannot extract {archive.name!r}: {member} is corrupt ({exc or type(exc).__name__})"
            "; the archive is damaged (a truncated or altered download?). Nothing was "
            "extracted. Download it again, or check it with another zip tool."
        ) from exc


def _tar_members(
    tf: tarfile.TarFile, entries: list[_Entry]
) -> Iterator[tuple[_Entry, IO[bytes] | None]]:
    index = 0
    for member in tf:
        if index >= len(entries) or entries[index].name != member.name:
            raise ValueError(
                "The archive changed while it was being extracted (member "
                f"{member.name!r}); extraction was undone."
            )
        entry = entries[index]
        index += 1
        if entry.kind != "file":
            yield entry, None
            continue
        data = tf.extractfile(member)
        if data is None:  # pragma: no cover - isreg() members always have data
            raise ValueError(f"Cannot read member {member.name!r} of the archive.")
        with data:
            yield entry, data
