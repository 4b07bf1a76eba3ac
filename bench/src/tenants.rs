//! Scenario `tenants`: a latency-critical app (1 ms SLO) beside a heavy app (100 ms SLO) on the
//! same 2 shards, the heavy app offered load near the engine's capacity with a burst above it.
//! Each policy (fifo, edf, laxity, fair) runs the same workload, interleaved over rounds; per app
//! we report SLO satisfaction, p50 and p99.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- tenants
//! ```
//! Capacity is measured first (the heavy app alone, closed loop); the heavy app then runs at 70%
//! of it with a burst at 150% for a quarter of the run. With FIFO the critical app's messages wait
//! behind the burst's backlog; deadline-aware policies (edf, laxity) and weighted shares (fair,
//! weight 8 vs 1) should keep it within its SLO.
//!
//! Then the flood: the heavy app offered 10x its fair share (weights 8 : 1, so 10/9 of its
//! capacity) beside the critical app, under fifo (the default) and fair, with both apps on both
//! shards (`shared`) and placed by the engine (`placed`: the flood's declared rate fills a shard,
//! so the critical app starts on the other). Reported: the critical app's satisfaction beside the
//! flood over its satisfaction alone, in the same placement.

use dirigo_engine::compile::run_config;
use dirigo_engine::config::Config;
use dirigo_engine::engine::StopHandle;
use dirigo_engine::policy::{Builtin, POLICY_NAMES};
use dirigo_engine::report::Summary;
use serde_json::{json, Value};

use crate::apps;
use crate::report::{median, Table};
use crate::Opts;

const HEAVY: &str = r#"
[[app]]
name = "heavy"
slo = "100ms"
weight = 1
# Beside the critical app on both shards: the policies are what this scenario compares.
cores = CORES
schema = { user = "u64", amount = "u64" }
[[app.source]]
name = "clicks"
kind = "generator"
keys = 100000
seed = 3
RATE
[[app.function]]
name = "spend"
kind = "sum"
input = "clicks"
key = "user"
field = "amount"
[[app.sink]]
name = "latency"
kind = "latency"
input = "spend"
"#;

fn run_text(text: &str, policy: &str) -> anyhow::Result<Summary> {
    let config = Config::parse(text, "tenants.toml")?;
    Ok(run_config(&config, 2, Builtin::by_name(policy).expect("policy"), StopHandle::default())?)
}

/// Events/s the heavy app sustains alone, closed loop.
fn capacity(events: u64) -> anyhow::Result<f64> {
    let text = HEAVY.replace("RATE", &format!("rate = 0\nevents = {events}")).replace("CORES", "2");
    Ok(run_text(&text, "fifo")?.apps[0].throughput_eps)
}

fn workload(capacity: f64, secs: f64) -> String {
    let base = (capacity * 0.7) as u64;
    let burst = (capacity * 1.5) as u64;
    let rate = format!(
        "rate = {base}\nduration = \"{}ms\"\nbursts = [{{ at = \"{}ms\", duration = \"{}ms\", rate = {burst} }}]",
        (secs * 1000.0) as u64,
        (secs * 375.0) as u64,
        (secs * 250.0) as u64
    );
    let critical = apps::critical(10000, &format!("{}ms", (secs * 1000.0) as u64), 2);
    format!("{critical}\n{}", HEAVY.replace("RATE", &rate).replace("CORES", "2"))
}

/// Where the flood runs: beside the critical app on both shards, or placed by the engine.
#[derive(Clone, Copy, Debug)]
enum Placement {
    Shared,
    Placed,
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Placement::Shared => "shared",
            Placement::Placed => "placed",
        }
    }

    /// `cores` of each app: both shards, or 0 (the engine's choice).
    fn cores(self) -> usize {
        match self {
            Placement::Shared => 2,
            Placement::Placed => 0,
        }
    }
}

/// The critical app alone, or beside the heavy app offered 10x its share, for `secs`.
fn flood_text(capacity: f64, secs: f64, placement: Placement, with_flood: bool) -> String {
    let ms = (secs * 1000.0) as u64;
    let critical = apps::critical(10000, &format!("{ms}ms"), placement.cores());
    if !with_flood {
        return critical;
    }
    let rate = format!("rate = {}\nduration = \"{ms}ms\"", (capacity * 10.0 / 9.0) as u64);
    let heavy = HEAVY.replace("RATE", &rate).replace("CORES", &placement.cores().to_string());
    format!("{critical}\n{heavy}")
}

/// The flood runs: per policy and placement, the critical app's satisfaction alone and beside.
fn flood(capacity: f64, secs: f64, rounds: usize) -> anyhow::Result<Vec<Value>> {
    let mut rows = Vec::new();
    let mut table =
        Table::new(&["flood", "policy", "alone", "beside", "beside/alone", "p99 alone us", "p99 beside us"]);
    for placement in [Placement::Shared, Placement::Placed] {
        for policy in ["fifo", "fair"] {
            let (mut alone, mut beside) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                alone.push(run_text(&flood_text(capacity, secs, placement, false), policy)?);
                beside.push(run_text(&flood_text(capacity, secs, placement, true), policy)?);
            }
            let of = |runs: &[Summary], f: fn(&dirigo_engine::report::AppSummary) -> f64| {
                median(&runs.iter().map(|s| f(s.app("critical").expect("critical"))).collect::<Vec<_>>())
            };
            let (sat_alone, sat_beside) = (of(&alone, |a| a.satisfaction), of(&beside, |a| a.satisfaction));
            let (p99_alone, p99_beside) = (of(&alone, |a| a.latency_us.p99), of(&beside, |a| a.latency_us.p99));
            let ratio = sat_beside / sat_alone.max(1e-9);
            table.row(vec![
                placement.name().into(),
                policy.into(),
                format!("{:.2}%", sat_alone * 100.0),
                format!("{:.2}%", sat_beside * 100.0),
                format!("{ratio:.3}"),
                format!("{p99_alone:.1}"),
                format!("{p99_beside:.1}"),
            ]);
            rows.push(json!({
                "placement": placement.name(), "policy": policy,
                "satisfaction_alone": sat_alone, "satisfaction_beside": sat_beside, "ratio": ratio,
                "p99_alone_us": p99_alone, "p99_beside_us": p99_beside,
            }));
        }
    }
    println!("\nthe critical app beside a flood (the heavy app at 10x its share), median of {rounds}:");
    print!("{}", table.render());
    Ok(rows)
}

/// Run the scenario.
pub fn run_scenario(opts: Opts) -> anyhow::Result<Value> {
    let (cap_events, secs, rounds) = if opts.quick { (300_000, 2.0, 1) } else { (3_000_000, 6.0, 3) };
    let cap = capacity(cap_events)?;
    println!("heavy app capacity alone: {cap:.0} events/s; offered 70% with a burst at 150%");
    let text = workload(cap, secs);
    let mut results: Vec<Vec<Summary>> = vec![Vec::new(); POLICY_NAMES.len()];
    for _ in 0..rounds {
        for (i, p) in POLICY_NAMES.iter().enumerate() {
            results[i].push(run_text(&text, p)?);
        }
    }
    let mut table = Table::new(&["policy", "app", "satisfaction", "p50 us", "p99 us", "events out"]);
    let mut rows = Vec::new();
    for (p, runs) in POLICY_NAMES.iter().zip(&results) {
        for app in ["critical", "heavy"] {
            let of = |f: fn(&dirigo_engine::report::AppSummary) -> f64| {
                median(&runs.iter().map(|s| f(s.app(app).expect("app"))).collect::<Vec<_>>())
            };
            let (sat, p50, p99) = (of(|a| a.satisfaction), of(|a| a.latency_us.p50), of(|a| a.latency_us.p99));
            let out = of(|a| a.events_out as f64);
            table.row(vec![
                p.to_string(),
                app.into(),
                format!("{:.2}%", sat * 100.0),
                format!("{p50:.1}"),
                format!("{p99:.1}"),
                format!("{out:.0}"),
            ]);
            rows.push(json!({ "policy": p, "app": app, "satisfaction": sat, "p50_us": p50, "p99_us": p99, "events_out": out }));
        }
    }
    print!("{}", table.render());
    let flood = flood(cap, secs, rounds)?;
    Ok(json!({ "capacity_eps": cap, "seconds": secs, "rounds": rounds, "results": rows, "flood": flood }))
}
