#!/usr/bin/env bash
# Side-by-side margin-head timings for docs/performance.md: our criterion bench (flex, CPU) and
# PyTorch eager on the same shapes, in one run, on an otherwise idle machine.
# Usage: PEER_PYTHON=/path/to/venv/bin/python tools/bench_heads.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p arcface-benches --bench heads -- --noplot 2>&1 | grep -E "^head_|time:"
"${PEER_PYTHON:-python3}" tools/bench_peers_heads.py
