//! The controller: builds the mailbox mesh, starts one glommio executor per shard (shard i on
//! CPU i when pinned), gathers the shards' reports into progress lines and a summary, and
//! stops the engine on request. It is the only code off the shards' threads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{CpuSet, LocalExecutorBuilder, Placement};

use crate::metrics::{AppFailure, AppStats, FailureCause, ShardReport, ShardTotals};
use crate::placement::PlacementTable;
use crate::plan::Plan;
use crate::policy::Policy;
use crate::report::{Progress, ShardTime, Stall, Summary};
use crate::shard::{Shard, ShardInit, ShardSettings};
use dirigo_net::mailbox::Mesh;
use dirigo_net::signal::ShardSignal;

/// Engine-wide settings (the `[engine]` section of a config).
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Number of shards (0 = one per online CPU).
    pub shards: usize,
    /// Pin shard i to CPU i (only when there are at least as many CPUs as shards).
    pub pin: bool,
    pub shard: ShardSettings,
    /// Key groups per keyed function (the placement table's width).
    pub key_groups: u16,
    /// A function holding its shard longer than this is reported (the stall detector).
    pub stall_budget: Duration,
    /// A function holding its shard longer than this fails its app and the shard is given up
    /// (see `shard::gone`); zero: never.
    pub stall_stop: Duration,
    /// Batches per mailbox ring.
    pub mailbox_batches: usize,
    /// glommio's preemption timer.
    pub preempt_timer: Duration,
    /// Stop the sources after this long (None: run until every source ends).
    pub run_for: Option<Duration>,
    /// `[snapshots]` (None: the run takes none).
    pub snapshots: Option<crate::snapshot::SnapshotSettings>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            shards: 0,
            pin: true,
            shard: ShardSettings {
                batch_size: 256,
                max_in_flight: 65_536,
                queue_budget: 0.002,
                spin: Duration::from_micros(200),
                spin_slo: Duration::from_micros(500),
                gather: 0.1,
                standby: 0,
                tick: Duration::from_millis(1),
                lessee_idle: Duration::from_millis(10),
                migrate_every: 0,
                rebalance: true,
                stats_interval: Duration::from_secs(1),
            },
            key_groups: dirigo_actors::ids::DEFAULT_KEY_GROUPS,
            stall_budget: Duration::from_millis(100),
            stall_stop: Duration::ZERO,
            mailbox_batches: 64,
            // See `preempt_timer` in configs/default.toml: long, so a shard slow to start is not
            // parked for good by glommio before its loop runs.
            preempt_timer: Duration::from_secs(3600),
            run_for: None,
            snapshots: None,
        }
    }
}

/// Errors starting or running an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid plan: {0}")]
    Plan(#[from] crate::plan::PlanError),
    #[error("cannot start shard {shard}: {reason}")]
    Spawn { shard: usize, reason: String },
    #[error("shard {shard} failed: {reason}")]
    ShardFailed { shard: usize, reason: String },
    #[error("cannot prepare sink file {path}: {source}")]
    SinkFile { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Link(#[from] dirigo_net::link::LinkError),
    #[error(transparent)]
    Resume(Box<crate::snapshot::ResumeError>),
    #[error("cannot start the snapshot writer: {0}")]
    SnapshotWriter(std::io::Error),
    #[error("[snapshots] is for `dirigo run`: `dirigo serve` takes no snapshots yet (remove the table)")]
    SnapshotsInService,
    #[error(
        "user actor `{function}` may run on lessees, which a snapshot cannot cover yet: set its \
         `max_lessees` to 0, or take no snapshots"
    )]
    SnapshotsWithLessees { function: String },
}

/// A handle that stops a running engine from another thread (sources end, in-flight messages
/// drain, then `run` returns).
#[derive(Clone, Debug, Default)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    signals: Arc<std::sync::Mutex<Vec<Arc<ShardSignal>>>>,
}

impl StopHandle {
    /// The shards' signal slots of the engine this handle stops.
    pub(crate) fn set_signals(&self, signals: Vec<Arc<ShardSignal>>) {
        *self.signals.lock().expect("stop handle") = signals;
    }

    /// The flag the shards read.
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// Whether a stop was asked.
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Ring every shard's doorbell (a parked shard wakes and re-checks its work).
    pub(crate) fn ring_all(&self) {
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

impl From<crate::snapshot::ResumeError> for EngineError {
    fn from(e: crate::snapshot::ResumeError) -> Self {
        EngineError::Resume(Box::new(e))
    }
}

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
    on_progress: impl FnMut(&Progress),
) -> Result<Summary, EngineError>
where
    P: Policy + Clone + Send,
{
    run_node(plan, settings, policy, stop, on_progress, None)
}

/// Run one node of `cluster` (None: a single node, every shard local): only this node's shards
/// run here, and mailboxes to other nodes' shards cross the cluster's links. The summary counts
/// this node's shards. Returns once this node's shards have finished, its links have delivered
/// everything and every peer has said goodbye.
pub fn run_node<P>(
    plan: Plan,
    settings: &EngineSettings,
    policy: P,
    stop: StopHandle,
    mut on_progress: impl FnMut(&Progress),
    cluster: Option<dirigo_net::link::ClusterSpec>,
) -> Result<Summary, EngineError>
where
    P: Policy + Clone + Send,
{
    plan.validate()?;
    if let Some(c) = &cluster {
        if c.shards() != plan.shards {
            return Err(crate::plan::PlanError::ClusterShards { plan: plan.shards, cluster: c.shards() }.into());
        }
    }
    if settings.snapshots.is_some() {
        // A user actor's lessees emit output on their own shard's channels, which a snapshot
        // barrier from that shard may overtake: not covered yet (a window's lessees only fold).
        for fp in plan.functions.iter().filter(|f| f.max_lessees > 0 && !f.is_sink) {
            let cx = crate::plan::InstanceCx { shard: 0, shards: plan.shards, instance: 0, parallelism: 1 };
            if matches!((fp.factory)(cx), crate::instance::OperatorInstance::Actor(_)) {
                return Err(EngineError::SnapshotsWithLessees { function: fp.name.clone() });
            }
        }
    }
    // With snapshots, files start over or are brought back to the snapshot (`driver::resume`).
    for (path, first) in plan.files.iter().filter(|_| settings.snapshots.is_none()) {
        let fail = |source| EngineError::SinkFile { path: path.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        std::fs::write(path, first).map_err(fail)?;
    }
    let n = plan.shards;
    // The clock's first read calibrates the TSC (about 0.6 ms here): do it now, not on the first
    // shard to read it, which would hold every shard's first turn until it is done.
    dirigo_net::clock::now_ns();
    let begun = Instant::now();
    let placement = Arc::new(PlacementTable::new(&plan, settings.key_groups));
    // A cluster's node keeps its snapshots in a directory of its own.
    let snapshot_settings = settings.snapshots.clone().map(|mut s| {
        if let Some(c) = &cluster {
            s.dir = s.dir.join(&c.nodes[c.me].id);
            s.keep = s.keep.max(2);
        }
        s
    });
    let (signals, doorbells): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| {
            let (s, d) = ShardSignal::new(plan.apps.len());
            (Arc::new(s), d)
        })
        .unzip();
    let local = cluster.as_ref().map_or(0..n, |c| c.local());
    // A shard is given up only on a single node (a peer would wait for it forever).
    let stall_stop = if cluster.is_some() { Duration::ZERO } else { settings.stall_stop };
    *stop.signals.lock().expect("stop handle") = signals[local.clone()].to_vec();
    // On a cluster with snapshots, each node says which snapshots it has as it joins, and all
    // resume from the newest they all have.
    let (mesh, transport, restore_from) = match cluster {
        None => {
            let newest = match &snapshot_settings {
                Some(s) => crate::snapshot::driver::node_snapshots(s)?.0.last().copied(),
                None => None,
            };
            (Mesh::new(&signals, settings.mailbox_batches), None, newest)
        }
        Some(spec) => {
            let mut have = Vec::new();
            if let Some(s) = &snapshot_settings {
                let (complete, finished) = crate::snapshot::driver::node_snapshots(s)?;
                if let Some(epoch) = finished {
                    let dir = s.dir.clone();
                    return Err(crate::snapshot::ResumeError::Finished { epoch, dir }.into());
                }
                have = complete;
            }
            let (mesh, peers) = dirigo_net::link::node_mesh(&spec, &signals, plan.apps.len());
            let limits =
                dirigo_net::link::wire::Limits { apps: plan.apps.len() as u16, functions: plan.functions.len() as u16 };
            let transport = dirigo_net::link::Transport::join(spec, peers, limits, have.clone())?;
            let agreed = crate::snapshot::driver::agreed(&transport.startup_values(&have));
            (mesh, Some(transport), agreed)
        }
    };
    let restore = match &snapshot_settings {
        Some(s) => crate::snapshot::driver::resume_at(s, &plan, &placement, local.clone(), restore_from)?,
        None => None,
    };
    let resumed = restore.as_ref().map_or(0, |r| r.epoch);
    plan.resume_epoch.store(resumed, std::sync::atomic::Ordering::Relaxed);
    let plan = Arc::new(plan);
    let signals = Arc::new(signals);
    let (tx, rx) = flume::unbounded();
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let failed_apps: Arc<Vec<AtomicBool>> = Arc::new(plan.apps.iter().map(|_| AtomicBool::new(false)).collect());
    let failed = failed_apps.clone();
    let (mut driver, snapshots) = match &snapshot_settings {
        Some(s) => {
            let (mut d, c) =
                crate::snapshot::driver::Driver::new(s, plan.clone(), placement.clone(), local.clone(), resumed)
                    .map_err(EngineError::SnapshotWriter)?;
            if let Some(t) = &transport {
                d.join_cluster(t.controls(), s);
            }
            (Some(d), Some(c))
        }
        None => (None, None),
    };
    let shards = Shards {
        local: local.clone(),
        signals,
        doorbells,
        mesh,
        reports: tx,
        placement,
        failed_apps,
        control: None,
        snapshots,
        restore,
    };
    let (dead_tx, dead_rx) = flume::unbounded();
    // The controller's tallies are made before the shards start: their latency histograms are
    // ~220 KB each to zero (0.25 ms of page faults each on a 2-vCPU VM), which would otherwise
    // take a CPU from a shard that is already running, and hold up its own page faults behind
    // the mmap lock.
    let tallies = Tallies::new(plan.apps.len());
    // Likewise the figures each shard's first report takes in place of its own (one set per
    // shard and app; later ones come back from the reports folded in).
    crate::metrics::stock_recycled(local.len() * plan.apps.len());
    let mut handles = spawn_shards(&plan, settings, policy, &stop, shards, &dead_tx)?;
    let failure = || transport.as_ref().and_then(|t| t.failure());
    let watch = Watch { failure: &failure, dead: &dead_rx, failed: &failed, stall_stop };
    let c = match collect(
        &plan,
        settings,
        &rx,
        local.clone(),
        &stop,
        started,
        &mut on_progress,
        &watch,
        driver.as_mut(),
        tallies,
    ) {
        Err(EngineError::ShardFailed { shard, reason }) => {
            // A shard died (it panicked): the others may wait for it forever. Stop the sources,
            // take the dead shard's reason from its thread, and fail the run now; the other
            // shards' threads are left to end with the process.
            stop.stop();
            let reason = match handles.swap_remove(shard - local.start).join() {
                Err(e) => format!("{reason}: {e}"),
                Ok(()) => reason,
            };
            return Err(EngineError::ShardFailed { shard, reason });
        }
        other => other?,
    };
    for (i, h) in handles.into_iter().enumerate() {
        let shard = local.start + i;
        if c.given_up.contains(&shard) {
            continue; // its thread is stuck in user code: left to end with the process
        }
        h.join().map_err(|e| EngineError::ShardFailed { shard, reason: e.to_string() })?;
    }
    // Every source ran to its end and no app failed: the last snapshot says the run finished,
    // and all the output is committed. Stopped early: the run resumes from the last snapshot.
    // On a cluster, the nodes settle that together before they say goodbye.
    let finished = !stop.is_stopped() && c.failures.is_empty();
    let mut snapshots = match (driver, &transport) {
        (Some(d), Some(_)) => Some(d.finish_cluster(finished, &|| stop.ring_all())?),
        (Some(d), None) => Some(d.finish(finished)),
        (None, _) => None,
    };
    if let Some(t) = transport {
        t.finish()?;
    }
    if let (Some(s), Some(at)) = (snapshots.as_mut(), c.all_up_at) {
        s.start_ms = at.duration_since(begun).as_secs_f64() * 1e3;
    }
    let wall = started.elapsed();
    // The run proper: from the first shard ready to the last shard's last report.
    let run = match (c.first_up_at, c.last_report_at) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => wall,
    };
    let mut summary = Summary::new(&plan, &c.totals, &c.lessees, wall, run, cpu_seconds() - cpu0);
    summary.snapshots = snapshots;
    summary.add_tcp_sources(&plan, &c.tcp);
    summary.add_tcp_sinks(&plan);
    (summary.missed_wakeups, summary.lazy_wakeups, summary.io_wakeups) =
        (c.missed_wakeups, c.lazy_wakeups, c.io_wakeups);
    summary.shards = local.len();
    summary.shard_time = local.map(|s| ShardTime::of(s, &c.shard_ns[s], wall)).collect();
    summary.stalls = c.stalls;
    for (app, used) in c.shards_used.into_iter().enumerate() {
        summary.apps[app].moves = c.moves.iter().filter(|m| m.app as usize == app).count() as u64;
        summary.apps[app].shards_over_time = used;
    }
    summary.migrations = c.moves;
    summary.moves_refused = c.moves_refused;
    for f in c.failures {
        summary.apps[f.app as usize].failure = Some(f.to_string());
    }
    Ok(summary)
}

/// What the controller hands to the shards it spawns.
struct Shards {
    /// Global ids of the shards to run here.
    local: std::ops::Range<usize>,
    signals: Arc<Vec<Arc<ShardSignal>>>,
    doorbells: Vec<dirigo_net::signal::Doorbell>,
    mesh: Mesh,
    reports: flume::Sender<ShardReport>,
    /// The node's placement table, read by every shard.
    placement: Arc<PlacementTable>,
    /// Per app: it failed.
    failed_apps: Arc<Vec<AtomicBool>>,
    /// A served engine's control plane.
    control: Option<Arc<crate::control::ControlPlane>>,
    /// The node's snapshot coordinator, and the snapshot the run resumes from.
    snapshots: Option<Arc<crate::snapshot::SnapshotCoord>>,
    restore: Option<Arc<crate::snapshot::Restore>>,
}

fn spawn_shards<P: Policy + Clone + Send>(
    plan: &Arc<Plan>,
    settings: &EngineSettings,
    policy: P,
    stop: &StopHandle,
    shards: Shards,
    dead: &flume::Sender<usize>,
) -> Result<Vec<glommio::ExecutorJoinHandle<()>>, EngineError> {
    let local = shards.local;
    let cpus = ShardCpus::for_node(settings.pin, local.len(), local.start)?;
    let shard_settings = cpus.shard_settings(settings.shard);
    let mut handles = Vec::with_capacity(local.len());
    let parts = shards.mesh.outboxes.into_iter().zip(shards.mesh.inboxes).zip(shards.doorbells);
    for (i, ((outboxes, inboxes), doorbell)) in parts.enumerate().filter(|(i, _)| local.contains(i)) {
        let init = ShardInit {
            id: i as u16,
            local: local.start as u16..local.end as u16,
            plan: plan.clone(),
            outboxes,
            inboxes,
            signals: shards.signals.clone(),
            placement: shards.placement.clone(),
            failed_apps: shards.failed_apps.clone(),
            doorbell,
            policy: policy.clone(),
            settings: shard_settings,
            stop: stop.flag.clone(),
            reports: shards.reports.clone(),
            control: shards.control.clone(),
            snapshots: shards.snapshots.clone(),
            restore: shards.restore.clone(),
        };
        let h = shard_executor(cpus.placement(i - local.start, i)?, i, settings.preempt_timer)
            .spawn({
                let notice = DeathNotice { shard: i, tx: dead.clone() };
                move || async move {
                    let _notice = notice;
                    Shard::new(init).run().await
                }
            })
            .map_err(|e| EngineError::Spawn { shard: i, reason: e.to_string() })?;
        handles.push(h);
    }
    Ok(handles)
}

/// Where each shard's executor runs: pinned to one CPU each, or unbound. The machine's CPUs are
/// read once for all shards: glommio's `Placement::Fixed` reads the topology from sysfs twice
/// for each executor it builds, in the spawning thread (0.5-1.5 ms a shard on a 2-vCPU VM,
/// one shard after another).
pub(crate) enum ShardCpus {
    Pinned(CpuSet),
    Unbound,
}

impl ShardCpus {
    /// The CPUs of a node of `shards` shards: pinned when `pin` asks for it and there are no
    /// more shards than CPUs. `first`: the global id of the node's first shard (named in errors).
    pub(crate) fn for_node(pin: bool, shards: usize, first: usize) -> Result<Self, EngineError> {
        let cpus = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
        if !pin || shards > cpus {
            return Ok(ShardCpus::Unbound);
        }
        CpuSet::online()
            .map(ShardCpus::Pinned)
            .map_err(|e| EngineError::Spawn { shard: first, reason: format!("reading the machine's CPUs: {e}") })
    }

    /// `settings` for shards placed so. Unpinned shards share CPUs: a shard spinning for mail
    /// would hold a CPU that the shard with the work needs (glommio likewise ignores
    /// `spin_before_park` when unpinned), so they park at once.
    pub(crate) fn shard_settings(&self, mut settings: ShardSettings) -> ShardSettings {
        if matches!(self, ShardCpus::Unbound) {
            settings.spin = Duration::ZERO;
        }
        settings
    }

    /// The placement of shard `shard` (global id), pinned to CPU `cpu`.
    pub(crate) fn placement(&self, cpu: usize, shard: usize) -> Result<Placement, EngineError> {
        match self {
            ShardCpus::Unbound => Ok(Placement::Unbound),
            ShardCpus::Pinned(online) => {
                let one = online.clone().filter(|l| l.cpu == cpu);
                if one.is_empty() {
                    return Err(EngineError::Spawn { shard, reason: format!("CPU {cpu} is not online") });
                }
                Ok(Placement::Fenced(one))
            }
        }
    }
}

/// The executor of shard `i`'s thread. A shard does no storage I/O through glommio (its mail
/// goes through rings of its own, tcp through io_uring directly, files through std), so it
/// reserves the least I/O memory glommio allows (64 KiB) instead of its default 10 MiB: that
/// much less to map at start (a 1M-event NEXMark run spent 8-12 ms starting its shards), and
/// per shard, parked or not.
pub(crate) fn shard_executor(placement: Placement, i: usize, preempt_timer: Duration) -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(placement)
        .name(&format!("dirigo-shard-{i}"))
        .preempt_timer(preempt_timer)
        .io_memory(64 << 10)
}

/// Tells the controller that a shard's thread is unwinding from a panic (dropped during the
/// unwind), so the run fails at once instead of waiting for the shard's last report.
pub(crate) struct DeathNotice {
    shard: usize,
    tx: flume::Sender<usize>,
}

impl DeathNotice {
    pub(crate) fn new(shard: usize, tx: flume::Sender<usize>) -> Self {
        DeathNotice { shard, tx }
    }
}

impl Drop for DeathNotice {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.tx.send(self.shard);
        }
    }
}

/// One function's value per progress interval: `(seconds since start, value)`.
type Series = Vec<(f64, u64)>;

/// Key-group moves kept for the summary (a forced-migration test run makes many).
const MAX_MOVES_KEPT: usize = 100_000;

/// What the controller gathered from the shards' reports.
struct Collected {
    /// Per app.
    totals: Vec<AppStats>,
    /// Lessee slots per function per progress interval.
    lessees: Vec<Series>,
    missed_wakeups: u64,
    lazy_wakeups: u64,
    io_wakeups: u64,
    /// Per shard (global id): its totals over the run.
    shard_ns: Vec<ShardTotals>,
    /// Apps that failed, first failure each.
    failures: Vec<AppFailure>,
    /// Shards given up (a function held them past `stall_stop`).
    given_up: Vec<usize>,
    /// Functions that held their shard past the stall budget.
    stalls: Vec<Stall>,
    /// Per plan source: a tcp source's latest figures (None: not a tcp source run here).
    tcp: Vec<Option<dirigo_net::tcp::IngressCounts>>,
    /// Key groups moved, in the order the reports came, and moves refused.
    moves: Vec<crate::metrics::MoveEvent>,
    moves_refused: u64,
    /// Per app: the shards hosting it, each time that set changed (seconds since start).
    shards_used: Vec<Vec<(f64, Vec<u16>)>>,
    /// When every shard had sent its first report (built its instances, restored a snapshot).
    all_up_at: Option<Instant>,
    /// When the first shard reported (built and running), and when the last one sent its last
    /// report: the run without the engine's start and teardown.
    first_up_at: Option<Instant>,
    last_report_at: Option<Instant>,
}

/// What the controller watches besides the reports.
struct Watch<'a> {
    /// A link failure ends the run with an error.
    failure: &'a dyn Fn() -> Option<dirigo_net::link::LinkError>,
    /// A shard that died (it panicked) ends the run with an error.
    dead: &'a flume::Receiver<usize>,
    /// Per app: it failed (shared with the shards).
    failed: &'a [AtomicBool],
    /// A function holding its shard longer than this gets the shard given up (zero: never).
    stall_stop: Duration,
}

/// The controller's running totals per app, and those of the current progress interval.
struct Tallies {
    totals: Vec<AppStats>,
    interval: Vec<AppStats>,
}

impl Tallies {
    fn new(apps: usize) -> Self {
        Tallies {
            totals: (0..apps).map(|_| AppStats::new()).collect(),
            interval: (0..apps).map(|_| AppStats::new()).collect(),
        }
    }
}

/// Gather reports until every shard has sent its last one; report progress each interval.
#[allow(clippy::too_many_arguments)]
fn collect(
    plan: &Plan,
    settings: &EngineSettings,
    rx: &flume::Receiver<ShardReport>,
    local: std::ops::Range<usize>,
    stop: &StopHandle,
    started: Instant,
    on_progress: &mut impl FnMut(&Progress),
    watch: &Watch<'_>,
    mut snapshots: Option<&mut crate::snapshot::driver::Driver>,
    tallies: Tallies,
) -> Result<Collected, EngineError> {
    let napps = plan.apps.len();
    // Lessee slots per shard (global id) and function: the latest report's gauge, and the
    // interval's maximum.
    let nf = plan.functions.len();
    let mut gauge = vec![vec![0u64; nf]; plan.shards];
    let mut peak = vec![vec![0u64; nf]; plan.shards];
    let mut series: Vec<Series> = vec![Vec::new(); nf];
    let Tallies { mut totals, mut interval } = tallies;
    debug_assert!(totals.len() == napps && interval.len() == napps);
    let period = settings.shard.stats_interval;
    let mut next = started + period;
    let (mut remaining, local_start) = (local.len(), local.start);
    let (mut missed_wakeups, mut lazy_wakeups, mut io_wakeups) = (0, 0, 0);
    let mut shard_ns = vec![ShardTotals::default(); plan.shards];
    let mut failures: Vec<AppFailure> = Vec::new();
    let mut stalls = StallDetector::new(settings.stall_budget, watch.stall_stop);
    // Shards given up, and those whose last report came.
    let mut given_up: Vec<usize> = Vec::new();
    let mut ended = vec![false; plan.shards];
    // Shards that sent their first report (built, restored), and when the last one did.
    let mut up = vec![false; plan.shards];
    let mut all_up_at = None;
    let (mut first_up_at, mut last_report_at) = (None, None);
    let mut tcp = vec![None; plan.sources.len()];
    let mut last_ring = Instant::now();
    let (mut moves, mut moves_refused) = (Vec::new(), 0);
    // Per shard (global id), per app: the latest hosting gauge.
    let mut hosting = vec![vec![0u32; napps]; plan.shards];
    let mut shards_used: Vec<Vec<(f64, Vec<u16>)>> = vec![Vec::new(); napps];
    while remaining > 0 {
        if settings.run_for.is_some_and(|d| started.elapsed() >= d) {
            stop.stop();
        }
        if let Ok(shard) = watch.dead.try_recv() {
            return Err(EngineError::ShardFailed { shard, reason: "panicked".into() });
        }
        let mut wait = next.saturating_duration_since(Instant::now()).min(WATCHDOG).min(stalls.every());
        if let Some(d) = snapshots.as_deref() {
            wait = wait.min(d.wait());
        }
        // A shard given up says nothing more that counts (should its function return).
        if let Some(mut r) = rx.recv_timeout(wait).ok().filter(|r| !given_up.contains(&(r.shard as usize))) {
            ended[r.shard as usize] |= r.last;
            up[r.shard as usize] = true;
            let at = Instant::now();
            first_up_at.get_or_insert(at);
            if r.last {
                last_report_at = Some(at);
            }
            if all_up_at.is_none() && local.clone().all(|s| up[s]) {
                all_up_at = Some(at);
            }
            for (a, s) in r.apps.iter().enumerate() {
                totals[a].add(s);
                interval[a].add(s);
            }
            crate::metrics::recycle(std::mem::take(&mut r.apps));
            for (f, &n) in r.lessees.iter().enumerate() {
                gauge[r.shard as usize][f] = n;
                let p = &mut peak[r.shard as usize][f];
                *p = (*p).max(n);
            }
            remaining -= r.last as usize;
            shard_ns[r.shard as usize].add(&r);
            for f in r.failures {
                if !failures.iter().any(|g| g.app == f.app) {
                    failures.push(f);
                }
            }
            missed_wakeups += r.missed_wakeups;
            lazy_wakeups += r.lazy_wakeups;
            io_wakeups += r.io_wakeups;
            for &(source, counts) in &r.tcp_sources {
                tcp[source] = Some(counts);
            }
            moves_refused += r.moves_refused;
            if moves.len() < MAX_MOVES_KEPT {
                moves.extend(r.moves);
            }
            if hosting[r.shard as usize] != r.hosting {
                hosting[r.shard as usize] = r.hosting;
                let t = started.elapsed().as_secs_f64();
                for (app, used) in shards_used.iter_mut().enumerate() {
                    let on: Vec<u16> = (0..plan.shards).filter(|&s| hosting[s][app] > 0).map(|s| s as u16).collect();
                    if used.last().is_none_or(|(_, last)| *last != on) {
                        used.push((t, on));
                    }
                }
            }
        }
        let signals = stop.signals.lock().expect("stop handle");
        for (shard, f, held_ms) in stalls.check(plan, local_start, &signals).1 {
            given_up.push(shard);
            remaining -= usize::from(!ended[shard]);
            give_up(plan, shard, f, held_ms, &hosting[shard], watch.failed, &mut failures);
            signals[shard - local_start].abandon();
            signals.iter().for_each(|s| s.wake());
        }
        drop(signals);
        if let Some(d) = snapshots.as_deref_mut() {
            let out: Vec<usize> = local.clone().filter(|&s| ended[s] || given_up.contains(&s)).collect();
            d.step(&out, stop.is_stopped(), &|| stop.ring_all());
        }
        if last_ring.elapsed() >= WATCHDOG {
            if let Some(f) = (watch.failure)() {
                return Err(f.into());
            }
            stop.ring_all();
            last_ring = Instant::now();
        }
        if Instant::now() >= next {
            let elapsed = started.elapsed();
            let mut lessees = vec![0u64; napps];
            for (f, fs) in series.iter_mut().enumerate() {
                let n: u64 = peak.iter().map(|p| p[f]).sum();
                fs.push((elapsed.as_secs_f64(), n));
                lessees[plan.functions[f].app as usize] += n;
            }
            on_progress(&Progress::new(plan, &interval, &lessees, elapsed, period));
            interval.iter_mut().for_each(AppStats::reset);
            peak.clone_from(&gauge);
            next += period;
        }
    }
    // The last, partial interval: its lessee peak is a point of the series too (a run shorter
    // than one interval has no other; its peak would read as one shard's, not the node's).
    let elapsed = started.elapsed().as_secs_f64();
    for (f, fs) in series.iter_mut().enumerate() {
        if fs.last().is_none_or(|&(t, _)| t < elapsed) {
            fs.push((elapsed, peak.iter().map(|p| p[f]).sum()));
        }
    }
    let stalls = stalls.found;
    Ok(Collected {
        totals,
        lessees: series,
        missed_wakeups,
        lazy_wakeups,
        io_wakeups,
        shard_ns,
        tcp,
        failures,
        given_up,
        stalls,
        moves,
        moves_refused,
        shards_used,
        all_up_at,
        first_up_at,
        last_report_at,
    })
}

/// Fail the app of function `f`, which held shard `shard` for `held_ms`, and every app the
/// shard hosted (as it last reported): the shard is given up.
pub(crate) fn give_up(
    plan: &Plan,
    shard: usize,
    f: u16,
    held_ms: f64,
    hosting: &[u32],
    failed: &[AtomicBool],
    failures: &mut Vec<AppFailure>,
) {
    let fp = &plan.functions[f as usize];
    let stuck = fp.app as usize;
    tracing::error!(
        app = %plan.apps[stuck].name,
        function = %fp.name,
        shard,
        held_ms,
        "a function held its shard past stall_stop: its app is stopped and the shard given up"
    );
    let apps = std::iter::once(stuck).chain((0..hosting.len()).filter(|&a| hosting[a] > 0 && a != stuck));
    for app in apps {
        if failed[app].swap(true, Ordering::SeqCst) {
            continue;
        }
        let (cause, message) = if app == stuck {
            (FailureCause::Stuck, format!("one message ran for {held_ms:.0} ms and did not return"))
        } else {
            let stuck_app = &plan.apps[stuck].name;
            (
                FailureCause::ShardGivenUp,
                format!("it had work there, where `{}` of app `{stuck_app}` is stuck", fp.name),
            )
        };
        if let Some(i) = failures.iter().position(|x| x.app as usize == app) {
            failures.remove(i);
        }
        failures.push(AppFailure { app: app as u16, function: fp.name.clone(), shard: shard as u16, cause, message });
    }
}

/// Watches what each shard runs: a function that holds its shard past the budget is logged
/// (naming app, function and shard) and recorded, once per message; one that holds it past
/// `stall_stop` (when set) is named for giving the shard up, once per shard.
pub(crate) struct StallDetector {
    budget_us: u64,
    stop_us: u64,
    /// Shards named for giving up.
    stopped: Vec<usize>,
    /// The running word of each stall already reported, by shard.
    reported: std::collections::HashMap<usize, (u16, u64)>,
    found: Vec<Stall>,
}

impl StallDetector {
    pub(crate) fn new(budget: Duration, stop: Duration) -> Self {
        StallDetector {
            budget_us: budget.as_micros() as u64,
            stop_us: stop.as_micros() as u64,
            stopped: Vec::new(),
            reported: Default::default(),
            found: Vec::new(),
        }
    }

    /// How often to look: twice per budget.
    /// Drop the stalls kept so far (a long-running server counts them in its metrics).
    pub(crate) fn forget_found(&mut self) {
        self.found.clear();
    }

    pub(crate) fn every(&self) -> Duration {
        let budget = if self.stop_us > 0 { self.budget_us.min(self.stop_us) } else { self.budget_us };
        Duration::from_micros((budget / 2).max(1_000))
    }

    /// Look at the signals of this node's shards (global ids from `first`); returns the stalls
    /// found now, and the shards to give up now: (shard, function, held ms).
    pub(crate) fn check(
        &mut self,
        plan: &Plan,
        first: usize,
        signals: &[Arc<ShardSignal>],
    ) -> (Vec<Stall>, Vec<(usize, u16, f64)>) {
        let now_us = dirigo_net::clock::now_ns() / 1_000;
        let (mut stop, found_before) = (Vec::new(), self.found.len());
        for (i, s) in signals.iter().enumerate().map(|(i, s)| (first + i, s)) {
            let Some((f, since)) = s.running() else { continue };
            let held_us = now_us.saturating_sub(since);
            if self.stop_us > 0 && held_us > self.stop_us && !self.stopped.contains(&i) {
                self.stopped.push(i);
                stop.push((i, f, held_us as f64 / 1e3));
            }
            if held_us <= self.budget_us || self.reported.get(&i) == Some(&(f, since)) {
                continue;
            }
            self.reported.insert(i, (f, since));
            let fp = &plan.functions[f as usize];
            let app = plan.apps[fp.app as usize].name.clone();
            tracing::warn!(
                app = %app,
                function = %fp.name,
                shard = i,
                held_ms = held_us / 1_000,
                budget_ms = self.budget_us / 1_000,
                "a function holds its shard past the stall budget"
            );
            self.found.push(Stall { app, function: fp.name.clone(), shard: i, held_ms: held_us as f64 / 1e3 });
        }
        (self.found[found_before..].to_vec(), stop)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_pinned_to_a_cpu_that_is_not_online_is_refused_naming_both() {
        let cpus = ShardCpus::for_node(true, 1, 3).expect("the machine's CPUs");
        let err = cpus.placement(100_000, 7).expect_err("no such CPU").to_string();
        assert!(err.contains("shard 7") && err.contains("CPU 100000 is not online"), "{err}");
        assert!(matches!(cpus.placement(0, 0), Ok(Placement::Fenced(set)) if set.len() == 1));
        assert!(matches!(ShardCpus::for_node(false, 1, 0).unwrap().placement(5, 5), Ok(Placement::Unbound)));
        let many = ShardCpus::for_node(true, 100_000, 0).unwrap();
        assert!(matches!(many, ShardCpus::Unbound), "more shards than CPUs: unbound");
        assert_eq!(many.shard_settings(EngineSettings::default().shard).spin, Duration::ZERO);
    }
}
