"""Bicubic x4 baseline: upscale every LR frame with OpenCV INTER_CUBIC, keeping the folder layout and file stems.

    mgld bicubic --lr data/REDS4/LR_rbv --out out/bicubic

The result is a method folder for mgld evaluate (--pred bicubic=out/bicubic), so every table has a
reference row.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", required=True, metavar="ROOT", help="folder of LR sequences")
    parser.add_argument("--out", required=True, metavar="ROOT", help="folder for the upscaled sequences")
    parser.add_argument("--scale", type=int, default=4, help="upscaling factor (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error(f"--scale {args.scale}: must be >= 1")
    from mgld.eval.testset import upscale_bicubic  # heavy (cv2, torch): after parsing, so --help is instant

    names = upscale_bicubic(args.lr, args.out, args.scale)  # bad input: one line, exit 1 (cli/_errors.py)
    print(f"bicubic x{args.scale}: {len(names)} sequences -> {args.out}")
    return 0

