//! Scenario `hops`: what one more operator costs. W1 (generator -> map -> keyed count -> latency
//! sink) on one shard, then with identity maps added between the map and the count
//! (`fields = { key = "key", value = "value" }`), on Dirigo and on timely-dataflow (one worker,
//! `.map(|e| e)` per hop), interleaved in one process. One shard, so that no record crosses a
//! core: what grows with the hops is the per-record cost of an operator on the same core, the
//! part of W1's cost that every stage of a pipeline pays again.
//!
//! Reported per system: CPU ns per event at each hop count (medians of the repeats), and the
//! cost of one hop: the slope between the fewest and the most hops, divided by their difference.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- hops            # about 30 s
//! cargo run --release -p dirigo-bench -- hops --quick    # a few seconds
//! ```

use serde::Serialize;
use serde_json::{json, Value};

use crate::figures::{num, rows};
use crate::keyed_count::{Load, System, Workload, W1};
use crate::plot::{Panel, Series};
use crate::report::{interleaved, median, meps, ratio, times, Table};
use crate::Opts;

/// The systems compared (the hand-written baseline has no operators to add).
const SYSTEMS: [System; 2] = [System::Dirigo, System::Timely];

/// Sizes of a run.
#[derive(Clone, Debug, Serialize)]
struct Plan {
    hops: Vec<usize>,
    repeats: usize,
    events: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        match quick {
            true => Plan { hops: vec![0, 4], repeats: 1, events: 300_000 },
            false => Plan { hops: vec![0, 2, 4], repeats: 5, events: 3_000_000 },
        }
    }
}

/// One run.
#[derive(Debug, Serialize)]
struct Run {
    system: &'static str,
    hops: usize,
    repeat: usize,
    events_in: u64,
    events_out: u64,
    cpu_ns_per_event: f64,
    throughput_eps: f64,
    line_ns: crate::sys::LineNs,
}

/// Run the scenario; returns its `results` JSON.
pub fn run_scenario(opts: Opts) -> anyhow::Result<Value> {
    crate::sys::load_before();
    let plan = Plan::new(opts.quick);
    let load = Load::Max { events: plan.events };
    let mut runs = Vec::new();
    for repeat in 0..plan.repeats {
        for &hops in &plan.hops {
            let w = Workload { shards: 1, hops, ..W1 };
            for system in interleaved(&SYSTEMS, repeat) {
                let (m, line_ns) = crate::sys::line_ns_around(|| system.run(load, &w));
                let m = m?;
                anyhow::ensure!(!m.stalled, "{} with {hops} hops stalled", system.name());
                anyhow::ensure!(
                    m.events_out == m.events_in,
                    "{} with {hops} hops: {} events out of {} in",
                    system.name(),
                    m.events_out,
                    m.events_in
                );
                println!(
                    "{:<7} {hops} hops #{repeat}: {:>6.1} ns/event  line {} ns",
                    system.name(),
                    m.cpu_ns_per_event(),
                    crate::sys::show_line_ns(line_ns)
                );
                runs.push(Run {
                    system: system.name(),
                    hops,
                    repeat,
                    events_in: m.events_in,
                    events_out: m.events_out,
                    cpu_ns_per_event: m.cpu_ns_per_event(),
                    throughput_eps: m.throughput(),
                    line_ns,
                });
            }
        }
    }
    let medians = medians(&plan, &runs);
    let per_hop = per_hop(&plan, &medians);
    print_summary(&medians, &per_hop);
    Ok(
        json!({ "workload": Workload { shards: 1, ..W1 }, "plan": plan, "runs": runs, "medians": medians, "per_hop": per_hop }),
    )
}

/// Median CPU per event of one system at one hop count.
#[derive(Debug, Serialize)]
struct MedianRow {
    system: &'static str,
    hops: usize,
    cpu_ns_per_event: f64,
    throughput_eps: f64,
}

fn medians(plan: &Plan, runs: &[Run]) -> Vec<MedianRow> {
    SYSTEMS
        .iter()
        .flat_map(|s| plan.hops.iter().map(move |&h| (s.name(), h)))
        .map(|(system, hops)| {
            let of = |f: fn(&Run) -> f64| {
                median(&runs.iter().filter(|r| r.system == system && r.hops == hops).map(f).collect::<Vec<_>>())
            };
            MedianRow {
                system,
                hops,
                cpu_ns_per_event: of(|r| r.cpu_ns_per_event),
                throughput_eps: of(|r| r.throughput_eps),
            }
        })
        .collect()
}

/// One system's cost of one more operator.
#[derive(Debug, Serialize)]
struct PerHop {
    system: &'static str,
    /// CPU ns per event per added identity map: (most hops - fewest hops) over their difference.
    ns_per_hop: f64,
    /// CPU ns per event of W1 itself (no hop added).
    base_ns: f64,
}

fn per_hop(plan: &Plan, medians: &[MedianRow]) -> Vec<PerHop> {
    let (lo, hi) = (plan.hops[0], plan.hops[plan.hops.len() - 1]);
    SYSTEMS
        .iter()
        .map(|s| {
            let at = |h| {
                medians.iter().find(|m| m.system == s.name() && m.hops == h).map_or(f64::NAN, |m| m.cpu_ns_per_event)
            };
            PerHop { system: s.name(), ns_per_hop: (at(hi) - at(lo)) / (hi - lo) as f64, base_ns: at(lo) }
        })
        .collect()
}

fn print_summary(medians: &[MedianRow], per_hop: &[PerHop]) {
    let mut t = Table::new(&["system", "hops", "cpu ns/ev", "events/s"]);
    for m in medians {
        t.row(vec![m.system.into(), m.hops.to_string(), format!("{:.1}", m.cpu_ns_per_event), meps(m.throughput_eps)]);
    }
    println!("\nhops (W1 on 1 shard + identity maps), medians\n{}", t.render());
    let mut t = Table::new(&["system", "W1 ns/ev", "ns per hop"]);
    for p in per_hop {
        t.row(vec![p.system.into(), format!("{:.1}", p.base_ns), format!("{:.1}", p.ns_per_hop)]);
    }
    println!("{}", t.render());
    if let [d, tl] = per_hop {
        println!(
            "dirigo/timely: W1 {}, per hop {}",
            times(ratio(d.base_ns, tl.base_ns)),
            times(ratio(d.ns_per_hop, tl.ns_per_hop))
        );
    }
}

/// CPU per event against hops, one line per system.
pub fn figure(r: &Value) -> Vec<Panel> {
    let medians = rows(r, "medians");
    let series = SYSTEMS
        .iter()
        .map(|s| {
            let points = medians
                .iter()
                .filter(|m| m["system"] == s.name())
                .map(|m| (num(&m["hops"]), num(&m["cpu_ns_per_event"])))
                .collect();
            Series::new(s.name(), points)
        })
        .collect();
    vec![Panel::lines("W1 on 1 shard plus identity maps: CPU per event", "identity maps added", "ns", series)]
}
