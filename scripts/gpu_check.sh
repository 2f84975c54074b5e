#!/usr/bin/env bash
# The prepared GPU check of issue 13: one short run on a lent GPU (mgld/perf/gpu_check.py says what it measures).
#
#   on the device machine:  bash scripts/gpu_check.sh            # results under $OUT (gpu_check.json, .md)
#   here, on the CPU:       bash scripts/gpu_check.sh --cpu-smoke  # tiny networks: tests the check itself
#
# The device machine has torch, transformers, einops, safetensors, OpenCV, huggingface_hub but no registry: the
# packages it lacks travel as wheels in .whl/ (git-ignored; made by scripts/gpu_wheels.sh, carried with
# `carry: [".whl"]`), installed with --no-deps into /tmp/site. Extra arguments go to mgld.perf.gpu_check
# (--budget SECONDS, --only a,b, --size HxW, --steps N).
set -euo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/out/gpu_check}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
PY=python3
if [[ " $* " != *" --cpu-smoke "* ]] && compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
  torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
$PY -m mgld.perf.gpu_check --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
