#!/usr/bin/env bash
# The prepared GPU check of issue 13: one short run on a lent GPU (mgld/perf/gpu_check.py says what it measures).
#
#   on the device machine:  bash scripts/gpu_check.sh            # results under $OUT (gpu_check.json, .md)
#   here, on the CPU:       bash scripts/gpu_check.sh --cpu-smoke  # tiny networks: tests the check itself
#
# The device machine has torch, transformers, einops, safetensors, OpenCV, huggingface_hub but no registry: the
# packages it lacks travel as wheels in .whl/ (git-ignored; made by scripts/gpu_wheels.sh, carried with
# `carry: [".whl"]`), installed with --no-deps into /tmp/site. Extra arguments go to mgld.perf.gpu_check
# (--budget SECONDS, --only a,b, --size HxW, --steps N). On a GPU, when pytest is there, the four CUDA-only tests
# run first (60 s at most; $OUT/cuda_tests.log).
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
if [[ " $* " != *" --cpu-smoke "* ]] && $PY -c "import pytest" 2> /dev/null; then
  # the CUDA-only tests (skipped on CPU machines): no host sync in the step loop, device noise = CPU streams, fp16
  timeout 60 $PY -m pytest -q -p no:cacheprovider --basetemp=/tmp/pt-gpu -o addopts="" \
    tests/test_perf_wiring.py::test_no_host_synchronisation_in_the_step_loop \
    tests/test_batching.py::test_no_host_synchronisation_in_the_tiled_prediction \
    tests/test_clip_noise.py::test_clip_noise_on_the_device_equals_the_cpu_streams \
    tests/test_pipeline.py::test_cuda_fp16_authors_noise_and_flow_under_autocast 2>&1 | tee "$OUT/cuda_tests.log" \
    || echo "CUDA tests: failed or timed out (see cuda_tests.log)"
fi
$PY -m mgld.perf.gpu_check --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
