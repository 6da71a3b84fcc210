"""Questions about the disk asked before writing: where, and how much room."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["free_space", "nearest_existing"]


def nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its closest existing ancestor."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def free_space(path: Path) -> int | None:
    """Bytes free on the filesystem that ``path`` is (or would be) on; None if unknown."""
    try:
        return shutil.disk_usage(nearest_existing(path)).free
    except OSError:
        return None


def fsync_dir(path: Path) -> None:
    """Make the renames in a folder durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
