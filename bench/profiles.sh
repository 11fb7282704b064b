#!/usr/bin/env bash
# Builds the one function binary, measured as dispatch (three SDK clients and the @connections
# client: the biggest init),
# under the release profile and single-setting variants of it, and prints a Markdown table of
# build time, binary size, zipped size and init time (bench/init_time.py) for docs/performance.md.
#   bench/profiles.sh [variant ...]        (default: all; each builds from scratch in its own
#                                           target dir under target/profiles/, ~8 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A CONFIG=(
  [release]=""
  [lto-fat]='profile.release.lto="fat"'
  [opt-s]='profile.release.opt-level="s"'
  [opt-z]='profile.release.opt-level="z"'
  [unwind]='profile.release.panic="unwind"'
  [cgu-16]='profile.release.codegen-units=16'
)
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(release lto-fat opt-s unwind cgu-16)

echo "| variant | build (from scratch) | binary | zipped | init (median of 21) |"
echo "|---|---|---|---|---|"
for v in "${variants[@]}"; do
  dir="target/profiles/$v"
  args=(build --release -p herald-lambda --quiet)
  [ -z "${CONFIG[$v]}" ] || args+=(--config "${CONFIG[$v]}")
  start=$(date +%s)
  CARGO_TARGET_DIR="$dir" cargo "${args[@]}"
  built=$(( $(date +%s) - start ))
  bin="$dir/release/herald"
  size=$(stat -c %s "$bin")
  zipped=$(zip -q -9 - "$bin" | wc -c)
  init=$(python3 bench/init_time.py "$bin" 21 dispatch | sed 's/^init //; s/ (.*//')
  printf '| %s | %d min %02d s | %.1f MiB | %.1f MB | %s |\n' "$v" $((built / 60)) $((built % 60)) \
    "$(echo "$size / 1048576" | bc -l)" "$(echo "$zipped / 1000000" | bc -l)" "$init"
done
