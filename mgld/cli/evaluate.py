"""Evaluate video SR outputs: full-reference, no-reference and temporal metrics (definitions: mgld/eval/metrics.py).

    mgld evaluate --pred mgld=out/mgld --pred bicubic=out/bicubic --gt data/REDS4/GT \\
        --out reports/reds4 --profile-row 100

Writes per_frame.csv, per_sequence.csv, report.json, table.md, plots/<seq>.png (and profiles/<seq>_rowN.png) to
--out, and prints the Markdown table. Every folder, frame size and option is checked before anything is
computed. Metrics whose weights are not cached locally are reported as skipped; a metric that fails on a
sequence is reported (which metric, which sequence, why) and the rest is still computed and written; the exit
status is then 1.

E*warp is Lai et al.'s warping error as their reference code computes it: flow and occlusion (forward-backward
check with squared norms, plus the motion-boundary test) on the flow source chosen by --warp-flow-from, squared
error averaged per channel over the non-occluded pixels, mean over pairs, then over sequences, x 1e3.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mgld.eval.registry import DEFAULT_METRICS, FLOW_METHODS, FLOW_SOURCES, METRICS


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
    parser.add_argument("--lr", metavar="ROOT", help="folder of the LR input sequences (same names and stems); "
                        "needed by --warp-flow-from lr")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help=f"comma-separated, in table order; known: {','.join(METRICS)} "
                             "(default: %(default)s)")
    parser.add_argument("--out", metavar="DIR", help="report folder (default: no files, table printed only)")
    parser.add_argument("--crop-border", type=int, default=0, metavar="PX",
                        help="pixels removed on each side for PSNR/SSIM (default: %(default)s)")
    parser.add_argument("--y-channel", action="store_true", help="PSNR/SSIM on the Y channel instead of RGB")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ... "
                        "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per batch for network metrics "
                        "(default: %(default)s)")
    parser.add_argument("--flow", choices=FLOW_METHODS, default="auto",
                        help="optical flow for E*warp: auto = RAFT when its weights are local, else OpenCV DIS "
                             "(default: %(default)s)")
    parser.add_argument("--raft-weights", metavar="FILE", help="RAFT weights for E*warp (torchvision raft_large, "
                        "raft-things.pth, an official stage-1 .ckpt or a converted folder); default: torch hub "
                        "cache, then mgld's converted folder (flow.safetensors), then raft-things.pth")
    parser.add_argument("--warp-flow-from", choices=FLOW_SOURCES, default="pred",
                        help="frames the E*warp flow and occlusion are estimated on: pred = the evaluated frames, "
                             "gt = the GT frames (needs --gt), lr = the LR input upsampled bicubic to the "
                             "evaluated size (needs --lr); printed in the report (default: %(default)s)")
    parser.add_argument("--profile-row", type=int, metavar="N", help="write temporal profiles (x-t slices) of "
                        "image row N for every sequence, GT and methods side by side (needs --out)")
    parser.add_argument("--profile-col", type=int, metavar="N", help="same, for image column N (y-t slices)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    preds = dict(parse_pred(p) for p in args.pred)
    if len(preds) != len(args.pred):
        raise SystemExit("error: two --pred share a name; use NAME=ROOT")
    if (args.profile_row is not None or args.profile_col is not None) and not args.out:
        raise SystemExit("error: --profile-row/--profile-col need --out")
    # heavy imports after argument parsing, so that --help is instant
    from mgld.eval.evaluation import EvalSettings, evaluate, prepare
    from mgld.eval.report import (
        check_output_dir,
        check_profile,
        failure_lines,
        markdown_table,
        write_pictures,
        write_report,
    )

    settings = EvalSettings(
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()), crop_border=args.crop_border,
        y_channel=args.y_channel, device=args.device, batch_size=args.batch_size, flow=args.flow,
        flow_from=args.warp_flow_from, raft_weights=args.raft_weights)
    # everything that can be checked is checked before any metric is computed; a failure is an exception,
    # one line and exit 1 (cli/_errors.py)
    if args.out:
        try:
            check_output_dir(args.out)
        except ValueError as err:
            raise ValueError(f"--out {err}") from err
    inputs = prepare(preds, args.gt, settings, args.lr)
    check_profile(inputs, args.profile_row, args.profile_col)
    report = evaluate(preds, args.gt, settings, progress=not args.quiet, lr=args.lr, inputs=inputs)
    print(markdown_table(report))
    if args.out:
        try:
            files = write_report(report, args.out)
            pictures = write_pictures(report, preds, args.gt, args.out, args.profile_row, args.profile_col,
                                      inputs=inputs)
        except ValueError as err:
            raise ValueError(f"writing the report to {args.out}: {err}") from err
        except OSError as err:
            raise OSError(f"writing the report to {args.out}: {err}") from err
        print(f"report: {files['table'].parent} ({len(files)} files, {len(pictures)} pictures)")
    if report.failures:
        print(f"error: {len(report.failures)} metric computation(s) failed; the other results are complete:",
              file=sys.stderr)
        print("\n".join(failure_lines(report)), file=sys.stderr)
        return 1
    return 0
