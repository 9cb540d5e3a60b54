#!/bin/bash
# emotionet: make a TPU VM ready for a campaign (the default setup step of
# `emotionet cloud run`, run as the ssh user after every shipping; it is
# idempotent and does nothing the second time).
#
#   vm-setup.sh DEPS
#
# 1. checks the tools the campaign steps use on the VM;
# 2. puts the pinned libtpu at DEPS/pjrt/libtpu/libtpu.so, where
#    `EMOTIONET_DEPS=DEPS emotionet ... --backend tpu` finds it, with
#    fetch-libtpu.sh (no pip, whatever the image's Python version).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
deps=$1

missing=()
for tool in bash tar setsid flock tail sha256sum curl python3 getconf; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "vm-setup: the VM lacks ${missing[*]}; tpu-ubuntu2204-base has them all (on another image: sudo apt-get install coreutils util-linux tar curl python3)" >&2
    exit 2
fi

"$here/fetch-libtpu.sh" "$deps/wheels" "$deps/pjrt/libtpu/libtpu.so"
echo "vm-setup: done ($(getconf GNU_LIBC_VERSION), $(python3 --version 2>&1))"
