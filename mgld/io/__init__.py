"""Disk input/output of inference: frames, sequences, video files, atomic writes.

``frames`` (image files, natural order, PNG writer), ``sequences`` (what an input path holds), ``video_reader`` /
``video_writer`` (PyAV), ``atomic`` (temp file + rename). Imports neither Lightning nor the metric packages.
"""
