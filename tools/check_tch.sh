#!/usr/bin/env bash
# The LibTorch backend's checks (`--features tch`): builds the CLI against LibTorch 2.9.0 and runs
# crates/arcface-cli/tests/tch_backend.rs (embeddings, detections, a training step against flex;
# `arcface --device tch-cpu train`). Needs the venv tools/setup_libtorch.sh makes (about 4 GB); run
# by hand, and by .ci/run when that venv (or LIBTORCH_VENV) is there. Building Burn with the tch
# feature the first time takes 10-20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! env_lines="$(tools/setup_libtorch.sh --env)"; then
    echo "no LibTorch: run tools/setup_libtorch.sh first" >&2
    exit 1
fi
eval "$env_lines"
cargo test -p arcface-cli --features tch --test tch_backend -- --test-threads 1 "$@"
