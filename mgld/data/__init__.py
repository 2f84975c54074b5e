"""Data: degradations (spec §6.1) and, later, datasets."""
