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
    "lpips": MetricInfo("LPIPS", "full_ref", False, True, "torchvision alexnet (torch hub cache)"),
    "lpips_vgg": MetricInfo("LPIPS-vgg", "full_ref", False, True, "torchvision vgg16 (torch hub cache)"),
    "dists": MetricInfo("DISTS", "full_ref", False, True, "pyiqa DISTS + torchvision vgg16 (torch hub cache)"),
    "niqe": MetricInfo("NIQE", "no_ref", False, False),
    "brisque": MetricInfo("BRISQUE", "no_ref", False, False, "pyiqa brisque_svm_weights.pth (torch hub cache)"),
    "musiq": MetricInfo("MUSIQ", "no_ref", True, False, "pyiqa MUSIQ-KonIQ (torch hub cache)"),
    "clipiqa": MetricInfo("CLIP-IQA", "no_ref", True, False, "OpenAI CLIP RN50 (torch hub cache, clip/)"),
    "maniqa": MetricInfo("MANIQA", "no_ref", True, False,
                         "pyiqa MANIQA-KonIQ (torch hub cache) + timm vit_base_patch8_224 (Hugging Face cache)"),
    "ewarp": MetricInfo("E*warp(×10⁻³)", "temporal", False, False,
                        "RAFT weights for --flow raft (auto falls back to OpenCV DIS)"),
    "flicker": MetricInfo("Flicker", "temporal", False, True),
    "tlpips": MetricInfo("tLPIPS", "temporal", False, True, "torchvision alexnet (torch hub cache)"),
}
DEFAULT_METRICS = ("psnr", "ssim", "lpips", "dists", "niqe", "brisque", "musiq", "clipiqa", "maniqa", "ewarp",
                   "flicker")
# Frames the E*warp flow and occlusion are estimated on: the evaluated frames, GT, or the LR input upsampled.
FLOW_SOURCES = ("pred", "gt", "lr")
FLOW_METHODS = ("auto", "raft", "dis")
