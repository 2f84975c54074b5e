#!/usr/bin/env python
"""Check this implementation against oracle fixtures computed with the authors' code.

Prints one row per compared output (max abs error, relative error ||out - ref|| / ||ref||) and
exits with status 1 when any relative error exceeds the tolerance (fp32, CPU).

    mgld parity tests/fixtures/oracle
    mgld parity tests/fixtures/oracle --only unet.pt,vae.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

# mgld.parity.DEFAULT_TOLERANCE, written out so that --help does not import torch (a test keeps them equal)
DEFAULT_TOLERANCE = 1e-4


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture_dir", type=Path, help="folder with config.json and the fixture files")
    parser.add_argument("--only", default=None,
                        help="comma-separated checks to run, e.g. unet.pt,guidance.pt:p_sample_canvas "
                             "(default: every check whose fixture files are present)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="largest accepted relative error (default: %(default)g)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    from mgld.parity import CHECKS, checked_files, format_table, run_checks

    only = [s.strip() for s in args.only.split(",")] if args.only else None
    # a missing folder or fixture, an unknown --only check: an exception, one line and exit 1 (cli/_errors.py)
    results = run_checks(args.fixture_dir, only)
    if not results:
        raise FileNotFoundError(f"{args.fixture_dir} holds none of the known fixtures {sorted(CHECKS)}")
    print(format_table(results, args.tolerance))
    unchecked = sorted(
        p.name for p in args.fixture_dir.iterdir()
        if p.suffix in (".pt", ".json") and p.name != "config.json" and p.name not in checked_files(results)
    )
    if unchecked and not only:
        print(f"\nnot checked (no check registered): {', '.join(unchecked)}")
    rows = [r for fixture_rows in results.values() for r in fixture_rows]
    failed = [r.name for r in rows if not r.passed(args.tolerance)]
    if args.json:
        args.json.write_text(json.dumps({k: [asdict(r) for r in v] for k, v in results.items()}, indent=1))
    print(f"\n{len(rows) - len(failed)}/{len(rows)} outputs within rel err {args.tolerance:g}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0

