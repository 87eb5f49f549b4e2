#!/usr/bin/env bash
# The runs behind docs/multimodal.md's table: every row trains the same budget (the default
# `arcface multimodal` run: 250 synthetic identities x 20 images, half at night, 2 epochs of
# batch 64) and is verified on 300 + 300 held-out pairs by day, at night and with depth missing.
# Each row's report goes to runs/multimodal/<row>.json, its wall time (process start to end) to
# runs/multimodal/times.tsv. Usage: tools/multimodal_runs.sh [rows...] (default: all, in order).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p arcface-cli
bin=target/debug/arcface
mkdir -p runs/multimodal
declare -A args=(
  [rgb]="--model early --modalities rgb"
  [nir]="--model early --modalities nir"
  [depth]="--model early --modalities depth"
  [early]="--model early --modalities rgb,nir,depth --dropout 0.25"
  [late]="--model late --modalities rgb,nir,depth --dropout 0.25"
  [late-weighted]="--model late-weighted --modalities rgb,nir,depth --dropout 0.25"
  [rgb-nir]="--model late --modalities rgb,nir"
  [early-drop-depth]="--model early --modalities rgb,nir,depth --dropout 0.5 --drop depth"
  [late-drop-depth]="--model late --modalities rgb,nir,depth --dropout 0.5 --drop depth"
  [late-weighted-drop-depth]="--model late-weighted --modalities rgb,nir,depth --dropout 0.5 --drop depth"
  [late-drop-depth-75]="--model late --modalities rgb,nir,depth --dropout 0.75 --drop depth"
)
order=(rgb nir depth early late rgb-nir late-weighted early-drop-depth late-drop-depth late-weighted-drop-depth late-drop-depth-75)
# The seed table's rows: the same runs with other seeds.
for seed in 1 2; do
  args[rgb-seed$seed]="${args[rgb]} --seed $seed"
  args[rgb-nir-seed$seed]="${args[rgb-nir]} --seed $seed"
  args[late-drop-depth-seed$seed]="${args[late-drop-depth]} --seed $seed"
  order+=(rgb-seed$seed rgb-nir-seed$seed late-drop-depth-seed$seed)
done
for row in "${@:-${order[@]}}"; do
  out=runs/multimodal/$row
  rm -rf "$out"
  start=$(date +%s.%N)
  # shellcheck disable=SC2086 # the arguments are words
  "$bin" multimodal ${args[$row]} --out "$out" --json > "$out.json" 2> "$out.log"
  end=$(date +%s.%N)
  printf '%s\t%.1f\n' "$row" "$(echo "$end - $start" | bc)" | tee -a runs/multimodal/times.tsv
done
