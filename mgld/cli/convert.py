#!/usr/bin/env python
"""Convert official MGLD-VSR checkpoints (or plain SD 2.1) into an mgld weights folder.

The folder holds config.yaml, denoiser.safetensors, flow.safetensors (the stage-1 checkpoint's own RAFT,
flownet_model.*, which the authors' inference uses instead of raft-things.pth) and vae.safetensors; inference
and training load it with strict key and shape checks, and inference takes its RAFT from flow.safetensors.

    # the released weights -> the default location used by mgld infer
    mgld convert --stage1 mgldvsr_unet.ckpt --vae video_vae_cfw.ckpt
    # a starting point for training: SD 2.1-base UNet/VAE/text context + fresh MGLD layers
    mgld convert --from-sd v2-1_512-ema-pruned.ckpt --out weights/sd21-init
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mgld.weights.hub import default_weights_dir


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage1", type=Path, help="official stage-1 checkpoint (mgldvsr_unet.ckpt)")
    parser.add_argument("--vae", type=Path, help="official video-VAE checkpoint (video_vae_cfw.ckpt)")
    parser.add_argument("--from-sd", type=Path, metavar="SD",
                        help="initialise from SD 2.x instead: an LDM .ckpt or a diffusers folder")
    parser.add_argument("--mid-from-sd", action="store_true",
                        help="with --from-sd: also load SD's middle transformer and 2nd middle ResNet into the "
                             "slots the temporal layers shifted (the fix; default: left random, as the authors' "
                             "training did; docs/algorithm.md §2.1)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: {default_weights_dir()}, or $MGLD_HOME/mgld-vsr)")
    parser.add_argument("--config", default="model/mgld_sd21",
                        help="config whose 'model' section describes the networks (default: %(default)s)")
    parser.add_argument("overrides", nargs="*",
                        help="config overrides, key=value (e.g. model.unet.temporal_alpha_init=0.5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    if args.from_sd is None and args.stage1 is None and args.vae is None:
        parser.error("give --stage1 and/or --vae, or --from-sd")
    if args.from_sd is not None and (args.stage1 or args.vae):
        parser.error("--from-sd cannot be combined with --stage1/--vae")
    # heavy imports after argument parsing, so that --help is instant
    from mgld.config import Config, load_config
    from mgld.weights.checkpoints import save_model_folder
    from mgld.weights.loading import convert_official, init_denoiser_from_sd, init_vae_from_sd

    cfg = load_config(args.config, args.overrides, Config).model
    out = args.out or default_weights_dir()
    # a missing or inconsistent checkpoint: an exception naming the file, one line and exit 1 (cli/_errors.py)
    if args.from_sd is not None:
        denoiser = init_denoiser_from_sd(args.from_sd, cfg, mid_from_sd=args.mid_from_sd)
        vae = init_vae_from_sd(args.from_sd, cfg)
        provenance = {"init_from_sd": args.from_sd.name, "mid_from_sd": args.mid_from_sd}
        save_model_folder(out, cfg, denoiser=denoiser, vae=vae, provenance=provenance)
    else:
        convert_official(out, stage1=args.stage1, vae=args.vae, cfg=cfg)
    logging.info("wrote %s", out)
    return 0

