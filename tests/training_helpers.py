"""Shared set-up of the training tests (test_training, test_training_runs, test_training_errors): the tiny configs,
synthetic data folders and the overrides that point a tiny config at them. The one-thread fixture is in conftest.py."""

from pathlib import Path

from conftest import ROOT

TINY_STAGE = {stage: ROOT / "configs" / f"tiny_stage{stage}.yaml" for stage in (1, 2)}


def write_training_data(root: Path, num_frames: int = 10, stage2: bool = True) -> Path:
    """``root/clips``: 2 moving-texture sequences x ``num_frames`` frames of 32x32; with ``stage2``, also
    ``root/generated``: bicubic LQ frames and random latents. Returns ``root``."""
    from mgld.training.data import write_synthetic_sequences, write_synthetic_stage2

    clips = write_synthetic_sequences(root / "clips", num_sequences=2, num_frames=num_frames, size=(32, 32))
    if stage2:
        write_synthetic_stage2(clips, root / "generated")
    return root


def tiny_overrides(stage: int, data: Path, out: Path, *extra: str) -> list[str]:
    """Overrides of configs/tiny_stage{stage}.yaml: the data of :func:`write_training_data` under ``data``, the run
    folder ``out``, a checkpoint every 2 steps; then ``extra``."""
    base = [f"data.root={data / 'clips'}", f"output_dir={out}", "trainer.checkpoint_every_n_steps=2"]
    if stage == 2:
        base.append(f"data.generated_root={data / 'generated'}")
    return base + list(extra)


def tiny_config(stage: int, data: Path, out: Path, *extra: str):
    """The resolved tiny training config of ``stage`` with :func:`tiny_overrides`."""
    from mgld.training.config import load_train_config

    return load_train_config(TINY_STAGE[stage], tiny_overrides(stage, data, out, *extra))
