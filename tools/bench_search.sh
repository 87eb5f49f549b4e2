#!/usr/bin/env bash
# 1:N search side by side for docs/performance.md: our exact index (f32, f16, int8) and IVF
# (tools: benches/search_1m.rs) and faiss IndexFlatIP / numpy (../shared/peers/bench_search.py),
# on the same shape (1,000,000 x 512 random normalised vectors, top-10, 2 threads), one after the
# other on an otherwise idle machine.
# Usage: PEER_PYTHON=/path/to/venv/bin/python tools/bench_search.sh [--n 1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-target/bench_search}
mkdir -p "$WORK"
cargo build --release -p arcface-benches --bin search-bench
target/release/search-bench "$@" > "$WORK/ours.json"
PEERS=${PEERS:-../shared/peers}
PEERS_RESULTS="$WORK" "${PEER_PYTHON:-python3}" "$PEERS/bench_search.py" --no-hnsw --out faiss.json "$@" >&2
cat "$WORK/ours.json" "$WORK/faiss.json"
