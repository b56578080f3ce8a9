#!/usr/bin/env bash
# One script for a lent GPU machine: GPU tests, then every benchmark's GPU section, then (if time is left)
# the full-size fit. Each step is time-boxed so the whole run fits one device call; logs go to $OUT (or
# ./gpu-out). Usage on the device: bash benchmarks/gpu.sh   (needs the repo's .venv or installs one)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv && .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 -e ".[test]" >"$OUT/install.log" 2>&1
fi
PY=.venv/bin/python
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
step() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; echo "rc=$?" >>"$OUT/$name.log"; tail -25 "$OUT/$name.log"; }
step gpu-tests 120 $PY -m pytest -q -m gpu -x
step bench-contributions 150 $PY benchmarks/bench_contributions.py --device cuda
step bench-sae 60 $PY benchmarks/bench_sae.py --skip-retina
step bench-sta 60 $PY benchmarks/bench_sta.py --irf --skip-memory
step bench-training 40 $PY benchmarks/bench_training.py --device cuda
