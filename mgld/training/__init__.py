"""Training of both MGLD-VSR stages (docs/training.md): configs, Lightning systems, data stream, checkpoints, runner.

The names below are imported on first use, so ``import mgld.training.checkpointing`` (or ``.config``) does not
pull in the networks and Lightning's trainer.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "LossConfig": "mgld.training.config",
    "Stage1TrainConfig": "mgld.training.config",
    "Stage2TrainConfig": "mgld.training.config",
    "load_train_config": "mgld.training.config",
    "Stage1System": "mgld.training.stage1",
    "Stage2System": "mgld.training.stage2",
    "build_stage1": "mgld.training.runner",
    "build_stage2": "mgld.training.runner",
    "build_trainer": "mgld.training.runner",
    "train": "mgld.training.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mgld.training' has no attribute {name!r}")
