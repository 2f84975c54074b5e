"""The metric table: names, labels, directions and needs (docs/evaluation.md). Light: no torch import, so that
``mgld evaluate --help`` can list the metrics at once; the implementations are in :mod:`mgld.eval.metrics`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is reported: table label, direction, what it needs, and what it needs offline."""

    label: str
    kind: Literal["full_ref", "no_ref", "temporal"]
    higher_is_better: bool
    needs_gt: bool
    weights: str = ""  # what must be in the local caches (empty: nothing)


METRICS: dict[str, MetricInfo] = {
    "psnr": MetricInfo("PSNR", "full_ref", True, True),
    "ssim": MetricInfo("SSIM", "full_ref", True, True),
    "lpips": MetricInfo("LPIPS", "full_ref", False, True, "alexnet-owt-7be5be79.pth in <torch hub>/checkpoints"),
    "lpips_vgg": MetricInfo("LPIPS-vgg", "full_ref", False, True, "vgg16-397923af.pth in <torch hub>/checkpoints"),
    "dists": MetricInfo("DISTS", "full_ref", False, True,
                        "DISTS_weights-f5e65c96.pth in <torch hub>/pyiqa, vgg16-397923af.pth in "
                        "<torch hub>/checkpoints"),
    "niqe": MetricInfo("NIQE", "no_ref", False, False),
    "brisque": MetricInfo("BRISQUE", "no_ref", False, False, "brisque_svm_weights.pth in <torch hub>/pyiqa"),
    "musiq": MetricInfo("MUSIQ", "no_ref", True, False, "musiq_koniq_ckpt-e95806b9.pth in <torch hub>/pyiqa"),
    "clipiqa": MetricInfo("CLIP-IQA", "no_ref", True, False, "the openai-clip package and RN50.pt in <torch hub>/clip"),
    "maniqa": MetricInfo("MANIQA", "no_ref", True, False, "timm/vit_base_patch8_224.augreg2_in21k_ft_in1k in the "
                         "Hugging Face cache and ckpt_koniq10k.pt in <torch hub>/pyiqa"),
    "ewarp": MetricInfo("E*warp(×10⁻³)", "temporal", False, False,
                        "RAFT weights for --flow raft (--flow auto falls back to OpenCV DIS)"),
    "flicker": MetricInfo("Flicker", "temporal", False, True),
    "tlpips": MetricInfo("tLPIPS", "temporal", False, True, "alexnet-owt-7be5be79.pth in <torch hub>/checkpoints"),
}
DEFAULT_METRICS = ("psnr", "ssim", "lpips", "dists", "niqe", "brisque", "musiq", "clipiqa", "maniqa", "ewarp",
                   "flicker")
# Frames the E*warp flow and occlusion are estimated on: the evaluated frames, GT, or the LR input upsampled.
FLOW_SOURCES = ("pred", "gt", "lr")
FLOW_METHODS = ("auto", "raft", "dis")
