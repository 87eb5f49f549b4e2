#!/usr/bin/env bash
# Side-by-side SCRFD and export timings for docs/performance.md, in one run: our criterion
# benches (SCRFD-500M on flex, export time, the exported model's batch-1 latency on our runtime)
# and ONNX Runtime on the same inputs (insightface's SCRFD, the exported w600k_mbf).
# Usage: tools/bench_export.sh   (ONNX Runtime from datasets/cache/venv, which fetch_real.py makes)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 datasets/fetch_real.py >/dev/null
out=$(mktemp -d)
cargo run --quiet --release -p arcface-cli -- export --model datasets/cache/models/w600k_mbf.onnx \
  --format onnx --out "$out/w600k_mbf.onnx"
cargo bench -p arcface-benches --bench detect --bench export -- --noplot 2>&1 | grep -E "^(detect|export|embed)_|time:"
datasets/cache/venv/bin/python tools/bench_peers_export.py "$out/w600k_mbf.onnx"
rm -rf "$out"
