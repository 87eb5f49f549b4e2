#!/usr/bin/env bash
# Side-by-side backbone inference timings for docs/performance.md: our criterion bench (flex, CPU) and
# the peers (PyTorch eager, ONNX Runtime) in one run, on an otherwise idle machine.
# Usage: PEER_PYTHON=/path/to/venv/bin/python tools/bench_backbones.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 datasets/fetch_real.py >/dev/null
cargo bench -p arcface-benches --bench backbones -- --noplot 2>&1 | grep -E "^backbone_forward|time:|thrpt:"
"${PEER_PYTHON:-python3}" tools/bench_peers_backbones.py
