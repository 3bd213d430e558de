#!/usr/bin/env bash
# Main job: set up (as needed) and run the workbook's notebooks on the default (quick) profile.
# Extra arguments go to `hyperclip run-notebooks`, e.g. ./run.sh --profile ci
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
exec .venv/bin/hyperclip run-notebooks "$@"
