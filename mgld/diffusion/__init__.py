"""The diffusion core of MGLD-VSR: respaced DDPM schedule, per-frame noise, latent tiling, the sampling loop and
the motion-guided update. Pure tensor code: no disk I/O, no Lightning."""
