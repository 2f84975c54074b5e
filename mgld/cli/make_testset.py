"""Make a deterministic synthetic LR test set with the RealBasicVSR degradation (docs/training.md §2).

    mgld make-testset --hr data/REDS4/GT --out data/REDS4/LR_rbv --seed 0

Each HR sequence is degraded as one clip with a generator seeded by (--seed, sequence name), so the same
inputs and seed give the same bytes, and adding a sequence does not change the others. LR frames keep the
HR file stems (PNG); OUT/manifest.json records the seed, the configuration, library versions and every
sampled parameter per sequence.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hr", required=True, metavar="ROOT", help="folder of HR sequences (one sub-folder "
                        "each); frame sides must be multiples of --scale")
    parser.add_argument("--out", required=True, metavar="ROOT", help="folder for the LR sequences and manifest")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default: %(default)s)")
    parser.add_argument("--scale", type=int, default=4, help="downscaling factor of the final resize "
                        "(default: %(default)s)")
    parser.add_argument("--synthetic-hr", action="store_true", help="first write synthetic HR sequences to "
                        "--hr: scikit-image photographs panned by a known motion (needs scikit-image)")
    parser.add_argument("--num-frames", type=int, default=10, help="frames per synthetic sequence "
                        "(default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="side of the synthetic HR frames "
                        "(default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # heavy imports (PyAV, OpenCV, torch) after parsing, so that --help is instant
    from mgld.data.degradations import DegradationConfig, FinalConfig, RealBasicVSRDegradation
    from mgld.eval.testset import make_testset, write_synthetic_hr

    if args.synthetic_hr:
        names = write_synthetic_hr(args.hr, args.num_frames, (args.size, args.size))
        print(f"synthetic HR: {', '.join(names)} -> {args.hr}")
    degrade = RealBasicVSRDegradation(DegradationConfig(final=FinalConfig(scale=args.scale)))
    manifest = make_testset(args.hr, args.out, args.seed, degrade, progress=not args.quiet)  # errors: cli/_errors.py
    print(f"LR test set: {Path(args.out)} (manifest {manifest})")
    return 0

