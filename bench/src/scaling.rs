//! Scenario `scaling`: what dual-mode actors buy and cost, on one windowed app (generator ->
//! tumbling-window sum per user -> latency sink, least-laxity policy): throughput (closed loop)
//! and p99 (open loop at 1.2x the capacity without lessees) against `max_lessees` = 0 ..=
//! shards - 1, on 4 shards with one hot key (every record folds into one actor), a generator
//! instance on every shard. 4 shards on a 2-CPU machine run unpinned (the output says so): read
//! the trend, not the absolute figures. Barrier time against the number of lessees and the
//! state size is scenario `barrier`.
//!
//! It also reports the scale-up reaction (`scale_up_us`: from a message's deadline-miss signal at
//! the lessor to the first message run on the new lessee; target p99 <= 100 µs).
//!
//! ```text
//! cargo run --release -p dirigo-bench -- scaling [--quick]
//! ```

use dirigo_engine::compile::run_config;
use dirigo_engine::config::Config;
use dirigo_engine::engine::StopHandle;
use dirigo_engine::policy::Builtin;
use serde_json::{json, Value};

use crate::figures::{num, rows};
use crate::plot::{Panel, Series};
use crate::report::{median, meps, Table};
use crate::Opts;

/// Shards of the lessee sweep (unpinned when the machine has fewer CPUs).
const SWEEP_SHARDS: usize = 4;
/// The scale-up reaction's target, p99 in µs.
const SCALE_UP_TARGET_US: f64 = 100.0;

/// One app's config: `keys` users, `shards` shards, a generator per shard, a window of
/// `window_ms` event-time ms (closed loop: 1 µs of event time per event), `max_lessees`.
struct App {
    shards: usize,
    keys: u64,
    window_ms: u64,
    max_lessees: u32,
    slo: &'static str,
    /// `rate = 0\nevents = N` or `rate = R\nduration = "..."`.
    load: String,
}

/// Messages a shard queues before its sources pause: small, so that a barrier waits for a short
/// backlog at the lessees.
const MAX_IN_FLIGHT: usize = 1024;

impl App {
    fn text(&self) -> String {
        format!(
            r#"
[engine]
shards = {shards}
max_in_flight = {MAX_IN_FLIGHT}
[[app]]
name = "hot"
slo = "{slo}"
schema = {{ user = "u64", amount = "u64", ts = "u64" }}
event_time = "ts"
watermark_every = 1000
[[app.source]]
name = "clicks"
kind = "generator"
keys = {keys}
parallelism = {shards}
{load}
[[app.function]]
name = "spend"
kind = "window"
input = "clicks"
key = "user"
window = {{ type = "tumbling", size = "{window_ms}ms" }}
aggregate = {{ op = "sum", field = "amount" }}
max_lessees = {lessees}
[[app.sink]]
name = "latency"
kind = "latency"
input = "spend"
"#,
            shards = self.shards,
            slo = self.slo,
            keys = self.keys,
            load = self.load,
            window_ms = self.window_ms,
            lessees = self.max_lessees,
        )
    }

    /// Run it under least laxity; the app's summary as JSON (new fields are read by name) with
    /// the run's `cpu_seconds` and `wall_seconds`.
    fn run(&self) -> anyhow::Result<Value> {
        let config = Config::parse(&self.text(), "scaling.toml")?;
        let summary =
            run_config(&config, self.shards, Builtin::by_name("laxity").expect("laxity"), StopHandle::default())?;
        let mut app = serde_json::to_value(&summary.apps[0])?;
        app["cpu_seconds"] = json!(summary.cpu_seconds);
        app["wall_seconds"] = json!(summary.wall_seconds);
        Ok(app)
    }
}

/// The figures kept of one run.
fn sample(a: &Value) -> Value {
    let actors = &a["actors"];
    let barriers = num(&actors["barriers"]);
    let bytes = num(&actors["partial_bytes"]);
    json!({
        "throughput_eps": a["throughput_eps"],
        "latency_us": a["latency_us"],
        "satisfaction": a["satisfaction"],
        "events_in": a["events_in"],
        "wall_seconds": a["wall_seconds"],
        "cpu_seconds": a["cpu_seconds"],
        "lessees_peak": actors["lessees_peak"],
        "lessees_created": actors["lessees_created"],
        "forwarded": actors["forwarded"],
        "refused": actors["refused"],
        "barriers": actors["barriers"],
        "barrier_us": actors["barrier_us"],
        "partial_bytes": actors["partial_bytes"],
        "partial_bytes_per_barrier": if barriers > 0.0 { json!(bytes / barriers) } else { Value::Null },
        // An empty histogram reads as zeros: no lessee, no reaction to report.
        "scale_up_us": if num(&actors["lessees_created"]) > 0.0 { actors["scale_up_us"].clone() } else { Value::Null },
    })
}

/// Median of a numeric field (a dotted path) over samples; null when no sample has it.
fn med(samples: &[Value], path: &str) -> Value {
    let xs: Vec<f64> =
        samples.iter().filter_map(|s| path.split('.').try_fold(s, |v, k| v.get(k)).and_then(Value::as_f64)).collect();
    if xs.is_empty() {
        Value::Null
    } else {
        json!(median(&xs))
    }
}

fn cell(v: &Value, scale: f64, digits: usize) -> String {
    v.as_f64().map_or("-".to_owned(), |x| format!("{:.digits$}", x * scale))
}

/// Throughput and p99 against `max_lessees`.
fn lessee_sweep(quick: bool, rounds: usize) -> anyhow::Result<Vec<Value>> {
    let (events, secs) = if quick { (100_000, 0.5) } else { (600_000, 1.5) };
    let lessees: Vec<u32> = (0..SWEEP_SHARDS as u32).collect();
    let app = |max_lessees: u32, load: String| App {
        shards: SWEEP_SHARDS,
        keys: 1,
        window_ms: 100,
        max_lessees,
        slo: "10ms",
        load,
    };
    let mut closed: Vec<Vec<Value>> = vec![Vec::new(); lessees.len()];
    let mut open: Vec<Vec<Value>> = vec![Vec::new(); lessees.len()];
    for round in 0..rounds {
        let order = crate::report::interleaved(&lessees, round);
        for &l in &order {
            closed[l as usize].push(sample(&app(l, format!("rate = 0\nevents = {events}")).run()?));
        }
        // Open loop above the capacity without lessees (this round's), so lessees must help.
        let cap0 = num(&closed[0][round]["throughput_eps"]);
        let rate = (cap0 * 1.2).max(1000.0) as u64;
        for &l in &order {
            let load = format!("rate = {rate}\nduration = \"{}ms\"", (secs * 1000.0) as u64);
            let mut s = sample(&app(l, load).run()?);
            s["offered_eps"] = json!(rate);
            open[l as usize].push(s);
        }
        println!("lessee sweep round {round} done (open loop at {rate} events/s)");
    }
    Ok(lessees
        .iter()
        .map(|&l| {
            let (c, o) = (&closed[l as usize], &open[l as usize]);
            json!({
                "max_lessees": l,
                "throughput_eps": med(c, "throughput_eps"),
                "closed_p99_us": med(c, "latency_us.p99"),
                "offered_eps": med(o, "offered_eps"),
                "p50_us": med(o, "latency_us.p50"),
                "p99_us": med(o, "latency_us.p99"),
                "satisfaction": med(o, "satisfaction"),
                "lessees_peak": med(o, "lessees_peak"),
                "scale_up_p99_us": med(o, "scale_up_us.p99"),
                "closed": c,
                "open": o,
            })
        })
        .collect())
}

/// Run the scenario.
pub fn run_scenario(opts: Opts) -> anyhow::Result<Value> {
    crate::sys::load_before();
    let rounds = if opts.quick { 1 } else { 3 };
    let cpus = crate::sys::cpus();
    let pinned = SWEEP_SHARDS <= cpus;
    let lessees = lessee_sweep(opts.quick, rounds)?;
    let mut t = Table::new(&[
        "max lessees",
        "events/s",
        "offered/s",
        "p50 us",
        "p99 us",
        "in slo",
        "lessees peak",
        "scale-up p99 us",
    ]);
    for r in &lessees {
        t.row(vec![
            r["max_lessees"].to_string(),
            r["throughput_eps"].as_f64().map_or("-".into(), meps),
            cell(&r["offered_eps"], 1.0, 0),
            cell(&r["p50_us"], 1.0, 1),
            cell(&r["p99_us"], 1.0, 1),
            cell(&r["satisfaction"], 100.0, 1),
            cell(&r["lessees_peak"], 1.0, 0),
            cell(&r["scale_up_p99_us"], 1.0, 1),
        ]);
    }
    let where_ = if pinned { "pinned" } else { "UNPINNED: more shards than the machine's CPUs" };
    println!(
        "\nscaling: one hot key, {SWEEP_SHARDS} shards ({where_}, {cpus} CPUs), least laxity, medians\n{}",
        t.render()
    );
    let scale_up: Vec<f64> = lessees.iter().filter_map(|r| r["scale_up_p99_us"].as_f64()).collect();
    let worst = scale_up.iter().copied().fold(f64::NAN, f64::max);
    println!(
        "scale-up p99 (worst median over the configurations): {} us (target <= {SCALE_UP_TARGET_US})",
        cell(&json!(worst), 1.0, 1)
    );
    Ok(json!({
        "max_in_flight": MAX_IN_FLIGHT,
        "lessee_sweep": { "shards": SWEEP_SHARDS, "cpus": cpus, "pinned": pinned, "keys": 1, "rounds": rounds, "rows": lessees },
        "scale_up": { "target_p99_us": SCALE_UP_TARGET_US, "worst_p99_us": if worst.is_finite() { json!(worst) } else { Value::Null }, "met": worst.is_finite() && worst <= SCALE_UP_TARGET_US },
    }))
}

/// The figure: throughput and p99 against lessees.
pub fn figure(r: &Value) -> Vec<Panel> {
    let sweep = rows(&r["lessee_sweep"], "rows");
    let points =
        |key: &str| -> Vec<(f64, f64)> { sweep.iter().map(|x| (num(&x["max_lessees"]), num(&x[key]))).collect() };
    vec![
        Panel::lines(
            "throughput (closed loop)",
            "max lessees",
            "events/s",
            vec![Series::new("events/s", points("throughput_eps"))],
        ),
        Panel::lines(
            "latency (open loop, 1.2x no-lessee capacity)",
            "max lessees",
            "µs",
            vec![Series::new("p50", points("p50_us")), Series::new("p99", points("p99_us"))],
        )
        .log(),
    ]
}
