#!/usr/bin/env bash
# Installs the tools that build the browser feed, each only when missing (DESIGN.md §5):
# the wasm32 target, Trunk 0.21.14, wasm-bindgen-cli at the version Trunk.toml pins (Trunk uses a
# tool from PATH only when its version matches exactly) and wasm-opt from npm's binaryen@132
# (Debian's binaryen 108 breaks wasm-bindgen's externref table). Then put them on PATH with
#   export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PWD/node_modules/.bin:$PATH"
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PWD/node_modules/.bin:$PATH"

if ! command -v npm >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm
fi
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
wasm_bindgen_version=$(sed -n 's/^wasm_bindgen = "\(.*\)"$/\1/p' Trunk.toml)
# Both tools are built from source. Trunk's own release profile asks for fat LTO with one codegen
# unit, which alone outlasted CI's 90-minute limit on 2 cores. These tools spend their time in the
# programs they call (cargo, wasm-opt), so an unoptimised build serves just as well: on an idle
# 2-core machine Trunk builds in 2m38s at -O0 against 4m15s at -O1, wasm-bindgen-cli in 56 s
# against 1m45s, and the feed they build is byte for byte the same.
install_tool() {
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo install "$@"
}
[ "$(trunk --version 2>/dev/null)" = "trunk 0.21.14" ] || {
  echo "tools.sh: building Trunk 0.21.14 (about 3 minutes on 2 cores)"
  install_tool trunk --version 0.21.14 --locked
}
# Not --locked: wasm-bindgen-cli 0.2.130's own lock file pins webpki-roots 1.0.11, which the
# registry no longer offers.
[ "$(wasm-bindgen --version 2>/dev/null)" = "wasm-bindgen $wasm_bindgen_version" ] || {
  echo "tools.sh: building wasm-bindgen-cli $wasm_bindgen_version (about a minute on 2 cores)"
  install_tool wasm-bindgen-cli --version "$wasm_bindgen_version"
}
wasm-opt --version 2>/dev/null | grep -q 'version 132' \
  || npm install --prefix "$PWD" --no-save --no-audit --no-fund binaryen@132
