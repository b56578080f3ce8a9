#!/usr/bin/env bash
# One script for a lent GPU machine: the GPU tests, then every benchmark's GPU section. Each step is
# time-boxed so the whole run fits one device call (about 6 minutes; the still-unmeasured benchmarks
# first); logs go to $OUT (or ./gpu-out).
#
# The device image has its own Python with torch, numpy, scipy, h5py, sklearn, matplotlib, timm and pytest
# but no registry access: the pure-Python packages it lacks (pynwb, hdmf and their few dependencies,
# captum, pyret) travel as wheels in .whl/ (see benchmarks/RESULTS.md, "GPU runs"). Usage there:
#   bash benchmarks/gpu.sh            (from the repository root, .whl carried)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 RETINA_CODEC_QUIET=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >"$OUT/install.log" 2>&1 || echo "wheel install failed (see install.log)"
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv; $PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/gpu.txt"
STEPS=${STEPS:-bench-contributions bench-sta gpu-tests bench-sae bench-training bench-openretina}
step() {
  local name=$1 limit=$2; shift 2
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "rc=$rc after $((SECONDS - t0)) s" >>"$OUT/$name.log"
  grep -v '^\s*$' "$OUT/$name.log" | tail -n "${TAIL:-40}"
}
TAIL=60 step bench-contributions ${CONTRIB_LIMIT:-150} $PY benchmarks/bench_contributions.py --device cuda --profile ${CONTRIB_ARGS:-}
TAIL=25 step bench-sta 60 $PY benchmarks/bench_sta.py ${STA_ARGS:---gpu-only --irf-batch 128 --repeats 3}
TAIL=8 step gpu-tests 100 $PY -m pytest -q -p no:cacheprovider -m gpu -x tests/models/test_models.py tests/models/test_fit.py \
  tests/contributions/test_contributions_fast.py tests/modes/test_modes_fast_paths.py ${GPU_TESTS:-}
TAIL=40 step bench-sae 80 $PY benchmarks/bench_sae.py ${SAE_ARGS:---gpu-only}
TAIL=10 step bench-training 30 $PY benchmarks/bench_training.py --device cuda
# an openretina core-readout model of the BN-CNN's size class (needs openretina + lightning + hydra in .whl/)
if $PY -c "import openretina, lightning" >/dev/null 2>&1; then
  TAIL=8 step bench-openretina 60 $PY benchmarks/bench_openretina.py --device cuda
else
  echo "== bench-openretina skipped: openretina / lightning not importable on this machine (add their wheels to .whl/)"
fi
echo "== done in $SECONDS s"
