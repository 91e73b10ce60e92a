#!/usr/bin/env bash
# Builds stock llama.cpp (CPU only) from the registry package that vendors it: the llama-cpp-python
# 0.3.36 sdist on PyPI (llama.cpp commit 0c1e57098, see ../shared/reference/gguf-deci.md), checksum
# pinned. Everything goes under data/tools/llamacpp/ (git-ignored):
#   src/       the unpacked sdist (its vendor/llama.cpp is what is built; its llama_cpp/ is the Python binding)
#   venv/      cmake and ninja from PyPI, and what the binding needs (numpy, typing-extensions, diskcache, jinja2)
#   build/bin/ llama-perplexity, llama-bench, llama-completion, llama-tokenize, libllama.so, libggml*.so
# Python scripts load the binding with PYTHONPATH=src and LLAMA_CPP_LIB_PATH=build/bin (tools/llamacpp/logits.py).
# Usage: tools/llamacpp/build.sh [--jobs N]     (cargo xtask llamacpp calls it; idempotent: a finished build is kept)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$root/data/tools/llamacpp"
jobs="$(nproc)"
if [ "${1:-}" = "--jobs" ]; then jobs="$2"; fi
version=0.3.36
url="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$version.tar.gz"
sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
targets=(llama-perplexity llama-bench llama-completion llama-tokenize llama)
mkdir -p "$dest" "$root/data/downloads"

tarball="$root/data/downloads/llama_cpp_python-$version.tar.gz"
if [ ! -f "$tarball" ] || ! echo "$sha256  $tarball" | sha256sum -c --status; then
    echo "fetching $url"
    curl -fsSL "$url" -o "$tarball.part"
    echo "$sha256  $tarball.part" | sha256sum -c --status || { echo "checksum mismatch: $tarball.part" >&2; exit 1; }
    mv "$tarball.part" "$tarball"
fi
if [ ! -f "$dest/src/.unpacked-$version" ]; then
    rm -rf "$dest/src.part"
    mkdir -p "$dest/src.part"
    tar -xzf "$tarball" -C "$dest/src.part" --strip-components=1
    touch "$dest/src.part/.unpacked-$version"
    rm -rf "$dest/src"
    mv "$dest/src.part" "$dest/src"
fi
if [ ! -x "$dest/venv/bin/ninja" ]; then
    python3 -m venv "$dest/venv"
    "$dest/venv/bin/python" -m pip install -q --no-cache-dir cmake ninja numpy typing-extensions diskcache jinja2 gguf==0.19.0
fi
export PATH="$dest/venv/bin:$PATH"
cmake -S "$dest/src/vendor/llama.cpp" -B "$dest/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF \
    -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF >"$dest/cmake-configure.log"
start=$(date +%s)
ninja -C "$dest/build" -j "$jobs" "${targets[@]}"
echo "llama.cpp built in $(( $(date +%s) - start )) s: $dest/build/bin"
"$dest/build/bin/llama-completion" --version 2>&1 | head -2 || true
