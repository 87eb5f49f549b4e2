#!/usr/bin/env bash
# Side-by-side alignment and detection timings for docs/performance.md: our criterion benches
# (CPU) and the peers (skimage + OpenCV; the reference PyTorch RetinaFace) in one run.
# Usage: PEER_PYTHON=/path/to/venv/bin/python tools/bench_align_detect.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 datasets/fetch_real.py >/dev/null
cargo bench -p arcface-benches --bench align --bench detect -- --noplot 2>&1 | grep -E "^(align|detect)_|time:|thrpt:"
"${PEER_PYTHON:-python3}" tools/bench_peers_align.py
"${PEER_PYTHON:-python3}" tools/bench_peers_detect.py
