#!/bin/bash
# emotionet: fetch the pinned libtpu wheel and take libtpu.so out of it.
#
#   fetch-libtpu.sh WHEEL_DIR SO_PATH
#
# Downloads the one wheel named in libtpu.env (next to this script) into
# WHEEL_DIR unless a copy with the right SHA-256 is there, checks its SHA-256,
# and extracts libtpu/libtpu.so to SO_PATH (through a temporary name and a
# rename, so SO_PATH is never half written), checking that SHA-256 too.
# An existing SO_PATH is trusted only by its own SHA-256: SO_PATH.sha256
# keeps "SHA-256 SIZE MTIME" of the file it was computed from, so while the
# size and mtime are unchanged the 640 MB are not read again; when either
# changed (or the stamp is older or missing) the library is hashed, and a
# mismatch extracts it afresh.
# No pip and no particular Python version is needed: curl, sha256sum and any
# python3 (for the zip). `make tpu-plugin` and `emotionet cloud run`'s setup
# on the TPU VM both use this script.
#
# EMOTIONET_LIBTPU_MIRROR=URL-of-a-folder fetches the same file (same name,
# same SHA-256) from elsewhere, e.g. file:///path/to/wheels for the tests.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/libtpu.env
source "$here/libtpu.env"
wheel_dir=$1
so_path=$2

for tool in curl sha256sum python3; do
    command -v "$tool" >/dev/null || { echo "fetch-libtpu: $tool is missing (needed to fetch libtpu $LIBTPU_VERSION)" >&2; exit 2; }
done

sha_of() { sha256sum "$1" | cut -d' ' -f1; }
# "SIZE MTIME" of a file (GNU stat).
size_mtime() { stat -c '%s %Y' "$1"; }
# Records that $so_path, as it is now, has the pinned SHA-256.
stamp() { echo "$LIBTPU_SO_SHA256 $(size_mtime "$so_path")" > "$so_path.sha256"; }

if [ -f "$so_path" ]; then
    if [ "$(cat "$so_path.sha256" 2>/dev/null)" = "$LIBTPU_SO_SHA256 $(size_mtime "$so_path")" ]; then
        echo "libtpu $LIBTPU_VERSION is already at $so_path (size and mtime as when its SHA-256 was checked)"
        exit 0
    fi
    echo "checking the SHA-256 of $so_path (it changed, or was never checked)"
    if [ "$(sha_of "$so_path")" = "$LIBTPU_SO_SHA256" ]; then
        stamp
        echo "libtpu $LIBTPU_VERSION is already at $so_path"
        exit 0
    fi
    echo "$so_path is not the pinned libtpu $LIBTPU_VERSION (SHA-256 differs); extracting it again"
fi

mkdir -p "$wheel_dir" "$(dirname "$so_path")"
wheel="$wheel_dir/$LIBTPU_WHEEL"
if [ ! -f "$wheel" ] || [ "$(sha_of "$wheel")" != "$LIBTPU_WHEEL_SHA256" ]; then
    url=$LIBTPU_WHEEL_URL
    if [ -n "${EMOTIONET_LIBTPU_MIRROR:-}" ]; then url="${EMOTIONET_LIBTPU_MIRROR%/}/$LIBTPU_WHEEL"; fi
    echo "downloading $LIBTPU_WHEEL (about 190 MB) from $url"
    curl --fail --location --silent --show-error --retry 3 --output "$wheel.part" "$url"
    got=$(sha_of "$wheel.part")
    if [ "$got" != "$LIBTPU_WHEEL_SHA256" ]; then
        rm -f "$wheel.part"
        echo "fetch-libtpu: $url has SHA-256 $got, expected $LIBTPU_WHEEL_SHA256 (deploy/libtpu.env); refusing it" >&2
        exit 1
    fi
    mv -f "$wheel.part" "$wheel"
fi

echo "extracting libtpu/libtpu.so (about 640 MB) to $so_path"
python3 - "$wheel" "$so_path.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open("libtpu/libtpu.so") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
got=$(sha_of "$so_path.part")
if [ "$got" != "$LIBTPU_SO_SHA256" ]; then
    rm -f "$so_path.part"
    echo "fetch-libtpu: the extracted libtpu.so has SHA-256 $got, expected $LIBTPU_SO_SHA256" >&2
    exit 1
fi
mv -f "$so_path.part" "$so_path"
stamp
echo "libtpu $LIBTPU_VERSION (PJRT C API 0.81) is at $so_path"
