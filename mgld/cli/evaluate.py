"""Evaluate video SR outputs: full-reference, no-reference and temporal metrics (metric definitions: mgld/metrics.py).

    mgld evaluate --pred mgld=out/mgld --pred bicubic=out/bicubic --gt data/REDS4/GT \
        --out reports/reds4 --profile-row 100

Writes per_frame.csv, per_sequence.csv, report.json, table.md, plots/<seq>.png (and profiles/<seq>_rowN.png) to
--out, and prints the Markdown table. Metrics whose weights are not cached locally are reported as skipped.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def parse_pred(text: str) -> tuple[str, str]:
    name, sep, root = text.partition("=")
    return (name, root) if sep else (Path(text).name, text)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", action="append", required=True, metavar="[NAME=]ROOT",
                        help="folder of output sequences (one sub-folder per sequence); repeat for several "
                             "methods, one table row each; NAME defaults to the folder name")
    parser.add_argument("--gt", metavar="ROOT", help="folder of ground-truth sequences; frames are matched by "
                        "file stem. Without it only no-reference metrics and E*warp are computed")
    parser.add_argument("--metrics", default=None,  # names resolved in main(): --help must not import torch
                        help="comma-separated metric names, in table order (default: the standard suite, "
                             "DEFAULT_METRICS of mgld/eval/metrics.py); an unknown name lists the known ones")
    parser.add_argument("--out", metavar="DIR", help="report folder (default: no files, table printed only)")
    parser.add_argument("--crop-border", type=int, default=0, metavar="PX",
                        help="pixels removed on each side for PSNR/SSIM (default: %(default)s)")
    parser.add_argument("--y-channel", action="store_true", help="PSNR/SSIM on the Y channel instead of RGB")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ... "
                        "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per batch for network metrics "
                        "(default: %(default)s)")
    parser.add_argument("--flow", choices=("auto", "raft", "dis"), default="auto",
                        help="optical flow for E*warp: auto = RAFT when its weights are cached, else OpenCV DIS "
                             "(default: %(default)s)")
    parser.add_argument("--raft-weights", metavar="FILE", help="RAFT weights for E*warp (torchvision raft_large "
                        "or raft-things.pth); default: torch hub cache, then mgld's official folder")
    parser.add_argument("--warp-flow-from", choices=("pred", "gt"), default="pred",
                        help="frames the E*warp flow and occlusion masks are estimated on (default: %(default)s)")
    parser.add_argument("--profile-row", type=int, metavar="N", help="write temporal profiles (x-t slices) of "
                        "image row N for every sequence, GT and methods side by side (needs --out)")
    parser.add_argument("--profile-col", type=int, metavar="N", help="same, for image column N (y-t slices)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from mgld.eval import metrics
    from mgld.eval.evaluation import EvalSettings, evaluate, markdown_table, write_pictures, write_report

    if args.metrics is None:
        args.metrics = ",".join(metrics.DEFAULT_METRICS)
    preds = dict(parse_pred(p) for p in args.pred)
    if len(preds) != len(args.pred):
        raise SystemExit("error: two --pred share a name; use NAME=ROOT")
    if (args.profile_row is not None or args.profile_col is not None) and not args.out:
        raise SystemExit("error: --profile-row/--profile-col need --out")
    settings = EvalSettings(
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()), crop_border=args.crop_border,
        y_channel=args.y_channel, device=args.device, batch_size=args.batch_size, flow=args.flow,
        flow_from=args.warp_flow_from, raft_weights=args.raft_weights)
    try:
        report = evaluate(preds, args.gt, settings, progress=not args.quiet)
    except (ValueError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    print(markdown_table(report))
    if args.out:
        files = write_report(report, args.out)
        pictures = write_pictures(report, preds, args.gt, args.out, args.profile_row, args.profile_col)
        print(f"report: {files['table'].parent} ({len(files)} files, {len(pictures)} pictures)")
    return 0

