#!/usr/bin/env bash
# Builds every Herald function with `sam build` (BuildMethod rust-cargolambda) offline, then lists
# the artifacts in .aws-sam/build and records each binary's size in .aws-sam/build-sizes.tsv.
#
#   infra/sam-build.sh                      # x86_64 (this machine has only the x86_64 Rust std)
#   HERALD_ARCH=arm64 infra/sam-build.sh    # Graviton; first, on a connected machine:
#                                           #   rustup target add aarch64-unknown-linux-gnu
#   infra/sam-build.sh --debug              # extra arguments go to `sam build`
#   SAM_BUILD_MODE=debug infra/sam-build.sh # unoptimised binaries (cargo lambda build without --release)
#
# What SAM does (aws-sam-cli 1.170 / aws-lambda-builders, workflow rust-cargo): it builds IN SOURCE
# (no copy of the workspace), running, in the CodeUri directory (the workspace root), once per
# function and one at a time:
#     cargo lambda build --release [--arm64] --bin <Metadata.BuildProperties.Binary>
# with CARGO_TARGET_DIR = the workspace target directory from `cargo metadata` unless
# CARGO_TARGET_DIR is already set, then copies $CARGO_TARGET_DIR/lambda/<binary>/bootstrap to
# .aws-sam/build/<LogicalId>/bootstrap. cargo lambda compiles with cargo-zigbuild (zig comes from
# the ziglang wheel of .venv-sam, so no toolchain download) for <arch>-unknown-linux-gnu, adds
# RUSTFLAGS "-C target-cpu=<Lambda's CPU>", and applies its release defaults (strip, thin LTO,
# codegen-units=1, panic=abort) only where the workspace's [profile.release] is silent.
# This script sets CARGO_TARGET_DIR=target/sam (override it if you like), so:
#   * the nine builds share one target dir: dependencies compile once, the other eight builds
#     only compile their own binary crate and link;
#   * a second run is incremental (only what changed is rebuilt);
#   * it never waits on, nor invalidates, developers' `cargo build` in target/ (different
#     RUSTFLAGS and target triple would rebuild everything anyway).
#
# The built template (.aws-sam/build/template.yaml) still says Architecture=<default arm64>: deploy
# an x86_64 build with `sam deploy --parameter-overrides Architecture=x86_64 ...`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ARCH="${HERALD_ARCH:-x86_64}"
PYTHON="${PYTHON:-python3}"

case "$ARCH" in
    x86_64) TRIPLE=x86_64-unknown-linux-gnu ;;
    arm64) TRIPLE=aarch64-unknown-linux-gnu ;;
    *) echo "HERALD_ARCH must be x86_64 or arm64, not '$ARCH'" >&2; exit 2 ;;
esac

# Every function of the template needs its binary in the workspace. The nine functions share
# one (`herald`, crate functions/lambda): SAM runs cargo lambda once per function, the first run
# builds and links it, the other eight find it fresh and only copy it.
mapfile -t BINARIES < <(sed -n 's/^ *Binary: *\([A-Za-z0-9_-]*\).*/\1/p' template.yaml)
missing=()
for b in $(printf '%s\n' "${BINARIES[@]}" | sort -u); do
    grep -hs -A1 '^\[\[bin\]\]' functions/*/Cargo.toml | grep -qx "name = \"$b\"" || missing+=("$b")
done
if ((${#missing[@]})); then
    echo "sam-build: no [[bin]] in functions/*/Cargo.toml for: ${missing[*]}" >&2
    exit 3
fi

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TRIPLE"; then
    echo "sam-build: Rust target $TRIPLE is not installed. On a machine with network access run:" >&2
    echo "    rustup target add $TRIPLE" >&2
    exit 4
fi

# Tools: aws-sam-cli and cargo-lambda (+ zig) from the pinned virtualenv .venv-sam.
# shellcheck source=infra/venv.sh
source infra/venv.sh
ensure_venv .venv-sam infra/requirements-sam.txt
# SAM looks up `cargo` and `cargo-lambda` on PATH; cargo-zigbuild finds zig as `python3 -m ziglang`.
export PATH="$ROOT/.venv-sam/bin:$PATH"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_EC2_METADATA_DISABLED=true
export SAM_CLI_TELEMETRY=0
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/sam}"
# SAM's build runs offline so that it builds exactly what Cargo.lock names from the registry
# cache. cargo lambda resolves the whole workspace (tests' and benches' dependencies too), so on a
# machine whose cache is empty, or was filled only by `make dev`, every locked crate is fetched
# first; `--locked` fails instead of changing Cargo.lock. CARGO_NET_OFFLINE=true skips the fetch
# (an air-gapped machine whose cache was filled elsewhere).
if [[ "${CARGO_NET_OFFLINE:-}" != true ]]; then
    echo "==> cargo fetch --locked (what the offline build below resolves)"
    cargo fetch --locked
fi
export CARGO_NET_OFFLINE=true

NICE=(nice -n "${HERALD_NICE:-19}")
command -v ionice >/dev/null && NICE=(ionice -c 3 "${NICE[@]}")

echo "==> sam build for $ARCH ($TRIPLE), CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
start=$(date +%s)
"${NICE[@]}" sam build --template-file template.yaml --build-dir .aws-sam/build \
    --parameter-overrides "Architecture=$ARCH" "$@"
elapsed=$(( $(date +%s) - start ))

echo
echo "==> artifacts in .aws-sam/build (built in ${elapsed}s)"
report=.aws-sam/build-sizes.tsv
{
    printf '# sam build %s, %s, %ss, %s\n' "$ARCH" "${SAM_BUILD_MODE:-release}" "$elapsed" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'function\tbytes\tMiB\tzip_bytes\tarch\n'
    for dir in .aws-sam/build/*/; do
        fn="$(basename "$dir")"
        bin="$dir/bootstrap"
        [[ -f "$bin" ]] || continue
        bytes=$(stat -c %s "$bin")
        # What Lambda stores: the zipped deployment package.
        zipped=$(python3 -c 'import io,sys,zipfile
b=io.BytesIO(); z=zipfile.ZipFile(b,"w",zipfile.ZIP_DEFLATED); z.write(sys.argv[1],"bootstrap"); z.close(); print(len(b.getvalue()))' "$bin")
        arch=$(file -b "$bin" | grep -o 'x86-64\|aarch64\|ARM aarch64' | head -1 || true)
        printf '%s\t%s\t%s\t%s\t%s\n' "$fn" "$bytes" "$(awk -v b="$bytes" 'BEGIN{printf "%.2f", b/1048576}')" "$zipped" "${arch:-?}"
    done
} > "$report"
head -1 "$report"
tail -n +2 "$report" | column -t -s $'\t'
echo
echo "recorded in $report"
count=$(grep -vc '^#\|^function' "$report" || true)
if [[ "$count" -ne "${#BINARIES[@]}" ]]; then
    echo "sam-build: expected ${#BINARIES[@]} functions, found $count" >&2
    exit 1
fi
