//! Scheduling policies: the hooks every message passes on its shard, and the built-in policies
//! (FIFO, EDF, least-laxity, fair share). A shard is generic over its policy, so hooks are
//! statically dispatched: no allocation, lock or virtual call per message.

use dirigo_actors::envelope::Header;
use dirigo_actors::ids::FunctionId;

use crate::plan::AppPlan;
use crate::runqueue::RunQueue;

/// What the hooks can read: the plan's apps and the shard's measured costs, per function.
#[derive(Clone, Copy, Debug)]
pub struct SchedCx<'a> {
    pub apps: &'a [AppPlan],
    /// App of each function.
    pub fn_app: &'a [u16],
    /// Measured service time of each function on this shard (EWMA, ns).
    pub cost_ns: &'a [u64],
    /// Measured cost of the rest of the DAG path from each function, itself included (ns).
    pub cost_to_go_ns: &'a [u64],
    /// Now (engine clock, ns).
    pub now_ns: u64,
}

/// Where a message should run (dual-mode actors: the lessor or a lessee).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Lessor,
    /// Scale out: run on a lessee (the engine picks the least-loaded shard).
    Lessee,
}

/// What `on_route` sees of a message's destination.
#[derive(Clone, Copy, Debug)]
pub struct RouteCx {
    /// Expected wait at the home shard before the message could start (ns).
    pub home_delay_ns: u64,
    /// Expected wait at the least-loaded other shard, where a new lessee would go (ns;
    /// `u64::MAX` when there is none). The sender's signal-only call sets it to 0.
    pub peer_delay_ns: u64,
    /// Expected service time of the target function (ns).
    pub service_ns: u64,
    /// Slack left: deadline - now - cost to go (ns, negative when already late).
    pub laxity_ns: i64,
    /// What forwarding one message costs the home shard (measured: sending it and handling
    /// the lessee's answer, ns; 0 where unknown).
    pub forward_ns: u64,
}

impl RouteCx {
    /// The scale-up signal: the home shard cannot start and finish it within its laxity.
    #[inline]
    pub fn misses_deadline(&self) -> bool {
        (self.home_delay_ns + self.service_ns) as i64 > self.laxity_ns
    }

    /// Whether a lessee would start the message sooner than its home shard, and forwarding it
    /// costs the home shard less than half of running it (a function not much dearer than a
    /// forward never scales out: forwarding would move little work off the busy shard, and the
    /// lessee's backlog would lengthen every barrier).
    #[inline]
    pub fn lessee_helps(&self) -> bool {
        self.peer_delay_ns.saturating_add(self.service_ns) < self.home_delay_ns
            && self.forward_ns.saturating_mul(2) < self.service_ns
    }

    /// The built-in scale-out rule: the home shard misses the deadline and another shard
    /// would start the message sooner.
    #[inline]
    pub fn scale_out(&self) -> bool {
        self.misses_deadline() && self.lessee_helps()
    }
}

pub use dirigo_actors::dual_mode::Admission;

/// What `on_offer` sees when a lessee on this shard is offered a forwarded message.
#[derive(Clone, Copy, Debug)]
pub struct OfferCx {
    /// Expected wait on this shard (ns), as it last published it.
    pub own_delay_ns: u64,
    /// Expected wait at the lessor's shard (ns), as it last published it.
    pub lessor_delay_ns: u64,
    /// Expected service time of the function (ns).
    pub service_ns: u64,
}

/// What `retire_lessee` sees of one lessee of a lessor on this shard (called every tick).
#[derive(Clone, Copy, Debug)]
pub struct LesseeCx {
    /// Time since the lessor last forwarded it a message (ns).
    pub idle_ns: u64,
    /// The configured idle limit (`[engine] lessee_idle`, ns).
    pub idle_limit_ns: u64,
    /// Forwards it refused since the last tick.
    pub refused: u64,
    /// Forwards it accepted since the last tick.
    pub accepted: u64,
    /// Expected wait on the lessee's shard and on the lessor's (ns).
    pub lessee_delay_ns: u64,
    pub lessor_delay_ns: u64,
}

impl LesseeCx {
    /// The default retirement rule: the lessor sent it nothing for the idle limit, or it refused
    /// more than it took.
    #[inline]
    pub fn idle_or_refusing(&self) -> bool {
        self.idle_ns >= self.idle_limit_ns || self.refused > self.accepted
    }
}

/// A key-group move the engine is about to start (spreading a hot shard, consolidating a quiet
/// one, or forced by a test setting): [`Policy::on_move`] may let it go, send it elsewhere, or
/// veto it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoveCx {
    pub app: dirigo_actors::ids::AppId,
    pub function: FunctionId,
    pub group: dirigo_actors::ids::KeyGroup,
    pub from: dirigo_actors::ids::ShardId,
    pub to: dirigo_actors::ids::ShardId,
    pub reason: crate::metrics::MoveReason,
    /// The moving app's SLO (ns).
    pub slo_ns: u64,
    /// The tightest SLO of the other apps running on `to` (started there, or holding key
    /// groups there), ns; `u64::MAX` if none.
    pub to_tightest_slo_ns: u64,
}

/// What a policy answers to a proposed move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveVerdict {
    Accept,
    /// Move the group to this shard instead (of the same node).
    Redirect(dirigo_actors::ids::ShardId),
    /// Leave the group where it is (e.g. the app is pinned, or it already uses its cores).
    Veto,
}

/// The scheduling hooks. Every method has a default; a policy overrides what it decides.
pub trait Policy: 'static {
    /// A message enters the engine: derive its deadline from the app's SLO.
    #[inline]
    fn on_ingress(&mut self, h: &mut Header, app: &AppPlan) {
        h.deadline_ns = h.ingress_ns.saturating_add(app.slo_ns);
    }
    /// Whether `on_route` may ever answer `Lessee` (the default: yes). A policy that never
    /// leases says so, and a built-in window whose lessor is idle then takes its records on the
    /// plain queue path without asking `on_route` per record at its home shard (the sender
    /// still asks, on the keyed edge).
    #[inline]
    fn may_lease(&self) -> bool {
        true
    }
    /// Whether a record for a function instance on the same shard (on a forward edge, or on a
    /// keyed edge whose key is homed there; never a dual-mode actor's) may run at once, in its
    /// sender's turn, when nothing of that function waits on the shard (operator chaining: it
    /// skips the batch, the run queue and the mailbox hop). Such records pass `on_send`,
    /// `on_route`, `pre_apply` and `post_apply` but not `on_enqueue` and `pick_next`: a
    /// policy says yes when it does not need to see them there. Default: no, so a user policy
    /// sees every message at every hook.
    #[inline]
    fn chains(&self) -> bool {
        false
    }
    /// Whether the policy runs messages in the order they arrive: its `on_enqueue` and
    /// `pick_next` keep arrival order and need to see nothing. Then a batch of records that
    /// arrives while nothing waits on the shard (and nothing runs) runs at once, in order, as
    /// the run queue would have run it, without passing through the queue: its records pass
    /// `pre_apply` and `post_apply`, as chained records do, but not `on_enqueue` and
    /// `pick_next`. Default: no, so a user policy sees every message at every hook.
    #[inline]
    fn runs_in_arrival_order(&self) -> bool {
        false
    }
    /// Choose the activation for a message of a keyed function: the lessor, or a lessee. Asked
    /// at the key's home shard for each foldable message of a dual-mode actor (a lessee there
    /// takes it), and by the sender for every record it routes to a keyed function, once the
    /// record is written where it goes (`h` as sent: stamped with its sender and sequence):
    /// there the answer is a scale-up signal only (the app's `scale_up_signals`), the home shard
    /// decides.
    #[inline]
    fn on_route(&mut self, _h: &Header, _route: &RouteCx) -> Placement {
        Placement::Lessor
    }
    /// Whether `on_route` may answer anything but `Lessor` (the default: yes). A policy whose
    /// `on_route` always answers `Lessor` says no, and its senders do not ask it per keyed
    /// record (the answer would count no scale-up signal); the home shard of a dual-mode actor
    /// still asks it for each foldable message.
    #[inline]
    fn observes_route(&self) -> bool {
        true
    }
    /// Priority of a message entering the run queue: smaller runs first.
    fn on_enqueue(&mut self, h: &Header, arrival: u64, cx: &SchedCx<'_>) -> u64;
    /// Choose the function whose head message runs next.
    #[inline]
    fn pick_next(&mut self, q: &RunQueue, _cx: &SchedCx<'_>) -> Option<FunctionId> {
        q.min_head()
    }
    /// Whether `pick_next` is [`RunQueue::min_head`] and nothing else (the default `pick_next`,
    /// with no state of its own). A policy that says yes lets the shard run a picked function's
    /// next queued records in the same stretch, without asking again, while each is the one
    /// `min_head` would pick next (`Shard::run_queued`): what runs, and in what order, is
    /// exactly what picking each would give. Default: no, so a user policy's `pick_next`
    /// sees every pick.
    #[inline]
    fn picks_min_head(&self) -> bool {
        false
    }
    /// Whether `pre_apply` and `post_apply` do anything. A policy whose two hooks are no-ops
    /// says no, and a stretch of records (`shard::stretch`) then neither builds what they read
    /// nor calls them, per record. Default: yes, so a user policy's hooks see every message.
    #[inline]
    fn observes_apply(&self) -> bool {
        true
    }
    /// Just before the function runs.
    #[inline]
    fn pre_apply(&mut self, _h: &Header, _cx: &SchedCx<'_>) {}
    /// Just after the function ran.
    #[inline]
    fn post_apply(&mut self, _h: &Header, _cx: &SchedCx<'_>) {}
    /// A message is emitted: the child inherited its parent's deadline; the policy may rewrite it.
    /// The child is already in its place (chained, or in the batch for its shard, chosen by its
    /// key): where it goes does not follow a change to its routing fields (`key_hash`,
    /// `function`, `port`).
    #[inline]
    fn on_send(&mut self, _parent: &Header, _child: &mut Header) {}
    /// Whether `on_send` does anything. A policy whose `on_send` is a no-op says no; if its
    /// `pre_apply` and `post_apply` are no-ops too (`observes_apply`) and it chains, a stateless
    /// map whose records may chain is fused into what feeds it (`shard::fuse`): its fields are
    /// computed where its input is made, and that input is never made as a message, so no
    /// hook sees it (none would have done anything with it). Default: yes, so a user policy
    /// sees every message at every hook.
    #[inline]
    fn observes_send(&self) -> bool {
        true
    }
    /// A lessee on this shard is offered a forwarded message: take it, or hand it back to the
    /// lessor (which then runs it). Default: take it when it would start here sooner than at
    /// the lessor (a lessee's backlog is what the next barrier waits for: keep it short).
    #[inline]
    fn on_offer(&mut self, _h: &Header, cx: &OfferCx) -> Admission {
        if cx.own_delay_ns.saturating_add(cx.service_ns) <= cx.lessor_delay_ns {
            Admission::Accept
        } else {
            Admission::Refuse
        }
    }
    /// Whether a lessor on this shard retires one of its lessees (it ships its partial back).
    /// Default: when it was sent nothing for `idle_limit_ns`, or it refused more than it took.
    #[inline]
    fn retire_lessee(&mut self, cx: &LesseeCx) -> bool {
        cx.idle_or_refusing()
    }
    /// The shard found nothing to do.
    #[inline]
    fn on_idle(&mut self) {}
    /// Periodic tick.
    #[inline]
    fn on_tick(&mut self, _cx: &SchedCx<'_>) {}
    /// A key group is about to move (cold path: at most a few times a second per shard).
    /// Default: let it.
    #[inline]
    fn on_move(&mut self, _cx: &MoveCx) -> MoveVerdict {
        MoveVerdict::Accept
    }
}

/// Arrival order.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fifo;

impl Policy for Fifo {
    /// Its `pre_apply` and `post_apply` are no-ops.
    #[inline]
    fn observes_apply(&self) -> bool {
        false
    }
    /// Its `pick_next` is the default, `min_head`.
    #[inline]
    fn picks_min_head(&self) -> bool {
        true
    }
    /// Its `on_route` always answers `Lessor`.
    #[inline]
    fn observes_route(&self) -> bool {
        false
    }
    /// Its `on_send` is a no-op.
    #[inline]
    fn observes_send(&self) -> bool {
        false
    }
    #[inline]
    fn may_lease(&self) -> bool {
        false
    }
    /// A chained record runs right after the message that made it, which is where arrival
    /// order puts it when nothing of its function waits.
    #[inline]
    fn chains(&self) -> bool {
        true
    }
    /// Arrival order is its order.
    #[inline]
    fn runs_in_arrival_order(&self) -> bool {
        true
    }
    #[inline]
    fn on_enqueue(&mut self, _h: &Header, arrival: u64, _cx: &SchedCx<'_>) -> u64 {
        arrival
    }

    /// Arrival order cannot keep a tighter app's messages ahead of a looser app's backlog, so
    /// FIFO does not spread load onto a shard where a tighter app runs (the deadline-aware
    /// policies reorder, and may). Consolidation, which brings groups back to their app's own
    /// shards, is never refused.
    fn on_move(&mut self, cx: &MoveCx) -> MoveVerdict {
        keep_off_tighter_apps(cx)
    }
}

/// The move rule of the policies that do not order by deadline (FIFO, fair share): no load
/// spreads onto a shard where an app with a tighter SLO runs. Consolidation is never refused.
#[inline]
pub fn keep_off_tighter_apps(cx: &MoveCx) -> MoveVerdict {
    if cx.reason == crate::metrics::MoveReason::Spread && cx.to_tightest_slo_ns < cx.slo_ns {
        MoveVerdict::Veto
    } else {
        MoveVerdict::Accept
    }
}

/// Priority band of messages that could no longer meet their deadline when they were queued.
///
/// Plain EDF collapses under overload (the domino effect): a backlog that has outlived its
/// deadlines outranks every fresh message. A message whose latest start time has already passed
/// when it is queued (a source that fell behind its schedule, a stale backlog moving on) goes
/// behind every message that can still make it, in the same order among the late ones. Lateness
/// that develops while a message waits is not re-judged: `bench tenants` measured that demoting
/// those at pick time starves a tight-SLO app whose messages miss by a little.
const LATE: u64 = 1 << 62;

#[inline]
fn banded(latest_start_ns: u64, now_ns: u64) -> u64 {
    if latest_start_ns < now_ns {
        LATE | latest_start_ns.min(LATE - 1)
    } else {
        latest_start_ns.min(LATE - 1)
    }
}

/// Earliest deadline first; messages already late when queued go behind on-time ones.
#[derive(Clone, Copy, Debug, Default)]
pub struct Edf;

impl Policy for Edf {
    /// Its `pre_apply` and `post_apply` are no-ops.
    #[inline]
    fn observes_apply(&self) -> bool {
        false
    }
    /// Its `pick_next` is the default, `min_head`.
    #[inline]
    fn picks_min_head(&self) -> bool {
        true
    }
    /// Its `on_send` is a no-op.
    #[inline]
    fn observes_send(&self) -> bool {
        false
    }
    /// A chained record inherits its parent's deadline, and the parent was the earliest.
    #[inline]
    fn chains(&self) -> bool {
        true
    }
    #[inline]
    fn on_enqueue(&mut self, h: &Header, _arrival: u64, cx: &SchedCx<'_>) -> u64 {
        banded(h.deadline_ns, cx.now_ns)
    }
    #[inline]
    fn on_route(&mut self, _h: &Header, route: &RouteCx) -> Placement {
        if route.scale_out() {
            Placement::Lessee
        } else {
            Placement::Lessor
        }
    }
}

/// Least laxity first (Cameo): latest start time = deadline - cost to go; messages already late
/// when queued go behind on-time ones.
#[derive(Clone, Copy, Debug, Default)]
pub struct Laxity;

impl Policy for Laxity {
    /// Its `pre_apply` and `post_apply` are no-ops.
    #[inline]
    fn observes_apply(&self) -> bool {
        false
    }
    /// Its `pick_next` is the default, `min_head`.
    #[inline]
    fn picks_min_head(&self) -> bool {
        true
    }
    /// Its `on_send` is a no-op.
    #[inline]
    fn observes_send(&self) -> bool {
        false
    }
    /// The parent's laxity counted its chain's cost (its cost to go): running the chain at once
    /// is what its priority paid for.
    #[inline]
    fn chains(&self) -> bool {
        true
    }
    #[inline]
    fn on_enqueue(&mut self, h: &Header, _arrival: u64, cx: &SchedCx<'_>) -> u64 {
        banded(h.deadline_ns.saturating_sub(cx.cost_to_go_ns[h.function as usize]), cx.now_ns)
    }
    #[inline]
    fn on_route(&mut self, _h: &Header, route: &RouteCx) -> Placement {
        if route.scale_out() {
            Placement::Lessee
        } else {
            Placement::Lessor
        }
    }
}

/// Weighted fair share of shard time across apps (start-time fair queuing on measured costs);
/// within an app, arrival order.
#[derive(Clone, Debug, Default)]
pub struct Fair {
    /// Virtual time consumed by each app, in ns of service divided by its weight.
    vtime: Vec<u64>,
    /// The pick at which each app last had queued work (one pass, nothing to clear per pick).
    seen: Vec<u64>,
    /// 2^20 / weight of each app: virtual time advances by cost * this >> 10 (no division per
    /// message).
    inv_weight: Vec<u64>,
    picks: u64,
    /// System virtual time: the start tag of the app picked last.
    system: u64,
}

impl Fair {
    #[inline]
    fn grow(&mut self, apps: &[AppPlan]) {
        if self.vtime.len() < apps.len() {
            self.vtime.resize(apps.len(), 0);
            self.seen.resize(apps.len(), 0);
            self.inv_weight = apps.iter().map(|a| (1u64 << 20) / a.weight.max(1) as u64).collect();
        }
    }
}

impl Policy for Fair {
    #[inline]
    fn may_lease(&self) -> bool {
        false
    }
    /// Its `on_route` always answers `Lessor`.
    #[inline]
    fn observes_route(&self) -> bool {
        false
    }
    /// A chained record is its parent's app's work, charged to it in `post_apply`.
    #[inline]
    fn chains(&self) -> bool {
        true
    }
    #[inline]
    fn on_enqueue(&mut self, _h: &Header, arrival: u64, _cx: &SchedCx<'_>) -> u64 {
        arrival
    }

    /// The queue head of the app with the least virtual time (oldest first within an app). An
    /// app that was not backlogged at the previous pick starts at the system virtual time:
    /// idleness earns no credit.
    #[inline]
    fn pick_next(&mut self, q: &RunQueue, cx: &SchedCx<'_>) -> Option<FunctionId> {
        self.grow(cx.apps);
        self.picks += 1;
        let mut best: Option<((u64, u64), FunctionId)> = None;
        for &f in q.active() {
            let app = cx.fn_app[f as usize] as usize;
            if self.seen[app] + 1 < self.picks {
                self.vtime[app] = self.vtime[app].max(self.system);
            }
            self.seen[app] = self.picks;
            let key = (self.vtime[app], q.head(f).expect("active queues are non-empty").arrival);
            if best.is_none_or(|(k, _)| key < k) {
                best = Some((key, f));
            }
        }
        let ((start, _), f) = best?;
        self.system = start;
        Some(f)
    }

    /// Fair share divides a shard's time, not its latency: a tight app keeps its share beside
    /// a looser app's groups but waits behind the message running and the turn's batch at
    /// every hop, which a 1 ms SLO cannot afford (the isolation test's tight app fell from
    /// 0.95 to 0.80-0.89 beside a flood spread onto its shard in a debug build). So fair, like
    /// FIFO, spreads no load onto a tighter app's shard.
    fn on_move(&mut self, cx: &MoveCx) -> MoveVerdict {
        keep_off_tighter_apps(cx)
    }

    #[inline]
    fn post_apply(&mut self, h: &Header, cx: &SchedCx<'_>) {
        self.grow(cx.apps);
        let cost = cx.cost_ns[h.function as usize].max(1);
        self.vtime[h.app as usize] += (cost * self.inv_weight[h.app as usize]) >> 10;
    }
}

/// No scheduling at all: no deadline, one priority, the first non-empty queue runs. Every hook
/// is a no-op the compiler removes; the baseline against which hook overhead is measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bare;

impl Policy for Bare {
    /// Its `pre_apply` and `post_apply` are no-ops.
    #[inline]
    fn observes_apply(&self) -> bool {
        false
    }
    /// Its `on_route` always answers `Lessor`.
    #[inline]
    fn observes_route(&self) -> bool {
        false
    }
    /// Its `on_send` is a no-op.
    #[inline]
    fn observes_send(&self) -> bool {
        false
    }
    #[inline]
    fn on_ingress(&mut self, _h: &mut Header, _app: &AppPlan) {}
    #[inline]
    fn chains(&self) -> bool {
        true
    }
    /// It has no order to keep.
    #[inline]
    fn runs_in_arrival_order(&self) -> bool {
        true
    }
    #[inline]
    fn on_enqueue(&mut self, _h: &Header, _arrival: u64, _cx: &SchedCx<'_>) -> u64 {
        0
    }
    #[inline]
    fn pick_next(&mut self, q: &RunQueue, _cx: &SchedCx<'_>) -> Option<FunctionId> {
        q.active().first().copied()
    }
}

/// The built-in policies, chosen in the config.
#[derive(Clone, Debug)]
pub enum Builtin {
    Fifo(Fifo),
    Edf(Edf),
    Laxity(Laxity),
    Fair(Fair),
}

/// Names of the built-in policies, as written in configs.
pub const POLICY_NAMES: [&str; 4] = ["fifo", "edf", "laxity", "fair"];

impl Builtin {
    /// The policy called `name` in a config.
    pub fn by_name(name: &str) -> Option<Builtin> {
        Some(match name {
            "fifo" => Builtin::Fifo(Fifo),
            "edf" => Builtin::Edf(Edf),
            "laxity" => Builtin::Laxity(Laxity),
            "fair" => Builtin::Fair(Fair::default()),
            _ => return None,
        })
    }
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Builtin::Fifo($p) => $e,
            Builtin::Edf($p) => $e,
            Builtin::Laxity($p) => $e,
            Builtin::Fair($p) => $e,
        }
    };
}

impl Policy for Builtin {
    #[inline]
    fn on_ingress(&mut self, h: &mut Header, app: &AppPlan) {
        dispatch!(self, p => p.on_ingress(h, app))
    }
    #[inline]
    fn on_route(&mut self, h: &Header, route: &RouteCx) -> Placement {
        dispatch!(self, p => p.on_route(h, route))
    }
    #[inline]
    fn may_lease(&self) -> bool {
        dispatch!(self, p => p.may_lease())
    }
    #[inline]
    fn chains(&self) -> bool {
        dispatch!(self, p => p.chains())
    }
    #[inline]
    fn runs_in_arrival_order(&self) -> bool {
        dispatch!(self, p => p.runs_in_arrival_order())
    }
    #[inline]
    fn on_enqueue(&mut self, h: &Header, arrival: u64, cx: &SchedCx<'_>) -> u64 {
        dispatch!(self, p => p.on_enqueue(h, arrival, cx))
    }
    #[inline]
    fn pick_next(&mut self, q: &RunQueue, cx: &SchedCx<'_>) -> Option<FunctionId> {
        dispatch!(self, p => p.pick_next(q, cx))
    }
    #[inline(always)]
    fn observes_apply(&self) -> bool {
        dispatch!(self, p => p.observes_apply())
    }
    #[inline(always)]
    fn pre_apply(&mut self, h: &Header, cx: &SchedCx<'_>) {
        dispatch!(self, p => p.pre_apply(h, cx))
    }
    #[inline(always)]
    fn post_apply(&mut self, h: &Header, cx: &SchedCx<'_>) {
        dispatch!(self, p => p.post_apply(h, cx))
    }
    #[inline]
    fn observes_send(&self) -> bool {
        dispatch!(self, p => p.observes_send())
    }
    #[inline]
    fn observes_route(&self) -> bool {
        dispatch!(self, p => p.observes_route())
    }
    #[inline(always)]
    fn picks_min_head(&self) -> bool {
        dispatch!(self, p => p.picks_min_head())
    }
    #[inline]
    fn on_send(&mut self, parent: &Header, child: &mut Header) {
        dispatch!(self, p => p.on_send(parent, child))
    }
    #[inline]
    fn on_offer(&mut self, h: &Header, cx: &OfferCx) -> Admission {
        dispatch!(self, p => p.on_offer(h, cx))
    }
    #[inline]
    fn retire_lessee(&mut self, cx: &LesseeCx) -> bool {
        dispatch!(self, p => p.retire_lessee(cx))
    }
    #[inline]
    fn on_idle(&mut self) {
        dispatch!(self, p => p.on_idle())
    }
    #[inline]
    fn on_tick(&mut self, cx: &SchedCx<'_>) {
        dispatch!(self, p => p.on_tick(cx))
    }
    #[inline]
    fn on_move(&mut self, cx: &MoveCx) -> MoveVerdict {
        dispatch!(self, p => p.on_move(cx))
    }
}

/// Test and benchmark support, not a policy to run apps under: it forces dual-mode scale-out so
/// that tests and benchmarks exercise lessees, forwards and barriers on every message. Arrival
/// order (FIFO); every message to a dual-mode actor goes to a lessee (a new one while
/// `max_lessees` allows); every forward is accepted.
///
/// Lessees retire by the default rule of [`Policy::retire_lessee`] (sent nothing for
/// `[engine] lessee_idle`; an accepting lessee refuses nothing), or, with
/// [`Retirement::AtEnd`], not before the end of the run (the engine retires them all then).
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysLease {
    pub retirement: Retirement,
}

/// When [`AlwaysLease`] retires a lessee.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Retirement {
    /// By the default rule of [`Policy::retire_lessee`].
    #[default]
    Default,
    /// Only at the end of the run.
    AtEnd,
}

impl Policy for AlwaysLease {
    #[inline]
    fn on_enqueue(&mut self, _h: &Header, arrival: u64, _cx: &SchedCx<'_>) -> u64 {
        arrival
    }
    #[inline]
    fn on_route(&mut self, _h: &Header, _route: &RouteCx) -> Placement {
        Placement::Lessee
    }
    #[inline]
    fn on_offer(&mut self, _h: &Header, _cx: &OfferCx) -> Admission {
        Admission::Accept
    }
    #[inline]
    fn retire_lessee(&mut self, cx: &LesseeCx) -> bool {
        match self.retirement {
            Retirement::Default => cx.idle_or_refusing(),
            Retirement::AtEnd => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runqueue::QEntry;

    #[test]
    fn fifo_spreads_no_load_onto_a_tighter_apps_shard_but_always_consolidates() {
        use crate::metrics::MoveReason;
        let cx = |reason, slo_ns, to_tightest_slo_ns| MoveCx {
            app: 0,
            function: 0,
            group: 0,
            from: 0,
            to: 1,
            reason,
            slo_ns,
            to_tightest_slo_ns,
        };
        let mut fifo = Fifo;
        assert_eq!(fifo.on_move(&cx(MoveReason::Spread, 100, 1)), MoveVerdict::Veto);
        assert_eq!(fifo.on_move(&cx(MoveReason::Spread, 100, 100)), MoveVerdict::Accept);
        assert_eq!(fifo.on_move(&cx(MoveReason::Spread, 100, u64::MAX)), MoveVerdict::Accept);
        assert_eq!(fifo.on_move(&cx(MoveReason::Consolidate, 100, 1)), MoveVerdict::Accept);
        // The deadline-aware policies reorder, so they may share.
        assert_eq!(Builtin::by_name("laxity").unwrap().on_move(&cx(MoveReason::Spread, 100, 1)), MoveVerdict::Accept);
    }

    fn apps(weights: &[u32]) -> Vec<AppPlan> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| AppPlan {
                name: format!("app{i}"),
                slo_ns: 1_000_000,
                weight,
                watermark_every: 1,
                watermark_delay_ms: 0,
                shards: vec![0],
                reach: vec![0],
                peak_permille: 0,
            })
            .collect()
    }

    /// Enqueue (function, deadline) pairs under `policy`, then drain by `pick_next`.
    fn order<P: Policy>(policy: &mut P, msgs: &[(u16, u64)], fn_app: &[u16], cost_to_go: &[u64]) -> Vec<(u16, u64)> {
        let apps = apps(&[1, 1]);
        let cost = vec![100; fn_app.len()];
        let cx = SchedCx { apps: &apps, fn_app, cost_ns: &cost, cost_to_go_ns: cost_to_go, now_ns: 0 };
        let mut q = RunQueue::new(fn_app.len());
        for (arrival, &(f, deadline)) in msgs.iter().enumerate() {
            let header = Header { deadline_ns: deadline, ..Header::data(fn_app[f as usize], f, 0) };
            let priority = policy.on_enqueue(&header, arrival as u64, &cx);
            q.push(QEntry { header, priority, arrival: arrival as u64, slot: 0, off: 0, len: 0 });
        }
        let mut out = Vec::new();
        while let Some(f) = policy.pick_next(&q, &cx) {
            let e = q.pop(f).expect("picked");
            out.push((f, e.header.deadline_ns));
        }
        out
    }

    #[test]
    fn fifo_runs_in_arrival_order_across_functions() {
        let msgs = [(1, 50), (0, 10), (2, 30), (0, 5)];
        assert_eq!(order(&mut Fifo, &msgs, &[0, 0, 0], &[0, 0, 0]), msgs.to_vec());
    }

    #[test]
    fn edf_picks_the_earliest_deadline_among_queue_heads() {
        let msgs = [(1, 50), (0, 10), (2, 30), (2, 40)];
        let got = order(&mut Edf, &msgs, &[0, 0, 0], &[0, 0, 0]);
        assert_eq!(got, vec![(0, 10), (2, 30), (2, 40), (1, 50)]);
    }

    #[test]
    fn laxity_picks_the_least_slack() {
        // Same deadline: the function with more work still ahead of it (cost to go) runs first.
        let msgs = [(0, 1_000), (1, 1_000), (2, 900)];
        let got = order(&mut Laxity, &msgs, &[0, 0, 0], &[10, 500, 0]);
        assert_eq!(got, vec![(1, 1_000), (2, 900), (0, 1_000)]);
    }

    #[test]
    fn messages_late_when_queued_yield_to_those_that_can_still_make_it() {
        let apps = apps(&[1, 1]);
        let (fn_app, cost) = ([0u16, 1], [100u64, 100]);
        let cx = SchedCx { apps: &apps, fn_app: &fn_app, cost_ns: &cost, cost_to_go_ns: &cost, now_ns: 1_000 };
        let mut q = RunQueue::new(2);
        // Function 0: a backlog already past its deadline when queued; function 1: a fresh message.
        for (arrival, (f, deadline)) in [(0u16, 500u64), (0, 900), (1, 5_000)].into_iter().enumerate() {
            let header = Header { deadline_ns: deadline, ..Header::data(f, f, 0) };
            let priority = Edf.on_enqueue(&header, arrival as u64, &cx);
            q.push(QEntry { header, priority, arrival: arrival as u64, slot: 0, off: 0, len: 0 });
        }
        assert_eq!(Edf.pick_next(&q, &cx), Some(1), "the on-time message runs before the late backlog");
        let late = Laxity.on_enqueue(&Header { deadline_ns: 900, ..Header::data(0, 0, 0) }, 0, &cx);
        let on_time = Laxity.on_enqueue(&Header { deadline_ns: 5_000, ..Header::data(1, 1, 0) }, 1, &cx);
        assert!(on_time < late);
        let later = Edf.on_enqueue(&Header { deadline_ns: 950, ..Header::data(0, 0, 0) }, 2, &cx);
        assert!(
            Edf.on_enqueue(&Header { deadline_ns: 900, ..Header::data(0, 0, 0) }, 0, &cx) < later,
            "late ones keep deadline order"
        );
    }

    #[test]
    fn per_function_order_holds_even_when_priorities_invert() {
        // Deadlines 50 then 10 on one function: EDF may not reorder them.
        let got = order(&mut Edf, &[(0, 50), (0, 10)], &[0], &[0]);
        assert_eq!(got, vec![(0, 50), (0, 10)]);
    }

    #[test]
    fn fair_honours_weights_over_a_long_run() {
        let apps = apps(&[3, 1]);
        let fn_app = [0u16, 1];
        let cost = [1_000u64, 1_000];
        let cx = SchedCx { apps: &apps, fn_app: &fn_app, cost_ns: &cost, cost_to_go_ns: &cost, now_ns: 0 };
        let mut fair = Fair::default();
        let mut q = RunQueue::new(2);
        let mut arrival = 0;
        let mut push = |q: &mut RunQueue, f: u16| {
            let header = Header::data(fn_app[f as usize], f, 0);
            q.push(QEntry { header, priority: arrival, arrival, slot: 0, off: 0, len: 0 });
            arrival += 1;
        };
        for _ in 0..3 {
            push(&mut q, 0);
            push(&mut q, 1);
        }
        let mut ran = [0u64; 2];
        for _ in 0..40_000 {
            let f = fair.pick_next(&q, &cx).expect("both apps backlogged");
            let e = q.pop(f).expect("picked");
            fair.post_apply(&e.header, &cx);
            ran[f as usize] += 1;
            push(&mut q, f); // keep both apps backlogged
        }
        let share = ran[0] as f64 / (ran[0] + ran[1]) as f64;
        assert!((share - 0.75).abs() < 0.001, "weight 3:1 gave share {share}");
    }

    #[test]
    fn an_app_waking_from_idle_earns_no_credit() {
        let apps = apps(&[1, 1]);
        let fn_app = [0u16, 1];
        let cost = [1_000u64, 1_000];
        let cx = SchedCx { apps: &apps, fn_app: &fn_app, cost_ns: &cost, cost_to_go_ns: &cost, now_ns: 0 };
        let mut fair = Fair::default();
        let mut q = RunQueue::new(2);
        // App 0 runs alone for a long time.
        for i in 0..1_000 {
            q.push(QEntry { header: Header::data(0, 0, 0), priority: i, arrival: i, slot: 0, off: 0, len: 0 });
            let f = fair.pick_next(&q, &cx).expect("work");
            let e = q.pop(f).expect("picked");
            fair.post_apply(&e.header, &cx);
        }
        // Then both are backlogged: app 1 must not monopolise the shard to "catch up".
        let mut ran = [0u32; 2];
        for i in 0..100 {
            for f in 0..2u16 {
                let header = Header::data(f, f, 0);
                q.push(QEntry { header, priority: i, arrival: 2_000 + i * 2 + f as u64, slot: 0, off: 0, len: 0 });
            }
        }
        for _ in 0..100 {
            let f = fair.pick_next(&q, &cx).expect("work");
            let e = q.pop(f).expect("picked");
            fair.post_apply(&e.header, &cx);
            ran[f as usize] += 1;
        }
        assert!(ran[0] >= 45 && ran[1] >= 45, "shares after idling: {ran:?}");
    }

    #[test]
    fn the_scale_up_signal_compares_delay_and_service_with_slack() {
        let fits = RouteCx { home_delay_ns: 400, peer_delay_ns: 0, service_ns: 100, laxity_ns: 600, forward_ns: 40 };
        let late = RouteCx { home_delay_ns: 550, peer_delay_ns: 0, service_ns: 100, laxity_ns: 600, forward_ns: 40 };
        let nowhere_better = RouteCx { peer_delay_ns: 500, ..late };
        let too_cheap = RouteCx { forward_ns: 60, ..late };
        assert!(!fits.misses_deadline() && late.misses_deadline());
        let h = Header::data(0, 0, 0);
        for p in [&mut Builtin::Laxity(Laxity), &mut Builtin::Edf(Edf)] {
            assert_eq!(p.on_route(&h, &late), Placement::Lessee);
            assert_eq!(p.on_route(&h, &fits), Placement::Lessor);
            assert_eq!(p.on_route(&h, &nowhere_better), Placement::Lessor, "no shard would start it sooner");
            assert_eq!(p.on_route(&h, &too_cheap), Placement::Lessor, "forwarding costs more than running");
        }
        assert_eq!(Fifo.on_route(&h, &late), Placement::Lessor, "the default keeps the lessor");
    }

    #[test]
    fn always_lease_leases_every_message_and_retires_by_the_default_rule_unless_kept() {
        let h = Header::data(0, 0, 0);
        let fits =
            RouteCx { home_delay_ns: 0, peer_delay_ns: u64::MAX, service_ns: 1, laxity_ns: 1_000, forward_ns: 0 };
        let busy = OfferCx { own_delay_ns: 1_000, lessor_delay_ns: 0, service_ns: 1 };
        let lessee = |idle_ns, refused| LesseeCx {
            idle_ns,
            idle_limit_ns: 100,
            refused,
            accepted: 1,
            lessee_delay_ns: 0,
            lessor_delay_ns: 0,
        };
        for retirement in [Retirement::Default, Retirement::AtEnd] {
            let mut p = AlwaysLease { retirement };
            assert_eq!(p.on_route(&h, &fits), Placement::Lessee);
            assert_eq!(p.on_offer(&h, &busy), Admission::Accept);
            for cx in [lessee(0, 0), lessee(100, 0), lessee(0, 2)] {
                let default = Fifo.retire_lessee(&cx);
                assert_eq!(p.retire_lessee(&cx), default && retirement == Retirement::Default, "{cx:?}");
            }
        }
    }
}
