"""Parity checks of the sampling fixtures (``schedule.json``, ``occlusion.pt``, ``guidance.pt``, ``colorfix.pt``)."""
