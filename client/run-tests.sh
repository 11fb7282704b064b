#!/usr/bin/env bash
# Tests of the browser client against the real local stack (see test/herald.test.mjs).
# HERALD_PROFILE=debug|release (default debug) picks target/<profile>/herald; it must be built.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
node --test test/
