#!/usr/bin/env python
"""Upscale real low-resolution videos 4x with MGLD-VSR (motion-guided latent diffusion).

INPUT is a folder of frames, a folder of sequence folders (REDS4 / VideoLQ / UDM10 layout), or a video file
(mp4/mkv/mov/avi/webm). OUTPUT is a folder (PNG frames with the input names; one subfolder per sequence), or,
for a video input, a video file (H.264, the input's frame rate and audio) when it ends in a video extension.
Re-running a command after an interruption resumes it (finished frames are kept); --overwrite redoes them.

    # the released weights (get them first: mgld download)
    mgld infer --input data/VideoLQ/000 --output results/000
    mgld infer --input clip.mp4 --output clip_x4.mp4 --chunk-overlap 2
    # tiny random networks: exercises the whole pipeline on a CPU in seconds
    mgld infer --config tiny --input sample --output /tmp/sample_sr   # 'sample': the bundled LR clip

Any config key can follow as key=value (e.g. sampling.tile_batch=4); the flags below are shortcuts for the
common ones and are applied before those overrides.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# flag -> config key it sets
FLAG_KEYS = {
    "unet": "infer.unet", "vae": "infer.vae", "weights": "infer.weights", "steps": "sampling.steps",
    "guidance_scale": "sampling.guidance_scale", "guidance_variant": "sampling.guidance_variant",
    "flow": "flow.method", "flow_weights": "flow.weights", "color_fix": "decode.color_fix",
    "cfw_weight": "decode.cfw_weight",
    "latent_tile_size": "sampling.latent_tile_size", "latent_tile_overlap": "sampling.latent_tile_overlap",
    "decode_tile_size": "decode.tile_size", "chunk_frames": "chunk.frames",
    "chunk_overlap": "chunk.overlap", "seed": "sampling.seed", "precision": "infer.precision",
    "device": "infer.device", "devices": "infer.devices", "crf": "infer.crf",
}


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", "-i", type=Path,
                   help="frame folder, folder of sequences, or video (required); 'sample': the bundled 8-frame "
                        "LR clip")
    p.add_argument("--output", "-o", type=Path, help="output folder, or a video file for a video input (required)")
    p.add_argument("--config", default="infer",
                   help="config file, or a packaged config name such as 'tiny' (default: infer, the released "
                        "full-size model)")
    p.add_argument("--weights", help="converted weights folder (default: $MGLD_HOME/mgld-vsr)")
    p.add_argument("--unet", help="stage-1 weights: converted folder or official mgldvsr_unet.ckpt")
    p.add_argument("--vae", help="video-VAE weights: converted folder or official video_vae_cfw.ckpt")
    p.add_argument("--steps", type=int, help="DDPM sampling steps (config default 50)")
    p.add_argument("--guidance-scale", type=float, help="motion-guidance scale; 0 disables it (default 10)")
    p.add_argument("--guidance-variant", choices=["authors", "fixed"],
                   help="authors: the released warping loss (default); fixed: the intended one")
    p.add_argument("--flow", choices=["raft", "spynet", "dis"], help="optical flow for guidance (default raft)")
    p.add_argument("--flow-weights", help="weights of the flow network (RAFT: torchvision or raft-things.pth)")
    p.add_argument("--color-fix", choices=["adain", "wavelet", "none"], help="colour correction (default adain)")
    p.add_argument("--cfw-weight", "--dec-w", dest="cfw_weight", type=float,
                   help="CFW fusion weight w of the decoder (the authors' --dec_w; default 1.0)")
    p.add_argument("--latent-tile-size", "--tile-size", dest="latent_tile_size", type=int,
                   help="latent tile size of the UNet (default 64 = 512 px)")
    p.add_argument("--latent-tile-overlap", "--tile-overlap", dest="latent_tile_overlap", type=int,
                   help="latent tile overlap (default 32)")
    p.add_argument("--decode-tile-size", dest="decode_tile_size", type=int,
                   help="pixel tile of the VAE encode/decode, the memory driver (default 960)")
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


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not args.print_config and (args.input is None or args.output is None):
        parser.error("--input and --output are required")
    if args.input is not None and str(args.input) == "sample" and not args.input.exists():
        from mgld.io.frames import SAMPLE_CLIP

        args.input = SAMPLE_CLIP
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mgld.config import load_config, to_yaml

    flags = [f"{key}={getattr(args, flag)}" for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None]
    flags += ["infer.overwrite=true"] if args.overwrite else []
    cfg = load_config(args.config, flags + list(args.overrides))  # a bad config: one line, exit 2 (cli/_errors.py)
    if args.print_config:
        print(to_yaml(cfg))
        return 0
    from mgld.io.sequences import InputError
    from mgld.pipeline.runner import run  # after the config checks, so that a bad config fails at once

    try:
        summary = run(cfg, args.input, args.output, progress=not args.quiet)
    except (InputError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    logging.info("done: %d sequence(s), %d frames written, %d already present", summary.sequences,
                 summary.frames_written, summary.frames_skipped)
    return 0

