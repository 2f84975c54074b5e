"""Evaluation (the ``eval`` extra; docs/evaluation.md): ``metrics`` (definitions), ``inputs`` (listing, matching,
reading), ``evaluation`` (settings, checks, per-sequence values), ``report`` (tables, files, pictures), ``testset``
(degraded test sets, the bicubic baseline), ``registry`` (the metric table, light)."""
