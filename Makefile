# emotionet: every dependency is installed by this file, from crates.io, PyPI
# and Debian only. Targets are idempotent; `make test` and `make demo` each
# work as the first command on a fresh clone.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

PYTHON ?= python3
CARGO  ?= cargo
DEPS   := $(CURDIR)/.deps

# Pinned PJRT plugins (all speak PJRT C API 0.81, the header we build on).
CPU_PLUGIN_PKG := xla-cpu-pjrt==0.0.1
GPU_PLUGIN_PKG := xla-cuda12-pjrt==0.0.1
CPU_PLUGIN     := $(DEPS)/pjrt/xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so
PJRT_HEADER    := $(DEPS)/pjrt/xla_plugins/xla_cpu_pjrt/include/pjrt_c_api.h
# libtpu 0.0.30 (deploy/libtpu.env pins its wheel by name and SHA-256). It is
# kept out of .deps/pjrt on purpose: there it would make this machine look
# like a TPU host to plugin discovery. On a TPU VM: TPU_LIBRARY_PATH=$(LIBTPU).
LIBTPU         := $(DEPS)/libtpu/libtpu.so

# The one real face set we can get: scikit-image's LFW subset (100 faces,
# 100 non-faces, 25x25), carried inside its wheel.
SKIMAGE_PKG    := scikit-image==0.26.0
LFW_SUBSET     := $(DEPS)/data/lfw_subset.npy

# TensorBoard's own event-file reader (EventAccumulator), for the test that
# loads our event files with it. These four wheels are all it imports.
TB_READER_PKGS := tensorboard==2.20.0 protobuf==6.33.1 numpy==2.2.6 absl-py==2.3.1
TB_READER      := $(DEPS)/py/tensorboard/__init__.py

export EMOTIONET_DEPS := $(DEPS)
BIN := target/release/emotionet

.PHONY: setup build test lint demo bench ffi clean system-packages tpu-plugin gpu-plugin test-tpu-programs test-old-userland

## setup: the PJRT CPU plugin, test data, TensorBoard's reader and any Debian packages the build needs
setup: system-packages $(CPU_PLUGIN) $(LFW_SUBSET) $(TB_READER)

system-packages:
	@command -v cc >/dev/null || { echo "installing gcc (needed by crates that build C)"; apt-get update -qq && apt-get install -y -qq gcc; }
	@$(PYTHON) -m pip --version >/dev/null 2>&1 || { echo "installing pip"; apt-get update -qq && apt-get install -y -qq python3-pip; }
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 2; }

$(CPU_PLUGIN):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps --target $(DEPS)/pjrt $(CPU_PLUGIN_PKG)
	@test -f $@ && touch $@

$(LFW_SUBSET):
	mkdir -p $(DEPS)/wheels $(DEPS)/data
	$(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
	    --platform manylinux_2_28_x86_64 --python-version 3.12 -d $(DEPS)/wheels $(SKIMAGE_PKG)
	$(PYTHON) -c "import zipfile,glob,sys; w=glob.glob('$(DEPS)/wheels/scikit_image-*.whl')[0]; open('$@','wb').write(zipfile.ZipFile(w).read('skimage/data/lfw_subset.npy'))"

$(TB_READER):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps --target $(DEPS)/py $(TB_READER_PKGS)
	@test -f $@ && touch $@

## tpu-plugin: libtpu.so from the pinned wheel (cp312, manylinux_2_31; ~190 MB download, ~640 MB
## unpacked), the same script `emotionet cloud run` runs on the VM; the tests load it (no TPU needed)
tpu-plugin: $(LIBTPU)

$(LIBTPU): deploy/libtpu.env deploy/fetch-libtpu.sh
	bash deploy/fetch-libtpu.sh $(DEPS)/wheels $@
	@touch $@
	@echo "libtpu: $@ (on a TPU VM: export TPU_LIBRARY_PATH=$@, or pass --plugin $@)"

## gpu-plugin: optional, for CUDA hosts
gpu-plugin:
	$(PYTHON) -m pip install --quiet --no-deps --target $(DEPS)/pjrt $(GPU_PLUGIN_PKG)

build: setup
	$(CARGO) build --release --locked

test: build $(LIBTPU)
	$(CARGO) test --release --locked -- --test-threads=2

## lint: formatting (rustfmt.toml) and clippy with warnings as errors, as CI runs them after `make test`
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

## test-tpu-programs: the 256x256 emotion training step of a TPU v3-8 (8 replicas) compiled and run
## once on 8 CPU devices (heavy: not part of `make test`)
test-tpu-programs: build
	$(CARGO) test --release --locked --test replicas8 -- --ignored --test-threads=1 --nocapture

## test-old-userland: the VM side on Debian 11 (glibc 2.31, Python 3.9) in a debootstrap chroot:
## the binary built here refused, --build-on-vm building inside it (slow: a full build), the real setup
OLD_USERLAND := $(CURDIR)/target/chroots/bullseye
LIBTPU_WHEEL := $(shell sed -n 's/^LIBTPU_WHEEL=//p' deploy/libtpu.env)
test-old-userland: build $(LIBTPU)
	@command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
	test -x $(OLD_USERLAND)/usr/bin/gcc || debootstrap --variant=minbase --include=python3,curl,ca-certificates,util-linux,procps,gcc,libc6-dev \
	    bullseye $(OLD_USERLAND) http://deb.debian.org/debian
	mkdir -p $(OLD_USERLAND)/root/.cargo $(OLD_USERLAND)/root/.rustup $(OLD_USERLAND)/mirror
	cp -l $(DEPS)/wheels/$(LIBTPU_WHEEL) $(OLD_USERLAND)/mirror/ 2>/dev/null || cp $(DEPS)/wheels/$(LIBTPU_WHEEL) $(OLD_USERLAND)/mirror/
	trap 'umount $(OLD_USERLAND)/proc $(OLD_USERLAND)/root/.cargo $(OLD_USERLAND)/root/.rustup 2>/dev/null || true' EXIT; \
	  mount -t proc proc $(OLD_USERLAND)/proc && mount --bind $(HOME)/.cargo $(OLD_USERLAND)/root/.cargo && mount --bind $(HOME)/.rustup $(OLD_USERLAND)/root/.rustup && \
	  $(CARGO) test --release --locked --test cloud_old_userland -- --ignored --nocapture

## demo: the smoke campaign on the synthetic set (CPU): both models, the hierarchy eval, the report
demo: build
	$(BIN) devices
	$(BIN) run experiments/smoke.yaml --out runs/demo
	@echo
	@echo "report: $(CURDIR)/runs/demo/report/report.md"
	@echo "TensorBoard: tensorboard --logdir runs/demo"

bench: build
	$(BIN) bench

## ffi: regenerate src/pjrt/ffi.rs from the pinned plugin's header (needs bindgen + libclang)
ffi: $(CPU_PLUGIN)
	command -v bindgen >/dev/null || $(CARGO) install --locked bindgen-cli@0.73.2
	dpkg -s libclang-dev >/dev/null 2>&1 || apt-get install -y -qq libclang-dev
	bindgen $(PJRT_HEADER) --allowlist-type 'PJRT_.*' --allowlist-var 'PJRT_.*' --with-derive-default --no-doc-comments \
	    -o target/ffi.raw.rs
	{ sed -n '1,/^$$/p' src/pjrt/ffi.rs; \
	  sed -e 's|^\(\s*\)unsafe {$$|\1// SAFETY: every field of this C struct is a pointer, integer or nullable\n\1// function pointer, for which all-zero bytes are a valid value.\n\1unsafe {|' target/ffi.raw.rs; \
	  echo; echo '/// Builds an args struct with `struct_size` set to the exact size in the header.'; \
	  echo 'pub trait StructSize { fn sized() -> Self; }'; \
	  grep -o '^pub const PJRT_[A-Za-z0-9_]*_STRUCT_SIZE' target/ffi.raw.rs | sed 's/pub const //; s/_STRUCT_SIZE$$//' \
	    | while read t; do \
	        awk "/^pub struct $$t {/{getline; print; exit}" target/ffi.raw.rs | grep -q 'struct_size' || continue; \
	        echo "impl StructSize for $$t { fn sized() -> Self { $$t { struct_size: $${t}_STRUCT_SIZE as usize, ..Default::default() } } }"; \
	      done; \
	} > src/pjrt/ffi.rs.new
	mv src/pjrt/ffi.rs.new src/pjrt/ffi.rs

clean:
	$(CARGO) clean
	rm -rf $(DEPS)
