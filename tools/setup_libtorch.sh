#!/usr/bin/env bash
# Makes the LibTorch that `--features tch` builds and runs against: a venv with PyTorch 2.9.0 (the
# one version burn-tch 0.21 / tch 0.22 accept) from PyPI, then prints the environment to export.
#
#   tools/setup_libtorch.sh            # once: ~4 GB download (PyPI's torch is a CUDA build)
#   eval "$(tools/setup_libtorch.sh --env)"
#   cargo test --workspace --features tch --test tch_backend
#
# LIBTORCH_VENV picks another place for the venv (default: .libtorch/venv in the repository).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${LIBTORCH_VENV:-$root/.libtorch/venv}"
version="2.9.0"

print_env() {
    local lib
    lib="$("$venv/bin/python" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
    echo "export LIBTORCH_USE_PYTORCH=1"
    echo "export VIRTUAL_ENV=$venv"
    echo "export PATH=$venv/bin:\$PATH"
    echo "export LD_LIBRARY_PATH=$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
}

installed() {
    [ -x "$venv/bin/python" ] &&
        [ "$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)" = "$version" ]
}

if [ "${1:-}" = "--env" ]; then
    if ! installed; then
        echo "echo 'no PyTorch $version in $venv: run tools/setup_libtorch.sh first' >&2; false"
        exit 1
    fi
    print_env
    exit 0
fi

if installed; then
    echo "PyTorch $version already in $venv" >&2
else
    echo "making $venv with torch==$version (PyPI; several GB with its NVIDIA libraries)" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install "torch==$version" numpy
fi
echo "# export these (or: eval \"\$(tools/setup_libtorch.sh --env)\"):" >&2
print_env
