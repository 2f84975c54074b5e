"""Disk input/output of inference: frames, sequences, video files, run records, atomic writes.

``frames`` (image files, natural order, the one float -> uint8/uint16 converter, PNG writer), ``sequences``
(what an input path holds, where outputs go), ``video_reader`` / ``video_writer`` (PyAV), ``manifest`` (what
produced each output, for verified resume), ``atomic`` (temp file + rename). Imports neither Lightning nor the
metric packages.
"""
