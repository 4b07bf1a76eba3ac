//! Scenario `keyed-count`: workload W1 — a generator of 10,000 uniform keys -> map -> keyed count
//! -> latency sink on 2 shards — on Dirigo, on a hand-written reference pipeline of 2 pinned
//! threads (FACTS.md's "hardware-ish" limit) and on timely-dataflow (2 pinned workers, exchange by
//! key), interleaved in one process.
//!
//! It isolates the engine's per-event overhead (routing, batching, mailboxes, scheduling, the
//! shard loop) against the least a 2-core pipeline must do for the same work. Two loads:
//! - `max`: the generator unbounded (rate 0) over a fixed number of events; events/s =
//!   events_in / wall, closed loop (backpressure paces the generator);
//! - `rate`: open loop at 200k and 1M events/s; latency is measured from each event's scheduled
//!   time (no coordinated omission) to the sink.
//!
//! Each (load, system) runs `repeats` times, alternating which system goes first; the table shows
//! medians and the ratios Dirigo/baseline, Dirigo/timely and timely/baseline.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- keyed-count            # about 1 min
//! cargo run --release -p dirigo-bench -- keyed-count --quick    # a few seconds
//! ```
//!
//! Extension point: a peer system (timely-dataflow, ...) is one more [`System`] variant, a module
//! with a `run(&Load, &Workload) -> Measurement`, and an arm in [`System::run`].

mod baseline;
pub mod dirigo;
mod timely;

use dirigo_engine::report::LatencyUs;
use serde::Serialize;
use serde_json::Value;

use crate::report::{interleaved, median, median_latency, meps, ratio, times, us, Table};
use crate::Opts;

/// The workload W1, identical for every system.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Workload {
    /// Distinct keys, drawn uniformly.
    pub keys: u64,
    /// Shards (Dirigo), pinned threads (baseline) or workers (timely).
    pub shards: usize,
    /// Generator seed.
    pub seed: u64,
    /// Identity maps between the map and the count (0 in W1; the `hops` scenario adds some to
    /// measure what one more operator costs each system).
    pub hops: usize,
}

pub const W1: Workload = Workload { keys: 10_000, shards: 2, seed: 42, hops: 0 };

/// How events are offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// As fast as the system takes them, `events` in all.
    Max { events: u64 },
    /// Open loop at `eps` events per second for `events` events.
    Rate { eps: u64, events: u64 },
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Max { .. } => "max",
            Load::Rate { .. } => "rate",
        }
    }
    /// Offered events per second (0 = unbounded).
    fn offered(self) -> u64 {
        match self {
            Load::Max { .. } => 0,
            Load::Rate { eps, .. } => eps,
        }
    }
    pub fn events(self) -> u64 {
        match self {
            Load::Max { events } | Load::Rate { events, .. } => events,
        }
    }
}

/// A system that runs W1. Add peers here (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Dirigo,
    /// Dirigo with its generator read in splits (`split_events`): each shard's instance takes
    /// the next split of 4,096 events when it has read one, where `Dirigo`'s instances read
    /// fixed shares as timely's workers do. Closed loop only (a generator at a rate refuses
    /// splits: every event is due at a fixed time).
    DirigoSplits,
    /// Two pinned threads and an rtrb ring of recycled batches.
    Baseline,
    /// timely-dataflow: 2 pinned workers, map, exchange by key, a `unary` keyed count.
    Timely,
}

impl System {
    /// Every system, the one the ratios are about first.
    const ALL: [System; 4] = [System::Dirigo, System::DirigoSplits, System::Baseline, System::Timely];
    /// The ratios reported, as (system, reference): the system's medians over the reference's.
    const RATIOS: [(System, System); 4] = [
        (System::Dirigo, System::Baseline),
        (System::Dirigo, System::Timely),
        (System::DirigoSplits, System::Timely),
        (System::Timely, System::Baseline),
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Dirigo => "dirigo",
            System::DirigoSplits => "dirigo-splits",
            System::Baseline => "baseline",
            System::Timely => "timely",
        }
    }

    /// Whether the system runs under `load` (splits are for the closed loop only).
    pub(crate) fn runs(self, load: Load) -> bool {
        !matches!((self, load), (System::DirigoSplits, Load::Rate { .. }))
    }

    pub(crate) fn run(self, load: Load, w: &Workload) -> anyhow::Result<Measurement> {
        match self {
            System::Dirigo => dirigo::run(load, w, false),
            System::DirigoSplits => dirigo::run(load, w, true),
            System::Baseline => baseline::run(load, w),
            System::Timely => timely::run(load, w),
        }
    }
}

/// One run of one system under one load.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub events_in: u64,
    pub events_out: u64,
    /// The run proper, without the system's start and teardown: Dirigo's `run_seconds` (first
    /// shard ready to last shard done), timely's from its workers' shared start to the last
    /// one's end; the hand-written pipeline's from before its threads start to after they end.
    pub wall_seconds: f64,
    /// Process CPU time (user + system) during the run.
    pub cpu_seconds: f64,
    pub latency_us: LatencyUs,
    /// The watchdog had to stop the run (an engine hang): its figures are not valid.
    pub stalled: bool,
    /// Dirigo only: envelopes per batch its shards handed to each other (the summary's
    /// `shard_time`), how full the batches crossing cores were.
    pub envelopes_per_batch: Option<f64>,
}

impl Measurement {
    pub(crate) fn throughput(&self) -> f64 {
        self.events_in as f64 / self.wall_seconds.max(1e-9)
    }
    pub(crate) fn cpu_ns_per_event(&self) -> f64 {
        self.cpu_seconds * 1e9 / self.events_in.max(1) as f64
    }
}

/// Envelopes per batch the shards of a run handed to each other (None when none crossed).
pub(crate) fn envelopes_per_batch(summary: &dirigo_engine::report::Summary) -> Option<f64> {
    let (batches, envelopes) = summary.sent_between_shards();
    (batches > 0).then(|| envelopes as f64 / batches as f64)
}

/// A measurement with where it came from (one entry of `runs` in the JSON).
#[derive(Debug, Serialize)]
struct Run {
    system: &'static str,
    load: &'static str,
    offered_eps: u64,
    repeat: usize,
    throughput_eps: f64,
    cpu_ns_per_event: f64,
    /// The one-way cache-line time between the first two CPUs (ns) just before and just after
    /// the run (`sys::line_transfer_ns`): the placement of a virtual machine's CPUs, which a
    /// keyed exchange pays for.
    line_ns: crate::sys::LineNs,
    #[serde(flatten)]
    m: Measurement,
}

/// Sizes of a scenario run.
#[derive(Clone, Copy, Debug, Serialize)]
struct Plan {
    repeats: usize,
    max_events: u64,
    rate_seconds: f64,
    rates_eps: [u64; 2],
}

impl Plan {
    fn new(quick: bool) -> Self {
        match quick {
            true => Plan { repeats: 1, max_events: 400_000, rate_seconds: 0.4, rates_eps: [200_000, 1_000_000] },
            false => Plan { repeats: 3, max_events: 3_000_000, rate_seconds: 2.0, rates_eps: [200_000, 1_000_000] },
        }
    }
    fn loads(&self) -> Vec<Load> {
        let rate = |eps: u64| Load::Rate { eps, events: (eps as f64 * self.rate_seconds) as u64 };
        vec![Load::Max { events: self.max_events }, rate(self.rates_eps[0]), rate(self.rates_eps[1])]
    }
}

/// Run the scenario; returns its `results` JSON.
pub fn run(opts: Opts) -> anyhow::Result<Value> {
    crate::sys::load_before();
    let plan = Plan::new(opts.quick);
    let mut runs = Vec::new();
    for load in plan.loads() {
        for repeat in 0..plan.repeats {
            for system in interleaved(&System::ALL, repeat).into_iter().filter(|s| s.runs(load)) {
                let (m, line_ns) = crate::sys::line_ns_around(|| system.run(load, &W1));
                let m = m?;
                print_run(system, load, repeat, &m, line_ns);
                runs.push(Run {
                    system: system.name(),
                    load: load.name(),
                    offered_eps: load.offered(),
                    repeat,
                    throughput_eps: m.throughput(),
                    cpu_ns_per_event: m.cpu_ns_per_event(),
                    line_ns,
                    m,
                });
            }
        }
    }
    let (medians, ratios) = summarise(&plan, &runs);
    print_summary(&medians, &ratios);
    Ok(serde_json::json!({ "workload": W1, "plan": plan, "runs": runs, "medians": medians, "ratios": ratios }))
}

fn print_run(system: System, load: Load, repeat: usize, m: &Measurement, line_ns: crate::sys::LineNs) {
    let l = &m.latency_us;
    println!(
        "{:<8} {:<4} {:>8}/s #{repeat}: {:>10} in {:>6.2}s = {:>7} ev/s  p50 {:>8}us p99 {:>9}us  cpu {:.0} ns/ev  line {} ns{}",
        system.name(),
        load.name(),
        load.offered(),
        m.events_in,
        m.wall_seconds,
        meps(m.throughput()),
        us(l.p50),
        us(l.p99),
        m.cpu_ns_per_event(),
        crate::sys::show_line_ns(line_ns),
        if m.stalled { "  STALLED (stopped by the watchdog; excluded from medians)" } else { "" }
    );
}

/// Median figures of one (load, system) over its repeats.
#[derive(Debug, Serialize)]
struct MedianRow {
    system: &'static str,
    load: &'static str,
    offered_eps: u64,
    repeats: usize,
    throughput_eps: f64,
    cpu_ns_per_event: f64,
    latency_us: LatencyUs,
}

/// A system's medians divided by the reference's, for one load.
#[derive(Debug, Serialize)]
struct RatioRow {
    system: &'static str,
    reference: &'static str,
    load: &'static str,
    offered_eps: u64,
    throughput: f64,
    cpu_per_event: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

fn summarise(plan: &Plan, runs: &[Run]) -> (Vec<MedianRow>, Vec<RatioRow>) {
    let mut medians = Vec::new();
    for load in plan.loads() {
        for system in System::ALL.into_iter().filter(|s| s.runs(load)) {
            let rs: Vec<&Run> = runs
                .iter()
                .filter(|r| r.system == system.name() && r.load == load.name() && r.offered_eps == load.offered())
                .filter(|r| !r.m.stalled)
                .collect();
            medians.push(MedianRow {
                system: system.name(),
                load: load.name(),
                offered_eps: load.offered(),
                repeats: rs.len(),
                throughput_eps: median(&rs.iter().map(|r| r.throughput_eps).collect::<Vec<_>>()),
                cpu_ns_per_event: median(&rs.iter().map(|r| r.cpu_ns_per_event).collect::<Vec<_>>()),
                latency_us: median_latency(&rs.iter().map(|r| &r.m.latency_us).collect::<Vec<_>>()),
            });
        }
    }
    let ratios = ratios(&medians);
    (medians, ratios)
}

fn ratios(medians: &[MedianRow]) -> Vec<RatioRow> {
    let find = |system: System, load: &str, offered: u64| {
        medians.iter().find(|m| m.system == system.name() && m.load == load && m.offered_eps == offered)
    };
    // Per load (in the order run), every pair of `System::RATIOS` that has both medians.
    let loads = medians.iter().filter(|m| m.system == System::ALL[0].name());
    loads
        .flat_map(|l| System::RATIOS.iter().map(move |&(s, r)| (l, s, r)))
        .filter_map(|(l, s, r)| Some((find(s, l.load, l.offered_eps)?, find(r, l.load, l.offered_eps)?)))
        .map(|(a, b)| RatioRow {
            system: a.system,
            reference: b.system,
            load: a.load,
            offered_eps: a.offered_eps,
            throughput: ratio(a.throughput_eps, b.throughput_eps),
            cpu_per_event: ratio(a.cpu_ns_per_event, b.cpu_ns_per_event),
            p50: ratio(a.latency_us.p50, b.latency_us.p50),
            p99: ratio(a.latency_us.p99, b.latency_us.p99),
            p999: ratio(a.latency_us.p999, b.latency_us.p999),
        })
        .collect()
}

fn print_summary(medians: &[MedianRow], ratios: &[RatioRow]) {
    let mut t =
        Table::new(&["system", "load", "offered/s", "n", "events/s", "cpu ns/ev", "p50 us", "p99 us", "p99.9 us"]);
    for m in medians {
        let l = &m.latency_us;
        let offered = if m.offered_eps == 0 { "max".to_owned() } else { m.offered_eps.to_string() };
        t.row(vec![
            m.system.into(),
            m.load.into(),
            offered,
            m.repeats.to_string(),
            meps(m.throughput_eps),
            format!("{:.0}", m.cpu_ns_per_event),
            us(l.p50),
            us(l.p99),
            us(l.p999),
        ]);
    }
    println!("\nkeyed-count (W1), medians over repeats\n{}", t.render());
    let mut t = Table::new(&["ratio", "load", "offered/s", "events/s", "cpu/ev", "p50", "p99", "p99.9"]);
    for r in ratios {
        let offered = if r.offered_eps == 0 { "max".to_owned() } else { r.offered_eps.to_string() };
        let name = format!("{}/{}", r.system, r.reference);
        t.row(vec![
            name,
            r.load.into(),
            offered,
            times(r.throughput),
            times(r.cpu_per_event),
            times(r.p50),
            times(r.p99),
            times(r.p999),
        ]);
    }
    println!("{}", t.render());
}
