#!/usr/bin/env python
"""Upscale real low-resolution videos 4x with MGLD-VSR (motion-guided latent diffusion).

INPUT is a folder of frames, a folder of sequences (frame folders and/or videos: the REDS4 / VideoLQ / UDM10
layout), or a video file (mp4/mkv/mov/avi/webm). Every input is checked before any model is built: a frame that
does not decode, or a video that decodes to fewer frames than its container declares, stops the run
(--allow-truncated processes what decodes; --keep-going skips a broken sequence and reports it at the end).

OUTPUT (never the input or inside it):
  * a folder: PNG frames named as the inputs (one subfolder per sequence); 8-bit, or 16-bit with --bit-depth 16;
  * a video file (.mp4/.mkv/.mov) for one input sequence: H.264 (--crf), or lossless RGB FFV1 (--codec ffv1,
    .mkv); a video input keeps its timestamps (variable frame rates too), audio and rotation; frames need --fps;
  * --output-format video with a folder: one video per sequence (name.mp4, or name.mkv for FFV1), e.g. a
    folder of videos to a folder of videos.
Videos are byte-reproducible (the same frames give the same file on any machine) unless
output.reproducible=false (multi-threaded x264, faster).

Resume: re-running the same command continues an interrupted run. Each output records the run that made it
(input content, the settings that change pixels, mgld version; OUTPUT/.mgld/ and .NAME.mgld.json); a frame or
video counts as done only if its record matches and the file is intact, results of other settings are redone,
and an output folder holding results of another input (or files nobody recorded) stops the run: --overwrite
replaces them.

Several processes: --devices N (GPUs, or CPU processes with --device cpu) and --num-nodes M run N x M
processes through Lightning Fabric; --shard i/n does the i-th of n parts of the work (a cluster's job array;
run all n, each with the same command). The work (every sequence's chunks, in order) is cut into contiguous
ranges, a video at its segment boundaries; with independent chunks (the default) the result is the one of a
single process (CPU: with the same number of threads per process, e.g. OMP_NUM_THREADS=1). With
--chunk-overlap each range starts its own anchor chain: frames at range boundaries are not cross-faded.

    # the released weights (get them first: mgld download)
    mgld infer --input data/VideoLQ/000 --output results/000
    mgld infer --input clip.mp4 --output clip_x4.mp4 --chunk-overlap 2
    mgld infer --input data/VideoLQ --output results/videos --output-format video --fps 25
    mgld infer --input clip.mp4 --output clip_x4.mkv --codec ffv1 --bit-depth 16
    mgld infer --input data/REDS4 --output results/REDS4 --devices 4                 # 4 GPUs
    mgld infer --config tiny --input sample --output /tmp/sr --devices 2 --device cpu  # 2 CPU processes
    sbatch --array=0-7 --wrap 'mgld infer --input in --output out --shard $SLURM_ARRAY_TASK_ID/8'
    # tiny random networks: exercises the whole pipeline on a CPU in seconds
    mgld infer --config tiny --input sample --output /tmp/sample_sr   # 'sample': the bundled LR clip
    # faster on a GPU, output no longer bit-identical to the authors' (bf16, batched tiles, ...): --fast
    mgld infer --input clip.mp4 --output clip_x4.mp4 --fast --compile

Defaults reproduce the authors' released script (fp16 autocast on CUDA, one latent tile per UNet call,
overlapping tiles). Every speed-up that changes the output is a named option: --precision bf16, --tile-batch,
--tile-schedule shifted, --compile, or all the common ones at once with --fast; --offload and --decode-tile-size
auto (with sampling.pixel_tiling=frame) trade speed for memory.

Any config key can follow as key=value (e.g. sampling.tile_batch=4); the flags below are shortcuts for the
common ones and are applied before those overrides.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# the --fast help, kept in sync with mgld.models.efficiency.FAST_HELP (tests/test_cli.py; not imported: --help
# must not import torch)
FAST_HELP = ("turn on the speed options that change the output (by float rounding, or by bf16): on CUDA "
             "infer.precision=bf16 (fp16 on GPUs without native bf16) with weights cast once and norms in fp32 "
             "(infer.cast_weights=true), infer.channels_last=true, sampling.tile_batch=auto; on the CPU only "
             "sampling.tile_batch=auto. Flags and key=value overrides given with it win; add --compile for "
             "torch.compile")

# flag -> config key it sets
FLAG_KEYS = {
    "unet": "infer.unet", "vae": "infer.vae", "weights": "infer.weights", "steps": "sampling.steps",
    "guidance_scale": "sampling.guidance_scale", "guidance_variant": "sampling.guidance_variant",
    "flow": "flow.method", "flow_weights": "flow.weights", "color_fix": "decode.color_fix",
    "cfw_weight": "decode.cfw_weight",
    "latent_tile_size": "sampling.latent_tile_size", "latent_tile_overlap": "sampling.latent_tile_overlap",
    "decode_tile_size": "decode.tile_size", "chunk_frames": "chunk.frames", "tile_batch": "sampling.tile_batch",
    "tile_schedule": "sampling.tile_schedule", "offload": "infer.offload",
    "chunk_overlap": "chunk.overlap", "seed": "sampling.seed", "precision": "infer.precision",
    "device": "infer.device", "devices": "infer.devices", "num_nodes": "infer.num_nodes", "crf": "output.crf",
    "output_format": "output.format", "fps": "output.fps", "bit_depth": "output.bit_depth",
    "quantize": "output.quantize", "codec": "output.codec",
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
    p.add_argument("--flow-weights",
                   help="RAFT weights: torchvision raft_large, raft-things.pth, an official stage-1 .ckpt or a "
                        "converted folder (default: the weights folder's flow.safetensors, the stage-1 checkpoint's "
                        "RAFT, as the authors; then raft-things.pth, then torch hub's cache)")
    p.add_argument("--color-fix", choices=["adain", "wavelet", "none"], help="colour correction (default adain)")
    p.add_argument("--cfw-weight", "--dec-w", dest="cfw_weight", type=float,
                   help="CFW fusion weight w of the decoder (the authors' --dec_w; default 1.0)")
    p.add_argument("--latent-tile-size", "--tile-size", dest="latent_tile_size", type=int,
                   help="latent tile size of the UNet (default 64 = 512 px)")
    p.add_argument("--latent-tile-overlap", "--tile-overlap", dest="latent_tile_overlap", type=int,
                   help="latent tile overlap (default 32)")
    p.add_argument("--decode-tile-size", dest="decode_tile_size", type=_int_or_auto, metavar="{N,auto}",
                   help="pixel tile (multiple of 8, default 960): in the default sampling.pixel_tiling=authors the "
                        "tile of the whole per-tile chain (changes the result, not only memory); in frame mode the "
                        "VAE tiles, the memory driver; auto (frame mode only): the largest up to 960 that fits")
    p.add_argument("--tile-batch", dest="tile_batch", type=_int_or_auto, metavar="{N,auto}",
                   help="latent tiles per UNet call; auto: as many as the free memory allows (default 1, as the "
                        "authors; more changes the output by float rounding only)")
    p.add_argument("--tile-schedule", choices=["overlap", "shifted"],
                   help="overlap: the authors' Gaussian-blended overlapping latent tiles (default); shifted: "
                        "non-overlapping tiles on a grid shifted every step, about half the UNet work at 720p "
                        "(changes the output)")
    p.add_argument("--chunk-frames", type=int, help="frames per clip (default 5, as trained)")
    p.add_argument("--chunk-overlap", type=int, help="frames shared by consecutive clips (default 0: independent)")
    p.add_argument("--seed", type=int, help="noise seed (default 42)")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"],
                   help="auto: fp16 autocast on CUDA (the authors'), fp32 on the CPU (default); bf16 (CUDA): "
                        "weights cast to bf16 once, norms in fp32; fp16/bf16 need CUDA")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the denoiser (infer.compile; the first clip is slower; float rounding)")
    p.add_argument("--offload", choices=["none", "model", "sequential"],
                   help="where the networks wait between stages: none (on the GPU, default), model (each on the GPU "
                        "only for its stage), sequential (each layer for its own call: least memory, slowest); the "
                        "output is unchanged")
    p.add_argument("--fast", action="store_true", help=FAST_HELP)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--devices", type=int,
                   help="processes per node, one per GPU, or CPU processes with --device cpu (default 1)")
    p.add_argument("--num-nodes", type=int, help="machines of a multi-node run (Lightning Fabric; default 1)")
    p.add_argument("--shard", type=_shard, metavar="I/N",
                   help="do part I of N (0-based) of the work: for N independent jobs (a job array)")
    p.add_argument("--output-format", choices=["auto", "frames", "video"],
                   help="auto: by the output path (video extension: a video); video with a folder: one video per "
                        "sequence (default auto)")
    p.add_argument("--fps", type=float, help="frame rate of a video made from frames")
    p.add_argument("--bit-depth", type=_bit_depth, metavar="{8,16,auto}",
                   help="8; 16 (16-bit PNG, 10-bit H.264, 16-bit FFV1); auto: 16 when the input is deeper (default 8)")
    p.add_argument("--quantize", choices=["truncate", "round"],
                   help="float -> integer: truncate (the authors' (x*255).astype(uint8), default) or round")
    p.add_argument("--codec", choices=["h264", "ffv1"], help="video codec: h264 (lossy, --crf) or ffv1 (lossless "
                                                              "RGB, .mkv) (default h264)")
    p.add_argument("--crf", type=int, help="H.264 quality, 0-51, lower is better (default 18)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo outputs already on disk (also those of another input) instead of resuming")
    p.add_argument("--keep-going", action="store_true",
                   help="skip a sequence with bad input, report it at the end (exit status 1)")
    p.add_argument("--allow-truncated", action="store_true",
                   help="process the decodable frames of a video that is shorter than its container declares")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. sampling.tile_batch=4")
    return p


def _int_or_auto(text: str) -> str:
    if text != "auto" and not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer or auto")
    return text


def _fast_overrides(config: str, overrides: list[str]) -> list[str]:
    """``--fast`` as overrides for the device the run will use (read from the config and the other overrides)."""
    import torch

    from mgld.config import load_config
    from mgld.models.efficiency import fast_overrides

    device = load_config(config, overrides).infer.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return fast_overrides(device)


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= I < N (I is 0-based)")
    return i, n


def _bit_depth(text: str) -> str:
    if text not in ("8", "16", "auto"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected 8, 16 or auto")
    return "null" if text == "auto" else text


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
    flags += ["infer.compile=true"] if args.compile else []
    if args.fast:  # first, so that any flag or override given with it wins
        fast = _fast_overrides(args.config, flags + list(args.overrides))
        logging.getLogger("mgld.cli.infer").info("--fast: %s", " ".join(fast))
        flags = fast + flags
    cfg = load_config(args.config, flags + list(args.overrides))  # a bad config: one line, exit 2 (cli/_errors.py)
    if args.print_config:
        print(to_yaml(cfg))
        return 0
    from mgld.pipeline.runner import run  # after the config checks, so that a bad config fails at once

    # bad input, missing weights: an exception, one line and exit 1 (cli/_errors.py), a traceback with --debug
    summary = run(cfg, args.input, args.output, progress=not args.quiet, keep_going=args.keep_going,
                  allow_truncated=args.allow_truncated, shard=args.shard or (0, 1))
    logging.info("done: %d sequence(s), %d frames written, %d already present", summary.sequences,
                 summary.frames_written, summary.frames_skipped)
    for name, message in summary.failed:
        print(f"error: {name} skipped: {message}", file=sys.stderr)
    if summary.failed:
        print(f"error: {len(summary.failed)} sequence(s) failed and were skipped (--keep-going)", file=sys.stderr)
        return 1
    return 0

