//! What a run reports: a progress line per app every interval, and a summary at the end, as a
//! table or as one JSON object (`dirigo run --json`).

use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::metrics::AppStats;
use crate::plan::Plan;

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LatencyUs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl LatencyUs {
    /// Percentiles of a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencyUs::default();
        }
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
        LatencyUs { p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), max: h.max() as f64 / 1000.0 }
    }
}

/// One app's figures over a whole run.
#[derive(Clone, Debug, Serialize)]
pub struct AppSummary {
    pub name: String,
    pub events_in: u64,
    pub events_out: u64,
    /// Events taken in per second of the run.
    pub throughput_eps: f64,
    pub latency_us: LatencyUs,
    pub slo_us: f64,
    /// Share of outputs within the SLO (1.0 when there was no output).
    pub satisfaction: f64,
    /// Records dropped for arriving after their window's allowed lateness.
    pub late_dropped: u64,
    /// Messages the policy's `on_route` judged unable to meet their deadline on their home shard
    /// (the scale-up signal).
    pub scale_up_signals: u64,
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub apps: Vec<AppSummary>,
    pub shards: usize,
    pub wall_seconds: f64,
    /// CPU time (user + system) the process used during the run.
    pub cpu_seconds: f64,
    /// Parks that ended on their safety timeout with mail already waiting: wake-ups that were
    /// lost (by the executor) and recovered within 200 ms. Should be 0.
    pub missed_wakeups: u64,
    /// Parked shards woken by a socket source's readiness waker (input arrived while parked).
    pub io_wakeups: u64,
}

fn satisfaction(s: &AppStats) -> f64 {
    if s.events_out == 0 {
        1.0
    } else {
        s.within_slo as f64 / s.events_out as f64
    }
}

impl Summary {
    /// Summarise per-app totals.
    pub fn new(plan: &Plan, totals: &[AppStats], wall: Duration, cpu_seconds: f64) -> Self {
        let secs = wall.as_secs_f64().max(1e-9);
        let apps = plan
            .apps
            .iter()
            .zip(totals)
            .map(|(a, s)| AppSummary {
                name: a.name.clone(),
                events_in: s.events_in,
                events_out: s.events_out,
                throughput_eps: s.events_in as f64 / secs,
                latency_us: LatencyUs::of(&s.latency_ns),
                slo_us: a.slo_ns as f64 / 1000.0,
                satisfaction: satisfaction(s),
                late_dropped: s.late_dropped,
                scale_up_signals: s.scale_up_signals,
            })
            .collect();
        Summary { apps, shards: plan.shards, wall_seconds: secs, cpu_seconds, missed_wakeups: 0, io_wakeups: 0 }
    }

    /// The app called `name`.
    pub fn app(&self, name: &str) -> Option<&AppSummary> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// The summary as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("summary serialises")
    }

    /// The summary as a table.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<16} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
            "app", "events_in", "events_out", "events/s", "p50 us", "p99 us", "p99.9 us", "max us", "slo us", "in slo"
        );
        for a in &self.apps {
            let l = &a.latency_us;
            let _ = writeln!(
                s,
                "{:<16} {:>12} {:>12} {:>12.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>8.0} {:>7.2}%",
                a.name,
                a.events_in,
                a.events_out,
                a.throughput_eps,
                l.p50,
                l.p99,
                l.p999,
                l.max,
                a.slo_us,
                a.satisfaction * 100.0
            );
        }
        let _ = writeln!(s, "shards {}  wall {:.2}s  cpu {:.2}s", self.shards, self.wall_seconds, self.cpu_seconds);
        s
    }
}

/// One interval's figures per app.
#[derive(Clone, Debug)]
pub struct Progress {
    pub elapsed: Duration,
    pub lines: Vec<ProgressLine>,
}

/// One app over one interval.
#[derive(Clone, Debug)]
pub struct ProgressLine {
    pub app: String,
    pub in_per_s: f64,
    pub out_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub satisfaction: f64,
}

impl Progress {
    /// Figures of the interval that just ended.
    pub fn new(plan: &Plan, interval: &[AppStats], elapsed: Duration, period: Duration) -> Self {
        let secs = period.as_secs_f64().max(1e-9);
        let lines = plan
            .apps
            .iter()
            .zip(interval)
            .map(|(a, s)| {
                let l = LatencyUs::of(&s.latency_ns);
                ProgressLine {
                    app: a.name.clone(),
                    in_per_s: s.events_in as f64 / secs,
                    out_per_s: s.events_out as f64 / secs,
                    p50_us: l.p50,
                    p99_us: l.p99,
                    satisfaction: satisfaction(s),
                }
            })
            .collect();
        Progress { elapsed, lines }
    }

    /// One line per app.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            let _ = writeln!(
                s,
                "[{:>6.1}s] {:<16} in {:>10.0}/s  out {:>10.0}/s  p50 {:>9.1}us  p99 {:>9.1}us  slo {:>6.2}%",
                self.elapsed.as_secs_f64(),
                l.app,
                l.in_per_s,
                l.out_per_s,
                l.p50_us,
                l.p99_us,
                l.satisfaction * 100.0
            );
        }
        s
    }
}
