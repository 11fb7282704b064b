# Herald — two commands on a fresh machine:
#   make dev    build the functions and run the whole system locally (no Docker, no AWS account)
#   make test   everything CI checks
# Needs only the machine's Rust toolchain and python3; every Python tool is pinned and installed
# into a project virtualenv on first use.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
# `make dev` runs the release binaries (what Lambda runs). `make test` builds the functions and
# the tests in one profile, `ci` (release optimizations without LTO, see Cargo.toml), so the AWS
# SDK is compiled once for both, and the only other builds are clippy's check and `sam build`.
PROFILE ?= release
TEST_PROFILE ?= ci
flag = $(if $(filter release,$(1)),--release,--profile $(1))
VENV := .venv
VENV_STAMP := $(VENV)/.installed
# Tests run this many at once inside a test binary; most of their time is waiting on queues.
TEST_THREADS ?= 8

.PHONY: help dev build build-test test fmt clippy unit-and-e2e stack-tests client-tests lint-template api-contract sam-build bench clean venv

help:
	@echo "make dev    build the functions and run the local stack (WebSocket + HTTP API, SQS, scheduler)"
	@echo "make test   fmt, clippy, unit + end-to-end tests, local-stack and client tests, template lint, API contract, sam build"
	@echo "make bench  fan-out benchmark (bench/RESULTS.md)"

venv: $(VENV_STAMP)
$(VENV_STAMP): infra/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/requirements.txt
	touch $@

build:
	cargo build $(call flag,$(PROFILE)) --bins

build-test:
	cargo build $(call flag,$(TEST_PROFILE)) --bins

dev: venv build
	PYTHONPATH=infra $(VENV)/bin/python -m herald_local --profile $(PROFILE) --visibility-timeout 10 --env HERALD_LOG_FORMAT=text

fmt:
	cargo fmt --all -- --check

clippy:
	cargo clippy --all-targets -- -D warnings

# Unit tests of the core library and the end-to-end tests (tests/), which start the local stack
# with the real binaries built above.
unit-and-e2e: venv build-test
	HERALD_PROFILE=$(TEST_PROFILE) cargo test $(call flag,$(TEST_PROFILE)) --workspace -- --test-threads $(TEST_THREADS)

# The local stack's own tests (Runtime API, gateway, event sources) with fake functions.
stack-tests: venv
	$(VENV)/bin/python -m pytest -q infra/tests

lint-template:
	infra/lint-template.sh

api-contract: venv build-test
	HERALD_PROFILE=$(TEST_PROFILE) infra/api-contract.sh

sam-build:
	infra/sam-build.sh

# The browser client's tests (Node's test runner) against the local stack.
client-tests: venv build-test
	HERALD_PROFILE=$(TEST_PROFILE) client/run-tests.sh

test: fmt clippy unit-and-e2e stack-tests client-tests lint-template api-contract sam-build
	@echo "make test: all checks passed"

bench: venv build
	HERALD_PROFILE=$(PROFILE) bench/run.sh

clean:
	cargo clean
	rm -rf $(VENV) .venv-sam .venv-checkov .venv-schemathesis .aws-sam infra/.state
