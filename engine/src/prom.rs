//! The Prometheus metrics of a served engine (`GET /metrics`), kept in a `prometheus` registry
//! the controller updates from the shards' reports and encoded by the crate's text encoder.
//!
//! Families: per app events in and out, end-to-end latency (a histogram), SLO satisfaction and
//! SLO, CPU-seconds (each shard's busy time split by the app's share of its events), shard-seconds
//! hosted, time its lessors spent Blocked and Critical; per shard busy, parked and spinning time,
//! queue length and key groups hosted; per function lessee slots; the process's CPU time.

use prometheus::{
    Counter, CounterVec, Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::metrics::{AppStats, ShardReport, ShardTotals};

/// Latency buckets (seconds): 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] =
    [5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The registry and its families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events_in: IntCounterVec,
    events_out: IntCounterVec,
    latency: HistogramVec,
    satisfaction: GaugeVec,
    slo: GaugeVec,
    app_cpu: CounterVec,
    hosted: CounterVec,
    blocked: CounterVec,
    critical: CounterVec,
    late_dropped: IntCounterVec,
    shard_busy: CounterVec,
    shard_parked: CounterVec,
    shard_spinning: GaugeVec,
    shard_batches_out: IntCounterVec,
    shard_envelopes_out: IntCounterVec,
    queue: IntGaugeVec,
    key_groups: IntGaugeVec,
    lessees: IntGaugeVec,
    migrations: IntCounterVec,
    stalls: IntCounterVec,
    fn_blocked: CounterVec,
    fn_critical: CounterVec,
    process_cpu: Gauge,
    _up: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("dirigo")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("valid metric");
                registry.register(Box::new(m.clone())).expect("unique metric");
                m
            }};
        }
        let app = &["app"];
        let shard = &["shard"];
        Metrics {
            events_in: reg!(IntCounterVec::new(opts("app_events_in_total", "Events the app's sources produced"), app)),
            events_out: reg!(IntCounterVec::new(opts("app_events_out_total", "Outputs at the app's sinks"), app)),
            latency: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "app_latency_seconds",
                    "End-to-end latency of the app's outputs (sink time minus ingress time)"
                )
                .namespace("dirigo")
                .buckets(LATENCY_BUCKETS.to_vec()),
                app
            )),
            satisfaction: reg!(GaugeVec::new(
                opts("app_slo_satisfaction", "Share of the app's outputs within its SLO so far"),
                app
            )),
            slo: reg!(GaugeVec::new(opts("app_slo_seconds", "The app's latency SLO"), app)),
            app_cpu: reg!(CounterVec::new(
                opts(
                    "app_cpu_seconds_total",
                    "CPU-seconds of shard busy time attributed to the app (by its share of each shard's events)"
                ),
                app
            )),
            hosted: reg!(CounterVec::new(
                opts("app_hosted_shard_seconds_total", "Shard-seconds during which a shard hosted the app"),
                app
            )),
            blocked: reg!(CounterVec::new(
                opts("app_lessor_blocked_seconds_total", "Time the app's dual-mode lessors spent Blocked"),
                app
            )),
            critical: reg!(CounterVec::new(
                opts("app_lessor_critical_seconds_total", "Time the app's dual-mode lessors spent Critical"),
                app
            )),
            late_dropped: reg!(IntCounterVec::new(
                opts("app_late_dropped_total", "Events dropped as later than the allowed lateness"),
                app
            )),
            shard_busy: reg!(CounterVec::new(
                opts("shard_busy_seconds_total", "Time the shard ran messages and sources"),
                shard
            )),
            shard_parked: reg!(CounterVec::new(opts("shard_parked_seconds_total", "Time the shard was parked"), shard)),
            shard_spinning: reg!(GaugeVec::new(
                opts(
                    "shard_spinning_seconds",
                    "Time the shard was neither busy nor parked (spinning, polling) since start"
                ),
                shard
            )),
            shard_batches_out: reg!(IntCounterVec::new(
                opts("shard_batches_out_total", "Batches the shard handed to other shards of its node"),
                shard
            )),
            shard_envelopes_out: reg!(IntCounterVec::new(
                opts(
                    "shard_envelopes_out_total",
                    "Envelopes (records and control messages) in the batches the shard handed to other shards"
                ),
                shard
            )),
            queue: reg!(IntGaugeVec::new(opts("shard_queue_length", "Messages queued on the shard"), shard)),
            key_groups: reg!(IntGaugeVec::new(
                opts("shard_key_groups", "Key groups of running apps' keyed functions the shard holds"),
                shard
            )),
            lessees: reg!(IntGaugeVec::new(
                opts("function_lessees", "Lessee slots of the function open over the node"),
                &["app", "function"]
            )),
            migrations: reg!(IntCounterVec::new(
                opts("function_migrations_total", "Key groups of the function moved between shards"),
                &["app", "function", "reason"]
            )),
            stalls: reg!(IntCounterVec::new(
                opts("function_stalls_total", "Messages of the function that held their shard past the stall budget"),
                &["app", "function"]
            )),
            fn_blocked: reg!(CounterVec::new(
                opts("function_lessor_blocked_seconds_total", "Time the function's dual-mode lessors spent Blocked"),
                &["app", "function"]
            )),
            fn_critical: reg!(CounterVec::new(
                opts("function_lessor_critical_seconds_total", "Time the function's dual-mode lessors spent Critical"),
                &["app", "function"]
            )),
            process_cpu: reg!(Gauge::with_opts(opts(
                "process_cpu_seconds",
                "CPU time of the server process since start"
            ))),
            _up: reg!(Counter::with_opts(opts("up", "Always 0; present so scrapers see the registry"))),
            registry,
        }
    }

    /// One shard's report of one app.
    pub fn app_report(&self, app: &str, s: &AppStats) {
        self.events_in.with_label_values(&[app]).inc_by(s.events_in);
        self.events_out.with_label_values(&[app]).inc_by(s.events_out);
        self.late_dropped.with_label_values(&[app]).inc_by(s.late_dropped);
        let h = self.latency.with_label_values(&[app]);
        for v in s.latency_ns.iter_recorded() {
            let secs = v.value_iterated_to() as f64 / 1e9;
            for _ in 0..v.count_at_value() {
                h.observe(secs);
            }
        }
        self.hosted.with_label_values(&[app]).inc_by(s.actors.hosted_ns as f64 / 1e9);
        self.blocked.with_label_values(&[app]).inc_by(s.actors.blocked_ns as f64 / 1e9);
        self.critical.with_label_values(&[app]).inc_by(s.actors.critical_ns as f64 / 1e9);
    }

    pub fn app_cpu(&self, app: &str, seconds: f64) {
        self.app_cpu.with_label_values(&[app]).inc_by(seconds);
    }

    pub fn app_gauges(&self, app: &str, satisfaction: f64, slo_seconds: f64) {
        self.satisfaction.with_label_values(&[app]).set(satisfaction);
        self.slo.with_label_values(&[app]).set(slo_seconds);
    }

    /// One shard's report: its time, and the batches it sent.
    pub fn shard_time(&self, shard: usize, r: &ShardReport) {
        let s = shard.to_string();
        self.shard_busy.with_label_values(&[&s]).inc_by(r.busy_ns as f64 / 1e9);
        self.shard_parked.with_label_values(&[&s]).inc_by(r.parked_ns as f64 / 1e9);
        self.shard_batches_out.with_label_values(&[&s]).inc_by(r.batches_out);
        self.shard_envelopes_out.with_label_values(&[&s]).inc_by(r.envelopes_out);
    }

    pub fn shard_gauges(&self, shard: usize, queued: u64, key_groups: usize, wall_ns: u64, t: &ShardTotals) {
        let s = shard.to_string();
        self.queue.with_label_values(&[&s]).set(queued as i64);
        self.key_groups.with_label_values(&[&s]).set(key_groups as i64);
        let spinning = wall_ns.saturating_sub(t.busy_ns + t.parked_ns);
        self.shard_spinning.with_label_values(&[&s]).set(spinning as f64 / 1e9);
    }

    pub fn lessees(&self, app: &str, function: &str, n: u64) {
        self.lessees.with_label_values(&[app, function]).set(n as i64);
    }

    /// A key group of the function moved (`reason`: spread, consolidate, forced).
    pub fn migration(&self, app: &str, function: &str, reason: &str) {
        self.migrations.with_label_values(&[app, function, reason]).inc();
    }

    /// A message of the function held its shard past the stall budget.
    pub fn stall(&self, app: &str, function: &str) {
        self.stalls.with_label_values(&[app, function]).inc();
    }

    /// Time the function's lessors spent Blocked and Critical (ns).
    pub fn function_actor(&self, app: &str, function: &str, blocked_ns: u64, critical_ns: u64) {
        // The function's migration series exist from the start (at 0), like its others.
        for reason in ["spread", "consolidate"] {
            self.migrations.with_label_values(&[app, function, reason]);
        }
        self.stalls.with_label_values(&[app, function]);
        self.fn_blocked.with_label_values(&[app, function]).inc_by(blocked_ns as f64 / 1e9);
        self.fn_critical.with_label_values(&[app, function]).inc_by(critical_ns as f64 / 1e9);
    }

    pub fn process_cpu(&self, seconds: f64) {
        self.process_cpu.set(seconds);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("utf-8")
    }
}
