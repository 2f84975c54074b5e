#!/usr/bin/env python
"""Time and peak memory of each inference stage, as a table (and JSON).

Writes a synthetic LR clip (a panned texture) of --frames frames of --size to a temporary folder and runs the
real streaming inference on it (reading and writing files), with a profiler on the stages: flow, VAE encode,
encoder+UNet, guidance, VAE decode. Reports seconds per output frame, guidance time relative to the UNet per step
(target <= 5%), and, with --memory-frames A,B, the peak memory of runs on A and on B frames (streaming: the ratio
should stay near 1).

    mgld benchmark --config configs/tiny.yaml --size 64x64 --frames 10 --steps 2
    mgld benchmark --config configs/infer.yaml --random-weights --size 64x64 --frames 5 --steps 2 \
        infer.min_short_side=0
    mgld benchmark --config configs/tiny.yaml --memory-frames 10,100 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path


def parse_args(argv, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny", help="config file or packaged config name (default: %(default)s)")
    p.add_argument("--size", default="64x64", help="LR frame size HxW (default: %(default)s)")
    p.add_argument("--frames", type=int, default=10, help="frames in the clip (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
    p.add_argument("--device", default=None, help="device (default: the config's)")
    p.add_argument("--precision", default=None, help="fp32 | fp16 | bf16 | auto (default: the config's)")
    p.add_argument("--random-weights", action="store_true", help="random networks (no weight files needed)")
    p.add_argument("--memory-frames", default=None, metavar="A,B",
                   help="also compare the peak memory of runs on A and B frames")
    p.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from mgld.config import load_config
    from mgld.perf.benchmark import benchmark, memory_scaling, table

    overrides = list(args.overrides)
    overrides += [f"sampling.steps={args.steps}"] if args.steps else []
    overrides += [f"infer.device={args.device}"] if args.device else []
    overrides += [f"infer.precision={args.precision}"] if args.precision else []
    overrides += ["infer.random_weights=true"] if args.random_weights else []
    cfg = load_config(args.config, overrides)
    height, width = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="mgld-bench-") as tmp:
        result = benchmark(cfg, height, width, args.frames, Path(tmp))
        print(table(result))
        if args.memory_frames:
            a, b = (int(v) for v in args.memory_frames.split(","))
            scaling = memory_scaling(cfg, height, width, (a, b), Path(tmp))
            result["memory_scaling"] = scaling
            print(f"\npeak memory: {a} frames {scaling[str(a)] / 2**20:.0f} MiB, {b} frames "
                  f"{scaling[str(b)] / 2**20:.0f} MiB, ratio {scaling['ratio']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0

