//! Scenario `skew`: one hot key range at 10x the others, homed on one shard, through a
//! dual-mode actor: the lessor alone (`max_lessees = 0`) against lessees allowed (1), in one
//! run, interleaved.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- skew
//! ```
//! Workload (2 shards, policy `laxity`, SLO 20 ms): a source on shard 0 sends events over 1,000
//! keys; the 50 hot keys, each drawn 10x as often as a cold key, all hash to shard 0 (so shard 0
//! hosts the source, the hot range and half the cold keys: about 67% of the actor work). The
//! actor folds each event into per-key counts (about 1 µs of work per event) and acknowledges it
//! (an output per event, for latency); one event in 5,000 is a query, a critical message answered
//! from the counts merged from every lessee. Every run's final counts and query answers are
//! checked against a sequential computation.
//!
//! Reported: closed-loop throughput of each mode (median over rounds), then each mode at the same
//! offered rate, 1.3x the lessor-alone capacity: p50/p99 latency, SLO satisfaction, forwards,
//! lessees, barrier time and the scale-up reaction (deadline miss to first message on a lessee).

use std::collections::BTreeMap;
use std::time::Duration;

use dirigo_actors::record::mix64;
use dirigo_actors::state::{Count, MapMerge};
use dirigo_engine::api::{key_u64, Actor, Cx, EngineBuilder};
use dirigo_engine::policy::Builtin;
use dirigo_engine::report::{AppSummary, Summary};
use serde_json::{json, Value};

use crate::report::{median, ratio, Table};
use crate::Opts;

const SHARDS: usize = 2;
const KEYS: u64 = 1_000;
const HOT_KEYS: usize = 50;
const HOT_WEIGHT: u64 = 10;
const QUERY_EVERY: u64 = 5_000;
/// Rounds of `mix64` per event: a few µs of work, so the actor (not the source) is the load.
const WORK: u32 = 1_000;

/// Per-key counts, combined key by key.
type Counts = MapMerge<u64, Count>;

/// An event: key, sequence number, whether it is a query.
type Event = (u64, u64, bool);
/// Outputs: `(kind, key, value)`: 0 = ack of event `value`, 1 = query answer (count), 2 = final.
type Out = (u8, u64, u64);

struct Counter;

impl Actor for Counter {
    type In = Event;
    type State = Counts;
    fn is_critical(&self, msg: &rkyv::Archived<Event>) -> bool {
        msg.2
    }
    fn on_message(&mut self, state: &mut Counts, cx: &mut Cx<'_>, msg: &rkyv::Archived<Event>) {
        let key = msg.0.to_native();
        let mut x = key;
        for _ in 0..WORK {
            x = mix64(x);
        }
        std::hint::black_box(x);
        state.entry(key).increment();
        cx.emit(cx.key_hash(), cx.event_time(), &(0u8, key, msg.1.to_native()));
    }
    fn on_critical(&mut self, state: &mut Counts, cx: &mut Cx<'_>, msg: &rkyv::Archived<Event>) {
        let key = msg.0.to_native();
        cx.emit(cx.key_hash(), cx.event_time(), &(1u8, key, state.0.get(&key).map_or(0, |n| n.0)));
    }
    fn on_end(&mut self, state: &mut Counts, cx: &mut Cx<'_>) {
        for (&key, n) in &state.0 {
            cx.emit(key_u64(key), 0, &(2u8, key, n.0));
        }
    }
}

/// The key table: 50 hot keys homed on shard 0 with weight 10, then the cold keys, weight 1.
fn key_table() -> Vec<u64> {
    let home0 = |k: &u64| dirigo_actors::ids::initial_home(key_u64(*k), SHARDS) == 0;
    let hot: Vec<u64> = (0..KEYS).filter(home0).take(HOT_KEYS).collect();
    let mut table = Vec::new();
    for k in 0..KEYS {
        let weight = if hot.contains(&k) { HOT_WEIGHT } else { 1 };
        table.extend(std::iter::repeat_n(k, weight as usize));
    }
    table
}

/// Event `i` (deterministic).
fn event(table: &[u64], i: u64) -> Event {
    let key = table[(mix64(i ^ 0x5eed) % table.len() as u64) as usize];
    (key, i, i % QUERY_EVERY == QUERY_EVERY - 1)
}

/// What a sequential run outputs: query answers and final counts.
fn expected(events: u64) -> (Vec<(u64, u64)>, BTreeMap<u64, u64>) {
    let table = key_table();
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    let mut answers = Vec::new();
    for i in 0..events {
        let (key, _, query) = event(&table, i);
        if query {
            answers.push((key, counts.get(&key).copied().unwrap_or(0)));
        } else {
            *counts.entry(key).or_default() += 1;
        }
    }
    answers.sort_unstable();
    (answers, counts)
}

/// One run; `rate` 0 is closed loop. Checks the outputs against `want`.
fn run_once(
    events: u64,
    rate: u64,
    max_lessees: u32,
    want: &(Vec<(u64, u64)>, BTreeMap<u64, u64>),
) -> anyhow::Result<Summary> {
    let mut engine = EngineBuilder::new().shards(SHARDS);
    let mut app = engine.app("skew", Duration::from_millis(20));
    let table = std::sync::Arc::new(key_table());
    let src = app.paced_source("events", 1, rate, move |_| {
        let table = table.clone();
        (0..events).map(move |i| {
            let e = event(&table, i);
            (key_u64(e.0), i, e)
        })
    });
    let counter = app.actor("counter", src, max_lessees, || Counter);
    let out = app.collect("out", counter);
    let summary = engine.run_with(Builtin::by_name("laxity").expect("laxity"), |_| {})?;
    let (mut answers, mut finals, mut acks) = (Vec::new(), BTreeMap::new(), 0u64);
    for o in out.drain() {
        // SAFETY: the sink's input is archived `Out`s emitted by `Counter`.
        let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<Out>>(&o.archive) };
        match v.0 {
            0 => acks += 1,
            1 => answers.push((v.1.to_native(), v.2.to_native())),
            _ => {
                finals.insert(v.1.to_native(), v.2.to_native());
            }
        }
    }
    answers.sort_unstable();
    anyhow::ensure!(acks == events - events / QUERY_EVERY, "acks {acks}");
    anyhow::ensure!(answers == want.0, "query answers differ from the sequential run");
    anyhow::ensure!(finals == want.1, "final counts differ from the sequential run");
    Ok(summary)
}

fn app(s: &Summary) -> &AppSummary {
    &s.apps[0]
}

/// Run the scenario.
pub fn run_scenario(opts: Opts) -> anyhow::Result<Value> {
    let (events, rounds) = if opts.quick { (40_000, 1) } else { (600_000, 3) };
    let want = expected(events);
    let modes = [("lessor alone", 0u32), ("lessees allowed", 1)];
    let mut closed: Vec<Vec<f64>> = vec![Vec::new(); 2];
    for _ in 0..rounds {
        for (m, &(_, ml)) in modes.iter().enumerate() {
            closed[m].push(app(&run_once(events, 0, ml, &want)?).throughput_eps);
        }
    }
    let capacity: Vec<f64> = closed.iter().map(|xs| median(xs)).collect();
    let rate = (capacity[0] * 1.3) as u64;
    println!(
        "closed loop: lessor alone {:.0} events/s, lessees allowed {:.0} events/s ({:.2}x); offered rate {rate}/s",
        capacity[0],
        capacity[1],
        ratio(capacity[1], capacity[0])
    );
    let open_events = if opts.quick { events } else { (rate * 4).min(2_000_000) };
    let want_open = if open_events == events { want } else { expected(open_events) };
    let mut open: Vec<Vec<Summary>> = vec![Vec::new(); 2];
    for _ in 0..rounds {
        for (m, &(_, ml)) in modes.iter().enumerate() {
            open[m].push(run_once(open_events, rate, ml, &want_open)?);
        }
    }
    let mut table = Table::new(&[
        "mode",
        "closed ev/s",
        "offered ev/s",
        "p50 us",
        "p99 us",
        "in slo",
        "forwarded",
        "lessees",
        "barrier p99 us",
        "scale-up p99 us",
    ]);
    let mut rows = Vec::new();
    for (m, (name, ml)) in modes.iter().enumerate() {
        let of = |f: fn(&AppSummary) -> f64| median(&open[m].iter().map(|s| f(app(s))).collect::<Vec<_>>());
        let (p50, p99, sat) = (of(|a| a.latency_us.p50), of(|a| a.latency_us.p99), of(|a| a.satisfaction));
        let (fwd, lessees) = (of(|a| a.actors.forwarded as f64), of(|a| a.actors.lessees_peak as f64));
        let (barrier, reaction) = (of(|a| a.actors.barrier_us.p99), of(|a| a.actors.scale_up_us.p99));
        let cpu = median(&open[m].iter().map(|s| s.cpu_seconds).collect::<Vec<_>>());
        table.row(vec![
            name.to_string(),
            format!("{:.0}", capacity[m]),
            format!("{:.0}", of(|a| a.throughput_eps)),
            format!("{p50:.1}"),
            format!("{p99:.1}"),
            format!("{:.2}%", sat * 100.0),
            format!("{fwd:.0}"),
            format!("{lessees:.0}"),
            format!("{barrier:.1}"),
            format!("{reaction:.1}"),
        ]);
        rows.push(json!({
            "mode": name, "max_lessees": ml, "closed_loop_eps": capacity[m], "closed_loop_runs": closed[m],
            "offered_eps": rate, "throughput_eps": of(|a| a.throughput_eps),
            "p50_us": p50, "p99_us": p99, "satisfaction": sat, "cpu_seconds": cpu,
            "forwarded": fwd, "lessees_peak": lessees, "barrier_p99_us": barrier, "scale_up_p99_us": reaction,
        }));
    }
    print!("{}", table.render());
    let p99 = |m: usize| rows[m]["p99_us"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "shards": SHARDS, "events": events, "open_loop_events": open_events, "rounds": rounds,
        "hot_keys": HOT_KEYS, "hot_weight": HOT_WEIGHT, "keys": KEYS, "query_every": QUERY_EVERY,
        "capacity_ratio": ratio(capacity[1], capacity[0]), "p99_ratio": ratio(p99(1), p99(0)),
        "results": rows,
    }))
}
