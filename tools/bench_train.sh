#!/usr/bin/env bash
# Training-step throughput side by side (docs/performance.md): our step (benches/train_step.rs) on
# cpu-conv's kernels, the same binary on Burn's own convolutions (CPU_CONV_KERNELS=burn), then
# PyTorch eager and torch.compile (tools/bench_peers_train.py): same models, batch, loss and
# optimiser, one run, on an otherwise idle machine.
# Our side builds in the dev profile the README's commands use (dependencies at opt-level 3 without
# debug assertions, as in release), so the bench reuses the tests' build of Burn.
# Usage: PEER_PYTHON=/path/to/venv/bin/python tools/bench_train.sh [models] [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
models="${1:-r18,r50,mbf}"
steps="${2:-3}"
bench() { cargo bench --profile dev --workspace --bench train_step -- "$models" "$steps"; }
echo "== ours (cpu-conv kernels)"
bench
echo "== ours on Burn's own convolutions (CPU_CONV_KERNELS=burn)"
CPU_CONV_KERNELS=burn bench
echo "== PyTorch"
"${PEER_PYTHON:-python3}" tools/bench_peers_train.py "$models" "$steps"
