#!/usr/bin/env bash
# Tests of the browser client against the real local stack (see test/herald.test.mjs).
# HERALD_PROFILE=debug|release (default debug) picks target/<profile>/herald; it must be built.
set -euo pipefail
cd "$(dirname "$0")"
# npm writes node_modules/.package-lock.json on every install: newer than the lockfile means the
# pinned dev dependencies are in place (and the chaos suite, which shares them, may be using them).
if [[ ! node_modules/.package-lock.json -nt package-lock.json ]]; then
    npm ci --no-audit --no-fund
fi
node --test test/

# The package as a user gets it: `npm pack`, installed into a fresh project, imported by name.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
npm pack --silent --pack-destination "$tmp" >/dev/null
(
    cd "$tmp"
    npm init -y >/dev/null
    npm install --no-audit --no-fund --offline ./herald-client-*.tgz >/dev/null
    node --input-type=module -e '
        import { HeraldClient, HeraldError, SUBPROTOCOL } from "@herald/client";
        if (typeof HeraldClient !== "function" || typeof HeraldError !== "function" || SUBPROTOCOL !== "herald.v1") {
            console.error("the packed client does not export what herald.d.ts declares");
            process.exit(1);
        }
        console.log("packed client: installs from its tarball and imports by name");'
)
