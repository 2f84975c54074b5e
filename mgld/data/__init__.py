"""Training data (docs/training.md §2, §4): the RealBasicVSR degradation and USM (``degradations``), the stage-1 clip
dataset (``reds``) and the stage-2 dataset (``stage2``). Files are listed, read and converted by :mod:`mgld.io`."""
