#!/usr/bin/env bash
# Two or more builds of `dirigo` timed in turn on one config, round by round: on a noisy machine
# (a shared VM moves 10-30% from one minute to the next) only figures taken side by side compare.
#
#   bench/alternate.sh CONFIG ROUNDS DIRIGO_A DIRIGO_B [DIRIGO_C ...]
#   bench/alternate.sh configs/w1.toml 8 /tmp/dirigo-before target/release/dirigo
#
# Each round runs every build once, in the order given, `dirigo run CONFIG --json` with the
# summary written to a file (a reader piped beside the run would take a core from a shard).
# Printed per build: the median and the minimum of CPU ns per event (the summary's
# `cpu_seconds` over the first app's `events_in`) and of its p99 latency, then every round's
# figures. The minimum is the least disturbed round; the median, the usual one. A build whose
# run fails stops the script with its error.
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n '2,13p' "$0" >&2
    exit 2
fi
config=$1
rounds=$2
shift 2
builds=("$@")
for b in "${builds[@]}"; do
    [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for r in $(seq "$rounds"); do
    for i in "${!builds[@]}"; do
        if ! "${builds[$i]}" run "$config" --json > "$work/summary.json" 2> "$work/stderr"; then
            echo "round $r: ${builds[$i]} failed:" >&2
            tail -20 "$work/stderr" >&2
            exit 1
        fi
        python3 - "$work/summary.json" >> "$work/build-$i.txt" << 'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
a = d["apps"][0]
print(d["cpu_seconds"] / max(a["events_in"], 1) * 1e9, a["latency_us"]["p99"])
EOF
    done
done
for i in "${!builds[@]}"; do
    python3 - "$work/build-$i.txt" "${builds[$i]}" << 'EOF'
import statistics, sys
rows = [tuple(map(float, line.split())) for line in open(sys.argv[1])]
ns = [r[0] for r in rows]
p99 = [r[1] for r in rows]
print(f"{sys.argv[2]}: ns/event median {statistics.median(ns):.1f} min {min(ns):.1f}, "
      f"p99 µs median {statistics.median(p99):.1f} min {min(p99):.1f}")
print("  rounds (ns/event, p99 µs):", ", ".join(f"{a:.1f}/{b:.0f}" for a, b in rows))
EOF
done
