"""What produced each output: run records, so that a resumed run trusts only finished work of the same run.

A :class:`RunRecord` names a run: the mgld version, the input's identity (every input file's name, byte size and
SHA-256: the content, not the path, so a moved input stays the same input) and the settings that change pixels.
Its :attr:`~RunRecord.digest` is stored with every output:

* an output folder of frames holds ``.mgld/manifest.json`` (the record, written atomically) and
  ``.mgld/journal-<id>.jsonl`` files, one per writing process, with one line per finished frame
  (``name``, byte ``size``, ``run`` digest) appended after the frame's atomic rename. When every frame of the
  sequence is recorded, the journals are folded into the manifest (``frames``) and removed.
* an output video has a sidecar ``.<name>.mgld.json`` (the record plus the file's byte size and frame count),
  written just before the finished file is renamed into place; its unfinished segments live in
  ``.<name>.parts/`` with their own manifest (:mod:`mgld.io.video_writer`).

On resume an output counts as done only if its record carries the current digest, its byte size matches and it
decodes (PNG: every chunk's CRC; video: the frame count). :func:`check_existing` decides before any work whether
an output location may be used: results of *another input* (other content at another path), or output files with
no record, stop the run with a message that names the folder and ``--overwrite``; results of the same input made
with other settings (or of an input changed in place) are redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mgld.io.atomic import atomic_write

log = logging.getLogger(__name__)

FORMAT = "mgld-output/1"
RECORD_DIR = ".mgld"  # inside an output folder of frames
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def input_identity(files: list[Path], with_names: bool = True) -> list[list]:
    """``[[name, size, sha256], ...]`` of the input files; ``with_names=False`` leaves the names out (a video
    renamed or moved is the same input; a frame's name is its output's name, so it counts)."""
    return [[Path(f).name if with_names else "", Path(f).stat().st_size, file_sha256(Path(f))] for f in files]


@dataclass
class RunRecord:
    """The identity of one sequence's run: input content, settings that change pixels, mgld version."""

    input_path: str
    input_files: list[list]
    settings: dict
    version: str

    @property
    def digest(self) -> str:
        payload = {"input": self.input_files, "settings": self.settings, "mgld": self.version}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]

    def to_dict(self) -> dict:
        return {"format": FORMAT, "mgld": self.version, "run": self.digest,
                "input": {"path": self.input_path, "files": self.input_files}, "settings": self.settings}

    @classmethod
    def from_dict(cls, data: dict) -> RunRecord:
        return cls(str(data["input"]["path"]), list(data["input"]["files"]), dict(data["settings"]),
                   str(data["mgld"]))

    def relation(self, old: RunRecord) -> Literal["same", "other_input", "input_changed", "settings"]:
        """How an output made under ``old`` relates to this run."""
        if old.digest == self.digest:
            return "same"
        if old.input_files != self.input_files:
            return "input_changed" if old.input_path == self.input_path else "other_input"
        return "settings"

    def changed_settings(self, old: RunRecord) -> list[str]:
        keys = sorted(set(self.settings) | set(old.settings))
        changed = [k for k in keys if self.settings.get(k) != old.settings.get(k)]
        return changed + (["mgld version"] if old.version != self.version else [])


def dumps(data: dict) -> str:
    """JSON text with one line per innermost list (e.g. one input file per line)."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_record(path: Path) -> RunRecord | None:
    """The :class:`RunRecord` stored in a manifest or sidecar file, or None (missing, unreadable, other format)."""
    return parse_record(read_json(path))


def parse_record(data: dict | None) -> RunRecord | None:
    """:func:`read_record` of a file already read with :func:`read_json`."""
    if data is None or data.get("format") != FORMAT:
        return None
    try:
        return RunRecord.from_dict(data)
    except (KeyError, TypeError):
        return None


def check_existing(where: Path, record: RunRecord, old: RunRecord | None, present: list[str],
                   overwrite: bool) -> str | None:
    """Decide whether ``where`` (an output folder or video) may receive this run's results.

    ``old``: the record found there (None if none); ``present``: names of output files that already exist.
    Raises :class:`~mgld.io.frames.InputError` where the outputs belong to another input or to nobody known;
    returns a note for the log where earlier outputs will be redone (other settings, changed input), else None.
    """
    from mgld.io.errors import InputError

    if overwrite or not present:
        return None
    example = present[0]
    if old is None:
        raise InputError(
            f"{where}: {len(present)} output file(s) already there (e.g. {example}) with no record of the mgld run "
            "that wrote them (another program, an older mgld, or another input); use --overwrite to replace them, "
            "or another output location"
        )
    relation = record.relation(old)
    if relation == "other_input":
        raise InputError(
            f"{where}: holds the results of another input ({old.input_path}), not of {record.input_path}; "
            "use --overwrite to replace them, or another output location"
        )
    if relation == "input_changed":
        return f"{where}: the input {record.input_path} changed since these outputs were made; they are redone"
    if relation == "settings":
        changed = ", ".join(record.changed_settings(old)[:6])
        return f"{where}: outputs made with other settings ({changed}) are redone"
    return None


@dataclass
class FrameRecords:
    """The records of one output folder of frames (module docstring): which frames are finished under ``record``.

    Creates nothing until the first :meth:`add`; :meth:`close` folds the journals into the manifest once every
    frame in ``names`` is recorded.
    """

    folder: Path
    record: RunRecord
    names: list[str]
    overwrite: bool = False
    sizes: dict[str, int] = field(default_factory=dict, init=False)  # name -> size, under the current digest
    _journal: object = field(default=None, init=False, repr=False)
    _header_written: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        manifest = read_json(self.manifest_path)  # read once: the record and the recorded sizes
        self.old = parse_record(manifest)
        if not self.overwrite:
            self.sizes.update(self._load(manifest or {}))

    def _load(self, manifest: dict | None = None) -> dict[str, int]:
        """Sizes of the frames recorded under the current digest, from the manifest (``manifest``: its contents
        already read) and every journal."""
        digest, sizes = self.record.digest, {}
        data = manifest if manifest is not None else read_json(self.manifest_path) or {}
        if data.get("run") == digest:
            sizes.update({str(k): int(v) for k, v in (data.get("frames") or {}).items()})
        for journal in sorted(self.dir.glob("journal-*.jsonl")) if self.dir.is_dir() else []:
            for line in journal.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    if entry["run"] == digest:
                        sizes[str(entry["name"])] = int(entry["size"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill: that frame is redone
        return sizes

    @property
    def dir(self) -> Path:
        return self.folder / RECORD_DIR

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def check(self) -> str | None:
        """:func:`check_existing` for this folder (read-only)."""
        present = [n for n in self.names if (self.folder / n).exists()] if self.folder.is_dir() else []
        return check_existing(self.folder, self.record, self.old, present, self.overwrite)

    def recorded(self, name: str) -> int | None:
        """The byte size recorded for ``name`` under the current run, or None."""
        return self.sizes.get(name)

    def add(self, name: str, size: int) -> None:
        """Record ``name`` (``size`` bytes) as finished; call after the file's atomic rename."""
        if not self._header_written:
            if self.old is None or self.old.digest != self.record.digest:
                atomic_write(self.manifest_path, dumps(self.record.to_dict()))
            self._header_written = True
        if self._journal is None:
            self._journal = open(self.dir / f"journal-{uuid.uuid4().hex[:12]}.jsonl", "a", buffering=1)
        self._journal.write(json.dumps({"name": name, "size": size, "run": self.record.digest}) + "\n")
        self.sizes[name] = size

    def close(self) -> None:
        """Close this process's journal; fold all journals into the manifest once every frame is recorded."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if not self._header_written and not self.dir.is_dir():
            return
        sizes = {**self._load(), **self.sizes}  # other processes' lines too
        if all(n in sizes for n in self.names) and list(self.dir.glob("journal-*.jsonl")):
            data = self.record.to_dict()
            data["frames"] = {n: sizes[n] for n in self.names}
            atomic_write(self.manifest_path, dumps(data))
            for journal in self.dir.glob("journal-*.jsonl"):
                journal.unlink(missing_ok=True)
