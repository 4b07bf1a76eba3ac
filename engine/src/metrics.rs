//! Per-shard measurements (events in and out, end-to-end latency, SLO satisfaction, busy time)
//! and the reports shards send to the controller every stats interval.

use hdrhistogram::Histogram;

/// Latency histogram bounds: 1 ns to 60 s at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Counters of one app on one shard over one interval.
#[derive(Clone, Debug)]
pub struct AppStats {
    pub events_in: u64,
    pub events_out: u64,
    pub within_slo: u64,
    pub late_dropped: u64,
    /// Messages `on_route` found unable to meet their deadline on their home shard.
    pub scale_up_signals: u64,
    pub latency_ns: Histogram<u64>,
}

impl AppStats {
    /// Empty counters.
    pub fn new() -> Self {
        AppStats {
            events_in: 0,
            events_out: 0,
            within_slo: 0,
            late_dropped: 0,
            scale_up_signals: 0,
            latency_ns: new_histogram(),
        }
    }

    /// Fold another interval in.
    pub fn add(&mut self, o: &AppStats) {
        self.events_in += o.events_in;
        self.events_out += o.events_out;
        self.within_slo += o.within_slo;
        self.late_dropped += o.late_dropped;
        self.scale_up_signals += o.scale_up_signals;
        self.latency_ns.add(&o.latency_ns).expect("same histogram bounds");
    }

    /// Record one output at a sink. Hot path.
    #[inline]
    pub fn record_output(&mut self, latency_ns: u64, slo_ns: u64) {
        self.events_out += 1;
        self.within_slo += (latency_ns <= slo_ns) as u64;
        self.latency_ns.saturating_record(latency_ns.max(1));
    }

    /// Reset for the next interval.
    pub fn reset(&mut self) {
        self.events_in = 0;
        self.events_out = 0;
        self.within_slo = 0;
        self.late_dropped = 0;
        self.scale_up_signals = 0;
        self.latency_ns.reset();
    }
}

impl Default for AppStats {
    fn default() -> Self {
        Self::new()
    }
}

/// What a shard reports each interval, and once more when it exits.
#[derive(Clone, Debug)]
pub struct ShardReport {
    pub shard: u16,
    pub apps: Vec<AppStats>,
    /// Time spent running messages and sources (ns) in the interval.
    pub busy_ns: u64,
    /// Time spent parked (ns) in the interval.
    pub parked_ns: u64,
    /// Parks that ended on their safety timeout with work pending (lost wake-ups).
    pub missed_wakeups: u64,
    /// Doorbell rings by socket sources' readiness wakers (input arrived while parked).
    pub io_wakeups: u64,
    /// True on the shard's last report.
    pub last: bool,
}
