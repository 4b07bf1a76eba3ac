#!/usr/bin/env bash
# What crossing a core costs W1, measured with configs alone (no build of the engine changed):
# three runs of `dirigo run`, in turn, round by round (a noisy machine's phases hit all three):
#
#   one    W1 on one shard: the pipeline's cost per event, nothing crosses.
#   apart  two W1 apps side by side, one per shard (`cores = 1` each, half the events each):
#          both cores busy, nothing crosses. `apart - one` is what running two cores at once
#          costs (shared caches, memory, the host).
#   split  W1 on two shards, a generator on each: half the records cross to the other shard
#          (the keyed count's key is homed there). `split - apart` is what crossing costs per
#          event; twice that, per record that crosses.
#
#   bench/crossing.sh [ROUNDS] [EVENTS]       # default: 6 rounds, 8,000,000 events a run
#   DIRIGO=path/to/dirigo bench/crossing.sh   # another build
#
# Printed per run: the shards' busy ns per event (busy time summed over the shards, over all the
# events in: spinning and parked time left out) and CPU ns per event (the process's CPU time,
# spinning included, as `scale` and `keyed-count` count it), medians and minima over the
# rounds; then the differences of the busy medians. Needs python3 (reads the JSON summaries).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-6}
events=${2:-8000000}
dirigo=${DIRIGO:-target/release/dirigo}
[ -n "${DIRIGO:-}" ] || cargo build --release -q -p dirigo-engine --bin dirigo
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# W1 with `events` events, reports off, on `shards` shards with `width` cores, parallelism and
# name suffix; `seed` for its generator.
app() { # name events width seed
    awk -v name="$1" -v events="$2" -v width="$3" -v seed="$4" '
        /^\[\[app\]\]/ { on = 1 }
        !on { next }
        /^name = "w1"/ { print "name = \"" name "\""; next }
        /^cores = / { print "cores = " width; next }
        /^parallelism = / { print "parallelism = " width; next }
        /^events = / { print "events = " events; next }
        /^seed = / { print "seed = " seed; next }
        { print }' configs/w1.toml
}
engine() { # shards
    awk -v shards="$1" '
        /^\[\[app\]\]/ { exit }
        /^shards = / { print "shards = " shards; next }
        /^\[engine\]$/ { print; print "stats_interval = \"1h\""; next }
        /^stats_interval *=/ { next }
        { print }' configs/w1.toml
}
{ engine 1; app w1 "$events" 1 42; } > "$work/one.toml"
{ engine 2; app w1a $((events / 2)) 1 42; echo; app w1b $((events / 2)) 1 43; } > "$work/apart.toml"
{ engine 2; app w1 "$events" 2 42; } > "$work/split.toml"

for r in $(seq "$rounds"); do
    for run in one apart split; do
        if ! "$dirigo" run "$work/$run.toml" --json > "$work/summary.json" 2> "$work/stderr"; then
            echo "round $r: $run failed:" >&2
            tail -20 "$work/stderr" >&2
            exit 1
        fi
        python3 - "$work/summary.json" "$run" >> "$work/rounds.txt" << 'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
events = sum(a["events_in"] for a in d["apps"])
busy = sum(s["busy_seconds"] for s in d["shard_time"])
# Each app of `apart` must have a shard of its own, or nothing is measured.
if sys.argv[2] == "apart" and [a["placed_on"] for a in d["apps"]] not in ([[0], [1]], [[1], [0]]):
    sys.exit(f"apart: the two apps were not placed one per shard: {[a['placed_on'] for a in d['apps']]}")
print(sys.argv[2], busy / events * 1e9, d["cpu_seconds"] / events * 1e9)
EOF
    done
done
python3 - "$work/rounds.txt" "$rounds" "$events" << 'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
med = {}
print(f"W1, {sys.argv[3]} events a run, {sys.argv[2]} rounds in turn (ns per event)")
for run in ("one", "apart", "split"):
    busy = [float(r[1]) for r in rows if r[0] == run]
    cpu = [float(r[2]) for r in rows if r[0] == run]
    med[run] = statistics.median(busy)
    print(f"  {run:6} busy median {med[run]:6.1f} min {min(busy):6.1f}   "
          f"cpu median {statistics.median(cpu):6.1f} min {min(cpu):6.1f}")
print(f"  two cores at once (apart - one): {med['apart'] - med['one']:+.1f} ns per event")
print(f"  crossing (split - apart): {med['split'] - med['apart']:+.1f} ns per event, "
      f"{2 * (med['split'] - med['apart']):+.1f} per record that crosses")
EOF
