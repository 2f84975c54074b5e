"""The performance record behind ``mgld benchmark`` (docs/notes/perf.md).

One run (:func:`benchmark`) upscales a clip (a synthetic panned texture, or a given input) with the real
streaming runner and reports, per stage (flow, vae_encode, encoder+unet, guidance, vae_decode), the seconds,
calls and peak memory (CUDA max allocated on a GPU, RSS on the CPU); for the denoiser the calls, the TFLOP per
call (``FlopCounterMode`` on the meta device, :mod:`mgld.perf.simulate`), the achieved TFLOP/s and the
model-FLOP utilisation against ``peak_tflops``; the UNet work ratio (latent-pixel evaluations per latent pixel
per step, measured from the calls, and modelled for each tiling mode by :mod:`mgld.perf.work`); seconds per
output frame, also extrapolated to 50 steps. :func:`compare` runs two configurations interleaved (A B A B …) in
one process and reports the ratios and how far B's frames are from A's (PSNR, and LPIPS/DISTS with
``quality=True``: the quality cost of a mode in one command).

Every option is the pipeline's own (:class:`mgld.pipeline.pipeline.MGLDPipeline` applies ``infer.precision``,
``cast_weights``, ``channels_last``, ``compile``, ``attention``, ``offload``, ``sampling.tile_batch`` /
``tile_schedule`` and ``decode.tile_size: auto`` itself); :func:`prepare_variant` only builds a pipeline per
configuration around shared networks (copied when an option changes them) with call recorders for the counts.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mgld.config import Config, load_config
from mgld.io.frames import write_png
from mgld.perf.profiler import StageProfiler, _RssSampler

log = logging.getLogger(__name__)

STAGES = ("flow", "vae_encode", "encoder+unet", "guidance", "vae_decode")
STAGE_NETWORKS = {"flow": ("flow",), "vae_encode": ("vae",), "encoder+unet": ("denoiser",), "vae_decode": ("vae",)}
REFERENCE_STEPS = 50  # the authors' step count: s/frame is also extrapolated to it


def write_panned_clip(folder: Path, frames: int, height: int, width: int, seed: int = 0) -> Path:
    """A smooth random texture panned 1 px right per frame, as PNGs ``00000000.png``… (8-bit, rounded)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 4 + 2, (width + frames) // 4 + 2, 3)).astype(np.float32)
    texture = torch.nn.functional.interpolate(torch.from_numpy(coarse).permute(2, 0, 1)[None], scale_factor=4,
                                              mode="bicubic", align_corners=False)[0].clamp(0, 1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        crop = texture[:, :height, frames - i: frames - i + width]
        write_png(folder / f"{i:08d}.png", crop, quantize="round")
    return folder


# --------------------------------------------------------------------------------------------------
# Call recorders (what ran, for the FLOP count and the work ratio)
# --------------------------------------------------------------------------------------------------


class DenoiserRecorder(nn.Module):
    """Counts the denoiser's calls by input shape; otherwise the wrapped network."""

    def __init__(self, denoiser: nn.Module):
        super().__init__()
        self.denoiser = denoiser
        self.calls: Counter = Counter()  # ((b t) 4 h w shape, num_frames) -> calls

    def forward(self, x_t, timesteps, z_lr, num_frames: int, context=None, cond=None):
        if x_t.device.type != "meta":  # not the memory/FLOP counts of tile_batch=auto
            self.calls[(tuple(x_t.shape), int(num_frames))] += 1
        return self.denoiser(x_t, timesteps, z_lr, num_frames, context, cond)

    def compile(self, *args, **kwargs):
        """Compile the wrapped network (``infer.compile``); the counting stays outside the compiled code."""
        self.denoiser.compile(*args, **kwargs)

    @property
    def _compiled_call_impl(self):
        return getattr(self.denoiser, "_compiled_call_impl", None)


class VAERecorder(nn.Module):
    """Counts the VAE's encode/decode calls by input shape; otherwise the wrapped network."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae
        self.encodes: Counter = Counter()
        self.decodes: Counter = Counter()

    @property
    def scaling_factor(self) -> float:
        return self.vae.scaling_factor

    def encode(self, x):
        if x.device.type != "meta":
            self.encodes[tuple(x.shape)] += 1
        return self.vae.encode(x)

    def decode(self, z, enc_feats, num_frames: int, cfw_weight: float = 1.0):
        if z.device.type != "meta":
            self.decodes[(tuple(z.shape), int(num_frames))] += 1
        return self.vae.decode(z, enc_feats, num_frames, cfw_weight)


class _FlopCache:
    """TFLOP of a denoiser / VAE call per input shape, counted once on the meta device."""

    def __init__(self):
        self._cache: dict = {}

    def denoiser(self, denoiser: nn.Module, shape: tuple, num_frames: int) -> float:
        from mgld.perf.simulate import count_flops

        key = ("denoiser", shape, num_frames)
        if key not in self._cache:
            x = torch.empty(shape)
            self._cache[key] = count_flops(denoiser, denoiser, x, torch.zeros(1, dtype=torch.long), x,
                                           num_frames) / 1e12
        return self._cache[key]

    def vae(self, vae: nn.Module, kind: str, shape: tuple, num_frames: int = 1) -> float:
        """``encode`` of frames of ``shape``, or ``decode`` of latents of ``shape`` (with CFW features)."""
        from mgld.perf.simulate import count_flops

        key = ("vae", kind, shape, num_frames)
        if key not in self._cache:
            if kind == "encode":
                flops = count_flops(vae.encode, vae, torch.empty(shape))
            else:
                n, _, h, w = shape
                frames = torch.empty(n, 3, 8 * h, 8 * w)

                def both(x):
                    posterior, feats = vae.encode(x)
                    return vae.decode(posterior.mean, feats, num_frames)

                flops = count_flops(both, vae, frames) - count_flops(vae.encode, vae, frames)
            self._cache[key] = flops / 1e12
        return self._cache[key]


# --------------------------------------------------------------------------------------------------
# Configurations (the options applied around the pipeline)
# --------------------------------------------------------------------------------------------------


@dataclass
class Variant:
    """A configuration ready to run: the pipeline (moved to its device, options applied), the config asked for,
    the resolved precision and what the pipeline applied (:attr:`MGLDPipeline.options`)."""

    name: str
    cfg: Config
    pipe: object
    precision: str
    applied: dict = field(default_factory=dict)


def _random_raft(cfg: Config, device):
    """RAFT with random weights (``infer.random_weights`` and no RAFT weight file): same cost, no weights."""
    from torchvision.models.optical_flow import raft_large

    from mgld.flow import RaftEstimator

    return RaftEstimator(raft_large(weights=None, progress=False), cfg.flow.raft_input_range,
                         cfg.flow.raft_iters).to(device)


def build_base(cfg: Config, device: str | None = None):
    """The fp32 pipeline every variant starts from (built on the device directly)."""
    from mgld.pipeline.pipeline import MGLDPipeline, resolve_device

    device = resolve_device(device or cfg.infer.device)
    with torch.device(device) if device.type == "cuda" else contextlib.nullcontext():
        pipe = MGLDPipeline.from_config(cfg)
    pipe.to(device)
    if cfg.sampling.guidance_scale != 0 and cfg.flow.method == "raft" and cfg.infer.random_weights:
        try:
            _ = pipe.flow_estimator
        except FileNotFoundError:
            log.warning("no RAFT weights: the benchmark's RAFT has random weights (same cost)")
            pipe._flow_estimator = _random_raft(cfg, device)
    return pipe


def prepare_variant(base, cfg: Config, name: str) -> Variant:
    """A pipeline running ``cfg`` on ``base``'s device, around ``base``'s networks (copied first when an option
    changes them: weights cast, channels_last, compile), with call recorders; the pipeline applies every option
    itself (:meth:`MGLDPipeline.to`). With ``infer.offload`` the networks are handed back to the device after the
    placement and placed again by each run (:func:`run_variant`), so that variants sharing them can alternate."""
    from mgld.models.efficiency import use_cast_weights
    from mgld.pipeline.pipeline import MGLDPipeline
    from mgld.pipeline.runtime import pipeline_precision

    infer, device = cfg.infer, base.device
    precision = pipeline_precision(infer.precision, device)
    changes = use_cast_weights(infer.cast_weights, precision) or infer.channels_last or infer.compile
    denoiser, vae = (copy.deepcopy(base.denoiser), copy.deepcopy(base.vae)) if changes else (base.denoiser, base.vae)
    run_infer = copy.copy(infer)  # not replace(): the smoke's bf16 on the CPU is refused by the schema's check
    run_infer.overwrite = True
    run_cfg = copy.copy(cfg)
    run_cfg.infer = run_infer
    pipe = MGLDPipeline(DenoiserRecorder(denoiser), VAERecorder(vae), run_cfg, flow_estimator=base._flow_estimator)
    pipe.to(device)
    if pipe.runtime.offloader is not None:
        pipe.runtime.offloader.close()
    applied = dict(pipe.options)
    applied["autocast"] = pipe.runtime.amp is not None
    applied["cast_weights"] = pipe.runtime.cast_dtype is not None
    return Variant(name, cfg, pipe, pipe.runtime.precision, applied)


# --------------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_variant(variant: Variant, clip: Path, out: Path, *, peak_tflops: float | None = None,
                flops: _FlopCache | None = None) -> dict:
    """Run ``variant`` on the frames at ``clip`` into ``out`` with a stage profiler; the measurements."""
    from mgld.perf.work import latent_size, work_ratio
    from mgld.pipeline.chunks import plan_chunks
    from mgld.pipeline.runner import run

    pipe, cfg = variant.pipe, variant.cfg
    device = pipe.device
    flops = flops or _FlopCache()
    recorder, vae_recorder = pipe.denoiser, pipe.vae
    recorder.calls.clear()
    vae_recorder.encodes.clear()
    vae_recorder.decodes.clear()
    offloader = pipe.runtime.offloader
    runner_cfg = pipe.config
    if device.type != "cuda" and runner_cfg.infer.precision != "fp32":  # the smoke's bf16 on the CPU: the
        runner_cfg = copy.copy(runner_cfg)  # runner's check (fp16/bf16 need CUDA) is for configs people write
        runner_cfg.infer = copy.copy(runner_cfg.infer)
        runner_cfg.infer.precision = "auto"
    pipe.profiler = StageProfiler(device)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sampler = None if device.type == "cuda" else _RssSampler()
    start = time.perf_counter()
    try:
        if offloader is not None:
            offloader.start()
        summary = run(runner_cfg, clip, out, pipe=pipe, progress=False)
        _sync(device)
    finally:
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else sampler.stop()
        stats, pipe.profiler = pipe.profiler.stats, None
        if offloader is not None:
            offloader.close()  # the networks back on the device, for the variants that share them
    frames = summary.frames_written + summary.frames_skipped
    denoiser_net, vae_net = pipe.runtime.denoiser, pipe.runtime.vae  # counted as called (inputs cast, ...)
    calls = [{"shape": list(shape), "frames": t, "calls": n, "tflop": flops.denoiser(denoiser_net, shape, t)}
             for (shape, t), n in recorder.calls.items()]
    unet_tflop = sum(c["calls"] * c["tflop"] for c in calls)
    vae_tflop = sum(n * flops.vae(vae_net, "encode", s) for s, n in vae_recorder.encodes.items())
    vae_tflop += sum(n * flops.vae(vae_net, "decode", s, t) for (s, t), n in vae_recorder.decodes.items())
    unet_seconds, guidance_seconds = stats["encoder+unet"].seconds, stats["guidance"].seconds
    s = cfg.sampling
    height, width, num_frames = clip_geometry(clip)
    lr_hw = (height, width)
    clips = len(plan_chunks(num_frames, cfg.chunk.frames, cfg.chunk.overlap, cfg.chunk.tail))
    passes = max(1, stats["vae_decode"].calls // max(1, clips))  # sampling passes per clip (pixel tiles)
    steps_run = s.steps * clips * passes
    # work: latent pixels the UNet evaluated (per frame) over the output latent pixels x steps of every clip
    lat = latent_size(lr_hw, cfg.infer.scale, cfg.infer.min_short_side, padding=cfg.infer.padding)
    evaluated = sum(n * (shape[0] // t) * shape[2] * shape[3] for (shape, t), n in recorder.calls.items())
    work_measured = evaluated / (s.steps * clips * lat[0] * lat[1]) if clips else None
    tiling = {"tile": s.latent_tile_size, "overlap": s.latent_tile_overlap}
    work_modelled = {"overlap": work_ratio(*lat, "overlap", **tiling)}  # as configured
    if 16 < s.latent_tile_size and s.latent_tile_overlap != 16:
        work_modelled["overlap-16"] = work_ratio(*lat, "overlap", tile=s.latent_tile_size, overlap=16)
    work_modelled["shifted"] = work_ratio(*lat, "shifted", tile=s.latent_tile_size, steps=s.steps)
    work_modelled["authors"] = work_ratio(*lat, "authors", **tiling)
    step_seconds = unet_seconds + guidance_seconds
    total_ref = seconds - step_seconds + step_seconds * REFERENCE_STEPS / s.steps
    achieved = unet_tflop / unet_seconds if unet_seconds else None
    result = {
        "config": {"lr_size": list(lr_hw), "latent": list(lat), "frames": frames, "steps": s.steps,
                   "chunk_frames": cfg.chunk.frames, "device": str(device),
                   "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                   "precision": variant.precision, "guidance_scale": s.guidance_scale, "flow": cfg.flow.method,
                   "tile_batch": s.tile_batch, "tile_schedule": s.tile_schedule, "applied": variant.applied},
        "stages": {name: {"seconds": stats[name].seconds, "calls": stats[name].calls,
                          "peak_bytes": stats[name].peak_bytes} for name in STAGES},
        "total_seconds": seconds,
        "seconds_per_frame": seconds / frames if frames else None,
        "seconds_per_frame_50_steps": total_ref / frames if frames else None,
        "denoising_steps": steps_run,  # steps x clips x sampling passes per clip
        "clips": clips,
        "guidance_over_unet": guidance_seconds / unet_seconds if unet_seconds else None,
        "peak_bytes": peak,
        "denoiser": {
            "calls": sum(recorder.calls.values()),
            "call_shapes": calls,
            "tflop_per_call": unet_tflop / max(1, sum(recorder.calls.values())),
            "tflop": unet_tflop,
            "tflops_achieved": achieved,
            "mfu": achieved / peak_tflops if achieved and peak_tflops else None,
        },
        "vae": {"tflop": vae_tflop,
                "tflops_achieved": vae_tflop / (stats["vae_encode"].seconds + stats["vae_decode"].seconds)
                if stats["vae_encode"].seconds + stats["vae_decode"].seconds else None},
        "peak_tflops": peak_tflops,
        "work_ratio": {"measured": work_measured, "modelled": work_modelled},
    }
    return result


def clip_geometry(clip: Path) -> tuple[int, int, int]:
    """``(height, width, frames)`` of the LR clip at ``clip`` (one listing of its headers)."""
    from mgld.io.sequences import discover_sequences

    sequence = discover_sequences(clip, verify=False)[0]
    return sequence.height, sequence.width, len(sequence.frame_names)


def benchmark(cfg: Config, height: int, width: int, frames: int, workdir: Path, *, peak_tflops: float | None = None,
              input_path: Path | None = None, attention_report: bool = False, base=None) -> dict:
    """Run inference once on a synthetic clip (or ``input_path``) with every measurement; a JSON-ready dict."""
    start = time.perf_counter()
    base = base or build_base(cfg)
    load_seconds = time.perf_counter() - start
    clip = input_path or write_panned_clip(workdir / f"lr_{frames}", frames, height, width)
    variant = prepare_variant(base, cfg, "run")
    result = run_variant(variant, clip, workdir / f"sr_{frames}", peak_tflops=peak_tflops)
    result["model_load_seconds"] = load_seconds
    if attention_report:
        result["attention"] = attention_report_of(variant, clip_geometry(clip)[:2])
    return result


def attention_report_of(variant: Variant, lr_hw: tuple[int, int]) -> dict:
    """Which SDPA kernel each attention of one denoiser call (one latent tile) and one VAE decode ran."""
    from mgld.models.efficiency import attention_backend, attention_backends
    from mgld.perf.work import latent_size
    from mgld.pipeline.runtime import autocast

    pipe, cfg = variant.pipe, variant.cfg
    device = pipe.device
    lat = latent_size(lr_hw, cfg.infer.scale, cfg.infer.min_short_side, padding=cfg.infer.padding)
    tile = [min(cfg.sampling.latent_tile_size, v) for v in lat]
    t = cfg.chunk.frames
    x = torch.randn(t, 4, *tile, device=device)
    run = pipe.runtime  # the networks as the pipeline calls them (cast inputs, channels_last, ...)
    with attention_backend(cfg.infer.attention), autocast(device, run.amp), run.use("denoiser"):
        unet = attention_backends(run.denoiser, x, torch.full((1,), 999, device=device), x, t)
    frames = torch.zeros(t, 3, 8 * tile[0], 8 * tile[1], device=device)

    def vae_call():
        posterior, feats = run.vae.encode(frames)
        return run.vae.decode(posterior.mean, feats, t)

    with attention_backend(cfg.infer.attention), autocast(device, run.amp), run.use("vae"):

        vae = attention_backends(vae_call)
    return {"denoiser": unet, "vae": vae}


def memory_scaling(cfg: Config, height: int, width: int, counts: tuple[int, int], workdir: Path) -> dict:
    """Peak memory of streaming runs on ``counts[0]`` and ``counts[1]`` frames (same process, same model)."""
    base = build_base(cfg)
    peaks = {}
    for n in counts:
        clip = write_panned_clip(workdir / f"mem_lr_{n}", n, height, width)
        variant = prepare_variant(base, cfg, f"mem{n}")
        peaks[str(n)] = run_variant(variant, clip, workdir / f"mem_sr_{n}")["peak_bytes"]
    peaks["ratio"] = peaks[str(counts[1])] / peaks[str(counts[0])]
    return peaks


# --------------------------------------------------------------------------------------------------
# Two configurations, interleaved
# --------------------------------------------------------------------------------------------------


def _frames_of(folder: Path) -> list[np.ndarray]:
    """The ``h w 3`` uint8 frames of every sequence under ``folder``, as ``mgld evaluate`` lists and reads them."""
    from mgld.eval.inputs import list_sequences, load_sequence

    return [frame for seq in list_sequences(folder).values() for frame in load_sequence(seq)]


def output_difference(a: Path, b: Path) -> dict:
    """PSNR (dB, 8-bit) and the largest 8-bit difference between the frames written under ``a`` and ``b``."""
    fa, fb = _frames_of(a), _frames_of(b)
    if len(fa) != len(fb) or not fa:
        raise ValueError(f"{a} and {b} hold different frame counts ({len(fa)} vs {len(fb)})")
    diff = np.stack(fa).astype(np.float64) - np.stack(fb).astype(np.float64)
    mse = float((diff ** 2).mean())
    return {"psnr": float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse), "max_abs": float(np.abs(diff).max())}


def quality_against(reference: Path, candidate: Path, metrics=("psnr", "lpips", "dists"), device: str = "auto"
                    ) -> dict:
    """``mgld evaluate`` of ``candidate``'s frames against ``reference``'s (the default mode's output as GT):
    the mean of each metric, and the metrics skipped (weights not cached) with the reason."""
    from mgld.eval.evaluation import EvalSettings, evaluate

    report = evaluate({"candidate": candidate}, reference, EvalSettings(metrics=tuple(metrics), device=device),
                      progress=False)
    return {"mean": report.mean.get("candidate", {}), "skipped": report.skipped}


def parse_overrides(text: str) -> list[str]:
    """``"a.b=1 c.d=x"`` (spaces or commas) -> ``["a.b=1", "c.d=x"]``."""
    return [item for item in text.replace(",", " ").split() if item]


def compare(config: str | Path, base_overrides: list[str], a: str, b: str, height: int, width: int, frames: int,
            workdir: Path, *, repeats: int = 2, warmup: int = 1, peak_tflops: float | None = None,
            input_path: Path | None = None, quality: bool = False, keep: Path | None = None) -> dict:
    """Run configuration A (``base_overrides`` + ``a``) and B (+ ``b``) interleaved, ``warmup`` untimed rounds
    then ``repeats`` timed rounds of A B, in one process with the same networks; the medians and B/A ratios,
    and how far B's output is from A's (``quality``: LPIPS/DISTS too, with ``mgld evaluate``)."""
    cfg_a = load_config(config, base_overrides + parse_overrides(a))
    cfg_b = load_config(config, base_overrides + parse_overrides(b))
    base = build_base(cfg_a)
    clip = input_path or write_panned_clip(workdir / "lr", frames, height, width)
    variants = {"A": prepare_variant(base, cfg_a, "A"), "B": prepare_variant(base, cfg_b, "B")}
    outputs = keep or workdir / "out"
    name = Path(clip).stem if Path(clip).is_file() else Path(clip).name
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    order = []
    flops = _FlopCache()
    for round_index in range(warmup + repeats):
        for key in ("A", "B"):
            out = outputs / key / name  # written again every round (the variants run with infer.overwrite)
            result = run_variant(variants[key], clip, out, peak_tflops=peak_tflops, flops=flops)
            order.append(key)
            if round_index >= warmup:
                runs[key].append(result)
    summary = {}
    for key in ("A", "B"):
        rs = runs[key]
        summary[key] = {
            "overrides": base_overrides + parse_overrides(a if key == "A" else b),
            "total_seconds": statistics.median(r["total_seconds"] for r in rs),
            "seconds_per_frame": statistics.median(r["seconds_per_frame"] for r in rs),
            "seconds_per_frame_50_steps": statistics.median(r["seconds_per_frame_50_steps"] for r in rs),
            "encoder+unet_seconds": statistics.median(r["stages"]["encoder+unet"]["seconds"] for r in rs),
            "peak_bytes": max(r["peak_bytes"] for r in rs),
            "runs": rs,
        }
    ratio = {k: summary["B"][k] / summary["A"][k] if summary["A"][k] else None
             for k in ("total_seconds", "seconds_per_frame", "encoder+unet_seconds", "peak_bytes")}
    result = {"order": order, "A": summary["A"], "B": summary["B"], "ratio_b_over_a": ratio,
              "output_difference": output_difference(outputs / "A", outputs / "B")}
    if quality:
        result["quality"] = quality_against(outputs / "A", outputs / "B")
    return result


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def _fmt(value, spec: str, none: str = "n/a") -> str:
    return none if value is None else format(value, spec)


def table(result: dict) -> str:
    """Markdown table of one run (:func:`benchmark`)."""
    c = result["config"]
    total = result["total_seconds"]
    den, work = result["denoiser"], result["work_ratio"]
    lines = [
        f"{c['frames']} frames of {c['lr_size'][0]}x{c['lr_size'][1]} (latent {c['latent'][0]}x{c['latent'][1]}), "
        f"{c['steps']} steps, chunks of {c['chunk_frames']}, {c['device_name']} {c['precision']}, guidance "
        f"{c['guidance_scale']} ({c['flow']}), tile_batch {c['tile_batch']}, tile_schedule {c['tile_schedule']}",
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
    modelled = ", ".join(f"{k} {v:.2f}" for k, v in work["modelled"].items())
    lines += [
        "",
        (f"model load {result['model_load_seconds']:.2f} s; " if "model_load_seconds" in result else "")
        + f"{_fmt(result['seconds_per_frame'], '.3f')} s per "
        f"output frame ({_fmt(result['seconds_per_frame_50_steps'], '.3f')} s at {REFERENCE_STEPS} steps); "
        f"{result['denoising_steps']} denoising steps; guidance / (encoder+UNet) per step = "
        + (f"{ratio:.2%}" if ratio is not None else "n/a"),
        f"denoiser: {den['calls']} calls, {den['tflop_per_call']:.4g} TFLOP per call, {den['tflop']:.4g} TFLOP, "
        f"{_fmt(den['tflops_achieved'], '.4g')} TFLOP/s achieved"
        + (f", MFU {den['mfu']:.1%} of {result['peak_tflops']:g} TFLOP/s" if den["mfu"] is not None else "")
        + f"; VAE {result['vae']['tflop']:.4g} TFLOP ({_fmt(result['vae']['tflops_achieved'], '.4g')} TFLOP/s)",
        f"UNet work ratio (latent-pixel evaluations per latent pixel per step): measured "
        f"{_fmt(work['measured'], '.2f')}; modelled {modelled}",
    ]
    if "attention" in result:
        lines.append("attention kernels: denoiser " + json.dumps(result["attention"]["denoiser"]["kernels"])
                     + ", VAE " + json.dumps(result["attention"]["vae"]["kernels"]))
    return "\n".join(lines)


def compare_table(result: dict) -> str:
    """Markdown table of :func:`compare`."""
    a, b, r = result["A"], result["B"], result["ratio_b_over_a"]
    lines = [
        f"A: {' '.join(a['overrides']) or '(config)'}",
        f"B: {' '.join(b['overrides']) or '(config)'}",
        f"order: {' '.join(result['order'])} (medians of the timed runs)",
        "",
        "| | A | B | B/A |",
        "|---|---:|---:|---:|",
        f"| total s | {a['total_seconds']:.3f} | {b['total_seconds']:.3f} | {_fmt(r['total_seconds'], '.3f')} |",
        f"| s/frame | {a['seconds_per_frame']:.3f} | {b['seconds_per_frame']:.3f} | "
        f"{_fmt(r['seconds_per_frame'], '.3f')} |",
        f"| s/frame at {REFERENCE_STEPS} steps | {a['seconds_per_frame_50_steps']:.3f} | "
        f"{b['seconds_per_frame_50_steps']:.3f} | |",
        f"| encoder+unet s | {a['encoder+unet_seconds']:.3f} | {b['encoder+unet_seconds']:.3f} | "
        f"{_fmt(r['encoder+unet_seconds'], '.3f')} |",
        f"| peak MiB | {a['peak_bytes'] / 2**20:.0f} | {b['peak_bytes'] / 2**20:.0f} | "
        f"{_fmt(r['peak_bytes'], '.3f')} |",
        "",
        f"B against A: PSNR {result['output_difference']['psnr']:.2f} dB, largest difference "
        f"{result['output_difference']['max_abs']:.0f}/255",
    ]
    if "quality" in result:
        q = result["quality"]
        lines.append("quality of B with A as reference: " + ", ".join(f"{k} {v:.4f}" for k, v in q["mean"].items())
                     + ("; skipped: " + "; ".join(f"{k} ({v})" for k, v in q["skipped"].items())
                        if q["skipped"] else ""))
    return "\n".join(lines)
