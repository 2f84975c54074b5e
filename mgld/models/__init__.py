"""Networks of MGLD-VSR and the builders that make them from a :class:`~mgld.config.ModelConfig`."""

from __future__ import annotations

from mgld.config import ModelConfig
from mgld.models.cond_encoder import TimeAwareEncoder
from mgld.models.denoiser import MGLDDenoiser
from mgld.models.unet import VideoUNet
from mgld.models.vae import TemporalVAE

__all__ = ["MGLDDenoiser", "TemporalVAE", "TimeAwareEncoder", "VideoUNet", "build_denoiser", "build_vae"]


def build_denoiser(cfg: ModelConfig) -> MGLDDenoiser:
    """Stage-1 denoiser (UNet + time-aware encoder) with fresh weights (alpha = its configured init)."""
    unet = VideoUNet(**vars(cfg.unet))
    encoder = TimeAwareEncoder(**vars(cfg.cond_encoder))
    return MGLDDenoiser(unet, encoder, cfg.context_length)


def build_vae(cfg: ModelConfig) -> TemporalVAE:
    """Temporal VAE with fresh weights."""
    return TemporalVAE(**vars(cfg.vae))
