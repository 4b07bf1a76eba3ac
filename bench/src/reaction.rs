//! Scenario `reaction`: the scale-up reaction of a dual-mode actor, from the deadline miss that
//! leases a lessee to the first message run on it (issue 4's target: p99 <= 100 µs), over
//! hundreds of leases a run.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- reaction [--quick]
//! ```
//! Workload (2 shards, policy `laxity`): a scheduled source on shard 0 offers a burst of
//! [`BURST`] events every [`PERIOD_MS`] ms to an actor homed on shard 0 (about 4 µs of work an
//! event, 1 ms SLO): a burst is more work than the SLO allows at home, so the first message
//! predicted to miss its deadline leases a lessee on shard 1. Between bursts the lessee is idle
//! for longer than `lessee_idle` (2 ms here) and is retired, so every burst leases anew: one
//! reaction sample per burst. Two setups, interleaved:
//!
//! - **idle lender**: shard 1 has nothing else to do; it has parked by the time a burst comes;
//! - **idle lender, standby**: the same with `[engine] standby = 1`: shard 1 spins instead of
//!   parking, so no OS wake-up stands between the lease and its first message (a core's price);
//! - **busy lender**: shard 1 also runs a background app (events homed on it, about half its
//!   CPU), so a lease waits for the turn the shard is in.
//!
//! Reported per setup (medians over rounds): the reaction's p50/p99/max and its first part, the
//! lease delivery (decision to the lease opening on shard 1: mail plus the lender's wake-up or
//! the rest of its turn), leases, and the hot app's latency. Every run's counts are checked
//! against the input.

use std::time::Duration;

use dirigo_actors::ids::initial_home;
use dirigo_actors::state::{Count, MapMerge};
use dirigo_engine::api::{key_u64, Actor, Cx, EngineBuilder, Function, Route};
use dirigo_engine::policy::Builtin;
use dirigo_engine::report::{AppSummary, LatencyUs, Summary};
use serde_json::{json, Value};

use crate::figures::{num, rows};
use crate::plot::{Panel, Series};
use crate::report::{median, Table};
use crate::Opts;

const SHARDS: usize = 2;
/// A burst every this many ms.
const PERIOD_MS: u64 = 10;
/// Events per burst (all due at once).
const BURST: u64 = 400;
/// Work per hot event, µs.
const HOT_WORK_US: f64 = 4.0;
/// Keys of the hot actor (all homed on shard 0).
const HOT_KEYS: usize = 64;
/// Background events per second on shard 1 in the busy setup, and their work (µs): about half
/// of shard 1.
const BACKGROUND_EPS: u64 = 100_000;
const BACKGROUND_WORK_US: f64 = 5.0;
/// The target, p99 µs.
const TARGET_US: f64 = 100.0;

/// `(key, seq)`.
type Event = (u64, u64);

struct Hot;

impl Actor for Hot {
    type In = Event;
    type State = MapMerge<u64, Count>;
    fn on_message(&mut self, state: &mut Self::State, cx: &mut Cx<'_>, msg: &rkyv::Archived<Event>) {
        crate::sys::work_us(HOT_WORK_US);
        let key = msg.0.to_native();
        state.entry(key).increment();
        cx.emit(cx.key_hash(), cx.event_time(), &(0u8, key, msg.1.to_native()));
    }
    fn on_critical(&mut self, _: &mut Self::State, _: &mut Cx<'_>, _: &rkyv::Archived<Event>) {}
    fn on_end(&mut self, state: &mut Self::State, cx: &mut Cx<'_>) {
        for (&key, n) in &state.0 {
            cx.emit(key_u64(key), 0, &(1u8, key, n.0));
        }
    }
}

/// The background app's stateless work.
struct Background;

impl Function for Background {
    type In = u64;
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<u64>) {
        crate::sys::work_us(BACKGROUND_WORK_US);
        cx.emit(cx.key_hash(), cx.event_time(), &msg.to_native());
    }
}

/// Keys whose home is `shard`.
fn keys_on(shard: usize, n: usize) -> Vec<u64> {
    (0..).filter(|&k| initial_home(key_u64(k), SHARDS) as usize == shard).take(n).collect()
}

/// One run of `secs` seconds; checks the hot app's counts. Returns the summary.
fn run_once(secs: u64, busy: bool, standby: usize) -> anyhow::Result<Summary> {
    let bursts = secs * 1000 / PERIOD_MS;
    let mut engine = EngineBuilder::new().shards(SHARDS).settings(|s| {
        s.shard.lessee_idle = Duration::from_millis(2);
        s.shard.standby = standby;
    });
    let hot_keys = keys_on(0, HOT_KEYS);
    let mut app = engine.app("hot", Duration::from_millis(1));
    let keys = hot_keys.clone();
    let src = app.scheduled_source("bursts", 1, move |_| {
        let keys = keys.clone();
        (0..bursts * BURST).map(move |i| {
            let due = i / BURST * PERIOD_MS * 1_000_000;
            let key = keys[(i % keys.len() as u64) as usize];
            (due, key_u64(key), due / 1_000_000, (key, i))
        })
    });
    let hot = app.actor("hot", src, 1, || Hot);
    let out = app.collect("out", hot);
    if busy {
        let mut bg = engine.app("background", Duration::from_millis(100));
        let keys = keys_on(1, HOT_KEYS);
        let n = secs * BACKGROUND_EPS;
        // Instance 1 runs on shard 1 and sends only to keys homed there; instance 0 is empty.
        let src = bg.paced_source("load", 2, BACKGROUND_EPS, move |i| {
            let keys = keys.clone();
            (0..if i == 1 { n } else { 0 }).map(move |j| (key_u64(keys[(j % keys.len() as u64) as usize]), 0, j))
        });
        let work = bg.function("work", src, Route::ByKey, || Background);
        bg.measure("sink", work);
    }
    let summary = engine.run_with(Builtin::by_name("laxity").expect("laxity"), |_| {})?;
    let (mut acks, mut total) = (0u64, 0u64);
    for o in out.drain() {
        // SAFETY: the sink's input is archived `(u8, u64, u64)` emitted by `Hot`.
        let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<(u8, u64, u64)>>(&o.archive) };
        if v.0 == 0 {
            acks += 1;
        } else {
            total += v.2.to_native();
        }
    }
    let events = bursts * BURST;
    anyhow::ensure!(acks == events && total == events, "{acks} acks and counts summing to {total} for {events} events");
    Ok(summary)
}

/// The platform's floor for a parked lender: a thread blocked on a flume channel (as a parked
/// shard blocks on its doorbell) on CPU 1, woken from CPU 0 after [`PERIOD_MS`] ms of idleness,
/// `samples` times: µs from the send to the receiver running.
fn wake_up_baseline(samples: usize) -> anyhow::Result<LatencyUs> {
    let (tx, rx) = flume::bounded::<std::time::Instant>(1);
    let pinned = crate::sys::cpus() >= 2;
    let sleeper = std::thread::spawn(move || -> anyhow::Result<Vec<u64>> {
        if pinned {
            crate::sys::pin_to(1)?;
        }
        Ok(rx.iter().map(|sent| sent.elapsed().as_nanos() as u64).collect())
    });
    let waker = std::thread::spawn(move || -> anyhow::Result<()> {
        if pinned {
            crate::sys::pin_to(0)?;
        }
        for _ in 0..samples {
            // Pacing, not synchronisation: the sleeper has long been blocked when the next send comes.
            std::thread::sleep(Duration::from_millis(PERIOD_MS));
            tx.send(std::time::Instant::now())?;
        }
        Ok(())
    });
    waker.join().map_err(|_| anyhow::anyhow!("waker panicked"))??;
    let mut h = crate::report::histogram();
    for ns in sleeper.join().map_err(|_| anyhow::anyhow!("sleeper panicked"))?? {
        h.saturating_record(ns.max(1));
    }
    Ok(crate::report::latency_of(&h))
}

fn hot(s: &Summary) -> &AppSummary {
    s.app("hot").expect("hot app")
}

/// Run the scenario.
pub fn run_scenario(opts: Opts) -> anyhow::Result<Value> {
    crate::sys::load_before();
    crate::sys::calibrate();
    let (secs, rounds) = if opts.quick { (1, 1) } else { (5, 3) };
    let setups = [("idle lender", false, 0), ("idle lender, standby", false, 1), ("busy lender", true, 0)];
    let mut runs: Vec<Vec<Summary>> = vec![Vec::new(); setups.len()];
    for round in 0..rounds {
        for (i, &(name, busy, standby)) in setups.iter().enumerate() {
            let s = run_once(secs, busy, standby)?;
            let a = hot(&s);
            println!(
                "round {round} {name}: {} leases ({} ran nothing, {} forwarded, {} refused), reaction p50 {:.1} p99 {:.1} max {:.1} us, delivery p99 {:.1} us",
                a.actors.lessees_created,
                a.actors.lessees_created.saturating_sub(a.actors.scale_up_us.count),
                a.actors.forwarded,
                a.actors.refused,
                a.actors.scale_up_us.p50,
                a.actors.scale_up_us.p99,
                a.actors.scale_up_us.max,
                a.actors.lease_delivery_us.p99
            );
            runs[i].push(s);
        }
    }
    let baseline = wake_up_baseline(if opts.quick { 50 } else { 500 })?;
    println!(
        "OS wake-up of a blocked thread after {PERIOD_MS} ms idle (baseline): p50 {:.1} p99 {:.1} max {:.1} us",
        baseline.p50, baseline.p99, baseline.max
    );
    let mut table = Table::new(&[
        "lender",
        "leases",
        "unused",
        "reaction p50 us",
        "p99 us",
        "max us",
        "delivery p50 us",
        "delivery p99 us",
        "hot p99 us",
    ]);
    let mut results = Vec::new();
    for (i, &(name, busy, standby)) in setups.iter().enumerate() {
        let of = |f: &dyn Fn(&AppSummary) -> f64| median(&runs[i].iter().map(|s| f(hot(s))).collect::<Vec<_>>());
        let lat = |f: fn(&AppSummary) -> &LatencyUs| json!({ "p50": of(&|a| f(a).p50), "p99": of(&|a| f(a).p99), "max": of(&|a| f(a).max) });
        let p99 = of(&|a| a.actors.scale_up_us.p99);
        let row = json!({
            "lender": name,
            "met": p99 <= TARGET_US,
            "busy": busy,
            "standby": standby,
            "leases": of(&|a| a.actors.lessees_created as f64),
            // Leases whose lessee ran no message (every forward refused, or none came): no
            // reaction sample; a lost chance, not a fast one.
            "leases_unused": of(&|a| (a.actors.lessees_created.saturating_sub(a.actors.scale_up_us.count)) as f64),
            "scale_up_us": lat(|a| &a.actors.scale_up_us),
            "lease_delivery_us": lat(|a| &a.actors.lease_delivery_us),
            "hot_latency_us": lat(|a| &a.latency_us),
            "forwarded": of(&|a| a.actors.forwarded as f64),
            "runs_p99_us": runs[i].iter().map(|s| hot(s).actors.scale_up_us.p99).collect::<Vec<_>>(),
        });
        table.row(vec![
            name.into(),
            format!("{:.0}", num(&row["leases"])),
            format!("{:.0}", num(&row["leases_unused"])),
            format!("{:.1}", num(&row["scale_up_us"]["p50"])),
            format!("{:.1}", num(&row["scale_up_us"]["p99"])),
            format!("{:.1}", num(&row["scale_up_us"]["max"])),
            format!("{:.1}", num(&row["lease_delivery_us"]["p50"])),
            format!("{:.1}", num(&row["lease_delivery_us"]["p99"])),
            format!("{:.0}", num(&row["hot_latency_us"]["p99"])),
        ]);
        results.push(row);
    }
    let cpus = crate::sys::cpus();
    println!(
        "\nscale-up reaction, {SHARDS} shards ({}), a burst of {BURST} every {PERIOD_MS} ms, medians over {rounds} round(s)\n{}",
        if SHARDS <= cpus { "pinned" } else { "UNPINNED: more shards than CPUs" },
        table.render()
    );
    let worst = results.iter().map(|r| num(&r["scale_up_us"]["p99"])).fold(f64::NAN, f64::max);
    let awake = results.iter().filter(|r| r["standby"] != 0 || r["busy"] == true);
    let worst_awake = awake.map(|r| num(&r["scale_up_us"]["p99"])).fold(f64::NAN, f64::max);
    println!(
        "reaction p99: worst {worst:.1} us; with the lender awake (standby or busy) {worst_awake:.1} us (target <= {TARGET_US} us)"
    );
    Ok(json!({
        "shards": SHARDS, "cpus": cpus, "pinned": SHARDS <= cpus, "seconds": secs, "rounds": rounds,
        "period_ms": PERIOD_MS, "burst": BURST, "hot_work_us": HOT_WORK_US,
        "background_eps": BACKGROUND_EPS, "background_work_us": BACKGROUND_WORK_US,
        "target_p99_us": TARGET_US, "worst_p99_us": worst, "met": worst <= TARGET_US,
        "worst_awake_p99_us": worst_awake, "met_awake": worst_awake <= TARGET_US,
        "os_wake_up_us": { "p50": baseline.p50, "p99": baseline.p99, "max": baseline.max },
        "results": results,
    }))
}

/// The figure: reaction and delivery percentiles per setup.
pub fn figure(r: &Value) -> Vec<Panel> {
    let results = rows(r, "results");
    let cats = ["p50", "p99", "max"].map(String::from).to_vec();
    let series = |field: &str| -> Vec<Series<f64>> {
        let name = |m: &Value| m["lender"].as_str().unwrap_or("").to_owned();
        results
            .iter()
            .map(|m| Series::new(name(m), ["p50", "p99", "max"].iter().map(|p| num(&m[field][*p])).collect()))
            .collect()
    };
    vec![
        Panel::bars(
            "scale-up reaction (miss to first message on the lessee)",
            "µs",
            cats.clone(),
            series("scale_up_us"),
        )
        .log(),
        Panel::bars("lease delivery (miss to lease opened on the lender)", "µs", cats, series("lease_delivery_us"))
            .log(),
    ]
}
