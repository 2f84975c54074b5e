"""Benchmark of the streaming inference: per-stage time and peak memory (``mgld benchmark``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mgld.config import Config
from mgld.perf.profiler import StageProfiler, _RssSampler

STAGES = ("flow", "vae_encode", "encoder+unet", "guidance", "vae_decode")


def write_panned_clip(folder: Path, frames: int, height: int, width: int, seed: int = 0) -> Path:
    """A smooth random texture panned 1 px right per frame, as PNGs ``00000000.png``…"""
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 4 + 2, (width + frames) // 4 + 2, 3)).astype(np.float32)
    texture = torch.nn.functional.interpolate(torch.from_numpy(coarse).permute(2, 0, 1)[None], scale_factor=4,
                                              mode="bicubic", align_corners=False)[0].clamp(0, 1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        crop = texture[:, :height, frames - i: frames - i + width]
        Image.fromarray((crop.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / f"{i:08d}.png")
    return folder


def _run_measured(cfg: Config, pipe, clip: Path, out: Path) -> tuple[float, int]:
    """(seconds, peak bytes) of one streaming run."""
    from mgld.pipeline.runner import run

    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(pipe.device)
        torch.cuda.reset_peak_memory_stats(pipe.device)
    sampler = None if cuda else _RssSampler()
    start = time.perf_counter()
    run(cfg, clip, out, pipe=pipe, progress=False)
    if cuda:
        torch.cuda.synchronize(pipe.device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(pipe.device) if cuda else sampler.stop()
    return seconds, peak


def _pipeline(cfg: Config):
    from mgld.pipeline.pipeline import MGLDPipeline, resolve_device

    return MGLDPipeline.from_config(cfg).to(resolve_device(cfg.infer.device))


def benchmark(cfg: Config, height: int, width: int, frames: int, workdir: Path) -> dict:
    """Run inference on a synthetic clip with a stage profiler; returns a JSON-ready dict."""
    start = time.perf_counter()
    pipe = _pipeline(cfg)
    load_seconds = time.perf_counter() - start
    clip = write_panned_clip(workdir / f"lr_{frames}", frames, height, width)
    pipe.profiler = StageProfiler(pipe.device)
    seconds, peak = _run_measured(cfg, pipe, clip, workdir / f"sr_{frames}")
    stats = pipe.profiler.stats
    pipe.profiler = None
    steps = stats["encoder+unet"].calls
    unet, guidance = stats["encoder+unet"].seconds, stats["guidance"].seconds
    return {
        "config": {"size": [height, width], "frames": frames, "steps": cfg.sampling.steps,
                   "chunk_frames": cfg.chunk.frames, "device": str(pipe.device), "precision": cfg.infer.precision,
                   "guidance_scale": cfg.sampling.guidance_scale, "flow": cfg.flow.method},
        "stages": {name: {"seconds": stats[name].seconds, "calls": stats[name].calls,
                          "peak_bytes": stats[name].peak_bytes} for name in STAGES},
        "model_load_seconds": load_seconds,
        "total_seconds": seconds,
        "seconds_per_frame": seconds / frames,
        "denoising_steps": steps,
        "guidance_over_unet": guidance / unet if unet else None,
        "peak_bytes": peak,
    }


def memory_scaling(cfg: Config, height: int, width: int, counts: tuple[int, int], workdir: Path) -> dict:
    """Peak memory of streaming runs on ``counts[0]`` and ``counts[1]`` frames (same process, same model)."""
    pipe = _pipeline(cfg)
    peaks = {}
    for n in counts:
        clip = write_panned_clip(workdir / f"mem_lr_{n}", n, height, width)
        peaks[str(n)] = _run_measured(cfg, pipe, clip, workdir / f"mem_sr_{n}")[1]
    peaks["ratio"] = peaks[str(counts[1])] / peaks[str(counts[0])]
    return peaks


def table(result: dict) -> str:
    """Markdown table of :func:`benchmark`'s result."""
    c = result["config"]
    total = result["total_seconds"]
    lines = [
        f"{c['frames']} frames of {c['size'][0]}x{c['size'][1]}, {c['steps']} steps, chunks of {c['chunk_frames']}, "
        f"{c['device']} {c['precision']}, guidance {c['guidance_scale']} ({c['flow']})",
        "",
        "| stage | calls | seconds | s/call | share | peak MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in result["stages"].items():
        per = s["seconds"] / s["calls"] if s["calls"] else 0.0
        lines.append(f"| {name} | {s['calls']} | {s['seconds']:.3f} | {per:.4f} | {s['seconds'] / total:.1%} | "
                     f"{s['peak_bytes'] / 2**20:.0f} |")
    lines.append(f"| **total (I/O included)** | | {total:.3f} | | 100% | {result['peak_bytes'] / 2**20:.0f} |")
    ratio = result["guidance_over_unet"]
    lines += [
        "",
        f"model load {result['model_load_seconds']:.2f} s; {result['seconds_per_frame']:.3f} s per output frame; "
        f"{result['denoising_steps']} denoising steps; guidance / (encoder+UNet) per step = "
        + (f"{ratio:.2%}" if ratio is not None else "n/a"),
    ]
    return "\n".join(lines)
