"""Optical flow for motion guidance: estimators, warping, resizing and occlusion masks (docs/algorithm.md §1, §4).

Conventions, fixed once for the whole package:

* A flow field ``D`` is ``(n, 2, h, w)`` float pixel displacements; channel 0 is the x (width) component,
  channel 1 the y (height) component.
* ``flow_warp(x, D)(p) = bilinear_sample(x, p + D(p))`` with zeros padding and ``align_corners=True``.
* ``estimator(ref, sup)`` returns ``D`` on the pixel grid of ``ref`` such that ``flow_warp(sup, D) ≈ ref``.
* For frames ``f_0 .. f_{t-1}`` and pairs ``i = 0 .. t-2``:

  - ``B_i = estimator(f_i, f_{i+1})`` — on grid i, warps frame i+1 onto frame i. The authors call the stack
    ``flows_backward`` ("forward flow, for backward propagation").
  - ``W_i = estimator(f_{i+1}, f_i)`` — on grid i+1, warps frame i onto frame i+1. The authors call the stack
    ``flows_forward``; the sampler's ``flow_f``.

  :func:`compute_flows` returns ``(W, B)`` in that order, like the authors' ``compute_flow``.
* Occlusion masks are float {0, 1} with 1 = occluded. ``fwd_occ_i = occlusion_mask(B_i, W_i)`` lives on
  grid i, ``bwd_occ_i = occlusion_mask(W_i, B_i)`` on grid i+1 (docs/algorithm.md §4).

Estimators: RAFT (torchvision ``raft_large``, the authors' choice with ``raft-things`` weights), SpyNet
(basicsr) and OpenCV DIS (weight-free, for machines without RAFT weights). Weights are read from local files
only. RAFT weights may be a torchvision ``raft_large`` state dict, the original ``raft-things.pth``, an official
stage-1 ``.ckpt`` (its ``flownet_model.*`` tensors, the RAFT the authors' inference runs) or a converted mgld
folder (its ``flow.safetensors``); SpyNet weights basicsr's release or the official video-VAE ``.ckpt`` (its
``loss.flownet.*`` tensors). A file that does not fit raises a one-line error naming it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mgld._compat import import_basicsr
from mgld.weights.hub import STAGE1_RAFT_PREFIX  # RAFT inside the official stage-1 checkpoint

log = logging.getLogger(__name__)

RAFT_THINGS_SOURCE = (
    "raft-things.pth from princeton-vl/RAFT (download_models.sh: "
    "https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip)"
)
SPYNET_FILE = "spynet_sintel_final-3d2a1287.pth"
SPYNET_URL = f"https://github.com/JingyunLiang/VRT/releases/download/v0.0/{SPYNET_FILE}"


class FlowEstimator(Protocol):
    """``estimator(ref, sup) -> flow``: ref, sup ``(n, 3, h, w)`` RGB in [0, 1]; flow ``(n, 2, h, w)``."""

    def __call__(self, ref: Tensor, sup: Tensor) -> Tensor: ...


# ---------------------------------------------------------------------------------------------------------
# Warping, resizing, occlusion
# ---------------------------------------------------------------------------------------------------------


def flow_warp(x: Tensor, flow: Tensor, interp: str = "bilinear", padding_mode: str = "zeros") -> Tensor:
    """Sample ``x`` at ``p + flow(p)`` (basicsr ``flow_warp`` maths, channel-first flow).

    Shapes:
        x: ``(n, c, h, w)``; flow: ``(n, 2, h, w)`` pixel displacements (dx, dy). Returns ``(n, c, h, w)``.

    Written here rather than calling basicsr's: that one takes channel-last flow and builds its grid in
    float32 whatever the input dtype; this one keeps the dtype and device of ``x``.
    """
    if x.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(
            f"flow_warp expects x (n, c, h, w) and flow (n, 2, h, w), got {tuple(x.shape)}, {tuple(flow.shape)}"
        )
    if x.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"flow_warp: x grid {tuple(x.shape[-2:])} != flow grid {tuple(flow.shape[-2:])}")
    h, w = x.shape[-2:]
    dtype = torch.promote_types(flow.dtype, torch.float32)  # pixel positions need more than fp16's 11 bits
    grid_y, grid_x = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=dtype), torch.arange(w, device=x.device, dtype=dtype), indexing="ij"
    )
    pos_x = grid_x + flow[:, 0]  # n h w
    pos_y = grid_y + flow[:, 1]
    grid = torch.stack((2.0 * pos_x / max(w - 1, 1) - 1.0, 2.0 * pos_y / max(h - 1, 1) - 1.0), dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode=interp, padding_mode=padding_mode, align_corners=True)


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a flow field to ``size = (h_out, w_out)`` and rescale its vectors (basicsr ``resize_flow``).

    Shapes:
        flow: ``(n, 2, h, w)`` → ``(n, 2, h_out, w_out)``. The x component is multiplied by ``w_out / w``, the
        y component by ``h_out / h``, then the field is resized bilinearly with ``align_corners=False``.
    """
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"resize_flow expects (n, 2, h, w), got {tuple(flow.shape)}")
    h_out, w_out = size
    h, w = flow.shape[-2:]
    scale = flow.new_tensor([w_out / w, h_out / h]).view(1, 2, 1, 1)
    return F.interpolate(flow * scale, size=(h_out, w_out), mode="bilinear", align_corners=False)


def occlusion_mask(fwd: Tensor, bwd: Tensor, alpha: float = 0.01, beta: float = 0.5) -> Tensor:
    """Forward-backward consistency check: 1 where ``fwd`` and ``bwd`` disagree (occluded), else 0.

    ``|fwd + warp(bwd, fwd)|₂ > alpha·(|fwd|₂ + |bwd|₂) + beta`` per pixel (docs/algorithm.md §4), where ``fwd`` lives
    on the grid of its reference frame and ``bwd`` on the grid of the other frame.

    Shapes:
        fwd, bwd: ``(n, 2, h, w)``. Returns ``(n, 1, h, w)`` float in {0, 1}.
    """
    if fwd.shape != bwd.shape:
        raise ValueError(f"occlusion_mask: fwd {tuple(fwd.shape)} and bwd {tuple(bwd.shape)} differ")
    magnitude = torch.norm(fwd, dim=1, keepdim=True) + torch.norm(bwd, dim=1, keepdim=True)
    residual = torch.norm(fwd + flow_warp(bwd, fwd), dim=1, keepdim=True)
    return (residual > alpha * magnitude + beta).to(fwd.dtype)


# ---------------------------------------------------------------------------------------------------------
# Flows of a clip
# ---------------------------------------------------------------------------------------------------------


def compute_flows(frames: Tensor, estimator: FlowEstimator) -> tuple[Tensor, Tensor]:
    """Flows between consecutive frames, one estimator call per direction.

    Shapes:
        frames: ``t 3 h w`` RGB in [0, 1]. Returns ``(W, B)``, each ``(t-1) 2 h w``:
        ``W[i] = estimator(f_{i+1}, f_i)`` (``flows_forward``), ``B[i] = estimator(f_i, f_{i+1})``
        (``flows_backward``).
    """
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise ValueError(f"compute_flows expects t 3 h w with t >= 2, got {tuple(frames.shape)}")
    flows_forward = estimator(frames[1:], frames[:-1])
    flows_backward = estimator(frames[:-1], frames[1:])
    return flows_forward, flows_backward


def flows_and_masks(
    frames: Tensor,
    estimator: FlowEstimator,
    latent_size: tuple[int, int],
    alpha: float = 0.01,
    beta: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Flows and occlusion masks on the latent grid, as the sampler's guidance consumes them (docs/algorithm.md §4).

    Estimates ``(W, B)`` on ``frames``, resizes both to ``latent_size`` with :func:`resize_flow`, then
    ``fwd_occ_i = occlusion_mask(B_i, W_i)`` (grid i) and ``bwd_occ_i = occlusion_mask(W_i, B_i)`` (grid i+1).

    Shapes:
        frames: ``t 3 H W`` in [0, 1] (the authors pass the LR frames). Returns ``(flow_f, flow_b, fwd_occ,
        bwd_occ)``: flows ``1 (t-1) 2 h w`` (``flow_f`` = W, ``flow_b`` = B) and masks ``1 (t-1) 1 h w``,
        with ``(h, w) = latent_size``.
    """
    with torch.no_grad():
        flows_forward, flows_backward = compute_flows(frames, estimator)
    return latent_flows_and_masks(flows_forward, flows_backward, latent_size, alpha, beta)


def latent_flows_and_masks(
    flows_forward: Tensor,
    flows_backward: Tensor,
    latent_size: tuple[int, int],
    alpha: float = 0.01,
    beta: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The resize-and-mask half of :func:`flows_and_masks`, for flows already estimated.

    Shapes:
        flows_forward (W), flows_backward (B): ``(t-1) 2 H W``. Returns ``flow_f, flow_b: 1 (t-1) 2 h w`` and
        ``fwd_occ, bwd_occ: 1 (t-1) 1 h w``.
    """
    flow_f = resize_flow(flows_forward, latent_size)
    flow_b = resize_flow(flows_backward, latent_size)
    fwd_occ = occlusion_mask(flow_b, flow_f, alpha, beta)
    bwd_occ = occlusion_mask(flow_f, flow_b, alpha, beta)
    return tuple(rearrange(x, "n c h w -> 1 n c h w") for x in (flow_f, flow_b, fwd_occ, bwd_occ))


# ---------------------------------------------------------------------------------------------------------
# RAFT (torchvision) and the original raft-things key layout
# ---------------------------------------------------------------------------------------------------------

# Original RAFT (princeton-vl/RAFT core/{extractor,update}.py) name -> torchvision raft_large name: regex
# substitutions applied in order, each to the result of the previous, on keys without their "module." prefix.
RAFT_ORIGINAL_TO_TORCHVISION: tuple[tuple[str, str], ...] = (
    (r"^fnet\.", "feature_encoder."),
    (r"^cnet\.", "context_encoder."),
    (r"^(feature|context)_encoder\.conv1\.", r"\1_encoder.convnormrelu.0."),
    (r"^(feature|context)_encoder\.norm1\.", r"\1_encoder.convnormrelu.1."),
    (r"^(feature|context)_encoder\.conv2\.", r"\1_encoder.conv."),
    (r"^(.*\.layer\d\.\d)\.conv([12])\.", r"\1.convnormrelu\2.0."),
    (r"^(.*\.layer\d\.\d)\.norm([12])\.", r"\1.convnormrelu\2.1."),
    (r"^update_block\.encoder\.convc([12])\.", r"update_block.motion_encoder.convcorr\1.0."),
    (r"^update_block\.encoder\.convf([12])\.", r"update_block.motion_encoder.convflow\1.0."),
    (r"^update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
    (r"^update_block\.gru\.conv([zrq])([12])\.", r"update_block.recurrent_block.convgru\2.conv\1."),
    (r"^update_block\.mask\.0\.", "mask_predictor.convrelu.0."),
    (r"^update_block\.mask\.2\.", "mask_predictor.conv."),
)
# Prefixes a raft-things state dict may carry: DataParallel's, or that of the RAFT_SR keys (same layout)
# taken out of the authors' stage-1 checkpoint.
_RAFT_PREFIXES = (STAGE1_RAFT_PREFIX, "module.")
VAE_SPYNET_PREFIX = "loss.flownet."  # SpyNet inside the official video-VAE checkpoint (stage-2 loss)


def convert_raft_things_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Re-key an original RAFT (``raft-things.pth``) state dict to torchvision's ``raft_large`` names.

    ``layerN.0.norm3`` (the shortcut norm, registered twice upstream: as ``norm3`` and as ``downsample.1``) is
    dropped in favour of ``downsample.1``; everything else is renamed one to one.
    """
    converted: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        for prefix in _RAFT_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if re.search(r"\.layer\d\.\d\.norm3\.", key):
            continue
        for pattern, replacement in RAFT_ORIGINAL_TO_TORCHVISION:
            key = re.sub(pattern, replacement, key)
        if key in converted:
            raise ValueError(f"convert_raft_things_state_dict: two original keys map to {key!r}")
        converted[key] = value
    return converted


def _load_state_dict(path: Path, prefix: str | None = None) -> dict[str, Tensor]:
    """Tensors of a weights file, read safely by :mod:`mgld.weights.checkpoints` (basicsr's ``params`` and
    Lightning's ``state_dict`` unwrapped). When some keys start with ``prefix`` (a network stored inside a
    bigger checkpoint), only those are kept, without the prefix."""
    from mgld.weights.checkpoints import load_state_dict_file
    from mgld.weights.convert import strip_prefix

    state_dict = load_state_dict_file(path, nested_keys=("params", "state_dict"))
    if prefix and any(key.startswith(prefix) for key in state_dict):
        state_dict = strip_prefix(state_dict, prefix)
    return state_dict


def _find_weights(weights: str | Path | None, default_name: str, where: str, folder_file: str | None = None) -> Path:
    """``weights`` if given (a converted folder means its ``folder_file``), else ``default_name`` in torch hub's
    checkpoint cache; must exist."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / default_name
    path = Path(weights).expanduser() if weights is not None else cached
    if folder_file is not None and path.is_dir():
        if not (path / folder_file).is_file():
            raise FileNotFoundError(
                f"flow weights not found: {path} is a folder without {folder_file} (converted before mgld kept the "
                f"stage-1 checkpoint's RAFT?). Re-run `mgld convert --stage1 <mgldvsr_unet.ckpt> --out {path}`, or "
                "pass a RAFT file as the flow weights"
            )
        return path / folder_file
    if not path.is_file():
        raise FileNotFoundError(
            f"flow weights not found: {path}. Get {where} and pass its path as `weights`"
            + ("" if weights is not None else f" or place it at {path}")
        )
    return path


def _check_and_load(model: nn.Module, state_dict: Mapping[str, Tensor], path: Path, ignore_missing=()) -> None:
    """Strict load that names ``path`` on any missing / unexpected key or shape mismatch (CheckpointError)."""
    from mgld.weights.checkpoints import check_state_dict

    expected = model.state_dict()
    completed = dict(state_dict) | {k: expected[k] for k in ignore_missing if k not in state_dict}
    check_state_dict(model, completed, f"flow weights {path}")
    model.load_state_dict(completed, strict=True)


class RaftEstimator(nn.Module):
    """torchvision ``raft_large`` behind the package's flow convention.

    ``input_range="unit"`` feeds images in [0, 1], as the authors' RAFT_SR did (its ``2·x − 1`` line is
    commented out, docs/algorithm.md §4, docs/differences.md) and so what the released MGLD model was run with;
    ``"symmetric"`` feeds
    ``2·x − 1`` as RAFT was trained. Inputs are replicate-padded (centred, like RAFT's ``InputPadder``) to a
    multiple of 8, and to at least 128 px per side (torchvision's minimum), and the flow is cropped back;
    ``num_iters`` refinement steps (10 upstream).
    """

    def __init__(self, model: nn.Module, input_range: Literal["unit", "symmetric"] = "unit", num_iters: int = 10):
        super().__init__()
        if input_range not in ("unit", "symmetric"):
            raise ValueError(f"input_range must be 'unit' or 'symmetric', got {input_range!r}")
        self.model = model.eval()
        self.input_range = input_range
        self.num_iters = num_iters

    @torch.no_grad()
    def forward(self, ref: Tensor, sup: Tensor) -> Tensor:
        """ref, sup: ``(n, 3, h, w)`` in [0, 1] → flow ``(n, 2, h, w)`` on the grid of ``ref``."""
        _check_pair(ref, sup)
        h, w = ref.shape[-2:]
        # torchvision's RAFT needs sides that are multiples of 8 and at least 128 (its 4-level pyramid)
        pad_h, pad_w = max(128 - h, (-h) % 8), max(128 - w, (-w) % 8)
        pad = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        images = torch.cat([ref, sup]).float()
        if self.input_range == "symmetric":
            images = 2.0 * images - 1.0
        images = F.pad(images, pad, mode="replicate")
        image1, image2 = images.chunk(2)
        flow = self.model(image1, image2, num_flow_updates=self.num_iters)[-1]
        return flow[..., pad[2] : pad[2] + h, pad[0] : pad[0] + w].to(ref.dtype)


def _raft_file(weights: str | Path | None) -> Path:
    """The RAFT weight file ``weights`` names (a converted folder: its ``flow.safetensors``), or torchvision's
    C_T_V1 file in torch hub's cache when ``weights`` is None."""
    from torchvision.models.optical_flow import Raft_Large_Weights

    from mgld.weights.hub import FLOW_FILE

    url = Raft_Large_Weights.C_T_V1.url
    return _find_weights(weights, url.rsplit("/", 1)[-1], f"{RAFT_THINGS_SOURCE}, or torchvision's {url}", FLOW_FILE)


def raft_state_dict(weights: str | Path | None) -> dict[str, Tensor]:
    """torchvision ``raft_large`` state dict from ``weights`` (any layout of the module docstring), not checked."""
    from mgld.weights.checkpoints import CheckpointError

    path = _raft_file(weights)
    state_dict = _load_state_dict(path, prefix=STAGE1_RAFT_PREFIX)
    if not any(key.startswith("feature_encoder.") for key in state_dict):
        try:
            state_dict = convert_raft_things_state_dict(state_dict)
        except ValueError as err:
            raise CheckpointError(f"flow weights {path}: {err}") from None
    return state_dict


def build_raft(weights: str | Path | None = None) -> nn.Module:
    """torchvision ``raft_large`` with weights from a local file or converted folder (module docstring).

    ``weights=None`` looks for torchvision's ``Raft_Large_Weights.C_T_V1`` file (the port of raft-things) in
    torch hub's local cache; nothing is downloaded. Keys and shapes are checked strictly.
    """
    from torchvision.models.optical_flow import raft_large

    path = _raft_file(weights)
    model = raft_large(weights=None, progress=False)
    _check_and_load(model, raft_state_dict(path), path)
    log.info("RAFT weights: %s", path)
    return model


# ---------------------------------------------------------------------------------------------------------
# SpyNet (basicsr) and DIS (OpenCV)
# ---------------------------------------------------------------------------------------------------------


class SpyNetEstimator(nn.Module):
    """basicsr's ``SpyNet`` (ImageNet-normalises [0, 1] RGB itself; any size, resized internally to ×32)."""

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        spynet_arch = import_basicsr("basicsr.archs.spynet_arch")
        self.model = spynet_arch.SpyNet(load_path=None).eval()
        path = _find_weights(weights, SPYNET_FILE, f"{SPYNET_FILE} ({SPYNET_URL})")
        # the released file predates SpyNet's mean/std buffers, which the constructor fills in
        _check_and_load(self.model, _load_state_dict(path, prefix=VAE_SPYNET_PREFIX), path,
                        ignore_missing=("mean", "std"))

    @torch.no_grad()
    def forward(self, ref: Tensor, sup: Tensor) -> Tensor:
        """ref, sup: ``(n, 3, h, w)`` in [0, 1] → flow ``(n, 2, h, w)`` on the grid of ``ref``."""
        _check_pair(ref, sup)
        return self.model(ref.float(), sup.float()).to(ref.dtype)


class DisEstimator:
    """OpenCV's DIS optical flow on grey-level images (CPU, no weights; one pair at a time).

    OpenCV's DIS rejects images under 12 px a side and fails (or crashes) on some thin ones (8x128, 12x504), so
    both images are edge-padded at the bottom/right to at least ``MIN_SIZE`` px a side and the flow is cropped
    back: any frame size works, down to 1x1.
    """

    MIN_SIZE = 32

    def __init__(self, preset: int | None = None):
        import cv2

        self.preset = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM if preset is None else preset

    def __call__(self, ref: Tensor, sup: Tensor) -> Tensor:
        """ref, sup: ``(n, 3, h, w)`` in [0, 1] → flow ``(n, 2, h, w)`` on the grid of ``ref``."""
        import cv2

        _check_pair(ref, sup)
        dis = cv2.DISOpticalFlow_create(self.preset)
        # cv2 calc(prev, next) gives prev(p) ≈ next(p + flow(p)): prev = ref, next = sup is our convention
        h, w = ref.shape[-2:]
        pad = dict(top=0, left=0, bottom=max(0, self.MIN_SIZE - h), right=max(0, self.MIN_SIZE - w),
                   borderType=cv2.BORDER_REPLICATE)
        flows = [dis.calc(cv2.copyMakeBorder(_to_grey_uint8(r), **pad), cv2.copyMakeBorder(_to_grey_uint8(s), **pad),
                          None)[:h, :w] for r, s in zip(ref, sup)]
        flow = torch.from_numpy(np.ascontiguousarray(np.stack(flows)))  # n h w 2
        return rearrange(flow, "n h w c -> n c h w").to(device=ref.device, dtype=ref.dtype)


def _to_grey_uint8(image: Tensor) -> np.ndarray:
    """``(3, h, w)`` RGB in [0, 1] → ``(h, w)`` uint8 luma (ITU-R 601 weights, as cv2.cvtColor)."""
    weights = image.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    grey = (image.float().clamp(0, 1) * weights).sum(0) * 255.0
    return grey.round().to(torch.uint8).cpu().numpy()


def _check_pair(ref: Tensor, sup: Tensor) -> None:
    if ref.ndim != 4 or ref.shape[1] != 3 or ref.shape != sup.shape:
        raise ValueError(
            f"flow estimators expect ref, sup of equal shape (n, 3, h, w), got {tuple(ref.shape)} "
            f"and {tuple(sup.shape)}"
        )


def build_flow_estimator(
    method: Literal["raft", "spynet", "dis"],
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    raft_input_range: Literal["unit", "symmetric"] = "unit",
    raft_iters: int = 10,
) -> FlowEstimator:
    """An ``estimator(ref, sup) -> (n, 2, h, w)`` for images ``(n, 3, h, w)`` in [0, 1] (module docstring).

    ``raft``: torchvision ``raft_large``; ``weights`` is torchvision's state dict, the original
    ``raft-things.pth``, an official stage-1 ``.ckpt`` or a converted folder (module docstring); ``None`` →
    torchvision's C_T_V1 file in torch hub's cache (:func:`mgld.weights.hub.default_flow_weights` picks what
    inference passes). ``raft_input_range``
    defaults to ``"unit"`` ([0, 1]), what the released model saw (docs/algorithm.md §4). ``spynet``: basicsr
    ``SpyNet`` with
    ``spynet_sintel_final-3d2a1287.pth``. ``dis``: OpenCV DIS, weight-free (``weights`` must be None).
    Missing weight files raise ``FileNotFoundError``, files that do not fit ``CheckpointError`` naming the
    file; nothing is downloaded.
    """
    if method == "raft":
        return RaftEstimator(build_raft(weights), raft_input_range, raft_iters).to(device)
    if method == "spynet":
        return SpyNetEstimator(weights).to(device)
    if method == "dis":
        if weights is not None:
            raise ValueError("the DIS flow estimator takes no weights")
        return DisEstimator()
    raise ValueError(f"unknown flow method {method!r}; expected 'raft', 'spynet' or 'dis'")


__all__ = [
    "FlowEstimator",
    "RaftEstimator",
    "SpyNetEstimator",
    "DisEstimator",
    "build_flow_estimator",
    "build_raft",
    "compute_flows",
    "convert_raft_things_state_dict",
    "raft_state_dict",
    "flow_warp",
    "flows_and_masks",
    "latent_flows_and_masks",
    "occlusion_mask",
    "resize_flow",
]
