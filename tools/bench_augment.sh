#!/usr/bin/env bash
# Side-by-side augmentation throughput for docs/performance.md: our criterion bench, then torchvision.
# Usage: PEER_PYTHON=/path/to/venv/bin/python tools/bench_augment.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p arcface-benches --bench augment -- --noplot 2>&1 | grep -E "^augment_|time:|thrpt:"
"${PEER_PYTHON:-python3}" tools/bench_peers_augment.py
