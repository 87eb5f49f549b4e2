#!/usr/bin/env bash
# Training-step throughput side by side (docs/performance.md): our flex step (benches/train_step.rs)
# and PyTorch eager's (tools/bench_peers_train.py), same models, batch, loss and optimiser, one run,
# on an otherwise idle machine.
# Usage: PEER_PYTHON=/path/to/venv/bin/python tools/bench_train.sh [models] [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
models="${1:-r18,r50,mbf}"
steps="${2:-3}"
cargo bench -p arcface-benches --bench train_step -- "$models" "$steps"
"${PEER_PYTHON:-python3}" tools/bench_peers_train.py "$models" "$steps"
