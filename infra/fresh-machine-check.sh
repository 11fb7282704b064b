#!/usr/bin/env bash
# README's commands on a new machine: clones this repository's committed HEAD into a temporary
# folder and runs `make test` there (or the make targets given, in order) with empty cargo
# registry, uv, pip and npm caches. Only the toolchain stays: rustup's Rust, python3, node and
# npm, and Debian's chromium for the browser tests (.ci/run installs it). A step that only works
# because something was cached by an earlier run, or installed by hand, fails here.
#
#   infra/fresh-machine-check.sh               # make test on a fresh clone, empty caches
#   infra/fresh-machine-check.sh test dev      # make test, then make dev (stopped at its banner)
#   FRESH_KEEP=1 infra/fresh-machine-check.sh  # keep the folder (clone, target/, caches) after it
#
# .ci/run runs it, so every CI run is a new-machine run. The time it took is printed last.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
targets=("$@")
((${#targets[@]})) || targets=(test)
for t in "${targets[@]}"; do
    case "$t" in
        test | dev) ;;
        *) echo "fresh-machine-check: README's commands are 'test' and 'dev', not '$t'" >&2; exit 2 ;;
    esac
done

work="$(mktemp -d "${TMPDIR:-/tmp}/herald-fresh.XXXXXX")"
cleanup() {
    if [[ -n "${FRESH_KEEP:-}" ]]; then
        echo "fresh-machine-check: kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

git clone --quiet --no-hardlinks "$ROOT" "$work/herald"
mkdir -p "$work/cargo-home" "$work/cache"
# Empty caches. CARGO_HOME moves the registry and git checkouts, not the toolchain: the rustup
# proxies on PATH find it under RUSTUP_HOME.
export CARGO_HOME="$work/cargo-home"
export UV_CACHE_DIR="$work/cache/uv"
export PIP_CACHE_DIR="$work/cache/pip"
export npm_config_cache="$work/cache/npm"
export XDG_CACHE_HOME="$work/cache"
unset CARGO_TARGET_DIR CARGO_NET_OFFLINE

cd "$work/herald"
echo "==> fresh clone of $(git rev-parse --short HEAD) in $work/herald, empty caches under $work"
start=$(date +%s)
for t in "${targets[@]}"; do
    step=$(date +%s)
    if [[ "$t" == dev ]]; then
        # `make dev` runs until stopped: it passes once the stack prints its banner.
        log="$work/make-dev.log"
        set -m
        make dev > "$log" 2>&1 &
        pid=$!
        set +m
        until grep -q 'demo page ' "$log" 2>/dev/null; do
            if ! kill -0 "$pid" 2>/dev/null; then
                tail -n 40 "$log"
                echo "fresh-machine-check: make dev ended before its banner" >&2
                exit 1
            fi
            sleep 2
        done
        kill -INT -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "==> make dev: banner after $(( $(date +%s) - step )) s"
    else
        make "$t"
        echo "==> make $t: passed in $(( $(date +%s) - step )) s"
    fi
done
echo "fresh-machine-check: ${targets[*]} passed on a fresh clone with empty caches in $(( $(date +%s) - start )) s"
