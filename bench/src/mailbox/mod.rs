//! Scenario `mailbox`: the round trip of a one-envelope batch between two shards over Dirigo's
//! cross-shard path (`mailbox::mailbox` rings + `ShardSignal` parking), with no engine around it,
//! next to glommio's `shared_channel` ping-pong in the same run.
//!
//! It isolates the cost of crossing cores: ring push/pop, the cache-line transfers, and — when a
//! receiver sleeps — the doorbell wake-up. Three modes:
//! - `busy`: both ends poll their inbox in a loop (the engine's spin);
//! - `idle`: one ping per millisecond; each end spins 50 µs, then parks with the engine's
//!   `going_to_sleep`/re-check/doorbell protocol (glommio: `spin_before_park(50µs)`);
//! - `loaded`: as `busy`, but each end does ~1 µs of CPU work between polls (a shard with work);
//!   glommio's channel is not run here (its tasks would only see messages at preemption points).
//!
//! The `atomic` path (two pinned threads, one atomic per direction, busy only) is the hardware
//! limit the busy figures are read against. Executors are pinned to CPU 0 and 1 (`Placement::Fixed`). Target: busy p50 <= 1 µs.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- mailbox [--quick]
//! ```

mod atomic;
mod channel;
mod ring;

use std::time::Duration;

use dirigo_engine::report::LatencyUs;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

use crate::report::{latency_of, median, median_latency, ratio, times, us, Table};
use crate::Opts;

/// The executors' spin window when both sides are busy (the engine's default `spin`).
pub const BUSY_SPIN: Duration = Duration::from_micros(200);
/// The busy-mode p50 round trip this path is meant to reach.
const TARGET_BUSY_P50_US: f64 = 1.0;

/// How the two ends wait for mail.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Busy,
    /// A ping every `period`; an end spins `spin`, then parks.
    Idle {
        period: Duration,
        spin: Duration,
    },
    /// Busy, with `work_us` of CPU work between polls.
    Loaded {
        work_us: f64,
    },
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Busy => "busy",
            Mode::Idle { .. } => "idle",
            Mode::Loaded { .. } => "loaded",
        }
    }
}

/// The two implementations of the ping-pong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// Dirigo's mailbox rings and signals.
    Mailbox,
    /// glommio's `shared_channel`.
    GlommioChannel,
    /// Two pinned threads and one atomic per direction: the hardware limit (busy only).
    Atomic,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Mailbox => "dirigo-mailbox",
            Path::GlommioChannel => "glommio-channel",
            Path::Atomic => "atomic",
        }
    }
    fn run(self, mode: Mode, warmup: usize, n: usize) -> anyhow::Result<Sample> {
        match self {
            Path::Mailbox => ring::run(mode, warmup, n),
            Path::GlommioChannel => channel::run(mode, warmup, n),
            Path::Atomic => atomic::run(warmup, n),
        }
    }
}

/// One ping-pong run.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub round_trips: u64,
    pub rtt_us: LatencyUs,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    /// CPU time over wall time, in % of one core (both ends together).
    pub cpu_percent: f64,
}

impl Sample {
    fn new(h: &Histogram<u64>, wall_seconds: f64, cpu_seconds: f64) -> Self {
        let cpu_percent = 100.0 * cpu_seconds / wall_seconds.max(1e-9);
        Sample { round_trips: h.len(), rtt_us: latency_of(h), wall_seconds, cpu_seconds, cpu_percent }
    }
}

/// One configuration: a path, a mode, and how many round trips.
#[derive(Clone, Copy, Debug)]
struct Case {
    path: Path,
    mode: Mode,
    warmup: usize,
    round_trips: usize,
}

fn cases(quick: bool) -> Vec<Case> {
    let q = |full: usize, short: usize| if quick { short } else { full };
    let idle = Mode::Idle { period: Duration::from_millis(1), spin: Duration::from_micros(50) };
    let loaded = Mode::Loaded { work_us: 1.0 };
    let both =
        |mode, warmup, n| [Path::Mailbox, Path::GlommioChannel].map(|path| Case { path, mode, warmup, round_trips: n });
    let mut v = Vec::new();
    v.extend(both(Mode::Busy, 1_000, q(200_000, 20_000)));
    v.push(Case { path: Path::Atomic, mode: Mode::Busy, warmup: 1_000, round_trips: q(1_000_000, 100_000) });
    v.extend(both(idle, 50, q(3_000, 300)));
    v.push(Case { path: Path::Mailbox, mode: loaded, warmup: 1_000, round_trips: q(100_000, 10_000) });
    v
}

/// A run with where it came from (one entry of `runs` in the JSON).
#[derive(Debug, Serialize)]
struct Run {
    path: &'static str,
    mode: &'static str,
    repeat: usize,
    #[serde(flatten)]
    sample: Sample,
}

/// Run the scenario; returns its `results` JSON.
pub fn run(opts: Opts) -> anyhow::Result<Value> {
    crate::sys::load_before();
    crate::sys::calibrate();
    let repeats = if opts.quick { 1 } else { 3 };
    let cases = cases(opts.quick);
    let mut runs = Vec::new();
    for repeat in 0..repeats {
        // Interleave the paths, alternating which one goes first.
        for c in crate::report::interleaved(&cases, repeat) {
            let sample = c.path.run(c.mode, c.warmup, c.round_trips)?;
            let l = &sample.rtt_us;
            println!(
                "{:<16} {:<6} #{repeat}: {:>7} round trips  p50 {:>8}us  p99 {:>8}us  cpu {:.0}%",
                c.path.name(),
                c.mode.name(),
                sample.round_trips,
                us(l.p50),
                us(l.p99),
                sample.cpu_percent
            );
            runs.push(Run { path: c.path.name(), mode: c.mode.name(), repeat, sample });
        }
    }
    let medians = medians(&cases, &runs);
    let ratios = ratios(&medians);
    let busy =
        medians.iter().find(|m| m.path == Path::Mailbox.name() && m.mode == "busy").map_or(f64::NAN, |m| m.rtt_us.p50);
    let target =
        json!({ "busy_p50_us_target": TARGET_BUSY_P50_US, "busy_p50_us": busy, "met": busy <= TARGET_BUSY_P50_US });
    print_summary(&medians, &ratios, busy);
    Ok(
        json!({ "repeats": repeats, "busy_spin_us": BUSY_SPIN.as_secs_f64() * 1e6, "runs": runs, "medians": medians, "ratios": ratios, "target": target }),
    )
}

/// Median figures of one case over its repeats.
#[derive(Debug, Serialize)]
struct MedianRow {
    path: &'static str,
    mode: &'static str,
    repeats: usize,
    round_trips: u64,
    rtt_us: LatencyUs,
    /// Half the median p50 round trip: the cost of one hop.
    one_way_p50_ns: f64,
    cpu_percent: f64,
}

fn medians(cases: &[Case], runs: &[Run]) -> Vec<MedianRow> {
    let rows = cases.iter().map(|c| {
        let rs: Vec<&Run> = runs.iter().filter(|r| r.path == c.path.name() && r.mode == c.mode.name()).collect();
        let rtt_us = median_latency(&rs.iter().map(|r| &r.sample.rtt_us).collect::<Vec<_>>());
        MedianRow {
            path: c.path.name(),
            mode: c.mode.name(),
            repeats: rs.len(),
            round_trips: rs.iter().map(|r| r.sample.round_trips).sum(),
            one_way_p50_ns: rtt_us.p50 * 1000.0 / 2.0,
            rtt_us,
            cpu_percent: median(&rs.iter().map(|r| r.sample.cpu_percent).collect::<Vec<_>>()),
        }
    });
    rows.collect()
}

/// Dirigo's mailbox over a reference path, for a mode both ran.
#[derive(Debug, Serialize)]
struct RatioRow {
    mode: &'static str,
    reference: &'static str,
    p50: f64,
    p99: f64,
}

fn ratios(medians: &[MedianRow]) -> Vec<RatioRow> {
    let mine = medians.iter().filter(|m| m.path == Path::Mailbox.name());
    let pairs =
        mine.flat_map(|a| medians.iter().filter(move |b| b.mode == a.mode && b.path != a.path).map(move |b| (a, b)));
    pairs
        .map(|(a, b)| RatioRow {
            mode: a.mode,
            reference: b.path,
            p50: ratio(a.rtt_us.p50, b.rtt_us.p50),
            p99: ratio(a.rtt_us.p99, b.rtt_us.p99),
        })
        .collect()
}

fn print_summary(medians: &[MedianRow], ratios: &[RatioRow], busy: f64) {
    let mut t =
        Table::new(&["path", "mode", "n", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us", "one-way ns", "cpu %"]);
    for m in medians {
        let l = &m.rtt_us;
        t.row(vec![
            m.path.into(),
            m.mode.into(),
            m.round_trips.to_string(),
            us(l.p50),
            us(l.p90),
            us(l.p99),
            us(l.p999),
            us(l.max),
            format!("{:.0}", m.one_way_p50_ns),
            format!("{:.0}", m.cpu_percent),
        ]);
    }
    println!("\nmailbox round trip, medians over repeats\n{}", t.render());
    let mut t = Table::new(&["ratio", "mode", "p50", "p99"]);
    for r in ratios {
        t.row(vec![format!("dirigo-mailbox/{}", r.reference), r.mode.into(), times(r.p50), times(r.p99)]);
    }
    println!("{}", t.render());
    let verdict = if busy <= TARGET_BUSY_P50_US { "met" } else { "NOT met" };
    println!("target busy p50 <= {TARGET_BUSY_P50_US} us: {} ({verdict})", us(busy));
}
