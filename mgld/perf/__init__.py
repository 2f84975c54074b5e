"""Performance measurement: the per-stage profiler and the benchmark behind ``mgld benchmark``."""
