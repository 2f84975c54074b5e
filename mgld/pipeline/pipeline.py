"""``MGLDPipeline``: low-resolution frames in, 4x temporally consistent frames out (docs/algorithm.md §5-7).

Per clip (a chunk of T frames, ``t 3 h w`` in [0, 1]):

1. short sequences (``t < chunk.frames``) get their last frame repeated up to ``chunk.frames``
   (``chunk.short_sequences=repeat``, as the authors; ``short`` runs the short clip);
2. pre-process: [-1, 1], resize x s with ``s = max(scale, min_short_side / min(h, w))`` to ``(int(h·s), int(w·s))``
   (``infer.upsample_mode``: bicubic as the tile script, or torchvision-style bilinear as the authors' latent
   script), reflect-pad bottom/right (``infer.padding=authors``: when either side is not a multiple of 32, *both*
   sides gain ``(x // 32 + 1)·32 − x``, so an aligned side gains 32; ``fixed``: each side to the next multiple);
3. optical flow on the whole padded frame, once per clip (docs/algorithm.md §4): on the frames brought back to LR
   size (``flow.resolution=lr``) or on the upsampled frames (``upsampled``), resized to the latent grid, plus the
   forward-backward occlusion masks; inside the autocast of ``infer.precision`` (``flow.precision=autocast``) or
   in fp32;
4. ``sampling.pixel_tiling=authors`` (default): the padded frame is cut into the authors' pixel tiles
   (``decode.tile_size``/``decode.tile_stride``, 960/750, :func:`mgld.diffusion.tiling.pixel_tile_boxes`) and each
   tile runs the whole chain alone — VAE encode of the tile, ``x_T``, every DDPM step with the 64/32 latent tiles
   and the Gaussian window inside the tile, the motion-guided update on the tile's latent with the flows and masks
   cut for it, decode with the tile's CFW features, colour fix against the tile's LR — and the tiles are averaged
   uniformly. A frame that fits one tile takes one pass.
   ``frame``: one pass over the whole-frame latent (VAE encode/decode in feathered pixel tiles, colour fix over
   the frame), with the guidance step scaled so that its size per latent element is the authors' for this frame
   size (:meth:`TilePlan.guidance_factor`);
5. clamp to [0, 1], crop the padding (``[:int(h·s), :int(w·s)]``, the same sizes as the resize), and resize to
   exactly ``scale`` x the input when ``s != scale``.

Noise: every random draw is asked of a noise source by ``(kind, step, latent box)``
(:mod:`mgld.diffusion.noise`): per pass, the VAE posterior, ``x_T``, then ξ for k = N−1 … 1. The default,
:class:`~mgld.diffusion.noise.FrameNoise`, crops per-frame streams at the tile's latent position, so the output
is a pure function of ``(seed, frame index)``. Long videos are handled by :mod:`mgld.pipeline.runner`, which
feeds clips to :meth:`MGLDPipeline.upscale_clip`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor

from mgld.config import INFERENCE_SECTIONS, Config, load_config
from mgld.diffusion.noise import FrameNoise, NoiseSource
from mgld.diffusion.sampling import Anchor, MotionGuidance, sample
from mgld.diffusion.schedule import respaced_schedule
from mgld.diffusion.tiling import TileBox, blend_tiles, feather_weights, pixel_tile_boxes
from mgld.flow import build_flow_estimator, flows_and_masks
from mgld.models import MGLDDenoiser, TemporalVAE, build_denoiser, build_vae
from mgld.perf.profiler import StageProfiler, stage
from mgld.pipeline.chunks import plan_chunks
from mgld.pipeline.colorfix import color_fix
from mgld.weights.hub import default_flow_weights

log = logging.getLogger(__name__)
PAD_MULTIPLE = 32
LATENT_FACTOR = 8
INFERENCE_FILE = "inference.yaml"  # the inference sections next to a saved folder's config.yaml
# infer keys that describe a machine or a run, not the model: save_pretrained leaves them out
_UNSAVED_INFER_KEYS = ("weights", "unet", "vae", "random_weights", "device", "devices", "precision", "overwrite")


@dataclass
class ClipResult:
    """Output of one clip: ``frames`` ``t 3 H W`` in [0, 1]; ``latents`` ``t 4 H'/8 W'/8``, the final latents
    over the padded upsampled frames (what stage-2 training decodes; with several pixel tiles, the uniform average
    of the tiles' latents placed at their latent boxes); the anchor trajectory for the next clip (keys ``k``, or
    ``(tile, k)`` with several pixel tiles)."""

    frames: Tensor
    latents: Tensor
    trajectory: dict


@dataclass(frozen=True)
class PixelTile:
    """One pass of the per-pixel-tile chain.

    ``box``: pixels of the padded upsampled frame; ``latent_box``: ``box`` on the latent grid (starts floored,
    ``box // 8``), where the tile's noise is cropped from the frame's noise streams and where its latents are
    placed; ``flow_box``: the latent crop of the whole-frame flows and masks the tile's guidance uses
    (``sampling.flow_tile_crop=authors``: the authors' own cut with size ``tile_size // 8`` and stride
    ``tile_stride // 8``, up to ~1.5 latent px off ``box`` from the third tile of a side on; ``fixed``:
    ``latent_box``).
    """

    index: int
    box: TileBox
    latent_box: TileBox
    flow_box: TileBox


@dataclass(frozen=True)
class TilePlan:
    """Geometry of a clip of ``lr_size`` frames: the resize factor, sizes, and the passes (:class:`PixelTile`)."""

    lr_size: tuple[int, int]
    scale: float
    upsampled_size: tuple[int, int]
    padded_size: tuple[int, int]
    tiles: tuple[PixelTile, ...]
    tile_size: int

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.padded_size[0] // LATENT_FACTOR, self.padded_size[1] // LATENT_FACTOR

    @property
    def guidance_factor(self) -> float:
        """Scale of the guidance step in one pass over the whole frame (``sampling.pixel_tiling=frame``).

        The loss is a mean over the latent it is computed on, so its gradient per element is proportional to
        1 / (latent area). The authors compute it per pixel tile, whose latent is
        ``min(h, tile_size/8) × min(w, tile_size/8)``; over the whole ``h × w`` frame latent the gradient is
        smaller by that ratio, so the step is multiplied by

            factor = (h · w) / (min(h, tile_size/8) · min(w, tile_size/8))

        which makes the step per element the authors' (1 exactly for a frame that is one tile; 164/120 at
        1280×720 output, whose padded latent is 92×164).
        """
        h, w = self.latent_size
        tile = self.tile_size // LATENT_FACTOR
        return (h * w) / (min(h, tile) * min(w, tile))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = plain fp32). fp16/bf16 need CUDA."""
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return None
    if device.type != "cuda":
        raise ValueError(f"infer.precision={precision} needs a CUDA device; use fp32 on {device.type}")
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def padding(height: int, width: int, rule: str = "authors") -> tuple[int, int]:
    """``(pad_h, pad_w)`` added at the bottom/right of an upsampled ``height × width`` frame.

    ``authors``: when either side is not a multiple of 32, both sides are padded by ``(x // 32 + 1)·32 − x`` (an
    aligned side gains 32: 720×1280 -> 736×1312); else none. ``fixed``: each side to the next multiple of 32.
    """
    if rule == "fixed":
        return -height % PAD_MULTIPLE, -width % PAD_MULTIPLE
    if rule != "authors":
        raise ValueError(f"infer.padding must be 'authors' or 'fixed', got {rule!r}")
    if height % PAD_MULTIPLE == 0 and width % PAD_MULTIPLE == 0:
        return 0, 0
    return (height // PAD_MULTIPLE + 1) * PAD_MULTIPLE - height, (width // PAD_MULTIPLE + 1) * PAD_MULTIPLE - width


# ---------------------------------------------------------------------------------------------------------
# Input frames
# ---------------------------------------------------------------------------------------------------------

FRAMES_HELP = ("frames: a t 3 h w or t h w 3 tensor/array (uint8, uint16, or float in [0, 1]), or a list of PIL "
               "images, h w 3 arrays or 3 h w tensors")


def to_frames_tensor(frames) -> Tensor:
    """A ``t 3 h w`` float32 tensor in [0, 1] from the layouts the Python API accepts.

    * a tensor or array ``t 3 h w`` or ``t h w 3`` (what ``torchvision.io.read_video`` and stacked PyAV
      ``to_ndarray(format="rgb24")`` frames give); a second axis of size 3 is read as channels;
    * a list of PIL images (any mode; 16-bit grey stays 16-bit), of ``h w 3`` / ``h w 4`` / ``h w`` arrays, or of
      ``3 h w`` tensors.

    Values: uint8 is divided by 255, uint16 by 65535, floats must already lie in [0, 1]; other integer types,
    floats outside [0, 1] and NaN are refused with a message. Grey is repeated to RGB, alpha dropped.
    """
    if isinstance(frames, np.ndarray | Tensor):
        return _channels_first(_unit_range(frames, "frames"), "frames")
    if isinstance(frames, str | bytes | Path) or not isinstance(frames, Sequence) or not len(frames):
        raise ValueError(f"no frames given ({type(frames).__name__}); expected {FRAMES_HELP}")
    out = []
    for i, frame in enumerate(frames):
        name = f"frames[{i}]"
        if hasattr(frame, "mode") and hasattr(frame, "convert"):  # PIL image
            frame = np.asarray(frame if frame.mode in ("RGB", "RGBA", "L", "I;16") else frame.convert("RGB"))
        if not isinstance(frame, np.ndarray | Tensor) or frame.ndim not in (2, 3):
            raise ValueError(f"{name}: expected an h w 3 array, a 3 h w tensor or a PIL image; got "
                             f"{type(frame).__name__} of shape {tuple(getattr(frame, 'shape', ()))}")
        frame = frame[None, ..., None] if frame.ndim == 2 else frame[None]
        out.append(_channels_first(_unit_range(frame, name), name)[0])
    if len({tuple(f.shape) for f in out}) > 1:
        raise ValueError(f"all frames must have the same size, got {sorted({tuple(f.shape[1:]) for f in out})}")
    return torch.stack(out)


def _unit_range(x: np.ndarray | Tensor, name: str) -> Tensor:
    """Float32 in [0, 1]: uint8 / 255, uint16 / 65535, floats checked; other dtypes refused."""
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint16:
            return torch.from_numpy(x.astype(np.float32) / 65535.0)
        if x.dtype.kind not in "uif":
            raise ValueError(f"{name}: frames of dtype {x.dtype} are not images; expected uint8, uint16 or float")
        x = torch.from_numpy(np.array(x, dtype=np.int64 if x.dtype.kind in "iu" and x.dtype != np.uint8 else None))
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if x.dtype == torch.uint16:
        return x.to(torch.int32).float() / 65535.0
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name}: integer frames must be uint8 (0-255) or uint16 (0-65535), got {x.dtype}; "
                         "convert them (e.g. frames.to(torch.uint8)) or pass floats in [0, 1]")
    x = x.float()
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name}: float frames must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; divide "
                         "8-bit values by 255 (or pass uint8), or clamp(0, 1)")
    return x


def _channels_first(x: Tensor, name: str) -> Tensor:
    """``t 3 h w``, ``t 1 h w`` or ``t h w c`` (c in 1, 3, 4) -> ``t 3 h w`` (grey repeated, alpha dropped)."""
    if x.ndim != 4:
        raise ValueError(f"{name}: expected 4 dimensions (t 3 h w or t h w 3), got shape {tuple(x.shape)}")
    if x.shape[1] != 3 and x.shape[-1] in (1, 3, 4):  # t h w c (a second axis of 3 means t 3 h w)
        x = x.permute(0, 3, 1, 2)
    elif x.shape[1] not in (1, 3):
        raise ValueError(f"{name}: no channel axis of size 3 in shape {tuple(x.shape)}; expected t 3 h w or t h w 3")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x[:, :3].contiguous()


# ---------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------


class MGLDPipeline:
    """The MGLD-VSR inference pipeline (module docstring); build it with :meth:`from_pretrained` or
    :meth:`from_config`, move it with :meth:`to`, call it on frames. ``denoiser`` and ``vae`` are the networks;
    ``profiler`` (a :class:`~mgld.perf.profiler.StageProfiler`, set by ``mgld benchmark``) times the stages flow,
    vae_encode, encoder+unet (per network call), guidance (per step) and vae_decode."""

    def __init__(self, denoiser: MGLDDenoiser, vae: TemporalVAE, config: Config, flow_estimator=None):
        self.denoiser = denoiser.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.config = config
        self._flow_estimator = flow_estimator
        self.device = torch.device("cpu")
        self.profiler: StageProfiler | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: Config | str | Path, overrides: Sequence[str] = ()) -> MGLDPipeline:
        """Random weights (``infer.random_weights``), or the weights the config names (``infer.weights``,
        ``infer.unet``, ``infer.vae``; default: the converted official weights, see :mod:`mgld.weights.hub`).

        ``config``: a :class:`Config`, a file or a packaged config name; ``overrides`` (``key=value``) apply on
        top. The precision is checked against the device before any network is built."""
        config = _with_overrides(config, overrides)
        autocast_dtype(config.infer.precision, resolve_device(config.infer.device))  # fail before building
        infer = config.infer
        if infer.random_weights and not (infer.weights or infer.unet or infer.vae):
            log.warning("RANDOM WEIGHTS: the networks are randomly initialised (infer.random_weights=true); "
                        "outputs are meaningless, this run only exercises the pipeline")
            torch.manual_seed(config.sampling.seed)
            return cls(build_denoiser(config.model), build_vae(config.model), config)
        from mgld.weights.hub import default_weights_dir, missing_weights_message
        from mgld.weights.loading import load_denoiser, load_vae

        folder = Path(infer.weights).expanduser() if infer.weights else default_weights_dir()
        unet_path = Path(infer.unet).expanduser() if infer.unet else folder
        vae_path = Path(infer.vae).expanduser() if infer.vae else folder
        for path in {unet_path, vae_path}:
            if not path.exists():
                raise FileNotFoundError(missing_weights_message(folder) if path == folder else f"{path}: not found")
        denoiser, _ = load_denoiser(unet_path, config.model)
        vae, _ = load_vae(vae_path, config.model)
        return cls(denoiser, vae, config)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        config: Config | str | Path | None = None,
        *,
        overrides: Sequence[str] = (),
        unet: str | Path | None = None,
        vae: str | Path | None = None,
        revision: str | None = None,
    ) -> MGLDPipeline:
        """Weights from a converted or saved folder (``~`` expanded), or from a Hugging Face Hub repo id holding
        one (downloaded with ``huggingface_hub.snapshot_download``; ``revision`` picks a branch/tag/commit).

        The config is the folder's: its ``model`` section and, for a folder written by :meth:`save_pretrained`, the
        inference sections it was saved with (else the defaults); ``config`` (a :class:`Config` or file whose model
        matches the weights) replaces it. ``overrides`` (``key=value``) apply last. ``unet=``/``vae=`` may point
        elsewhere, e.g. to official ``.ckpt`` files."""
        from mgld.weights.checkpoints import read_model_config

        folder = weights_folder(folder, revision)
        if config is None:
            saved = folder / INFERENCE_FILE
            config = replace(load_config(saved if saved.is_file() else None), model=read_model_config(folder))
        config = _with_overrides(config, overrides)
        infer = replace(config.infer, weights=str(folder), random_weights=False,
                        unet=str(unet) if unet else config.infer.unet, vae=str(vae) if vae else config.infer.vae)
        return cls.from_config(replace(config, infer=infer))

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the networks and the config into ``folder`` (created; files written atomically):
        ``config.yaml`` (model section), ``denoiser.safetensors``, ``vae.safetensors`` and ``inference.yaml``
        (sampling, flow, decode, chunk and infer without the weight paths and the machine settings device,
        devices, precision, overwrite), so that :meth:`from_pretrained` restores the same pipeline."""
        from mgld.io.atomic import atomic_write
        from mgld.weights.checkpoints import save_model_folder

        folder = Path(folder).expanduser()
        save_model_folder(folder, self.config.model, denoiser=self.denoiser, vae=self.vae,
                          provenance={"saved_by": "MGLDPipeline.save_pretrained"})
        sections = {name: OmegaConf.to_container(OmegaConf.structured(getattr(self.config, name)))
                    for name in INFERENCE_SECTIONS}
        for key in _UNSAVED_INFER_KEYS:
            sections["infer"].pop(key)
        atomic_write(folder / INFERENCE_FILE, OmegaConf.to_yaml(sections))
        return folder

    def to(self, device: str | torch.device) -> MGLDPipeline:
        self.device = resolve_device(str(device)) if str(device) == "auto" else torch.device(device)
        self.denoiser.to(self.device)
        self.vae.to(self.device)
        if isinstance(self._flow_estimator, torch.nn.Module):
            self._flow_estimator.to(self.device)
        return self

    @property
    def flow_estimator(self):
        """Built on first use (RAFT weights are only needed when guidance is on)."""
        if self._flow_estimator is None:
            flow = self.config.flow
            self._flow_estimator = build_flow_estimator(
                flow.method,
                default_flow_weights(flow.method, flow.weights, self.config.infer.unet or self.config.infer.weights),
                self.device,
                raft_input_range=flow.raft_input_range, raft_iters=flow.raft_iters,
            )
        return self._flow_estimator

    # ------------------------------------------------------------------ geometry
    def tile_plan(self, height: int, width: int) -> TilePlan:
        """Sizes and passes for LR frames of ``height × width`` with this config (module docstring, steps 2, 4)."""
        infer, dec = self.config.infer, self.config.decode
        s = max(float(infer.scale), infer.min_short_side / min(height, width))
        size = (int(height * s), int(width * s))
        pad_h, pad_w = padding(*size, infer.padding)
        H, W = size[0] + pad_h, size[1] + pad_w
        boxes = pixel_tile_boxes(H, W, dec.tile_size, dec.tile_stride)
        whole = TileBox(0, 0, H, W)
        if self.config.sampling.pixel_tiling == "frame" or len(boxes) == 1:
            tiles = [PixelTile(0, whole, whole.downscaled(LATENT_FACTOR), whole.downscaled(LATENT_FACTOR))]
        else:
            latent_boxes = [box.downscaled(LATENT_FACTOR) for box in boxes]
            if self.config.sampling.flow_tile_crop == "authors":  # their separate cut of the latent-size flows
                flow_boxes = pixel_tile_boxes(H // LATENT_FACTOR, W // LATENT_FACTOR, dec.tile_size // LATENT_FACTOR,
                                              dec.tile_stride // LATENT_FACTOR)
                if len(flow_boxes) != len(boxes):
                    log.warning("at %dx%d the authors' flow tiles (%d) do not pair one to one with the pixel "
                                "tiles (%d); paired in order as they do. sampling.flow_tile_crop=fixed avoids it",
                                W, H, len(flow_boxes), len(boxes))
            else:
                flow_boxes = latent_boxes
            tiles = [PixelTile(i, box, lbox, fbox)
                     for i, (box, lbox, fbox) in enumerate(zip(boxes, latent_boxes, flow_boxes))]
        return TilePlan((height, width), s, size, (H, W), tuple(tiles), dec.tile_size)

    def num_passes(self, height: int, width: int) -> int:
        """Sampling passes per clip for LR frames of ``height × width`` (pixel tiles; 1 in ``frame`` mode):
        a clip calls the step callback ``num_passes · sampling.steps`` times."""
        return len(self.tile_plan(height, width).tiles)

    # ------------------------------------------------------------------ calling
    def __call__(
        self,
        frames,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        *,
        callback: Callable[[dict], None] | None = None,
        progress_bar: bool = True,
    ) -> Tensor:
        """Upscale a short clip held in memory -> ``t 3 sh sw`` float32 in [0, 1], in chunks of ``chunk.frames``
        (use :mod:`mgld.pipeline.runner` / ``mgld infer`` for long videos and files).

        ``frames``: see :func:`to_frames_tensor` (``t 3 h w`` / ``t h w 3`` uint8, uint16 or float in [0, 1]; a list
        of PIL images or arrays). The noise of frame ``i`` is drawn from a stream seeded by ``(seed, i)``; ``seed``
        defaults to ``sampling.seed``, or to ``generator.initial_seed()`` when a ``torch.Generator`` is given.
        ``callback(info)`` runs after every denoising step with the sampler's dict (``step``, ``index``,
        ``num_steps``, ``latents``, ``pred_x0``, ``mean``, ``guidance_loss``, …) plus ``chunk``, ``tile`` and
        ``num_tiles``. ``progress_bar=False`` hides the tqdm bar."""
        from tqdm.auto import tqdm

        if seed is None and generator is not None:
            seed = generator.initial_seed()
        cfg = self.config
        sampling = replace(cfg.sampling, steps=num_inference_steps or cfg.sampling.steps,
                           guidance_scale=cfg.sampling.guidance_scale if guidance_scale is None else guidance_scale,
                           seed=cfg.sampling.seed if seed is None else seed)
        lr = to_frames_tensor(frames)
        chunks = plan_chunks(len(lr), cfg.chunk.frames, cfg.chunk.overlap, cfg.chunk.tail)
        total = len(chunks) * self.num_passes(*lr.shape[-2:]) * sampling.steps
        out, trajectory = [None] * len(lr), {}
        with tqdm(total=total, desc="MGLD", unit="step", disable=not progress_bar, leave=False) as bar:
            for number, chunk in enumerate(chunks):
                def step_done(info, number=number):
                    bar.update()
                    if callback is not None:
                        callback({**info, "chunk": number})

                indices = list(range(chunk.start, chunk.stop))
                anchor = Anchor(trajectory, cfg.chunk.anchor_strength) if chunk.anchored and trajectory else None
                result = self.upscale_clip(lr[chunk.start:chunk.stop], indices, sampling=sampling, anchor=anchor,
                                           record=chunk.record, callback=step_done)
                trajectory = result.trajectory
                for i, frame in zip(indices, result.frames):
                    out[i] = frame if out[i] is None else chunk.blend(i, out[i], frame)
        return torch.stack(out)

    @torch.no_grad()
    def upscale_clip(
        self,
        lr: Tensor,
        frame_indices: Sequence[int],
        *,
        sampling=None,
        anchor: Anchor | None = None,
        record: int = 0,
        noise: NoiseSource | None = None,
        callback: Callable[[dict], None] | None = None,
    ) -> ClipResult:
        """One clip: ``lr`` ``t 3 h w`` in [0, 1] -> ``t 3 (scale·h) (scale·w)`` in [0, 1] (module docstring).

        ``frame_indices`` number the frames (they seed the default noise); ``sampling`` replaces the config's
        section. ``anchor``/``record``: pull the first frames toward the previous chunk's trajectory / record the
        trajectory of the last ``record`` frames (overlapping chunks). ``noise``: where every random draw comes
        from (:class:`~mgld.diffusion.noise.NoiseSource`; default :class:`~mgld.diffusion.noise.FrameNoise` of
        ``(sampling.seed, frame_indices)``). It is asked, per pass (pixel tile, in :meth:`tile_plan` order),
        ``draw("posterior", None, box)``, ``draw("x_T", None, box)``, then ``draw("xi", k, box)`` for
        k = N−1 … 1, with ``box`` the tile's latent box (:attr:`PixelTile.latent_box`); a short clip repeated up
        to ``chunk.frames`` asks for ``chunk.frames`` frames (the repeats numbered after the last index).
        ``callback(info)``: after every step, the sampler's dict plus ``tile`` and ``num_tiles``.
        """
        cfg = self.config
        sampling = sampling or cfg.sampling
        t, _, h, w = lr.shape
        indices = list(frame_indices)
        if len(indices) != t:
            raise ValueError(f"got {t} frames but {len(indices)} frame indices")
        lr = lr.to(self.device, torch.float32)
        if t < cfg.chunk.frames and cfg.chunk.short_sequences == "repeat":  # the authors' tail padding
            extra = cfg.chunk.frames - t
            lr = torch.cat([lr, lr[-1:].expand(extra, -1, -1, -1)])
            indices += list(range(indices[-1] + 1, indices[-1] + 1 + extra))
        plan = self.tile_plan(h, w)
        up, _ = self.preprocess(lr)
        if noise is None:
            noise = FrameNoise(sampling.seed, indices, (cfg.model.vae.latent_channels, *plan.latent_size),
                               sampling.steps)
        amp = autocast_dtype(cfg.infer.precision, self.device)
        guidance = None
        if sampling.guidance_scale != 0 and len(indices) > 1:
            with _autocast(self.device, amp if cfg.flow.precision == "autocast" else None), \
                    stage(self.profiler, "flow"):
                flows, masks = self.flows(up)
            guidance = MotionGuidance(flows, masks, sampling.guidance_scale, sampling.guidance_variant)
        tiles = plan.tiles
        if len(tiles) == 1:
            if guidance is not None:  # frame mode: the authors' step per element (1.0 for a one-tile frame)
                guidance = replace(guidance, scale=guidance.scale * plan.guidance_factor)
            decoded, z0, trajectory = self._pass(up, tiles[0], 1, noise, sampling, guidance, anchor, record,
                                                 callback)
        else:
            decoded = count = z0 = z_count = None
            trajectory = {}
            for tile in tiles:  # the whole chain per pixel tile, then a uniform average (docs/algorithm.md §5)
                out, z_tile, traj = self._pass(
                    tile.box.crop(up), tile, len(tiles), noise, sampling,
                    guidance.crop(tile.flow_box) if guidance is not None else None,
                    anchor.for_tile(tile.index) if anchor is not None else None, record, callback)
                if decoded is None:
                    decoded, count = out.new_zeros(out.shape[:2] + up.shape[-2:]), out.new_zeros(up.shape[-2:])
                    z0 = z_tile.new_zeros(z_tile.shape[:2] + plan.latent_size)
                    z_count = z_tile.new_zeros(plan.latent_size)
                tile.box.crop(decoded).add_(out)
                tile.box.crop(count).add_(1)
                tile.latent_box.crop(z0).add_(z_tile)
                tile.latent_box.crop(z_count).add_(1)
                trajectory.update({(tile.index, k): v for k, v in traj.items()})
            decoded, z0 = decoded / count, z0 / z_count.clamp(min=1)
        height, width = plan.upsampled_size
        sr = ((decoded + 1) / 2).clamp(0, 1)[..., :height, :width]
        scale = cfg.infer.scale
        if sr.shape[-2:] != (h * scale, w * scale):
            sr = F.interpolate(sr, size=(h * scale, w * scale), mode="bicubic", align_corners=False).clamp(0, 1)
        return ClipResult(sr[:t].cpu(), z0[:t].float().cpu(), trajectory)

    def _pass(self, up: Tensor, tile: PixelTile, num_tiles: int, noise: NoiseSource, sampling,
              guidance: MotionGuidance | None, anchor: Anchor | None, record: int, callback):
        """Encode -> sample -> decode -> colour fix of one pass: ``up`` ``t 3 H W`` (a pixel tile or the frame)
        -> (decoded ``t 3 H W`` fp32, final latents ``t 4 H/8 W/8``, trajectory ``{k: record 4 h w}``)."""
        cfg = self.config
        amp = autocast_dtype(cfg.infer.precision, self.device)
        with _autocast(self.device, amp), stage(self.profiler, "vae_encode"):
            z_lr, feats = self.encode(up, noise.draw("posterior", None, tile.latent_box))
        trajectory: dict[int, Tensor] = {}

        def step_done(info):
            if record:
                trajectory[info["step"]] = info["latents"][-record:].detach().clone()
            if callback is not None:
                callback({**info, "tile": tile.index, "num_tiles": num_tiles})

        if guidance is not None and self.profiler is not None:
            guidance = _TimedGuidance(guidance, self.profiler)
        with _autocast(self.device, amp):
            z0 = sample(_timed(self.denoiser, self.profiler, "encoder+unet"), respaced_schedule(sampling.steps),
                        z_lr, noise, box=tile.latent_box, guidance=guidance, anchor=anchor,
                        tile_size=sampling.latent_tile_size, tile_overlap=sampling.latent_tile_overlap,
                        tile_batch=sampling.tile_batch, callback=step_done)
        with stage(self.profiler, "vae_decode"):
            with _autocast(self.device, amp):
                decoded = self.decode(z0, up, feats)
            decoded = color_fix(decoded.float(), up, cfg.decode.color_fix)
        return decoded, z0, trajectory

    # ------------------------------------------------------------------ stages
    def preprocess(self, lr: Tensor) -> tuple[Tensor, float]:
        """``t 3 h w`` [0, 1] -> upsampled, padded ``t 3 H W`` in [-1, 1] (:meth:`tile_plan` sizes) and ``s``."""
        plan = self.tile_plan(*lr.shape[-2:])
        x = lr * 2 - 1
        if self.config.infer.upsample_mode == "bilinear":  # torchvision's Resize on tensors (the latent script)
            up = F.interpolate(x, size=plan.upsampled_size, mode="bilinear", align_corners=False, antialias=True)
        else:
            up = F.interpolate(x, size=plan.upsampled_size, mode="bicubic", align_corners=False)
        up = up.clamp(-1, 1)
        pad_h, pad_w = (p - s for p, s in zip(plan.padded_size, plan.upsampled_size))
        if pad_h or pad_w:  # reflect, as the authors; replicate where a tiny frame is shorter than its padding
            mode = "reflect" if min(plan.upsampled_size) > max(pad_h, pad_w) else "replicate"
            up = F.pad(up, (0, pad_w, 0, pad_h), mode=mode)
        return up, plan.scale

    def flows(self, up: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Flows ``(flow_f, flow_b)`` ``1 (t-1) 2 H/8 W/8`` and occlusion masks ``(fwd_occ, bwd_occ)``
        ``1 (t-1) 1 H/8 W/8`` of the padded frames ``up`` (docs/algorithm.md §4): estimated at LR size
        (``flow.resolution=lr``: the frames resized bicubically to ``H/4 × W/4``) or on ``up`` itself
        (``upsampled``), then resized to the latent grid."""
        flow = self.config.flow
        H, W = up.shape[-2:]
        frames = ((up + 1) / 2).clamp(0, 1)
        if flow.resolution == "lr":
            frames = F.interpolate(frames, size=(H // 4, W // 4), mode="bicubic", align_corners=False)
        flow_f, flow_b, fwd_occ, bwd_occ = flows_and_masks(
            frames.float(), self.flow_estimator, (H // LATENT_FACTOR, W // LATENT_FACTOR),
            flow.occlusion_alpha, flow.occlusion_beta)
        return (flow_f.float(), flow_b.float()), (fwd_occ.float(), bwd_occ.float())

    def _vae_boxes(self, up: Tensor) -> list[TileBox]:
        """Pixel tiles of the VAE over ``up`` in one whole-frame pass: the authors' boxes with their starts
        floored to a multiple of 8, so every tile's latent lies on the frame's latent grid (one box when the
        frame fits; always one for an authors-mode pixel tile)."""
        dec = self.config.decode
        return [TileBox(b.top // 8 * 8, b.left // 8 * 8, b.height, b.width)
                for b in pixel_tile_boxes(up.shape[-2], up.shape[-1], dec.tile_size, dec.tile_stride)]

    def encode(self, up: Tensor, noise: Tensor) -> tuple[Tensor, list[Tensor] | None]:
        """``z_lr = sf·(mean + std·noise)`` ``t 4 H/8 W/8``; posterior moments blended over feathered pixel
        tiles when ``up`` is larger than one tile. Returns the CFW features too when ``up`` is a single tile
        (reused by :meth:`decode`)."""
        sf = self.vae.scaling_factor
        boxes = self._vae_boxes(up)
        if len(boxes) == 1:
            posterior, feats = self.vae.encode(up)
            return sf * (posterior.mean + posterior.std * noise.to(posterior.mean.device, posterior.mean.dtype)), \
                feats
        overlap = (self.config.decode.tile_size - self.config.decode.tile_stride) // 8
        size = _latent_size(up)
        moments = blend_tiles(
            ((box.downscaled(8), torch.cat([p.mean, p.std], 1)) for box, p in
             ((b, self.vae.encode(b.crop(up))[0]) for b in boxes)),
            size, weights=lambda box: feather_weights(box, *size, overlap),
        )
        mean, std = moments.chunk(2, dim=1)
        return sf * (mean + std * noise.to(mean.device, mean.dtype)), None

    def decode(self, z0: Tensor, up: Tensor, feats: list[Tensor] | None) -> Tensor:
        """Latents ``t 4 h w`` -> ``t 3 8h 8w`` in about [-1, 1]: temporal VAE with CFW features of the
        upsampled LR frames, decoded in feathered pixel tiles when ``up`` is larger than one tile (all frames of
        the clip together)."""
        vae, dec = self.vae, self.config.decode
        t = z0.shape[0]
        z = z0 / vae.scaling_factor
        boxes = self._vae_boxes(up)
        if len(boxes) == 1:
            feats = feats if feats is not None else vae.encode(up)[1]
            return vae.decode(z, feats, t, dec.cfw_weight)

        def tiles():
            for box in boxes:
                tile_feats = vae.encode(box.crop(up))[1]
                yield box, vae.decode(box.downscaled(8).crop(z), tile_feats, t, dec.cfw_weight).float()

        size = tuple(up.shape[-2:])
        overlap = dec.tile_size - dec.tile_stride
        return blend_tiles(tiles(), size, weights=lambda box: feather_weights(box, *size, overlap))


class _TimedGuidance:
    """A guidance whose every update is timed as the profiler's ``guidance`` stage."""

    def __init__(self, guidance: MotionGuidance, profiler: StageProfiler):
        self.guidance, self.profiler = guidance, profiler

    def apply(self, *args, **kwargs):
        with self.profiler.stage("guidance"):
            return self.guidance.apply(*args, **kwargs)


def _timed(fn: Callable, profiler: StageProfiler | None, name: str) -> Callable:
    """``fn`` with every call timed as the stage ``name`` (``fn`` itself without a profiler)."""
    if profiler is None:
        return fn

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        with profiler.stage(name):
            return fn(*args, **kwargs)

    return timed


def weights_folder(name: str | Path, revision: str | None = None) -> Path:
    """A local weights folder: ``name`` itself (``~`` expanded), or the snapshot of the Hub repo ``name``
    (``owner/repo``; only the files a converted folder holds are fetched)."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    text = str(name)
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(repo_id=text, revision=revision,
                                          allow_patterns=["config.yaml", INFERENCE_FILE, "*.safetensors"]))
        except Exception as err:
            raise FileNotFoundError(f"{text}: not a local folder, and fetching it as a Hugging Face Hub repo failed "
                                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
    raise FileNotFoundError(f"{path}: no such weights folder")


def _with_overrides(config: Config | str | Path, overrides: Sequence[str]) -> Config:
    """``config`` (a :class:`Config`, a file or a packaged name) with ``key=value`` overrides applied, validated."""
    if not isinstance(config, Config):
        return load_config(config, list(overrides))
    if not overrides:
        return config
    merged = OmegaConf.merge(OmegaConf.structured(config), OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_object(merged)


def _latent_size(up: Tensor) -> tuple[int, int]:
    return up.shape[-2] // LATENT_FACTOR, up.shape[-1] // LATENT_FACTOR


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)

