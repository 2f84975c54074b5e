#!/usr/bin/env python
"""Download the released MGLD-VSR weights with huggingface_hub and convert them once.

Files (from --repo-id, by default a public mirror of the authors' release): mgldvsr_unet.ckpt
(stage 1, ~6.7 GB), video_vae_cfw.ckpt (video VAE, ~0.8 GB) and raft-things.pth (RAFT flow).
They land in DEST/official/; the converted folder in DEST/mgld-vsr/, where mgld infer looks. Its
flow.safetensors holds the stage-1 checkpoint's own RAFT, which inference uses (as the authors' script does);
raft-things.pth is the fallback for folders without it.
Offline, or when the repo cannot be reached, it stops and says which files to put where.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mgld.weights.hub import DEFAULT_REPO_ID, OFFICIAL_FILES, download_official, mgld_home


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo-id", default=DEFAULT_REPO_ID, help="Hugging Face Hub repo (default: %(default)s)")
    parser.add_argument("--dest", type=Path, default=None,
                        help=f"weights home (default: $MGLD_HOME or {mgld_home()})")
    for role, name in OFFICIAL_FILES.items():
        parser.add_argument(f"--{role}-file", default=name, help="file name in the repo (default: %(default)s)")
    parser.add_argument("--no-convert", action="store_true", help="only download, do not convert")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    dest = args.dest or mgld_home()
    files = {role: getattr(args, f"{role}_file") for role in OFFICIAL_FILES}
    # offline or a bad checkpoint: an exception, one line and exit 1 (cli/_errors.py)
    paths = download_official(dest / "official", args.repo_id, files)
    if not args.no_convert:
        from mgld.weights.loading import convert_official

        out = convert_official(dest / "mgld-vsr", stage1=paths["stage1"], vae=paths["vae"])
        logging.info("converted weights in %s (RAFT: %s); fallback RAFT weights in %s", out,
                     "flow.safetensors" if (out / "flow.safetensors").is_file() else "none", paths["raft"])
    return 0

