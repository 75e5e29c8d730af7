#!/usr/bin/env bash
# The GPU checks in one run, for a session that is lent a GPU machine (see benchmarks/README section
# "On a GPU"). Run from the repository root: bash benchmarks/gpu_check.sh [OUTDIR]
# Packages the machine lacks can be given as wheels in .whl/ (installed into /tmp/site first).
# Each step has its own time limit, so one hang costs only its step; logs go to OUTDIR (default /tmp/gpu-check).
# STEPS=a,b runs only those steps (cuda_paths, generation, suite_demo, cli, suite_inception, suite_raddino).
# One full run took 7.5 min on an H200 (2026-11-26); the GPU figures in the README come from it.
set -u
out=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 CHEXGEN_HOME=/tmp/chexgen-home HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
step() {  # step NAME SECONDS COMMAND...
  local name=$1 secs=$2; shift 2
  [ -z "${STEPS:-}" ] || [[ ",$STEPS," == *",$name,"* ]] || return 0
  echo "=== $name ($(date +%T))"
  local t0=$SECONDS
  timeout "$secs" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  grep -v -e '%|' -e 'it/s]' -e 's/it]' "$out/$name.log" | tail -n 60
  echo "=== $name: rc=$rc in $((SECONDS - t0)) s"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
step cuda_paths 120 python3 benchmarks/cuda_paths.py --n-extract 2000
step generation 120 python3 benchmarks/generation.py --no-cpu --random-sd15 --batch-sizes 1,16 --images 8
step suite_demo 70 python3 benchmarks/suite_vs_reference.py --n 1000 --encoder demo --device cuda --repeat 2
w=/tmp/cli
step cli 110 bash -c "set -e
  python3 -m evaluators generate --model demo --pathology 'Pleural Effusion' --n 32 --seeds 0,1 --device cuda --dtype fp16 --out $w/gen
  python3 -m evaluators fidelity --real demo@train --synthetic $w/gen --device cuda --out $w/fid.json --no-store
  python3 -m evaluators privacy --train demo@train --synthetic $w/gen --device cuda --out $w/privacy.json
  python3 -m evaluators train-reid --train demo@train --out $w/reid.safetensors --backbone resnet18 --epochs 1 --pairs-per-epoch 2000 --device cuda
  python3 -m evaluators utility --train demo@train --synthetic $w/gen --test demo@test --epochs 1 --device cuda --out $w/utility.json
  ls -la $w"
step suite_inception 75 python3 benchmarks/suite_vs_reference.py --n 1000 --encoder inception-random --device cuda --repeat 1
step suite_raddino 60 python3 benchmarks/suite_vs_reference.py --n 1000 --encoder raddino-random --device cuda --dtype float16 --repeat 1
