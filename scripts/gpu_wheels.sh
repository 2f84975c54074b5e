#!/usr/bin/env bash
# Wheels the GPU machine lacks, into .whl/ (git-ignored), for scripts/gpu_check.sh (`carry: [".whl"]`).
#
# The device machine (Python 3.12, torch 2.11, no registry) has torch, torchvision, transformers, einops,
# safetensors, huggingface_hub 1.33, OpenCV, numpy, scipy, scikit-image, PyYAML, requests, tqdm, Pillow, psutil,
# setuptools, lightning. mgld's inference also imports: diffusers (needs huggingface_hub>=1.32: present;
# importlib_metadata: carried), omegaconf (2.4 vendors antlr4: no antlr4-python3-runtime needed), basicsr (no
# wheel on PyPI: packed here from this venv's install; at import it needs nothing the machine lacks: lmdb, addict,
# yapf are only imported by its training code) and av (imported by mgld.io at the runner's import). Not carried:
# lightning-fabric (only for infer.devices > 1), lpips/pyiqa (evaluation only). pytest (+ pluggy, iniconfig: under
# 1 MB) runs the CUDA-only tests first. About 43 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
mkdir -p "$DEST"
PY=${PYTHON:-python3}
version() { $PY -c "import importlib.metadata as m; print(m.version('$1'))"; }
specs=("diffusers==$(version diffusers)" "omegaconf==$(version omegaconf)" \
       "importlib_metadata==$(version importlib_metadata)" "av==$(version av)" \
       "pytest==$(version pytest)" "pluggy==$(version pluggy)" "iniconfig==$(version iniconfig)")
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DEST" "${specs[@]}"
# basicsr: a wheel of the installed package (pure Python, py3-none-any)
$PY - "$DEST" <<'PYEOF'
import base64, hashlib, importlib.metadata as md, sys, zipfile
from pathlib import Path

dest, dist = Path(sys.argv[1]), md.distribution("basicsr")
root = Path(dist.locate_file(""))
name = f"basicsr-{dist.version}-py3-none-any.whl"
files = [f for f in dist.files if "__pycache__" not in str(f) and not str(f).endswith((".pyc", "RECORD", "INSTALLER"))
         and (root / f).is_file()]
info = f"basicsr-{dist.version}.dist-info"
records = []
with zipfile.ZipFile(dest / name, "w", zipfile.ZIP_DEFLATED) as whl:
    for f in files:
        data = (root / f).read_bytes()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        whl.writestr(str(f), data)
        records.append(f"{f},sha256={digest},{len(data)}")
    records.append(f"{info}/RECORD,,")
    whl.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
print(f"{dest / name}: {len(files)} files")
PYEOF
ls -la "$DEST"
du -sh "$DEST"
