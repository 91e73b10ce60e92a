#!/usr/bin/env bash
# Builds, here, what a lent GPU machine needs to run tools/device/run-cuda.sh, which reaches no registry:
# gpu/slimllm-cuda.xz (the release binary with --features cuda, stripped, xz: 7.7 MB; no autotuner) and
# gpu/nvrtc-12.6.85.tar.xz (NVRTC from PyPI's nvidia-cuda-nvrtc-cu12 wheel, checksum pinned: cubecl-cuda compiles
# its kernels with it at run time, and a machine with only a driver lacks it; 16.8 MB). gpu/ is git-ignored; carry
# both files (27 MB with the tree, under the 64 MiB limit). They ran on a lent H200 on 2026-12-04
# (docs/measurements.md, "CUDA on an H200").
#
# burn-cuda 0.21 (cubecl-cuda 0.10, cudarc 0.19) loads libcuda and libnvrtc dynamically; CUDARC_CUDA_VERSION pins
# the bindings to CUDA 12.6 (without a toolkit here cudarc would pick its newest). With the wgpu dependencies already
# built the build took 6 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
wheel=nvidia_cuda_nvrtc_cu12-12.6.85-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl
sha=800927308ccc5dd6246d3f61f7fcef2ed7ec4e59e199090d360d3293f78bd5a2
CUDARC_CUDA_VERSION=12060 cargo build --release -p slim-cli --features cuda --bin slimllm
mkdir -p gpu data/downloads
strip -o gpu/slimllm-cuda target/release/slimllm
xz -9 -f gpu/slimllm-cuda
if [[ ! -f data/downloads/$wheel ]]; then
  python3 -m pip download --no-deps nvidia-cuda-nvrtc-cu12==12.6.85 -d data/downloads
fi
echo "$sha  data/downloads/$wheel" | sha256sum -c -
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "data/downloads/$wheel" "$tmp"
tar -C "$tmp" -cf - nvidia/cuda_nvrtc/lib | xz -9 >gpu/nvrtc-12.6.85.tar.xz
ls -l gpu/
