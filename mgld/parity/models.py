"""Parity checks of the model fixtures (``unet.pt``, ``vae.pt``)."""
