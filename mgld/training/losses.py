"""Stage-2 losses of the temporal VAE decoder (docs/training.md §5): L1, LPIPS, hinge GAN, frame difference, and the
Sobel structure-weighted temporal consistency loss.

Every image tensor is ``(b t) c H W`` in [-1, 1] (frames of ``b`` clips folded into the batch, frame index
fastest), ``pred`` the decoder's reconstruction x̂ and ``target`` the ground truth x. Each function returns the
plain mean; the authors' extra divisions by the batch (``/ b·T`` and ``/ b·(T−1)``) are applied by the stage-2
system (``losses.reduction``), so the terms here can be checked on their own.

The structure-weighted consistency loss (SWC) has two forms (``variant``):

* ``"fixed"``: edges and optical flow from the GT; the *outputs* are warped onto their neighbours and
  compared, with a weight map ``M = 1 + w·Sobel(x)`` emphasising structure (w = 3)::

      L = Σ_{i=0}^{T−2} ℓ(M_i (1−O^a_i)·(warp(x̂_{i+1}, B_i) − x̂_i))
        + Σ_{i=1}^{T−1} ℓ(M_i (1−O^b_{i−1})·(warp(x̂_{i−1}, W_{i−1}) − x̂_i))

* ``"authors"``: the authors' code as implemented, which calls ``swc_loss(inputs, reconstructions)`` with its
  arguments swapped: edges and flows come from x̂ (fed to the flow network in [-1, 1]), the *GT* frames are
  warped and compared, with the motion-guidance loop's zero first terms and off-by-one flow index (docs/algorithm.md §6,
  docs/differences.md). Its only gradient path is through the flow of x̂, so it needs a differentiable flow estimator
  (:func:`build_loss_flow_estimator` with ``differentiable=True``).

Both forms share :func:`mgld.diffusion.guidance.warping_loss`: ``ℓ(M(1−O)·P, M(1−O)·x) = ℓ(M(1−O)·(P − x))``, so the
structure weight enters that loop as the per-channel "keep" factor ``M·(1−O)``. Flows follow :mod:`mgld.flow`
(``B_i`` warps frame i+1 onto frame i, ``W_i`` frame i onto i+1; occlusion 1 = occluded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mgld.diffusion.guidance import warping_loss
from mgld.flow import FlowEstimator, build_flow_estimator, occlusion_mask, resize_flow

ConsistencyVariant = Literal["fixed", "authors"]
_TORCHVISION_BACKBONES = {"vgg": "VGG16_Weights", "alex": "AlexNet_Weights"}


# ---------------------------------------------------------------------------------------------------------
# Pixel, perceptual and adversarial terms
# ---------------------------------------------------------------------------------------------------------


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over all elements."""
    return (pred - target).abs().mean()


def torchvision_backbone_url(net: Literal["vgg", "alex"]) -> str:
    """torchvision's download address of the ImageNet weights of LPIPS's backbone ``net``."""
    import torchvision.models as tvm

    return getattr(tvm, _TORCHVISION_BACKBONES[net]).IMAGENET1K_V1.url


def torchvision_backbone_file(net: Literal["vgg", "alex"]) -> Path:
    """Where torchvision keeps those weights: torch hub's checkpoint cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / torchvision_backbone_url(net).rsplit("/", 1)[-1]


class LPIPSLoss(nn.Module):
    """Frozen LPIPS (the ``lpips`` package, v0.1 linear heads) with the backbone read from a local file.

    ``backbone_weights``: torchvision's ImageNet state dict for ``net`` (default: torch hub's cache, see
    :func:`torchvision_backbone_file`); a missing file raises ``FileNotFoundError`` saying where to put it.
    Nothing is downloaded. ``random_backbone=True`` skips the file (tests of the plumbing only: the
    distance is then meaningless).
    """

    def __init__(
        self,
        net: Literal["vgg", "alex"] = "vgg",
        backbone_weights: str | Path | None = None,
        random_backbone: bool = False,
    ):
        super().__init__()
        import lpips

        from mgld.weights.checkpoints import load_state_dict_file

        if net not in _TORCHVISION_BACKBONES:
            raise ValueError(f"LPIPS net must be one of {sorted(_TORCHVISION_BACKBONES)}, got {net!r}")
        path = Path(backbone_weights) if backbone_weights is not None else torchvision_backbone_file(net)
        if not random_backbone and not path.is_file():
            raise FileNotFoundError(
                f"LPIPS needs torchvision's ImageNet {net} weights at {path} (not found). Download "
                f"{torchvision_backbone_url(net)} there, pass its path as losses.lpips_backbone, "
                "or set losses.lpips=0 to train without LPIPS."
            )
        self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if not random_backbone:
            _load_backbone(self.model.net, load_state_dict_file(path), str(path))
        self.model.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPSLoss:
        return super().train(False)  # always in eval mode (no dropout in the heads)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred, target: ``n 3 H W`` in [-1, 1] -> per-image distances ``n 1 1 1``."""
        return self.model(pred, target)


def _load_backbone(slices: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
    """Copy torchvision ``features.{i}.*`` weights into the lpips slices, whose children keep the indices."""
    loaded = 0
    for block in slices.children():
        for index, layer in block.named_children():
            params = {k.rsplit(".", 1)[-1]: v for k, v in state_dict.items() if k.startswith(f"features.{index}.")}
            if params:
                layer.load_state_dict(params, strict=True)
                loaded += 1
    if loaded == 0:
        raise ValueError(f"{source}: no torchvision 'features.*' weights found for the LPIPS backbone")


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """``0.5·(mean(ReLU(1 − D(x))) + mean(ReLU(1 + D(x̂))))``."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """``−mean(D(x̂))`` (the generator side of the hinge GAN)."""
    return -fake_logits.mean()


# ---------------------------------------------------------------------------------------------------------
# Temporal terms
# ---------------------------------------------------------------------------------------------------------


def frame_difference_loss(pred: Tensor, target: Tensor, num_frames: int) -> Tensor:
    """``mean |(x̂_i − x̂_{i+1}) − (x_i − x_{i+1})|`` over the consecutive pairs of every clip.

    Shapes: pred, target ``(b t) c H W``. Zero when the output changes from frame to frame as the GT does.
    """
    p = rearrange(pred, "(b t) c h w -> b t c h w", t=num_frames)
    g = rearrange(target, "(b t) c h w -> b t c h w", t=num_frames)
    return ((p[:, :-1] - p[:, 1:]) - (g[:, :-1] - g[:, 1:])).abs().mean()


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
_SOBEL_KERNELS = torch.stack([_SOBEL_X, _SOBEL_X.t()]).unsqueeze(1)  # 2 1 3 3 (x, y); exact in every float type


def sobel_edges(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Normalised Sobel magnitude per channel, ``√(gx² + gy² + eps)`` (kornia's ``sobel``).

    The 3x3 kernels are divided by 8 (so a unit step gives |∇| = 0.5 on both sides of the edge) and the
    input is replicate-padded. Shapes: ``n c H W`` -> ``n c H W``.
    """
    kernels = _SOBEL_KERNELS.to(x)
    n, c, h, w = x.shape
    grads = F.conv2d(F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate"), kernels)
    gx, gy = grads[:, 0], grads[:, 1]
    return torch.sqrt(gx * gx + gy * gy + eps).reshape(n, c, h, w)


def structure_weight(x: Tensor, weight: float = 3.0) -> Tensor:
    """The weight map ``M = 1 + weight·Sobel(x)``, detached. Shapes: ``n c H W`` -> ``n c H W``."""
    return (1.0 + weight * sobel_edges(x.detach())).detach()


def structure_consistency_loss(
    pred: Tensor,
    target: Tensor,
    num_frames: int,
    flow_estimator: FlowEstimator,
    sobel_weight: float = 3.0,
    variant: ConsistencyVariant = "fixed",
    occlusion_alpha: float = 0.01,
    occlusion_beta: float = 0.5,
) -> Tensor:
    """The structure-weighted consistency loss of the module docstring (a scalar).

    Shapes: pred (x̂), target (x): ``(b t) 3 H W`` in [-1, 1]. ``flow_estimator(ref, sup) -> (n, 2, H, W)``
    follows :mod:`mgld.flow`; the fixed form feeds it the GT in [0, 1] without gradient, the authors' form
    feeds it x̂ in [-1, 1] as the authors did.
    """
    if variant not in ("fixed", "authors"):
        raise ValueError(f"consistency variant must be 'fixed' or 'authors', got {variant!r}")
    if variant == "fixed":
        guide, warped = target, pred
        with torch.no_grad():
            flows_f, flows_b = _clip_flows((target + 1) / 2, num_frames, flow_estimator)
    else:
        guide, warped = pred, target
        flows_f, flows_b = _clip_flows(pred, num_frames, flow_estimator)
    weight = rearrange(structure_weight(guide, sobel_weight), "(b t) c h w -> b t c h w", t=num_frames)
    flat_f, flat_b = (rearrange(f, "b n c h w -> (b n) c h w") for f in (flows_f, flows_b))
    fwd_occ, bwd_occ = (
        rearrange(occlusion_mask(f, g, occlusion_alpha, occlusion_beta), "(b n) c h w -> b n c h w", b=weight.shape[0])
        for f, g in ((flat_b, flat_f), (flat_f, flat_b))
    )  # O^a_i = occ(B_i, W_i) on grid i, O^b_i = occ(W_i, B_i) on grid i+1
    # warping_loss multiplies each difference by (1 − mask); passing 1 − M·(1 − O) makes that factor M·(1 − O)
    masks = (1 - weight[:, :-1] * (1 - fwd_occ), 1 - weight[:, 1:] * (1 - bwd_occ))
    loop = "fixed" if variant == "fixed" else "authors"
    return warping_loss(warped, (flows_f, flows_b), masks, num_frames, loop)


def _clip_flows(frames: Tensor, num_frames: int, estimator: FlowEstimator) -> tuple[Tensor, Tensor]:
    """``(W, B)`` of every clip in one estimator call per direction: each ``b (t-1) 2 H W``."""
    clips = rearrange(frames, "(b t) c h w -> b t c h w", t=num_frames)
    b = clips.shape[0]
    earlier = rearrange(clips[:, :-1], "b n c h w -> (b n) c h w")
    later = rearrange(clips[:, 1:], "b n c h w -> (b n) c h w")
    flows_f = estimator(later, earlier)  # W_i: frame i onto frame i+1
    flows_b = estimator(earlier, later)  # B_i: frame i+1 onto frame i
    return tuple(rearrange(f, "(b n) c h w -> b n c h w", b=b) for f in (flows_f, flows_b))


class _DifferentiableSpyNet(nn.Module):
    """basicsr's SpyNet called without ``no_grad``, so gradients reach the frames through the flow.

    SpyNet's six-level pyramid needs at least 64 px; smaller frames (tiny smoke runs) are upsampled to 64 and the
    flow resized back (:func:`mgld.flow.resize_flow`). Frames of 64 px and more go through unchanged."""

    min_size = 64

    def __init__(self, spynet: nn.Module):
        super().__init__()
        self.model = spynet.eval().requires_grad_(False)

    def forward(self, ref: Tensor, sup: Tensor) -> Tensor:
        h, w = ref.shape[-2:]
        if min(h, w) >= self.min_size:
            return self.model(ref, sup)
        size = (max(h, self.min_size), max(w, self.min_size))
        up = [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in (ref, sup)]
        return resize_flow(self.model(*up), (h, w))


def build_loss_flow_estimator(
    method: Literal["spynet", "raft", "dis"], weights: str | Path | None = None, differentiable: bool = False
) -> FlowEstimator:
    """The flow network of the consistency loss, from :func:`mgld.flow.build_flow_estimator`.

    ``differentiable=True`` (needed by the authors' variant, whose gradient flows through the flow of x̂)
    is only available for SpyNet: :mod:`mgld.flow`'s estimators run under ``no_grad``, so its inner basicsr
    module is called directly. ``weights="random"`` (SpyNet only) builds a randomly initialised SpyNet, for smoke
    runs without the weight file (configs/tiny_stage2.yaml): the flow is meaningless but every code path runs.
    """
    if weights == "random":
        if method != "spynet":
            raise ValueError(f"losses.flow.weights=random is only available for SpyNet, not {method!r}")
        from mgld._compat import import_basicsr

        spynet = import_basicsr("basicsr.archs.spynet_arch").SpyNet(load_path=None)
        with torch.no_grad():  # small random flows (a few px), so that not every pixel is occluded
            for level in spynet.basic_module:
                level.basic_module[-1].weight.mul_(0.01)
                level.basic_module[-1].bias.zero_()
        return _DifferentiableSpyNet(spynet)
    estimator = build_flow_estimator(method, weights)
    if not differentiable:
        return estimator
    if method != "spynet":
        raise ValueError(f"a differentiable flow estimator is only available for SpyNet, not {method!r}")
    return _DifferentiableSpyNet(estimator.model)


__all__ = [
    "ConsistencyVariant",
    "LPIPSLoss",
    "build_loss_flow_estimator",
    "frame_difference_loss",
    "generator_adversarial_loss",
    "hinge_discriminator_loss",
    "l1_loss",
    "sobel_edges",
    "structure_consistency_loss",
    "structure_weight",
    "torchvision_backbone_file",
    "torchvision_backbone_url",
]
