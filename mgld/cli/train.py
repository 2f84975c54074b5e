"""Train MGLD-VSR stage 1 (diffusion: SFT + temporal layers + time-aware encoder) or stage 2 (temporal VAE decoder).

    mgld train --config stage1 init.sd_checkpoint=/weights/v2-1_512-ema-pruned.ckpt \
        data.root=/data/REDS/train_sharp output_dir=runs/stage1 trainer.devices=8 trainer.strategy=ddp
    mgld train --config stage1 output_dir=runs/stage1 --resume

The stage comes from the config's ``stage`` key. Everything is configured in the YAML (schema:
mgld/training/config.py); ``key=value`` overrides change any key. See mgld/training/runner.py for the run folder.
Bad input (config, data, checkpoints, run folder) raises an exception with a one-line message naming the file or
key, before any network is built; the command's top-level handler prints it.
"""

from __future__ import annotations

import argparse
import logging

EPILOG = """\
overrides (key=value, OmegaConf dotlist, any key of the config; common ones):
  output_dir=PATH                the run folder (config.yaml, checkpoints/, tb/, weights/)
  data.root=PATH                 training clips: sequence folders <seq>/<frame>.png (stage 2: GT clips)
  data.generated_root=PATH       stage 2: the lq/ and latents/ folders of mgld generate-latents
  init.sd_checkpoint=PATH        SD 2.1-base: v2-1_512-ema-pruned.ckpt or a diffusers folder
  trainer.max_steps=N            optimizer steps (stage 2: generator updates)
  trainer.devices=N trainer.num_nodes=N trainer.strategy=ddp     multi-GPU / multi-node (Lightning DDP)
  trainer.precision=bf16-mixed   mixed precision; stage1.gradient_checkpointing=true saves memory
  data.batch_size=N optim.accumulate_grad_batches=N optim.lr=X
  trainer.seed=N                 model init and the data stream (clip order, crops, degradations, noise, timesteps)

configs: stage1 / stage2 are the authors' runs as released; stage1_fixed / stage2_fixed fix each quirk (named in
their comments), so an ablation is one config against the other. tiny_stage1 / tiny_stage2: CPU smoke runs.

examples:
  mgld train --config tiny_stage1 data.root=clips output_dir=runs/tiny trainer.max_steps=4
  mgld train --config tiny_stage1 data.root=clips output_dir=runs/tiny2 trainer.devices=2 trainer.strategy=ddp
  mgld train --config stage2 --print-config losses.lpips=0
"""


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train MGLD-VSR stage 1 or stage 2 from a YAML config (the stage is the config's 'stage' key).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, metavar="YAML",
                        help="training config: a file, or a packaged name: stage1, stage2 (the authors' runs), "
                             "stage1_fixed, stage2_fixed (each quirk fixed), tiny_stage1, tiny_stage2 (CPU smoke)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in output_dir from its newest checkpoint that loads (damaged ones are "
                             "skipped and named): same step, optimizer state and data stream, as if it had never "
                             "stopped; without it, an output_dir that already holds a run is refused")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (YAML, overrides applied) and exit without training")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. data.root=/data/REDS/train_sharp trainer.max_steps=1000")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from mgld.config import to_yaml
    from mgld.training.config import load_train_config

    cfg = load_train_config(args.config, args.overrides)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from pytorch_lightning.utilities import rank_zero_only

    from mgld.training.runner import train

    run_dir = train(cfg, resume=args.resume)
    if rank_zero_only.rank == 0:
        print(f"run folder: {run_dir} (checkpoints/, tb/, weights/)")
    return 0

