#!/usr/bin/env bash
# Vendor onnxruntime-web into web/vendor/ (gitignored: ~43 MB of .wasm; CI runs this script).
# Installs the pinned npm package into a throwaway folder and copies only what the page loads:
# the ESM entry (WebGPU + WASM) and its two WASM backends (plain SIMD-threaded and JSEP/WebGPU).
set -euo pipefail
ORT_VERSION="1.30.0"
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
npm install --prefix "$tmp" --no-audit --no-fund --silent "onnxruntime-web@${ORT_VERSION}"
dist="$tmp/node_modules/onnxruntime-web/dist"
mkdir -p "$here/vendor"
for f in ort.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm \
         ort-wasm-simd-threaded.jsep.mjs ort-wasm-simd-threaded.jsep.wasm; do
  cp "$dist/$f" "$here/vendor/$f"
done
cp "$tmp/node_modules/onnxruntime-web/LICENSE" "$here/vendor/LICENSE" 2>/dev/null || true
echo "onnxruntime-web ${ORT_VERSION}" > "$here/vendor/VERSION"
du -sh "$here/vendor"
