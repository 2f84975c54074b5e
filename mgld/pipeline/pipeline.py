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
is a pure function of ``(seed, frame index)``. On a GPU all the draws of a clip are made once and copied to the
device in one transfer (:func:`mgld.diffusion.clip_noise.frame_noise_on_device`, the same values), so the step
loop never waits for the host. Long videos are handled by :mod:`mgld.pipeline.runner`, which feeds clips to
:meth:`MGLDPipeline.upscale_clip`.

How the networks run (docs/notes/perf.md; applied by :meth:`MGLDPipeline.to`, or at the first call): the
precision (``infer.precision``: ``auto`` is the authors' fp16 autocast on CUDA, fp32 on the CPU), weights cast
once with fp32 norms (``infer.cast_weights``), ``infer.channels_last``, ``infer.compile``, the attention kernel
(``infer.attention``) and where the networks live between stages (``infer.offload``); per pass, the latent tiles
per denoiser call (``sampling.tile_batch``, ``auto`` resolved on the network from the free memory) and their
schedule (``sampling.tile_schedule``); per clip in frame mode, the VAE tile (``decode.tile_size: auto``) with one
retry with smaller tiles on an out-of-memory error, and the CFW encoder features of every VAE tile kept from the
encode for the decode.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor

from mgld.config import INFERENCE_SECTIONS, Config, load_config
from mgld.diffusion.batching import tile_batch_for_pass
from mgld.diffusion.clip_noise import frame_noise_on_device
from mgld.diffusion.noise import FrameNoise, NoiseSource
from mgld.diffusion.sampling import Anchor, MotionGuidance, sample
from mgld.diffusion.schedule import respaced_schedule
from mgld.diffusion.tiling import TileBox
from mgld.flow import build_flow_estimator, flows_and_masks
from mgld.models import MGLDDenoiser, TemporalVAE, build_denoiser, build_vae
from mgld.models.efficiency import attention_backend
from mgld.models.vae import sample_posterior
from mgld.perf.profiler import StageProfiler, TimedGuidance, stage, timed
from mgld.pipeline.chunks import plan_chunks
from mgld.pipeline.colorfix import color_fix
from mgld.pipeline.inputs import FRAMES_HELP, to_frames_tensor
from mgld.pipeline.memory import free_bytes, retry_on_oom, smaller_tile
from mgld.pipeline.runtime import (
    AUTHORS_VAE_OOM_HINT,
    SAMPLING_OOM_HINT,
    Runtime,
    autocast,
    oom_hint,
    pipeline_precision,
)
from mgld.pipeline.tiles import LATENT_FACTOR, PAD_MULTIPLE, PixelTile, TilePlan, padding, plan_tiles
from mgld.pipeline.vae_tiles import TileFeatures, choose_tile, decode_tiles, encode_tiles, tile_stride, vae_boxes
from mgld.weights.hub import default_flow_weights

log = logging.getLogger(__name__)
INFERENCE_FILE = "inference.yaml"  # the inference sections next to a saved folder's config.yaml
# infer keys that describe a machine or a run, not the model: save_pretrained leaves them out
_UNSAVED_INFER_KEYS = ("weights", "unet", "vae", "random_weights", "device", "devices", "precision", "overwrite")
NOISE_ON_DEVICE_BYTES = 2**30  # the draws of a clip kept on the GPU: at most this, and a tenth of the free memory
FEATURES_SHARE = 0.25  # frame mode keeps the CFW features of every VAE tile while they take at most this share

__all__ = ["FRAMES_HELP", "INFERENCE_FILE", "LATENT_FACTOR", "PAD_MULTIPLE", "ClipResult", "MGLDPipeline",
           "PixelTile", "TileFeatures", "TilePlan", "padding", "pipeline_precision",
           "resolve_device", "to_frames_tensor", "weights_folder"]


@dataclass
class ClipResult:
    """Output of one clip: ``frames`` ``t 3 H W`` in [0, 1]; ``latents`` ``t 4 H'/8 W'/8``, the final latents
    over the padded upsampled frames (what stage-2 training decodes; with several pixel tiles, the uniform average
    of the tiles' latents placed at their latent boxes); the anchor trajectory for the next clip (keys ``k``, or
    ``(tile, k)`` with several pixel tiles)."""

    frames: Tensor
    latents: Tensor
    trajectory: dict


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------


class MGLDPipeline:
    """The MGLD-VSR inference pipeline (module docstring); build it with :meth:`from_pretrained` or
    :meth:`from_config`, move it with :meth:`to`, call it on frames. ``denoiser`` and ``vae`` are the networks;
    ``profiler`` (a :class:`~mgld.perf.profiler.StageProfiler`, set by ``mgld benchmark``) times the stages flow,
    vae_encode, encoder+unet (per network call), guidance (per step) and vae_decode. ``runtime``
    (:class:`~mgld.pipeline.runtime.Runtime`) holds the networks as the stages run them; :attr:`options` says
    how (precision, autocast, cast weights, ...)."""

    def __init__(self, denoiser: MGLDDenoiser, vae: TemporalVAE, config: Config, flow_estimator=None):
        self.denoiser = denoiser.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.config = config
        self._flow_estimator = flow_estimator
        self.device = torch.device("cpu")
        self.profiler: StageProfiler | None = None
        self.runtime = Runtime(self.denoiser, self.vae)  # the networks as the stages call them (to())

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: Config | str | Path, overrides: Sequence[str] = ()) -> MGLDPipeline:
        """Random weights (``infer.random_weights``), or the weights the config names (``infer.weights``,
        ``infer.unet``, ``infer.vae``; default: the converted official weights, see :mod:`mgld.weights.hub`).

        ``config``: a :class:`Config`, a file or a packaged config name; ``overrides`` (``key=value``) apply on
        top. The precision is checked against the device before any network is built."""
        config = _with_overrides(config, overrides)
        pipeline_precision(config.infer.precision, resolve_device(config.infer.device), cpu_bf16=False)  # fail early
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

        if self.runtime.cast_dtype is not None:
            raise ValueError(f"save_pretrained: the weights were cast to {self.runtime.cast_dtype} when the pipeline "
                             f"was moved (infer.cast_weights with infer.precision={self.config.infer.precision}); "
                             "save before .to(), or with infer.cast_weights=false, to keep the fp32 weights")
        folder = Path(folder).expanduser()
        save_model_folder(folder, self.config.model, denoiser=self.denoiser, vae=self.vae, flow=self._raft_weights(),
                          provenance={"saved_by": "MGLDPipeline.save_pretrained"})
        sections = {name: OmegaConf.to_container(OmegaConf.structured(getattr(self.config, name)))
                    for name in INFERENCE_SECTIONS}
        for key in _UNSAVED_INFER_KEYS:
            sections["infer"].pop(key)
        atomic_write(folder / INFERENCE_FILE, OmegaConf.to_yaml(sections))
        return folder

    def _raft_weights(self) -> dict[str, Tensor] | None:
        """The RAFT state dict this pipeline runs with (``flow.method=raft``), for ``flow.safetensors``; None for
        other flow methods, or when no RAFT weights can be found (the saved folder then falls back like any other)."""
        if self.config.flow.method != "raft":
            return None
        try:
            estimator = self.flow_estimator
        except FileNotFoundError as err:
            log.warning("save_pretrained: no RAFT weights to save (%s); the folder gets no flow.safetensors", err)
            return None
        model = getattr(estimator, "model", None)
        return model.state_dict() if isinstance(model, torch.nn.Module) else None

    # ------------------------------------------------------------------ device and options
    def to(self, device: str | torch.device) -> MGLDPipeline:
        """Move the pipeline to ``device`` (``auto``: CUDA when available) and apply the inference options of
        ``config.infer`` there (:meth:`mgld.pipeline.runtime.Runtime.prepare`: precision, weights cast once,
        channels_last, compile, offload)."""
        self.device = resolve_device(str(device))
        self._prepare()
        return self

    def _prepare(self) -> None:
        networks = {"denoiser": self.denoiser, "vae": self.vae}
        if isinstance(self._flow_estimator, torch.nn.Module):
            networks["flow"] = self._flow_estimator
        self.runtime.prepare(self.config.infer, self.device, networks)

    @property
    def options(self) -> dict:
        """How the networks run (after :meth:`to` or the first call): precision, autocast dtype, the dtype the
        weights were cast to, channels_last, compile (mode), attention kernel, offload."""
        return self.runtime.options(self.config.infer)

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
            self.runtime.add("flow", self._flow_estimator)
        return self._flow_estimator

    # ------------------------------------------------------------------ geometry
    def tile_plan(self, height: int, width: int) -> TilePlan:
        """Sizes and passes for LR frames of ``height × width`` with this config (module docstring, steps 2, 4;
        :func:`mgld.pipeline.tiles.plan_tiles`)."""
        return plan_tiles(height, width, self.config.infer, self.config.decode, self.config.sampling)

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
        to ``chunk.frames`` asks for ``chunk.frames`` frames (the repeats numbered after the last index). A
        :class:`~mgld.diffusion.noise.FrameNoise` is drawn up front and kept on a GPU (the same values).
        ``callback(info)``: after every step, the sampler's dict plus ``tile`` and ``num_tiles``.
        """
        self._prepare()
        attention = self.config.infer.attention
        try:
            with attention_backend(attention):
                return self._upscale_clip(lr, frame_indices, sampling or self.config.sampling, anchor, record,
                                          noise, callback)
        except RuntimeError as err:
            if attention != "auto" and any(m in str(err) for m in ("No available kernel", "No viable backend")):
                raise RuntimeError(f"infer.attention={attention}: PyTorch has no such attention kernel for these "
                                   f"inputs on {self.device} ({str(err).splitlines()[0]}); use infer.attention=auto"
                                   ) from err
            raise

    def _upscale_clip(self, lr, frame_indices, sampling, anchor, record, noise, callback) -> ClipResult:
        cfg = self.config
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
        up, _ = self.preprocess(lr, plan)
        if noise is None:
            noise = FrameNoise(sampling.seed, indices, (cfg.model.vae.latent_channels, *plan.latent_size),
                               sampling.steps)
        if self.device.type == "cuda":  # every draw of the clip in one transfer: no host copy in the step loop
            # (drawn without a host cache; the FrameNoise made above is dropped once its draws are on the device)
            budget = min(NOISE_ON_DEVICE_BYTES, free_bytes(self.device) // 10)
            noise = frame_noise_on_device(noise, self.device, budget)
        guidance = None
        if sampling.guidance_scale != 0 and len(indices) > 1:
            _ = self.flow_estimator  # built (and placed for infer.offload) before its stage
            with self.runtime.use("flow"), autocast(self.device, self.runtime.flow_amp(cfg.flow.precision)), \
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
        run = self.runtime
        amp = run.amp
        with run.use("vae"), autocast(self.device, amp), stage(self.profiler, "vae_encode"):
            eps = noise.draw("posterior", None, tile.latent_box)
            # the VAE tile is chosen here (:meth:`_vae_tile`); the decode uses the encode's tile and features
            z_lr, feats, vae_tile = self._vae_pass(
                "encode", self._vae_tile(up), lambda tile: (*self.encode(up, eps, vae_tile=tile), tile))
        trajectory: dict[int, Tensor] = {}

        def step_done(info):
            if record:
                trajectory[info["step"]] = info["latents"][-record:].detach().clone()
            if callback is not None:
                callback({**info, "tile": tile.index, "num_tiles": num_tiles})

        if guidance is not None and self.profiler is not None:
            guidance = TimedGuidance(guidance, self.profiler)
        with run.use("denoiser"), autocast(self.device, amp), oom_hint("sampling", self.device, SAMPLING_OOM_HINT):
            tile_batch = tile_batch_for_pass(
                sampling.tile_batch, run.denoiser, z_lr, tile_size=sampling.latent_tile_size,
                tile_overlap=sampling.latent_tile_overlap, tile_schedule=sampling.tile_schedule, steps=sampling.steps)
            z0 = sample(timed(run.denoiser, self.profiler, "encoder+unet"), respaced_schedule(sampling.steps),
                        z_lr, noise, box=tile.latent_box, guidance=guidance, anchor=anchor,
                        tile_size=sampling.latent_tile_size, tile_overlap=sampling.latent_tile_overlap,
                        tile_batch=tile_batch, tile_schedule=sampling.tile_schedule, callback=step_done)
        with run.use("vae"), stage(self.profiler, "vae_decode"):
            with autocast(self.device, amp):
                decoded = self._vae_pass("decode", vae_tile,
                                         lambda tile: self.decode(z0, up, feats, vae_tile=tile))
            decoded = color_fix(decoded.float(), up, cfg.decode.color_fix)
        return decoded, z0, trajectory

    # ------------------------------------------------------------------ stages
    def preprocess(self, lr: Tensor, plan: TilePlan | None = None) -> tuple[Tensor, float]:
        """``t 3 h w`` [0, 1] -> upsampled, padded ``t 3 H W`` in [-1, 1] (:meth:`tile_plan` sizes; ``plan``: that
        of ``h × w``, if the caller has it) and ``s``."""
        plan = plan if plan is not None else self.tile_plan(*lr.shape[-2:])
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

    # ------------------------------------------------------------------ VAE tiles (frame mode)
    def _vae_tile(self, up: Tensor) -> tuple[int, int]:
        """``(size, stride)`` of the VAE tiles for ``up`` (:func:`mgld.pipeline.vae_tiles.choose_tile`)."""
        return choose_tile(self.config.decode, up, self.runtime.precision or "fp32", self.runtime.amp is not None)

    def _vae_pass(self, what: str, vae_tile: tuple[int, int], fn):
        """``fn(tile)`` for a VAE stage of a pass (``what``: ``encode``/``decode``) with the pass's VAE tile
        ``(size, stride)``. In frame mode an out-of-memory error is retried once with smaller tiles (the log
        names ``decode.tile_size``); in the authors' mode the VAE tile is the pass itself (the error names the
        knobs that help)."""
        if self.config.sampling.pixel_tiling != "frame":
            with oom_hint(f"VAE {what} of a pixel tile", self.device, AUTHORS_VAE_OOM_HINT):
                return fn(vae_tile)

        def attempt(size: int):
            return fn(vae_tile if size == vae_tile[0] else (size, tile_stride(self.config.decode, size)))

        return retry_on_oom(attempt, vae_tile[0], knob="decode.tile_size", smaller=smaller_tile)

    def _vae_boxes(self, up: Tensor, vae_tile: tuple[int, int] | None = None) -> list[TileBox]:
        """Pixel tiles of the VAE over ``up`` in one whole-frame pass (:func:`mgld.pipeline.vae_tiles.vae_boxes`
        of ``vae_tile``, default :meth:`_vae_tile`): one box when the frame fits; always one for an authors-mode
        pixel tile."""
        return vae_boxes(*up.shape[-2:], *(vae_tile or self._vae_tile(up)))

    def encode(self, up: Tensor, noise: Tensor, *, vae_tile: tuple[int, int] | None = None
               ) -> tuple[Tensor, list[Tensor] | TileFeatures | None]:
        """``z_lr = sf·(mean + std·noise)`` ``t 4 H/8 W/8``; posterior moments blended over feathered pixel
        tiles (``vae_tile``, default :meth:`_vae_tile`) when ``up`` is larger than one tile. Also returns the
        CFW features for :meth:`decode`: a list for a single tile; for several, the features of every tile
        (:class:`~mgld.pipeline.vae_tiles.TileFeatures`, kept on the device — on the host with ``infer.offload``
        — while they take at most :data:`FEATURES_SHARE` of its free memory), else None."""
        vae = self.runtime.vae
        vae_tile = vae_tile or self._vae_tile(up)
        if len(self._vae_boxes(up, vae_tile)) == 1:
            posterior, feats = vae.encode(up)  # z_lr and the sampling latents fp32 (sample_posterior)
            return sample_posterior(posterior.mean, posterior.std, noise, vae.scaling_factor), feats
        store = torch.device("cpu") if self.runtime.offloader is not None else self.device
        return encode_tiles(vae, up, noise, vae_tile, store, int(FEATURES_SHARE * free_bytes(store)))

    def decode(self, z0: Tensor, up: Tensor, feats, *, vae_tile: tuple[int, int] | None = None) -> Tensor:
        """Latents ``t 4 h w`` -> ``t 3 8h 8w`` in about [-1, 1]: temporal VAE with CFW features of the
        upsampled LR frames (``feats`` from :meth:`encode` for the same ``vae_tile``, else encoded here), decoded
        in feathered pixel tiles when ``up`` is larger than one tile (all frames of the clip together)."""
        vae, dec = self.runtime.vae, self.config.decode
        vae_tile = vae_tile or self._vae_tile(up)
        if len(self._vae_boxes(up, vae_tile)) > 1:
            return decode_tiles(vae, z0, up, feats, vae_tile, dec.cfw_weight)
        feats = feats if isinstance(feats, (list, tuple)) else vae.encode(up)[1]
        return vae.decode(z0 / vae.scaling_factor, feats, z0.shape[0], dec.cfw_weight)


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
