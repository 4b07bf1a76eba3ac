#!/usr/bin/env bash
# The slo experiment at several pool sizes, for a many-core machine (see README: benchmarks).
# Build here, then copy the stripped binary into the git-excluded `device-bin/`:
#   cargo build --release -p dirigo-bench && mkdir -p device-bin &&
#   cp target/release/dirigo-bench device-bin/ && strip device-bin/dirigo-bench
# and run this script there with OUT set to the directory the results go to.
set -u
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the results directory}"
ulimit -l unlimited 2>/dev/null || true
nproc > "$OUT/nproc.txt"
for n in ${SHARDS:-4 14 8}; do
  timeout 170 device-bin/dirigo-bench slo --shards "$n" --out "$OUT/slo-$n" > "$OUT/slo-$n.log" 2>&1
  echo "slo $n rc=$?" >> "$OUT/status.txt"
done
