#!/usr/bin/env bash
# The Python that the transformers checks run on (crates/slim-model/tests/it/transformers.rs, check_pruned.py):
# data/tools/venv-transformers with torch 2.15.0 and transformers 5.24.0 from PyPI (CPU use only, but PyPI's
# torch wheel is the CUDA build: 2 min 19 s and 5.6 GB to install here, 4.6 GB without triton). Idempotent.
# cargo xtask ci runs it before the tests and points SLIMLLM_PYTHON at it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/data/tools/venv-transformers"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import torch, transformers' 2>/dev/null; then
    exit 0
fi
python3 -m venv "$venv"
# No pip cache (it would keep every downloaded wheel a second time), and no triton: it serves only torch.compile's
# GPU kernels, the checks run eager on the CPU (measured: the transformers test passes without it), and it is 1.0 GB.
"$venv/bin/python" -m pip install -q --no-cache-dir torch==2.15.0 transformers==5.24.0
"$venv/bin/python" -m pip uninstall -q -y triton
"$venv/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
