"""Running the pipeline over inputs on disk: sequences, chunks, verified resume, several processes.

* **Inputs**: a frame folder, a folder of sequences (frame folders and/or videos), or a video file
  (:mod:`mgld.io.sequences`). Everything is checked before any model is built: every frame's integrity, every
  video decoded once and its frame count compared with the container's (a truncated file stops the run unless
  ``allow_truncated``), the output location (never the input or inside it), the options.
* **Outputs**: PNG folders (8 or 16 bits) or videos (H.264 / FFV1 at the input's timing, with its audio and
  rotation), ``output.format`` / the output path deciding (:func:`mgld.io.sequences.output_kind`).
* **Chunks** (:func:`mgld.pipeline.chunks.plan_chunks`): ``chunk.frames`` frames each; independent with
  ``chunk.overlap = 0`` (the authors'), else consecutive chunks share frames, the later one anchored to the
  earlier one's trajectory and the shared frames cross-faded. Memory holds one chunk, whatever the length.
* **Verified resume**: each output carries a record of the run that made it (:mod:`mgld.io.manifest`: input
  content, pixel-changing settings, mgld version). A frame counts as done only when its record matches and the
  file is intact; results of another input, or files nobody recorded, stop the run (``--overwrite`` replaces
  them); results of other settings are redone. Independent chunks resume bit-identically (the noise of frame i
  depends on (seed, i) only) and a resumed video equals an uninterrupted one byte for byte.
* **Several processes** (``infer.devices`` / ``infer.num_nodes``: Lightning Fabric, CUDA or CPU with gloo;
  ``shard=(i, n)``: independent jobs such as a cluster's job array): the work list, every sequence's chunks in
  order, is cut into contiguous ranges of about equal frame count, one per process; a video output is cut only at
  its segment boundaries (fixed by the chunk plan), so N processes write the same segments as one. With
  ``chunk.overlap > 0`` each range starts its own anchor chain (the frames at a range boundary are not
  cross-faded, as after a resume).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from tqdm.auto import tqdm

from mgld.config import Config
from mgld.diffusion.sampling import Anchor
from mgld.pipeline.chunks import Chunk, plan_chunks

log = logging.getLogger(__name__)

# config keys that do not change the output's pixels (left out of the run records)
_NOT_PIXELS = ("infer.device", "infer.devices", "infer.num_nodes", "infer.overwrite", "sampling.tile_batch",
               "output.format", "infer.offload")
_VIDEO_ONLY = ("output.codec", "output.crf", "output.reproducible", "output.fps")


@dataclass
class RunSummary:
    sequences: int = 0
    frames_written: int = 0
    frames_skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (sequence, message), with keep_going

    def add(self, other: RunSummary) -> None:
        self.sequences += other.sequences
        self.frames_written += other.frames_written
        self.frames_skipped += other.frames_skipped
        self.failed += other.failed


@dataclass
class Job:
    """One sequence and where its output goes, with its chunk plan cut into work units."""

    sequence: object  # mgld.io.sequences.Sequence
    target: Path
    kind: str  # "frames" | "video"
    record: object  # mgld.io.manifest.RunRecord
    chunks: list[Chunk]
    units: list[tuple[int, int]]  # chunk index ranges [a, b): the smallest pieces given to one process
    segments: list[tuple[int, int]] | None  # frame ranges of the video segments (one per unit)


# ------------------------------------------------------------------------------------------------------------
# One sequence
# ------------------------------------------------------------------------------------------------------------


def written_range(chunks: list[Chunk], c: int) -> tuple[int, int]:
    """Frames ``[a, b)`` that chunk ``c`` of a plan writes: its new frames (independent chunks), or, with
    overlap, its frames up to the next chunk's start (the shared tail waits for the next chunk's cross-fade)."""
    chunk = chunks[c]
    if not chunk.overlap_mode:
        return chunk.start + chunk.shared_prev, chunk.stop
    return chunk.start, chunks[c + 1].start if c + 1 < len(chunks) else chunk.stop


def process_sequence(pipe, sequence, writer, chunks: list[Chunk], first: int = 0, stop: int | None = None,
                     progress: bool = True) -> RunSummary:
    """Upscale chunks ``[first, stop)`` of ``sequence``'s plan ``chunks`` into ``writer`` (a ``FrameWriter``
    or ``VideoWriter``), each chunk writing :func:`written_range` (module docstring)."""
    stop = len(chunks) if stop is None else stop
    summary = RunSummary(sequences=1)
    held: dict[int, object] = {}  # outputs of shared frames waiting for the next chunk's cross-fade
    trajectory: dict = {}
    strength = pipe.config.chunk.anchor_strength
    bar = tqdm(range(first, stop), desc=f"{sequence.name}: chunks", unit="chunk", disable=not progress, leave=False)
    with sequence.reader() as reader:
        for c in bar:
            chunk = chunks[c]
            lo, hi = written_range(chunks, c)
            if all(writer.done(i) for i in range(lo, hi)):
                summary.frames_skipped += hi - lo
                held, trajectory = {}, {}
                continue
            anchor = Anchor(trajectory, strength) if chunk.anchored and trajectory else None
            indices = list(range(chunk.start, chunk.stop))
            total = pipe.config.sampling.steps * pipe.num_passes(sequence.height, sequence.width)
            with tqdm(total=total, desc="denoising", unit="step", disable=not progress, leave=False) as step_bar:
                result = pipe.upscale_clip(reader.read(chunk.start, chunk.stop), indices, anchor=anchor,
                                           record=chunk.record, callback=lambda _info: step_bar.update())
            trajectory = result.trajectory
            keep_tail = c + 1 < stop  # the next chunk is ours: it cross-fades the shared tail
            new_held = {}
            for i, frame in zip(indices, result.frames):
                if i >= hi:
                    if keep_tail:
                        new_held[i] = frame
                    continue
                if i < lo:
                    continue  # the previous chunk's frame (independent chunks)
                if i in held:
                    frame = chunk.blend(i, held[i], frame)
                if writer.done(i):
                    summary.frames_skipped += 1
                else:
                    writer.write(i, frame)
                    summary.frames_written += 1
            held = new_held
    return summary


# ------------------------------------------------------------------------------------------------------------
# Planning: jobs, units, and the split over processes
# ------------------------------------------------------------------------------------------------------------


def plan_units(chunks: list[Chunk], kind: str, segment_frames: int = 64):
    """Work units (chunk ranges) and, for a video, their segments (frame ranges): one chunk per unit for
    frames; for a video, consecutive chunks grouped until they write ``segment_frames`` frames or more."""
    if kind == "frames":
        return [(c, c + 1) for c in range(len(chunks))], None
    units, segments, start = [], [], 0
    for c in range(len(chunks)):
        first, last = written_range(chunks, start)[0], written_range(chunks, c)[1]
        if last - first >= segment_frames or c + 1 == len(chunks):
            units.append((start, c + 1))
            segments.append((first, last))
            start = c + 1
    return units, segments


def split_work(jobs: list[Job], index: int, count: int) -> list[tuple[int, int, int]]:
    """``(job, first chunk, stop chunk)`` ranges for process ``index`` of ``count``: the units of all jobs in
    order, cut into ``count`` contiguous pieces of about equal frame count (a job may span several processes).
    A unit goes to the process whose share holds its middle frame."""
    units = [(j, a, b, _frames_written(job.chunks, a, b)) for j, job in enumerate(jobs) for a, b in job.units]
    total = sum(u[3] for u in units) or 1
    mine, before = [], 0
    for j, a, b, frames in units:
        owner = min(count - 1, int(count * (before + frames / 2) / total))
        before += frames
        if owner != index:
            continue
        if mine and mine[-1][0] == j and mine[-1][2] == a:
            mine[-1] = (j, mine[-1][1], b)  # extend the previous range of the same sequence
        else:
            mine.append((j, a, b))
    return mine


def _frames_written(chunks: list[Chunk], a: int, b: int) -> int:
    return sum(hi - lo for lo, hi in (written_range(chunks, c) for c in range(a, b)))


def pixel_settings(cfg: Config, kind: str, device_type: str) -> dict:
    """The config values that change an output's pixels (or a video's bytes), flat, for the run records."""
    from omegaconf import OmegaConf

    flat: dict = {}

    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(OmegaConf.to_container(OmegaConf.structured(cfg)))
    out = {k: v for k, v in flat.items() if k not in _NOT_PIXELS and (kind == "video" or k not in _VIDEO_ONLY)}
    if not cfg.infer.random_weights and not cfg.infer.weights:
        from mgld.weights.hub import default_weights_dir

        out["infer.weights"] = str(default_weights_dir())
    for key in ("infer.weights", "infer.unet", "infer.vae", "flow.weights"):
        if out.get(key):
            out[key] = _files_identity(Path(str(out[key])).expanduser())
    out["device"] = device_type
    return out


def _files_identity(path: Path) -> list:
    """``[[name, size, mtime_ns], ...]`` of a weights file or of the files of a weights folder."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    return [[str(p.relative_to(path)) if p != path else p.name, p.stat().st_size, p.stat().st_mtime_ns]
            for p in files if not p.name.startswith(".")] or [str(path)]


# ------------------------------------------------------------------------------------------------------------
# Writers
# ------------------------------------------------------------------------------------------------------------


def _writer(cfg: Config, job: Job, clean: bool = False):
    from mgld.io.sequences import FrameWriter, VideoWriter

    seq, scale, out = job.sequence, cfg.infer.scale, cfg.output
    bit_depth = out.bit_depth if out.bit_depth is not None else seq.bit_depth
    if job.kind == "video":
        if seq.kind == "video":
            rate, pts, time_base = seq.rate, seq.pts, seq.time_base
        else:
            rate, pts, time_base = Fraction(out.fps).limit_denominator(1001), None, None
        return VideoWriter(job.target, rate, seq.width * scale, seq.height * scale, crf=out.crf,
                           audio_source=seq.source if seq.has_audio else None,
                           num_frames=len(seq), pts=pts, time_base=time_base, segments=job.segments,
                           codec=out.codec, bit_depth=bit_depth, quantize=out.quantize,
                           reproducible=out.reproducible, display_matrix=seq.display_matrix, record=job.record,
                           clean=clean)
    return FrameWriter(job.target, seq.frame_names, record=job.record,
                       bit_depth=bit_depth, quantize=out.quantize, size=(seq.height * scale, seq.width * scale),
                       clean=clean)


# ------------------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------------------


def run(
    cfg: Config,
    input_path: str | Path,
    output_path: str | Path,
    *,
    pipe=None,
    progress: bool = True,
    keep_going: bool = False,
    allow_truncated: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> RunSummary:
    """Upscale every sequence found at ``input_path`` into ``output_path`` (module docstring).

    ``keep_going``: a sequence with bad input is skipped and listed in ``RunSummary.failed`` (the others are
    done); ``allow_truncated``: process the decodable frames of a video that decodes to fewer frames than its
    container declares; ``shard=(i, n)``: do the i-th of n equal parts of the work (0-based), for n independent
    jobs. Raises :class:`~mgld.io.frames.InputError` naming the file for bad input or output, before any model
    is built.
    """
    from mgld.io.frames import InputError

    input_path, output_path = Path(input_path).expanduser(), Path(output_path).expanduser()
    device_type = _check_options(cfg, shard)
    failed: list[tuple[str, str]] = []
    jobs = _plan(cfg, input_path, output_path, device_type, allow_truncated, failed if keep_going else None,
                 clean_age_s=0.0 if shard[1] == 1 else 600.0)
    if not jobs and failed:
        raise InputError(f"{input_path}: no sequence could be read ({len(failed)} failed; first: {failed[0][1]})")
    rank, world, fabric = _launch(cfg)
    if pipe is None:
        from mgld.pipeline.pipeline import MGLDPipeline, resolve_device

        device = resolve_device(cfg.infer.device) if fabric is None else fabric.device
        pipe = MGLDPipeline.from_config(cfg).to(device)
        if rank == 0:
            log.info("device %s, precision %s, %d sampling steps, guidance scale %g (%s), flow %s",
                     device, cfg.infer.precision, cfg.sampling.steps, cfg.sampling.guidance_scale,
                     cfg.sampling.guidance_variant, cfg.flow.method if cfg.sampling.guidance_scale else "off")
            log.info("networks: %s; sampling.tile_batch %s, tile_schedule %s", pipe.options,
                     cfg.sampling.tile_batch, cfg.sampling.tile_schedule)
    shard_index, shards = shard
    index, count = shard_index * world + rank, shards * world
    summary, error = RunSummary(failed=list(failed) if index == 0 else []), None
    try:
        summary.add(_work(cfg, pipe, jobs, split_work(jobs, index, count), keep_going,
                          finalize=fabric is None, progress=progress and rank == 0))
    except BaseException as e:  # noqa: BLE001 - every process must reach the final gather
        error = e
    if fabric is not None:
        summary, error = _gather(fabric, cfg, jobs, summary, error, rank)
    if error is not None:
        raise error
    return summary


def _check_options(cfg: Config, shard: tuple[int, int]) -> str:
    """Check the values a run needs before anything is read or built; return the device type."""
    import torch

    from mgld.pipeline.pipeline import pipeline_precision, resolve_device

    infer = cfg.infer
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {i}/{n}: need 0 <= i < n (0-based index i of n shards)")
    # infer.devices, num_nodes and scale are checked by InferConfig itself
    device = resolve_device(infer.device)
    pipeline_precision(infer.precision, device, cpu_bf16=False)  # fp16/bf16 need CUDA: refused before the models
    if infer.devices * infer.num_nodes > 1 and device.type == "cuda":
        if not torch.cuda.is_available() or torch.cuda.device_count() < infer.devices:
            raise ValueError(f"infer.devices={infer.devices} needs {infer.devices} CUDA devices per node; "
                             f"{torch.cuda.device_count()} available (device: cpu runs CPU processes)")
    return device.type


def _plan(cfg: Config, input_path: Path, output_path: Path, device_type: str, allow_truncated: bool,
          failed: list | None, clean_age_s: float = 0.0) -> list[Job]:
    """Discover, check and plan every sequence before any model is built (``failed``: collect per-sequence
    errors instead of raising, for ``keep_going``). Removes temporary files of interrupted runs older than
    ``clean_age_s`` (all of them, unless independent shards may be writing right now)."""
    from mgld import __version__
    from mgld.io.atomic import remove_temporaries
    from mgld.io.frames import InputError, OutputError
    from mgld.io.manifest import RunRecord, input_identity
    from mgld.io.sequences import (
        check_output_writable,
        check_outputs_outside_inputs,
        discover_sequences,
        output_kind,
        output_targets,
    )

    sequences = discover_sequences(input_path, allow_truncated=allow_truncated, errors=failed)
    kind = output_kind(output_path, sequences, cfg.output.format)
    ext = ".mkv" if cfg.output.codec == "ffv1" else ".mp4"
    targets = output_targets(input_path, output_path, sequences, kind, ext)
    check_outputs_outside_inputs(input_path, sequences, targets)
    check_output_writable(output_path)
    if kind == "video" and cfg.output.fps is None and any(s.kind == "frames" for s in sequences):
        raise InputError(f"{output_path}: a video made from frames needs a frame rate: give --fps "
                         "(output.fps)")
    if kind == "video" and cfg.output.fps is not None and any(s.kind == "video" for s in sequences):
        log.warning("output.fps=%g ignored for video inputs: a video output keeps its input's timing",
                    cfg.output.fps)
    jobs = []
    for seq, target in zip(sequences, targets):
        try:
            _warn_upsampling(cfg, seq)
            chunks = plan_chunks(len(seq), cfg.chunk.frames, cfg.chunk.overlap, cfg.chunk.tail)
            units, segments = plan_units(chunks, kind, cfg.output.segment_frames)
            record = RunRecord(str(seq.source.resolve()), input_identity(seq.input_files(), seq.kind == "frames"),
                               pixel_settings(cfg, kind, device_type), __version__)
            job = Job(seq, target, kind, record, chunks, units, segments)
            if cfg.infer.overwrite:
                _forget_outputs(job)
            else:
                note = _writer(cfg, job).check()  # creates nothing
                if note:
                    log.warning("%s", note)
            folder = target.parent / f".{target.name}.parts" if kind == "video" else target
            if folder.is_dir():
                remove_temporaries(folder, min_age_s=clean_age_s)
            jobs.append(job)
        except OutputError:
            raise
        except InputError as err:
            if failed is None:
                raise
            failed.append((seq.name, str(err)))
    return jobs


def _forget_outputs(job: Job) -> None:
    """``--overwrite``: remove the records (and unfinished video segments) of earlier runs, so that every output
    is redone; the output files themselves are replaced as the run goes. Every process does this before any
    process writes (Fabric starts the work once all have joined); independent ``--shard`` jobs do it when each
    starts, so start them together or clear the output first."""
    import shutil

    from mgld.io.manifest import RECORD_DIR
    from mgld.io.video_writer import sidecar_path

    if job.kind == "video":
        sidecar_path(job.target).unlink(missing_ok=True)
        shutil.rmtree(job.target.parent / f".{job.target.name}.parts", ignore_errors=True)
    else:
        shutil.rmtree(job.target / RECORD_DIR, ignore_errors=True)


def _warn_upsampling(cfg: Config, seq) -> None:
    from mgld.pipeline.tiles import resize_factor

    s = resize_factor(seq.height, seq.width, cfg.infer)  # the factor plan_tiles resizes by
    if s > 2 * cfg.infer.scale:
        log.warning("%s: %dx%d frames are upsampled x%.1f (to a %d-px short side, infer.min_short_side) before "
                    "encoding: about %dx%d pixels per frame", seq.source, seq.width, seq.height, s,
                    cfg.infer.min_short_side, int(seq.width * s), int(seq.height * s))


def _work(cfg: Config, pipe, jobs: list[Job], mine: list[tuple[int, int, int]], keep_going: bool,
          finalize: bool, progress: bool) -> RunSummary:
    """Process this process's share ``mine`` of the jobs."""
    from mgld.io.frames import InputError, OutputError

    total = RunSummary()
    bar = tqdm(mine, desc="sequences", unit="seq", disable=not progress or len(mine) < 2)
    for j, first, stop in bar:
        job = jobs[j]
        seq = job.sequence
        log.info("%s: %d frames %dx%d -> %s (%s), chunks %d-%d of %d", seq.name, len(seq), seq.width, seq.height,
                 job.target, job.kind, first, stop - 1, len(job.chunks))
        try:
            writer = _writer(cfg, job)
            try:
                summary = process_sequence(pipe, seq, writer, job.chunks, first, stop, progress)
            except BaseException:
                writer.abort() if job.kind == "video" else writer.close()
                raise
            writer.close(finalize=finalize) if job.kind == "video" else writer.close()
        except OutputError:
            raise
        except InputError as err:
            if not keep_going:
                raise
            log.error("%s: skipped: %s", seq.name, err)
            total.failed.append((seq.name, str(err)))
            continue
        total.add(summary)
    return total


# ------------------------------------------------------------------------------------------------------------
# Several processes (Lightning Fabric)
# ------------------------------------------------------------------------------------------------------------


def _launch(cfg: Config):
    """``(rank, world size, fabric)``; with several devices or nodes, one process each through Lightning Fabric
    (CUDA, or CPU processes with gloo for ``infer.device: cpu``); ``fabric`` is None for one process."""
    infer = cfg.infer
    if infer.devices * infer.num_nodes <= 1:
        return 0, 1, None
    import torch
    from lightning_fabric import Fabric

    accelerator = "cpu" if infer.device == "cpu" or not torch.cuda.is_available() else "cuda"
    fabric = Fabric(accelerator=accelerator, devices=infer.devices, num_nodes=infer.num_nodes, strategy="ddp")
    fabric.launch()
    return fabric.global_rank, fabric.world_size, fabric


def _gather(fabric, cfg: Config, jobs: list[Job], summary: RunSummary, error, rank: int):
    """Wait for every process, finalise the videos (rank 0), and sum the summaries. Every process returns the
    total; when one process failed, every process raises (its own error, or one naming the other process)."""
    import torch.distributed as dist

    def describe(e):
        return None if e is None else f"{e}" if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"

    parts = [None] * fabric.world_size
    dist.all_gather_object(parts, (summary, describe(error)))
    if rank == 0 and not any(e for _, e in parts):
        try:
            for job in jobs:
                if job.kind == "video":
                    writer = _writer(cfg, job)
                    if writer.all_segments_finished():
                        writer.finalize()
        except BaseException as e:  # noqa: BLE001 - the other processes wait for this answer
            error = e
    finals = [None] * fabric.world_size
    dist.all_gather_object(finals, describe(error) if rank == 0 else None)
    total = RunSummary()
    for part, _ in parts:
        total.add(part)
    others = [(r, e) for r, e in enumerate([e for _, e in parts]) if e and r != rank]
    if error is None and finals[0] and rank != 0:
        others.append((0, finals[0]))
    if error is None and others:
        r, message = others[0]
        error = RuntimeError(f"process {r} of {fabric.world_size} failed: {message}")
    return total, error
