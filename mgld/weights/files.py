"""The files of a converted mgld weights folder (docs/checkpoints.md). Names only: imported by the light hub
module and by the checkpoint reader alike."""

CONFIG_FILE = "config.yaml"  # the model section + provenance
DENOISER_FILE = "denoiser.safetensors"  # UNet (+SFT, temporal), time-aware encoder, empty-prompt context
VAE_FILE = "vae.safetensors"  # temporal VAE + CFW
FLOW_FILE = "flow.safetensors"  # the stage-1 checkpoint's RAFT (``flownet_model.*``), torchvision raft_large names

__all__ = ["CONFIG_FILE", "DENOISER_FILE", "FLOW_FILE", "VAE_FILE"]
