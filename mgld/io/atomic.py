"""Atomic file writes: write a temporary file next to the target, then rename it onto the target.

A reader never sees a half-written output, and an interrupted run leaves at most a temporary file
(``.<name>.<random>.mgld-tmp``), which :func:`remove_temporaries` cleans up; every writer in mgld goes through
:func:`atomic_write`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".mgld-tmp"


def atomic_write(path: str | Path, data: bytes | str | Callable[[str], None]) -> Path:
    """Write ``data`` (bytes, text, or a function that writes a given file path) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
    try:
        if callable(data):
            data(str(tmp))
        else:
            tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_temporaries(folder: str | Path, min_age_s: float = 0.0) -> None:
    """Remove temporary files left in ``folder`` by an interrupted run.

    ``min_age_s`` spares younger ones: other processes that write into the same folder without a common start
    (``--shard`` jobs) may be writing them right now.
    """
    now = time.time()
    for tmp in Path(folder).glob(f"*{TEMP_SUFFIX}"):
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime >= min_age_s:
                tmp.unlink(missing_ok=True)
        except OSError:
            continue
