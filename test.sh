#!/usr/bin/env bash
# Set up (as needed) and run the tests, then every notebook under nbval in the ci profile.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
# No progress bars under nbval: a flood of iopub messages can outlast nbval's fixed 5-s wait for a
# cell's last outputs on a busy machine.
export HYPERCLIP_PROFILE=ci MPLBACKEND=Agg TQDM_DISABLE=1
exec .venv/bin/python -m pytest tests --nbval-lax notebooks -p no:cacheprovider "$@"
