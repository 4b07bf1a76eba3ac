#!/usr/bin/env bash
# The redis source and sink through `dirigo run`, against redis-benchmark's XADD rate on the same
# server. Starts its own redis-server on a free loopback port (no persistence) and stops it.
#
#   bench/redis.sh                 # N=500000 entries
#   N=100000 bench/redis.sh        # fewer
#
# Prints one line per measurement: redis-benchmark XADD (unpipelined and 64 per pipeline),
# filling the input stream, the source alone (redis -> null), and source + keyed count + sink
# (redis -> count -> redis). Dirigo's figures are events/s over the run's wall time (from the
# `--json` summary), startup included.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-500000}
BIN=${DIRIGO:-target/release/dirigo}
[ -x "$BIN" ] || cargo build --release -p dirigo-engine --bin dirigo
for tool in redis-server redis-cli redis-benchmark python3; do
    command -v "$tool" >/dev/null || { echo "bench/redis.sh: needs $tool (apt-get install redis-server python3)" >&2; exit 1; }
done

port=0
for _ in $(seq 50); do
    p=$(shuf -i 20000-60000 -n 1)
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ "$port" -ne 0 ] || { echo "no free port" >&2; exit 1; }
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
cli() { redis-cli -p "$port" "$@"; }
url="redis://127.0.0.1:$port/"

# rate N T0 T1: N / (T1 - T0), rounded.
rate() { python3 -c "import sys; n, a, b = map(float, sys.argv[1:]); print(f'{n / (b - a):,.0f}')" "$@"; }
now() { date +%s.%N; }

# `-t xadd` is not a test of redis-benchmark 7.0: the command is given as is (the same shape
# as the entries below).
for pipeline in 1 64; do
    line=$(redis-benchmark -p "$port" -n "$N" -P "$pipeline" -q XADD bench '*' k 1 v 2 | tr '\r' '\n' | grep 'requests per second' | tail -1)
    echo "redis-benchmark XADD -P $pipeline: ${line#*: }"
done
cli DEL bench >/dev/null

# The input: N entries {k: i % 1000, v: i}, sent as RESP through redis-cli --pipe.
t0=$(now)
python3 - "$N" <<'PY' | cli --pipe >/dev/null
import sys
n = int(sys.argv[1])
out = sys.stdout
def arg(s):
    return f"${len(s)}\r\n{s}\r\n"
for i in range(n):
    k, v = str(i % 1000), str(i)
    out.write("*7\r\n" + arg("XADD") + arg("in") + arg("*") + arg("k") + arg(k) + arg("v") + arg(v))
PY
t1=$(now)
echo "fill (redis-cli --pipe): $(rate "$N" "$t0" "$t1") entries/s"

config() {
    cat <<TOML
[[app]]
name = "r"
slo = "1s"
schema = { k = "u64", v = "u64" }

[[app.source]]
name = "in"
kind = "redis"
url = "$url"
stream = "in"
follow = false
$1
TOML
}
summary() {
    python3 -c 'import json, sys
a = json.load(sys.stdin)["apps"][0]
print("%d events in, %d out, %.0f events/s" % (a["events_in"], a["events_out"], a["throughput_eps"]))'
}

config '
[[app.sink]]
name = "out"
kind = "null"
input = "in"' >"$dir/source.toml"
echo "dirigo redis -> null: $("$BIN" run "$dir/source.toml" --json --quiet | summary)"

config '
[[app.function]]
name = "c"
kind = "count"
input = "in"
key = "k"

[[app.sink]]
name = "out"
kind = "redis"
input = "c"
url = "'"$url"'"
stream = "out"' >"$dir/count.toml"
echo "dirigo redis -> count -> redis: $("$BIN" run "$dir/count.toml" --json --quiet | summary); out stream: $(cli XLEN out) entries"
