#!/usr/bin/env bash
# Instructions per event of `dirigo run CONFIG`, counted by valgrind's callgrind: a figure that
# does not move with a noisy machine (two runs of the same binary agree within 0.1%), to weigh a
# change of the data path before timing it. Timings still decide (an instruction is not a
# nanosecond: cache misses and stalls do not show here); this says where the work is.
#
#   bench/instructions.sh [CONFIG] [EVENTS]      # default: configs/w1.toml on 1 shard, 500000
#   DIRIGO=path/to/dirigo bench/instructions.sh  # another build (e.g. the base of a change)
#
# The config runs twice, with EVENTS and 2 x EVENTS events (every source's `events` set so),
# `[engine] stats_interval = "1h"` (no progress reports during the run) and, for the default,
# one shard. What the second run executes beyond the first, over EVENTS, is the cost of one
# event: start-up and shut-down cancel out. Printed: that figure, then the functions that take
# most of it (instructions per event, exclusive: what inlined into a function counts in it).
# Installs valgrind with apt-get when it is missing. Under valgrind the shards run one at a time
# (and each run takes about 100x as long), so a config of more shards counts the same work.
set -eu
cd "$(dirname "$0")/.."
config=${1:-configs/w1.toml}
events=${2:-500000}
if ! command -v valgrind > /dev/null || ! command -v callgrind_annotate > /dev/null; then
    echo "installing valgrind" >&2
    (apt-get update -qq && apt-get install -y -qq valgrind) > /dev/null 2>&1 ||
        sudo sh -c 'apt-get update -qq && apt-get install -y -qq valgrind' > /dev/null 2>&1 || {
        echo "valgrind is missing and could not be installed" >&2
        exit 1
    }
fi
dirigo=${DIRIGO:-target/release/dirigo}
[ -n "${DIRIGO:-}" ] || cargo build --release -q -p dirigo-engine --bin dirigo
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# With no CONFIG given: W1 on one shard (what a record costs on a core, no exchange).
single=$([ $# -lt 1 ] && echo yes || echo no)
# CONFIG with `events = N` and reports off (and one shard for the default), into run-N.toml.
# A `stats_interval` the config sets is replaced (a second one would be a duplicate key).
prepare() {
    sed -e "s/^events = .*/events = $1/" -e '/^stats_interval *=/d' \
        -e 's/^\[engine\]$/[engine]\nstats_interval = "1h"/' "$config" > "$work/run-$1.toml"
    if [ "$single" = yes ]; then
        sed -i -e 's/^shards = .*/shards = 1/' -e 's/^cores = .*/cores = 1/' -e 's/^parallelism = .*/parallelism = 1/' \
            "$work/run-$1.toml"
    fi
}
for n in "$events" $((2 * events)); do
    prepare "$n"
    valgrind --tool=callgrind --callgrind-out-file="$work/cg-$n.out" \
        "$dirigo" run "$work/run-$n.toml" --json > "$work/summary-$n.json" 2> "$work/valgrind-$n.log" || {
        echo "the run of $n events failed:" >&2
        tail -20 "$work/valgrind-$n.log" >&2
        exit 1
    }
    # The function summary only: "  1,234 (12.3%)  file:function [object]".
    callgrind_annotate --auto=no --threshold=100 "$work/cg-$n.out" 2> /dev/null |
        awk '/^ *[0-9,]+ +\( *[0-9.]+%\) +/ {
            n = $1; gsub(",", "", n); sub(/^ *[0-9,]+ +\( *[0-9.]+%\) +/, ""); sub(/ \[[^]]*\]$/, ""); print n "\t" $0
        }' > "$work/flat-$n.tsv"
done
small=$events
large=$((2 * events))
total() { awk -F'\t' '/PROGRAM TOTALS/ { print $1 }' "$work/flat-$1.tsv"; }
shape=$([ "$single" = yes ] && echo "1 shard" || echo "as configured")
echo "$(basename "$config") ($shape): $(awk -v a="$(total $small)" -v b="$(total $large)" -v n="$events" 'BEGIN { printf "%.0f", (b - a) / n }') instructions per event"
echo "per event, by function (exclusive: what inlined into a function counts in it):"
awk -F'\t' -v n="$events" '
    { f = $2; sub(/^[^:]*:/, "", f) }
    FNR == NR { a[f] += $1; next }
    $2 !~ /PROGRAM TOTALS/ { b[f] += $1 }
    END { for (f in b) { d = (b[f] - a[f]) / n; if (d >= 2) printf "%8.1f  %s\n", d, f } }
' "$work/flat-$small.tsv" "$work/flat-$large.tsv" | sort -rn | head -20 | cut -c1-160
