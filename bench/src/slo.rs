//! Scenario `slo`: the Dirigo paper's experiment on serverless placement. A `critical` app (1 ms
//! SLO, a steady 5k events/s keyed count) and `H` heavy apps (`heavy-1` ..; 50 ms SLO,
//! tumbling-window sums over zipf-hot users), each offered 25% of what one shard sustains and
//! bursting in turn to 80% for a slice of the run, are run two ways, side by side:
//!
//! - `serverful`, as Flink runs them: every app on shards of its own, sized for its peak (one
//!   shard each: a heavy app's burst fits one), FIFO, nothing shared. One engine with a pinned
//!   placement: each app packed alone on its shard (`shard_capacity = 1`), `max_cores` = its
//!   cores (its groups never move), no lessees. `B = H + 1` shards reserved.
//! - `dirigo`: the same apps and offered load on one shared pool of `N` shards (`--shards N`,
//!   default 2, and `B` is chosen so that `N <= 0.7 B`), packed by declared load, key groups
//!   spreading out on a burst and consolidating after, lessees on the windows, under the `fair`
//!   policy (the critical app weighs 8: fair across apps).
//!
//! Both also run a quiet phase (10% of the load, no burst). Per setup and app: median
//! satisfaction, p50, p99 over interleaved rounds; per run: CPU-seconds the process used and
//! shards reserved; the shards each app used over time (Dirigo); every app's outputs counted.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- slo [--quick] [--shards N]
//! ```

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

/// Progress interval: the resolution of satisfaction over time.
const INTERVAL_MS: u64 = 250;

/// A way to run the apps.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Setup {
    name: &'static str,
    policy: &'static str,
    serverful: bool,
    /// Share of the offered load (1.0: the experiment; 0.1: the quiet phase, no burst).
    load: f64,
}

const SETUPS: [Setup; 4] = [
    Setup { name: "serverful", policy: "fifo", serverful: true, load: 1.0 },
    Setup { name: "dirigo", policy: "fair", serverful: false, load: 1.0 },
    Setup { name: "serverful-quiet", policy: "fifo", serverful: true, load: 0.1 },
    Setup { name: "dirigo-quiet", policy: "fair", serverful: false, load: 0.1 },
];

const HEAVY: &str = r#"
[[app]]
name = "NAME"
slo = "50ms"
CORES
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

/// The experiment's sizes for a Dirigo pool of `n` shards.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// Dirigo's shards.
    n: usize,
    /// Heavy apps.
    heavy: usize,
    /// Serverful shards (one per app).
    b: usize,
}

impl Sizes {
    fn of(n: usize) -> Sizes {
        // Serverful reserves one shard per app; Dirigo gets at most 0.7 of that.
        let b = ((n as f64 / 0.7).ceil() as usize).max(n + 1);
        Sizes { n, heavy: b - 1, b }
    }

    fn apps(&self) -> Vec<String> {
        std::iter::once("critical".to_owned()).chain((1..=self.heavy).map(|i| format!("heavy-{i}"))).collect()
    }
}

fn heavy(name: &str, seed: u64, rate: &str, cores: &str, lessees: u32) -> String {
    HEAVY
        .replace("NAME", name)
        .replace("SEED", &seed.to_string())
        .replace("RATE", rate)
        .replace("CORES", cores)
        .replace("LESSEES", &lessees.to_string())
}

/// A run: the summary as JSON (so fields added to it are read by name) and the progress lines.
struct RunOut {
    summary: Summary,
    json: Value,
    progress: Vec<Progress>,
}

fn run_text(text: &str, shards: usize, policy: &str) -> anyhow::Result<RunOut> {
    let config = Config::parse(text, "slo.toml")?;
    let plan = compile(&config, shards)?;
    let policy = Builtin::by_name(policy).expect("a built-in policy");
    let mut progress = Vec::new();
    let summary = engine::run(plan, &settings(&config), policy, StopHandle::default(), |p| progress.push(p.clone()))?;
    let json = serde_json::to_value(&summary)?;
    Ok(RunOut { summary, json, progress })
}

/// Events/s one heavy app sustains alone on one shard, closed loop.
fn capacity(events: u64) -> anyhow::Result<f64> {
    let text = format!(
        "[engine]\nshards = 1\n{}",
        heavy("heavy-1", 3, &format!("rate = 0\nevents = {events}"), "cores = 1", 0)
    );
    Ok(run_text(&text, 1, "fifo")?.summary.apps[0].throughput_eps)
}

/// Every app for `setup`, `secs` long, heavy apps sized from `cap`.
fn workload(setup: Setup, sizes: Sizes, cap: f64, secs: f64) -> (String, usize) {
    let ms = |f: f64| format!("{}ms", (secs * 1000.0 * f) as u64);
    let slice = 1.0 / (sizes.heavy as f64 + 1.0);
    let rate = |i: usize| {
        let base = format!("rate = {}\nduration = \"{}\"", ((cap * 0.25 * setup.load) as u64).max(1), ms(1.0));
        if setup.load < 1.0 {
            return base;
        }
        // Heavy app i bursts in slice i (of H + 1): one burst at a time.
        let at = ms(slice * i as f64);
        format!("{base}\nbursts = [{{ at = \"{at}\", duration = \"{}\", rate = {} }}]", ms(slice), (cap * 0.8) as u64)
    };
    let (shards, engine, cores, lessees) = if setup.serverful {
        // Each app alone on a shard of its own: any declared rate overfills a shard of capacity
        // 1, so every app takes the emptiest; `max_cores = 1` pins its groups there.
        (sizes.b, "shard_capacity = 1\nrebalance = false\n".to_owned(), "cores = 1\nmax_cores = 1", 0)
    } else {
        // Declared load in the units the capacity was measured in: heavy apps pack 4 to a shard.
        (sizes.n, format!("shard_capacity = {}\n", cap as u64), "cores = 1", 1)
    };
    let critical_rate = ((5000.0 * setup.load) as u64).max(1);
    let mut text = format!("[engine]\nshards = {shards}\nstats_interval = \"{INTERVAL_MS}ms\"\n{engine}");
    text += &apps::critical(critical_rate, &ms(1.0), 1).replace("cores = 1", cores);
    for i in 1..=sizes.heavy {
        text += &heavy(&format!("heavy-{i}"), 2 + i as u64, &rate(i), cores, lessees);
    }
    (text, shards)
}

/// One app of one run, as reported.
fn app_row(setup: Setup, run: &RunOut, i: usize, app: &str, shards: usize) -> Value {
    let a = &run.json["apps"][i];
    json!({
        "setup": setup.name,
        "app": app,
        "satisfaction": a["satisfaction"],
        "p50_us": a["latency_us"]["p50"],
        "p99_us": a["latency_us"]["p99"],
        "events_in": a["events_in"],
        "events_out": a["events_out"],
        "cpu_seconds": a["cpu_seconds"],
        "shard_seconds_measured": a["shard_seconds"],
        "shards_reserved": shards,
        "moves": a["moves"],
        "lessees_created": a["actors"]["lessees_created"],
        "failed": a.get("failure").is_some_and(|f| !f.is_null()),
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

/// Shards hosting app `i` over a run: a step line from its `shards_over_time`.
fn shards_used(run: &RunOut, i: usize) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    let mut last = 0.0;
    for (t, on) in &run.summary.apps[i].shards_over_time {
        points.push((*t, last));
        last = on.len() as f64;
        points.push((*t, last));
    }
    points.push((run.summary.wall_seconds, last));
    points
}

/// Run the scenario.
pub fn run_scenario(opts: Opts) -> anyhow::Result<Value> {
    crate::sys::load_before();
    let sizes = Sizes::of(opts.shards.unwrap_or(2).max(1));
    let (cap_events, secs, rounds) = if opts.quick { (200_000, 2.0, 1) } else { (2_000_000, 6.0, 3) };
    let cap = capacity(cap_events)?;
    let apps = sizes.apps();
    println!(
        "one heavy app alone: {cap:.0} events/s; {} heavy apps offered 25% each, bursting to 80% in turn; \
         serverful {} shards, dirigo {}",
        sizes.heavy, sizes.b, sizes.n
    );
    let mut runs: Vec<Vec<(RunOut, usize)>> = SETUPS.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for i in crate::report::interleaved(&(0..SETUPS.len()).collect::<Vec<_>>(), round) {
            let (text, shards) = workload(SETUPS[i], sizes, cap, secs);
            let run = run_text(&text, shards, SETUPS[i].policy)?;
            let by =
                |r: dirigo_engine::metrics::MoveReason| run.summary.migrations.iter().filter(|m| m.reason == r).count();
            println!(
                "{:<16} #{round}: {shards} shards, wall {:.2}s cpu {:.2}s, {} key-group moves ({} spread, {} consolidate)",
                SETUPS[i].name,
                run.summary.wall_seconds,
                run.summary.cpu_seconds,
                run.summary.migrations.len(),
                by(dirigo_engine::metrics::MoveReason::Spread),
                by(dirigo_engine::metrics::MoveReason::Consolidate),
            );
            for (a, s) in run.summary.apps.iter().enumerate() {
                anyhow::ensure!(s.failure.is_none(), "{}: app {} failed", SETUPS[i].name, apps[a]);
                anyhow::ensure!(s.events_out > 0, "{}: app {} produced no output", SETUPS[i].name, apps[a]);
            }
            runs[i].push((run, shards));
        }
    }
    let (results, table) = summarise(&runs, &apps);
    print!("\n{}", table.render());
    let cpu = |name: &str| {
        let i = SETUPS.iter().position(|s| s.name == name).expect("a setup");
        median(&runs[i].iter().map(|(r, _)| r.summary.cpu_seconds).collect::<Vec<_>>())
    };
    let ratios = json!({
        "cpu_dirigo_over_serverful": cpu("dirigo") / cpu("serverful"),
        "cpu_quiet_dirigo_over_serverful": cpu("dirigo-quiet") / cpu("serverful-quiet"),
        "shards_dirigo_over_serverful": sizes.n as f64 / sizes.b as f64,
    });
    println!("ratios (dirigo / serverful): {ratios}");
    let timelines: Vec<Value> = SETUPS
        .iter()
        .zip(&runs)
        .filter(|(s, _)| s.load == 1.0)
        .flat_map(|(s, rs)| {
            apps.iter()
                .map(|app| {
                    let per_round: Vec<Vec<(f64, f64)>> = rs.iter().map(|(r, _)| timeline(r, app)).collect();
                    json!({ "setup": s.name, "app": app, "points": per_round.first().cloned().unwrap_or_default() })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let dirigo = SETUPS.iter().position(|s| s.name == "dirigo").expect("dirigo");
    let placement: Vec<Value> = apps
        .iter()
        .enumerate()
        .map(|(i, app)| json!({ "app": app, "points": runs[dirigo].first().map(|(r, _)| shards_used(r, i)).unwrap_or_default() }))
        .collect();
    let setups: Vec<Value> = SETUPS
        .iter()
        .zip(&runs)
        .map(|(s, rs)| {
            let cpu = median(&rs.iter().map(|(r, _)| r.summary.cpu_seconds).collect::<Vec<_>>());
            let wall = median(&rs.iter().map(|(r, _)| r.summary.wall_seconds).collect::<Vec<_>>());
            let shards = rs.first().map_or(0, |r| r.1);
            json!({ "setup": s.name, "policy": s.policy, "serverful": s.serverful, "load": s.load,
                    "shards_reserved": shards, "cpu_seconds": cpu, "wall_seconds": wall })
        })
        .collect();
    Ok(json!({
        "shards": sizes.n, "serverful_shards": sizes.b, "heavy_apps": sizes.heavy, "capacity_eps": cap,
        "seconds": secs, "rounds": rounds, "interval_ms": INTERVAL_MS,
        "setups": setups, "results": results, "ratios": ratios, "timelines": timelines, "placement": placement,
    }))
}

/// Median per (setup, app) over rounds, as JSON rows and a table.
fn summarise(runs: &[Vec<(RunOut, usize)>], apps: &[String]) -> (Vec<Value>, Table) {
    let mut table =
        Table::new(&["setup", "app", "satisfaction", "p50 us", "p99 us", "app cpu-s", "moves", "run cpu-s"]);
    let mut results = Vec::new();
    for (s, rs) in SETUPS.iter().zip(runs) {
        let cpu = median(&rs.iter().map(|(r, _)| r.summary.cpu_seconds).collect::<Vec<_>>());
        for (i, app) in apps.iter().enumerate() {
            let each: Vec<Value> = rs.iter().map(|(r, shards)| app_row(*s, r, i, app, *shards)).collect();
            let med = |k: &str| median(&each.iter().filter_map(|v| v[k].as_f64()).collect::<Vec<_>>());
            let row = json!({
                "setup": s.name, "app": app, "rounds": each.len(),
                "satisfaction": med("satisfaction"), "p50_us": med("p50_us"), "p99_us": med("p99_us"),
                "events_out": med("events_out"), "cpu_seconds": med("cpu_seconds"),
                "shard_seconds_measured": med("shard_seconds_measured"), "moves": med("moves"),
                "lessees_created": med("lessees_created"), "runs": each,
            });
            let cell = |k: &str, digits: usize| row[k].as_f64().map_or("-".to_owned(), |x| format!("{x:.digits$}"));
            table.row(vec![
                s.name.into(),
                app.clone(),
                format!("{:.2}%", med("satisfaction") * 100.0),
                cell("p50_us", 1),
                cell("p99_us", 1),
                cell("cpu_seconds", 2),
                cell("moves", 0),
                format!("{cpu:.2}"),
            ]);
            results.push(row);
        }
    }
    (results, table)
}

/// The figure: satisfaction per app per setup, CPU-seconds per setup, satisfaction over time,
/// and the shards each app used over time under Dirigo.
pub fn figure(r: &Value) -> Vec<Panel> {
    let results = rows(r, "results");
    let apps = distinct(results, "app");
    let busy: Vec<String> = ["serverful", "dirigo"].map(String::from).to_vec();
    let bars = |key: &str, scale: f64| -> Vec<Series<f64>> {
        busy.iter()
            .map(|s| {
                let v = apps.iter().map(|a| {
                    let row = results.iter().find(|x| x["setup"] == s.as_str() && x["app"] == a.as_str());
                    row.map_or(f64::NAN, |x| num(&x[key]) * scale)
                });
                Series::new(s.clone(), v.collect())
            })
            .collect()
    };
    let setups = rows(r, "setups");
    let names: Vec<String> = setups.iter().filter_map(|s| s["setup"].as_str().map(String::from)).collect();
    let cpu = vec![Series::new("cpu-seconds", setups.iter().map(|s| num(&s["cpu_seconds"])).collect())];
    let timelines = rows(r, "timelines");
    let over_time = |keep: &dyn Fn(&str) -> bool| -> Vec<Series<(f64, f64)>> {
        timelines
            .iter()
            .filter(|t| t["app"].as_str().is_some_and(keep))
            .map(|t| {
                let points = rows(t, "points").iter().map(|p| (num(&p[0]), num(&p[1]))).collect();
                let name = format!("{} {}", t["setup"].as_str().unwrap_or(""), t["app"].as_str().unwrap_or(""));
                Series::new(name, points)
            })
            .collect()
    };
    let placement: Vec<Series<(f64, f64)>> = rows(r, "placement")
        .iter()
        .map(|p| {
            let points = rows(p, "points").iter().map(|x| (num(&x[0]), num(&x[1]))).collect();
            Series::new(format!("dirigo {}", p["app"].as_str().unwrap_or("")), points)
        })
        .collect();
    vec![
        Panel::bars("outputs within SLO", "%", apps.clone(), bars("satisfaction", 100.0)),
        Panel::bars("CPU-seconds per run", "cpu-s", names, cpu),
        Panel::lines("critical app within SLO over time", "s", "%", over_time(&|a| a == "critical")),
        Panel::lines("shards hosting each app over time (dirigo)", "s", "shards", placement),
    ]
}
