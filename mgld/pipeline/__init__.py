"""Inference: :class:`MGLDPipeline` (one clip in memory), the chunk planner, the colour fix and the disk runner."""

from mgld.pipeline.pipeline import ClipResult, MGLDPipeline

__all__ = ["ClipResult", "MGLDPipeline"]
