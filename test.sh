#!/usr/bin/env bash
# Set up (as needed) and run the tests, then every notebook under nbval in the ci profile.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
export HYPERCLIP_PROFILE=ci MPLBACKEND=Agg
exec .venv/bin/python -m pytest tests --nbval-lax notebooks -p no:cacheprovider "$@"
