#!/usr/bin/env bash
# Contract test of the HTTP API: docs/openapi.yaml must describe exactly what the `api` function
# answers. Starts the local stack (infra/herald_local, moto, the real function binaries
# target/$HERALD_PROFILE/*), mints tokens, and runs schemathesis against the HTTP API with every
# phase (explicit examples, coverage, fuzzing, stateful via the document's links). Checks:
#   not_a_server_error            no 5xx, ever
#   status_code_conformance       every status is documented for its operation
#   content_type_conformance      bodies carry the documented media type
#   response_schema_conformance   bodies validate against the documented schema
#   response_headers_conformance  documented headers are present and valid
#   negative_data_rejection       requests the document calls invalid are refused with a 4xx
#   ignored_auth                  without / with a bad token every operation answers 401
# Deterministic: fixed seed, one worker, no example database, a bounded number of examples per
# operation (API_CONTRACT_MAX_EXAMPLES, 25 by default).
#
# Two passes, one per caller, both of tenant `acme` (the tenant of the document's examples, so
# those requests can succeed; fuzzed tenants get the documented 403): `contract-svc` with roles
# service,admin, then the plain user `u1` (no roles; the examples' recipient). The run uses a copy
# of the document whose example `deliverAt` values are moved to the near future (they must be in
# the future and at most 366 days ahead); nothing else is changed.
#
# schemathesis lives in its own virtualenv .venv-schemathesis (infra/requirements-schemathesis.txt,
# exact pins), separate from the project's .venv (infra/requirements.txt: moto, aiohttp, ...) that
# runs the stack.
#
# Usage: [HERALD_PROFILE=debug|release] infra/api-contract.sh [extra schemathesis run options]
# Exit status 0 only when every check passed; the stack is stopped in every case.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROFILE="${HERALD_PROFILE:-debug}"
PYTHON="${PYTHON:-python3}"
SPEC="docs/openapi.yaml"
SEED="${API_CONTRACT_SEED:-20261123}"
MAX_EXAMPLES="${API_CONTRACT_MAX_EXAMPLES:-25}"
TENANT="acme"
CHECKS="not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
CHECKS+=",response_headers_conformance,negative_data_rejection,ignored_auth"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Loopback only: never route the test traffic through a proxy from the environment.
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

# shellcheck source=infra/venv.sh
source infra/venv.sh

# --- prerequisites ------------------------------------------------------------------------------
missing=()
for bin in $(sed -n 's/^ *Binary: *\([A-Za-z0-9_-]*\).*/\1/p' template.yaml); do
    [[ -x "target/$PROFILE/$bin" ]] || missing+=("target/$PROFILE/$bin")
done
if ((${#missing[@]})); then
    echo "api-contract: missing function binaries (make build PROFILE=$PROFILE):" "${missing[@]}" >&2
    exit 2
fi
ensure_venv .venv-schemathesis infra/requirements-schemathesis.txt
if [[ ! -x .venv/bin/python ]]; then  # the project's virtualenv; created here only if absent
    echo "==> creating .venv"
    "$PYTHON" -m venv .venv
    .venv/bin/pip install --quiet -r infra/requirements.txt
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/herald-api-contract.XXXXXX")"
STACK_PID=""
RUN_PID=""
cleanup() {
    local status=$?
    if [[ -n "$RUN_PID" ]]; then
        kill -TERM "$RUN_PID" 2>/dev/null || true
        wait "$RUN_PID" 2>/dev/null || true
    fi
    if [[ -n "$STACK_PID" ]] && kill -0 "$STACK_PID" 2>/dev/null; then
        kill -TERM "$STACK_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$STACK_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$STACK_PID" 2>/dev/null || true
        wait "$STACK_PID" 2>/dev/null || true
    fi
    if ((status != 0)) && [[ -s "$WORK/stack.log" ]]; then
        echo "--- last lines of the local stack's log ---" >&2
        tail -n 40 "$WORK/stack.log" >&2
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the local stack ----------------------------------------------------------------------------
echo "==> starting the local stack (binaries target/$PROFILE)"
started=$SECONDS
PYTHONPATH=infra .venv/bin/python -m herald_local --profile "$PROFILE" \
    --ready-file "$WORK/ready.json" --parent-pid $$ --timeout-scale 3 --quiet >"$WORK/stack.log" 2>&1 &
STACK_PID=$!
until [[ -s "$WORK/ready.json" ]]; do
    if ! kill -0 "$STACK_PID" 2>/dev/null; then
        echo "api-contract: the local stack exited during start-up" >&2
        exit 1
    fi
    if ((SECONDS - started > 120)); then
        echo "api-contract: the local stack was not ready within 120 s" >&2
        exit 1
    fi
    sleep 0.2
done
HTTP_URL="$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["httpUrl"])' "$WORK/ready.json")"
echo "    ready in $((SECONDS - started)) s: HTTP API $HTTP_URL"

# mint SUB ROLES: a token of the test tenant, valid for an hour.
mint() {
    PYTHONPATH=infra .venv/bin/python -m herald_local token --ready-file "$WORK/ready.json" \
        --sub "$1" --tenant "$TENANT" --roles "$2" --ttl 3600
}

# The run's copy of the document: example deliverAt values moved to the near future.
.venv-schemathesis/bin/python - "$SPEC" "$WORK/openapi.yaml" "$TENANT" <<'PY'
import datetime
import sys

import yaml

source, target, tenant = sys.argv[1:4]
with open(source, encoding="utf-8") as f:
    doc = yaml.safe_load(f)
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
for offset, (name, example) in enumerate(sorted(doc["components"]["examples"].items()), start=1):
    value = example.get("value")
    if not isinstance(value, dict):
        continue
    if value.get("tenant") not in (None, tenant):
        sys.exit(f"example {name}: tenant {value['tenant']!r}, the test token's is {tenant!r}")
    if "deliverAt" in value:
        at = now + datetime.timedelta(minutes=30 + offset)
        value["deliverAt"] = at.isoformat().replace("+00:00", "Z")
with open(target, "w", encoding="utf-8") as f:
    yaml.safe_dump(doc, f, sort_keys=False, allow_unicode=True)
PY

# --- schemathesis -------------------------------------------------------------------------------
# run_pass NAME TOKEN [options]: one schemathesis run; its status is collected, not fatal.
failed=()
run_pass() {
    local name="$1" token="$2" status=0 ran=$SECONDS
    shift 2
    echo "==> [$name] schemathesis $SPEC against $HTTP_URL (seed $SEED, at most $MAX_EXAMPLES examples per operation)"
    # In the background + wait, so that a signal to this script is handled at once (cleanup).
    (cd "$WORK" && exec "$ROOT/.venv-schemathesis/bin/schemathesis" run "$WORK/openapi.yaml" \
        --url "$HTTP_URL" \
        --header "Authorization: Bearer $token" \
        --checks "$CHECKS" \
        --max-examples "$MAX_EXAMPLES" \
        --seed "$SEED" \
        --workers 1 \
        --generation-database none \
        --request-timeout 35 \
        --no-color \
        "$@") &
    RUN_PID=$!
    wait "$RUN_PID" || status=$?
    RUN_PID=""
    echo "==> [$name] finished in $((SECONDS - ran)) s with status $status"
    ((status == 0)) || failed+=("$name")
}

SERVICE_TOKEN="$(mint contract-svc service,admin)"
USER_TOKEN="$(mint u1 "")"
[[ -n "$SERVICE_TOKEN" && -n "$USER_TOKEN" ]] || { echo "api-contract: no token" >&2; exit 1; }
# A service/admin caller: publishing, subscriptions, everyone's reminders, any named group.
run_pass service "$SERVICE_TOKEN" "$@"
# A plain user (u1, the recipient of the document's examples): the 403/404 side of every rule.
run_pass user "$USER_TOKEN" "$@"

if ((${#failed[@]})); then
    echo "api-contract: FAILED (${failed[*]}); the HTTP API and docs/openapi.yaml disagree" >&2
    exit 1
fi
echo "api-contract: docs/openapi.yaml holds for both callers"
