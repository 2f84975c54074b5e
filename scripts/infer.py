#!/usr/bin/env python
"""Upscale real low-resolution videos 4x with MGLD-VSR (motion-guided latent diffusion).

INPUT is a folder of frames, a folder of sequence folders (REDS4 / VideoLQ / UDM10 layout), or a video file
(mp4/mkv/mov/avi/webm). OUTPUT is a folder (PNG frames with the input names; one subfolder per sequence), or,
for a video input, a video file (H.264, the input's frame rate and audio) when it ends in a video extension.
Re-running a command after an interruption resumes it (finished frames are kept); --overwrite redoes them.

    # the released weights (get them first: python scripts/download_weights.py)
    python scripts/infer.py --input data/VideoLQ/000 --output results/000
    python scripts/infer.py --input clip.mp4 --output clip_x4.mp4 --chunk-overlap 2
    # tiny random networks: exercises the whole pipeline on a CPU in seconds
    python scripts/infer.py --config configs/tiny.yaml --input mgld/assets/sample_lr --output /tmp/sample_sr

Any config key can follow as key=value (e.g. sampling.tile_batch=4); the flags below are shortcuts for the
common ones and are applied before those overrides.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# flag -> config key it sets
FLAG_KEYS = {
    "unet": "infer.unet", "vae": "infer.vae", "weights": "infer.weights", "steps": "sampling.steps",
    "guidance_scale": "sampling.guidance_scale", "guidance_variant": "sampling.guidance_variant",
    "flow": "flow.method", "flow_weights": "flow.weights", "color_fix": "decode.color_fix", "dec_w": "decode.dec_w",
    "tile_size": "sampling.tile_size", "tile_overlap": "sampling.tile_overlap", "chunk_frames": "chunk.frames",
    "chunk_overlap": "chunk.overlap", "seed": "sampling.seed", "precision": "infer.precision",
    "device": "infer.device", "devices": "infer.devices", "crf": "infer.crf",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", "-i", type=Path, help="frame folder, folder of sequences, or video (required)")
    p.add_argument("--output", "-o", type=Path, help="output folder, or a video file for a video input (required)")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "infer.yaml",
                   help="config file (default: configs/infer.yaml, the released full-size model)")
    p.add_argument("--weights", help="converted weights folder (default: $MGLD_HOME/mgld-vsr)")
    p.add_argument("--unet", help="stage-1 weights: converted folder or official mgldvsr_unet.ckpt")
    p.add_argument("--vae", help="video-VAE weights: converted folder or official video_vae_cfw.ckpt")
    p.add_argument("--steps", type=int, help="DDPM sampling steps (config default 50)")
    p.add_argument("--guidance-scale", type=float, help="motion-guidance scale; 0 disables it (default 10)")
    p.add_argument("--guidance-variant", choices=["reference", "corrected"],
                   help="reference: the authors' warping loss; corrected: the intended one")
    p.add_argument("--flow", choices=["raft", "spynet", "dis"], help="optical flow for guidance (default raft)")
    p.add_argument("--flow-weights", help="weights of the flow network (RAFT: torchvision or raft-things.pth)")
    p.add_argument("--color-fix", choices=["adain", "wavelet", "none"], help="colour correction (default adain)")
    p.add_argument("--dec-w", type=float, help="CFW fusion weight of the decoder (default 1.0)")
    p.add_argument("--tile-size", type=int, help="latent tile size (default 64 = 512 px)")
    p.add_argument("--tile-overlap", type=int, help="latent tile overlap (default 32)")
    p.add_argument("--chunk-frames", type=int, help="frames per clip (default 5, as trained)")
    p.add_argument("--chunk-overlap", type=int, help="frames shared by consecutive clips (default 0: independent)")
    p.add_argument("--seed", type=int, help="noise seed (default 42)")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], help="fp16/bf16 need CUDA (default auto)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--devices", type=int, help="number of GPUs, one process each (default 1)")
    p.add_argument("--crf", type=int, help="H.264 quality for video outputs (default 18)")
    p.add_argument("--overwrite", action="store_true", help="redo outputs already on disk instead of resuming")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. sampling.tile_batch=4")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.print_config and (args.input is None or args.output is None):
        parser.error("--input and --output are required")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mgld.config import load_config, to_yaml
    from mgld.data.video_io import InputError
    from mgld.inference import run

    flags = [f"{key}={getattr(args, flag)}" for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None]
    flags += ["infer.overwrite=true"] if args.overwrite else []
    try:
        cfg = load_config(args.config, flags + list(args.overrides))
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"error: config: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(to_yaml(cfg))
        return 0
    try:
        summary = run(cfg, args.input, args.output, progress=not args.quiet)
    except (InputError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    logging.info("done: %d sequence(s), %d frames written, %d already present", summary.sequences,
                 summary.frames_written, summary.frames_skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
