//! Scenario `hooks`: what the scheduling hooks cost per message. Workload W1 (generator -> map ->
//! keyed count -> latency sink) runs closed loop on ONE pinned shard, so every message takes the
//! full local path (mailbox batch, `on_enqueue`, `pick_next`, `pre_apply`/`post_apply`, the
//! function, `on_send`/`on_route`, the sink) and nothing else competes. Each built-in policy is
//! compared with `Bare`, whose hooks are no-ops the compiler removes, in interleaved rounds.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- hooks
//! ```
//! Reported: CPU ns per message (3 messages per event: map, count, sink) per policy, the median
//! over rounds, and the difference to `Bare` (target: at most 50 ns per message). Under `Bare`,
//! fifo, edf and laxity the map and the sink are fused into what feeds them (their hooks do
//! nothing with those records: `Policy::observes_send`, `observes_apply`), so of the three only
//! the count's record is made; fair observes `post_apply` and makes all three. The figure stays
//! per message as written: what a policy's hooks cost includes what they keep from being
//! skipped.

use dirigo_engine::compile::run_config;
use dirigo_engine::config::Config;
use dirigo_engine::engine::StopHandle;
use dirigo_engine::policy::{Bare, Builtin, Policy};
use serde_json::{json, Value};

use crate::report::{median, Table};
use crate::Opts;

/// Messages each event makes on its way: map, keyed count, sink.
const MESSAGES_PER_EVENT: f64 = 3.0;

fn config(events: u64) -> String {
    format!(
        r#"
[engine]
shards = 1
[[app]]
name = "w1"
slo = "10ms"
schema = {{ key = "u64", value = "u64" }}
[[app.source]]
name = "gen"
kind = "generator"
rate = 0
events = {events}
keys = 10000
[[app.function]]
name = "map"
kind = "map"
input = "gen"
fields = {{ key = "key", value = "value + 1" }}
[[app.function]]
name = "count"
kind = "count"
input = "map"
key = "key"
[[app.sink]]
name = "latency"
kind = "latency"
input = "count"
"#
    )
}

/// CPU ns per message of one closed-loop run under `policy`.
fn ns_per_message<P: Policy + Clone + Send>(policy: P, events: u64) -> anyhow::Result<f64> {
    let config = Config::parse(&config(events), "hooks.toml")?;
    let summary = run_config(&config, 1, policy, StopHandle::default())?;
    // The controller thread sleeps in a receive loop; the shard's CPU time dominates.
    Ok(summary.cpu_seconds * 1e9 / (summary.apps[0].events_in as f64 * MESSAGES_PER_EVENT))
}

/// Run the scenario.
pub fn run_scenario(opts: Opts) -> anyhow::Result<Value> {
    let (events, rounds) = if opts.quick { (200_000, 1) } else { (3_000_000, 5) };
    let names = ["bare", "fifo", "edf", "laxity", "fair"];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        samples[0].push(ns_per_message(Bare, events)?);
        for (i, name) in names.iter().enumerate().skip(1) {
            let p = Builtin::by_name(name).expect("built-in policy");
            samples[i].push(ns_per_message(p, events)?);
        }
    }
    let base = median(&samples[0]);
    let mut table = Table::new(&["policy", "ns/message", "added ns", "rounds"]);
    let mut rows = Vec::new();
    for (name, xs) in names.iter().zip(&samples) {
        let m = median(xs);
        table.row(vec![name.to_string(), format!("{m:.1}"), format!("{:+.1}", m - base), xs.len().to_string()]);
        rows.push(json!({ "policy": name, "ns_per_message": m, "added_ns": m - base, "samples": xs }));
    }
    print!("{}", table.render());
    Ok(json!({ "events": events, "rounds": rounds, "messages_per_event": MESSAGES_PER_EVENT, "policies": rows }))
}
