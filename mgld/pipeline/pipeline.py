"""``MGLDPipeline``: low-resolution frames in, 4x temporally consistent frames out (docs/algorithm.md §5).

Per clip (a chunk of T frames, ``t 3 h w`` in [0, 1]):

1. pre-process (docs/algorithm.md §5): [-1, 1], bicubic x s with ``s = max(scale, min_short_side / min(h, w))``,
   reflect-pad bottom/right to a multiple of 32;
2. optical flow (docs/algorithm.md §4) on the padded frames brought back to LR size, resized to the latent grid, and
   forward-backward occlusion masks — once per clip;
3. encode (docs/algorithm.md §5): ``z_lr = 0.18215 · sample(posterior)``, in feathered pixel tiles for large frames;
4. motion-guided DDPM sampling (:func:`mgld.diffusion.sampling.sample`), latent tiles with the Gaussian window;
5. decode with the temporal VAE and CFW features of the LR frames, in feathered pixel tiles (every tile sees
   all T frames), colour fix against the upsampled LR, crop the padding, and resize to exactly ``scale`` x the
   input when ``s != scale`` (docs/algorithm.md §7, with the crop done before the resize).

Long videos are handled by :mod:`mgld.pipeline.runner`, which feeds clips to :meth:`MGLDPipeline.upscale_clip`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mgld.config import Config, load_config
from mgld.diffusion.noise import FrameNoise
from mgld.diffusion.sampling import Anchor, MotionGuidance, sample
from mgld.diffusion.schedule import respaced_schedule
from mgld.diffusion.tiling import TileBox, blend_tiles, feather_weights, tile_boxes
from mgld.flow import build_flow_estimator, flows_and_masks
from mgld.models import MGLDDenoiser, TemporalVAE, build_denoiser, build_vae
from mgld.perf.profiler import StageProfiler, stage
from mgld.pipeline.chunks import plan_chunks
from mgld.pipeline.colorfix import color_fix

log = logging.getLogger(__name__)
PAD_MULTIPLE = 32


@dataclass
class ClipResult:
    """Output of one clip: ``frames`` ``t 3 H W`` in [0, 1]; ``latents`` ``t 4 H'/8 W'/8``, the final latents
    over the padded upsampled frames (what stage-2 training decodes); the anchor trajectory for the next clip."""

    frames: Tensor
    latents: Tensor
    trajectory: dict[int, Tensor]


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
        raise ValueError(f"precision {precision} needs a CUDA device; use fp32 on {device.type}")
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def to_frames_tensor(frames) -> Tensor:
    """A ``t c h w`` float tensor in [0, 1] from a tensor, or a list of PIL images / ``h w c`` arrays."""
    if isinstance(frames, Tensor):
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected frames as t 3 h w in [0, 1], got shape {tuple(frames.shape)}")
        return frames.float()
    arrays = [np.asarray(f) for f in frames]
    if not arrays:
        raise ValueError("no frames given")
    out = []
    for a in arrays:
        a = a[..., None].repeat(3, axis=-1) if a.ndim == 2 else a[..., :3]
        scale = 65535.0 if a.dtype == np.uint16 else 255.0 if a.dtype == np.uint8 else 1.0
        out.append(torch.from_numpy(a.astype(np.float32) / scale).permute(2, 0, 1))
    if len({tuple(t.shape) for t in out}) > 1:
        raise ValueError("all frames must have the same size")
    return torch.stack(out)


class MGLDPipeline:
    """The MGLD-VSR inference pipeline (module docstring); build it with :meth:`from_pretrained` or
    :meth:`from_config`, move it with :meth:`to`, call it on frames."""

    def __init__(self, denoiser: MGLDDenoiser, vae: TemporalVAE, config: Config, flow_estimator=None):
        self.denoiser = denoiser.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.config = config
        self._flow_estimator = flow_estimator
        self.device = torch.device("cpu")
        self.profiler: StageProfiler | None = None  # set by mgld benchmark

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: Config | str | Path, overrides: Sequence[str] = ()) -> MGLDPipeline:
        """Random weights (``infer.random_weights``), or the weights the config names (``infer.weights``,
        ``infer.unet``, ``infer.vae``; default: the converted official weights, see :mod:`mgld.weights.hub`)."""
        if not isinstance(config, Config):
            config = load_config(config, list(overrides))
        infer = config.infer
        if infer.random_weights and not (infer.weights or infer.unet or infer.vae):
            log.warning("RANDOM WEIGHTS: the networks are randomly initialised (infer.random_weights=true); "
                        "outputs are meaningless, this run only exercises the pipeline")
            torch.manual_seed(config.sampling.seed)
            return cls(build_denoiser(config.model), build_vae(config.model), config)
        from mgld.weights.hub import default_weights_dir, missing_weights_message
        from mgld.weights.loading import load_denoiser, load_vae

        folder = Path(infer.weights) if infer.weights else default_weights_dir()
        unet_path, vae_path = Path(infer.unet or folder), Path(infer.vae or folder)
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
        unet: str | Path | None = None,
        vae: str | Path | None = None,
    ) -> MGLDPipeline:
        """Weights from a converted folder (``unet=``/``vae=`` may point elsewhere, e.g. to official
        ``.ckpt`` files). The config defaults to the folder's model with default inference settings; edit
        ``pipe.config`` sections afterwards or pass a config (file) whose model matches the weights."""
        from mgld.weights.checkpoints import read_model_config

        if config is None:
            config = Config(model=read_model_config(folder))
        elif not isinstance(config, Config):
            config = load_config(config)
        infer = replace(config.infer, weights=str(folder), random_weights=False,
                        unet=str(unet) if unet else config.infer.unet, vae=str(vae) if vae else config.infer.vae)
        return cls.from_config(replace(config, infer=infer))

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
                flow.method, _default_flow_weights(flow.method, flow.weights), self.device,
                raft_input_range=flow.raft_input_range, raft_iters=flow.raft_iters,
            )
        return self._flow_estimator

    # ------------------------------------------------------------------ calling
    def __call__(
        self,
        frames,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        progress: Callable[[int], None] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Upscale a short clip held in memory: ``t 3 h w`` in [0, 1] (or PIL images / arrays) ->
        ``t 3 sh sw`` in [0, 1], in chunks of ``chunk.frames`` (use :mod:`mgld.pipeline.runner` for long videos).

        The noise of frame ``i`` is drawn from a stream seeded by ``(seed, i)``; ``seed`` defaults to
        ``sampling.seed``, or to ``generator.initial_seed()`` when a ``torch.Generator`` is given instead."""
        if seed is None and generator is not None:
            seed = generator.initial_seed()
        cfg = self.config
        sampling = replace(cfg.sampling, steps=num_inference_steps or cfg.sampling.steps,
                           guidance_scale=cfg.sampling.guidance_scale if guidance_scale is None else guidance_scale,
                           seed=cfg.sampling.seed if seed is None else seed)
        lr = to_frames_tensor(frames)
        out, trajectory = [None] * len(lr), {}
        for chunk in plan_chunks(len(lr), cfg.chunk.frames, cfg.chunk.overlap):
            indices = list(range(chunk.start, chunk.stop))
            anchor = Anchor(trajectory, cfg.chunk.anchor_strength) if chunk.anchored and trajectory else None
            result = self.upscale_clip(lr[chunk.start:chunk.stop], indices, sampling=sampling, anchor=anchor,
                                       record=chunk.record, progress=progress)
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
        progress: Callable[[int], None] | None = None,
    ) -> ClipResult:
        """One clip: ``lr`` ``t 3 h w`` in [0, 1] (frame numbers ``frame_indices`` seed the noise) ->
        ``t 3 (scale·h) (scale·w)`` in [0, 1]."""
        cfg = self.config
        sampling = sampling or cfg.sampling
        t, _, h, w = lr.shape
        lr = lr.to(self.device, torch.float32)
        up, s = self.preprocess(lr)
        noise = FrameNoise(sampling.seed, list(frame_indices), (cfg.model.vae.latent_channels, *_latent_size(up)))
        amp = autocast_dtype(cfg.infer.precision, self.device)
        with _autocast(self.device, amp), stage(self.profiler, "vae_encode"):
            z_lr, feats = self.encode(up, noise.draw(self.device))
        guidance = None
        if sampling.guidance_scale != 0 and t > 1:
            with stage(self.profiler, "flow"):
                flows, masks = self.flows(up, _latent_size(up))
            guidance = MotionGuidance(flows, masks, sampling.guidance_scale, sampling.guidance_variant)
        schedule = respaced_schedule(sampling.steps)
        with _autocast(self.device, amp):
            z0, trajectory = sample(self.denoiser, schedule, z_lr, noise, guidance=guidance, anchor=anchor,
                                    record=record, tile_size=sampling.latent_tile_size,
                                    tile_overlap=sampling.latent_tile_overlap,
                                    tile_batch=sampling.tile_batch, progress=progress, profiler=self.profiler)
        with stage(self.profiler, "vae_decode"):
            with _autocast(self.device, amp):
                decoded = self.decode(z0, up, feats)
            decoded = color_fix(decoded.float(), up, cfg.decode.color_fix)
        sr = ((decoded + 1) / 2).clamp(0, 1)[..., : round(h * s), : round(w * s)]
        scale = cfg.infer.scale
        if sr.shape[-2:] != (h * scale, w * scale):
            sr = F.interpolate(sr, size=(h * scale, w * scale), mode="bicubic", align_corners=False).clamp(0, 1)
        return ClipResult(sr.cpu(), z0.float().cpu(), trajectory)

    # ------------------------------------------------------------------ stages
    def preprocess(self, lr: Tensor) -> tuple[Tensor, float]:
        """``t 3 h w`` [0, 1] -> upsampled, padded ``t 3 H W`` in [-1, 1] (H, W multiples of 32) and ``s``."""
        h, w = lr.shape[-2:]
        s = max(float(self.config.infer.scale), self.config.infer.min_short_side / min(h, w))
        size = (int(h * s), int(w * s))
        up = F.interpolate(lr * 2 - 1, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)
        pad_h, pad_w = -size[0] % PAD_MULTIPLE, -size[1] % PAD_MULTIPLE
        if pad_h or pad_w:
            up = F.pad(up, (0, pad_w, 0, pad_h), mode="reflect" if min(size) > max(pad_h, pad_w) else "replicate")
        return up, s

    def flows(self, up: Tensor, latent_size: tuple[int, int]):
        """Flows and occlusion masks on the latent grid from the padded frames at LR size (docs/algorithm.md §4)."""
        flow = self.config.flow
        lr01 = F.interpolate(((up + 1) / 2).clamp(0, 1), size=(up.shape[-2] // 4, up.shape[-1] // 4),
                             mode="bicubic", align_corners=False)
        flow_f, flow_b, fwd_occ, bwd_occ = flows_and_masks(lr01.float(), self.flow_estimator, latent_size,
                                                           flow.occlusion_alpha, flow.occlusion_beta)
        return (flow_f, flow_b), (fwd_occ, bwd_occ)

    def _pixel_boxes(self, up: Tensor) -> list[TileBox]:
        decode = self.config.decode
        return tile_boxes(up.shape[-2], up.shape[-1], decode.tile_size, decode.tile_size - decode.tile_stride)

    def encode(self, up: Tensor, noise: Tensor) -> tuple[Tensor, list[Tensor] | None]:
        """``z_lr = sf·(mean + std·noise)`` ``t 4 H/8 W/8``; posterior moments blended over feathered pixel
        tiles. Returns the CFW features too when the frame is a single tile (reused by :meth:`decode`)."""
        sf = self.vae.scaling_factor
        boxes = self._pixel_boxes(up)
        if len(boxes) == 1:
            posterior, feats = self.vae.encode(up)
            return sf * (posterior.mean + posterior.std * noise.to(posterior.mean.dtype)), feats
        overlap = (self.config.decode.tile_size - self.config.decode.tile_stride) // 8
        size = _latent_size(up)
        moments = blend_tiles(
            ((box_z, torch.cat([p.mean, p.std], 1)) for box_z, p in
             ((_to_latent(b), self.vae.encode(b.crop(up))[0]) for b in boxes)),
            size, weights=lambda box: feather_weights(box, *size, overlap),
        )
        mean, std = moments.chunk(2, dim=1)
        return sf * (mean + std * noise.to(mean.dtype)), None

    def decode(self, z0: Tensor, up: Tensor, feats: list[Tensor] | None) -> Tensor:
        """Latents ``t 4 h w`` -> ``t 3 8h 8w`` in about [-1, 1]: temporal VAE with CFW features of the
        upsampled LR frames, decoded in feathered pixel tiles (all frames of the clip together)."""
        vae, dec = self.vae, self.config.decode
        t = z0.shape[0]
        z = z0 / vae.scaling_factor
        boxes = self._pixel_boxes(up)
        if len(boxes) == 1:
            feats = feats if feats is not None else vae.encode(up)[1]
            return vae.decode(z, feats, t, dec.cfw_weight)

        def tiles():
            for box in boxes:
                tile_feats = vae.encode(box.crop(up))[1]
                yield box, vae.decode(_to_latent(box).crop(z), tile_feats, t, dec.cfw_weight).float()

        size = tuple(up.shape[-2:])
        overlap = dec.tile_size - dec.tile_stride
        return blend_tiles(tiles(), size, weights=lambda box: feather_weights(box, *size, overlap))


def _latent_size(up: Tensor) -> tuple[int, int]:
    return up.shape[-2] // 8, up.shape[-1] // 8


def _to_latent(box: TileBox) -> TileBox:
    return TileBox(box.top // 8, box.left // 8, math.ceil(box.height / 8), math.ceil(box.width / 8))


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _default_flow_weights(method: str, weights: str | None) -> str | None:
    """The configured file, else ``$MGLD_HOME/official/raft-things.pth`` when it exists (RAFT)."""
    if weights or method != "raft":
        return weights
    from mgld.weights.hub import OFFICIAL_FILES, default_official_dir

    candidate = default_official_dir() / OFFICIAL_FILES["raft"]
    return str(candidate) if candidate.is_file() else None
