"""Tests for ipybgfetch._data.archive: safe extraction of zip and tar archives."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Literal

import pytest

from ipybgfetch._data import archive as _archive
from ipybgfetch._data.archive import (
    ARCHIVE_FORMATS,
    UnsafeArchiveError,
    detect_archive_format,
    extract,
)
from ipybgfetch._exceptions import BackgroundFetchError

needs_symlinks = pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")

# --- archive builders --------------------------------------------------------------------

Member = tuple[str, str, "bytes | str | None"]  # (kind, name, data-or-link-target)


def tar_member(kind: str, name: str, data: bytes | str | None) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mtime = 1_600_000_000
    payload = b""
    if kind == "file":
        payload = data if isinstance(data, bytes) else str(data or "").encode()
        info.size = len(payload)
        info.mode = 0o644
    elif kind == "exec":
        payload = data if isinstance(data, bytes) else str(data or "").encode()
        info.size = len(payload)
        info.mode = 0o755
    elif kind == "dir":
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    elif kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = str(data)
    elif kind == "hardlink":
        info.type = tarfile.LNKTYPE
        info.linkname = str(data)
    elif kind == "fifo":
        info.type = tarfile.FIFOTYPE
    elif kind == "chr":
        info.type = tarfile.CHRTYPE
        info.devmajor, info.devminor = 1, 3
    else:
        raise AssertionError(kind)
    return info, payload


def tar_bytes(members: list[Member], compression: str = "") -> bytes:
    buf = io.BytesIO()
    modes: dict[str, Literal["w", "w:gz", "w:bz2", "w:xz"]] = {
        "": "w",
        "zst": "w",
        "gz": "w:gz",
        "bz2": "w:bz2",
        "xz": "w:xz",
    }
    with tarfile.open(fileobj=buf, mode=modes[compression], format=tarfile.PAX_FORMAT) as tf:
        for kind, name, data in members:
            info, payload = tar_member(kind, name, data)
            tf.addfile(info, io.BytesIO(payload) if payload else None)
    raw = buf.getvalue()
    if compression == "zst":
        zstandard = pytest.importorskip("zstandard")
        raw = zstandard.ZstdCompressor().compress(raw)
    return raw


def zip_bytes(members: list[Member]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for kind, name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2020, 9, 13, 12, 26, 40))
            info.create_system = 3  # unix, so external_attr carries the file type
            payload = data if isinstance(data, bytes) else str(data or "").encode()
            if kind == "file":
                info.external_attr = (stat.S_IFREG | 0o644) << 16
            elif kind == "exec":
                info.external_attr = (stat.S_IFREG | 0o755) << 16
            elif kind == "dir":
                info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                payload = b""
            elif kind == "symlink":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            elif kind == "fifo":
                info.external_attr = (stat.S_IFIFO | 0o644) << 16
            elif kind == "chr":
                info.external_attr = (stat.S_IFCHR | 0o644) << 16
            else:
                raise AssertionError(kind)
            zf.writestr(info, payload)
    return buf.getvalue()


def build(tmp_path: Path, kind: str, members: list[Member]) -> Path:
    """Write an archive of ``kind`` ("zip", "tar", "tar.gz", ...) and return its path."""
    if kind == "zip":
        data = zip_bytes(members)
    else:
        compression = {"tar": "", "tar.gz": "gz", "tar.bz2": "bz2", "tar.xz": "xz"}.get(kind, "zst")
        data = tar_bytes(members, compression)
    path = tmp_path / f"archive.{kind}"
    path.write_bytes(data)
    return path


def tree(root: Path) -> dict[str, str]:
    """Everything under root: relative path -> 'dir' / 'link:<target>' / file text."""
    out: dict[str, str] = {}
    if not os.path.lexists(root):
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                out[rel] = f"link:{os.readlink(full)}"
            elif full.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = full.read_text(errors="replace")
    return out


# --- benign archives ---------------------------------------------------------------------

BENIGN: list[Member] = [
    ("dir", "./", None),
    ("dir", "data/", None),
    ("file", "data/a.csv", "x,y\n1,2\n"),
    ("exec", "bin/run.sh", "#!/bin/sh\necho hi\n"),
    ("file", "./data/nested/deep/b.txt", "deep"),
    ("file", "data/x/../c.txt", "normalised"),
]

TAR_KINDS = ["tar", "tar.gz", "tar.bz2", "tar.xz", "tar.zst"]
ALL_KINDS = ["zip", *TAR_KINDS]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_benign_archive_round_trip(tmp_path: Path, kind: str) -> None:
    archive = build(tmp_path, kind, BENIGN)
    assert detect_archive_format(archive) == kind
    target = tmp_path / "out" / "nested"  # created, parents too
    paths = extract(archive, target)
    assert paths == [
        target / "data/a.csv",
        target / "bin/run.sh",
        target / "data/nested/deep/b.txt",
        target / "data/c.txt",
    ]
    assert all(p.is_absolute() for p in paths)
    assert tree(target) == {
        "data": "dir",
        "data/a.csv": "x,y\n1,2\n",
        "data/nested": "dir",
        "data/nested/deep": "dir",
        "data/nested/deep/b.txt": "deep",
        "data/c.txt": "normalised",
        "bin": "dir",
        "bin/run.sh": "#!/bin/sh\necho hi\n",
    }
    if os.name != "nt":
        assert os.stat(target / "bin/run.sh").st_mode & 0o100
        assert not os.stat(target / "data/a.csv").st_mode & 0o111
    assert abs(os.stat(target / "data/a.csv").st_mtime - 1_600_000_000) < 2 * 86400
    # No temporary files are left behind.
    assert not [p for p in target.rglob("*") if p.name.startswith(".")]


@needs_symlinks
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_links_that_stay_inside_are_kept(tmp_path: Path, kind: str) -> None:
    members: list[Member] = [
        ("file", "v1/data.csv", "a\n1\n"),
        ("symlink", "latest", "v1/data.csv"),
        ("symlink", "v1/self", "../v1/data.csv"),
        ("symlink", "here", "."),
    ]
    if kind != "zip":
        members.append(("hardlink", "copy.csv", "v1/data.csv"))
    archive = build(tmp_path, kind, members)
    target = tmp_path / "out"
    paths = extract(archive, target)
    assert (target / "latest").is_symlink()
    assert (target / "latest").read_text() == "a\n1\n"
    assert (target / "v1/self").read_text() == "a\n1\n"
    if kind != "zip":
        copy = target / "copy.csv"
        assert copy in paths and copy.read_text() == "a\n1\n"
        assert not copy.is_symlink()
        assert os.stat(copy).st_ino != os.stat(target / "v1/data.csv").st_ino  # a copy


def test_existing_files_are_replaced(tmp_path: Path) -> None:
    target = tmp_path / "out"
    (target / "data").mkdir(parents=True)
    (target / "data/a.csv").write_text("old")
    (target / "keep.txt").write_text("untouched")
    extract(build(tmp_path, "zip", BENIGN), target)
    assert (target / "data/a.csv").read_text() == "x,y\n1,2\n"
    assert (target / "keep.txt").read_text() == "untouched"


def test_empty_archive(tmp_path: Path) -> None:
    assert extract(build(tmp_path, "zip", []), tmp_path / "out") == []
    assert (tmp_path / "out").is_dir()


# --- hostile archives --------------------------------------------------------------------

GOOD_FIRST: Member = ("file", "good.txt", "I come first and must not be written")

HOSTILE_BOTH: dict[str, tuple[list[Member], str]] = {
    "zip-slip": ([("file", "../evil.txt", "pwned")], "climb out"),
    "deep-slip": ([("file", "a/b/../../../evil.txt", "pwned")], "climb out"),
    "backslash-slip": ([("file", "..\\evil.txt", "pwned")], "climb out"),
    "absolute": ([("file", "/tmp/ipybgfetch-evil.txt", "pwned")], "absolute path"),
    "drive-letter": ([("file", "C:/evil.txt", "pwned")], "drive letter"),
    "symlink-etc": ([("symlink", "etc", "/etc")], "absolute path"),
    "symlink-up": ([("symlink", "up", "../outside")], "outside the target"),
    "symlink-deep-up": ([("symlink", "a/b/up", "../../../outside")], "outside the target"),
    "symlink-chain": (
        [("symlink", "a", "."), ("symlink", "b", "a/../../outside")],
        "outside the target",
    ),
    "symlink-via-link-dir": (
        [("symlink", "d", "sub/.."), ("dir", "sub/", None), ("symlink", "e", "d/../x")],
        "outside the target",
    ),
    "write-through-symlink": (
        [("dir", "real/", None), ("symlink", "link", "real"), ("file", "link/f.txt", "x")],
        "through the symlink",
    ),
    "fifo": ([("fifo", "pipe", None)], "special file"),
    "device": ([("chr", "null", None)], "special file"),
    "file-and-dir-clash": (
        [("file", "x", "file"), ("file", "x/y", "child")],
        "also has it as a file",
    ),
}

HOSTILE_TAR: dict[str, tuple[list[Member], str]] = {
    "hardlink-absolute": ([("hardlink", "passwd", "/etc/passwd")], "absolute path"),
    "hardlink-up": ([("hardlink", "h", "../outside/secret.txt")], "outside"),
    "hardlink-missing": ([("hardlink", "h", "not-in-archive.txt")], "not a file earlier"),
    "hardlink-to-symlink": (
        [("symlink", "s", "good.txt"), ("hardlink", "h", "s")],
        "not a file earlier",
    ),
    "hardlink-before-target": (
        [("hardlink", "h", "later.txt"), ("file", "later.txt", "x")],
        "not a file earlier",
    ),
}


def _assert_nothing_written(tmp_path: Path, target: Path, outside_before: dict[str, str]) -> None:
    assert tree(target) == {}, "the hostile archive wrote into the target"
    assert tree(tmp_path / "outside") == outside_before, "the hostile archive wrote outside"
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/ipybgfetch-evil.txt").exists()


# zip: every case but hardlinks (zip has none). tar: with Python's data filter (3.12+,
# 3.11.4+) and without it (older Pythons), so our own checks are proven sufficient alone.
HOSTILE_PARAMS = [
    *[pytest.param("zip", case, True, id=f"zip-{case}") for case in HOSTILE_BOTH],
    *[
        pytest.param(kind, case, tar_filter, id=f"{kind}-{case}-{label}")
        for kind in ("tar", "tar.gz", "tar.zst")
        for case in (*HOSTILE_BOTH, *HOSTILE_TAR)
        for tar_filter, label in ((True, "filter"), (False, "no-filter"))
    ],
]


@pytest.mark.parametrize(("kind", "case", "tar_filter"), HOSTILE_PARAMS)
def test_hostile_archives_write_nothing(
    tmp_path: Path, kind: str, case: str, tar_filter: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not tar_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    members, needle = HOSTILE_BOTH.get(case) or HOSTILE_TAR[case]
    archive_dir = tmp_path / "archives"
    archive_dir.mkdir()
    archive = build(archive_dir, kind, [GOOD_FIRST, *members])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    before = tree(outside)
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError) as info:
        extract(archive, target)
    error = info.value
    assert isinstance(error, ValueError) and isinstance(error, BackgroundFetchError)
    message = str(error)
    assert needle in message, message
    assert repr(error.member) in message
    assert error.member in {name for _, name, _ in members}
    assert "Nothing was extracted" in message
    assert not target.exists()
    _assert_nothing_written(tmp_path, target, before)


@needs_symlinks
def test_symlink_already_on_disk_is_not_followed_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "sub")
    for kind in ("zip", "tar"):
        archive = build(tmp_path, kind, [("file", "sub/evil.txt", "pwned")])
        with pytest.raises(UnsafeArchiveError, match="outside the target"):
            extract(archive, target)
        archive = build(tmp_path, kind, [("symlink", "x", "sub/../..")])
        with pytest.raises(UnsafeArchiveError, match="outside the target"):
            extract(archive, target)
    assert tree(outside) == {}
    assert tree(target) == {"sub": f"link:{outside}"}


def test_clash_with_disk_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "target"
    (target / "data").mkdir(parents=True)
    (target / "data" / "a.csv").mkdir()  # a folder where the archive has a file
    with pytest.raises(ValueError, match="already exists"):
        extract(build(tmp_path, "tar", BENIGN), target)
    assert tree(target) == {"data": "dir", "data/a.csv": "dir"}


def test_io_error_midway_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = build(tmp_path, "tar.gz", BENIGN)
    target = tmp_path / "target"
    real_replace = os.replace
    calls = {"n": 0}

    def flaky_replace(src: str, dst: str) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(_archive.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="No space"):
        extract(archive, target)
    assert not target.exists()


def test_not_enough_space_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ipybgfetch._exceptions import QuotaExceededError

    archive = build(tmp_path, "zip", BENIGN)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=3))
    with pytest.raises(QuotaExceededError, match="needs"):
        extract(archive, tmp_path / "target")
    assert not (tmp_path / "target").exists()


# --- formats and errors ------------------------------------------------------------------


def test_format_argument_and_aliases(tmp_path: Path) -> None:
    archive = tmp_path / "download.bin"  # a name that says nothing
    archive.write_bytes(tar_bytes(BENIGN, "gz"))
    assert detect_archive_format(archive) == "tar.gz"
    assert len(extract(archive, tmp_path / "a", format="tgz")) == 4
    assert len(extract(archive, tmp_path / "b", format=".TAR.GZ")) == 4
    assert set(ARCHIVE_FORMATS) >= {"zip", "tar", "tar.gz", "tar.bz2", "tar.xz"}
    with pytest.raises(ValueError, match="Unsupported archive format='rar'"):
        extract(archive, tmp_path / "c", format="rar")


def test_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a zip or tar archive"):
        extract(path, tmp_path / "out")
    gz = tmp_path / "data.csv.gz"
    import gzip

    gz.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    with pytest.raises(ValueError, match="read_pandas"):
        extract(gz, tmp_path / "out")
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(ValueError, match="not a valid zip"):
        extract(bad_zip, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_target_must_be_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        extract(build(tmp_path, "zip", BENIGN), tmp_path / "file")


def test_encrypted_zip_member_is_refused(tmp_path: Path) -> None:
    data = bytearray(zip_bytes([("file", "a.txt", "x")]))
    # Set the "encrypted" flag bit in both the local and the central header.
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature) + offset
        data[at] |= 0x1
    path = tmp_path / "enc.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="encrypted"):
        extract(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extraction_is_quick_for_many_members(tmp_path: Path) -> None:
    members: list[Member] = [("file", f"d{i % 10}/f{i}.txt", str(i)) for i in range(500)]
    archive = build(tmp_path, "zip", members)
    started = time.perf_counter()
    assert len(extract(archive, tmp_path / "out")) == 500
    assert time.perf_counter() - started < 10


# --- corrupt members and zip bombs -------------------------------------------------------


def damaged_zip(method: int) -> bytes:
    """A zip whose second member's data has one byte changed (a CRC or stream error)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        zf.writestr("a.csv", "a,b\n1,2\n")
        zf.writestr("b.csv", "hello world\n" * 200)
        info = zf.getinfo("b.csv")
    data = bytearray(buf.getvalue())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0x55
    return bytes(data)


def zeros_zip(size: int, first: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        if first:
            zf.writestr("first.txt", first)
        zf.writestr("zeros.bin", bytes(size))
    return buf.getvalue()


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_corrupt_zip_member_is_a_value_error_and_rolls_back(tmp_path: Path, method: int) -> None:
    archive = tmp_path / "damaged.zip"
    archive.write_bytes(damaged_zip(method))
    target = tmp_path / "out"
    with pytest.raises(ValueError, match=r"member 'b\.csv' is corrupt.*Download it again"):
        extract(archive, target)
    assert not target.exists()  # a.csv, written before b.csv, was removed again


def test_zip_bomb_is_refused_up_front(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(zeros_zip(20 << 20))  # about 20 KB: 1000:1
    target = tmp_path / "out"
    with pytest.raises(ValueError, match=r"declare 20,971,520 bytes.*max_size=None") as info:
        extract(archive, target, max_size=1 << 20)
    assert not isinstance(info.value, UnsafeArchiveError)
    assert not target.exists()
    # Both limits must be exceeded: by default (1 GiB) or with max_size=None it unpacks.
    assert extract(archive, tmp_path / "a", max_ratio=2)[0].stat().st_size == 20 << 20
    assert len(extract(archive, tmp_path / "b", max_size=1 << 20, max_ratio=None)) == 1
    assert len(extract(archive, tmp_path / "c", max_size=1 << 20, max_ratio=2000)) == 1


def test_tar_hardlinks_count_as_the_copies_they_become(tmp_path: Path) -> None:
    members: list[Member] = [("file", "zeros.bin", bytes(1 << 20))]
    members += [("hardlink", f"copy{i}.bin", "zeros.bin") for i in range(30)]
    archive = tmp_path / "links.tar.gz"
    archive.write_bytes(tar_bytes(members, "gz"))
    target = tmp_path / "out"
    with pytest.raises(ValueError, match=r"declare 32,505,856 bytes"):
        extract(archive, target, max_size=8 << 20, max_ratio=100)
    assert not target.exists()


def test_more_bytes_than_declared_are_stopped_while_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers can lie: with the up-front check blinded, the byte count still stops it."""
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(zeros_zip(5 << 20, first=b"written first"))
    monkeypatch.setattr(_archive, "_check_expansion", lambda *args: None)
    target = tmp_path / "out"
    with pytest.raises(ValueError, match=r"more than its headers declared.*max_size="):
        extract(archive, target, max_size=1 << 20, max_ratio=1)
    assert not target.exists()


def test_record_extract_passes_the_limits(tmp_path: Path) -> None:
    import ipybgfetch
    from ipybgfetch.testing import DataServer

    with DataServer() as srv, ipybgfetch.BackgroundFetchManager(home=tmp_path) as mgr:
        bomb = srv.add_file("/bomb.zip", zeros_zip(5 << 20))
        damaged = srv.add_file("/damaged.zip", damaged_zip(zipfile.ZIP_STORED))
        reg = mgr.fetch("archives", [bomb, damaged]).wait(30)
        record = reg.match(bomb)
        with pytest.raises(ValueError, match=r"record\.extract\(max_size=None\)"):
            record.extract(tmp_path / "refused", max_size=1 << 20, max_ratio=10)
        assert not (tmp_path / "refused").exists()
        assert [p.name for p in record.extract(tmp_path / "ok")] == ["zeros.bin"]
        with pytest.raises(ValueError, match="corrupt"):
            reg.match(damaged).extract(tmp_path / "damaged")
        assert not (tmp_path / "damaged").exists()
