//! Multi-hop DAGs end to end: per-key order through source -> map -> filter -> keyed
//! aggregates under every policy on 1, 2 and 4 shards, and exact summary counts (events in and
//! out per app) for two apps running together.

mod common;

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use common::{assert_keyed_eq, by_key, for_each_setup, generated, parse, u, window_starts, Out};
use dirigo_actors::record::Value;

/// source -> map -> filter, then a keyed count and a keyed sum of the filtered records. Sums
/// of prefixes expose any reordering of one key's records; counts expose loss and duplicates.
const DAG: &str = r#"
[[app]]
name = "dag"
slo = "20ms"
schema = { k = "u64", a = "u64", ts = "u64" }
event_time = "ts"
watermark_every = 100

[[app.source]]
name = "in"
kind = "generator"
rate = 0
events = 3000
keys = 40
seed = 99

[[app.function]]
name = "m"
kind = "map"
input = "in"
fields = { k = "k", a2 = "a * 2 + 1" }

[[app.function]]
name = "f"
kind = "filter"
input = "m"
predicate = "a2 % 3 != 0"

[[app.function]]
name = "counts"
kind = "count"
input = "f"
key = "k"

[[app.function]]
name = "sums"
kind = "sum"
input = "f"
key = "k"
field = "a2"

[[app.sink]]
name = "counts_out"
kind = "stdout"
input = "counts"

[[app.sink]]
name = "sums_out"
kind = "stdout"
input = "sums"
"#;

#[test]
fn multi_hop_dag_keeps_per_key_order_under_every_policy() -> Result<()> {
    let config = parse(DAG)?;
    let mut count: BTreeMap<u64, u64> = BTreeMap::new();
    let mut sum: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut counts, mut sums) = (Vec::new(), Vec::new());
    for (t, e) in generated(&config, "in")? {
        let (k, a2) = (u(&e[0]), u(&e[1]) * 2 + 1);
        if a2 % 3 == 0 {
            continue;
        }
        let (c, s) = (count.entry(k).or_default(), sum.entry(k).or_default());
        (*c, *s) = (*c + 1, *s + a2);
        let key = Value::U64(k);
        counts.push(Out { key_hash: key.key_hash(), event_time: t, values: vec![key.clone(), Value::U64(*c)] });
        sums.push(Out { key_hash: key.key_hash(), event_time: t, values: vec![key, Value::U64(*s)] });
    }
    ensure!(counts.len() > 1500 && count.len() == 40, "the filter keeps most records of every key");
    let (counts, sums) = (by_key(&counts), by_key(&sums));
    for_each_setup(&config, |run| {
        ensure!(run.summary.apps[0].events_in == 3000, "events_in {}", run.summary.apps[0].events_in);
        assert_keyed_eq("counts_out", &run.keyed("counts_out"), &counts)?;
        assert_keyed_eq("sums_out", &run.keyed("sums_out"), &sums)
    })
}

/// Two apps: a fan-out of one generator to three sinks, and a windowed join of two generators.
const TWO_APPS: &str = r#"
[[app]]
name = "fan"
slo = "20ms"
schema = { k = "u64", a = "u64", ts = "u64" }
event_time = "ts"

[[app.source]]
name = "fan_in"
kind = "generator"
rate = 0
events = 2500
keys = 30
seed = 5

[[app.function]]
name = "m"
kind = "map"
input = "fan_in"
fields = { a = "a + 1" }

[[app.function]]
name = "f"
kind = "filter"
input = "fan_in"
predicate = "a < 300"

[[app.function]]
name = "c"
kind = "count"
input = "f"
key = "k"

[[app.sink]]
name = "m_out"
kind = "null"
input = "m"

[[app.sink]]
name = "f_out"
kind = "null"
input = "f"

[[app.sink]]
name = "c_out"
kind = "latency"
input = "c"

[[app]]
name = "pair"
slo = "20ms"
schema = { k = "u64", ts = "u64" }
event_time = "ts"

[[app.source]]
name = "left"
kind = "generator"
rate = 0
events = 1500
keys = 200
seed = 6

[[app.source]]
name = "right"
kind = "generator"
rate = 0
events = 1000
keys = 200
seed = 8

[[app.function]]
name = "j"
kind = "join"
left = "left"
right = "right"
left_key = "k"
right_key = "k"
window = { type = "tumbling", size = "1ms" }

[[app.sink]]
name = "j_out"
kind = "stdout"
input = "j"
"#;

/// Number of (left, right) pairs with equal keys in the same tumbling window of `size` ms.
fn join_pairs(left: &[(u64, Vec<Value>)], right: &[(u64, Vec<Value>)], size: u64) -> usize {
    let mut sides: BTreeMap<(u64, u64), (usize, usize)> = BTreeMap::new();
    for (t, e) in left {
        window_starts(*t, size, size).for_each(|s| sides.entry((u(&e[0]), s)).or_default().0 += 1);
    }
    for (t, e) in right {
        window_starts(*t, size, size).for_each(|s| sides.entry((u(&e[0]), s)).or_default().1 += 1);
    }
    sides.values().map(|(l, r)| l * r).sum()
}

#[test]
fn summary_counts_are_exact_per_app() -> Result<()> {
    let config = parse(TWO_APPS)?;
    let fan_in = generated(&config, "fan_in")?;
    let kept = fan_in.iter().filter(|(_, e)| u(&e[1]) < 300).count();
    let (left, right) = (generated(&config, "left")?, generated(&config, "right")?);
    let pairs = join_pairs(&left, &right, 1);
    ensure!(kept > 0 && pairs > 0, "every sink gets outputs");
    let want = [("m_out", fan_in.len()), ("f_out", kept), ("c_out", kept), ("j_out", pairs)];
    for_each_setup(&config, |run| {
        for (sink, n) in want {
            ensure!(run.sink(sink).len() == n, "{sink}: {} outputs, want {n}", run.sink(sink).len());
        }
        let [fan, pair] = &run.summary.apps[..] else { anyhow::bail!("two apps") };
        ensure!(fan.events_in == 2500 && pair.events_in == 2500, "events_in {} and {}", fan.events_in, pair.events_in);
        let fan_out = fan_in.len() + 2 * kept;
        ensure!(fan.events_out == fan_out as u64, "fan: events_out {}, want {fan_out}", fan.events_out);
        ensure!(pair.events_out == pairs as u64, "pair: events_out {}, want {pairs}", pair.events_out);
        Ok(())
    })
}
