#!/usr/bin/env bash
# Set up (as needed) and run the tests, every notebook under nbval in the ci profile, then the widgets in a
# real browser (scripts/browser_check.sh; HYPERCLIP_SKIP_BROWSER=1 leaves it out).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
# No progress bars under nbval: a flood of iopub messages can outlast nbval's fixed 5-s wait for a
# cell's last outputs on a busy machine.
# CPU only, as on the machines CI runs on: devices default to auto, and a GPU would change every number.
export HYPERCLIP_PROFILE=ci MPLBACKEND=Agg TQDM_DISABLE=1 CUDA_VISIBLE_DEVICES=""
.venv/bin/python -m pytest tests --nbval-lax notebooks -p no:cacheprovider "$@"
if [ "${HYPERCLIP_SKIP_BROWSER:-0}" != 1 ]; then
  scripts/browser_check.sh
fi
