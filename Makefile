# Herald — two commands on a fresh machine:
#   make dev    build the functions and run the whole system locally (no Docker, no AWS account)
#   make test   everything CI checks
# Needs only the machine's Rust toolchain, python3 and Node.js (20 or later, for the local
# DynamoDB and the client tests); every Python and npm tool is pinned and installed into the
# project (a virtualenv, node_modules) on first use.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
# `make dev` and `make test` run the functions built in cargo's dev profile (target/debug): the
# quickest build from scratch and after an edit, and the one plain `cargo build`/`cargo test`
# use, so every step shares it. Same source and features as Lambda, which runs the release
# profile (fat LTO) that `sam build` makes; `make dev PROFILE=release` runs that one locally.
# See docs/performance.md for the measurements behind this.
PROFILE ?= dev
flag = $(if $(filter release,$(1)),--release,--profile $(1))
# cargo's output directory of a profile: dev builds land in target/debug.
outdir = $(if $(filter dev,$(1)),debug,$(1))
VENV := .venv
VENV_STAMP := $(VENV)/.installed
# Tests run this many at once inside a test binary; most of their time is waiting on queues.
TEST_THREADS ?= 8

.PHONY: help dev build test-build test sam-venv fmt clippy unit-and-e2e e2e-big stack-tests client-tests browser-tests chaos-check chaos lint-template api-contract sam-build bench clean venv grant-report

help:
	@echo "make dev    build the functions and run the local stack (WebSocket + HTTP API, SQS, scheduler)"
	@echo "make test   fmt, clippy, unit + end-to-end tests, local-stack and client tests, template lint, API contract, sam build"
	@echo "make bench  fan-out benchmark (bench/RESULTS.md)"
	@echo "make chaos  the chaos suite: 200 clients, 5,000 notifications, reconnect churn and faults; fails on any loss (docs/reliability.md)"

venv: $(VENV_STAMP) infra/node_modules/.package-lock.json
# infra/requirements.txt pins the local stack's dependencies, then installs the stack itself (the
# package of infra/pyproject.toml, editable): a change to either file reinstalls. infra/venv.sh
# installs it with uv, as every other virtualenv of the project.
$(VENV_STAMP): infra/requirements.txt infra/pyproject.toml infra/requirements-uv.txt
	@PYTHON=$(PYTHON) bash -c 'source infra/venv.sh && ensure_venv $(VENV) infra/requirements.txt infra/pyproject.toml'
	touch $@

# The one function binary (functions/lambda) that every function of the template runs.
build:
	cargo build $(call flag,$(PROFILE)) -p herald-lambda

dev: venv build
	PYTHONPATH=infra $(VENV)/bin/python -m herald_local --profile $(call outdir,$(PROFILE)) --visibility-timeout 10 --env HERALD_LOG_FORMAT=text

fmt:
	cargo fmt --all -- --check

clippy:
	cargo clippy --all-targets -- -D warnings

# Unit tests of the workspace and the end-to-end tests (tests/), which start the local stack with
# the real binaries built above: one stack per test binary. The big-audience binaries (thousands
# of connections) are a target of their own so that `make test` runs them after the others;
# herald-load's test (bench/tests/, a stack of its own too) runs after them, in a cargo run of
# its own (in one run cargo would take the bench package first).
E2E_BIG := broadcast fanout_chain
E2E_BIG_AFTER := herald_load
# Always `--workspace` (with target filters): `-p` alone would resolve features for one package
# and rebuild shared dependencies with a different feature set than `test-build` compiled.
# No binary has tests of its own (`test = false` on each): `--bins` would only compile and link
# an empty test harness per binary.
unit-and-e2e: venv build
	HERALD_PROFILE=$(call outdir,$(PROFILE)) cargo test $(call flag,$(PROFILE)) --workspace --lib \
		$(addprefix --test ,$(filter-out $(E2E_BIG),$(E2E_TESTS))) -- --test-threads $(TEST_THREADS)

e2e-big: venv build
	HERALD_PROFILE=$(call outdir,$(PROFILE)) cargo test $(call flag,$(PROFILE)) --workspace \
		$(addprefix --test ,$(E2E_BIG)) -- --test-threads $(TEST_THREADS)
	HERALD_PROFILE=$(call outdir,$(PROFILE)) cargo test $(call flag,$(PROFILE)) --workspace \
		$(addprefix --test ,$(E2E_BIG_AFTER)) -- --test-threads $(TEST_THREADS)

# Every test binary, compiled: `make test` does it in its build phase, so that the checks of the
# next phase (which share cargo's lock on target/) start at once and clippy runs beside them.
test-build: build
	cargo test $(call flag,$(PROFILE)) --workspace --lib --tests --no-run

# Every end-to-end test binary, from tests/Cargo.toml: a new one is picked up by itself.
E2E_TESTS := $(shell sed -n 's/^name = "\(.*\)"/\1/p' tests/Cargo.toml | grep -v '^herald-e2e$$')

# The local stack's own tests (Runtime API, gateway, event sources) with fake functions.
stack-tests: venv
	$(VENV)/bin/python -m pytest -q infra/tests

lint-template:
	infra/lint-template.sh

api-contract: venv build
	HERALD_PROFILE=$(call outdir,$(PROFILE)) infra/api-contract.sh

sam-build:
	infra/sam-build.sh

# The browser client's tests (Node's test runner) against the local stack.
client-tests: venv build client/node_modules/.package-lock.json
	HERALD_PROFILE=$(call outdir,$(PROFILE)) client/run-tests.sh

# The demo page (client/demo/) in headless Chromium against the local stack: one stack, one
# browser (client/browser-test/). Chromium is Debian's package (apt-get install chromium), which
# .ci/run installs; playwright-core, pinned in client/browser-test/package-lock.json, drives it.
browser-tests: venv build
	HERALD_PROFILE=$(call outdir,$(PROFILE)) client/browser-test/run-tests.sh

# The chaos suite (chaos/chaos.mjs, docs/reliability.md): three kinds of clients (client/herald.js,
# a raw client resuming from the last cursor it received, a raw client reading `missed` from it)
# with reconnect churn, concurrent producers of every target kind, injected faults; fails on any
# loss. CHAOS_ARGS="--runs 10" repeats it with ten seeds, stopping at the first loss.
# `make chaos` is the full run (stops itself after 10 minutes); `chaos-check`, a small fixed-seed run, is part of
# `make test`. CHAOS_ARGS adds options (e.g. CHAOS_ARGS="--seed 7").
# The full run uses the release binaries (what Lambda runs; a one-time fat-LTO build of a few
# minutes): with debug binaries the functions took as much CPU as moto, and the run's pace on
# two cores halved (docs/reliability.md). CHAOS_PROFILE=dev runs it on the dev build.
CHAOS_ARGS ?=
CHAOS_PROFILE ?= release
chaos: venv client/node_modules/.package-lock.json
	$(MAKE) --no-print-directory build PROFILE=$(CHAOS_PROFILE)
	node chaos/chaos.mjs --profile $(call outdir,$(CHAOS_PROFILE)) --clients 200 --notifications 5000 --producers 16 --rate 40 --churn-ms 4000-12000 --max-seconds 600 $(CHAOS_ARGS)

chaos-check: venv build client/node_modules/.package-lock.json
	node chaos/chaos.mjs --profile $(call outdir,$(PROFILE)) --clients 24 --tenants 3 --notifications 300 --rate 30 --churn-ms 800-4000 --seed 1 --max-seconds 240 $(CHAOS_ARGS)

# npm keeps this file in node_modules, newer than the lockfile after every install.
client/node_modules/.package-lock.json: client/package-lock.json
	cd client && npm ci --no-audit --no-fund

# The local stack's DynamoDB, dynalite (infra/package-lock.json pins it; docs/local-stack.md):
# pure JavaScript in memory, so no install scripts (its LevelDB binding, for on-disk tables, is
# never loaded).
infra/node_modules/.package-lock.json: infra/package-lock.json
	cd infra && npm ci --no-audit --no-fund --ignore-scripts

# Everything CI checks, in two phases that each run several checks at once (`make -j`, output
# kept per check). First the dev build and the test binaries, with what needs no build beside it
# (the template lint and the local stack's own tests, mostly Python); then clippy beside the
# checks that start stacks and wait on queues and sockets (end-to-end, client, browser, chaos,
# API contract), which leave most of the CPU idle. `sam build` (the release artifact: one fat-LTO link, ~9 minutes of CPU
# alone) runs in the background all along at the lowest CPU and I/O priority
# (infra/sam-build.sh), taking what the checks leave; its output is in target/sam-build.log.
# `set -m` gives it a process group of its own (to stop it if a check fails) in the same
# session: a new session (setsid) would be a new scheduler autogroup, which gets an equal CPU
# share whatever its nice value. docs/performance.md has the measurements behind this.
# clippy starts after the first tests: it holds cargo's lock on target/ for its whole check, and
# the test targets, though compiled already, wait on that lock before they run.
# The big-audience tests come last, alone: their 2,000-member broadcast asserts that every member
# gets the frame live exactly once, which holds only while the local gateway keeps up; beside the
# other checks its posts timed out (and were posted again, or the connection closed) in two of
# four runs on 2026-12-07.
BUILD_PHASE := fmt build test-build lint-template stack-tests
CHECK_PHASE := unit-and-e2e client-tests clippy browser-tests chaos-check api-contract
LAST_PHASE := e2e-big
CHECKS := $(BUILD_PHASE) $(CHECK_PHASE) $(LAST_PHASE)
# Every local stack the checks start enforces each function's IAM role (infra/herald_local/
# access.py) and records the grants its calls used under GRANTS_DIR; `grant-report` then fails
# on any call a role refused and lists the grants no test used (docs/deploy.md lists those kept
# on purpose, with the reason).
GRANTS_DIR := target/grants
test: sam-venv
	@mkdir -p target; rm -rf $(GRANTS_DIR); mkdir -p $(GRANTS_DIR); \
	export HERALD_LOCAL_GRANTS_DIR=$(CURDIR)/$(GRANTS_DIR); \
	set -m; infra/sam-build.sh > target/sam-build.log 2>&1 & sam=$$!; set +m; \
	status=0; \
	$(MAKE) --no-print-directory -j2 --output-sync=target $(BUILD_PHASE) || status=$$?; \
	if [ $$status -eq 0 ]; then $(MAKE) --no-print-directory -j3 --output-sync=target $(CHECK_PHASE) || status=$$?; fi; \
	if [ $$status -eq 0 ]; then $(MAKE) --no-print-directory $(LAST_PHASE) || status=$$?; fi; \
	if [ $$status -eq 0 ]; then $(MAKE) --no-print-directory grant-report || status=$$?; fi; \
	if [ $$status -ne 0 ]; then kill -- -$$sam 2>/dev/null || true; wait $$sam || true; echo "make test: FAILED"; exit $$status; fi; \
	echo "==> waiting for sam build (target/sam-build.log)"; \
	if ! wait $$sam; then tail -n 40 target/sam-build.log; echo "make test: sam build FAILED"; exit 1; fi; \
	tail -n 14 target/sam-build.log; \
	echo "make test: all checks passed"

# The grant report of the stacks `make test` ran (see GRANTS_DIR above); `make grant-report
# GRANT_ARGS=--calls` also lists every (function, action, resource) the tests used.
GRANT_ARGS ?=
grant-report: venv
	PYTHONPATH=infra $(VENV)/bin/python -m herald_local grants $(GRANTS_DIR) --documented docs/deploy.md $(GRANT_ARGS)

# sam build and the template lint share the pinned SAM CLI virtualenv: created once, up front.
sam-venv:
	@PYTHON=$(PYTHON) bash -c 'source infra/venv.sh && ensure_venv .venv-sam infra/requirements-sam.txt'

bench: venv
	$(MAKE) build PROFILE=release
	HERALD_PROFILE=release bench/run.sh

clean:
	cargo clean
	rm -rf $(VENV) .venv-sam .venv-checkov .venv-schemathesis .aws-sam infra/.state
