#!/usr/bin/env bash
# The demo page in headless Chromium against the real local stack (see demo.test.mjs).
# Needs Debian's chromium (/usr/bin/chromium, or $CHROMIUM; .ci/run installs it), the project's
# .venv and the built binary of HERALD_PROFILE=debug|release (default debug).
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --silent
node --test demo.test.mjs
