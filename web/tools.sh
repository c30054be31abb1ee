#!/usr/bin/env bash
# Installs the tools that build the browser feed, each only when missing (DESIGN.md §5):
# the wasm32 target, Trunk 0.21.14, wasm-bindgen-cli at the version Trunk.toml pins (Trunk uses a
# tool from PATH only when its version matches exactly) and wasm-opt from npm's binaryen@132
# (Debian's binaryen 108 breaks wasm-bindgen's externref table). Then put them on PATH with
#   export PATH="$HOME/.cargo/bin:$PWD/node_modules/.bin:$PATH"
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PWD/node_modules/.bin:$PATH"

if ! command -v npm >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm
fi
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
wasm_bindgen_version=$(sed -n 's/^wasm_bindgen = "\(.*\)"$/\1/p' Trunk.toml)
[ "$(trunk --version 2>/dev/null)" = "trunk 0.21.14" ] || cargo install trunk --version 0.21.14 --locked
[ "$(wasm-bindgen --version 2>/dev/null)" = "wasm-bindgen $wasm_bindgen_version" ] \
  || cargo install wasm-bindgen-cli --version "$wasm_bindgen_version"
wasm-opt --version 2>/dev/null | grep -q 'version 132' \
  || npm install --prefix "$PWD" --no-save --no-audit --no-fund binaryen@132
