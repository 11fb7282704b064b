#!/usr/bin/env bash
# The demo page in headless Chromium against the real local stack (see demo.test.mjs).
# Needs Debian's chromium (/usr/bin/chromium, or $CHROMIUM; .ci/run installs it), the project's
# .venv and the built binary of HERALD_PROFILE=debug|release (default debug).
set -euo pipefail
cd "$(dirname "$0")"
# npm writes node_modules/.package-lock.json on every install: newer than the lockfile means
# the pinned playwright-core is in place already (saves a reinstall on every run).
if [[ ! node_modules/.package-lock.json -nt package-lock.json ]]; then
    npm ci --no-audit --no-fund --silent
fi
node --test demo.test.mjs tabs.test.mjs
