//! Scenario `scale`: how W1 scales with cores. For each shard count N, W1 (a generator of 10,000
//! uniform keys -> map -> keyed count -> latency sink, as `keyed-count`) runs on Dirigo with N
//! shards and on timely-dataflow with N workers, interleaved in one process:
//! - closed loop (`max`): the generator unbounded over `events_per_shard x N` events (generator
//!   parallelism N on Dirigo; each timely worker generates its share): events/s and CPU ns per
//!   event;
//! - open loop (`rate`): `rate_per_shard x N` events/s for `rate_seconds`: p50 and p99 from each
//!   event's scheduled time to the sink.
//!
//! Dirigo also runs the closed loop with its generator read in splits (`split_events`: each
//! instance takes the next 4,096 events when it has read a split; `dirigo-splits`), beside its
//! fixed shares, which timely's workers read too.
//!
//! Reported per system and N: the medians, the speed-up over N = 1 (`scaling`), whether
//! throughput never fell as shards were added (`never_falls`), and Dirigo over timely.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- scale                # N = 1, 2 and every CPU
//! cargo run --release -p dirigo-bench -- scale --shards 14    # N = 1, 2, 4, 8, 14
//! ```
//! Targets (issue: the data path): Dirigo's throughput at 14 shards at least 10x its 1-shard
//! figure, never falling as shards are added; at maximum throughput its p99 at most 2x timely's.

use serde::Serialize;
use serde_json::{json, Value};

use crate::figures::{num, rows};
use crate::keyed_count::{Load, Measurement, System, Workload, W1};
use crate::plot::{Panel, Series};
use crate::report::{interleaved, median, meps, ratio, us, Table};
use crate::sys::LineNs;
use crate::Opts;

/// Sizes of a run.
#[derive(Clone, Debug, Serialize)]
struct Plan {
    shards: Vec<usize>,
    repeats: usize,
    events_per_shard: u64,
    rate_per_shard: u64,
    rate_seconds: f64,
}

impl Plan {
    fn new(opts: Opts) -> Plan {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let shards = match opts.shards {
            // 1, 2, 4, 8, ... below N, then N.
            Some(n) => {
                let mut v: Vec<usize> =
                    std::iter::successors(Some(1usize), |s| Some(s * 2)).take_while(|&s| s < n).collect();
                v.push(n.max(1));
                v
            }
            None => {
                let mut v = vec![1, 2, cpus];
                v.dedup();
                v.retain(|&s| s <= cpus.max(2));
                v
            }
        };
        match opts.quick {
            true => Plan { shards, repeats: 1, events_per_shard: 200_000, rate_per_shard: 100_000, rate_seconds: 0.3 },
            false => {
                // Three repeats: a median of two is their mean, and one stall of the machine
                // (a VM's vCPU descheduled for 80 ms, seen on both systems) then makes the row.
                Plan { shards, repeats: 3, events_per_shard: 1_500_000, rate_per_shard: 100_000, rate_seconds: 1.5 }
            }
        }
    }

    fn loads(&self, n: usize) -> [Load; 2] {
        let eps = self.rate_per_shard * n as u64;
        [
            Load::Max { events: self.events_per_shard * n as u64 },
            Load::Rate { eps, events: (eps as f64 * self.rate_seconds) as u64 },
        ]
    }
}

/// The systems compared (the hand-written pipeline of `keyed-count` is 2 threads only), and
/// Dirigo with its generator read in splits in the closed loop (`System::DirigoSplits`).
const SYSTEMS: [System; 3] = [System::Dirigo, System::DirigoSplits, System::Timely];

/// Run the scenario; returns its `results` JSON.
pub fn run_scenario(opts: Opts) -> anyhow::Result<Value> {
    crate::sys::load_before();
    let plan = Plan::new(opts);
    let mut runs = Vec::new();
    for &n in &plan.shards {
        let w = Workload { shards: n, ..W1 };
        for load in plan.loads(n) {
            for repeat in 0..plan.repeats {
                for system in interleaved(&SYSTEMS, repeat).into_iter().filter(|s| s.runs(load)) {
                    // The placement of the first two CPUs around the run (see `keyed_count`).
                    let (m, line_ns) = crate::sys::line_ns_around(|| system.run(load, &w));
                    let m = m?;
                    print_run(system, n, load, repeat, &m, line_ns);
                    runs.push(run_json(system, n, load, repeat, &m, line_ns));
                }
            }
        }
    }
    let medians = medians(&plan, &runs);
    let summary = summarise(&plan, &medians);
    print_summary(&summary);
    Ok(json!({ "workload": W1, "plan": plan, "runs": runs, "medians": medians, "summary": summary }))
}

fn load_name(load: Load) -> &'static str {
    match load {
        Load::Max { .. } => "max",
        Load::Rate { .. } => "rate",
    }
}

fn print_run(system: System, n: usize, load: Load, repeat: usize, m: &Measurement, line_ns: LineNs) {
    let fill = m.envelopes_per_batch.map(|f| format!("  fill {f:.1}")).unwrap_or_default();
    println!(
        "{:<7} {n:>2} shards {:<4} #{repeat}: {:>7} ev/s  p50 {:>8}us  p99 {:>9}us  cpu {:>5.0} ns/ev  line {} ns{fill}{}",
        system.name(),
        load_name(load),
        meps(m.throughput()),
        us(m.latency_us.p50),
        us(m.latency_us.p99),
        m.cpu_ns_per_event(),
        crate::sys::show_line_ns(line_ns),
        if m.stalled { "  STALLED (excluded)" } else { "" }
    );
}

fn run_json(system: System, n: usize, load: Load, repeat: usize, m: &Measurement, line_ns: LineNs) -> Value {
    json!({
        "system": system.name(), "shards": n, "load": load_name(load), "repeat": repeat, "line_ns": line_ns,
        "events": m.events_in, "events_out": m.events_out, "wall_seconds": m.wall_seconds,
        "events_per_s": m.throughput(), "cpu_ns_per_event": m.cpu_ns_per_event(),
        "p50_us": m.latency_us.p50, "p99_us": m.latency_us.p99, "stalled": m.stalled,
        "envelopes_per_batch": m.envelopes_per_batch,
    })
}

/// Per (system, shards, load): the medians over the repeats that did not stall.
fn medians(plan: &Plan, runs: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for &n in &plan.shards {
        for load in ["max", "rate"] {
            for system in SYSTEMS.into_iter().filter(|s| load == "max" || *s != System::DirigoSplits) {
                let rs: Vec<&Value> = runs
                    .iter()
                    .filter(|r| r["system"] == system.name() && r["shards"] == n && r["load"] == load)
                    .filter(|r| r["stalled"] != true)
                    .collect();
                let med = |field: &str| median(&rs.iter().map(|r| num(&r[field])).collect::<Vec<_>>());
                out.push(json!({
                    "system": system.name(), "shards": n, "load": load, "repeats": rs.len(),
                    "events_per_s": med("events_per_s"), "cpu_ns_per_event": med("cpu_ns_per_event"),
                    "p50_us": med("p50_us"), "p99_us": med("p99_us"),
                }));
            }
        }
    }
    out
}

/// Per shard count: each system's closed-loop throughput, its speed-up over the fewest shards,
/// and Dirigo over timely; per system, whether throughput never fell.
fn summarise(plan: &Plan, medians: &[Value]) -> Value {
    let get = |system: System, n: usize, load: &str, field: &str| {
        medians
            .iter()
            .find(|m| m["system"] == system.name() && m["shards"] == n && m["load"] == load)
            .map_or(f64::NAN, |m| num(&m[field]))
    };
    let first = plan.shards[0];
    let mut rows = Vec::new();
    for &n in &plan.shards {
        let (d, t) = (get(System::Dirigo, n, "max", "events_per_s"), get(System::Timely, n, "max", "events_per_s"));
        let ds = get(System::DirigoSplits, n, "max", "events_per_s");
        rows.push(json!({
            "shards": n,
            "dirigo_events_per_s": d,
            "dirigo_splits_events_per_s": ds,
            "timely_events_per_s": t,
            "dirigo_scaling": ratio(d, get(System::Dirigo, first, "max", "events_per_s")),
            "timely_scaling": ratio(t, get(System::Timely, first, "max", "events_per_s")),
            "throughput_ratio": ratio(d, t),
            "cpu_per_event_ratio": ratio(get(System::Dirigo, n, "max", "cpu_ns_per_event"), get(System::Timely, n, "max", "cpu_ns_per_event")),
            "splits_throughput_ratio": ratio(ds, t),
            "splits_cpu_per_event_ratio": ratio(get(System::DirigoSplits, n, "max", "cpu_ns_per_event"), get(System::Timely, n, "max", "cpu_ns_per_event")),
            "max_p99_ratio": ratio(get(System::Dirigo, n, "max", "p99_us"), get(System::Timely, n, "max", "p99_us")),
            "rate_p99_ratio": ratio(get(System::Dirigo, n, "rate", "p99_us"), get(System::Timely, n, "rate", "p99_us")),
        }));
    }
    let never_falls = |system: System| {
        let xs: Vec<f64> = plan.shards.iter().map(|&n| get(system, n, "max", "events_per_s")).collect();
        xs.windows(2).all(|w| w[1] >= w[0])
    };
    json!({
        "rows": rows,
        "dirigo_never_falls": never_falls(System::Dirigo),
        "dirigo_splits_never_falls": never_falls(System::DirigoSplits),
        "timely_never_falls": never_falls(System::Timely),
    })
}

fn print_summary(summary: &Value) {
    let mut t = Table::new(&[
        "shards",
        "dirigo ev/s",
        "timely ev/s",
        "dirigo xN",
        "timely xN",
        "dirigo/timely",
        "cpu/ev ratio",
        "splits/timely",
        "splits cpu/ev",
        "p99 ratio max",
        "p99 ratio rate",
    ]);
    for r in rows(summary, "rows") {
        t.row(vec![
            r["shards"].to_string(),
            meps(num(&r["dirigo_events_per_s"])),
            meps(num(&r["timely_events_per_s"])),
            format!("{:.2}", num(&r["dirigo_scaling"])),
            format!("{:.2}", num(&r["timely_scaling"])),
            format!("{:.3}", num(&r["throughput_ratio"])),
            format!("{:.2}", num(&r["cpu_per_event_ratio"])),
            format!("{:.3}", num(&r["splits_throughput_ratio"])),
            format!("{:.2}", num(&r["splits_cpu_per_event_ratio"])),
            format!("{:.2}", num(&r["max_p99_ratio"])),
            format!("{:.2}", num(&r["rate_p99_ratio"])),
        ]);
    }
    println!("\n{}", t.render());
    println!(
        "throughput never falls as shards are added: dirigo {}, dirigo in splits {}, timely {}",
        summary["dirigo_never_falls"], summary["dirigo_splits_never_falls"], summary["timely_never_falls"]
    );
}

/// Throughput and latency against shards, per system.
pub fn figure(r: &Value) -> Vec<Panel> {
    let medians = rows(r, "medians");
    let series = |load: &str, field: &str, scale: f64| -> Vec<Series<(f64, f64)>> {
        SYSTEMS
            .iter()
            .filter(|s| load == "max" || **s != System::DirigoSplits)
            .map(|s| {
                let pts = medians
                    .iter()
                    .filter(|m| m["system"] == s.name() && m["load"] == load)
                    .map(|m| (num(&m["shards"]), num(&m[field]) * scale))
                    .collect();
                Series::new(s.name(), pts)
            })
            .collect()
    };
    vec![
        Panel::lines(
            "W1 closed loop: throughput against shards",
            "shards",
            "M events/s",
            series("max", "events_per_s", 1e-6),
        )
        .legend_left(),
        Panel::lines("W1 closed loop: CPU per event", "shards", "ns", series("max", "cpu_ns_per_event", 1.0)).log(),
        Panel::lines("W1 open loop at a fixed rate per shard: p99", "shards", "us", series("rate", "p99_us", 1.0))
            .log(),
    ]
}
