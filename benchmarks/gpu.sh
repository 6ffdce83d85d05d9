#!/usr/bin/env bash
# Issue 19's GPU figures in one prepared run (about 6 minutes on an H100-class GPU), each part
# bounded by its own timeout so that one failure costs only its part:
#
#   benchmarks/gpu.sh OUT_DIR [AUTHORS_CHECKOUT]     # on the GPU machine, from the repository root
#   DRY=1 benchmarks/gpu.sh /tmp/gpu-dry /tmp/mt-musicldm   # on a CPU: tiny settings, checks the plumbing
#
# OUT_DIR receives one JSON report per part (and its stderr): the full-size architecture (random
# weights) at fp32, bf16 and bf16 compiled, each with a 10.24 s generate at the paper and fast
# presets; precision and compilation on the demo model; the demo UNet's batched throughput; our UNet
# against the authors' (needs a checkout of karchkha/mt-musicldm, never committed) at fp32 and bf16.
set -u
OUT=${1:?usage: benchmarks/gpu.sh OUT_DIR [AUTHORS_CHECKOUT]}
AUTHORS=${2:-}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"

if [ -n "${DRY:-}" ]; then  # CPU, tiny: every part runs, nothing it times means anything
  DEV=cpu; LIMIT=300
  FULL=(--small --generate-seconds 0.32 --threads 2)
  PREC=(--variants fp32,bf16 --precision-repeats 1 --threads 2)
  BATCH=(--batches 1,2 --repeats 1)
  AUTH=(--frames 8 --warmup 0 --repeats 1 --threads 2)
else
  DEV=cuda; LIMIT=120  # seven parts: the run tool allows 600 s a call, the parts most wanted first
  FULL=(--warmup 2 --repeats 5 --generate-seconds 10.24)
  PREC=(--precision-repeats 20)
  BATCH=(--batches 1,2,4,8,16,32 --repeats 20)
  AUTH=(--frames 256 --warmup 2 --repeats 5)
fi

part() {  # part NAME COMMAND...: its report in OUT/NAME.json, its stderr beside it
  local name=$1; shift
  local t0=$SECONDS
  timeout "$LIMIT" "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
  echo "$name: exit $? in $((SECONDS - t0)) s"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } > "$OUT/machine.txt"

part full-fp32 "$PY" benchmarks/sampling.py --device "$DEV" --skip accuracy "${FULL[@]}"
part full-bf16 "$PY" benchmarks/sampling.py --device "$DEV" --skip accuracy --dtype bf16 "${FULL[@]}"
part demo-batched "$PY" benchmarks/batch.py --only-unet --device "$DEV" --dtype bf16 --out /dev/stdout "${BATCH[@]}"
if [ -n "$AUTHORS" ]; then
  part authors-fp32 "$PY" benchmarks/check_against_authors.py --repo "$AUTHORS" --speed --device "$DEV" "${AUTH[@]}"
  part authors-bf16 "$PY" benchmarks/check_against_authors.py --repo "$AUTHORS" --speed --device "$DEV" --dtype bf16 "${AUTH[@]}"
fi
part demo-precision "$PY" benchmarks/sampling.py --device "$DEV" --skip forward,generate,accuracy --precision demo "${PREC[@]}"
part full-bf16-compiled "$PY" benchmarks/sampling.py --device "$DEV" --skip accuracy --dtype bf16 --compile "${FULL[@]}"
