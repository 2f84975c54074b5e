"""Data: degradations (docs/training.md §2) and, later, datasets."""
