//! A shard: one pinned glommio executor running one loop that owns every per-message decision.
//! Each turn it drains its mailboxes into the run queue, polls its sources (while the engine is
//! not backpressured), runs a budget of messages in the policy's order, and flushes its output
//! batches; with nothing to do it spins for the configured window, then parks until a sender
//! (or a tcp source's readiness waker, armed as it parks) rings its doorbell or its next timer
//! is due.

/// A `Router` for the output of `edges` with parent header `parent`, borrowing the shard's fields
/// one by one (so the operator table can stay borrowed beside it).
macro_rules! router {
    ($s:ident, $edges:expr, $parent:expr) => {{
        let parent: dirigo_actors::envelope::Header = $parent;
        super::router::Router {
            out: &mut $s.out,
            policy: &mut $s.policy,
            edges: $edges,
            parent,
            placement: &$s.placement,
            load: super::router::RouteLoad {
                delay_ns: &$s.peer_delay,
                cost_ns: &$s.cost_ns,
                cost_to_go_ns: &$s.cost_to_go_ns,
                now_ns: $s.now,
            },
            scale_up_signals: &mut $s.stats[parent.app as usize].scale_up_signals,
        }
    }};
}

/// The `SchedCx` the hooks see, at time `$now`, borrowing the shard's fields one by one.
macro_rules! sched_cx {
    ($s:ident, $now:expr) => {
        crate::policy::SchedCx {
            apps: &$s.plan.apps,
            fn_app: &$s.fn_app,
            cost_ns: &$s.cost_ns,
            cost_to_go_ns: &$s.cost_to_go_ns,
            now_ns: $now,
        }
    };
}

mod apply;
mod deploy;
mod dual_mode;
mod gone;
mod held;
mod inputs;
mod migrate;
pub mod outputs;
mod rebalance;
mod router;
mod snapshot;
mod sources;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dirigo_actors::ids::ShardId;
use dirigo_actors::record::Value;
use rkyv::util::AlignedVec;

use crate::instance::OperatorInstance;
use crate::metrics::{AppFailure, AppStats, FailureCause, ShardReport};
use crate::placement::PlacementTable;
use crate::plan::Plan;
use crate::policy::Policy;
use crate::runqueue::RunQueue;
use dirigo_net::clock::now_ns;
use dirigo_net::mailbox::{Inbox, Outbox};
use dirigo_net::signal::{Doorbell, ShardSignal};

use dual_mode::{Commands, LesseeSlot, LessorActor};
use held::Held;
use inputs::InputChannels;
use migrate::Migrations;
use outputs::Outputs;
use rebalance::Rebalance;
use sources::SourceRun;

/// Loop settings of a shard (from the `[engine]` config).
#[derive(Clone, Copy, Debug)]
pub struct ShardSettings {
    pub batch_size: usize,
    pub max_in_flight: u64,
    /// Share of an app's SLO: its sources admit an event only while, on every shard, the app's
    /// queued messages take less than this to run (past a batch of them): latency stays bounded
    /// at full load. 0 = by count only (`max_in_flight`).
    pub queue_budget: f64,
    pub spin: Duration,
    /// A shard spins when idle only while it hosts an app whose SLO is at most this; otherwise
    /// it parks at once (park by SLO).
    pub spin_slo: Duration,
    /// Share of its tightest SLO a parked shard lets due source events gather before it wakes to
    /// produce them (they are stamped with their schedule, so the wait counts as latency); 0 =
    /// wake for each.
    pub gather: f64,
    /// Shards of each node that spin instead of parking (the node's last ones).
    pub standby: usize,
    pub tick: Duration,
    /// Retire a lessee that was sent nothing for this long.
    pub lessee_idle: Duration,
    /// Move a random key group to a random shard every this many messages run (a test setting
    /// that exercises migration; 0 = off).
    pub migrate_every: u64,
    /// Spread hot key groups out and consolidate them when load falls (`shard::rebalance`).
    pub rebalance: bool,
    pub stats_interval: Duration,
}

/// Messages run per turn before the shard polls its mailboxes and flushes again.
const TURN_BUDGET: usize = 64;
/// Spinning after tight work continues while at least this share (per mille) of recent idle
/// periods ended within `spin`.
const SPIN_PAYS: u64 = 500;
/// A parked shard wakes at least this often. Mail always rings the doorbell; this bounds the
/// damage if a wake-up is lost anyway, and `missed_wakeups` counts every time it was needed.
const MAX_PARK: Duration = Duration::from_millis(200);
/// ... and this often while it hosts nothing (no app has an instance, source, key group or
/// lessee here): an idle server's shards cost a wake-up a second each.
const REST_MAX_PARK: Duration = Duration::from_secs(1);
/// A shard hosting apps whose SLOs allow it wakes on its own at least every `gather` of its
/// tightest SLO, when that is between these bounds (ns): senders of records that can wait
/// that long need not ring it (`ShardSignal::notify_by`). Tighter apps' shards are rung (or
/// spin); a shard that hosts nothing does not wake for mail it cannot get.
const MAIL_GATHER_MIN_NS: u64 = 1_000_000;
const MAIL_GATHER_MAX_NS: u64 = dirigo_net::signal::LAZY_WAIT_MAX_NS;
/// Assumed cost to the home shard of sending a forward, and of handling its answer, until
/// measured (ns).
const FORWARD_PRIOR_NS: u64 = 500;
/// One in this many messages is timed to estimate service costs.
const COST_SAMPLE: u64 = 16;

/// Everything a shard is built from; made by the controller, moved onto the shard's thread.
pub struct ShardInit<P> {
    pub id: ShardId,
    /// The shards of this node (global ids): lessees go only there, and the shards exit together.
    pub local: std::ops::Range<ShardId>,
    pub plan: Arc<Plan>,
    pub outboxes: Vec<Option<Outbox>>,
    pub inboxes: Vec<Option<Inbox>>,
    pub signals: Arc<Vec<Arc<ShardSignal>>>,
    /// The node's placement table: which shard holds each key group.
    pub placement: Arc<PlacementTable>,
    /// Per app: its user code panicked, and it stopped (every shard of the node reads it).
    pub failed_apps: Arc<Vec<AtomicBool>>,
    pub doorbell: Doorbell,
    pub policy: P,
    pub settings: ShardSettings,
    pub stop: Arc<AtomicBool>,
    pub reports: flume::Sender<ShardReport>,
    /// A served engine's control plane (`dirigo serve`): apps deploy and undeploy at run time.
    pub control: Option<Arc<crate::control::ControlPlane>>,
    /// The node's snapshot coordinator (None: the run takes no snapshots).
    pub snapshots: Option<Arc<crate::snapshot::SnapshotCoord>>,
    /// The snapshot the run resumes from.
    pub restore: Option<Arc<crate::snapshot::Restore>>,
}

/// A running shard.
pub struct Shard<P: Policy> {
    id: ShardId,
    /// The shards of this node (global ids).
    local: std::ops::Range<ShardId>,
    plan: Arc<Plan>,
    out: Outputs,
    inboxes: Vec<Option<Inbox>>,
    held: Held,
    runq: RunQueue,
    ops: Vec<Option<OperatorInstance>>,
    /// Lessors of the dual-mode actors homed here, by function (their operator lives inside).
    actors: Vec<Option<Box<LessorActor>>>,
    /// Lessee slots this shard lends to other shards' lessors.
    lessees: Vec<Option<LesseeSlot>>,
    /// Scratch outbox of the actor machines.
    cmds: Commands,
    /// Scratch: an actor's queued messages handed back to the run queue.
    taken: Vec<dual_mode::Pending>,
    /// Per app: activations hosted here (key groups held, instances of its start shards, source
    /// instances and lessee slots), and since when the count last changed (shard-seconds).
    hosting: Vec<u32>,
    /// Per function: what its instance here counts in `hosting` (its groups held, or 1).
    counted: Vec<u32>,
    /// Key groups held here, and the moves under way.
    mig: Migrations,
    /// Spreading and consolidation.
    rb: Rebalance,
    /// Busy time since the start (ns), for the rebalancing period's busy share.
    busy_total_ns: u64,
    /// When this shard last ran work of an app whose SLO makes it spin (`spin_slo`): it spins
    /// only within `spin` of that, and parks at once after other apps' work.
    last_tight_ns: u64,
    /// Per mille of recent idle periods after tight work in which more tight work came within
    /// `spin`: spinning pays only when it usually does; otherwise the shard parks at once, and a
    /// tight app that sends rarely pays an OS wake-up instead of a core (adaptive spinning). An
    /// exponential average, weight 1/8.
    spin_pays: u64,
    /// The start of an idle period that followed tight work, until the next tight work or
    /// `spin` has passed (one sample of `spin_pays`).
    tight_idle: Option<u64>,
    /// Scratch: which entries of the batch being received were not queued (see `divert`).
    diverted: Vec<bool>,
    /// The hosted apps changed: the idle behaviour (spin, gather) is recomputed.
    hosting_changed: bool,
    /// `hosting` changed since the last report (the controller tracks where apps run).
    hosting_changed_since_report: bool,
    hosting_since: Vec<u64>,
    /// Per function: lessee slots open here, and the most since the last report.
    lessees_here: Vec<u64>,
    lessees_max: Vec<u64>,
    /// Per function: time its lessor spent Blocked and Critical since the last report (ns).
    fn_blocked_ns: Vec<u64>,
    fn_critical_ns: Vec<u64>,
    /// This shard told the others it is done (see `may_exit`).
    closing: bool,
    /// Per shard (global id): it was given up (see `gone`); and whether any was.
    gone: Vec<bool>,
    any_gone: bool,
    /// Per app: torn down here (it failed once a shard was given up).
    torn: Vec<bool>,
    insts: Vec<Option<InputChannels>>,
    live: usize,
    sources: Vec<SourceRun>,
    policy: P,
    fn_app: Vec<u16>,
    cost_ns: Vec<u64>,
    cost_to_go_ns: Vec<u64>,
    /// Per actor function: what sending a forward and handling its answer cost this shard
    /// (EWMAs, ns).
    forward_ns: Vec<u64>,
    answer_ns: Vec<u64>,
    stats: Vec<AppStats>,
    busy_ns: u64,
    parked_ns: u64,
    signals: Arc<Vec<Arc<ShardSignal>>>,
    /// The node's placement table.
    placement: Arc<PlacementTable>,
    /// Per app: it failed (see [`ShardInit::failed_apps`]).
    failed_apps: Arc<Vec<AtomicBool>>,
    /// Failures seen here since the last report.
    failures: Vec<AppFailure>,
    doorbell: Doorbell,
    settings: ShardSettings,
    stop: Arc<AtomicBool>,
    reports: flume::Sender<ShardReport>,
    arrival: u64,
    values: Vec<Value>,
    bytes: AlignedVec,
    expected_seq: Vec<u32>,
    /// Late drops of each function already reported.
    late_seen: Vec<u64>,
    /// Time of the current turn.
    now: u64,
    /// Expected delay of every shard, read from the signal slots once per turn.
    peer_delay: Vec<u64>,
    /// Scratch: messages queued per app on this shard.
    app_queued: Vec<u64>,
    /// Per app: the time its queued messages here take to run (ns), as published.
    app_queued_ns: Vec<u64>,
    /// Messages run so far, and the shard's busy time per message run (ns, an average over
    /// recent ticks: a function's own cost leaves out the loop's share, routing, batching).
    msgs_run: u64,
    msg_ns: u64,
    msg_mark: (u64, u64),
    /// Parks that ended on their timeout with work already pending (a lost wake-up).
    missed_wakeups: u64,
    /// Parks that ended on their own timeout with mail whose sender chose not to ring.
    lazy_wakeups: u64,
    /// Runtime deploy and undeploy (`dirigo serve`).
    deploy: deploy::Deploy,
    /// Snapshot barriers and what waits behind them.
    snap: snapshot::Snap,
}

impl<P: Policy> Shard<P> {
    /// Instantiate this shard's operators and sources from the plan.
    pub fn new(init: ShardInit<P>) -> Self {
        let plan = init.plan.clone();
        let n = plan.shards;
        let id = init.id;
        let mut ops = Vec::new();
        let mut actors = Vec::new();
        let mut insts = Vec::new();
        let mut hosting = vec![0u32; plan.apps.len()];
        let mut counted = vec![0u32; plan.functions.len()];
        let seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(u64::from(id) + 1);
        let mut mig = Migrations::new(plan.functions.len(), init.settings.migrate_every, seed);
        let mut rb = Rebalance::new(plan.functions.len(), now_ns());
        // Groups move only within a node that is the whole plan (see `migrate`).
        let single_node = init.local.start == 0 && init.local.end as usize == n;
        for (f, fp) in plan.functions.iter().enumerate() {
            let b = deploy::build_instance(&plan, f, id);
            if b.inst.is_some() {
                let (c, held) = migrate::initial_groups(&plan, &init.placement, f, id);
                counted[f] = c;
                if let Some(held) = held {
                    let movable =
                        b.op.as_ref().map_or_else(|| b.actor.as_ref().is_some_and(|a| a.migrates()), |o| o.migrates());
                    mig.init(f, held, movable && single_node);
                    rb.track(f, init.placement.groups());
                }
                hosting[fp.app as usize] += counted[f];
            }
            ops.push(b.op);
            actors.push(b.actor);
            insts.push(b.inst);
        }
        let live = insts.iter().flatten().count();
        let sources = sources::instantiate(&plan, id, &init.signals[id as usize]);
        let nf = plan.functions.len();
        let mut shard = Shard {
            id,
            local: init.local,
            out: Outputs::new(id, init.outboxes, init.settings.batch_size, plan.apps.len()),
            inboxes: init.inboxes,
            held: Held::default(),
            runq: RunQueue::new(nf),
            ops,
            actors,
            lessees: Vec::new(),
            cmds: Vec::new(),
            taken: Vec::new(),
            hosting_since: vec![now_ns(); plan.apps.len()],
            hosting,
            counted,
            mig,
            rb,
            busy_total_ns: 0,
            diverted: Vec::new(),
            last_tight_ns: 0,
            spin_pays: 1000,
            tight_idle: None,
            hosting_changed: false,
            hosting_changed_since_report: false,
            lessees_here: vec![0; nf],
            lessees_max: vec![0; nf],
            fn_blocked_ns: vec![0; nf],
            fn_critical_ns: vec![0; nf],
            closing: false,
            gone: vec![false; n],
            any_gone: false,
            torn: vec![false; plan.apps.len()],
            insts,
            live,
            sources,
            policy: init.policy,
            fn_app: plan.functions.iter().map(|f| f.app).collect(),
            cost_ns: vec![1_000; nf],
            cost_to_go_ns: vec![1_000; nf],
            // A prior until measured (a typical forward and answer on a 2-vCPU VM): a function
            // cheaper than twice this never forwards, and then never measures it.
            forward_ns: vec![FORWARD_PRIOR_NS; nf],
            answer_ns: vec![FORWARD_PRIOR_NS; nf],
            stats: plan.apps.iter().map(|_| AppStats::new()).collect(),
            busy_ns: 0,
            parked_ns: 0,
            signals: init.signals,
            placement: init.placement,
            failed_apps: init.failed_apps,
            failures: Vec::new(),
            doorbell: init.doorbell,
            settings: init.settings,
            stop: init.stop,
            reports: init.reports,
            arrival: 0,
            values: Vec::new(),
            bytes: AlignedVec::new(),
            expected_seq: vec![0; n],
            late_seen: vec![0; nf],
            now: 0,
            peer_delay: vec![0; n],
            app_queued: vec![0; plan.apps.len()],
            app_queued_ns: vec![0; plan.apps.len()],
            msgs_run: 0,
            msg_ns: 0,
            msg_mark: (0, 0),
            missed_wakeups: 0,
            lazy_wakeups: 0,
            deploy: deploy::Deploy::new(init.control, plan.apps.len()),
            snap: snapshot::Snap::new(init.snapshots, nf, init.restore.as_ref().map_or(0, |r| r.epoch)),
            plan,
        };
        if let Some(r) = &init.restore {
            shard.restore(r);
        }
        shard
    }

    /// Everything this shard runs has ended and all its output has left.
    fn finished(&self) -> bool {
        self.live == 0
            && self.sources.iter().all(|s| s.done)
            && self.runq.is_empty()
            && self.out.is_drained()
            && self.actors_done()
            && self.mig.idle()
            && self.deploy.may_finish(&self.stop)
    }

    /// A finished shard may exit once every shard of its node is finished: until then another
    /// shard's lessor may still lease a slot here (lessees stay on their lessor's node). The first time it is finished it says so and wakes
    /// the others (a shard waiting for the last one to finish is parked).
    fn may_exit(&mut self) -> bool {
        let local = &self.signals[self.local.start as usize..self.local.end as usize];
        if !self.closing {
            self.closing = true;
            self.signals[self.id as usize].set_closing();
            local.iter().for_each(|s| s.wake());
        }
        local.iter().all(|s| s.is_closing() || s.is_gone()) && !self.has_pending_work()
    }

    /// Run until every instance on this shard has ended.
    ///
    /// The loop never yields to glommio's scheduler and parks by blocking its thread on the
    /// doorbell (with a timeout), not in glommio's reactor: glommio 0.9 can park an executor
    /// with a runnable task and sleep in `io_uring_wait_cqes` with no timeout, which neither its
    /// timers nor a foreign wake-up then end (FACTS.md; seen here under heavy CPU load, e.g.
    /// `docs/why-cluster-links.md`). The shard's thread runs this one task, and everything that
    /// wakes it (mail, the tcp readiness thread, the controller) rings the doorbell.
    pub async fn run(mut self) {
        let start = now_ns();
        let tick_ns = self.settings.tick.as_nanos() as u64;
        // Report ten times per progress interval, so a progress line lags by at most a tenth.
        let stats_ns = (self.settings.stats_interval.as_nanos() as u64 / 10).max(1_000_000);
        let spin_setting = self.settings.spin.as_nanos() as u64;
        let (mut next_tick, mut next_stats) = (start + tick_ns, start + stats_ns);
        let mut idle_since: Option<u64> = None;
        // A standby shard (the node's last `standby` ones) spins when idle, never parks, while
        // the node runs an app that needs it (see `needs_standby`); not when unpinned (`spin` is
        // 0 then), where it would take the CPU of a shard with work.
        let rank = (self.local.end - 1 - self.id) as usize;
        let standby_rank = spin_setting > 0 && rank < self.settings.standby;
        let mut standby = standby_rank && self.needs_standby();
        // Park by SLO: spin only for an app that cannot afford an OS wake-up, and let due source
        // events gather for a share of the tightest SLO here before waking for them.
        // Recomputed when the hosted apps change (a key group of another app arrived or left,
        // an app was deployed).
        let (mut spin_ns, mut gather_ns) = self.idle_behaviour(spin_setting);
        // The first report says the shard is up (a served engine is ready once every shard sent
        // one).
        self.report(false);
        loop {
            if std::mem::take(&mut self.hosting_changed) {
                (spin_ns, gather_ns) = self.idle_behaviour(spin_setting);
                standby = standby_rank && self.needs_standby();
            }
            let t0 = now_ns();
            let progress = self.turn(t0);
            if self.given_up() {
                return; // its function returned after all; the others went on without it
            }
            if self.deploy.take_replanned() {
                (spin_ns, gather_ns) = self.idle_behaviour(spin_setting);
                standby = standby_rank && self.needs_standby();
            }
            let now = now_ns();
            // Adaptive spinning: did the tight work that followed an idle start come within
            // `spin` of it?
            if let Some(start) = self.tight_idle {
                if self.last_tight_ns > start || now.saturating_sub(start) > spin_ns {
                    let caught = self.last_tight_ns > start && self.last_tight_ns - start <= spin_ns;
                    self.spin_pays = (self.spin_pays * 7 + if caught { 1000 } else { 0 }) / 8;
                    self.tight_idle = None;
                }
            }
            if now >= next_tick {
                self.tick(now);
                next_tick = now + tick_ns;
            }
            if now >= next_stats {
                // Apps end and fail on other shards too: look again now and then.
                standby = standby_rank && self.needs_standby();
                if self.has_news() {
                    self.report(false);
                }
                next_stats = now + stats_ns;
            }
            if self.finished() && self.may_exit() {
                break;
            }
            if progress {
                self.busy_ns += now - t0;
                self.busy_total_ns += now - t0;
                idle_since = None;
                continue;
            }
            self.policy.on_idle();
            let since = *idle_since.get_or_insert(now);
            if since == now
                && spin_ns > 0
                && self.tight_idle.is_none()
                && now.saturating_sub(self.last_tight_ns) < spin_ns
            {
                self.tight_idle = Some(now);
            }
            // Ticks only matter while there is work: a parked shard wakes for mail, for its
            // next due source event, or to report.
            let report_at = if self.has_news() { next_stats } else { u64::MAX };
            // A lessor with lessees keeps ticking: its policy retires them when they go idle.
            let tick_at = if self.lends_out() { next_tick } else { u64::MAX };
            // A shard holding groups that came to spread load wakes to consider giving them back.
            let tick_at = tick_at.min(self.rebalance_due());
            let mail_at =
                if (MAIL_GATHER_MIN_NS..=MAIL_GATHER_MAX_NS).contains(&gather_ns) { now + gather_ns } else { u64::MAX };
            let wake_at = report_at.min(tick_at).min(self.next_source_due(start, gather_ns)).min(mail_at);
            // Park by SLO, per message: spin after a tight app's work only (a busy shard shared
            // with loose apps would otherwise never park).
            let spin_for_tight = now - since < spin_ns
                && now.saturating_sub(self.last_tight_ns) < spin_ns
                && self.spin_pays >= SPIN_PAYS;
            if spin_for_tight || wake_at <= now || self.out.staged() > 0 || standby {
                if spin_ns == 0 {
                    // Unpinned: the shard this one waits for may need this CPU.
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            // The idle clock keeps running across the park: a wake-up that finds nothing to do
            // (a timer, the controller's watchdog ring) parks again without spinning; progress
            // resets it.
            self.park(wake_at.saturating_sub(now));
        }
        self.flush_sinks();
        self.seal_at_exit();
        self.report(true);
    }

    /// Whether app `app` failed (its user code panicked): its sources stop and its messages are
    /// dropped unapplied, while its watermarks and ends still flow so every shard finishes.
    #[inline]
    fn app_failed(&self, app: usize) -> bool {
        self.failed_apps[app].load(Ordering::Relaxed)
    }

    /// After user code of function `f` ran: if it panicked, fail its app (once per node; logged
    /// and reported with the app, function and message).
    #[inline]
    fn check_user_code(&mut self, f: usize) {
        if let Some(message) = dirigo_actors::function::take_failure() {
            self.fail_app(f, FailureCause::Panicked, message);
        }
    }

    #[cold]
    fn fail_app(&mut self, f: usize, cause: FailureCause, message: String) {
        let app = self.fn_app[f];
        if self.failed_apps[app as usize].swap(true, Ordering::SeqCst) {
            return; // already failed (here or on another shard)
        }
        let function = self.plan.functions[f].name.clone();
        let name = &self.plan.apps[app as usize].name;
        let _span = tracing::error_span!("app_failure", app = %name, function = %function, shard = self.id).entered();
        tracing::error!(app = %name, function = %function, shard = self.id, ?cause, "app fails: {message}");
        self.failures.push(AppFailure { app, function, shard: self.id, cause, message });
    }

    /// Work of `app` ran here now: if its SLO is one a shard spins for, spinning may follow.
    #[inline]
    pub(super) fn touch(&mut self, app: usize) {
        if self.plan.apps[app].slo_ns <= self.settings.spin_slo.as_nanos() as u64 {
            self.last_tight_ns = self.now;
        }
    }

    /// How long to spin when idle, and how long to let due source events gather, for the apps
    /// hosted here now.
    fn idle_behaviour(&self, spin_setting: u64) -> (u64, u64) {
        let tightest_slo = self.tightest_slo_ns();
        let spin_ns = if tightest_slo <= self.settings.spin_slo.as_nanos() as u64 { spin_setting } else { 0 };
        let gather_ns = (tightest_slo as f64 * self.settings.gather).min(u64::MAX as f64) as u64;
        (spin_ns, gather_ns)
    }

    /// Whether the node runs an app that needs a spinning spare shard: one whose SLO cannot
    /// afford an OS wake-up (at most `spin_slo`) and which can scale up by leasing (a function
    /// with lessees allowed). A lease to a parked shard waits for its wake-up (hundreds of
    /// microseconds at p99 here); to a spinning one, tens.
    fn needs_standby(&self) -> bool {
        let tight = self.settings.spin_slo.as_nanos() as u64;
        let leases = |a: usize| self.plan.functions.iter().any(|f| f.app as usize == a && f.max_lessees > 0);
        (0..self.plan.apps.len()).any(|a| {
            self.plan.apps[a].slo_ns <= tight
                && self.deploy.started(a)
                && !self.deploy.stopping(a)
                && !self.app_failed(a)
                && leases(a)
        })
    }

    /// The tightest SLO among the apps whose sources or function instances run here
    /// (`u64::MAX` when it hosts none).
    fn tightest_slo_ns(&self) -> u64 {
        let apps = self.plan.apps.iter().enumerate();
        let hosted =
            apps.filter(|(a, _)| self.hosting[*a] > 0 || self.sources.iter().any(|s| !s.done && self.app_of(s) == *a));
        hosted.map(|(_, app)| app.slo_ns).min().unwrap_or(u64::MAX)
    }

    /// One turn of the loop; true if anything happened.
    fn turn(&mut self, now: u64) -> bool {
        self.control_turn(now);
        self.snapshot_turn();
        self.now = now;
        for (d, s) in self.peer_delay.iter_mut().zip(self.signals.iter()) {
            *d = s.delay_ns();
        }
        self.out.reclaim();
        let mut progress = self.drain_mail();
        progress |= self.poll_sources(now);
        let ran = self.run_budget(TURN_BUDGET, now);
        self.msgs_run += ran as u64;
        progress |= ran > 0;
        self.force_moves(ran);
        progress |= self.out.flush();
        self.publish_load();
        progress
    }

    /// Backpressure, per app: a source pauses while its app has too much queued on any shard,
    /// or too much output staged on this one. A heavy app's backlog never pauses another app's
    /// sources.
    fn may_ingest(&self, app: usize) -> bool {
        let max = self.settings.max_in_flight;
        if self.out.staged_of(app) as u64 >= max {
            return false;
        }
        // Admission against time, not buffers: a batch of messages always (throughput), then
        // only while the queued work of the app on each shard fits its share of the SLO.
        let floor = self.settings.batch_size as u64;
        let budget = (self.plan.apps[app].slo_ns as f64 * self.settings.queue_budget) as u64;
        let timed = self.settings.queue_budget > 0.0;
        self.signals.iter().all(|s| {
            let n = s.queued_of(app);
            n < max && (!timed || n < floor || s.queued_ns_of(app) < budget)
        })
    }

    fn publish_load(&mut self) {
        let mut queued = (self.runq.len() + self.out.staged()) as u64;
        let mut delay = 0;
        self.app_queued.iter_mut().for_each(|q| *q = 0);
        self.app_queued_ns.iter_mut().for_each(|q| *q = 0);
        for &f in self.runq.active() {
            let n = self.runq.len_of(f) as u64;
            let app = self.fn_app[f as usize] as usize;
            delay += n * self.cost_ns[f as usize];
            self.app_queued[app] += n;
            self.app_queued_ns[app] += n * self.cost_ns[f as usize].max(self.msg_ns);
        }
        // Actor work waits inside the machines (the run queue holds one token per activation).
        let (cost, fn_app, msg_ns) = (&self.cost_ns, &self.fn_app, self.msg_ns);
        let (app_queued, app_queued_ns) = (&mut self.app_queued, &mut self.app_queued_ns);
        dual_mode::backlog(&self.actors, &self.lessees, |f, n| {
            queued += n;
            delay += n * cost[f];
            app_queued[fn_app[f] as usize] += n;
            app_queued_ns[fn_app[f] as usize] += n * cost[f].max(msg_ns);
        });
        let sig = &self.signals[self.id as usize];
        sig.publish(queued, delay);
        for (app, (&n, &ns)) in self.app_queued.iter().zip(&self.app_queued_ns).enumerate() {
            sig.publish_app(app, n, ns);
        }
    }

    /// Work that needs no wake-up to proceed: mail waiting, or output staged behind a full ring
    /// (the receiver is draining it and will not ring back, so a shard holding staged output
    /// must keep turning, never park).
    fn has_pending_work(&self) -> bool {
        self.out.staged() > 0 || !self.out.local.is_empty() || self.inboxes.iter().flatten().any(|i| i.has_mail())
    }

    /// Park until a sender rings the doorbell or `timeout` passes: blocks the thread (see `run`).
    fn park(&mut self, timeout_ns: u64) {
        let sig = self.signals[self.id as usize].clone();
        let max = if self.hosting.iter().all(|&h| h == 0) { REST_MAX_PARK } else { MAX_PARK };
        let timeout = Duration::from_nanos(timeout_ns).min(max);
        sig.will_wake_by(now_ns().saturating_add(timeout.as_nanos() as u64));
        let skipped = sig.skipped();
        sig.going_to_sleep();
        // Armed after the flag and before the re-check: input that arrives from here on rings.
        let armed = self.arm_sources();
        if !armed
            || self.has_pending_work()
            || self.stop.load(Ordering::Relaxed) && self.sources.iter().any(|s| !s.done)
        {
            sig.awake();
            return;
        }
        let t0 = now_ns();
        let rung = self.doorbell.recv_timeout(timeout).is_ok();
        sig.awake();
        // Mail waiting after a timeout is a lost wake-up only if nobody rang and no sender chose
        // not to (its mail could wait for this wake-up): a ring that came as the timeout fired
        // left its token (taken here, so the next park does not end at once).
        if !rung && self.has_pending_work() && self.doorbell.try_recv().is_err() {
            if sig.skipped() == skipped {
                self.missed_wakeups += 1;
                tracing::debug!(shard = self.id, "woke on the park timeout with mail waiting: a wake-up was lost");
            } else {
                self.lazy_wakeups += 1;
            }
        }
        self.parked_ns += now_ns() - t0;
    }

    /// Recompute cost-to-go (functions are in topological order) and tick the policy.
    fn tick(&mut self, now: u64) {
        self.check_gone();
        let (busy, msgs) = (self.busy_total_ns - self.msg_mark.0, self.msgs_run - self.msg_mark.1);
        if msgs >= TURN_BUDGET as u64 {
            self.msg_ns = (self.msg_ns * 3 + busy / msgs) / 4;
            self.msg_mark = (self.busy_total_ns, self.msgs_run);
        }
        for f in (0..self.plan.functions.len()).rev() {
            let down = self.plan.functions[f].outputs.iter().map(|e| self.cost_to_go_ns[e.target as usize]).max();
            self.cost_to_go_ns[f] = self.cost_ns[f] + down.unwrap_or(0);
        }
        for op in self.ops.iter_mut().flatten() {
            op.flush();
        }
        self.tick_actors(now);
        self.rebalance(now);
        let cx = sched_cx!(self, now);
        self.policy.on_tick(&cx);
    }

    fn flush_sinks(&mut self) {
        for op in self.ops.iter_mut().flatten() {
            op.flush();
        }
    }

    /// Something was counted since the last report (an idle shard's parked time counts once it
    /// adds up to a progress interval, so the controller's busy/parked split stays true while
    /// nothing runs, at one report a second).
    fn has_news(&self) -> bool {
        !self.mig.events.is_empty()
            || self.parked_ns + self.busy_ns >= self.settings.stats_interval.as_nanos() as u64
            || self.hosting_changed_since_report
            || self
                .stats
                .iter()
                .any(|s| s.events_in + s.events_out + s.late_dropped + s.service_ns > 0 || s.actors.has_news())
    }

    fn report(&mut self, last: bool) {
        for f in 0..self.ops.len() {
            let total = match (&self.ops[f], &self.actors[f]) {
                (Some(op), _) => op.late_dropped(),
                (_, Some(actor)) => actor.late_dropped(),
                _ => continue,
            };
            self.stats[self.fn_app[f] as usize].late_dropped += total - self.late_seen[f];
            self.late_seen[f] = total;
        }
        for app in 0..self.hosting.len() {
            self.host(app, 0);
        }
        let r = ShardReport {
            shard: self.id,
            apps: self.stats.clone(),
            busy_ns: std::mem::take(&mut self.busy_ns),
            parked_ns: std::mem::take(&mut self.parked_ns),
            missed_wakeups: std::mem::take(&mut self.missed_wakeups),
            lazy_wakeups: std::mem::take(&mut self.lazy_wakeups),
            lessees: self.lessees_max.clone(),
            io_wakeups: self.take_io_wakes(),
            tcp_sources: self.tcp_counts(),
            failures: std::mem::take(&mut self.failures),
            fn_blocked_ns: std::mem::replace(&mut self.fn_blocked_ns, vec![0; self.plan.functions.len()]),
            fn_critical_ns: std::mem::replace(&mut self.fn_critical_ns, vec![0; self.plan.functions.len()]),
            hosting: {
                self.hosting_changed_since_report = false;
                self.hosting.clone()
            },
            moves: std::mem::take(&mut self.mig.events),
            moves_refused: std::mem::take(&mut self.mig.refused),
            last,
        };
        self.stats.iter_mut().for_each(AppStats::reset);
        self.lessees_max.clone_from(&self.lessees_here);
        for (f, &n) in self.lessees_here.iter().enumerate() {
            self.stats[self.fn_app[f] as usize].actors.lessees_max += n;
        }
        let _ = self.reports.send(r);
    }
}
