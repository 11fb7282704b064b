#!/usr/bin/env bash
# Runs the fan-out benchmark against the local stack and prints a Markdown table for RESULTS.md.
#   bench/run.sh [connections] [concurrency] [rounds]      (make bench: 1000 64 3)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${HERALD_PROFILE:-release}"
flag=$([[ "$PROFILE" == release ]] && echo --release || echo --profile "$PROFILE")
HERALD_PROFILE="$PROFILE" cargo run --quiet $flag -p herald-bench -- "${1:-1000}" "${2:-64}" "${3:-3}"
