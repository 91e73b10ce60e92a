#!/usr/bin/env bash
# Makes a Vulkan device available for the wgpu backend on a machine without a GPU: Mesa's
# Lavapipe (llvmpipe), a conforming Vulkan driver that runs on the CPU, from Debian's
# mesa-vulkan-drivers. Does nothing when its ICD is already installed. Needs root (or sudo).
set -euo pipefail
icd=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
if [[ -f "$icd" ]]; then
  echo "lavapipe: $icd present"
  exit 0
fi
sudo=""
if [[ "$(id -u)" != 0 ]]; then
  sudo="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends mesa-vulkan-drivers libvulkan1
if [[ ! -f "$icd" ]]; then
  echo "error: mesa-vulkan-drivers installed but $icd is missing" >&2
  exit 1
fi
echo "lavapipe: installed $icd"
