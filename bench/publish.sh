#!/usr/bin/env bash
# Client publish latency on the local stack (bench/src/publish.rs): a 10-member room, one member
# publishing ephemeral (typing) and logged (chat) messages, p50/p99 until the other nine have them.
#   bench/publish.sh [rounds]                   (default 200 of each kind)
# The stack runs target/${HERALD_PROFILE:-debug}/herald (build it first: `make build`, or
# `make build PROFILE=release` and HERALD_PROFILE=release for the optimized functions). The driver
# is only a WebSocket client and is built in the dev profile.
set -euo pipefail
cd "$(dirname "$0")/.."
HERALD_PROFILE="${HERALD_PROFILE:-debug}" cargo run --quiet -p herald-bench --bin publish-bench -- "${1:-200}"
