#!/usr/bin/env python
"""Performance record of the inference: per-stage time and peak memory, FLOPs, MFU, UNet work ratio (and JSON).

Writes a synthetic LR clip (a panned texture) of --frames frames of --size to a temporary folder (or uses
--input) and runs the real streaming inference on it with a profiler on the stages: flow, VAE encode,
encoder+UNet, guidance, VAE decode. Reports per stage seconds, calls and peak memory (CUDA max allocated, RSS on
the CPU); the denoiser's TFLOP per call (FlopCounterMode), achieved TFLOP/s and model-FLOP utilisation against
--peak-tflops; the UNet work ratio (latent-pixel evaluations per latent pixel per step, measured and modelled for
each tiling mode); seconds per output frame, also at 50 steps.

--compare A B runs two configurations (override lists, space- or comma-separated; "" = the config as given)
interleaved, A B A B, in one process and prints the B/A ratios and how far B's frames are from A's; --quality
adds LPIPS/DISTS of B's frames with A's as the reference (the quality cost of a mode, e.g. the shifted tiles).

    mgld benchmark --config tiny --size 64x64 --frames 10 --steps 2
    mgld benchmark --config infer --random-weights --size 128x160 --frames 2 --steps 1 chunk.frames=2
    mgld benchmark --config infer --input data/REDS4/LR/000 --compare "" "sampling.tile_schedule=shifted" \\
        --quality --keep out/shifted-vs-overlap
    mgld benchmark --config infer --random-weights --size 180x320 --frames 5 --steps 3 --peak-tflops 790 \\
        --compare "infer.precision=fp16" "infer.precision=bf16 sampling.tile_batch=auto" --json bench.json
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path


def parse_args(argv, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny", help="config file or packaged config name (default: %(default)s)")
    p.add_argument("--size", default="64x64", help="LR frame size HxW of the synthetic clip (default: %(default)s)")
    p.add_argument("--frames", type=int, default=10, help="frames in the synthetic clip (default: %(default)s)")
    p.add_argument("--input", type=Path, default=None,
                   help="run on these LR frames (a frame folder or video) instead of a synthetic clip")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
    p.add_argument("--device", default=None, help="device (default: the config's)")
    p.add_argument("--precision", default=None, help="fp32 | fp16 | bf16 | auto (default: the config's)")
    p.add_argument("--random-weights", action="store_true", help="random networks (no weight files needed)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's peak TFLOP/s for the compute dtype, for the model-FLOP utilisation")
    p.add_argument("--attention", action="store_true", help="also report which attention kernel each call ran")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                   help="run two override sets interleaved and print the B/A ratios")
    p.add_argument("--repeats", type=int, default=2, help="--compare: timed rounds of A B (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="--compare: untimed rounds first (default: %(default)s)")
    p.add_argument("--quality", action="store_true", help="--compare: LPIPS/DISTS of B's frames against A's")
    p.add_argument("--keep", type=Path, default=None, help="--compare: keep A's and B's frames in this folder")
    p.add_argument("--work-table", action="store_true",
                   help="print the UNet work ratio of each tiling mode at 480p/720p/1080p/4K and exit")
    p.add_argument("--memory-frames", default=None, metavar="A,B",
                   help="also compare the peak memory of runs on A and B frames")
    p.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (both configurations)")
    return p.parse_args(argv)


def _work_table(config: str) -> tuple[str, list[dict]]:
    import torch

    from mgld.config import load_config
    from mgld.models import build_denoiser
    from mgld.perf.simulate import count_flops
    from mgld.perf.work import work_markdown, work_table

    cfg = load_config(config)
    with torch.device("meta"):
        denoiser = build_denoiser(cfg.model)
    x = torch.empty(cfg.model.num_frames, 4, 64, 64)
    tflop = count_flops(denoiser, denoiser, x, torch.zeros(1, dtype=torch.long), x, cfg.model.num_frames) / 1e12
    rows = work_table(tflop_per_call=tflop, frames=cfg.model.num_frames)
    return (f"one denoiser call on a 64x64 latent tile x {cfg.model.num_frames} frames: {tflop:.3f} TFLOP\n\n"
            "UNet work ratio (latent-pixel evaluations per output latent pixel per step):\n\n"
            + work_markdown(rows) + "\n\nUNet TFLOP per output frame at 50 steps (tile-area scaled):\n\n"
            + work_markdown(rows, "unet_tflop_per_frame")), rows


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.work_table:
        text, rows = _work_table(args.config)
        print(text)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return 0
    from mgld.config import load_config
    from mgld.perf.benchmark import benchmark, compare, compare_table, memory_scaling, table

    overrides = list(args.overrides)
    overrides += [f"sampling.steps={args.steps}"] if args.steps else []
    overrides += [f"infer.device={args.device}"] if args.device else []
    overrides += [f"infer.precision={args.precision}"] if args.precision else []
    overrides += ["infer.random_weights=true"] if args.random_weights else []
    height, width = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="mgld-bench-") as tmp:
        if args.compare:
            result = compare(args.config, overrides, args.compare[0], args.compare[1], height, width, args.frames,
                             Path(tmp), repeats=args.repeats, warmup=args.warmup, peak_tflops=args.peak_tflops,
                             input_path=args.input, quality=args.quality, keep=args.keep)
            for key in ("A", "B"):
                print(f"## {key}: last timed run\n\n{table(result[key]['runs'][-1])}\n")
            print(compare_table(result))
        else:
            cfg = load_config(args.config, overrides)
            result = benchmark(cfg, height, width, args.frames, Path(tmp), peak_tflops=args.peak_tflops,
                               input_path=args.input, attention_report=args.attention)
            print(table(result))
            if args.memory_frames:
                a, b = (int(v) for v in args.memory_frames.split(","))
                scaling = memory_scaling(cfg, height, width, (a, b), Path(tmp))
                result["memory_scaling"] = scaling
                print(f"\npeak memory: {a} frames {scaling[str(a)] / 2**20:.0f} MiB, {b} frames "
                      f"{scaling[str(b)] / 2**20:.0f} MiB, ratio {scaling['ratio']:.3f}")
    if args.json:
        from mgld.io.atomic import atomic_write

        atomic_write(args.json, json.dumps(result, indent=1, default=str).encode())
    return 0
