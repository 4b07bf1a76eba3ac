//! The controller: builds the mailbox mesh, starts one glommio executor per shard (shard i on
//! CPU i when pinned), gathers the shards' reports into progress lines and a summary, and
//! stops the engine on request. It is the only code off the shards' threads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use crate::mailbox::Mesh;
use crate::metrics::{AppStats, ShardReport};
use crate::plan::Plan;
use crate::policy::Policy;
use crate::report::{Progress, Summary};
use crate::shard::{Shard, ShardInit, ShardSettings};
use crate::signal::ShardSignal;

/// Engine-wide settings (the `[engine]` section of a config).
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Number of shards (0 = one per online CPU).
    pub shards: usize,
    /// Pin shard i to CPU i (only when there are at least as many CPUs as shards).
    pub pin: bool,
    pub shard: ShardSettings,
    /// Batches per mailbox ring.
    pub mailbox_batches: usize,
    /// glommio's preemption timer.
    pub preempt_timer: Duration,
    /// Stop the sources after this long (None: run until every source ends).
    pub run_for: Option<Duration>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            shards: 0,
            pin: true,
            shard: ShardSettings {
                batch_size: 256,
                max_in_flight: 65_536,
                spin: Duration::from_micros(200),
                tick: Duration::from_millis(1),
                stats_interval: Duration::from_secs(1),
            },
            mailbox_batches: 64,
            preempt_timer: Duration::from_millis(10),
            run_for: None,
        }
    }
}

/// Errors starting or running an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid plan: {0}")]
    Plan(String),
    #[error("cannot start shard {shard}: {reason}")]
    Spawn { shard: usize, reason: String },
    #[error("shard {shard} failed: {reason}")]
    ShardFailed { shard: usize, reason: String },
    #[error("cannot prepare sink file {path}: {source}")]
    SinkFile { path: PathBuf, source: std::io::Error },
}

/// A handle that stops a running engine from another thread (sources end, in-flight messages
/// drain, then `run` returns).
#[derive(Clone, Debug, Default)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    signals: Arc<std::sync::Mutex<Vec<Arc<ShardSignal>>>>,
}

impl StopHandle {
    /// Ring every shard's doorbell (a parked shard wakes and re-checks its work).
    fn ring_all(&self) {
        for s in self.signals.lock().expect("stop handle").iter() {
            s.wake();
        }
    }

    /// Shard `shard` of the running engine has flagged itself asleep (parked, or about to park
    /// with everything armed to wake it). False before the engine started. For tests and tools
    /// that need to act on a parked shard.
    pub fn shard_parked(&self, shard: usize) -> bool {
        self.signals.lock().expect("stop handle").get(shard).is_some_and(|s| s.is_sleeping())
    }

    /// Ask the engine to stop.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.ring_all();
    }
}

/// How often the controller rings every shard's doorbell. Mail always rings a parked receiver's
/// doorbell and parks are bounded; yet on oversubscribed CPUs (shards > CPUs) we saw, rarely, a
/// glommio executor stay asleep with work pending until a doorbell rang from another thread.
/// This safety net bounds such a stall to this period, at the cost of a few spurious wake-ups
/// per second on an idle shard.
const WATCHDOG: Duration = Duration::from_millis(200);

/// Number of shards to run for `requested` (0 = one per online CPU).
pub fn resolve_shards(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Run `plan` to completion with `policy` on every shard. `on_progress` is called every stats
/// interval with the last interval's figures.
pub fn run<P>(
    plan: Plan,
    settings: &EngineSettings,
    policy: P,
    stop: StopHandle,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Summary, EngineError>
where
    P: Policy + Clone + Send,
{
    plan.validate().map_err(EngineError::Plan)?;
    for (path, first) in &plan.files {
        std::fs::write(path, first).map_err(|source| EngineError::SinkFile { path: path.clone(), source })?;
    }
    let n = plan.shards;
    let plan = Arc::new(plan);
    let (signals, doorbells): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| {
            let (s, d) = ShardSignal::new(plan.apps.len());
            (Arc::new(s), d)
        })
        .unzip();
    *stop.signals.lock().expect("stop handle") = signals.clone();
    let signals = Arc::new(signals);
    let mesh = Mesh::new(&signals, settings.mailbox_batches);
    let (tx, rx) = flume::unbounded();
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let handles = spawn_shards(&plan, settings, policy, &stop, signals, doorbells, mesh, tx)?;
    let (totals, wakeups) = collect(&plan, settings, &rx, n, &stop, started, &mut on_progress);
    for (i, h) in handles.into_iter().enumerate() {
        h.join().map_err(|e| EngineError::ShardFailed { shard: i, reason: e.to_string() })?;
    }
    let wall = started.elapsed();
    let mut summary = Summary::new(&plan, &totals, wall, cpu_seconds() - cpu0);
    (summary.missed_wakeups, summary.io_wakeups) = wakeups;
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
fn spawn_shards<P: Policy + Clone + Send>(
    plan: &Arc<Plan>,
    settings: &EngineSettings,
    policy: P,
    stop: &StopHandle,
    signals: Arc<Vec<Arc<ShardSignal>>>,
    doorbells: Vec<crate::signal::Doorbell>,
    mesh: Mesh,
    tx: flume::Sender<ShardReport>,
) -> Result<Vec<glommio::ExecutorJoinHandle<()>>, EngineError> {
    let n = plan.shards;
    let cpus = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    let pin = settings.pin && n <= cpus;
    // Unpinned shards share CPUs: a shard spinning for mail would hold a CPU that the shard with
    // the work needs (glommio likewise ignores `spin_before_park` when unpinned), so they park
    // at once.
    let mut shard_settings = settings.shard;
    if !pin {
        shard_settings.spin = Duration::ZERO;
    }
    let mut handles = Vec::with_capacity(n);
    let parts = mesh.outboxes.into_iter().zip(mesh.inboxes).zip(doorbells);
    for (i, ((outboxes, inboxes), doorbell)) in parts.enumerate() {
        let init = ShardInit {
            id: i as u16,
            plan: plan.clone(),
            outboxes,
            inboxes,
            signals: signals.clone(),
            doorbell,
            policy: policy.clone(),
            settings: shard_settings,
            stop: stop.flag.clone(),
            reports: tx.clone(),
        };
        let placement = if pin { Placement::Fixed(i) } else { Placement::Unbound };
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("dirigo-shard-{i}"))
            .preempt_timer(settings.preempt_timer)
            .spawn(move || async move { Shard::new(init).run().await })
            .map_err(|e| EngineError::Spawn { shard: i, reason: e.to_string() })?;
        handles.push(h);
    }
    Ok(handles)
}

/// Gather reports until every shard has sent its last one; report progress each interval.
fn collect(
    plan: &Plan,
    settings: &EngineSettings,
    rx: &flume::Receiver<ShardReport>,
    n: usize,
    stop: &StopHandle,
    started: Instant,
    on_progress: &mut impl FnMut(&Progress),
) -> (Vec<AppStats>, (u64, u64)) {
    let napps = plan.apps.len();
    let mut totals: Vec<AppStats> = (0..napps).map(|_| AppStats::new()).collect();
    let mut interval: Vec<AppStats> = (0..napps).map(|_| AppStats::new()).collect();
    let period = settings.shard.stats_interval;
    let mut next = started + period;
    let mut remaining = n;
    let (mut missed_wakeups, mut io_wakeups) = (0, 0);
    let mut last_ring = Instant::now();
    while remaining > 0 {
        if settings.run_for.is_some_and(|d| started.elapsed() >= d) {
            stop.stop();
        }
        let wait = next.saturating_duration_since(Instant::now()).min(WATCHDOG);
        if let Ok(r) = rx.recv_timeout(wait) {
            for (a, s) in r.apps.iter().enumerate() {
                totals[a].add(s);
                interval[a].add(s);
            }
            remaining -= r.last as usize;
            missed_wakeups += r.missed_wakeups;
            io_wakeups += r.io_wakeups;
        }
        if last_ring.elapsed() >= WATCHDOG {
            stop.ring_all();
            last_ring = Instant::now();
        }
        if Instant::now() >= next {
            on_progress(&Progress::new(plan, &interval, started.elapsed(), period));
            interval.iter_mut().for_each(AppStats::reset);
            next += period;
        }
    }
    (totals, (missed_wakeups, io_wakeups))
}

/// CPU time (user + system) used by this process so far, in seconds.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer is always allowed.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}
