#!/usr/bin/env bash
# Lints Herald's SAM template, offline (only the one-time installs reach PyPI):
#   1. contract   - template.yaml defines every logical id, handler and HERALD_* variable of
#                   docs/runtime-contract.md (the functions and the local stack rely on them)
#   2. cfn-lint   - CloudFormation/SAM linter (errors AND warnings fail)
#   3. sam validate --lint   - SAM translation + cfn-lint through SAM CLI
#   4. sam validate          - plain SAM translation (local; no AWS call, no credentials)
#   5. checkov    - security/compliance policies (framework cloudformation, --skip-download);
#                   every skipped check is justified next to the resource in template.yaml
#                   (Metadata: checkov: skip: - id: ... comment: ...)
#
# Tools live in two virtualenvs at the repository root, created/updated on demand from pinned
# requirements: .venv-sam (infra/requirements-sam.txt: aws-sam-cli, cfn-lint, cargo-lambda) and
# .venv-checkov (infra/requirements-checkov.txt). They are separate because checkov pins an older
# boto3 that breaks aws-sam-cli.
#
# Usage: infra/lint-template.sh [template.yaml]      (exit 0 only if all five are clean)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TEMPLATE="${1:-template.yaml}"
PYTHON="${PYTHON:-python3}"

# Offline: a region for SAM/boto, no credential or metadata lookups, no telemetry, no
# Bridgecrew/Prisma downloads or version checks from checkov.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_REGION="${AWS_REGION:-$AWS_DEFAULT_REGION}"
export AWS_EC2_METADATA_DISABLED=true
export SAM_CLI_TELEMETRY=0
export SAM_CLI_POLL_DELAY="${SAM_CLI_POLL_DELAY:-5}"
export BC_SKIP_MAPPING=TRUE
export CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
export PIP_DISABLE_PIP_VERSION_CHECK=1

# shellcheck source=infra/venv.sh
source infra/venv.sh

ensure_venv .venv-sam infra/requirements-sam.txt
ensure_venv .venv-checkov infra/requirements-checkov.txt

SAM=.venv-sam/bin/sam
CFN_LINT=.venv-sam/bin/cfn-lint
CHECKOV=.venv-checkov/bin/checkov
failed=()

step() { echo; echo "==> $*"; }

step "contract: $TEMPLATE vs docs/runtime-contract.md"
if .venv-sam/bin/python - "$TEMPLATE" docs/runtime-contract.md <<'PY'
import re, sys, yaml

class Loader(yaml.SafeLoader):
    pass

def any_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}

Loader.add_multi_constructor("!", any_tag)
template_path, contract_path = sys.argv[1:3]
tpl = yaml.load(open(template_path), Loader=Loader)
contract = open(contract_path).read()
res = tpl.get("Resources", {})
errors = []

# Functions table: | `LogicalId` | `handler` | trigger |. One binary serves them all.
functions = re.findall(r"^\|\s*`(\w+Function)`\s*\|\s*`([\w-]+)`\s*\|", contract, re.M)
if len(functions) != 9:
    errors.append(f"expected 9 functions in the contract, parsed {len(functions)}")
glob = tpl.get("Globals", {}).get("Function", {})
fn_env = {}
for lid, handler in functions:
    r = res.get(lid)
    if not r or r.get("Type") != "AWS::Serverless::Function":
        errors.append(f"{lid}: missing or not AWS::Serverless::Function")
        continue
    p, md = r.get("Properties", {}), r.get("Metadata", {})
    fn_env[lid] = (p.get("Environment") or {}).get("Variables") or {}
    if md.get("BuildMethod") != "rust-cargolambda":
        errors.append(f"{lid}: Metadata.BuildMethod must be rust-cargolambda")
    if (md.get("BuildProperties") or {}).get("Binary") != "herald":
        errors.append(f"{lid}: Metadata.BuildProperties.Binary must be herald (the one binary)")
    for key, want in (("Runtime", "provided.al2023"), ("Handler", handler), ("CodeUri", ".")):
        if p.get(key, glob.get(key)) != want:
            errors.append(f"{lid}: {key} must be {want}")

# Resources table: | `LogicalId` | type | notes |   (and `A` → `B` for queue/DLQ pairs)
for row in re.findall(r"^\|\s*(`\w+`(?:\s*→\s*`\w+`)?)\s*\|\s*(?:DynamoDB|SQS|`AWS::|IAM)", contract, re.M):
    for lid in re.findall(r"`(\w+)`", row):
        if lid not in res:
            errors.append(f"resource {lid} is missing")

# Environment table: every HERALD_* name must be set in Globals or on the functions that use it
# (the JWT settings and secret go only to the two functions that verify tokens).
names = sorted(set(re.findall(r"`(HERALD_[A-Z0-9_]+)`", contract)))
genv = (glob.get("Environment") or {}).get("Variables") or {}
for name in names:
    if name not in genv and not any(name in env for env in fn_env.values()):
        errors.append(f"environment variable {name} is set neither in Globals nor on a function")
for name in (n for n in genv if n.startswith("HERALD_JWT_")):
    errors.append(f"{name} is in Globals: only the authorizer and the API may get the JWT settings")

for e in errors:
    print("  contract:", e)
print(f"  {len(functions)} functions, {len(names)} HERALD_* variables checked: "
      + ("OK" if not errors else f"{len(errors)} problem(s)"))
sys.exit(1 if errors else 0)
PY
then :; else failed+=(contract); fi

step "cfn-lint $($CFN_LINT --version 2>&1)"
if "$CFN_LINT" --non-zero-exit-code warning -- "$TEMPLATE"; then echo "  clean"; else failed+=(cfn-lint); fi

step "sam validate --lint ($($SAM --version))"
if "$SAM" validate --lint --template-file "$TEMPLATE"; then :; else failed+=("sam validate --lint"); fi

step "sam validate"
if "$SAM" validate --template-file "$TEMPLATE"; then :; else failed+=("sam validate"); fi

step "checkov $($CHECKOV --version) (cloudformation, offline)"
if "$CHECKOV" --file "$TEMPLATE" --framework cloudformation --skip-download --compact --quiet; then
    echo "  clean (skipped checks are justified in the template)"
else
    failed+=(checkov)
fi

echo
if ((${#failed[@]})); then
    echo "lint-template: FAILED: ${failed[*]}"
    exit 1
fi
echo "lint-template: all clean (contract, cfn-lint, sam validate --lint, sam validate, checkov)"
