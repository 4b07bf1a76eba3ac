//! Scenario `snapshots`: what exactly-once costs.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- snapshots [--quick]
//! ```
//!
//! 1. **State size.** A keyed count over `K` distinct keys (a generator of `2K` uniform events on
//!    2 shards, key groups on both; at least 2 s long, and the run kept going after it so that
//!    later snapshots hold the whole state) with a snapshot every 500 ms: the largest snapshot's size and its
//!    duration (from the controller freezing moves to the manifest being durable: barriers
//!    through the pipeline, the state archived on the shards, written and fsync'd by the writer
//!    thread), for K from 10 to 1.6 x 10^7 (a few KB to ~1 GB of archive). The run is stopped once
//!    the state is built, so its last periodic snapshot stays; then the same config runs again
//!    and resumes from it: **recovery time** is that run's start (load, checksum and parse the
//!    snapshot, every shard built and its state imported) against a fresh run's start.
//! 2. **Throughput and latency.** W1 (as `keyed-count`) with a snapshot every second against
//!    none, interleaved, 5 rounds, medians: maximum throughput (closed loop) and p99 at 200k
//!    events/s (open loop), W1's app on both shards; and p99 at 200k events/s with the app on
//!    one of the two shards (the other core left to the controller and the snapshot writer, as
//!    any machine with more cores than shards has; on 2 CPUs, W1's two pinned shards leave them
//!    none). Target: at most 10% throughput lost, p99 at most 2x.
//!
//! Every run's output counts are checked: events in = events out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use dirigo_engine::config::Config;
use dirigo_engine::engine::StopHandle;
use dirigo_engine::policy::Builtin;
use dirigo_engine::report::Summary;
use serde_json::{json, Value};

use crate::figures::{num, rows};
use crate::keyed_count::dirigo::config_text;
use crate::keyed_count::{Load, W1};
use crate::plot::{Panel, Series};
use crate::report::{median, ratio, Table};
use crate::Opts;

/// A fresh directory for one run's snapshots and outputs.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dirigo-bench-snapshots-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn state_config(keys: u64, dir: &Path) -> String {
    let events = 2 * keys;
    // Spread over 2 s at least, so periodic snapshots see the state grow.
    let rate = (events / 2).max(1);
    // A second app keeps the run going after the state is built, so that later snapshots hold
    // all of it (the fill of 10^7 keys takes about 10 s here, each snapshot of it a few).
    let idle = (3 + keys / 400_000).to_string() + "s";
    format!(
        r#"
[engine]
shards = 2

[snapshots]
dir = "{dir}"
every = "500ms"
keep = 2

[[app]]
name = "state"
slo = "1s"
cores = 2
schema = {{ key = "u64", value = "u64" }}

[[app.source]]
name = "events"
kind = "generator"
rate = {rate}
events = {events}
keys = {keys}
seed = 5

[[app.function]]
name = "counts"
kind = "count"
input = "events"
key = "key"

[[app.sink]]
name = "out"
kind = "null"
input = "counts"

[[app]]
name = "keepalive"
slo = "1s"
schema = {{ n = "u64" }}

[[app.source]]
name = "ticks"
kind = "generator"
rate = 10
duration = "{idle}"
keys = 1

[[app.sink]]
name = "out"
kind = "null"
input = "ticks"
"#,
        dir = dir.display()
    )
}

/// Run `text`, stopping it after `run_for` if given.
fn run(text: &str, run_for: Option<Duration>) -> anyhow::Result<Summary> {
    let config = Config::parse(text, "snapshots.toml").map_err(|e| anyhow!("{e}"))?;
    let policy = Builtin::by_name(config.engine.policy.name()).context("unknown policy")?;
    let plan = dirigo_engine::compile::compile(&config, 0).map_err(|e| anyhow!("{e}"))?;
    let mut settings = dirigo_engine::compile::settings(&config);
    settings.run_for = run_for;
    Ok(dirigo_engine::engine::run(plan, &settings, policy, StopHandle::default(), |_| {})?)
}

fn state_row(keys: u64) -> anyhow::Result<Value> {
    let dir = scratch(&format!("state-{keys}"));
    let text = state_config(keys, &dir.join("snaps"));
    // Build the state, then stop: the last periodic snapshot stays to resume from.
    let first = run(&text, None)?;
    let app = &first.apps[0];
    anyhow::ensure!(app.events_in == 2 * keys && app.events_out == app.events_in, "the count lost events");
    let snaps = first.snapshots.clone().context("snapshots were taken")?;
    // The largest periodic snapshot (the last one says only that the run finished).
    let &(epoch, bytes, ms) =
        snaps.history.iter().filter(|h| h.1 > 0).max_by_key(|h| h.1).context("a periodic snapshot")?;
    // Recovery: take the finished marker away, so the run resumes from the newest state.
    let finished = dir.join("snaps").join(format!("epoch-{:020}", snaps.last));
    std::fs::remove_dir_all(&finished).ok();
    let resumed = run(&text, Some(Duration::from_millis(200)))?;
    let rs = resumed.snapshots.context("snapshots")?;
    let fresh_dir = scratch(&format!("fresh-{keys}"));
    let fresh = run(&state_config(keys, &fresh_dir.join("snaps")), Some(Duration::from_millis(200)))?;
    let fs = fresh.snapshots.context("snapshots")?;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&fresh_dir);
    Ok(json!({
        "keys": keys,
        // The process's peak resident memory so far (sizes run smallest first: this row's).
        "peak_rss_mb": peak_rss_mb(),
        "snapshots_taken": snaps.taken,
        "largest_epoch": epoch,
        "bytes": bytes,
        "snapshot_ms": ms,
        "resumed_from": rs.resumed_from,
        "recovery_start_ms": rs.start_ms,
        "fresh_start_ms": fs.start_ms,
    }))
}

/// VmHWM of this process, MiB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kb / 1024.0
}

fn with_snapshots(text: &str, dir: &Path) -> String {
    format!("[snapshots]\ndir = \"{}\"\nevery = \"1s\"\nkeep = 2\n{text}", dir.display())
}

/// One W1 run under `load`, with snapshots or without, the app on `cores` of W1's 2 shards:
/// (events/s, p99 µs, snapshots taken).
fn w1(load: Load, cores: usize, snapshots: bool) -> anyhow::Result<(f64, f64, u64)> {
    let text = config_text(load, &W1, None).replace(&format!("cores = {}", W1.shards), &format!("cores = {cores}"));
    let dir = scratch("w1");
    let text = if snapshots { with_snapshots(&text, &dir.join("snaps")) } else { text };
    let s = run(&text, None)?;
    let _ = std::fs::remove_dir_all(&dir);
    let app = &s.apps[0];
    anyhow::ensure!(app.events_in == load.events() && app.events_out == app.events_in, "W1 lost events");
    let taken = s.snapshots.map_or(0, |c| c.taken);
    Ok((app.events_in as f64 / s.wall_seconds, app.latency_us.p99, taken))
}

/// Run the scenario; returns its `results` JSON.
pub fn run_scenario(opts: Opts) -> anyhow::Result<Value> {
    let sizes: &[u64] =
        if opts.quick { &[1_000, 100_000] } else { &[10, 1_000, 100_000, 1_000_000, 10_000_000, 16_000_000] };
    let mut states = Vec::new();
    let mut t =
        Table::new(&["keys", "snapshot bytes", "snapshot ms", "recovery start ms", "fresh start ms", "peak RSS MiB"]);
    for &k in sizes {
        let r = state_row(k)?;
        t.row(vec![
            k.to_string(),
            r["bytes"].to_string(),
            r["snapshot_ms"].to_string(),
            format!("{:.1}", num(&r["recovery_start_ms"])),
            format!("{:.1}", num(&r["fresh_start_ms"])),
            format!("{:.0}", num(&r["peak_rss_mb"])),
        ]);
        states.push(r);
    }
    println!("{}", t.render());

    let (rounds, events, rate_events) = if opts.quick { (1, 1_000_000, 200_000) } else { (5, 6_000_000, 600_000) };
    // W1 as `keyed-count` runs it, on both shards; and its app on one of the two, so that the
    // controller and the snapshot writer have a core to run on, as on any machine with more
    // cores than shards (on 2 CPUs, W1's two pinned shards leave them none).
    let rate = Load::Rate { eps: 200_000, events: rate_events };
    let loads = [("max", Load::Max { events }, 2), ("200k/s", rate, 2), ("200k/s, app on 1 core", rate, 1)];
    let mut runs = Vec::new();
    for (name, load, cores) in loads {
        for round in 0..rounds {
            let order = if round % 2 == 0 { [false, true] } else { [true, false] };
            for snaps in order {
                let (eps, p99, taken) = w1(load, cores, snaps)?;
                println!("w1 {name:<7} snapshots {snaps:<5} round {round}: {eps:>12.0} ev/s  p99 {p99:>9.1} us  ({taken} taken)");
                runs.push(json!({ "load": name, "snapshots": snaps, "round": round, "events_per_s": eps, "p99_us": p99, "taken": taken }));
            }
        }
    }
    let med = |load: &str, snaps: bool, field: &str| {
        let xs: Vec<f64> =
            runs.iter().filter(|r| r["load"] == load && r["snapshots"] == snaps).map(|r| num(&r[field])).collect();
        median(&xs)
    };
    let mut medians = Vec::new();
    let mut t = Table::new(&["W1 load", "ev/s none", "ev/s every 1s", "ratio", "p99 none", "p99 every 1s", "ratio"]);
    for (name, _, _) in loads {
        let (e0, e1) = (med(name, false, "events_per_s"), med(name, true, "events_per_s"));
        let (p0, p1) = (med(name, false, "p99_us"), med(name, true, "p99_us"));
        t.row(vec![
            name.into(),
            format!("{e0:.0}"),
            format!("{e1:.0}"),
            format!("{:.3}", ratio(e1, e0)),
            format!("{p0:.1}"),
            format!("{p1:.1}"),
            format!("{:.2}", ratio(p1, p0)),
        ]);
        medians.push(json!({
            "load": name, "events_per_s_none": e0, "events_per_s_snapshots": e1, "throughput_ratio": ratio(e1, e0),
            "p99_us_none": p0, "p99_us_snapshots": p1, "p99_ratio": ratio(p1, p0),
        }));
    }
    println!("{}", t.render());
    Ok(json!({ "state": states, "w1_runs": runs, "w1_medians": medians }))
}

/// Snapshot size and duration, and recovery time, against keys.
pub fn figure(r: &Value) -> Vec<Panel> {
    let states = rows(r, "state");
    let pts = |field: &str| -> Vec<(f64, f64)> { states.iter().map(|s| (num(&s["keys"]), num(&s[field]))).collect() };
    let times = vec![
        Series::new("snapshot", pts("snapshot_ms")),
        Series::new("recovery start", pts("recovery_start_ms")),
        Series::new("fresh start", pts("fresh_start_ms")),
    ];
    vec![
        Panel::lines("snapshot and recovery time against keys", "keys", "ms", times).log_x().log().legend_left(),
        Panel::lines("snapshot size against keys", "keys", "bytes", vec![Series::new("bytes", pts("bytes"))])
            .log_x()
            .log()
            .legend_left(),
    ]
}
