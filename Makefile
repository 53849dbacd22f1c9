# flowgate: build, test, demo.
#
#   make test    setup (packages, hugepages) + release build + every test (unit and the
#                namespace/real-traffic integration tests), serially, time-bounded
#   make demo    setup + release build + scripts/demo.sh (NAT gateway) and then
#                scripts/demo-lb.sh (load balancer); namespaces, real traffic
#   make demo-fleet  setup + build + scripts/demo-fleet.sh (etcd, controller, node agents,
#                fabric router: placement table, routes, a node failure)
#   make bench   bench/run.sh, if there is one
#   make check   cargo fmt --check + cargo clippy -D warnings
#   make setup   scripts/setup.sh only (idempotent; root)
#
# Time bounds (seconds) can be overridden: make test TEST_TIMEOUT=3600

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
FLOWGATE_BIN := $(TARGET_DIR)/release/flowgate

SETUP_TIMEOUT ?= 1500
BUILD_TIMEOUT ?= 1500
TEST_TIMEOUT ?= 2400
DEMO_TIMEOUT ?= 300
BENCH_TIMEOUT ?= 1800

.PHONY: all setup build test demo bench check fmt clippy clean

all: build

setup:
	timeout $(SETUP_TIMEOUT) bash scripts/setup.sh

build:
	timeout -k 30 $(BUILD_TIMEOUT) $(CARGO) build --release

# Integration tests create namespaces and run DPDK processes: one test at a time
# (--test-threads=1; the harness also holds a global lock). --no-fail-fast: every test
# binary runs even when an earlier one failed.
test: setup build
	timeout -k 30 $(TEST_TIMEOUT) $(CARGO) test --release --no-fail-fast -- --test-threads=1

demo: setup build
	FLOWGATE_BIN=$(FLOWGATE_BIN) timeout -k 10 $(DEMO_TIMEOUT) bash scripts/demo.sh
	FLOWGATE_BIN=$(FLOWGATE_BIN) timeout -k 10 $(DEMO_TIMEOUT) bash scripts/demo-lb.sh

bench: setup build
	@/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-matplotlib
	@if [ -x bench/run.sh ] || [ -f bench/run.sh ]; then \
		timeout -k 30 $(BENCH_TIMEOUT) bash bench/run.sh; \
	else \
		echo "bench: no bench/run.sh yet"; \
	fi

check: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --release --all-targets -- -D warnings

clean:
	$(CARGO) clean

# Benchmark smoke run (CI): builds, then runs each benchmark for a moment (pipeline
# ~2 s, criterion --test, link ~15 s or skipped without root/hugepages/testpmd).
# Writes bench/results/latest.txt; measures nothing worth publishing, except that it fails
# when callgrind instructions per packet exceed bench/instr-budget.txt. See docs/benchmarks.md.
BENCH_SMOKE_TIMEOUT ?= 900
.PHONY: bench-smoke
bench-smoke: build
	timeout -k 30 $(BENCH_SMOKE_TIMEOUT) bash bench/run.sh --smoke

# Instructions per packet (callgrind) of the pipeline benchmark's cases against
# bench/instr-budget.txt; fails on a regression. Also part of bench-smoke.
# `make bench-instr INSTR_ARGS=--update` rewrites the budget with the measured values.
INSTR_ARGS ?=
.PHONY: bench-instr
bench-instr: build
	timeout -k 10 300 bash bench/instr.sh $(INSTR_ARGS)

# Fleet demo (docs/fleet.md): etcd + controller + node agents + fabric router namespace.
.PHONY: demo-fleet
demo-fleet: setup build
	FLOWGATE_BIN=$(FLOWGATE_BIN) timeout -k 10 $(DEMO_TIMEOUT) bash scripts/demo-fleet.sh
