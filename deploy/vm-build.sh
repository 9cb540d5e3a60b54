#!/bin/bash
# emotionet: build emotionet on the TPU VM itself (`emotionet cloud run
# --build-on-vm`), for when the binary built on your machine needs a newer
# glibc than the VM's image has. Once per VM and per source: a second call
# with the same source does nothing.
#
#   vm-build.sh SRC BIN TOOLCHAIN
#
# SRC is the shipped source (Cargo.toml, Cargo.lock, src/, deploy/); the
# binary goes to BIN (through a temporary name and a rename). Without cargo
# on the VM, rustup installs TOOLCHAIN (the version that built your binary)
# into ~/.cargo; the VM has internet access. CARGO_TARGET_DIR, if set, is
# where the build goes (default: SRC/../build).
set -euo pipefail
src=$1
bin=$2
toolchain=${3:-stable}
export PATH="$HOME/.cargo/bin:$PATH"

sum=$(cd "$src" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ -x "$bin" ] && [ "$(cat "$bin.source-sha256" 2>/dev/null)" = "$sum" ]; then
    echo "vm-build: $bin is already built from this source"
    exit 0
fi

if ! command -v cargo >/dev/null; then
    command -v curl >/dev/null || { echo "vm-build: curl is missing (needed to install rustup)" >&2; exit 2; }
    echo "vm-build: installing the Rust toolchain $toolchain with rustup (once per VM)"
    curl --proto '=https' --tlsv1.2 --fail --silent --show-error https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain "$toolchain"
fi
if ! command -v cc >/dev/null; then
    echo "vm-build: installing gcc (some dependencies build C code)"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(cd "$src/.." && pwd)/build}
echo "vm-build: cargo build --release --locked in $src (target $CARGO_TARGET_DIR, $(cargo --version))"
(cd "$src" && cargo build --release --locked)
mkdir -p "$(dirname "$bin")"
cp "$CARGO_TARGET_DIR/release/emotionet" "$bin.part"
mv -f "$bin.part" "$bin"
echo "$sum" >"$bin.source-sha256"
echo "vm-build: built $bin"
