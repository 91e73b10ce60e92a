#!/usr/bin/env bash
# Creates .venv-ref/ in the repository root with the Python packages the reference scripts need
# (torch, transformers, gguf, safetensors, accelerate; pinned in requirements.txt).
# These scripts are independent checks run by hand; the Rust project never depends on them.
#
# Usage: tools/reference/setup.sh [VENV_DIR]      (default: <repo>/.venv-ref)
# Set PIP_EXTRA_ARGS to pass more options to pip, e.g. a CPU-only torch index where one is reachable:
#   PIP_EXTRA_ARGS="--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple"
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/.venv-ref}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv"
    "$python" -m venv "$venv"
fi
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install ${PIP_EXTRA_ARGS:-} -r "$here/requirements.txt"
"$venv/bin/python" -c 'import torch, transformers, gguf, safetensors, accelerate; print("torch", torch.__version__, "transformers", transformers.__version__)'
echo "ready: $venv (e.g. cargo xtask bench forward --torch-venv $venv)"
