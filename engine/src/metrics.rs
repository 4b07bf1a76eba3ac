//! Per-shard measurements (events in and out, end-to-end latency, SLO satisfaction, busy time)
//! and the reports shards send to the controller every stats interval.

use hdrhistogram::Histogram;

/// Latency histogram bounds: 1 ns to 60 s at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Fold `from` into `into`; an empty one (most intervals of most histograms: barriers, scale-ups)
/// costs nothing (`add` walks all of a histogram's ~28k buckets).
fn add_histogram(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    if !from.is_empty() {
        into.add(from).expect("same histogram bounds");
    }
}

/// Empty `h` for the next interval; an empty one is left alone (a reset zeroes ~220 KB).
fn reset_histogram(h: &mut Histogram<u64>) {
    if !h.is_empty() {
        h.reset();
    }
}

/// A histogram of what most runs never see (barriers, scale-ups, lease deliveries), made at its
/// first sample: figures that never get one hold no memory (a histogram is ~220 KB, written
/// through as it is made; three per app, shard and report were most of an engine's start-up).
#[derive(Clone, Debug, Default)]
pub struct RareHistogram(Option<Box<Histogram<u64>>>);

impl RareHistogram {
    /// Record `v`, clamped to the bounds.
    pub fn saturating_record(&mut self, v: u64) {
        self.0.get_or_insert_with(|| Box::new(new_histogram())).saturating_record(v);
    }

    /// The samples so far, if any was made.
    pub fn histogram(&self) -> Option<&Histogram<u64>> {
        self.0.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|h| h.is_empty())
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.0.as_ref().map_or(0, |h| h.len())
    }

    fn add(&mut self, from: &RareHistogram) {
        match (&mut self.0, from.0.as_deref()) {
            (_, None) => {}
            (Some(into), Some(from)) => add_histogram(into, from),
            (None, Some(from)) if from.is_empty() => {}
            (None, Some(from)) => self.0 = Some(Box::new(from.clone())),
        }
    }

    fn reset(&mut self) {
        if let Some(h) = &mut self.0 {
            reset_histogram(h);
        }
    }
}

/// App figures given back once a report was folded in: a shard's next report takes them
/// instead of copying its own (a latency histogram of ~220 KB per app, every report).
static RECYCLED: std::sync::Mutex<Vec<AppStats>> = std::sync::Mutex::new(Vec::new());
/// At most this many are kept (each holds a histogram of ~220 KB): enough for the shards and
/// apps of a large node to report without allocating, and a bound on what the pool keeps
/// after its engine has ended.
const RECYCLED_MAX: usize = 64;

/// Give the app figures of a folded report back (see [`fresh_stats`]), emptied.
pub fn recycle(mut apps: Vec<AppStats>) {
    // Emptied before the pool is locked: a shard taking fresh figures never waits for a reset.
    apps.iter_mut().for_each(AppStats::reset);
    let mut pool = RECYCLED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let room = RECYCLED_MAX.saturating_sub(pool.len());
    pool.extend(apps.into_iter().take(room));
}

/// Stock the pool with up to `n` empty app figures (at most what it keeps), made now: a shard's
/// first reports then take them instead of zeroing ~220 KB each while it runs.
pub fn stock_recycled(n: usize) {
    let have = RECYCLED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len();
    recycle((0..n.min(RECYCLED_MAX).saturating_sub(have)).map(|_| AppStats::new()).collect());
}

/// `n` empty app figures, recycled where some were given back.
pub fn fresh_stats(n: usize) -> Vec<AppStats> {
    let mut pool = RECYCLED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let from = pool.len().saturating_sub(n);
    let mut out: Vec<AppStats> = pool.drain(from..).collect();
    drop(pool);
    out.resize_with(n, AppStats::new);
    out
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
    /// Records that ran at once on their sender's shard (operator chaining), skipping the run
    /// queue.
    pub chained: u64,
    /// Records of a map or filter computed where its input was made (operator fusion): the
    /// input record was never made, chained or queued.
    pub fused: u64,
    /// Records that ran as their batch arrived from another shard (or this one's staging),
    /// skipping the run queue: a policy that runs messages in arrival order, nothing waiting.
    pub on_arrival: u64,
    pub latency_ns: Histogram<u64>,
    /// Service time of the app's messages: each message run counts its function's measured
    /// cost on the shard that ran it (sampled, see the shard's `cost_ns`), ns.
    pub service_ns: u64,
    /// Dual-mode actors of the app (see [`ActorStats`]).
    pub actors: ActorStats,
}

/// Dual-mode actor figures of one app on one shard over one interval.
#[derive(Clone, Debug)]
pub struct ActorStats {
    /// Messages a lessor forwarded to a lessee, and those the lessee refused (run at home).
    pub forwarded: u64,
    pub refused: u64,
    /// Lessee slots leased and retired (counted by their lessors).
    pub lessees_created: u64,
    pub lessees_retired: u64,
    /// Most lessee slots of the app this shard hosted at once during the interval (a gauge:
    /// [`ActorStats::add`] keeps the maximum).
    pub lessees_max: u64,
    /// Barriers completed, and each one's duration from its arrival at the lessor to its last
    /// critical message (ns).
    pub barriers: u64,
    pub barrier_ns: RareHistogram,
    /// Time lessors spent Blocked (waiting for partials and pre-barrier work) and Critical.
    pub blocked_ns: u64,
    pub critical_ns: u64,
    /// Bytes of partial state shipped from lessees to lessors.
    pub partial_bytes: u64,
    /// Scale-up reaction: from the deadline miss that leased a lessee to the first message
    /// that ran on it (ns).
    pub scale_up_ns: RareHistogram,
    /// The first part of it: from the lease decision to the lease opening on the borrowed
    /// shard (mail, and the wake-up or the end of the turn it waited for), ns.
    pub lease_delivery_ns: RareHistogram,
    /// Time this shard hosted at least one activation of the app (a function instance or a
    /// lessee slot), ns.
    pub hosted_ns: u64,
}

impl ActorStats {
    fn new() -> Self {
        ActorStats {
            forwarded: 0,
            refused: 0,
            lessees_created: 0,
            lessees_retired: 0,
            lessees_max: 0,
            barriers: 0,
            barrier_ns: RareHistogram::default(),
            blocked_ns: 0,
            critical_ns: 0,
            partial_bytes: 0,
            scale_up_ns: RareHistogram::default(),
            lease_delivery_ns: RareHistogram::default(),
            hosted_ns: 0,
        }
    }

    /// Fold another interval (or shard) in; the gauge keeps its maximum.
    pub fn add(&mut self, o: &ActorStats) {
        self.forwarded += o.forwarded;
        self.refused += o.refused;
        self.lessees_created += o.lessees_created;
        self.lessees_retired += o.lessees_retired;
        self.lessees_max = self.lessees_max.max(o.lessees_max);
        self.barriers += o.barriers;
        self.barrier_ns.add(&o.barrier_ns);
        self.blocked_ns += o.blocked_ns;
        self.critical_ns += o.critical_ns;
        self.partial_bytes += o.partial_bytes;
        self.scale_up_ns.add(&o.scale_up_ns);
        self.lease_delivery_ns.add(&o.lease_delivery_ns);
        self.hosted_ns += o.hosted_ns;
    }

    fn reset(&mut self) {
        self.barrier_ns.reset();
        self.scale_up_ns.reset();
        self.lease_delivery_ns.reset();
        self.forwarded = 0;
        self.refused = 0;
        self.lessees_created = 0;
        self.lessees_retired = 0;
        self.lessees_max = 0;
        self.barriers = 0;
        self.blocked_ns = 0;
        self.critical_ns = 0;
        self.partial_bytes = 0;
        self.hosted_ns = 0;
    }

    /// Whether anything was counted.
    pub fn has_news(&self) -> bool {
        self.forwarded + self.lessees_created + self.lessees_retired + self.barriers + self.hosted_ns > 0
    }
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
            chained: 0,
            fused: 0,
            on_arrival: 0,
            latency_ns: new_histogram(),
            service_ns: 0,
            actors: ActorStats::new(),
        }
    }

    /// Fold another interval in.
    pub fn add(&mut self, o: &AppStats) {
        self.events_in += o.events_in;
        self.events_out += o.events_out;
        self.within_slo += o.within_slo;
        self.late_dropped += o.late_dropped;
        self.scale_up_signals += o.scale_up_signals;
        self.chained += o.chained;
        self.fused += o.fused;
        self.on_arrival += o.on_arrival;
        add_histogram(&mut self.latency_ns, &o.latency_ns);
        self.service_ns += o.service_ns;
        self.actors.add(&o.actors);
    }

    /// Record one output at a sink. Hot path.
    #[inline]
    pub fn record_output(&mut self, latency_ns: u64, slo_ns: u64) {
        self.record_outputs(latency_ns, 1, slo_ns)
    }

    /// Record `n` outputs of the same latency at a sink (one histogram update). Hot path.
    #[inline]
    pub fn record_outputs(&mut self, latency_ns: u64, n: u64, slo_ns: u64) {
        self.events_out += n;
        self.within_slo += (latency_ns <= slo_ns) as u64 * n;
        self.latency_ns.saturating_record_n(latency_ns.max(1), n);
    }

    /// Reset for the next interval.
    pub fn reset(&mut self) {
        self.events_in = 0;
        self.events_out = 0;
        self.within_slo = 0;
        self.late_dropped = 0;
        self.scale_up_signals = 0;
        self.chained = 0;
        self.fused = 0;
        self.on_arrival = 0;
        reset_histogram(&mut self.latency_ns);
        self.service_ns = 0;
        self.actors.reset();
    }
}

impl Default for AppStats {
    fn default() -> Self {
        Self::new()
    }
}

/// A shard's totals over its reports: busy and parked time (ns), batches handed to other
/// shards and the envelopes they carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardTotals {
    pub busy_ns: u64,
    pub parked_ns: u64,
    pub batches_out: u64,
    pub envelopes_out: u64,
}

impl ShardTotals {
    /// Count report `r` in.
    pub fn add(&mut self, r: &ShardReport) {
        self.busy_ns += r.busy_ns;
        self.parked_ns += r.parked_ns;
        self.batches_out += r.batches_out;
        self.envelopes_out += r.envelopes_out;
    }
}

/// What a shard reports each interval, and once more when it exits.
#[derive(Clone, Debug)]
pub struct ShardReport {
    pub shard: u16,
    /// Apps whose user code panicked on this shard since the last report.
    pub failures: Vec<AppFailure>,
    pub apps: Vec<AppStats>,
    /// Time spent running messages and sources (ns) in the interval.
    pub busy_ns: u64,
    /// Time spent parked (ns) in the interval.
    pub parked_ns: u64,
    /// Batches it handed to other shards of its node in the interval, and the envelopes they
    /// carried.
    pub batches_out: u64,
    pub envelopes_out: u64,
    /// Parks that ended on their safety timeout with work pending (lost wake-ups).
    pub missed_wakeups: u64,
    /// Parks that ended on their own timeout with mail a sender let wait for it (its deadline
    /// allowed: `ShardSignal::notify_by`).
    pub lazy_wakeups: u64,
    /// Per function: most lessee slots of it this shard hosted at once since the last report.
    pub lessees: Vec<u64>,
    /// Doorbell rings by socket sources' readiness wakers (input arrived while parked).
    pub io_wakeups: u64,
    /// The figures of the tcp sources this shard runs, by source index in the plan: totals
    /// over the source's life so far (each report supersedes the last).
    pub tcp_sources: Vec<(usize, dirigo_net::tcp::IngressCounts)>,
    /// Per function: time its lessor here spent Blocked and Critical since the last report (ns).
    pub fn_blocked_ns: Vec<u64>,
    pub fn_critical_ns: Vec<u64>,
    /// Per app: activations hosted here now (key groups, sources, lessee slots): a gauge.
    pub hosting: Vec<u32>,
    /// Key groups this shard moved out since the last report.
    pub moves: Vec<MoveEvent>,
    /// Moves this shard refused to take in (it was moving a group of the same function out).
    pub moves_refused: u64,
    /// True on the shard's last report.
    pub last: bool,
}

/// Why a key group moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveReason {
    /// Its shard was too busy for its apps' SLOs: out to a shard with room.
    Spread,
    /// Load fell: back onto fewer shards, so the freed one parks.
    Consolidate,
    /// The `migrate_every` test setting.
    Forced,
}

/// One key group that moved (reported by its old owner when the state left).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MoveEvent {
    /// When the state left (ns since the engine's epoch).
    pub at_ns: u64,
    pub app: u16,
    pub function: u16,
    pub group: u16,
    pub from: u16,
    pub to: u16,
    pub reason: MoveReason,
    /// Size of the state archive shipped.
    pub bytes: u64,
    /// From the decision to the state leaving (fences acknowledged, barrier run), ns.
    pub duration_ns: u64,
}

/// An app that failed: its user code panicked (on `shard`, in `function`), or held its shard
/// past `[engine] stall_stop`, or it had work on a shard given up for that; it stopped while
/// every other app ran on.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AppFailure {
    pub app: u16,
    pub function: String,
    pub shard: u16,
    /// What went wrong.
    pub cause: FailureCause,
    /// The panic's message, or what the app lost.
    pub message: String,
}

/// Why an app failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// Its user code panicked.
    Panicked,
    /// Its function held the shard past `stall_stop`: the shard was given up.
    Stuck,
    /// It had work on (or under way with) a shard given up for another function.
    ShardGivenUp,
}

impl std::fmt::Display for AppFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (function, shard, message) = (&self.function, self.shard, &self.message);
        match self.cause {
            FailureCause::Panicked => write!(f, "function `{function}` panicked on shard {shard}: {message}"),
            FailureCause::Stuck => {
                write!(f, "function `{function}` held shard {shard} past the stall limit: {message}")
            }
            FailureCause::ShardGivenUp => write!(f, "shard {shard} was given up: {message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures filled in one interval, every counter and histogram touched.
    fn filled() -> AppStats {
        let mut s = AppStats::new();
        s.events_in = 7;
        s.record_output(1_500, 1_000);
        s.record_output(500, 1_000);
        s.chained = 3;
        s.fused = 5;
        s.on_arrival = 4;
        s.service_ns = 99;
        s.actors.barriers = 1;
        s.actors.barrier_ns.saturating_record(42);
        s.actors.scale_up_ns.saturating_record(43);
        s.actors.lease_delivery_ns.saturating_record(44);
        s.actors.hosted_ns = 5;
        s
    }

    #[test]
    fn rare_histograms_are_made_at_their_first_sample_only() {
        let (mut total, empty) = (AppStats::new(), AppStats::new());
        total.add(&empty);
        assert!(total.actors.barrier_ns.histogram().is_none(), "nothing recorded, nothing made");
        total.add(&filled());
        total.add(&filled());
        assert_eq!(total.actors.barrier_ns.histogram().map(|h| (h.len(), h.max())), Some((2, 42)));
        assert_eq!((total.actors.scale_up_ns.len(), total.actors.lease_delivery_ns.len()), (2, 2));
        total.actors.reset();
        assert!(total.actors.barrier_ns.is_empty() && total.actors.scale_up_ns.is_empty());
    }

    #[test]
    fn outputs_of_one_latency_count_as_each_alone() {
        let (mut one_by_one, mut at_once) = (AppStats::new(), AppStats::new());
        for (latency, n) in [(900, 3), (1_000, 1), (1_001, 4), (0, 2)] {
            (0..n).for_each(|_| one_by_one.record_output(latency, 1_000));
            at_once.record_outputs(latency, n, 1_000);
        }
        assert_eq!((at_once.events_out, at_once.within_slo), (one_by_one.events_out, one_by_one.within_slo));
        assert_eq!((at_once.events_out, at_once.within_slo), (10, 6));
        assert_eq!(at_once.latency_ns, one_by_one.latency_ns);
    }

    #[test]
    fn recycled_figures_come_back_empty_and_the_pool_stays_bounded() {
        let mut total = AppStats::new();
        total.add(&filled());
        assert_eq!((total.events_out, total.within_slo, total.latency_ns.len()), (2, 1, 2));
        recycle((0..RECYCLED_MAX + 8).map(|_| filled()).collect());
        // Other tests' engines share the pool: whatever it hands out must be empty.
        for s in fresh_stats(RECYCLED_MAX + 4) {
            assert_eq!((s.events_in, s.events_out, s.within_slo, s.chained, s.service_ns), (0, 0, 0, 0, 0));
            assert_eq!((s.on_arrival, s.fused), (0, 0));
            assert!(s.latency_ns.is_empty() && s.actors.barrier_ns.is_empty());
            assert!(s.actors.scale_up_ns.is_empty() && s.actors.lease_delivery_ns.is_empty());
            assert_eq!((s.actors.barriers, s.actors.hosted_ns), (0, 0));
            assert!(!s.actors.has_news());
        }
        assert!(RECYCLED.lock().unwrap().len() <= RECYCLED_MAX);
        // Folding in empty figures changes nothing.
        total.add(&AppStats::new());
        assert_eq!((total.events_out, total.latency_ns.len(), total.actors.barrier_ns.len()), (2, 2, 1));
    }
}
