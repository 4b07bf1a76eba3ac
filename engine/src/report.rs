//! What a run reports: a progress line per app every interval, and a summary at the end, as a
//! table or as one JSON object (`dirigo run --json`).

use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::metrics::{AppStats, ShardTotals};
use crate::plan::Plan;

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct LatencyUs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    /// Samples behind the percentiles.
    pub count: u64,
}

impl LatencyUs {
    /// Percentiles of a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencyUs::default();
        }
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
        let max = h.max() as f64 / 1000.0;
        LatencyUs { p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), max, count: h.len() }
    }

    /// Percentiles of a histogram of nanoseconds that may never have been made.
    pub fn of_rare(h: &crate::metrics::RareHistogram) -> Self {
        h.histogram().map_or_else(LatencyUs::default, LatencyUs::of)
    }
}

/// `"N what: p50 ..us, p99 ..us"`, or `none` without samples.
fn percentiles(l: &LatencyUs, what: &str, none: &str) -> String {
    if l.count == 0 {
        none.to_owned()
    } else {
        format!("{} {what}: p50 {:.1}us, p99 {:.1}us", l.count, l.p50, l.p99)
    }
}

/// One app's figures over a whole run.
#[derive(Clone, Debug, Serialize)]
pub struct AppSummary {
    pub name: String,
    pub events_in: u64,
    pub events_out: u64,
    /// Events taken in per second of the run proper (`Summary::run_seconds`).
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
    /// Records that ran at once on their sender's shard, skipping the run queue (operator
    /// chaining: forward edges to stateless functions, under a policy that allows it).
    pub chained: u64,
    /// Records of a map or filter computed where its input was made, which was never made as
    /// a record (operator fusion: maps of scalars and filters fed by forward edges, under a
    /// policy that observes no hook on them).
    pub fused: u64,
    /// Records that ran as their batch arrived, skipping the run queue (under a policy that
    /// runs messages in arrival order, when nothing waited on the shard).
    pub on_arrival: u64,
    /// Shard-seconds the app occupied: Σ over shards of the time the shard hosted at least one
    /// of its activations (a function instance or a lessee slot).
    pub shard_seconds: f64,
    /// The shards the app started on (its key groups, sources and stateless functions).
    pub placed_on: Vec<u16>,
    /// CPU-seconds attributed to the app: the measured service time of its messages.
    pub cpu_seconds: f64,
    /// Key groups of the app that moved between shards.
    pub moves: u64,
    /// The shards hosting the app (key groups, sources, lessee slots), each time the set
    /// changed: `(seconds since start, shards)`.
    pub shards_over_time: Vec<(f64, Vec<u16>)>,
    /// Why the app failed (its user code panicked: it stopped, the other apps ran on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Dual-mode actors: lessees, forwards, barriers.
    pub actors: ActorSummary,
    /// The app's tcp sources run by this process: connections, records and refusals.
    pub tcp_sources: Vec<TcpSourceSummary>,
    /// The app's tcp sinks served by this process: their delivery mode and what they dropped.
    pub tcp_sinks: Vec<TcpSinkSummary>,
}

/// One tcp sink over a whole run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TcpSinkSummary {
    pub name: String,
    pub delivery: dirigo_net::tcp::Delivery,
    /// Records no subscriber took (`lossy`), and subscribers disconnected for falling behind.
    pub dropped: u64,
    pub disconnected: u64,
}

/// One tcp source over a whole run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TcpSourceSummary {
    pub name: String,
    /// Connections accepted, records produced, and refusals by limit (`connections_refused`
    /// over `max_connections`, `idle_closed` after `idle_timeout`, `oversized` over `max_line`
    /// or `max_frame`).
    #[serde(flatten)]
    pub counts: dirigo_net::tcp::IngressCounts,
}

/// One app's dual-mode actor figures over a whole run.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ActorSummary {
    /// Most lessee slots of the app open at once (Σ over shards of each shard's maximum within
    /// a progress interval, the largest over intervals).
    pub lessees_peak: u64,
    pub lessees_created: u64,
    pub lessees_retired: u64,
    /// Messages forwarded to lessees, and those refused by them (run on the lessor).
    pub forwarded: u64,
    pub refused: u64,
    /// Time lessors spent Blocked (waiting for partials) and Critical (running critical
    /// messages alone), summed over actors.
    pub blocked_ms: f64,
    pub critical_ms: f64,
    /// Barriers completed; the duration (arrival at the lessor to the last critical) of those
    /// that had lessees to block and merge (`barrier_us.count` of them).
    pub barriers: u64,
    pub barrier_us: LatencyUs,
    /// Bytes of partial state lessees shipped to lessors.
    pub partial_bytes: u64,
    /// Scale-up reaction: from the deadline miss that leased a lessee to the first message
    /// run on it.
    pub scale_up_us: LatencyUs,
    /// Its first part: from the lease decision to the lease opening on the borrowed shard
    /// (mail, plus that shard's wake-up or the rest of its turn); the rest is the first
    /// message waiting there.
    pub lease_delivery_us: LatencyUs,
    /// Lessee slots of the app open per progress interval: `[seconds since start, count]`.
    pub lessees_over_time: Vec<(f64, u64)>,
    /// The same per function of the app that had lessees during the run.
    pub functions: Vec<FunctionLessees>,
}

/// Lessees of one function over a run.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FunctionLessees {
    pub name: String,
    pub max_lessees: u32,
    pub lessees_peak: u64,
    /// `[seconds since start, lessee slots open]` per progress interval.
    pub lessees_over_time: Vec<(f64, u64)>,
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub apps: Vec<AppSummary>,
    /// Shards this process ran (on a cluster, this node's).
    pub shards: usize,
    /// From the engine's start to its end, the shards' start and teardown included.
    pub wall_seconds: f64,
    /// The run proper: from the first shard ready (built, its first report sent) to the last
    /// shard's last report (its work done, its output flushed). Each app's `throughput_eps` is
    /// over this time.
    pub run_seconds: f64,
    /// CPU time (user + system) the process used during the run.
    pub cpu_seconds: f64,
    /// Parks that ended on their safety timeout with mail already waiting: wake-ups that were
    /// lost (by the executor) and recovered within 200 ms. Should be 0.
    pub missed_wakeups: u64,
    /// Parks that ended on their own timeout with mail waiting whose senders chose not to ring
    /// (the mail's deadline allowed the wait): system calls saved on both sides.
    pub lazy_wakeups: u64,
    /// Parked shards woken by a socket source's readiness waker (input arrived while parked).
    pub io_wakeups: u64,
    /// Where each of this process's shards spent the run.
    pub shard_time: Vec<ShardTime>,
    /// Functions that held their shard past `[engine] stall_budget`.
    pub stalls: Vec<Stall>,
    /// Key groups that moved between shards (the first 100,000), in report order.
    pub migrations: Vec<crate::metrics::MoveEvent>,
    /// Moves the target shard refused (it was moving a group of the same function out).
    pub moves_refused: u64,
    /// Snapshots taken (None: the run takes none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<crate::snapshot::driver::SnapshotCounts>,
}

/// A function that held its shard past the stall budget (when the detector saw it: it may
/// have held it longer).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Stall {
    pub app: String,
    pub function: String,
    pub shard: usize,
    pub held_ms: f64,
}

/// Where one shard spent a run: running messages and sources, parked, and the rest (spinning
/// for mail, and the loop's own overhead).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ShardTime {
    pub shard: usize,
    pub busy_seconds: f64,
    pub parked_seconds: f64,
    pub spinning_seconds: f64,
    /// Batches the shard handed to the other shards of its node, and the envelopes (records
    /// and control messages) they carried: `envelopes_out / batches_out` is how full the
    /// batches crossing cores were.
    pub batches_out: u64,
    pub envelopes_out: u64,
}

impl ShardTime {
    /// From a shard's totals over a run of `wall`.
    pub fn of(shard: usize, t: &ShardTotals, wall: Duration) -> ShardTime {
        let (busy, parked) = (t.busy_ns as f64 / 1e9, t.parked_ns as f64 / 1e9);
        let spinning = (wall.as_secs_f64() - busy - parked).max(0.0);
        ShardTime {
            shard,
            busy_seconds: busy,
            parked_seconds: parked,
            spinning_seconds: spinning,
            batches_out: t.batches_out,
            envelopes_out: t.envelopes_out,
        }
    }
}

/// An app's lessee count per interval: the sum over its functions.
fn app_series(plan: &Plan, app: usize, lessees: &[Vec<(f64, u64)>]) -> Vec<(f64, u64)> {
    let mut sum: Vec<(f64, u64)> = Vec::new();
    for (f, series) in lessees.iter().enumerate().filter(|(f, _)| plan.functions[*f].app as usize == app) {
        if sum.is_empty() {
            sum = series.iter().map(|&(t, _)| (t, 0)).collect();
        }
        debug_assert_eq!(sum.len(), series.len(), "function {f}: every series has one point per interval");
        for (s, &(_, n)) in sum.iter_mut().zip(series) {
            s.1 += n;
        }
    }
    sum
}

/// The functions of an app that had lessees, and their lessees over time.
fn function_series(plan: &Plan, app: usize, lessees: &[Vec<(f64, u64)>]) -> Vec<FunctionLessees> {
    (plan.functions.iter().zip(lessees))
        .filter(|(f, series)| f.app as usize == app && series.iter().any(|p| p.1 > 0))
        .map(|(f, series)| FunctionLessees {
            name: f.name.clone(),
            max_lessees: f.max_lessees,
            lessees_peak: series.iter().map(|p| p.1).max().unwrap_or(0),
            lessees_over_time: series.clone(),
        })
        .collect()
}

fn satisfaction(s: &AppStats) -> f64 {
    if s.events_out == 0 {
        1.0
    } else {
        s.within_slo as f64 / s.events_out as f64
    }
}

impl Summary {
    /// Batches the shards handed to each other over the run, and the envelopes they carried
    /// (the sums of `shard_time`).
    pub fn sent_between_shards(&self) -> (u64, u64) {
        self.shard_time.iter().fold((0, 0), |(b, e), t| (b + t.batches_out, e + t.envelopes_out))
    }

    /// Summarise per-app totals; `lessees` is each function's lessee count per progress interval.
    pub fn new(
        plan: &Plan,
        totals: &[AppStats],
        lessees: &[Vec<(f64, u64)>],
        wall: Duration,
        run: Duration,
        cpu_seconds: f64,
    ) -> Self {
        let secs = wall.as_secs_f64().max(1e-9);
        let run_secs = run.as_secs_f64().max(1e-9);
        let apps = plan
            .apps
            .iter()
            .enumerate()
            .zip(totals)
            .map(|((app, a), s)| (a, s, app_series(plan, app, lessees), function_series(plan, app, lessees)))
            .map(|(a, s, series, functions)| AppSummary {
                name: a.name.clone(),
                events_in: s.events_in,
                events_out: s.events_out,
                throughput_eps: s.events_in as f64 / run_secs,
                latency_us: LatencyUs::of(&s.latency_ns),
                slo_us: a.slo_ns as f64 / 1000.0,
                satisfaction: satisfaction(s),
                late_dropped: s.late_dropped,
                scale_up_signals: s.scale_up_signals,
                chained: s.chained,
                fused: s.fused,
                on_arrival: s.on_arrival,
                shard_seconds: s.actors.hosted_ns as f64 / 1e9,
                placed_on: a.shards.clone(),
                cpu_seconds: s.service_ns as f64 / 1e9,
                moves: 0,
                shards_over_time: Vec::new(),
                failure: None,
                actors: ActorSummary {
                    lessees_peak: series.iter().map(|p| p.1).max().unwrap_or(0).max(s.actors.lessees_max),
                    functions,
                    lessees_created: s.actors.lessees_created,
                    lessees_retired: s.actors.lessees_retired,
                    forwarded: s.actors.forwarded,
                    refused: s.actors.refused,
                    blocked_ms: s.actors.blocked_ns as f64 / 1e6,
                    critical_ms: s.actors.critical_ns as f64 / 1e6,
                    barriers: s.actors.barriers,
                    barrier_us: LatencyUs::of_rare(&s.actors.barrier_ns),
                    partial_bytes: s.actors.partial_bytes,
                    scale_up_us: LatencyUs::of_rare(&s.actors.scale_up_ns),
                    lease_delivery_us: LatencyUs::of_rare(&s.actors.lease_delivery_ns),
                    lessees_over_time: series,
                },
                tcp_sources: Vec::new(),
                tcp_sinks: Vec::new(),
            })
            .collect();
        let (shard_time, stalls) = (Vec::new(), Vec::new());
        Summary {
            apps,
            shards: plan.shards,
            wall_seconds: secs,
            run_seconds: run_secs,
            cpu_seconds,
            missed_wakeups: 0,
            lazy_wakeups: 0,
            io_wakeups: 0,
            shard_time,
            stalls,
            migrations: Vec::new(),
            moves_refused: 0,
            snapshots: None,
        }
    }

    /// Attach each tcp source's figures (per plan source; None: not a tcp source run here) to
    /// its app.
    pub fn add_tcp_sources(&mut self, plan: &Plan, tcp: &[Option<dirigo_net::tcp::IngressCounts>]) {
        for (sp, counts) in plan.sources.iter().zip(tcp) {
            if let (Some(counts), Some(app)) = (counts, self.apps.get_mut(sp.app as usize)) {
                app.tcp_sources.push(TcpSourceSummary { name: sp.name.clone(), counts: *counts });
            }
        }
    }

    /// Attach each tcp sink's drops so far to its app.
    pub fn add_tcp_sinks(&mut self, plan: &Plan) {
        for (app, name, hub) in &plan.tcp_sinks {
            if let Some(a) = self.apps.get_mut(*app as usize) {
                if hub.delivery() == dirigo_net::tcp::Delivery::Lossy {
                    hub.settle(std::time::Duration::from_millis(200));
                }
                let c = hub.counts();
                let (dropped, disconnected) = (c.dropped, c.disconnected);
                a.tcp_sinks.push(TcpSinkSummary {
                    name: name.clone(),
                    delivery: hub.delivery(),
                    dropped,
                    disconnected,
                });
            }
        }
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
        for a in self.apps.iter().filter(|a| a.actors.barriers + a.actors.lessees_created > 0) {
            let x = &a.actors;
            let _ = writeln!(
                s,
                "{:<16} actors: lessees peak {} (leased {}, retired {}), forwarded {} (refused {}), barriers {} \
                 ({}), blocked {:.1}ms, critical {:.1}ms, partials {} B, scale-up {}, {:.2} shard-s",
                a.name,
                x.lessees_peak,
                x.lessees_created,
                x.lessees_retired,
                x.forwarded,
                x.refused,
                x.barriers,
                percentiles(&x.barrier_us, "with lessees", "none with lessees"),
                x.blocked_ms,
                x.critical_ms,
                x.partial_bytes,
                percentiles(&x.scale_up_us, "leases", "no lease"),
                a.shard_seconds
            );
        }
        for a in &self.apps {
            for t in a.tcp_sinks.iter().filter(|t| t.dropped > 0 || t.disconnected > 0) {
                let _ = writeln!(
                    s,
                    "{:<16} tcp sink {} (delivery = {}): {} records dropped, {} subscribers disconnected",
                    a.name, t.name, t.delivery, t.dropped, t.disconnected
                );
            }
            for t in &a.tcp_sources {
                let c = &t.counts;
                let _ = writeln!(
                    s,
                    "{:<16} tcp source {}: {} connections, {} records; refused {} over max_connections, \
                     closed {} idle, {} oversized",
                    a.name, t.name, c.connections, c.records, c.connections_refused, c.idle_closed, c.oversized
                );
            }
        }
        for st in &self.stalls {
            let _ = writeln!(
                s,
                "{:<16} stall: function `{}` held shard {} for {:.1}ms",
                st.app, st.function, st.shard, st.held_ms
            );
        }
        for a in self.apps.iter().filter(|a| a.failure.is_some()) {
            let _ = writeln!(s, "{:<16} FAILED: {}", a.name, a.failure.as_deref().unwrap_or_default());
        }
        for a in &self.apps {
            let on: Vec<String> = a.placed_on.iter().map(u16::to_string).collect();
            let _ = writeln!(s, "{:<16} placed on shard(s) {}", a.name, on.join(", "));
        }
        for t in &self.shard_time {
            let _ = write!(
                s,
                "shard {:<3} busy {:>7.2}s  parked {:>7.2}s  spinning {:>7.2}s",
                t.shard, t.busy_seconds, t.parked_seconds, t.spinning_seconds
            );
            if t.batches_out > 0 {
                let per = t.envelopes_out as f64 / t.batches_out as f64;
                let _ = write!(s, "  out {} batches, {per:.1} envelopes each", t.batches_out);
            }
            let _ = writeln!(s);
        }
        if let Some(c) = &self.snapshots {
            let _ = write!(
                s,
                "snapshots {} taken, {} failed, last {} ({} bytes, {} ms)",
                c.taken, c.failed, c.last, c.last_bytes, c.last_ms
            );
            if c.resumed_from > 0 {
                let _ = write!(s, ", resumed from {}", c.resumed_from);
            }
            match &c.last_error {
                Some(e) => {
                    let _ = writeln!(s, "; last failure: {e}");
                }
                None => s.push('\n'),
            }
        }
        let _ = writeln!(
            s,
            "shards {}  wall {:.2}s  run {:.2}s  cpu {:.2}s",
            self.shards, self.wall_seconds, self.run_seconds, self.cpu_seconds
        );
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
    /// Lessee slots of the app open during the interval (see [`ActorSummary::lessees_peak`]).
    pub lessees: u64,
}

impl Progress {
    /// Figures of the interval that just ended.
    pub fn new(plan: &Plan, interval: &[AppStats], lessees: &[u64], elapsed: Duration, period: Duration) -> Self {
        let secs = period.as_secs_f64().max(1e-9);
        let lines = plan
            .apps
            .iter()
            .zip(interval)
            .zip(lessees)
            .map(|((a, s), &lessees)| {
                let l = LatencyUs::of(&s.latency_ns);
                ProgressLine {
                    app: a.name.clone(),
                    in_per_s: s.events_in as f64 / secs,
                    out_per_s: s.events_out as f64 / secs,
                    p50_us: l.p50,
                    p99_us: l.p99,
                    satisfaction: satisfaction(s),
                    lessees,
                }
            })
            .collect();
        Progress { elapsed, lines }
    }

    /// One line per app.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            let _ = write!(
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
            if l.lessees > 0 {
                let _ = write!(s, "  lessees {}", l.lessees);
            }
            s.push('\n');
        }
        s
    }
}
