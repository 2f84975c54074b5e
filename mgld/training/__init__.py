"""Training of both MGLD-VSR stages (docs/training.md §1, §4.4, §6): configs, Lightning systems, data, runner."""

from mgld.training.config import Stage1TrainConfig, Stage2TrainConfig, load_train_config
from mgld.training.runner import build_stage1, build_stage2, build_trainer, train
from mgld.training.stage1 import Stage1System
from mgld.training.stage2 import Stage2Loss, Stage2System

__all__ = [
    "Stage1System",
    "Stage1TrainConfig",
    "Stage2Loss",
    "Stage2System",
    "Stage2TrainConfig",
    "build_stage1",
    "build_stage2",
    "build_trainer",
    "load_train_config",
    "train",
]
