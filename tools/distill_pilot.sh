#!/usr/bin/env bash
# The distillation comparison on the built-in synthetic identities (docs/distillation.md):
# a teacher (20 minutes), then the same MobileFaceNet student from scratch and distilled from
# that teacher (8 minutes each), one after the other on this machine. Prints each run's report.
# Usage: tools/distill_pilot.sh [OUT]   (default runs/distill)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/distill}
for run in teacher student student_distilled; do
  if [ ! -f "$out/$run/report.json" ]; then
    /usr/bin/time -f "$run: %e s wall" cargo run --quiet -p arcface-cli -- train \
      --config "configs/distill/$run.toml" --out "$out/$run" --json > "$out.$run.json" || exit 1
  fi
  echo "== $run"; cat "$out/$run/report.json" | head -c 2000; echo
done
