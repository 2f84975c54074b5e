"""Cutting a long sequence into the clips the temporal layers see together (``chunk.frames`` frames each).

With ``chunk.overlap = 0`` the chunks are independent, as in the authors' script; a last partial chunk is moved
back to end at the last frame and only its new frames are written (no duplicated frames). A sequence shorter than
``chunk.frames`` is one short chunk; the pipeline repeats its last frame up to ``chunk.frames`` before sampling
(``chunk.short_sequences=repeat``, as the authors) or runs it short (``short``). With
``chunk.overlap = o > 0`` consecutive chunks share ``o`` frames: the later chunk's first frames are pulled toward
the earlier chunk's sampling trajectory (:class:`mgld.diffusion.sampling.Anchor`) and the shared output frames
are cross-faded (:meth:`Chunk.blend`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    """Frames ``[start, stop)``; ``shared_prev``/``shared_next`` frames overlap the neighbouring chunks."""

    start: int
    stop: int
    shared_prev: int
    shared_next: int
    overlap_mode: bool

    @property
    def anchored(self) -> bool:
        return self.overlap_mode and self.shared_prev > 0

    @property
    def record(self) -> int:
        """How many final frames' trajectory the next chunk anchors to."""
        return self.shared_next if self.overlap_mode else 0

    def blend(self, index: int, previous, new):
        """The output of a frame both this and the previous chunk produced: a linear cross-fade over the
        shared frames in overlap mode; the earlier result in independent mode (never written twice)."""
        if not self.anchored:
            return previous
        weight = (index - self.start + 1) / (self.shared_prev + 1)
        return previous * (1 - weight) + new * weight


def plan_chunks(num_frames: int, frames: int, overlap: int = 0) -> list[Chunk]:
    """Chunks covering ``num_frames`` frames (module docstring)."""
    if num_frames < 1:
        raise ValueError("a sequence needs at least one frame")
    if num_frames <= frames:
        return [Chunk(0, num_frames, 0, 0, overlap > 0)]
    starts = list(range(0, num_frames - frames + 1, frames - overlap))
    if starts[-1] + frames < num_frames:
        starts.append(num_frames - frames)
    chunks = []
    for i, start in enumerate(starts):
        shared_prev = starts[i - 1] + frames - start if i > 0 else 0
        shared_next = start + frames - starts[i + 1] if i + 1 < len(starts) else 0
        chunks.append(Chunk(start, start + frames, shared_prev, shared_next, overlap > 0))
    return chunks
