"""Atomic file writes: write a temporary file next to the target, then rename it onto the target.

A reader never sees a half-written output, and an interrupted run leaves at most a temporary file
(``.<name>.<random>.mgld-tmp``), which :func:`remove_temporaries` cleans up. The writers of outputs, manifests,
converted weights, cached latents and training checkpoints go through :func:`atomic_write` (checkpoints with
``fsync=True``: the file is flushed to disk before the rename and the folder after it).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".mgld-tmp"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes | str | Callable[[str], None], fsync: bool = False) -> Path:
    """Write ``data`` (bytes, text, or a function that writes a given file path) to ``path`` atomically.

    ``fsync``: flush the temporary file to disk before the rename and the folder after it, so that the new file
    (not only the old one) survives a power loss.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
    try:
        if callable(data):
            data(str(tmp))
        else:
            tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)
    return path


def remove_temporaries(folder: str | Path, min_age_s: float = 0.0) -> list[Path]:
    """Remove temporary files left in ``folder`` by an interrupted run; returns the ones removed.

    ``min_age_s`` spares younger ones: other processes that write into the same folder without a common start
    (``--shard`` jobs) may be writing them right now.
    """
    now = time.time()
    removed = []
    for tmp in Path(folder).glob(f"*{TEMP_SUFFIX}"):
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime >= min_age_s:
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        except OSError:
            continue
    return removed
