#!/usr/bin/env bash
# The runs behind docs/continual.md's tables: round 0 on people A, a full retrain on A+B, round 1
# (+B) with each option, then rounds 2 and 3 (+C, +D) and the measurements of the full retrain
# and of the last round. Each run's wall time (process start to end) goes to
# runs/continual/times.tsv. Usage: tools/continual_runs.sh [run names...] (default: all, in order).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p arcface-cli
bin=target/debug/arcface
mkdir -p runs/continual
declare -A config=(
  [a]=a [full]=full [b-imprint]=add_b_imprint [b-head]=add_b_head [b-last]=add_b_last
  [b-replay]=add_b_replay [b-herding]=add_b_herding [b-longer]=add_b_longer [b-two]=add_b_two [b-three]=add_b_three [b-distill]=add_b_distill [b-all]=add_b_all [c]=add_c [d]=add_d
  [eval-full]=eval_full [eval-d-on-a]=eval_d_on_a
)
order=(a full b-imprint b-head b-last b-replay b-herding b-longer b-two b-three b-distill b-all c d eval-full eval-d-on-a)
for run in "${@:-${order[@]}}"; do
  out=runs/continual/$run
  rm -rf "$out"
  start=$(date +%s.%N)
  "$bin" train --config "configs/continual/${config[$run]}.toml" --out "$out" --json > "$out.json" 2> "$out.log"
  end=$(date +%s.%N)
  printf '%s\t%.1f\n' "$run" "$(echo "$end - $start" | bc)" | tee -a runs/continual/times.tsv
done
