//! Dual-mode virtual actors on a shard: the engine side of `dirigo_actors::dual_mode`.
//!
//! An actor is one keyed partition of a function whose state is mergeable (a window, a user
//! actor) with `max_lessees > 0`: the function's instance on its home shard is the **lessor**.
//! Its messages do not enter the run queue directly: on arrival they go through the lessor's
//! machine ([`Lessor::route`] for data, [`Lessor::barrier`] for a watermark that advances the
//! instance, its end, or a user's critical message), which runs them here, forwards them to a
//! **lessee** on the least-loaded other shard when the policy's `on_route` says the home shard
//! cannot meet the deadline, or buffers them behind a barrier. An activation with work has one
//! *token* in the run queue (an entry with `slot == TOKEN`); picking it runs one work item, so
//! the policy orders actor work among everything else.
//!
//! Control messages travel on the same mailboxes as data, as envelopes of the protocol kinds
//! ([`MessageKind::is_protocol`]); partial state is an rkyv archive in the payload. A forwarded
//! message's payload stays held (not recycled) on the lessor until the lessee accepts it.
//!
//! Lessees are retired by the policy (`retire_lessee`, every tick) and always when their lessor
//! ends; a shard exits only when every shard is done, so a lessee slot never loses its host.

use dirigo_actors::dual_mode::{Command, Config as ActorConfig, Control, Decision, Lessee, LesseeMode};
use dirigo_actors::dual_mode::{Lessor, MessageClass, Mode, SlotPhase, Work};
use dirigo_actors::envelope::{Header, MessageKind, ProtocolArg};
use dirigo_actors::ids::{FunctionId, ShardId};
use dirigo_actors::state::AccessMode;

use super::router::broadcast;
use super::router::Router;
use super::{Shard, COST_SAMPLE, FORWARD_PRIOR_NS};
use crate::plan::InstanceCx;
use crate::policy::{LesseeCx, OfferCx, Placement, Policy, RouteCx};
use crate::runqueue::QEntry;
use dirigo_actors::activation::ActorOp;
use dirigo_net::clock::now_ns;
use dirigo_net::mailbox::{Batch, Entry};

/// Where a plain record's payload is: in a held batch (`slot`, `off`, `len`), or in bytes
/// outside the shard's parts (the chained records, taken out while they run).
enum Payload<'a> {
    Held(u32, u32, u32),
    Bytes(&'a [u8]),
}

/// `QEntry::slot` of a token: `off` 0 is the lessor of the entry's function, `1 + i` lessee
/// slot `i`.
pub(super) const TOKEN: u32 = u32::MAX;
/// `Pending::slot` of a critical message made by the lessor (a watermark or an end).
pub(super) const NO_PAYLOAD: u32 = u32::MAX;
/// `QEntry::slot` of an actor's watermark that bypassed its idle machine (`run_direct`): like
/// `NO_PAYLOAD`, nothing to release, and not a token.
pub(super) const DIRECT_NO_PAYLOAD: u32 = u32::MAX - 1;

/// A message inside a machine: its header and where its payload is held on this shard.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pending {
    header: Header,
    slot: u32,
    off: u32,
    len: u32,
}

impl Pending {
    /// A critical message the shard makes itself (no payload): a migration's export.
    pub(super) fn control(header: Header) -> Pending {
        Pending { header, slot: NO_PAYLOAD, off: 0, len: 0 }
    }

    /// Its run-queue entry on the plain path (`run_direct`).
    fn direct_entry(&self, priority: u64, arrival: u64) -> QEntry {
        let slot = if self.slot == NO_PAYLOAD { DIRECT_NO_PAYLOAD } else { self.slot };
        QEntry { header: self.header, priority, arrival, slot, off: self.off, len: self.len }
    }
}

pub(super) type Commands = Vec<Command<ActorOp, Pending>>;

/// Which activation a machine input belongs to.
#[derive(Clone, Copy, Debug)]
enum Activation {
    Lessor(usize),
    Lessee(usize),
}

/// What the lessor knows of one lessee beyond the machine: for the retire decision.
#[derive(Debug)]
struct SlotInfo {
    shard: ShardId,
    last_forward_ns: u64,
    refused: u64,
    accepted: u64,
}

/// The lessor of one actor (a function instance whose state is mergeable).
pub(super) struct LessorActor {
    machine: Lessor<ActorOp, Pending>,
    max_lessees: usize,
    scheduled: bool,
    next_barrier: u64,
    /// The end ran: retire every lessee, then the actor is done.
    ended: bool,
    slots: Vec<SlotInfo>,
    /// Messages a retiring lessee handed back, until its `Retired` arrives.
    returned: Vec<(ShardId, Pending)>,
    /// Barriers not yet completed: (id, arrival time, whether a lessee was out when it came).
    barriers: std::collections::VecDeque<(u64, u64, bool)>,
    /// Mode at the last observation, and since when.
    mode: Mode,
    mode_since: u64,
}

impl LessorActor {
    /// Whether it has lessees (leased or on their way back).
    pub(super) fn lends(&self) -> bool {
        self.machine.lessees().next().is_some()
    }

    /// The actor's state at the lessor (merged only at a barrier: see the dual-mode protocol).
    pub(super) fn state_mut(&mut self) -> &mut ActorOp {
        self.machine.state_mut()
    }

    pub(super) fn new(op: ActorOp, max_lessees: usize) -> Self {
        let config = ActorConfig { access: AccessMode::Mergeable, max_lessees, channels: 1 };
        LessorActor {
            machine: Lessor::new(op, config),
            max_lessees,
            scheduled: false,
            next_barrier: 1,
            ended: false,
            slots: Vec::new(),
            returned: Vec::new(),
            barriers: std::collections::VecDeque::new(),
            mode: Mode::Runnable,
            mode_since: 0,
        }
    }

    /// Runnable with no work queued or buffered in the machine, no token on the run queue and
    /// no lessee slot: a regular message that would run here may bypass the machine.
    fn idle(&self) -> bool {
        !self.scheduled
            && self.machine.mode() == Mode::Runnable
            && self.machine.queued() == 0
            && self.machine.lessees().next().is_none()
    }

    /// A built-in window whose machine is idle: its records (never critical) may take the
    /// plain queue path straight from the mailbox when the policy never leases.
    pub(super) fn takes_plain_records(&self) -> bool {
        self.idle() && matches!(self.machine.state(), ActorOp::Window(..))
    }

    /// A built-in window (records of it may chain under a policy that never leases).
    pub(super) fn is_window(&self) -> bool {
        matches!(self.machine.state(), ActorOp::Window(..))
    }

    /// Its end ran.
    pub(super) fn has_ended(&self) -> bool {
        self.ended
    }

    /// It has a lessee slot on shard `x`.
    pub(super) fn lends_to(&self, x: ShardId) -> bool {
        self.machine.lessees().any(|(s, _)| s == x)
    }

    /// Ended, and every lessee retired.
    pub(super) fn is_done(&self) -> bool {
        self.ended && self.machine.lessees().next().is_none()
    }

    pub(super) fn late_dropped(&self) -> u64 {
        self.machine.state().late_dropped()
    }

    /// Whether its keys can move to another shard.
    pub(super) fn migrates(&self) -> bool {
        self.machine.state().migrates()
    }
}

/// A lessee slot on this shard.
pub(super) struct LesseeSlot {
    function: FunctionId,
    lessor: ShardId,
    machine: Lessee<ActorOp, Pending>,
    scheduled: bool,
    /// When the lessor decided to lease (its clock; the engine's clock is global), until the
    /// first message runs here: the scale-up reaction.
    leased_at: Option<u64>,
}

impl LesseeSlot {
    pub(super) fn function(&self) -> usize {
        self.function as usize
    }

    pub(super) fn lessor(&self) -> ShardId {
        self.lessor
    }
}

impl<P: Policy> Shard<P> {
    /// A data message, watermark or end for an actor whose lessor is here.
    pub(super) fn actor_arrival(&mut self, e: Entry, slot: u32) {
        if e.header.kind == MessageKind::End && self.faults.any_gone && self.end_already_taken(&e.header) {
            self.release(slot);
            return;
        }
        if self.arrival_held_by_barrier(e, slot) {
            return; // behind a snapshot barrier on its channel
        }
        let f = e.header.function as usize;
        let mut out = std::mem::take(&mut self.slots.cmds);
        let mut forwarded_at = None;
        // A snapshot barrier aligned: what waited behind it arrives after the barrier's run.
        let mut aligned = false;
        let barrier_msg = |kind, event_time| Pending {
            header: Header { kind, event_time, ..e.header },
            slot: NO_PAYLOAD,
            off: 0,
            len: 0,
        };
        match e.header.kind {
            MessageKind::Data => {
                self.rb.count(f, e.header.key_hash);
                let msg = Pending { header: e.header, slot, off: e.off, len: e.len };
                let payload = self.mail.held.batch(slot).payload(e.off, e.len);
                let op = self.slots.actors[f].as_ref().expect("lessor").machine.state();
                if op.is_critical(&e.header, payload) {
                    self.barrier(f, msg, &mut out);
                } else {
                    let watermark = self.slots.insts[f].as_ref().expect("instance").watermark;
                    let decision = if op.folds_anywhere(&e.header, payload, watermark) {
                        self.placement(f, &e.header)
                    } else {
                        Decision::Local
                    };
                    let actor = self.slots.actors[f].as_mut().expect("lessor");
                    if decision == Decision::Local && actor.idle() {
                        // Nothing of the actor is queued, leased out or blocked: the message
                        // takes the plain queue path, in its function's FIFO queue behind
                        // nothing of the actor's (see `run_direct`).
                        self.slots.cmds = out;
                        self.enqueue_direct(msg);
                        return;
                    }
                    // A forward is timed, with its send below: what it costs this shard.
                    let t0 = if decision == Decision::Local { 0 } else { now_ns() };
                    let before = actor.machine.in_flight();
                    actor.machine.route(0, msg, decision, &mut out).expect("lessor accepts a regular message");
                    if actor.machine.in_flight() > before {
                        forwarded_at = Some(t0);
                    }
                }
            }
            MessageKind::Watermark => {
                self.release(slot);
                let inst = self.slots.insts[f].as_mut().expect("instance");
                let from = inst.watermark;
                if let Some(wm) = inst.on_watermark(e.header.port, e.header.from_shard, e.header.event_time) {
                    self.advance_watermark(f, from, barrier_msg(MessageKind::Watermark, wm), &mut out);
                }
            }
            MessageKind::End => {
                self.release(slot);
                let inst = self.slots.insts[f].as_mut().expect("instance");
                let from = inst.watermark;
                let (last, advanced) = inst.on_end(e.header.port, e.header.from_shard);
                if let Some(wm) = advanced {
                    self.advance_watermark(f, from, barrier_msg(MessageKind::Watermark, wm), &mut out);
                }
                if last && self.mig.moving_out(f) {
                    // A group of it is leaving: the end waits for it to be gone (see `migrate`).
                    self.mig.defer_end(f, e.header);
                } else if last {
                    self.barrier(f, barrier_msg(MessageKind::End, u64::MAX), &mut out);
                } else if self.aligned_by_end(f) {
                    let n = self.slots.insts[f].as_ref().expect("instance").aligned;
                    self.barrier(f, barrier_msg(MessageKind::Snapshot, n), &mut out);
                    aligned = true;
                }
            }
            MessageKind::Snapshot => {
                self.release(slot);
                if self.on_barrier(&e.header) {
                    // On the merged state: lessees ship their partials first.
                    self.barrier(f, barrier_msg(MessageKind::Snapshot, e.header.event_time), &mut out);
                    aligned = true;
                }
            }
            kind => unreachable!("protocol message {kind:?} routed as an arrival"),
        }
        let leased = self.exec(Activation::Lessor(f), &mut out);
        self.slots.cmds = out;
        // A forward that leased also paid for the lease and for waking the borrowed shard: a
        // cost of the lease, not of forwarding (one such sample would hold every later message
        // at home).
        if let (Some(t0), false) = (forwarded_at, leased) {
            let dt = now_ns().saturating_sub(t0);
            self.sched.cost.forward_ns[f] = (self.sched.cost.forward_ns[f] * 7 + dt) / 8;
        }
        if aligned {
            self.release_arrivals(f);
        }
    }

    /// The instance's watermark moved from `from` to `wm.event_time`: a barrier if the move
    /// matters to the state (it fires, expires, or changes lateness), else an ordinary message
    /// the lessor runs in order (it still goes downstream after everything before it).
    fn advance_watermark(&mut self, f: usize, from: u64, wm: Pending, out: &mut Commands) {
        let actor = self.slots.actors[f].as_mut().expect("lessor");
        if actor.machine.state().watermark_is_critical(from, wm.header.event_time) {
            self.barrier(f, wm, out);
        } else if actor.idle() {
            self.enqueue_direct(wm);
        } else {
            actor.machine.route(0, wm, Decision::Local, out).expect("lessor accepts a watermark");
        }
    }

    /// A critical message: a barrier of its own on the actor's one (merged) input channel.
    fn barrier(&mut self, f: usize, critical: Pending, out: &mut Commands) {
        let now = self.sched.now;
        let actor = self.slots.actors[f].as_mut().expect("lessor");
        let id = actor.next_barrier;
        actor.next_barrier += 1;
        let lessees = actor.machine.lessees().next().is_some();
        actor.barriers.push_back((id, now, lessees));
        actor.machine.barrier(0, id, Some(critical), out).expect("barriers arrive in order");
    }

    /// Raise a barrier with `critical` on actor `f` now (outside an arrival).
    pub(super) fn actor_barrier(&mut self, f: usize, critical: Pending) {
        let mut out = std::mem::take(&mut self.slots.cmds);
        self.barrier(f, critical, &mut out);
        self.exec(Activation::Lessor(f), &mut out);
        self.slots.cmds = out;
    }

    /// Merge a migrated key group into actor `f`'s lessor state.
    pub(super) fn import_actor_keys(
        &mut self,
        f: usize,
        archive: &[u8],
    ) -> Result<(), dirigo_actors::migrate::MigrateError> {
        self.slots.actors[f].as_mut().expect("lessor").machine.state_mut().import_keys(archive)
    }

    /// Where a foldable message runs: `on_route` decides whether the home shard can meet its
    /// deadline; if not, the least-loaded of the existing lessees or of the other shards.
    fn placement(&mut self, f: usize, h: &Header) -> Decision {
        let actor = self.slots.actors[f].as_ref().expect("lessor");
        // Decided in every mode: a message buffered behind a barrier keeps its placement for
        // when it replays.
        if actor.max_lessees == 0 || self.local.len() < 2 {
            return Decision::Local;
        }
        let me = self.id as usize;
        let slack = h.deadline_ns as i64 - self.sched.now as i64 - self.sched.cost.to_go_ns[f] as i64;
        let delay = |s: ShardId| self.sched.peer_delay[s as usize];
        // Lessees stay on this node.
        let others = self.local.clone().filter(|&s| s != self.id);
        let peer_delay_ns = others.clone().map(delay).min().unwrap_or(u64::MAX);
        let route = RouteCx {
            home_delay_ns: self.sched.peer_delay[me],
            peer_delay_ns,
            service_ns: self.sched.cost.ns[f],
            laxity_ns: slack,
            forward_ns: self.sched.cost.forward_ns[f] + self.sched.cost.answer_ns[f],
        };
        if self.sched.policy.on_route(h, &route) != Placement::Lessee {
            return Decision::Local;
        }
        // A lessee parked by the current barrier is leased again when a buffered message replays.
        let existing = (actor.machine.lessees())
            .filter(|&(_, phase)| phase != SlotPhase::Retiring)
            .map(|(s, _)| s)
            .min_by_key(|&s| delay(s));
        // Among equally loaded shards an awake one (busy, spinning, standby) is leased first: a
        // parked one reacts only after an OS wake-up.
        let asleep = |s: ShardId| self.signals[s as usize].is_sleeping();
        let fresh = (actor.machine.lessees().count() < actor.max_lessees)
            .then(|| {
                others.filter(|&s| actor.machine.lessees().all(|(l, _)| l != s)).min_by_key(|&s| (delay(s), asleep(s)))
            })
            .flatten();
        match (existing, fresh) {
            (Some(e), Some(n)) if delay(n) < delay(e) => Decision::NewLessee(n),
            (Some(e), _) => Decision::Lessee(e),
            (None, Some(n)) => Decision::NewLessee(n),
            (None, None) => Decision::Local,
        }
    }

    /// A protocol envelope from shard `from`.
    pub(super) fn on_protocol(&mut self, e: Entry, slot: u32, from: ShardId) {
        let f = e.header.function as usize;
        let app = self.sched.cost.fn_app[f] as usize;
        let mut out = std::mem::take(&mut self.slots.cmds);
        let data = Header { kind: MessageKind::Data, ..e.header };
        let who = match e.header.kind {
            MessageKind::Lease => {
                self.release(slot);
                let ProtocolArg::Lease { at_ns } = e.header.arg() else { unreachable!("a lease carries its time") };
                Activation::Lessee(self.open_lessee(f, from, at_ns))
            }
            MessageKind::Forward => {
                let i = self.lessee_of(f, from);
                let msg = Pending { header: data, slot, off: e.off, len: e.len };
                let l = &mut self.slots.lessees[i].as_mut().expect("slot").machine;
                l.receive(Control::Forward { seq: u64::from(seq_of(&e.header)), msg }, &mut out).expect("forward");
                let me = self.id as usize;
                // The lessor's delay read now, not from this turn's snapshot: it published it
                // just before a new lease left, possibly after this turn began (a stale, idle
                // figure would refuse the lease's first messages).
                let cx = OfferCx {
                    own_delay_ns: self.sched.peer_delay[me],
                    lessor_delay_ns: self.signals[from as usize].delay_ns(),
                    service_ns: self.sched.cost.ns[f],
                };
                let admission = self.sched.policy.on_offer(&data, &cx);
                l.admit(admission, &mut out);
                Activation::Lessee(i)
            }
            kind @ (MessageKind::Block | MessageKind::Unblock | MessageKind::Retire) => {
                self.release(slot);
                let i = self.lessee_of(f, from);
                let control = match kind {
                    MessageKind::Block => Control::Block { barrier: e.header.barrier() },
                    MessageKind::Unblock => Control::Unblock { barrier: e.header.barrier() },
                    _ => Control::Retire,
                };
                let l = &mut self.slots.lessees[i].as_mut().expect("slot").machine;
                l.receive(control, &mut out).expect("lessee accepts its lessor's control");
                Activation::Lessee(i)
            }
            kind @ (MessageKind::Accept | MessageKind::Refuse) => {
                let t0 = now_ns();
                self.release(slot);
                let actor = self.slots.actors[f].as_mut().expect("lessor");
                let seq = actor.machine.widen_seq(seq_of(&e.header));
                let info = actor.slots.iter_mut().find(|s| s.shard == from).expect("lessee info");
                let control = if kind == MessageKind::Accept {
                    info.accepted += 1;
                    Control::Accept { seq }
                } else {
                    info.refused += 1;
                    self.tele.stats[app].actors.refused += 1;
                    Control::Refuse { seq }
                };
                actor.machine.receive(from, control, &mut out).expect("answer in forward order");
                self.exec(Activation::Lessor(f), &mut out);
                let dt = now_ns().saturating_sub(t0);
                self.sched.cost.answer_ns[f] = (self.sched.cost.answer_ns[f] * 7 + dt) / 8;
                Activation::Lessor(f)
            }
            MessageKind::Partial => {
                let actor = self.slots.actors[f].as_mut().expect("lessor");
                let state = decode_partial(actor, &mut self.mail.held, slot, &e);
                self.tele.stats[app].actors.partial_bytes += u64::from(e.len);
                let control = Control::Partial { barrier: e.header.barrier(), state };
                actor.machine.receive(from, control, &mut out).expect("partial for the current barrier");
                self.release(slot);
                Activation::Lessor(f)
            }
            MessageKind::Returned => {
                let actor = self.slots.actors[f].as_mut().expect("lessor");
                actor.returned.push((from, Pending { header: data, slot, off: e.off, len: e.len }));
                self.slots.cmds = out;
                return;
            }
            MessageKind::Retired => {
                let actor = self.slots.actors[f].as_mut().expect("lessor");
                let partial = decode_partial(actor, &mut self.mail.held, slot, &e);
                let mut returned = Vec::new();
                actor.returned.retain(|&(s, m)| {
                    if s == from {
                        returned.push(m);
                    }
                    s != from
                });
                actor.slots.retain(|s| s.shard != from);
                let stats = &mut self.tele.stats[app].actors;
                stats.partial_bytes += u64::from(e.len);
                stats.lessees_retired += 1;
                actor.machine.receive(from, Control::Retired { partial, returned }, &mut out).expect("retired");
                self.release(slot);
                Activation::Lessor(f)
            }
            kind => unreachable!("{kind:?} is not a protocol message"),
        };
        self.exec(who, &mut out);
        self.slots.cmds = out;
        if let Activation::Lessee(i) = who {
            self.close_if_retired(i);
        }
    }

    /// Open a lessee slot of function `f` for the lessor on `lessor`.
    fn open_lessee(&mut self, f: usize, lessor: ShardId, leased_at: u64) -> usize {
        let fp = &self.plan.functions[f];
        let instance = fp.shards.iter().position(|&s| s == lessor).unwrap_or(0) as u32;
        let cx = InstanceCx { shard: lessor, shards: self.plan.shards, instance, parallelism: fp.shards.len() as u32 };
        let Ok(op) = (fp.factory)(cx).into_actor() else {
            unreachable!("a lease for a function whose state is not mergeable")
        };
        let slot = LesseeSlot {
            function: f as FunctionId,
            lessor,
            machine: Lessee::new(lessor, op),
            scheduled: false,
            leased_at: Some(leased_at),
        };
        let i = match self.slots.lessees.iter().position(Option::is_none) {
            Some(i) => {
                self.slots.lessees[i] = Some(slot);
                i
            }
            None => {
                self.slots.lessees.push(Some(slot));
                self.slots.lessees.len() - 1
            }
        };
        let app = self.sched.cost.fn_app[f] as usize;
        self.tele.stats[app].actors.lease_delivery_ns.saturating_record(now_ns().saturating_sub(leased_at).max(1));
        self.host(app, 1);
        self.tele.lessees_here[f] += 1;
        self.tele.lessees_max[f] = self.tele.lessees_max[f].max(self.tele.lessees_here[f]);
        let here: u64 = (0..self.tele.lessees_here.len())
            .filter(|&g| self.sched.cost.fn_app[g] as usize == app)
            .map(|g| self.tele.lessees_here[g])
            .sum();
        let gauge = &mut self.tele.stats[app].actors.lessees_max;
        *gauge = (*gauge).max(here);
        i
    }

    fn lessee_of(&self, f: usize, lessor: ShardId) -> usize {
        let is = |s: &Option<LesseeSlot>| s.as_ref().is_some_and(|s| s.function as usize == f && s.lessor == lessor);
        self.slots.lessees.iter().position(is).expect("a control message for an open lessee slot")
    }

    /// Drop a lessee slot that shipped its last partial.
    fn close_if_retired(&mut self, i: usize) {
        let retired = self.slots.lessees[i].as_ref().is_some_and(|s| s.machine.mode() == LesseeMode::Retired);
        if retired {
            let slot = self.slots.lessees[i].take().expect("slot");
            let app = self.sched.cost.fn_app[slot.function as usize] as usize;
            self.host(app, -1);
            self.tele.lessees_here[slot.function as usize] -= 1;
        }
    }

    /// Execute what a machine asked for; true if it leased a lessee.
    fn exec(&mut self, who: Activation, out: &mut Commands) -> bool {
        let mut leased = None;
        for command in out.drain(..) {
            match command {
                Command::Schedule => {}
                Command::Done { msg } => self.release_pending(msg),
                Command::Send { to, control } => {
                    if matches!(control, Control::Lease { .. }) {
                        leased = Some(to);
                    }
                    self.send_control(who, to, control)
                }
            }
        }
        if let Some(to) = leased {
            // Scale-up reaction: the lease and its first forward leave now, not at the turn's
            // end, and the load they were decided on is published first (the lessee admits a
            // forward against the lessor's published delay: a stale, idle figure would refuse it).
            self.publish_load();
            self.out.flush_to(to as usize);
        }
        self.observe(who);
        self.schedule(who);
        leased.is_some()
    }

    fn release_pending(&mut self, msg: Pending) {
        if msg.slot != NO_PAYLOAD {
            self.release(msg.slot);
        }
    }

    /// Encode a control message as an envelope to shard `to`.
    fn send_control(&mut self, who: Activation, to: ShardId, control: Control<ActorOp, Pending>) {
        let f = match who {
            Activation::Lessor(f) => f,
            Activation::Lessee(i) => self.slots.lessees[i].as_ref().expect("slot").function as usize,
        };
        let app = self.sched.cost.fn_app[f];
        let mut h = Header::data(app, f as FunctionId, 0);
        let to_ = to as usize;
        let stats = &mut self.tele.stats[app as usize].actors;
        match control {
            Control::Lease { .. } => {
                // The lessee builds its own partition value from the function's factory.
                // When the decision was taken (not the turn's start): the scale-up reaction
                // runs from here to the first message run on the lessee.
                let h = Header::protocol(h, MessageKind::Lease, ProtocolArg::Lease { at_ns: now_ns() });
                stats.lessees_created += 1;
                let actor = self.slots.actors[f].as_mut().expect("lessor");
                actor.slots.push(SlotInfo { shard: to, last_forward_ns: self.sched.now, refused: 0, accepted: 0 });
                self.out.push_bytes(to_, h, &[]);
            }
            Control::Forward { seq, msg } => {
                stats.forwarded += 1;
                let actor = self.slots.actors[f].as_mut().expect("lessor");
                if let Some(info) = actor.slots.iter_mut().find(|s| s.shard == to) {
                    info.last_forward_ns = self.sched.now;
                }
                let h = Header::protocol(msg.header, MessageKind::Forward, ProtocolArg::Seq(seq as u32));
                self.out.push_bytes(to_, h, self.mail.held.batch(msg.slot).payload(msg.off, msg.len));
            }
            Control::Accept { seq } | Control::Refuse { seq } => {
                let accept = matches!(control, Control::Accept { .. });
                let kind = if accept { MessageKind::Accept } else { MessageKind::Refuse };
                let h = Header::protocol(h, kind, ProtocolArg::Seq(seq as u32));
                self.out.push_bytes(to_, h, &[]);
            }
            Control::Block { barrier } | Control::Unblock { barrier } => {
                let block = matches!(control, Control::Block { .. });
                let kind = if block { MessageKind::Block } else { MessageKind::Unblock };
                let h = Header::protocol(h, kind, ProtocolArg::Barrier(barrier));
                self.out.push_bytes(to_, h, &[]);
            }
            Control::Retire => {
                h.kind = MessageKind::Retire;
                self.out.push_bytes(to_, h, &[]);
            }
            Control::Partial { barrier, state } => {
                let h = Header::protocol(h, MessageKind::Partial, ProtocolArg::Barrier(barrier));
                self.out.push_archive(to_, h, state.export());
            }
            Control::Retired { partial, returned } => {
                for msg in returned {
                    let h = Header { kind: MessageKind::Returned, ..msg.header };
                    self.out.push_bytes(to_, h, self.mail.held.batch(msg.slot).payload(msg.off, msg.len));
                    self.release(msg.slot);
                }
                h.kind = MessageKind::Retired;
                self.out.push_archive(to_, h, partial.export());
            }
        }
    }

    /// Put the activation's token on the run queue if it has work and none is there.
    fn schedule(&mut self, who: Activation) {
        let (header, off) = match who {
            Activation::Lessor(f) => {
                let actor = self.slots.actors[f].as_mut().expect("lessor");
                let next = match actor.machine.next_work() {
                    Some(Work::Regular(m)) | Some(Work::Critical { msg: m, .. }) => m.header,
                    None => return,
                };
                if std::mem::replace(&mut actor.scheduled, true) {
                    return;
                }
                (next, 0)
            }
            Activation::Lessee(i) => {
                let Some(slot) = self.slots.lessees[i].as_mut() else { return };
                let Some(next) = slot.machine.next_accepted().map(|m| m.header) else { return };
                if std::mem::replace(&mut slot.scheduled, true) {
                    return;
                }
                (next, 1 + i as u32)
            }
        };
        // A new lessee's first message jumps the queue: it is late at home by construction, and
        // the scale-up reaction is the time until it runs.
        let first = matches!(who, Activation::Lessee(i) if self.slots.lessees[i].as_ref().is_some_and(|s| s.leased_at.is_some()));
        let now = self.sched.now;
        self.sched.enqueue_with(&self.plan.apps, now, &header, |priority, arrival| {
            let priority = if first { 0 } else { priority };
            QEntry { header, priority, arrival, slot: TOKEN, off, len: 0 }
        });
    }

    /// Barrier figures from the lessor's mode changes.
    fn observe(&mut self, who: Activation) {
        let Activation::Lessor(f) = who else { return };
        let app = self.sched.cost.fn_app[f] as usize;
        let actor = self.slots.actors[f].as_mut().expect("lessor");
        let mode = actor.machine.mode();
        let changed = std::mem::discriminant(&mode) != std::mem::discriminant(&actor.mode);
        let done = actor.machine.last_barrier().unwrap_or(0);
        if !changed && actor.barriers.front().is_none_or(|&(id, _, _)| id > done) {
            return; // the common case, once per message: no clock read
        }
        let now = now_ns();
        let stats = &mut self.tele.stats[app].actors;
        if changed {
            let spent = now.saturating_sub(actor.mode_since);
            match actor.mode {
                Mode::Blocked { .. } => {
                    stats.blocked_ns += spent;
                    self.tele.fn_blocked_ns[f] += spent;
                }
                Mode::Critical { .. } => {
                    stats.critical_ns += spent;
                    self.tele.fn_critical_ns[f] += spent;
                }
                Mode::Runnable => {}
            }
            actor.mode = mode;
            actor.mode_since = now;
        }
        while let Some(&(id, at, lessees)) = actor.barriers.front() {
            if id > done {
                break;
            }
            actor.barriers.pop_front();
            stats.barriers += 1;
            // Only a barrier that had lessees to block and merge is timed: without, it is just
            // its critical message run in order, and would dilute what scale-out costs.
            if lessees {
                stats.barrier_ns.saturating_record(now.saturating_sub(at).max(1));
            }
        }
    }

    /// Queue a regular message of an idle actor (`LessorActor::idle`) on the plain path.
    fn enqueue_direct(&mut self, m: Pending) {
        let now = self.sched.now;
        self.sched.enqueue_with(&self.plan.apps, now, &m.header, |priority, arrival| m.direct_entry(priority, arrival));
    }

    /// A regular message of the lessor of `f` that bypassed its machine (`LessorActor::idle`
    /// held when it arrived). Everything the machine received after it is on the same FIFO
    /// queue behind it (the machine's token), so it runs exactly where the machine would have
    /// run it: the machine's queue was empty, and no lessee could hold an earlier message.
    pub(super) fn run_direct(&mut self, e: &QEntry) {
        let f = e.header.function as usize;
        if e.header.kind == MessageKind::Watermark {
            return self.run_direct_watermark(f, &e.header);
        }
        let app = self.sched.cost.fn_app[f] as usize;
        if !self.faults.app_failed(app) {
            let sampled = e.arrival.is_multiple_of(COST_SAMPLE);
            self.run_plain(f, &e.header, Payload::Held(e.slot, e.off, e.len), sampled);
        }
        self.release(e.slot);
    }

    /// Run regular record `h` of actor `f` on its state, bypassing its idle machine (a plain
    /// record: `run_direct`, `run_chained_window`); time it if `sampled`.
    fn run_plain(&mut self, f: usize, h: &Header, payload: Payload<'_>, sampled: bool) {
        let app = self.sched.cost.fn_app[f] as usize;
        self.tele.stats[app].service_ns += self.sched.cost.ns[f];
        self.touch(app);
        self.debug_assert_group_here(f, h.key_hash);
        let fp = &self.plan.functions[f];
        let t0 = if sampled { now_ns() } else { self.sched.now };
        self.sched.pre_apply(&self.plan.apps, h, t0);
        let payload = match payload {
            Payload::Held(slot, off, len) => self.mail.held.batch(slot).payload(off, len),
            Payload::Bytes(bytes) => bytes,
        };
        let op = self.slots.actors[f].as_mut().expect("lessor").machine.state_mut();
        let mut router = Router::new(&mut self.out, &mut self.sched, &self.placement, &fp.outputs, *h);
        op.on_data(h, payload, MessageClass::Regular, &mut router);
        self.sched.post_apply(&self.plan.apps, h, t0);
        if sampled {
            let dt = now_ns().saturating_sub(t0);
            self.sched.cost.sample(f, dt);
        }
    }

    /// Chained records of built-in window `f` (`shard::chain`; its queued messages have run):
    /// each runs as `run_direct` runs a plain one while the window's machine is idle and
    /// records may chain. From the first that finds it otherwise, the rest arrive at the machine
    /// in order, as mail does (`actor_arrival`), from a batch held as if it came from this
    /// shard.
    pub(super) fn run_chained_window(&mut self, f: usize, stretch: &[Entry], batch: &Batch) {
        let app = self.sched.cost.fn_app[f] as usize;
        for (i, e) in stretch.iter().enumerate() {
            let plain = self.chain_on()
                && !self.mig.holds_back(f)
                && !self.sched.runq.holds_control(f as FunctionId)
                && self.slots.actors[f].as_deref().is_some_and(|a| a.takes_plain_records());
            // Not met in the suites: the catch-up before the stretch runs the machine's queue
            // dry, and nothing in a chain's run starts an alignment or a move. The fallback is
            // kept so that, if it happens, the records still reach the window in order.
            debug_assert!(plain, "shard {}: a chained record of window {f} found its machine busy", self.id);
            if !plain {
                return self.window_arrivals(f, &stretch[i..], batch);
            }
            if self.faults.app_failed(app) {
                return;
            }
            self.rb.count(f, e.header.key_hash); // as a plain record's arrival does
            self.tele.stats[app].chained += 1;
            self.sched.msgs_run += 1;
            let sampled = self.sched.msgs_run.is_multiple_of(COST_SAMPLE);
            self.run_plain(f, &e.header, Payload::Bytes(batch.payload(e.off, e.len)), sampled);
        }
    }

    /// Chained records of window `f` that cannot run at once: they reach its machine in order,
    /// as if they had come as mail from this shard. Cold path (copies them).
    fn window_arrivals(&mut self, f: usize, rest: &[Entry], chained: &Batch) {
        let mut held = Batch::default();
        for e in rest {
            held.push_bytes(e.header, chained.payload(e.off, e.len));
        }
        let entries = held.entries.clone();
        let slot = self.mail.held.hold(held, self.id);
        for e in entries {
            self.actor_arrival(e, slot);
            self.check_user_code(f);
        }
    }

    /// An actor whose machine queue holds only regular messages that run here (Runnable, no
    /// lessee) hands them to the head of its function's run queue, in order, where they run
    /// as `run_direct` messages; its machine is then idle, so later arrivals bypass it too.
    /// Without this, one watermark routed through the machine would keep every later message
    /// on the machine's path for as long as arrivals keep its queue from emptying.
    fn hand_back_local(&mut self, f: usize) {
        let actor = self.slots.actors[f].as_mut().expect("lessor");
        if actor.ended || !actor.machine.has_work() {
            return;
        }
        let mut taken = std::mem::take(&mut self.slots.taken);
        taken.extend(actor.machine.take_local(|m| matches!(m.header.kind, MessageKind::Data | MessageKind::Watermark)));
        let base = self.sched.arrival;
        for (i, m) in taken.drain(..).enumerate().rev() {
            let arrival = base + i as u64;
            let priority = self.sched.priority(&self.plan.apps, &m.header, arrival);
            self.sched.runq.push_front(m.direct_entry(priority, arrival));
            self.sched.arrival += 1;
        }
        self.slots.taken = taken;
    }

    /// A watermark that does not matter to the state (`advance_watermark`) of an idle actor:
    /// run as the machine's `run_lessor` runs one.
    fn run_direct_watermark(&mut self, f: usize, h: &Header) {
        let fp = &self.plan.functions[f];
        self.sched.pre_apply(&self.plan.apps, h, self.sched.now);
        let groups = self.placement.groups();
        let moving_group = self.mig.outgoing_group(f);
        let op = self.slots.actors[f].as_mut().expect("lessor").machine.state_mut();
        let mut router = Router::new(&mut self.out, &mut self.sched, &self.placement, &fp.outputs, *h);
        actor_watermark(op, h.event_time, moving_group, groups, &mut router);
        self.sched.post_apply(&self.plan.apps, h, self.sched.now);
        broadcast(&mut self.out, &self.plan, &self.placement, &fp.outputs, *h, MessageKind::Watermark, h.event_time);
    }

    /// Run one work item of the activation a token stands for.
    pub(super) fn run_token(&mut self, e: &QEntry) {
        // Service times are sampled as in `apply_data`: one token run in `COST_SAMPLE` is timed.
        let sampled = e.arrival.is_multiple_of(COST_SAMPLE);
        if e.off == 0 {
            self.run_lessor(e.header.function as usize, sampled);
        } else {
            self.run_lessee(e.off as usize - 1, sampled);
        }
    }

    fn run_lessor(&mut self, f: usize, sampled: bool) {
        let mut out = std::mem::take(&mut self.slots.cmds);
        let fp = &self.plan.functions[f];
        let actor = self.slots.actors[f].as_mut().expect("lessor");
        actor.scheduled = false;
        if matches!(actor.machine.mode(), Mode::Critical { remaining: 1, .. }) {
            // The last critical message unblocks the actor and its buffer replays. The placements
            // chosen on arrival were made while this shard was blocked and looked busy: ask
            // `on_route` again with the loads as they will be, message by message.
            let (cost, cost_to_go, now) = (self.sched.cost.ns[f].max(1), self.sched.cost.to_go_ns[f], self.sched.now);
            let forward_ns = self.sched.cost.forward_ns[f] + self.sched.cost.answer_ns[f];
            let mut here = actor.machine.queued().saturating_sub(actor.machine.buffered()) as u64 * cost;
            let mut there: Vec<(ShardId, u64)> =
                actor.machine.lessees().map(|(s, _)| (s, self.sched.peer_delay[s as usize])).collect();
            let policy = &mut self.sched.policy;
            actor.machine.plan_replay(|msg, decision| {
                let target = match decision {
                    Decision::Local => return Decision::Local,
                    Decision::Lessee(s) | Decision::NewLessee(s) => s,
                };
                let Some(t) = there.iter_mut().find(|(s, _)| *s == target) else { return decision };
                let h = &msg.header;
                let laxity_ns = h.deadline_ns as i64 - now as i64 - cost_to_go as i64;
                let route =
                    RouteCx { home_delay_ns: here, peer_delay_ns: t.1, service_ns: cost, laxity_ns, forward_ns };
                if policy.on_route(h, &route) == Placement::Lessee {
                    t.1 += cost;
                    decision
                } else {
                    here += cost;
                    Decision::Local
                }
            });
        }
        let t0 = if sampled { now_ns() } else { self.sched.now };
        let held = &self.mail.held;
        let failed = self.faults.app_failed(fp.app as usize);
        let mut ran: Option<(Pending, MessageClass)> = None;
        // A migration's export runs as a critical message: on the merged state, after every
        // message of the group that reached this shard.
        let groups = self.placement.groups();
        let mut exported = None;
        // A snapshot barrier's run archives the merged state (and keeps it).
        let mut archived = None;
        // A watermark that runs while a group moves out fires every key but the group's (see
        // `Shard::advance`).
        let moving_group = self.mig.outgoing_group(f);
        let apply = |op: &mut ActorOp, work: Work<Pending>| {
            let (msg, class) = work.into_parts();
            self.sched.pre_apply(&self.plan.apps, &msg.header, t0);
            let mut router = Router::new(&mut self.out, &mut self.sched, &self.placement, &fp.outputs, msg.header);
            match msg.header.kind {
                MessageKind::Watermark => actor_watermark(op, msg.header.event_time, moving_group, groups, &mut router),
                MessageKind::End => op.on_end(&mut router),
                MessageKind::Snapshot => archived = Some(op.archive_keys()),
                MessageKind::MigrateState => {
                    let ProtocolArg::Move { group, .. } = msg.header.arg() else {
                        unreachable!("a move names its group")
                    };
                    let moving = move |h: u64| dirigo_actors::ids::key_group(h, groups) == group;
                    // Its end waits for the move (`defer_end`): the state is all here.
                    exported = Some(op.export_keys(&moving).expect("only actors that split are moved"));
                }
                _ if failed => {} // its app failed: the message is dropped unapplied
                _ => op.on_data(&msg.header, held.batch(msg.slot).payload(msg.off, msg.len), class, &mut router),
            }
            self.sched.post_apply(&self.plan.apps, &msg.header, t0);
            ran = Some((msg, class));
        };
        actor.machine.run_next(apply, &mut out).expect("lessor runs its work");
        if let Some((msg, class)) = ran {
            match msg.header.kind {
                MessageKind::Watermark => {
                    let wm = msg.header.event_time;
                    broadcast(
                        &mut self.out,
                        &self.plan,
                        &self.placement,
                        &fp.outputs,
                        msg.header,
                        MessageKind::Watermark,
                        wm,
                    );
                }
                MessageKind::End => {
                    broadcast(
                        &mut self.out,
                        &self.plan,
                        &self.placement,
                        &fp.outputs,
                        msg.header,
                        MessageKind::End,
                        u64::MAX,
                    );
                    self.slots.live -= 1;
                    self.slots.actors[f].as_mut().expect("lessor").ended = true;
                    let counted = std::mem::take(&mut self.hosting.counted[f]);
                    self.host(fp.app as usize, -(counted as i32));
                    self.snapshot_instance_ended(f);
                }
                MessageKind::Snapshot => self.actor_aligned(&msg.header, archived),
                // The state leaves after this run's commands (its barrier's unblock) went out:
                // what waited for the move (a watermark, the end) may raise the next barrier.
                MessageKind::MigrateState => {}
                _ => {
                    self.tele.stats[self.sched.cost.fn_app[f] as usize].service_ns += self.sched.cost.ns[f];
                    self.touch(self.sched.cost.fn_app[f] as usize);
                    self.release_pending(msg);
                    if sampled && class == MessageClass::Regular {
                        let dt = now_ns().saturating_sub(t0);
                        self.sched.cost.sample(f, dt);
                    }
                }
            }
        }
        let actor = self.slots.actors[f].as_mut().expect("lessor");
        if actor.ended && actor.machine.mode() == Mode::Runnable {
            let leased: Vec<ShardId> =
                actor.machine.lessees().filter(|&(_, p)| p == SlotPhase::Leased).map(|(s, _)| s).collect();
            for s in leased {
                actor.machine.retire(s, &mut out).expect("retire a leased lessee");
            }
        }
        self.hand_back_local(f);
        self.exec(Activation::Lessor(f), &mut out);
        self.slots.cmds = out;
        if let Some(bytes) = exported {
            self.send_group(f, bytes);
        }
    }

    fn run_lessee(&mut self, i: usize, sampled: bool) {
        let mut out = std::mem::take(&mut self.slots.cmds);
        let Some(slot) = self.slots.lessees[i].as_mut() else {
            self.slots.cmds = out;
            return;
        };
        slot.scheduled = false;
        let f = slot.function as usize;
        let fp = &self.plan.functions[f];
        // The first run on a new lessee is timed too: it ends the scale-up reaction.
        let t0 = if sampled || slot.leased_at.is_some() { now_ns() } else { self.sched.now };
        let held = &self.mail.held;
        let failed = self.faults.app_failed(fp.app as usize);
        let mut ran = None;
        let apply = |op: &mut ActorOp, work: Work<Pending>| {
            let Work::Regular(msg) = work else { unreachable!("a lessee runs regular messages only") };
            self.sched.pre_apply(&self.plan.apps, &msg.header, t0);
            let mut router = Router::new(&mut self.out, &mut self.sched, &self.placement, &fp.outputs, msg.header);
            if !failed {
                let payload = held.batch(msg.slot).payload(msg.off, msg.len);
                op.on_data(&msg.header, payload, MessageClass::Regular, &mut router);
            }
            self.sched.post_apply(&self.plan.apps, &msg.header, t0);
            ran = Some(msg);
        };
        slot.machine.run_next(apply, &mut out);
        if let Some(leased_at) = slot.leased_at.take() {
            let app = fp.app as usize;
            self.tele.stats[app].actors.scale_up_ns.saturating_record(t0.saturating_sub(leased_at).max(1));
        }
        if let Some(msg) = ran {
            self.tele.stats[self.sched.cost.fn_app[f] as usize].service_ns += self.sched.cost.ns[f];
            self.touch(self.sched.cost.fn_app[f] as usize);
            self.release_pending(msg);
            if sampled {
                let dt = now_ns().saturating_sub(t0);
                self.sched.cost.sample(f, dt);
            }
        }
        self.exec(Activation::Lessee(i), &mut out);
        self.slots.cmds = out;
    }

    /// Every tick: the policy may retire lessees of the lessors here.
    pub(super) fn tick_actors(&mut self, now: u64) {
        let me = self.id as usize;
        let idle_limit_ns = self.settings.lessee_idle.as_nanos() as u64;
        let mut out = std::mem::take(&mut self.slots.cmds);
        for f in 0..self.slots.actors.len() {
            let Some(actor) = self.slots.actors[f].as_mut() else { continue };
            // Forward costs are measured only on forwards: an estimate that holds every message
            // at home (one preempted sample) would never be corrected. Each tick moves it an
            // eighth of the way back to the prior, so the lessor tries again and re-measures.
            for cost in [&mut self.sched.cost.forward_ns[f], &mut self.sched.cost.answer_ns[f]] {
                if *cost > FORWARD_PRIOR_NS {
                    *cost = (*cost * 7 + FORWARD_PRIOR_NS) / 8;
                }
            }
            if actor.machine.mode() != Mode::Runnable || actor.slots.is_empty() {
                continue;
            }
            for info in &mut actor.slots {
                let leased = actor.machine.lessees().any(|(s, p)| s == info.shard && p == SlotPhase::Leased);
                if !leased {
                    continue;
                }
                let cx = LesseeCx {
                    idle_ns: now.saturating_sub(info.last_forward_ns),
                    idle_limit_ns,
                    refused: std::mem::take(&mut info.refused),
                    accepted: std::mem::take(&mut info.accepted),
                    lessee_delay_ns: self.sched.peer_delay[info.shard as usize],
                    lessor_delay_ns: self.sched.peer_delay[me],
                };
                if self.sched.policy.retire_lessee(&cx) {
                    actor.machine.retire(info.shard, &mut out).expect("retire a leased lessee");
                }
            }
            self.exec(Activation::Lessor(f), &mut out);
        }
        self.slots.cmds = out;
    }
    /// `delta` activations of `app` opened (1) or closed (-1) on this shard: account the time
    /// it hosted at least one (shard-seconds).
    pub(super) fn host(&mut self, app: usize, delta: i32) {
        self.hosting.change(app, delta, &mut self.tele.stats[app].actors.hosted_ns);
    }
}

/// Fire watermark `wm` on an actor's state. While group `moving` leaves, it fires for every key
/// but the group's (see `Shard::advance`).
fn actor_watermark<E: dirigo_actors::operator::Emitter>(
    op: &mut ActorOp,
    wm: u64,
    moving: Option<dirigo_actors::ids::KeyGroup>,
    groups: u16,
    out: &mut E,
) {
    match moving {
        Some(g) => {
            let moving = move |k: u64| dirigo_actors::ids::key_group(k, groups) == g;
            let stash = op.export_keys(&moving).expect("only actors that split are moved");
            op.on_watermark(wm, out);
            op.import_keys(&stash).expect("a moving group goes back after a watermark");
        }
        None => op.on_watermark(wm, out),
    }
}

/// The partial state in entry `e` of held batch `slot`: taken from the batch when it travelled
/// alone (a large one), else copied out of it.
fn decode_partial(actor: &LessorActor, held: &mut super::held::Held, slot: u32, e: &Entry) -> ActorOp {
    let op = actor.machine.state();
    match held.take_sole_payload(slot, e.off, e.len) {
        Some(bytes) => op.decode_partial_owned(bytes),
        None => op.decode_partial(held.batch(slot).payload(e.off, e.len)),
    }
}

/// Messages queued inside the actor machines of a shard, per function: `add(function, count)`
/// (a load figure: the run queue holds one token per activation).
pub(super) fn backlog(
    actors: &[Option<Box<LessorActor>>],
    lessees: &[Option<LesseeSlot>],
    mut add: impl FnMut(usize, u64),
) {
    for (f, actor) in actors.iter().enumerate() {
        if let Some(actor) = actor {
            add(f, actor.machine.queued() as u64);
        }
    }
    for slot in lessees.iter().flatten() {
        add(slot.function as usize, slot.machine.queued() as u64);
    }
}

/// The forward sequence number of a Forward, Accept or Refuse.
#[inline]
fn seq_of(h: &Header) -> u32 {
    match h.arg() {
        ProtocolArg::Seq(seq) => seq,
        other => unreachable!("a {:?} carries no sequence number ({other:?})", h.kind),
    }
}
