#!/usr/bin/env bash
# The prepared GPU check of issue 14: the NetAug step table + whole-loop images/s
# (benchmarks/bench_netaug.py --profile speed) on an otherwise idle GPU first, then the `gpu` tests
# (tests/train/test_gpu.py) and, with --accuracy, the accuracy profile (NetAug vs baseline,
# fp32 top-1; no int8 column without TensorFlow) side by side. Needs only torch, torchvision,
# numpy, pyyaml, tqdm, pytest and this checkout (no TensorFlow, no network, no `pip install -e .`):
# a temporary folder maps the stage folders onto the `tinyexport` namespace as setup.py does
# (core/ -> tinyexport, train/ -> tinyexport.train, ...) and goes on PYTHONPATH.
# Budget: about 8 minutes on one H100/H200 with --accuracy, 5 without.
#
# --netaug-accuracy is issue 20's GPU protocol, run alone and before any other GPU work: NetAug vs
# baseline on all 60k Fashion-MNIST images, 32 px, 25 epochs, batch 512, 2 seeds, baseline peak LR
# {0.1, 0.2} and NetAug {0.05, 0.1} (warmup from peak / 16), four runs at once on the one GPU.
# Runs are seed-major and the results are written after every run; no run starts after 7 minutes
# and the whole protocol stops at 13, so a slow card still leaves seed 0 of every LR.
#
#   bash scripts/gpu_check.sh [--accuracy]    # CUDA
#   bash scripts/gpu_check.sh --netaug-accuracy   # CUDA, ~13 min: the NetAug LR protocol only
#   bash scripts/gpu_check.sh --device cpu    # this check's plumbing on a CPU machine (GPU parts skip)
#
# LOG_DIR=DIR keeps the logs and result files (default: a temporary folder, removed at the end).
set -euo pipefail
DEVICE=cuda
ACCURACY=0
NETAUG_ACCURACY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="${2:?--device needs cuda or cpu}"; shift 2 ;;
    --accuracy) ACCURACY=1; shift ;;
    --netaug-accuracy) NETAUG_ACCURACY=1; shift ;;
    *) echo "unknown argument $1 (expected --device cuda|cpu, --accuracy, --netaug-accuracy)" >&2
       exit 2 ;;
  esac
done
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
LOGS="${LOG_DIR:-$TMP/logs}"
mkdir -p "$TMP/path/tinyexport" "$LOGS"
for entry in "$ROOT"/core/*; do ln -s "$entry" "$TMP/path/tinyexport/"; done
for stage in train export quantize firmware_eval benchmarks; do
  ln -s "$ROOT/$stage" "$TMP/path/tinyexport/$stage"
done
export PYTHONPATH="$TMP/path${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cd "$TMP"   # not the repo root: `train` must not import as a second top-level package

if [[ "$DEVICE" == cuda ]]; then
  SPEED=(--device cuda --profile speed --steps 5 --cli-steps 30 --workers 8)
  ACC=(--device cuda --profile accuracy --no-int8)
  TEST_LIMIT=330; SPEED_LIMIT=180; ACC_LIMIT=340
else
  SPEED=(--device cpu --profile speed --batch-size 4 --resolution 32 --steps 1 --cli-steps 1
         --cli-data synthetic:64)
  ACC=(--device cpu --profile accuracy --no-int8 --seeds 0 --epochs 2 --train-images 256
       --eval-images 128 --batch-size 32)
  TEST_LIMIT=300; SPEED_LIMIT=300; ACC_LIMIT=300
fi

if [[ $NETAUG_ACCURACY == 1 ]]; then
  if [[ "$DEVICE" == cuda ]]; then
    PROTOCOL=(--device cuda --profile accuracy --no-int8 --jobs 4 --budget-s 420)
    PROTOCOL_LIMIT=780
  else
    PROTOCOL=(--device cpu --profile accuracy --no-int8 --jobs 2 --epochs 2
              --train-images 256 --eval-images 128 --batch-size 32)
    PROTOCOL_LIMIT=300
  fi
  set +e
  timeout -k 15 "$PROTOCOL_LIMIT" "$PY" -m tinyexport.benchmarks.bench_netaug "${PROTOCOL[@]}" \
    --results-dir "$LOGS" > "$LOGS/netaug_accuracy.txt" 2> "$LOGS/netaug_accuracy.log"
  PROTOCOL_RC=$?
  set -e
  "$PY" -c "import torch; print(f'torch {torch.__version__}, device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU')"
  echo "bench_netaug ${PROTOCOL[*]} (rc $PROTOCOL_RC; 124: stopped at the limit, results so far below)"
  cat "$LOGS"/netaug_accuracy_*_results.md 2>/dev/null || tail -20 "$LOGS/netaug_accuracy.log"
  if [[ "$DEVICE" == cuda ]]; then
    cp "$LOGS"/netaug_accuracy_cuda_results.* "$ROOT/benchmarks/results/" 2>/dev/null || true
  fi
  [[ $PROTOCOL_RC == 0 || $PROTOCOL_RC == 124 ]] && exit 0 || exit 1
fi

set +e
timeout "$SPEED_LIMIT" "$PY" -m tinyexport.benchmarks.bench_netaug "${SPEED[@]}" \
  --results-dir "$LOGS" > "$LOGS/speed.txt" 2> "$LOGS/speed.log"
SPEED_RC=$?
if [[ $SPEED_RC -ne 0 ]]; then tail -20 "$LOGS/speed.log"; fi
ACC_RC=skipped
if [[ $ACCURACY == 1 ]]; then
  timeout "$ACC_LIMIT" "$PY" -m tinyexport.benchmarks.bench_netaug "${ACC[@]}" \
    --results-dir "$LOGS" > "$LOGS/accuracy.txt" 2> "$LOGS/accuracy.log" &
  ACC_PID=$!
fi
timeout "$TEST_LIMIT" "$PY" -m pytest -c "$ROOT/pyproject.toml" --rootdir "$ROOT" -p no:cacheprovider \
  -q -m gpu "$ROOT/tests/train/test_gpu.py" > "$LOGS/tests.txt" 2>&1
TESTS_RC=$?
tail -25 "$LOGS/tests.txt"
if [[ $ACCURACY == 1 ]]; then
  wait "$ACC_PID"; ACC_RC=$?
  if [[ $ACC_RC -ne 0 ]]; then tail -20 "$LOGS/accuracy.log"; fi
fi
set -e
"$PY" -c "import sys, torch, tinyexport.train.cli, tinyexport.benchmarks.bench_netaug; print(f'torch {torch.__version__}, device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'); print('heavy modules loaded by the train path:', sorted(m for m in ('tensorflow', 'onnx', 'onnx2tf') if m in sys.modules) or 'none')"
echo "| check | result |"
echo "|---|---|"
echo "| gpu tests (pytest -m gpu, rc $TESTS_RC) | $(grep -E 'passed|failed|skipped|error' "$LOGS/tests.txt" | tail -1) |"
echo "| bench_netaug ${SPEED[*]} (rc $SPEED_RC) | table below |"
echo "| bench_netaug ${ACC[*]} (rc $ACC_RC) | $([[ $ACCURACY == 1 ]] && echo 'table below' || echo 'not run (--accuracy)') |"
echo
cat "$LOGS/speed.txt"
if [[ $ACCURACY == 1 ]]; then echo; cat "$LOGS/accuracy.txt"; fi
if [[ "$DEVICE" == cuda ]]; then
  cp "$LOGS"/netaug_*_cuda_results.* "$ROOT/benchmarks/results/" 2>/dev/null || true
fi
FAILED=0
for rc in "$TESTS_RC" "$SPEED_RC" "$ACC_RC"; do
  [[ "$rc" == skipped || "$rc" == 0 || "$rc" == 5 ]] || FAILED=1
done
exit $FAILED
