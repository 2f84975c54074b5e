"""Running the pipeline over inputs on disk: sequences, chunks, streaming I/O, resume, several GPUs.

* Inputs: a frame folder, a folder of sequence folders, or a video file (:mod:`mgld.io.sequences`).
  Everything is validated before any model is built.
* Chunks (:func:`plan_chunks`): ``chunk.frames`` frames each. With ``chunk.overlap = 0`` they are independent,
  as in the authors' script; a last partial chunk is moved back to end at the last frame and only its new frames
  are written (no duplicated frames). With ``chunk.overlap = o > 0`` consecutive chunks share ``o`` frames:
  the later chunk's first frames are pulled toward the earlier chunk's sampling trajectory
  (:class:`mgld.diffusion.sampling.Anchor`) and the shared output frames are cross-faded.
* Frames are read and written as a stream: memory holds one chunk (plus ``o`` frames), whatever the length.
* Resume: frames already on disk are skipped; a chunk whose frames are all done is not recomputed. Outputs are
  written atomically. Independent chunks resume bit-identically (the noise depends on the frame index only);
  with overlap, the anchor chain restarts at the first recomputed chunk.
* ``infer.devices > 1``: Lightning Fabric starts one process per GPU; sequences are dealt round-robin, and a
  single sequence written as frames with independent chunks is split into contiguous chunk ranges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from mgld.config import Config
from mgld.diffusion.sampling import Anchor
from mgld.pipeline.chunks import Chunk, plan_chunks, split_chunks, split_work

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    sequences: int = 0
    frames_written: int = 0
    frames_skipped: int = 0


def process_sequence(pipe, sequence, writer, chunks: list[Chunk], progress: bool = True) -> RunSummary:
    """Upscale ``sequence`` chunk by chunk into ``writer`` (a ``FrameWriter`` or ``VideoWriter``)."""
    summary = RunSummary(sequences=1)
    held: dict[int, object] = {}  # outputs of shared frames waiting for the next chunk's cross-fade
    trajectory: dict = {}
    steps, strength = pipe.config.sampling.steps, pipe.config.chunk.anchor_strength
    bar = tqdm(chunks, desc=f"{sequence.name}: chunks", unit="chunk", disable=not progress, leave=False)
    with sequence.reader() as reader:
        for chunk in bar:
            indices = list(range(chunk.start, chunk.stop))
            if all(writer.done(i) for i in indices):
                summary.frames_skipped += len(indices) - chunk.shared_prev
                held, trajectory = {}, {}
                continue
            anchor = Anchor(trajectory, strength) if chunk.anchored and trajectory else None
            total = steps * pipe.num_passes(sequence.height, sequence.width)
            with tqdm(total=total, desc="denoising", unit="step", disable=not progress, leave=False) as step_bar:
                result = pipe.upscale_clip(reader.read(chunk.start, chunk.stop), indices, anchor=anchor,
                                           record=chunk.record, callback=lambda _: step_bar.update())
            trajectory = result.trajectory
            for i, frame in zip(indices, result.frames):
                if i in held:
                    frame = chunk.blend(i, held.pop(i), frame)
                elif i < chunk.start + chunk.shared_prev:
                    continue  # produced and written by the previous chunk
                if writer.done(i):
                    summary.frames_skipped += 1
                elif chunk.record and i >= chunk.stop - chunk.record:
                    held[i] = frame
                else:
                    writer.write(i, frame)
                    summary.frames_written += 1
    for i in sorted(held):  # only when the plan was cut short (several processes)
        writer.write(i, held[i])
        summary.frames_written += 1
    return summary


def run(
    cfg: Config, input_path: str | Path, output_path: str | Path, *, pipe=None, progress: bool = True
) -> RunSummary:
    """Upscale every sequence found at ``input_path`` into ``output_path`` (module docstring)."""
    from mgld.io.sequences import check_output_writable, discover_sequences, output_kind

    input_path, output_path = Path(input_path), Path(output_path)
    sequences = discover_sequences(input_path)  # validates the input before any heavy work
    kind = output_kind(output_path, sequences)
    check_output_writable(output_path)
    rank, world = _launch(cfg.infer.devices)
    if pipe is None:
        from mgld.pipeline.pipeline import MGLDPipeline, resolve_device

        device = resolve_device(cfg.infer.device) if world == 1 else _rank_device(rank)
        pipe = MGLDPipeline.from_config(cfg).to(device)
        log.info("device %s, precision %s, %d sampling steps, guidance scale %g (%s), flow %s",
                 device, cfg.infer.precision, cfg.sampling.steps, cfg.sampling.guidance_scale,
                 cfg.sampling.guidance_variant, cfg.flow.method if cfg.sampling.guidance_scale else "off")
    mine = sequences if world == 1 or len(sequences) == 1 else split_work(sequences, rank, world)
    total = RunSummary()
    for sequence in tqdm(mine, desc="sequences", unit="seq", disable=not progress or len(mine) < 2):
        chunks = plan_chunks(len(sequence.frame_names), cfg.chunk.frames, cfg.chunk.overlap)
        if world > 1 and len(sequences) == 1:
            if kind == "video" or cfg.chunk.overlap:
                if rank > 0:
                    continue  # a video is written in order, by one process
            else:
                chunks = split_chunks(chunks, rank, world)
        target = output_path if sequence.source == input_path else output_path / sequence.name
        log.info("%s: %d frames %dx%d -> %s (%s)", sequence.name, len(sequence.frame_names), sequence.width,
                 sequence.height, target, kind)
        with _writer(cfg, sequence, target, kind) as writer:  # an exception keeps finished parts for a resume
            summary = process_sequence(pipe, sequence, writer, chunks, progress)
        total.sequences += 1
        total.frames_written += summary.frames_written
        total.frames_skipped += summary.frames_skipped
    return total


def _writer(cfg: Config, sequence, target: Path, kind: str):
    from mgld.io.sequences import FrameWriter, VideoWriter

    if kind == "video":
        scale = cfg.infer.scale
        return VideoWriter(target, sequence.rate, sequence.width * scale, sequence.height * scale,
                           crf=cfg.infer.crf, audio_source=sequence.source if sequence.has_audio else None,
                           overwrite=cfg.infer.overwrite, num_frames=len(sequence.frame_names))
    return FrameWriter(target, sequence.frame_names, overwrite=cfg.infer.overwrite)


def _launch(devices: int) -> tuple[int, int]:
    """(rank, world size); with several devices, one process per GPU through Lightning Fabric."""
    if devices <= 1:
        return 0, 1
    import torch
    from lightning_fabric import Fabric

    if not torch.cuda.is_available() or torch.cuda.device_count() < devices:
        raise RuntimeError(f"infer.devices={devices} needs {devices} CUDA devices; "
                           f"{torch.cuda.device_count()} available")
    fabric = Fabric(accelerator="cuda", devices=devices, strategy="ddp")
    fabric.launch()
    return fabric.global_rank, fabric.world_size


def _rank_device(rank: int):
    import torch

    return torch.device("cuda", rank)
