"""Training checkpoints that survive kills and full disks, and the choice of the checkpoint to resume from.

* :class:`AtomicCheckpointIO` (a Lightning ``CheckpointIO`` plug-in) writes each checkpoint to a temporary file in
  the checkpoint's own folder (``.<name>.<random>.mgld-tmp``, the :mod:`mgld.io.atomic` naming), flushes and
  fsyncs it, renames it onto the target and fsyncs the folder. A kill or a full disk therefore leaves either
  the previous checkpoint or the new one, never a truncated file (Lightning's own writer stages the file in the
  system temp folder and *moves* it, which across file systems is a copy that a kill can cut short). It reads
  checkpoints with ``torch.load(weights_only=True)``; a damaged file raises :class:`CheckpointError` naming it.
* :func:`remove_stale_temporaries` deletes the temporary files an interrupted save left (run at every start).
* :func:`find_resume_checkpoint`: the newest checkpoint of a run that loads -- ``stepNNNNNNNN.ckpt`` by step,
  newest first, then ``last.ckpt`` -- with the ones it skipped and why.

A checkpoint is never loaded with ``weights_only=False``, and no message suggests it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from mgld.io.atomic import atomic_write, remove_temporaries
from mgld.weights.checkpoints import CheckpointError

log = logging.getLogger(__name__)
_STEP_FILE = re.compile(r"step(\d+)\.ckpt$")


def save_atomically(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, rename it onto ``path``, fsync the folder
    (:func:`mgld.io.atomic.atomic_write` with ``fsync=True``).

    On any failure (a full disk, an interrupt) the temporary file is removed and ``path`` is untouched; an
    ``OSError`` is re-raised naming ``path``.
    """
    path = Path(path)

    def write_file(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    try:
        return atomic_write(path, write_file, fsync=True)
    except OSError as err:
        raise OSError(err.errno, f"could not write checkpoint {path}: {err.strerror or err}") from err


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict:
    """A training checkpoint read with ``torch.load(weights_only=True)``; :class:`CheckpointError` naming the file
    when it is missing, truncated, corrupt or holds anything but tensors and plain containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (an interrupted save?)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # the messages of torch's unpickler would advise an unsafe load: never pass them on
        if isinstance(err, torch.serialization.pickle.UnpicklingError) or "weights_only" in str(err):
            reason = "holds objects other than tensors and plain containers (refused: unsafe to unpickle)"
        else:
            reason = f"truncated or corrupt ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        raise CheckpointError(f"{path}: {reason}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "global_step" not in checkpoint:
        raise CheckpointError(f"{path}: not a training checkpoint (no state_dict / global_step)")
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO``: atomic, fsynced saves; safe loads (module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        save_atomically(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        if weights_only is False:
            raise CheckpointError(f"{path}: refusing weights_only=False (checkpoints are read as tensors only)")
        return load_checkpoint_file(path, map_location if map_location is not None else "cpu")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files of interrupted saves in ``folder``; returns what was removed."""
    folder = Path(folder)
    removed = remove_temporaries(folder) if folder.is_dir() else []
    if removed:
        log.warning("removed %d temporary file(s) of an interrupted checkpoint save in %s", len(removed), folder)
    return removed


def checkpoint_candidates(folder: str | Path) -> list[Path]:
    """``stepNNNNNNNN.ckpt`` files by step, newest first, then ``last.ckpt`` (which is never newer: every save of
    ``last.ckpt`` follows the save of its step file)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    steps = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name)) and p.is_file()]
    found = [p for _, p in sorted(steps, reverse=True)]
    if (folder / "last.ckpt").is_file():
        found.append(folder / "last.ckpt")
    return found


def find_resume_checkpoint(folder: str | Path) -> tuple[Path, list[tuple[Path, str]]]:
    """The newest checkpoint in ``folder`` that loads, and ``[(skipped file, why)]`` for the newer ones that do not.

    Raises ``FileNotFoundError`` when the folder holds no checkpoint and :class:`CheckpointError` (listing each
    file and its problem) when none loads.
    """
    candidates = checkpoint_candidates(folder)
    if not candidates:
        raise FileNotFoundError(f"--resume: no checkpoint in {folder} (nothing to resume)")
    skipped = []
    for path in candidates:
        try:
            load_checkpoint_file(path, mmap=True)
        except CheckpointError as err:
            skipped.append((path, str(err).removeprefix(f"{path}: ")))
            continue
        for bad, why in skipped:
            log.warning("--resume: skipped %s: %s", bad, why)
        return path, skipped
    listing = "; ".join(f"{p.name}: {why}" for p, why in skipped)
    raise CheckpointError(f"--resume: no checkpoint in {folder} loads ({listing})")


__all__ = [
    "AtomicCheckpointIO",
    "checkpoint_candidates",
    "find_resume_checkpoint",
    "load_checkpoint_file",
    "remove_stale_temporaries",
    "save_atomically",
]
