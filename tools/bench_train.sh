#!/usr/bin/env bash
# Training-step throughput and batch-1 embedding side by side (docs/performance.md): our step
# (benches/train_step.rs) on cpu-conv's kernels, the same binary on Burn's own convolutions
# (CPU_CONV_KERNELS=burn), on LibTorch when tools/setup_libtorch.sh has made its venv (LibTorch's
# native convolution backward, then Burn's generic one), then PyTorch eager and torch.compile
# (tools/bench_peers_train.py): same models, batch, loss and optimiser, one run, on an otherwise
# idle machine. With the LibTorch venv, PyTorch is that venv's (the same LibTorch 2.9.0).
# Our side builds in the dev profile the README's commands use (dependencies at opt-level 3 without
# debug assertions, as in release), so the bench reuses the tests' build of Burn.
# Usage: [PEER_PYTHON=/path/to/venv/bin/python] [BENCH_TCH_DEVICE=tch-cuda] tools/bench_train.sh [models] [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
models="${1:-r18,r50,mbf}"
steps="${2:-3}"
bench() { cargo bench --profile dev --workspace --bench train_step "$@" -- "$models" "$steps"; }
echo "== ours (cpu-conv kernels)"
bench
echo "== ours on Burn's own convolutions (CPU_CONV_KERNELS=burn)"
CPU_CONV_KERNELS=burn bench
if env_lines="$(tools/setup_libtorch.sh --env 2>/dev/null)"; then
    eval "$env_lines"
    tch="${BENCH_TCH_DEVICE:-tch-cpu}"
    echo "== ours on LibTorch ($tch, native convolution backward)"
    BENCH_BACKEND="$tch" bench --features arcface-benches/tch
    echo "== ours on LibTorch ($tch, Burn's generic convolution backward: CPU_CONV_KERNELS=burn)"
    CPU_CONV_KERNELS=burn BENCH_BACKEND="$tch" bench --features arcface-benches/tch
    PEER_PYTHON="${PEER_PYTHON:-$VIRTUAL_ENV/bin/python}"
else
    echo "(no LibTorch venv: tools/setup_libtorch.sh makes one; skipping the LibTorch rows)"
fi
echo "== PyTorch"
"${PEER_PYTHON:-python3}" tools/bench_peers_train.py "$models" "$steps"
# The allocator policy our binaries set for LibTorch (iresnet::keep_freed_memory), given to
# PyTorch too: its tensors come from the same glibc malloc.
echo "== PyTorch, glibc keeping freed memory (as our binaries set it)"
GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647 \
    "${PEER_PYTHON:-python3}" tools/bench_peers_train.py "$models" "$steps"
