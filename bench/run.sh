#!/usr/bin/env bash
# Runs the fan-out benchmark against the local stack and prints a Markdown table for RESULTS.md.
#   bench/run.sh [connections] [concurrency] [rounds]      (make bench: 1000 64 3)
# The stack runs target/${HERALD_PROFILE:-release}/ functions (build them first: `make build`);
# the driver itself is built in release too: its raw loop is the baseline dispatch is held to.
# The raw loop posts unsigned, so the stack accepts unsigned @connections calls here; Herald's
# posts are still signed (that cost is measured), the gateway just does not verify anyone's.
set -euo pipefail
cd "$(dirname "$0")/.."
HERALD_LOCAL_MANAGEMENT_AUTH=none HERALD_PROFILE="${HERALD_PROFILE:-release}" cargo run --quiet --release -p herald-bench -- "${1:-1000}" "${2:-64}" "${3:-3}"
