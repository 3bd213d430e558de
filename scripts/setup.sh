#!/usr/bin/env bash
# Create or update .venv from requirements.txt (the exact pins) and install this project into it.
# Idempotent: re-installs only when requirements.txt or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.hyperclip-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "[setup] installing pinned requirements into .venv (first time: several minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  echo "$stamp" > .venv/.hyperclip-stamp
fi
export HF_HUB_OFFLINE=1
