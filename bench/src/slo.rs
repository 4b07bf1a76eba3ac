//! Scenario `slo`: the Dirigo paper's experiment. Three apps share 2 shards: `critical` (1 ms SLO,
//! a steady 5k events/s keyed count) and two heavy apps (`heavy-a`, `heavy-b`, 50 ms SLO) whose
//! tumbling-window sums over zipf-hot users burst in turn above the engine's capacity. Two setups:
//!
//! - `serverful`: FIFO, no autoscaling (`max_lessees = 0`: every actor only on its lessor), and
//!   resources counted as a serverful engine reserves them: every app on every shard for the
//!   whole run (shard-seconds = wall x shards per app);
//! - `dirigo`: the least-laxity policy with dual-mode autoscaling (`max_lessees = 1` on the
//!   windows: a hot window actor leases a slot on the other shard when its deadline would be
//!   missed at home); shard-seconds are those the engine measured (`shard_seconds`: seconds a
//!   shard hosted at least one of the app's activations, summed over shards);
//! - `laxity-lessor-only`: least laxity without lessees, which separates what the policy does from
//!   what the lessees do;
//! - `dirigo-fair`: the dual-mode setup with weighted fair share (critical weight 8, heavy 1), the policy
//!   that protected the critical app best in `tenants`.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- slo [--quick]
//! ```
//! The heavy apps' capacity is measured first (`heavy-a` alone, closed loop, serverful); each heavy
//! app is then offered 25% of it, and bursts to 80% for a quarter of the run (`heavy-a` in the
//! second quarter, `heavy-b` in the third: 105% of the capacity in all during a burst). Setups alternate over interleaved rounds; reported
//! per setup and app: median satisfaction, p50, p99, shard-seconds, and per run the process's
//! CPU-seconds; satisfaction over time (per 250 ms interval, median over rounds) is plotted.

use dirigo_engine::compile::{compile, settings};
use dirigo_engine::config::Config;
use dirigo_engine::engine::{self, StopHandle};
use dirigo_engine::policy::Builtin;
use dirigo_engine::report::{Progress, Summary};
use serde_json::{json, Value};

use crate::apps;
use crate::figures::{distinct, num, rows};
use crate::plot::{Panel, Series};
use crate::report::{median, Table};
use crate::Opts;

/// Shards of every run.
const SHARDS: usize = 2;
/// Progress interval: the resolution of satisfaction over time.
const INTERVAL_MS: u64 = 250;
/// Apps, in config order.
const APPS: [&str; 3] = ["critical", "heavy-a", "heavy-b"];

/// A way to run the apps.
#[derive(Clone, Copy, Debug)]
struct Setup {
    name: &'static str,
    policy: &'static str,
    max_lessees: u32,
    /// Resources are reserved on every shard for the whole run (shard-seconds = wall x shards).
    serverful: bool,
}

const SETUPS: [Setup; 4] = [
    Setup { name: "serverful", policy: "fifo", max_lessees: 0, serverful: true },
    Setup { name: "laxity-lessor-only", policy: "laxity", max_lessees: 0, serverful: false },
    Setup { name: "dirigo", policy: "laxity", max_lessees: 1, serverful: false },
    Setup { name: "dirigo-fair", policy: "fair", max_lessees: 1, serverful: false },
];

const HEAVY: &str = r#"
[[app]]
name = "NAME"
slo = "50ms"
# Every app shares both shards (the serverful layout this experiment starts from).
cores = 2
schema = { user = "u64", amount = "u64", ts = "u64" }
event_time = "ts"
watermark_every = 500
[[app.source]]
name = "clicks"
kind = "generator"
keys = 10000
distribution = "zipf"
zipf_s = 1.2
seed = SEED
RATE
[[app.function]]
name = "spend"
kind = "window"
input = "clicks"
key = "user"
window = { type = "tumbling", size = "100ms" }
aggregate = { op = "sum", field = "amount" }
max_lessees = LESSEES
[[app.sink]]
name = "latency"
kind = "latency"
input = "spend"
"#;

fn heavy(name: &str, seed: u64, rate: &str, lessees: u32) -> String {
    HEAVY
        .replace("NAME", name)
        .replace("SEED", &seed.to_string())
        .replace("RATE", rate)
        .replace("LESSEES", &lessees.to_string())
}

fn engine_table() -> String {
    format!("[engine]\nshards = {SHARDS}\nstats_interval = \"{INTERVAL_MS}ms\"\n")
}

/// A run: the summary as JSON (so fields added to it are read by name) and the progress lines.
struct RunOut {
    summary: Summary,
    json: Value,
    progress: Vec<Progress>,
}

fn run_text(text: &str, policy: &str) -> anyhow::Result<RunOut> {
    let config = Config::parse(text, "slo.toml")?;
    let plan = compile(&config, SHARDS)?;
    let policy = Builtin::by_name(policy).expect("a built-in policy");
    let mut progress = Vec::new();
    let summary = engine::run(plan, &settings(&config), policy, StopHandle::default(), |p| progress.push(p.clone()))?;
    let json = serde_json::to_value(&summary)?;
    Ok(RunOut { summary, json, progress })
}

/// Events/s `heavy-a` sustains alone, closed loop, serverful.
fn capacity(events: u64) -> anyhow::Result<f64> {
    let text = format!("{}{}", engine_table(), heavy("heavy-a", 3, &format!("rate = 0\nevents = {events}"), 0));
    Ok(run_text(&text, "fifo")?.summary.apps[0].throughput_eps)
}

/// The three apps for `setup`, `secs` long, heavy apps sized from `cap`.
fn workload(setup: Setup, cap: f64, secs: f64) -> String {
    let ms = |f: f64| format!("{}ms", (secs * 1000.0 * f) as u64);
    let rate = |burst_at: f64| {
        format!(
            "rate = {}\nduration = \"{}\"\nbursts = [{{ at = \"{}\", duration = \"{}\", rate = {} }}]",
            (cap * 0.25) as u64,
            ms(1.0),
            ms(burst_at),
            ms(0.25),
            (cap * 0.8) as u64
        )
    };
    let critical = apps::critical(5000, &ms(1.0), SHARDS);
    let a = heavy("heavy-a", 3, &rate(0.25), setup.max_lessees);
    let b = heavy("heavy-b", 4, &rate(0.5), setup.max_lessees);
    format!("{}{critical}{a}{b}", engine_table())
}

/// One app of one run, as reported.
fn app_row(setup: Setup, run: &RunOut, app: &str) -> Value {
    let i = APPS.iter().position(|a| *a == app).expect("an app");
    let a = &run.json["apps"][i];
    let wall = run.summary.wall_seconds;
    let measured = a["shard_seconds"].as_f64();
    let shard_seconds = if setup.serverful { Some(wall * SHARDS as f64) } else { measured };
    json!({
        "setup": setup.name,
        "app": app,
        "satisfaction": a["satisfaction"],
        "p50_us": a["latency_us"]["p50"],
        "p99_us": a["latency_us"]["p99"],
        "events_in": a["events_in"],
        "events_out": a["events_out"],
        "shard_seconds": shard_seconds,
        "shard_seconds_measured": measured,
        "lessees_peak": a["actors"]["lessees_peak"],
        "lessees_created": a["actors"]["lessees_created"],
        "barriers": a["actors"]["barriers"],
        // An empty histogram reads as zeros: no lessee, no reaction to report.
        "scale_up_p99_us": if a["actors"]["lessees_created"].as_u64().is_some_and(|n| n > 0) { a["actors"]["scale_up_us"]["p99"].clone() } else { Value::Null },
    })
}

/// Satisfaction of `app` per progress interval of `run`: `(t_seconds, satisfaction %)`.
fn timeline(run: &RunOut, app: &str) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    for p in &run.progress {
        if let Some(l) = p.lines.iter().find(|l| l.app == app && l.out_per_s > 0.0) {
            points.push((p.elapsed.as_secs_f64(), l.satisfaction * 100.0));
        }
    }
    points
}

/// Per interval index, the median over rounds of `(t, satisfaction)`.
fn median_timeline(per_round: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    let n = per_round.iter().map(Vec::len).max().unwrap_or(0);
    (0..n)
        .map(|k| {
            let at: Vec<&(f64, f64)> = per_round.iter().filter_map(|r| r.get(k)).collect();
            (median(&at.iter().map(|p| p.0).collect::<Vec<_>>()), median(&at.iter().map(|p| p.1).collect::<Vec<_>>()))
        })
        .collect()
}

/// Run the scenario.
pub fn run_scenario(opts: Opts) -> anyhow::Result<Value> {
    crate::sys::load_before();
    let (cap_events, secs, rounds) = if opts.quick { (200_000, 2.0, 1) } else { (2_000_000, 6.0, 3) };
    let cap = capacity(cap_events)?;
    println!("heavy-a alone: {cap:.0} events/s; each heavy app offered 25%, bursting to 80% in turn");
    let mut runs: Vec<Vec<RunOut>> = SETUPS.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..SETUPS.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let run = run_text(&workload(SETUPS[i], cap, secs), SETUPS[i].policy)?;
            println!(
                "{:<10} #{round}: wall {:.2}s cpu {:.2}s",
                SETUPS[i].name, run.summary.wall_seconds, run.summary.cpu_seconds
            );
            runs[i].push(run);
        }
    }
    let (results, table) = summarise(&runs);
    print!("\n{}", table.render());
    let timelines: Vec<Value> = SETUPS
        .iter()
        .zip(&runs)
        .flat_map(|(s, rs)| {
            APPS.map(|app| {
                let t = median_timeline(&rs.iter().map(|r| timeline(r, app)).collect::<Vec<_>>());
                json!({ "setup": s.name, "app": app, "points": t })
            })
        })
        .collect();
    let setups: Vec<Value> = SETUPS
        .iter()
        .zip(&runs)
        .map(|(s, rs)| {
            let cpu = median(&rs.iter().map(|r| r.summary.cpu_seconds).collect::<Vec<_>>());
            let wall = median(&rs.iter().map(|r| r.summary.wall_seconds).collect::<Vec<_>>());
            json!({ "setup": s.name, "policy": s.policy, "max_lessees": s.max_lessees, "serverful": s.serverful, "cpu_seconds": cpu, "wall_seconds": wall })
        })
        .collect();
    Ok(json!({
        "shards": SHARDS, "capacity_eps": cap, "seconds": secs, "rounds": rounds, "interval_ms": INTERVAL_MS,
        "setups": setups, "results": results, "timelines": timelines,
    }))
}

/// Median per (setup, app) over rounds, as JSON rows and a table.
fn summarise(runs: &[Vec<RunOut>]) -> (Vec<Value>, Table) {
    let mut table =
        Table::new(&["setup", "app", "satisfaction", "p50 us", "p99 us", "shard-s", "lessees peak", "cpu-s (run)"]);
    let mut results = Vec::new();
    for (s, rs) in SETUPS.iter().zip(runs) {
        let cpu = median(&rs.iter().map(|r| r.summary.cpu_seconds).collect::<Vec<_>>());
        for app in APPS {
            let each: Vec<Value> = rs.iter().map(|r| app_row(*s, r, app)).collect();
            let med = |k: &str| median(&each.iter().filter_map(|v| v[k].as_f64()).collect::<Vec<_>>());
            let opt = |k: &str| if each.iter().any(|v| v[k].is_number()) { json!(med(k)) } else { Value::Null };
            let row = json!({
                "setup": s.name, "app": app, "rounds": each.len(),
                "satisfaction": med("satisfaction"), "p50_us": med("p50_us"), "p99_us": med("p99_us"),
                "events_out": med("events_out"), "shard_seconds": opt("shard_seconds"),
                "shard_seconds_measured": opt("shard_seconds_measured"), "lessees_peak": opt("lessees_peak"),
                "lessees_created": opt("lessees_created"), "scale_up_p99_us": opt("scale_up_p99_us"),
                "runs": each,
            });
            let cell = |k: &str, digits: usize| row[k].as_f64().map_or("-".to_owned(), |x| format!("{x:.digits$}"));
            table.row(vec![
                s.name.into(),
                app.into(),
                format!("{:.2}%", med("satisfaction") * 100.0),
                cell("p50_us", 1),
                cell("p99_us", 1),
                cell("shard_seconds", 2),
                cell("lessees_peak", 0),
                format!("{cpu:.2}"),
            ]);
            results.push(row);
        }
    }
    (results, table)
}

/// The figure: satisfaction and shard-seconds per app per setup, and satisfaction over time.
pub fn figure(r: &Value) -> Vec<Panel> {
    let results = rows(r, "results");
    let setups = distinct(results, "setup");
    let apps = distinct(results, "app");
    let bars = |key: &str, scale: f64| -> Vec<Series<f64>> {
        setups
            .iter()
            .map(|s| {
                let v = apps.iter().map(|a| {
                    let row = results.iter().find(|x| x["setup"] == s.as_str() && x["app"] == a.as_str());
                    row.map_or(f64::NAN, |x| num(&x[key]) * scale)
                });
                Series::new(s.clone(), v.collect())
            })
            .collect()
    };
    let timelines = rows(r, "timelines");
    let over_time = |keep: &dyn Fn(&str) -> bool| -> Vec<Series<(f64, f64)>> {
        timelines
            .iter()
            .filter(|t| t["app"].as_str().is_some_and(keep))
            .map(|t| {
                let points = rows(t, "points").iter().map(|p| (num(&p[0]), num(&p[1]))).collect();
                Series::new(
                    format!("{} {}", t["setup"].as_str().unwrap_or(""), t["app"].as_str().unwrap_or("")),
                    points,
                )
            })
            .collect()
    };
    vec![
        Panel::bars("outputs within SLO", "%", apps.clone(), bars("satisfaction", 100.0)),
        Panel::bars("shard-seconds occupied", "shard-s", apps.clone(), bars("shard_seconds", 1.0)),
        Panel::lines("critical app within SLO over time", "s", "%", over_time(&|a| a == "critical")),
        Panel::lines("heavy apps within SLO over time", "s", "%", over_time(&|a| a != "critical")),
    ]
}
