"""Cutting a long sequence into the clips the temporal layers see together (``chunk.frames`` frames each).

With ``chunk.overlap = 0`` the chunks are independent, as in the authors' script. The last chunk of a sequence
whose length is not a multiple of ``chunk.frames`` holds the remaining frames (``chunk.tail=repeat``, the authors:
they pad the frame list by repeating the last frame, so 32 frames end with the clip 30, 31, 31, 31, 31), or is
moved back to end at the last frame, five real frames of which only the new ones are written (``shift``). A
chunk shorter than ``chunk.frames`` (a short sequence, or such a tail) gets its last frame repeated up to
``chunk.frames`` before sampling (``chunk.short_sequences=repeat``, as the authors) or runs short (``short``).
With
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


def plan_chunks(num_frames: int, frames: int, overlap: int = 0, tail: str = "repeat") -> list[Chunk]:
    """Chunks covering ``num_frames`` frames (module docstring); ``tail`` (``repeat`` | ``shift``) places the last
    chunk of independent chunks (with ``overlap > 0`` the last chunk is always shifted back)."""
    if num_frames < 1:
        raise ValueError("a sequence needs at least one frame")
    if tail not in ("repeat", "shift"):
        raise ValueError(f"chunk.tail must be 'repeat' or 'shift', got {tail!r}")
    if num_frames <= frames:
        return [Chunk(0, num_frames, 0, 0, overlap > 0)]
    if overlap == 0 and tail == "repeat":
        return [Chunk(s, min(s + frames, num_frames), 0, 0, False) for s in range(0, num_frames, frames)]
    starts = list(range(0, num_frames - frames + 1, frames - overlap))
    if starts[-1] + frames < num_frames:
        starts.append(num_frames - frames)
    chunks = []
    for i, start in enumerate(starts):
        shared_prev = starts[i - 1] + frames - start if i > 0 else 0
        shared_next = start + frames - starts[i + 1] if i + 1 < len(starts) else 0
        chunks.append(Chunk(start, start + frames, shared_prev, shared_next, overlap > 0))
    return chunks
