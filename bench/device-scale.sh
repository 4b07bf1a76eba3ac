#!/usr/bin/env bash
# Issue 12's scaling check for a many-core machine: W1 against timely-dataflow at 1, 2, 4, 8 and
# 14 shards (`scale`), then `keyed-count` and `nexmark` on 2 shards (on a quiet machine, where a
# 2-vCPU VM's shards run at different speeds). Build here, then copy the stripped binary
# into the git-excluded `device-bin/`:
#   cargo build --release -p dirigo-bench && mkdir -p device-bin &&
#   cp target/release/dirigo-bench device-bin/ && strip device-bin/dirigo-bench
# and run this script there with OUT set to the directory the results go to (SHARDS=2 tries it
# on a 2-core machine). About 4 minutes on 16 cores.
set -u
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the results directory}"
ulimit -l unlimited 2>/dev/null || true
nproc > "$OUT/nproc.txt"
lscpu > "$OUT/lscpu.txt" 2>&1
timeout 300 device-bin/dirigo-bench scale --shards "${SHARDS:-14}" --out "$OUT/scale" > "$OUT/scale.log" 2>&1
echo "scale rc=$?" >> "$OUT/status.txt"
timeout 120 device-bin/dirigo-bench keyed-count --out "$OUT/keyed-count" > "$OUT/keyed-count.log" 2>&1
echo "keyed-count rc=$?" >> "$OUT/status.txt"
timeout 120 device-bin/dirigo-bench nexmark --out "$OUT/nexmark" > "$OUT/nexmark.log" 2>&1
echo "nexmark rc=$?" >> "$OUT/status.txt"
