#!/usr/bin/env bash
# Do the widgets ever hang a papermill run? N rounds; each runs notebooks 03 and 05 at once (widgets on, seed 0,
# one CPU thread each) with a per-cell timeout, the way a batch would. Prints each run's result and time and,
# at the end, "K of 2N runs completed, H stalled or timed out". A run *stalls* when papermill reads a cell's
# reply long (> 30 s) after the kernel sent it (the cell metadata's shell.execute_reply against papermill's
# end_time): the reply sat unread until the cell timeout's poll found it. Uses the cache at $HYPERCLIP_HOME (default artifacts/):
# run the profile's notebooks once first, or the first round builds every stage.
#   scripts/stress_widgets.sh 10 quick      # 20 runs; outputs and logs in runs/stress-quick/
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
rounds=${1:?usage: scripts/stress_widgets.sh ROUNDS [PROFILE] [CELL_TIMEOUT_S]}
profile=${2:-quick}
timeout_s=${3:-900}
out=runs/stress-$profile
mkdir -p "$out"
params="{\"profile\": \"$profile\", \"seeds\": [0], \"widgets\": true, \"results_dir\": \"$PWD/$out/records\", \"figures_dir\": \"$PWD/$out/figures\"}"
completed=0; hung=0; failed=0
run_one() {   # notebook stem, round -> writes $out/<stem>-<round>.{ipynb,log,status}
  local stem=$1 round=$2 start=$SECONDS rc=0
  (cd notebooks && OMP_NUM_THREADS=1 TQDM_DISABLE=1 ../.venv/bin/python -m hyperclip_lib.papermill_cli "$stem.ipynb" \
     "../$out/$stem-$round.ipynb" -y "$params" --no-progress-bar --execution-timeout "$timeout_s") \
     > "$out/$stem-$round.log" 2>&1 || rc=$?
  echo "$rc $((SECONDS - start))" > "$out/$stem-$round.status"
}
for round in $(seq "$rounds"); do
  run_one 03_generators "$round" & a=$!
  run_one 05_hyperldm "$round" & b=$!
  wait $a $b || true
  for stem in 03_generators 05_hyperldm; do
    read -r rc seconds < "$out/$stem-$round.status"
    late=$(.venv/bin/python - "$out/$stem-$round.ipynb" <<'PY'
import datetime, json, sys
def when(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
late = []   # cells whose reply papermill read long after the kernel sent it
for i, cell in enumerate(json.load(open(sys.argv[1]))["cells"]):
    sent = cell.get("metadata", {}).get("execution", {}).get("shell.execute_reply")
    read = cell.get("metadata", {}).get("papermill", {}).get("end_time")
    if sent and read and (when(read) - when(sent)).total_seconds() > 30:
        late.append(f"cell {i}: reply sent {sent[11:19]}, read {read[11:19]}")
print("; ".join(late))
PY
)
    if [ "$rc" = 0 ] && [ -n "$late" ]; then
      hung=$((hung + 1)); echo "round $round $stem: STALLED, completed in ${seconds} s only when the cell timeout woke papermill ($late)"
    elif [ "$rc" = 0 ]; then
      completed=$((completed + 1)); echo "round $round $stem: completed in ${seconds} s"
    elif grep -q CellTimeoutError "$out/$stem-$round.log"; then
      hung=$((hung + 1)); echo "round $round $stem: TIMED OUT after ${seconds} s (a cell ran past ${timeout_s} s; see $out/$stem-$round.log)"
    else
      failed=$((failed + 1)); echo "round $round $stem: FAILED after ${seconds} s (see $out/$stem-$round.log)"
    fi
  done
done
echo "$completed of $((2 * rounds)) runs completed, $hung stalled or timed out, $failed failed otherwise"
[ "$completed" = $((2 * rounds)) ]
