# HyperMesh entry points. On a fresh machine: `make up` (one terminal), then `make test`.
#
#   make up     install what is missing, build, run containerd, hm-apiserver on 127.0.0.1:7443, hm-scheduler and hm-agent (foreground)
#   make test   install helm if missing, build every binary, run every test with cargo-nextest
#   make bench  release build, then hm-bench against a real hm-apiserver and a real etcd
#   make fuzz   property tests of the parsers, proof verification and the image importer, FUZZ_CASES (20000) cases each, FUZZ_SECONDS (600) per crate
#   make images the component images the Helm chart runs, as OCI archives in IMAGES_DIR (target/images); PROFILE=debug packs the debug build
#   make lint   rustfmt check and clippy with warnings as errors
#   make dev-reset  delete the `make up` data dir (stop the apiserver first)
#
# `make up` uses the dev profile on purpose: `make test` needs the same debug build, so the
# second command reuses the first one's work instead of compiling everything twice.

SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO      ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

# make up
LISTEN   ?= 127.0.0.1:7443
DATA_DIR ?= .hypermesh-dev/data

# make test: the `ci` nextest profile (.config/nextest.toml) under CI=true, else `default`.
NEXTEST_PROFILE ?= $(if $(filter true 1,$(CI)),ci,default)

# make bench: add BENCH_FLAGS=--write to record the result in BENCHMARKS.md.
BENCH_OBJECTS     ?= 10000
BENCH_CONCURRENCY ?= 16
BENCH_FLAGS       ?=

# make fuzz: proptest cases per property (the default in `make test` is proptest's 256),
# and the time limit per crate once its tests are built.
FUZZ_CASES   ?= 20000
FUZZ_SECONDS ?= 600
FUZZ_RUN     = PROPTEST_CASES=$(FUZZ_CASES) timeout $(FUZZ_SECONDS) $(CARGO) test

# make images: release binaries by default; PROFILE=debug packs the debug build `make
# test` already made (what tests/tests/suite/images_run.rs runs) instead of a slow release build.
PROFILE    ?= release
IMAGES_DIR ?= $(TARGET_DIR)/images

.PHONY: help setup up test bench fuzz images lint fmt dev-reset

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

setup:
	@bash scripts/setup.sh

up: setup
	$(CARGO) build -p hypermesh-apiserver -p hypermesh-scheduler -p hypermesh-ctl $(if $(wildcard agent/src/main.rs),-p hypermesh-agent)
	LISTEN=$(LISTEN) DATA_DIR=$(DATA_DIR) BIN=$(TARGET_DIR)/debug bash scripts/up.sh

test: setup
	@bash scripts/install-helm.sh
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace --no-fail-fast --profile $(NEXTEST_PROFILE)

bench: setup
	$(CARGO) build --release -p hypermesh-apiserver -p hypermesh-bench
	$(TARGET_DIR)/release/hm-bench api --objects $(BENCH_OBJECTS) --concurrency $(BENCH_CONCURRENCY) \
		--etcd /usr/bin/etcd --apiserver $(TARGET_DIR)/release/hm-apiserver $(BENCH_FLAGS)

# Each crate on its own (one `cargo test -p a -p b` would unify features and rebuild).
fuzz:
	$(CARGO) test --no-run -p hypermesh-api --test fuzz
	$(FUZZ_RUN) -p hypermesh-api --test fuzz
	$(CARGO) test --no-run -p hypermesh-trust --test fuzz
	$(FUZZ_RUN) -p hypermesh-trust --test fuzz
	$(CARGO) test --no-run -p hypermesh-containers --lib
	$(FUZZ_RUN) -p hypermesh-containers --lib image::fuzz_tests

images: setup
	$(CARGO) build $(if $(filter debug,$(PROFILE)),,--profile $(PROFILE)) -p hypermesh-apiserver -p hypermesh-scheduler \
		-p hypermesh-agent -p hypermesh-proxy -p hypermesh-ctl
	BIN=$(TARGET_DIR)/$(PROFILE) bash scripts/build-images.sh $(IMAGES_DIR)

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Forget the `make up` cluster's state (the apiserver must be stopped).
dev-reset:
	rm -rf $(DATA_DIR)
