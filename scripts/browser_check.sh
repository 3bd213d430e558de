#!/usr/bin/env bash
# Widgets in a real browser: temporary copies of notebooks 03 and 05 run in JupyterLab under headless
# Chromium; the traversal and γ sliders are moved and their readout and plot must change.
#   scripts/browser_check.sh [PROFILE]   (default ci; e.g. `quick` over a finished quick run's $HYPERCLIP_HOME
#                                         to time the redraws at quick size)
# Installs what it needs (Debian chromium, npm playwright-core); screenshots go to runs/browser/.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-ci}
source scripts/setup.sh
if [ ! -x /usr/bin/chromium ]; then
  echo "[browser] installing Debian's chromium"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd=sudo
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq chromium > /dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "[browser] installing playwright-core (package-lock.json)"
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi

out=runs/browser
rm -rf "$out" && mkdir -p "$out"
work=$(mktemp -d)
mkdir -p "$work/notebooks"
cp notebooks/03_generators.ipynb notebooks/05_hyperldm.ipynb "$work/notebooks/"
port=$(.venv/bin/python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
token=$(.venv/bin/python -c "import secrets; print(secrets.token_hex(16))")
# The kernel must draw inline: no Agg backend inherited from the test command.
env -u MPLBACKEND HYPERCLIP_PROFILE="$profile" TQDM_DISABLE=1 \
  .venv/bin/jupyter lab --no-browser --ip 127.0.0.1 --port "$port" --ServerApp.token="$token" \
  --ServerApp.root_dir="$work" --LabApp.expose_app_in_browser=True --allow-root > "$out/jupyterlab.log" 2>&1 &
lab=$!
trap 'kill $lab 2>/dev/null; wait $lab 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$port/api?token=$token" > /dev/null && break
  kill -0 $lab 2>/dev/null || { echo "[browser] JupyterLab exited; see $out/jupyterlab.log" >&2; exit 1; }
  sleep 1
done
# Run All may build stages a cache lacks: ci's in seconds, a cold quick one in hours.
run_timeout_ms=$([ "$profile" = ci ] && echo 300000 || echo 3600000)
LAB_URL="http://127.0.0.1:$port" TOKEN="$token" OUT="$out" RUN_TIMEOUT_MS=${RUN_TIMEOUT_MS:-$run_timeout_ms} \
  node tests/browser/widgets.mjs
echo "[browser] passed ($profile); screenshots and results.json in $out/"
