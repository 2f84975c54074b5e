"""Make the bundled sample LR clip: a photograph panned by a known sub-pixel motion, degraded.

Run ``python -m mgld.assets.make_sample_clip`` (needs scikit-image, a dev dependency) to
regenerate ``mgld/assets/sample_lr/`` byte for byte. Frame ``t`` is a crop of
``skimage.data.astronaut()`` whose window moves 6 px left and 2 px up per frame in the
photograph, downscaled 4x (pixel-area average), so the scene content moves exactly
``MOTION = (+1.5, +0.5)`` LR px per frame (right, down):
``frame[t + 1](x + 1.5, y + 0.5) = frame[t](x, y)``, i.e. the forward flow from frame
``t`` to ``t + 1`` is ``(dx, dy) = (1.5, 0.5)`` everywhere (up to the degradation).
Degradation, per frame: Gaussian blur (sigma 2 px) before the downscale, Gaussian noise
(sigma 2/255, ``numpy.random.default_rng(SEED)``), JPEG at quality 80. Frames are saved
as lossless PNG ``00000000.png``... with the JPEG artefacts baked in.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

OUT_DIR = Path(__file__).resolve().parent / "sample_lr"
NUM_FRAMES = 8
LR_SIZE = (96, 64)  # width, height
SCALE = 4
MOTION = (1.5, 0.5)  # content motion per frame in LR px: (right, down)
START = (110, 50)  # top-left (x, y) of frame 0's window in the photograph
BLUR_SIGMA = 2.0  # HR px, before the downscale
NOISE_SIGMA = 2.0  # on the 0..255 scale
JPEG_QUALITY = 80
SEED = 0


def make_frames(photo: np.ndarray) -> list[np.ndarray]:
    """The degraded LR frames (``h w 3`` uint8 RGB) from an RGB photograph."""
    rng = np.random.default_rng(SEED)
    width, height = LR_SIZE[0] * SCALE, LR_SIZE[1] * SCALE
    step_x, step_y = (round(m * SCALE) for m in MOTION)  # whole HR pixels: 6, 2
    frames = []
    for t in range(NUM_FRAMES):
        x0, y0 = START[0] - t * step_x, START[1] - t * step_y  # window moves left/up, content right/down
        hr = cv2.GaussianBlur(photo[y0:y0 + height, x0:x0 + width], (0, 0), BLUR_SIGMA)
        lr = cv2.resize(hr, LR_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
        lr = np.clip(np.rint(lr + rng.normal(0.0, NOISE_SIGMA, lr.shape)), 0, 255).astype(np.uint8)
        ok, jpeg = cv2.imencode(".jpg", lr[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        frames.append(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1])
    return frames


def main() -> None:
    from skimage.data import astronaut

    from mgld.io.frames import write_png

    for t, frame in enumerate(make_frames(astronaut())):
        write_png(OUT_DIR / f"{t:08d}.png", frame, compression=9)
    total = sum(p.stat().st_size for p in OUT_DIR.glob("*.png"))
    print(f"{NUM_FRAMES} frames {LR_SIZE[0]}x{LR_SIZE[1]} in {OUT_DIR} ({total} bytes)")


if __name__ == "__main__":
    main()
