#!/usr/bin/env bash
# Create .venv at the repo root with the pinned stack and tinyexport installed (editable).
#
# Idempotent: a stamp of the lock's hash makes a second run a no-op. Never pulls CUDA wheels on a
# CPU machine: every package is installed with --no-deps from requirements/lock.txt, and torch comes
# from the machine's CPU wheel (pip find-links) unless TINYEXPORT_TORCH=keep, which leaves a torch you
# installed yourself (e.g. the CUDA 2.13.0 build on a GPU machine) in place.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
TORCH_MODE="${TINYEXPORT_TORCH:-cpu}"   # cpu | keep
STAMP=.venv/.tinyexport-setup
want="$(cat requirements/lock.txt pyproject.toml setup.py scripts/setup.sh | sha256sum | cut -d' ' -f1)-$TORCH_MODE"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps)

if [ "$TORCH_MODE" = "cpu" ]; then
  # The CPU build is a local wheel with version 2.13.0+cpu; the ==2.13.0 pin accepts it.
  "${PIP[@]}" "torch==2.13.0"
elif ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: TINYEXPORT_TORCH=keep but .venv has no torch; install your CUDA torch 2.13.0 first" >&2
  exit 2
fi
"${PIP[@]}" -r requirements/lock.txt
"${PIP[@]}" --no-build-isolation -e .

# Fashion-MNIST (real images, IDX files) for the quickstart and benchmarks; tests fall back to
# scikit-learn digits and synthetic data when it is missing.
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
      || echo "setup: could not install dataset-fashion-mnist (optional)" >&2
  else
    echo "setup: dataset-fashion-mnist not installed (optional; needs root: apt-get install dataset-fashion-mnist)" >&2
  fi
fi
echo "$want" > "$STAMP"
