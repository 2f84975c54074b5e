"""Make the stage-2 training inputs: degraded LQ frames and stage-1 latents for every 5-frame segment of a GT folder.

    mgld generate-latents --config stage1 --weights runs/stage1/weights \
        --input data/REDS/train_sharp_sub --out data/REDS/stage1_generated init.sd_checkpoint=/w/v2-1.ckpt

Writes <out>/lq/, <out>/latents/ (what configs/stage2.yaml's data.generated_root reads) and <out>/preview/.
The config's sampling/flow/infer sections choose how the latents are sampled: configs/stage1.yaml has the
authors' w_latent script (guidance scale 1, 200 steps, RAFT on the 512-px upsampled frames, bilinear LQ
upsampling), configs/stage1_fixed.yaml samples as inference does. REDS4 is left out by prefix (its sub-image
folders too), as the stage-2 dataset does. Resumable: run it again and finished segments are skipped.
See mgld/training/latents.py.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

log = logging.getLogger("generate_latents")


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Degrade GT clips and sample their stage-1 latents (the inputs of stage-2 training).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", required=True, metavar="YAML",
                        help="the stage-1 training config: model, data.degradation, data.exclude, init.sd_checkpoint "
                             "and the sampling/flow/decode/infer sections (stage1: the authors' w_latent settings)")
    parser.add_argument("--weights", metavar="DIR",
                        help="converted folder with the trained denoiser (a stage-1 run's weights/ folder); "
                             "required unless infer.random_weights=true")
    parser.add_argument("--vae", metavar="PATH",
                        help="temporal VAE (converted folder or official .ckpt); default: the SD VAE of "
                             "init.sd_checkpoint, decoding previews without CFW")
    parser.add_argument("--input", required=True, metavar="DIR", help="GT sequence folders (<seq>/<frame>.png)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (becomes data.generated_root)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-segment degradation")
    parser.add_argument("--device", default=None,
                        help="auto, cpu, cuda, cuda:1, ...; sets infer.device (not given: the config's, an "
                             "infer.device=... override wins over the flag)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (sampling.steps=50 ...)")
    return parser.parse_args(argv)


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The flags as overrides first, then the user's, which win (as in mgld infer)."""
    flags = [f"infer.device={args.device}"] if args.device is not None else []
    return flags + list(args.overrides)


def build_pipeline(cfg, weights: str | None, vae_path: str | None):
    """An MGLDPipeline at scale exactly 4 from a stage-1 training config and the given weights."""
    import torch

    from mgld.config import Config
    from mgld.models import build_denoiser, build_vae
    from mgld.pipeline.pipeline import MGLDPipeline
    from mgld.weights.loading import init_vae_from_sd, load_denoiser, load_vae

    decode = cfg.decode
    if weights is not None:
        denoiser, _ = load_denoiser(weights, cfg.model)
    elif cfg.infer.random_weights:
        log.warning("RANDOM WEIGHTS (infer.random_weights=true): the latents are meaningless")
        torch.manual_seed(cfg.sampling.seed)
        denoiser = build_denoiser(cfg.model)
    else:
        raise SystemExit("--weights is required (a stage-1 run's weights/ folder) unless infer.random_weights=true")
    if vae_path is not None:
        vae, _ = load_vae(vae_path, cfg.model)
    elif cfg.init.sd_checkpoint is not None:
        vae = init_vae_from_sd(cfg.init.sd_checkpoint, cfg.model)
        decode = replace(decode, cfw_weight=0.0)  # CFW is not trained yet: previews use the plain SD decoder
    elif cfg.infer.random_weights:
        vae = build_vae(cfg.model)
    else:
        raise SystemExit("no VAE: pass --vae or set init.sd_checkpoint")
    infer = replace(cfg.infer, scale=4, min_short_side=0)
    config = Config(model=cfg.model, sampling=cfg.sampling, flow=cfg.flow, decode=decode, chunk=cfg.chunk,
                    infer=infer)
    return MGLDPipeline(denoiser, vae, config).to(infer.device)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from mgld.data.degradations import RealBasicVSRDegradation
    from mgld.training.config import Stage1TrainConfig, load_train_config
    from mgld.training.latents import generate_latents

    cfg = load_train_config(args.config, config_overrides(args))
    if not isinstance(cfg, Stage1TrainConfig):
        raise SystemExit(f"{args.config}: expected a stage-1 training config")
    pipe = build_pipeline(cfg, args.weights, args.vae)
    degradation = RealBasicVSRDegradation(cfg.data.degradation) if cfg.data.degrade else None
    counts = generate_latents(pipe, args.input, args.out, degradation, cfg.model.num_frames, cfg.data.exclude,
                              args.seed, progress=lambda key: log.info("segment %s done", key), exclude_by="prefix")
    log.info("%d segments written, %d already done; stage 2: data.generated_root=%s", counts["done"],
             counts["skipped"], args.out)
    return 0

