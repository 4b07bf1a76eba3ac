//! A shard: one pinned glommio executor running one loop that owns every per-message decision.
//! Each turn it drains its mailboxes into the run queue, polls its sources (while the engine is
//! not backpressured), runs a budget of messages in the policy's order, and flushes its output
//! batches; with nothing to do it spins for the configured window, then parks until a sender
//! (or a tcp source's readiness waker, armed as it parks) rings its doorbell or its next timer
//! is due.

mod apply;
mod chain;
mod deploy;
mod dual_mode;
mod fuse;
mod gone;
mod held;
mod idle;
mod inputs;
mod mail;
mod migrate;
pub mod outputs;
mod rebalance;
mod router;
mod sched;
mod slots;
mod snapshot;
mod sources;
mod stretch;
mod telemetry;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dirigo_actors::ids::ShardId;

use crate::metrics::{AppFailure, FailureCause, ShardReport};
use crate::placement::PlacementTable;
use crate::plan::Plan;
use crate::policy::Policy;
use dirigo_net::clock::now_ns;
use dirigo_net::mailbox::{Inbox, Outbox};
use dirigo_net::signal::{Doorbell, ShardSignal};

use chain::Chain;
use gone::Faults;
use idle::Idle;
use mail::Mail;
use migrate::Migrations;
use outputs::Outputs;
use rebalance::Rebalance;
use sched::Sched;
use slots::Slots;
use sources::Sources;
use telemetry::{Hosting, Telemetry, Unjudged};

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

/// Messages run per turn before the shard polls its mailboxes and flushes again; events a
/// source polls at least per turn.
const TURN_BUDGET: usize = 64;
/// A turn runs messages for at most about this long (ns) before the shard looks at its mail
/// (a source's poll too, when admission is by count only: `queue_budget = 0`).
const TURN_TIME_NS: u64 = 50_000;
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
/// measured (ns): a typical forward and answer on a 2-vCPU VM. A function cheaper than twice
/// this never forwards, and then never measures it.
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

/// A running shard: its wiring (identity, plan, signals, settings) and the parts that own its
/// state, each passed to the others where the data path crosses them.
pub struct Shard<P: Policy> {
    id: ShardId,
    /// The shards of this node (global ids).
    local: std::ops::Range<ShardId>,
    plan: Arc<Plan>,
    settings: ShardSettings,
    signals: Arc<Vec<Arc<ShardSignal>>>,
    /// The node's placement table.
    placement: Arc<PlacementTable>,
    doorbell: Doorbell,
    stop: Arc<AtomicBool>,
    reports: flume::Sender<ShardReport>,
    /// Ingress from shards: mailboxes and the batches held until their entries have run.
    mail: Mail,
    /// Source instances.
    src: Sources,
    /// Function instances, actors and lessee slots.
    slots: Slots,
    /// The policy, the run queue, and the costs the hooks read.
    sched: Sched<P>,
    /// Egress: output batches staged per destination.
    out: Outputs,
    /// Records on forward edges that run at once (operator chaining).
    chain: Chain,
    /// Figures for the reports.
    tele: Telemetry,
    /// What this shard hosts, per app.
    hosting: Hosting,
    /// Spinning or parking when idle.
    idle: Idle,
    /// Failed apps, shards given up, apps torn down.
    faults: Faults,
    /// Key groups held here, and the moves under way.
    mig: Migrations,
    /// Spreading and consolidation.
    rb: Rebalance,
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
        let sources = sources::instantiate(&plan, id, &init.signals[id as usize]);
        let mut shard = Shard {
            id,
            local: init.local,
            out: Outputs::new(id, init.outboxes, init.settings.batch_size, plan.apps.len(), plan.functions.len()),
            mail: Mail::new(init.inboxes, n),
            src: Sources::new(sources),
            slots: Slots::new(ops, actors, insts),
            sched: Sched::new(init.policy, &plan, FORWARD_PRIOR_NS),
            chain: Chain::default(),
            tele: Telemetry::new(&plan),
            hosting: Hosting::new(hosting, counted),
            idle: Idle::new(),
            faults: Faults::new(init.failed_apps, n, plan.apps.len()),
            mig,
            rb,
            signals: init.signals,
            placement: init.placement,
            doorbell: init.doorbell,
            settings: init.settings,
            stop: init.stop,
            reports: init.reports,
            deploy: deploy::Deploy::new(init.control, plan.apps.len()),
            snap: snapshot::Snap::new(
                init.snapshots,
                plan.functions.len(),
                init.restore.as_ref().map_or(0, |r| r.epoch),
            ),
            plan,
        };
        shard.refresh_chainable();
        if let Some(r) = &init.restore {
            shard.restore(r);
        }
        shard
    }

    /// Everything this shard runs has ended and all its output has left.
    fn finished(&self) -> bool {
        self.slots.live == 0
            && self.src.all_done()
            && self.sched.runq.is_empty()
            && self.out.is_drained()
            && self.slots.actors_done()
            && self.mig.idle()
            && self.deploy.may_finish(&self.stop)
    }

    /// A finished shard may exit once every shard of its node is finished: until then another
    /// shard's lessor may still lease a slot here (lessees stay on their lessor's node). The first time it is finished it says so and wakes
    /// the others (a shard waiting for the last one to finish is parked).
    fn may_exit(&mut self) -> bool {
        let local = &self.signals[self.local.start as usize..self.local.end as usize];
        if !self.idle.closing {
            self.idle.closing = true;
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
        self.size_polls();
        // Up: the node's sources start once every shard of it is (each wakes the others).
        self.signals[self.id as usize].set_up();
        let others = (self.local.start..self.local.end).filter(|&s| s != self.id);
        others.for_each(|s| self.signals[s as usize].wake());
        // The first report says the shard is up (a served engine is ready once every shard sent
        // one).
        self.report(false);
        loop {
            if std::mem::take(&mut self.hosting.changed) {
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
            self.idle.after_turn(now, spin_ns);
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
                self.tele.busy(now - t0);
                idle_since = None;
                continue;
            }
            self.sched.policy.on_idle();
            let since = *idle_since.get_or_insert(now);
            if since == now {
                self.idle.idle_began(now, spin_ns);
            }
            // Ticks only matter while there is work: a parked shard wakes for mail, for its
            // next due source event, or to report.
            let report_at = if self.has_news() { next_stats } else { u64::MAX };
            // A lessor with lessees keeps ticking: its policy retires them when they go idle.
            let tick_at = if self.slots.lends_out() { next_tick } else { u64::MAX };
            // A shard holding groups that came to spread load wakes to consider giving them back.
            let tick_at = tick_at.min(self.rebalance_due());
            let mail_at =
                if (MAIL_GATHER_MIN_NS..=MAIL_GATHER_MAX_NS).contains(&gather_ns) { now + gather_ns } else { u64::MAX };
            let wake_at = report_at.min(tick_at).min(self.next_source_due(start, gather_ns)).min(mail_at);
            // Park by SLO, per message: spin after a tight app's work only (a busy shard shared
            // with loose apps would otherwise never park).
            let spin_for_tight = self.idle.spin_for_tight(now, since, spin_ns);
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
        self.slots.flush();
        self.seal_at_exit();
        // Its last flush is done: a shard judging a wake-up need not wait for it.
        self.signals[self.id as usize].flushed();
        self.judge_wakeup(true);
        self.report(true);
    }

    /// Whether app `app` failed (see [`Faults::app_failed`]).
    #[inline]
    fn app_failed(&self, app: usize) -> bool {
        self.faults.app_failed(app)
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
        let app = self.sched.cost.fn_app[f];
        if self.faults.failed_apps[app as usize].swap(true, Ordering::SeqCst) {
            return; // already failed (here or on another shard)
        }
        let function = self.plan.functions[f].name.clone();
        let name = &self.plan.apps[app as usize].name;
        let _span = tracing::error_span!("app_failure", app = %name, function = %function, shard = self.id).entered();
        tracing::error!(app = %name, function = %function, shard = self.id, ?cause, "app fails: {message}");
        self.tele.failures.push(AppFailure { app, function, shard: self.id, cause, message });
    }

    /// Work of `app` ran here now: if its SLO is one a shard spins for, spinning may follow.
    #[inline]
    pub(super) fn touch(&mut self, app: usize) {
        if self.plan.apps[app].slo_ns <= self.settings.spin_slo.as_nanos() as u64 {
            self.idle.tight_work(self.sched.now);
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
        let hosted = apps.filter(|(a, _)| {
            self.hosting.apps[*a] > 0 || self.src.runs.iter().any(|s| !s.done && self.app_of(s) == *a)
        });
        hosted.map(|(_, app)| app.slo_ns).min().unwrap_or(u64::MAX)
    }

    /// One turn of the loop; true if anything happened.
    fn turn(&mut self, now: u64) -> bool {
        self.control_turn(now);
        self.snapshot_turn();
        self.sched.begin_turn(now, &self.signals);
        self.out.reclaim();
        let mut progress = self.drain_mail();
        progress |= self.poll_sources(now);
        let ran = self.run_budget(TURN_BUDGET, now);
        self.sched.msgs_run += ran as u64;
        progress |= ran > 0;
        self.force_moves(self.sched.msgs_run);
        if std::mem::take(&mut self.slots.sink_ran) {
            self.slots.send_collected();
        }
        // A saturated shard's batches may wait to fill, within the tightest app's budget; with
        // nothing else done this turn, everything goes.
        let hold_ns = if progress && self.src.saturated { self.src.poll_time_ns } else { 0 };
        progress |= self.out.flush(now, hold_ns);
        self.signals[self.id as usize].flushed();
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
        // The envelopes in this shard's rings count too: a receiver publishes only what it took
        // out of them, and a receiver descheduled for milliseconds takes nothing meanwhile (its
        // rings fill, then its senders' staging, up to `max_in_flight`, each record then
        // waiting out the stall). Two batches per ring always (one taken, one filled), and no
        // more until the shard has measured what a message costs.
        if timed {
            let (in_ring, per) = (self.out.in_ring_max(), self.sched.msg_ns);
            if in_ring >= 2 * floor && (per == 0 || in_ring * per >= budget) {
                return false;
            }
        }
        self.signals.iter().all(|s| {
            let n = s.queued_of(app);
            n < max && (!timed || n < floor || s.queued_ns_of(app) < budget)
        })
    }

    fn publish_load(&mut self) {
        let mut queued = (self.sched.runq.len() + self.out.staged()) as u64;
        let mut delay = 0;
        self.tele.app_queued.iter_mut().for_each(|q| *q = 0);
        self.tele.app_queued_ns.iter_mut().for_each(|q| *q = 0);
        for &f in self.sched.runq.active() {
            let n = self.sched.runq.len_of(f) as u64;
            let app = self.sched.cost.fn_app[f as usize] as usize;
            delay += n * self.sched.cost.ns[f as usize];
            self.tele.app_queued[app] += n;
            self.tele.app_queued_ns[app] += n * self.sched.cost.ns[f as usize].max(self.sched.msg_ns);
        }
        // Actor work waits inside the machines (the run queue holds one token per activation).
        let (cost, fn_app, msg_ns) = (&self.sched.cost.ns, &self.sched.cost.fn_app, self.sched.msg_ns);
        let (app_queued, app_queued_ns) = (&mut self.tele.app_queued, &mut self.tele.app_queued_ns);
        dual_mode::backlog(&self.slots.actors, &self.slots.lessees, |f, n| {
            queued += n;
            delay += n * cost[f];
            app_queued[fn_app[f] as usize] += n;
            app_queued_ns[fn_app[f] as usize] += n * cost[f].max(msg_ns);
        });
        let sig = &self.signals[self.id as usize];
        sig.publish(queued, delay);
        for (app, (&n, &ns)) in self.tele.app_queued.iter().zip(&self.tele.app_queued_ns).enumerate() {
            sig.publish_app(app, n, ns);
        }
    }

    /// Work that needs no wake-up to proceed: mail waiting, or output staged behind a full ring
    /// (the receiver is draining it and will not ring back, so a shard holding staged output
    /// must keep turning, never park).
    fn has_pending_work(&self) -> bool {
        self.out.staged() > 0 || !self.out.local.is_empty() || self.mail.has_mail()
    }

    /// Park until a sender rings the doorbell or `timeout` passes: blocks the thread (see `run`).
    fn park(&mut self, timeout_ns: u64) {
        let sig = self.signals[self.id as usize].clone();
        let max = if self.hosting.nothing() { REST_MAX_PARK } else { MAX_PARK };
        let timeout = Duration::from_nanos(timeout_ns).min(max);
        sig.will_wake_by(now_ns().saturating_add(timeout.as_nanos() as u64));
        self.judge_wakeup(false);
        let (skipped, rung) = (sig.skipped(), sig.rung());
        sig.going_to_sleep();
        // Armed after the flag and before the re-check: input that arrives from here on rings.
        let armed = self.arm_sources();
        if !armed || self.has_pending_work() || self.stop.load(Ordering::Relaxed) && !self.src.all_done() {
            sig.awake();
            return;
        }
        let t0 = now_ns();
        let rung_now = self.doorbell.recv_timeout(timeout).is_ok();
        // Looked for while still flagged asleep: mail sent once the flag is down rings no one,
        // and would be taken for a lost wake-up.
        let mail_waited = !rung_now && self.has_pending_work();
        sig.awake();
        // Mail waiting after a timeout is a lost wake-up only if no sender rang or chose not to
        // (its mail could wait for this wake-up). A sender counts its choice just after sending,
        // so one descheduled between the two (a busy machine) has not counted it yet: the
        // wake-up is judged once every shard has finished the flush it was in (`judge_wakeup`).
        // A ring that came as the timeout fired left its token (taken here, so the next park
        // does not end at once).
        if mail_waited && self.doorbell.try_recv().is_err() && self.tele.unjudged_wakeup.is_none() {
            let flushes = self.signals.iter().map(|s| s.flushes()).collect();
            self.tele.unjudged_wakeup = Some(Unjudged { skipped, rung, flushes });
        }
        self.tele.parked_ns += now_ns() - t0;
    }

    /// Judge the park that ended on its timeout with mail and no ring (see `park`): lazy if a
    /// sender counted a skip since it began, late if one counted a ring, lost otherwise. Judged
    /// only once every other shard has completed a flush since (or is parked, or given up), so
    /// that a sender between sending and counting has counted; until then it waits for a later
    /// park. At exit (`exiting`) it waits for them, a second at most (every other shard's
    /// loop flushes, parks or exits, and exiting counts as a flush).
    fn judge_wakeup(&mut self, exiting: bool) {
        let Some(u) = &self.tele.unjudged_wakeup else { return };
        let me = self.id as usize;
        let ready = || {
            self.signals
                .iter()
                .enumerate()
                .all(|(s, sig)| s == me || sig.flushes() != u.flushes[s] || sig.is_sleeping() || sig.is_gone())
        };
        let give_up = now_ns() + 1_000_000_000;
        while !ready() {
            if !exiting || now_ns() > give_up {
                return;
            }
            std::thread::yield_now();
        }
        let sig = &self.signals[me];
        if sig.skipped() != u.skipped {
            self.tele.lazy_wakeups += 1;
        } else if sig.rung() == u.rung {
            self.tele.missed_wakeups += 1;
            tracing::debug!(shard = self.id, "woke on the park timeout with mail waiting: a wake-up was lost");
        }
        self.tele.unjudged_wakeup = None;
    }

    /// Once per tick: shards given up, sinks flushed, lessees retired, key groups spread or
    /// consolidated, and the scheduler's tick (costs to go, the policy's `on_tick`).
    fn tick(&mut self, now: u64) {
        self.check_gone();
        self.slots.flush();
        self.tick_actors(now);
        self.rebalance(now);
        self.sched.tick(&self.plan, self.tele.busy_total_ns, now);
        self.size_polls();
    }

    /// Something was counted since the last report (an idle shard's parked time counts once it
    /// adds up to a progress interval, so the controller's busy/parked split stays true while
    /// nothing runs, at one report a second).
    fn has_news(&self) -> bool {
        !self.mig.events.is_empty()
            || self.tele.parked_ns + self.tele.busy_ns >= self.settings.stats_interval.as_nanos() as u64
            || self.hosting.unreported
            || self
                .tele
                .stats
                .iter()
                .any(|s| s.events_in + s.events_out + s.late_dropped + s.service_ns > 0 || s.actors.has_news())
    }

    fn report(&mut self, last: bool) {
        for f in 0..self.slots.ops.len() {
            let Some(total) = self.slots.late_dropped(f) else { continue };
            self.tele.stats[self.sched.cost.fn_app[f] as usize].late_dropped += total - self.tele.late_seen[f];
            self.tele.late_seen[f] = total;
        }
        for (f, n) in self.chain.fusion.fused.iter_mut().enumerate().filter(|(_, n)| **n > 0) {
            self.tele.stats[self.sched.cost.fn_app[f] as usize].fused += std::mem::take(n);
        }
        for (stats, n) in self.tele.stats.iter_mut().zip(self.sched.scale_up.iter_mut()) {
            stats.scale_up_signals += std::mem::take(n);
        }
        for app in 0..self.hosting.apps.len() {
            self.host(app, 0);
        }
        let napps = self.tele.stats.len();
        let (batches_out, envelopes_out) = self.out.take_sent();
        let r = ShardReport {
            shard: self.id,
            // The figures themselves go, and recycled empty ones take their place (a copy would
            // copy every histogram whole).
            apps: std::mem::replace(&mut self.tele.stats, crate::metrics::fresh_stats(napps)),
            busy_ns: std::mem::take(&mut self.tele.busy_ns),
            parked_ns: std::mem::take(&mut self.tele.parked_ns),
            batches_out,
            envelopes_out,
            missed_wakeups: std::mem::take(&mut self.tele.missed_wakeups),
            lazy_wakeups: std::mem::take(&mut self.tele.lazy_wakeups),
            lessees: self.tele.lessees_max.clone(),
            io_wakeups: self.take_io_wakes(),
            tcp_sources: self.tcp_counts(),
            failures: std::mem::take(&mut self.tele.failures),
            fn_blocked_ns: std::mem::replace(&mut self.tele.fn_blocked_ns, vec![0; self.plan.functions.len()]),
            fn_critical_ns: std::mem::replace(&mut self.tele.fn_critical_ns, vec![0; self.plan.functions.len()]),
            hosting: {
                self.hosting.unreported = false;
                self.hosting.apps.clone()
            },
            moves: std::mem::take(&mut self.mig.events),
            moves_refused: std::mem::take(&mut self.mig.refused),
            last,
        };
        self.tele.lessees_max.clone_from(&self.tele.lessees_here);
        for (f, &n) in self.tele.lessees_here.iter().enumerate() {
            self.tele.stats[self.sched.cost.fn_app[f] as usize].actors.lessees_max += n;
        }
        let _ = self.reports.send(r);
    }
}
