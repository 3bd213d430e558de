#!/usr/bin/env bash
# Main job: set up (as needed) and run the workbook's notebooks on the default (quick) profile.
# Extra arguments go to `hyperclip run-notebooks` (two notebooks at a time, one process per seed), e.g.
# ./run.sh --profile ci or ./run.sh --jobs 1
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
exec .venv/bin/hyperclip run-notebooks --jobs 2 "$@"
