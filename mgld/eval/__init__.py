"""Evaluation (the ``eval`` extra): metrics, per-sequence reports, test-set degradation."""
