//! Key-group migration between the shards of one node: the old owner's state for one group of
//! one keyed function moves to a new owner while messages keep flowing, with nothing lost,
//! duplicated or reordered per key.
//!
//! The protocol (A: old owner, B: new owner, X: every shard of the node, A and B included):
//!
//! 1. A sends `Migrate(g)` to B. B refuses (`MigrateRefused`) if it is moving a group of the same
//!    function out itself; otherwise it starts **holding back** every message of the function
//!    that reaches it (data of every group, watermarks, ends: in arrival order), writes itself
//!    into the placement table for `g`, and sends `Fence(g, A)` to every X.
//! 2. X handles the fence on arrival: from then on it routes `g` to B (the fence carries the
//!    table write: mailboxes release and acquire), and it answers A with a `FenceAck` on the same
//!    channel as everything it routed to A before, so the ack arrives behind all of it.
//! 3. A queues each `FenceAck` in order with the function's messages (the run queue is FIFO per
//!    function; a dual-mode actor counts them on arrival and then runs a barrier, so lessees
//!    drain and the state is merged). When the last one runs, every message of `g` sent to A has
//!    been applied: A removes the group's keys from its instance and sends them to B as an
//!    archive (`MigrateState`).
//! 4. B merges them into its instance, lets the instance's watermark fire what is due in them,
//!    and replays what it held back, in order.
//!
//! A shard moves at most one group of a function out at a time and never while it is taking
//! one in (and refuses to take one in while it moves one out), so two shards can never wait
//! for each other. Migration stays inside a node: in a cluster every node routes by its own
//! copy of the table, so apps there keep the shards they were placed on (`AppPlan::reach`).

use std::collections::VecDeque;

use dirigo_actors::envelope::{Header, MessageKind, ProtocolArg};
use dirigo_actors::ids::{key_group, FunctionId, KeyGroup, ShardId};
use dirigo_net::clock::now_ns;
use dirigo_net::mailbox::Entry;
use rkyv::util::AlignedVec;

use super::dual_mode::Pending;
use super::router::Router;
use super::Shard;
use crate::metrics::{MoveEvent, MoveReason};
use crate::placement::PlacementTable;
use crate::plan::{Partition, Plan};
use crate::policy::{MoveCx, MoveVerdict, Policy};

/// A group of this shard on its way out.
#[derive(Clone, Copy, Debug)]
struct Outgoing {
    group: KeyGroup,
    to: ShardId,
    /// Fence acknowledgements still to run.
    acks_left: u32,
    /// B accepted (the fences are out): the move can no longer be called off.
    accepted: bool,
    reason: MoveReason,
    started_ns: u64,
}

/// A group on its way in: it is here when its state arrived and every `Drain` the old owner
/// sent after the function's outputs was answered (only then does this shard run its messages,
/// so what it emits for the group queues behind what the old owner emitted).
#[derive(Clone, Copy, Debug)]
struct Arriving {
    function: usize,
    group: KeyGroup,
    state: bool,
    drained_left: i64,
}

/// The migration state of one shard.
pub(super) struct Migrations {
    /// Per function: whether its groups may move (a keyed function whose instance can split its
    /// state, on a single node).
    movable: Vec<bool>,
    /// Per keyed function: which groups this shard holds (their state is here).
    held: Vec<Vec<bool>>,
    /// Per function: the group moving out, if any.
    outgoing: Vec<Option<Outgoing>>,
    /// Per function: groups on their way in; while any is, its messages are held back.
    incoming: Vec<u32>,
    /// Per function: messages held back, with their batch slots, in arrival order.
    held_back: Vec<VecDeque<(Entry, u32)>>,
    /// Per function: its end, waiting for the group moving out to be gone.
    deferred_end: Vec<Option<Header>>,
    /// Groups on their way in: whether the state arrived, and `Drained` answers still owed.
    arriving: Vec<Arriving>,
    /// Moves completed here (as the old owner) since the last report.
    pub(super) events: Vec<MoveEvent>,
    /// Moves refused by the shard asked, since the last report.
    pub(super) refused: u64,
    /// Forced migrations (a test setting): one every this many messages run; 0 = off.
    forced_every: u64,
    /// `msgs_run` when the last forced move started.
    forced_mark: u64,
    rng: u64,
}

impl Migrations {
    pub(super) fn new(functions: usize, forced_every: u64, seed: u64) -> Self {
        Migrations {
            movable: vec![false; functions],
            held: vec![Vec::new(); functions],
            outgoing: vec![None; functions],
            incoming: vec![0; functions],
            held_back: (0..functions).map(|_| VecDeque::new()).collect(),
            arriving: Vec::new(),
            deferred_end: vec![None; functions],
            events: Vec::new(),
            refused: 0,
            forced_every,
            forced_mark: 0,
            rng: seed | 1,
        }
    }

    /// Room for `functions` functions (an app was deployed).
    pub(super) fn grow(&mut self, functions: usize) {
        self.movable.resize(functions, false);
        self.held.resize(functions, Vec::new());
        self.outgoing.resize(functions, None);
        self.incoming.resize(functions, 0);
        self.held_back.resize_with(functions, VecDeque::new);
        self.deferred_end.resize(functions, None);
    }

    /// Function `f`'s groups on this shard, and whether they may move.
    pub(super) fn init(&mut self, f: usize, held: Vec<bool>, movable: bool) {
        self.held[f] = held;
        self.movable[f] = movable;
    }

    /// Whether messages of `f` arriving now are held back (a group of it is on its way here).
    #[inline]
    pub(super) fn holds_back(&self, f: usize) -> bool {
        self.incoming[f] > 0
    }

    /// Keep a message of `f` for when its incoming groups are here.
    pub(super) fn hold_back(&mut self, f: usize, e: Entry, slot: u32) {
        self.held_back[f].push_back((e, slot));
    }

    /// The end of `f` waits for a move.
    pub(super) fn has_deferred_end(&self, f: usize) -> bool {
        self.deferred_end[f].is_some()
    }

    /// A move of `f` is under way here, out (to the shard named) or in.
    pub(super) fn moving(&self, f: usize) -> bool {
        self.outgoing[f].is_some() || self.incoming[f] > 0
    }

    /// Function `f` was torn down here (its app failed with a shard given up): forget its
    /// moves; returns the batch slots of the messages held back for it, to release.
    pub(super) fn forget(&mut self, f: usize) -> Vec<u32> {
        self.outgoing[f] = None;
        self.incoming[f] = 0;
        self.deferred_end[f] = None;
        self.arriving.retain(|a| a.function != f);
        std::mem::take(&mut self.held_back[f]).into_iter().map(|(_, slot)| slot).collect()
    }

    /// No migration is under way here.
    pub(super) fn idle(&self) -> bool {
        self.outgoing.iter().all(Option::is_none) && self.incoming.iter().all(|&n| n == 0)
    }

    /// Groups of `f` held here.
    pub(super) fn groups_held(&self, f: usize) -> usize {
        self.held[f].iter().filter(|&&h| h).count()
    }

    /// The groups of `f` held here.
    pub(super) fn held_groups(&self, f: usize) -> Vec<KeyGroup> {
        (0..self.held[f].len()).filter(|&g| self.held[f][g]).map(|g| g as KeyGroup).collect()
    }

    /// A group of `f` is moving out: its instance must not end before it is gone (its new
    /// owner may still hold messages of it, and the end runs there on what it brings).
    pub(super) fn moving_out(&self, f: usize) -> bool {
        self.outgoing[f].is_some()
    }

    /// The group of `f` moving out, if any.
    pub(super) fn outgoing_group(&self, f: usize) -> Option<KeyGroup> {
        self.outgoing[f].map(|o| o.group)
    }

    /// `f`'s last input ended while a group of it was moving out: end it after.
    pub(super) fn defer_end(&mut self, f: usize, h: Header) {
        self.deferred_end[f] = Some(h);
    }

    /// Whether `f` is keyed (its groups are tracked here).
    pub(super) fn tracks(&self, f: usize) -> bool {
        !self.held[f].is_empty()
    }

    /// Whether group `g` of `f` is held here.
    pub(super) fn holds(&self, f: usize, g: KeyGroup) -> bool {
        self.held[f].get(g as usize).copied().unwrap_or(false)
    }

    /// Whether `f`'s groups may move.
    pub(super) fn movable(&self, f: usize) -> bool {
        self.movable[f]
    }

    /// A move of `f` is under way here (out or in).
    pub(super) fn busy(&self, f: usize) -> bool {
        self.outgoing[f].is_some() || self.incoming[f] > 0
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic per shard, good enough to pick groups and shards.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A migration protocol header for function `f` of `app`.
fn protocol(app: u16, f: usize, kind: MessageKind, group: KeyGroup, shard: ShardId) -> Header {
    let base = Header { deadline_ns: now_ns(), ..Header::data(app, f as FunctionId, 0) };
    Header::protocol(base, kind, ProtocolArg::Move { group, shard })
}

fn move_arg(h: &Header) -> (KeyGroup, ShardId) {
    match h.arg() {
        ProtocolArg::Move { group, shard } => (group, shard),
        other => unreachable!("a {:?} carries a group ({other:?})", h.kind),
    }
}

/// What function `f`'s instance on shard `id` counts in its app's hosting at start, and, for a
/// keyed function, which of its groups the shard holds.
pub(super) fn initial_groups(
    plan: &Plan,
    placement: &PlacementTable,
    f: usize,
    id: ShardId,
) -> (u32, Option<Vec<bool>>) {
    let f16 = f as FunctionId;
    if placement.is_keyed(f16) {
        let held: Vec<bool> = (0..placement.groups()).map(|g| placement.owner(f16, g) == id).collect();
        (held.iter().filter(|&&h| h).count() as u32, Some(held))
    } else if plan.apps[plan.functions[f].app as usize].shards.contains(&id) {
        (1, None)
    } else {
        (0, None)
    }
}

impl<P: Policy> Shard<P> {
    /// What the policy is asked about a move of group `g` of `f` to `to`.
    pub(super) fn move_cx(&self, f: usize, g: KeyGroup, to: ShardId, reason: MoveReason) -> MoveCx {
        let app = self.sched.cost.fn_app[f];
        MoveCx {
            app,
            function: f as FunctionId,
            group: g,
            from: self.id,
            to,
            reason,
            slo_ns: self.plan.apps[app as usize].slo_ns,
            to_tightest_slo_ns: self.tightest_slo_on(to, app as usize),
        }
    }

    /// The tightest SLO of the apps but `except` running on shard `s`: started there, or
    /// holding key groups there (cold path).
    fn tightest_slo_on(&self, s: ShardId, except: usize) -> u64 {
        let runs_there = |a: usize| {
            self.plan.apps[a].shards.contains(&s)
                || (0..self.plan.functions.len()).any(|f| {
                    self.plan.functions[f].app as usize == a
                        && self.placement.is_keyed(f as FunctionId)
                        && self.placement.hosts(f as FunctionId, s)
                })
        };
        (0..self.plan.apps.len())
            .filter(|&a| a != except && self.deploy.started(a) && !self.app_failed(a) && runs_there(a))
            .map(|a| self.plan.apps[a].slo_ns)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Start moving group `g` of function `f` to shard `to`; false if it cannot move now (the
    /// policy vetoed it, or a move of `f` is under way here, or the group is not here).
    pub(super) fn start_move(&mut self, f: usize, g: KeyGroup, to: ShardId, reason: MoveReason) -> bool {
        let m = &self.mig;
        let instance_live = self.slots.insts[f].as_ref().is_some_and(|i| i.open() > 0);
        if !m.movable[f]
            || !m.held[f].get(g as usize).copied().unwrap_or(false)
            || m.outgoing[f].is_some()
            || m.incoming[f] > 0
            || to == self.id
            || !self.local.contains(&to)
            || !self.plan.functions[f].shards.contains(&to)
            || !instance_live
            || self.moves_frozen()
        {
            return false;
        }
        let app = self.sched.cost.fn_app[f];
        let cx = self.move_cx(f, g, to, reason);
        let to = match self.sched.policy.on_move(&cx) {
            MoveVerdict::Accept => to,
            MoveVerdict::Redirect(s) if s != self.id && self.local.contains(&s) => s,
            MoveVerdict::Redirect(_) | MoveVerdict::Veto => return false,
        };
        let acks = self.local.len() as u32;
        tracing::debug!(shard = self.id, function = f, group = g, to, ?reason, "key group move starts");
        self.mig.outgoing[f] =
            Some(Outgoing { group: g, to, acks_left: acks, accepted: false, reason, started_ns: now_ns() });
        self.out.push_bytes(to as usize, protocol(app, f, MessageKind::Migrate, g, self.id), &[]);
        if let Some(c) = &self.snap.coord {
            c.move_started();
        }
        true
    }

    /// A migration protocol message that is handled on arrival (all but `FenceAck`).
    pub(super) fn on_migration(&mut self, e: Entry, slot: u32, from: ShardId) {
        let f = e.header.function as usize;
        let app = self.sched.cost.fn_app[f];
        let (g, shard) = move_arg(&e.header);
        match e.header.kind {
            MessageKind::Migrate => {
                self.release(slot);
                if self.mig.outgoing[f].is_some() || self.slots.insts[f].as_ref().is_none_or(|i| i.open() == 0) {
                    self.mig.refused += 1;
                    self.out.push_bytes(from as usize, protocol(app, f, MessageKind::MigrateRefused, g, self.id), &[]);
                    return;
                }
                self.mig.incoming[f] += 1;
                self.refresh_chainable(); // held back from now on: nothing chains to it
                self.placement.set_owner(f as FunctionId, g, self.id);
                for x in self.local.clone() {
                    self.out.push_bytes(x as usize, protocol(app, f, MessageKind::Fence, g, from), &[]);
                }
            }
            MessageKind::MigrateRefused => {
                self.release(slot);
                let out = self.mig.outgoing[f].take();
                debug_assert!(out.is_some_and(|o| o.group == g && !o.accepted), "a refusal for the move under way");
                if let Some(c) = &self.snap.coord {
                    c.move_done();
                }
                self.finish_deferred(f);
            }
            MessageKind::Fence => {
                self.release(slot);
                // `shard` is the old owner; the ack goes behind what this shard sent it.
                self.out.push_bytes(shard as usize, protocol(app, f, MessageKind::FenceAck, g, from), &[]);
            }
            MessageKind::Drained => {
                self.release(slot);
                self.arrival_progress(f, g, false, -1);
            }
            MessageKind::MigrateState => {
                let drains = e.header.key_hash as i64;
                // The archive travelled alone (`push_archive`) when large: taken, else copied
                // (aligned) out of its batch.
                let bytes = self.mail.held.take_sole_payload(slot, e.off, e.len).unwrap_or_else(|| {
                    let mut v = AlignedVec::new();
                    v.extend_from_slice(self.mail.held.batch(slot).payload(e.off, e.len));
                    v
                });
                self.release(slot);
                self.import_group(f, g, &bytes, from);
                self.arrival_progress(f, g, true, drains);
            }
            kind => unreachable!("{kind:?} is not handled on arrival"),
        }
    }

    /// A queued control message reached its turn (in order with its function's messages; for
    /// a dual-mode actor, on arrival).
    pub(super) fn on_queued_control(&mut self, h: &Header) {
        match h.kind {
            MessageKind::FenceAck => self.on_fence_ack(h),
            MessageKind::Drain => self.on_drain(h),
            kind => unreachable!("{kind:?} is not queued control"),
        }
    }

    /// A fence acknowledgement reached its turn. After the last one, the group's state leaves.
    fn on_fence_ack(&mut self, h: &Header) {
        let f = h.function as usize;
        let Some(out) = self.mig.outgoing[f].as_mut() else {
            unreachable!("a fence acknowledgement with no move under way")
        };
        out.accepted = true;
        out.acks_left -= 1;
        if out.acks_left > 0 {
            return;
        }
        let (g, to) = (out.group, out.to);
        if self.slots.actors[f].is_some() {
            // On the merged state, after everything before it: a barrier.
            let header = protocol(self.sched.cost.fn_app[f], f, MessageKind::MigrateState, g, to);
            self.actor_barrier(f, Pending::control(header));
        } else {
            let bytes = self.export_group(f, g);
            self.send_group(f, bytes);
        }
    }

    /// What waited for a move of `f` to end (it completed or was refused): its end.
    fn finish_deferred(&mut self, f: usize) {
        if let Some(h) = self.mig.deferred_end[f].take() {
            self.finish_deferred_end(f, h);
        }
    }

    /// The end of `f` that waited for a group to leave.
    fn finish_deferred_end(&mut self, f: usize, h: Header) {
        if self.slots.actors[f].is_some() {
            let end = Header { kind: MessageKind::End, event_time: u64::MAX, ..h };
            self.actor_barrier(f, Pending::control(end));
        } else {
            self.end_instance(f as FunctionId, &h);
        }
    }

    /// How many `Drained` answers the drains sent after `f`'s outputs here come to: through
    /// forward edges they pass on along this shard's instances; a keyed edge, or a function
    /// with no output, ends them.
    fn drain_leaves(&self, f: usize) -> u64 {
        let fp = &self.plan.functions[f];
        fp.outputs
            .iter()
            .map(|e| match e.partition {
                Partition::Forward => self.drain_leaves(e.target as usize).max(1),
                _ => self.plan.functions[e.target as usize].shards.len() as u64,
            })
            .sum()
    }

    /// Send a `Drain` for group `g` (moving to `to`) along `f`'s output edges.
    fn send_drains(&mut self, f: usize, g: KeyGroup, to: ShardId, origin: u64) {
        let plan = self.plan.clone();
        for e in &plan.functions[f].outputs {
            let target = e.target as usize;
            let h = protocol(self.sched.cost.fn_app[target], target, MessageKind::Drain, g, to);
            let h = Header { key_hash: origin, port: e.port, ..h };
            match e.partition {
                Partition::Forward => self.out.push_bytes(self.id as usize, h, &[]),
                _ => {
                    for &s in &plan.functions[target].shards {
                        self.out.push_bytes(s as usize, h, &[]);
                    }
                }
            }
        }
    }

    /// A `Drain` reached its turn at function `h.function`: on the old owner, pass it on along
    /// forward edges (the next instance there still has the group's earlier outputs to run);
    /// past a keyed edge, or at a function with no output, answer the new owner.
    fn on_drain(&mut self, h: &Header) {
        let (g, to) = move_arg(h);
        let (origin, moving) = ((h.key_hash & 0xFFFF) as ShardId, (h.key_hash >> 16) as usize);
        let t = h.function as usize;
        let forward_edges = self.plan.functions[t].outputs.iter().any(|e| e.partition == Partition::Forward);
        let keyed_edges = self.plan.functions[t].outputs.iter().any(|e| e.partition != Partition::Forward);
        if origin == self.id && (forward_edges || keyed_edges) && self.came_forward(h) {
            self.send_drains(t, g, to, h.key_hash);
        } else {
            let reply = protocol(self.sched.cost.fn_app[moving], moving, MessageKind::Drained, g, self.id);
            self.out.push_bytes(to as usize, reply, &[]);
        }
    }

    /// Whether drain `h` reached its function through a forward edge (it stays on the old
    /// owner's chain of instances).
    fn came_forward(&self, h: &Header) -> bool {
        let t = h.function as usize;
        self.plan.functions[t].inputs.iter().any(|i| i.port == h.port && i.partition == Partition::Forward)
    }

    /// Remove group `g`'s keys from `f`'s instance here. Its end cannot have run: an end that
    /// comes while a group moves out waits for it (`defer_end`).
    pub(super) fn export_group(&mut self, f: usize, g: KeyGroup) -> AlignedVec {
        let groups = self.placement.groups();
        let moving = move |h: u64| key_group(h, groups) == g;
        let op = self.slots.ops[f].as_mut().expect("a move of a function with an instance here");
        op.export_keys(&moving)
    }

    /// The state of the group moving out of `f` left: tell its new owner, send a `Drain` behind
    /// everything `f` emitted here, and account the move.
    pub(super) fn send_group(&mut self, f: usize, bytes: AlignedVec) {
        let out = self.mig.outgoing[f].take().expect("a move under way");
        let app = self.sched.cost.fn_app[f];
        self.mig.held[f][out.group as usize] = false;
        let len = bytes.len() as u64;
        let drains = self.drain_leaves(f);
        tracing::debug!(
            shard = self.id,
            function = f,
            group = out.group,
            to = out.to,
            bytes = bytes.len(),
            "key group leaves"
        );
        let h = protocol(app, f, MessageKind::MigrateState, out.group, self.id);
        self.out.push_archive(out.to as usize, Header { key_hash: drains, ..h }, bytes);
        let origin = u64::from(self.id) | (f as u64) << 16;
        self.send_drains(f, out.group, out.to, origin);
        self.finish_deferred(f);
        self.host_groups(f, -1);
        let now = now_ns();
        self.mig.events.push(MoveEvent {
            at_ns: now,
            app,
            function: f as FunctionId,
            group: out.group,
            from: self.id,
            to: out.to,
            reason: out.reason,
            bytes: len,
            duration_ns: now.saturating_sub(out.started_ns),
        });
    }

    /// Group `g` of `f` arrived: merge it, fire what the instance's watermark makes due in it,
    /// and replay what was held back once no other group of `f` is on its way.
    fn import_group(&mut self, f: usize, g: KeyGroup, payload: &[u8], from: ShardId) {
        if !payload.is_empty() {
            let res = match &mut self.slots.ops[f] {
                Some(op) => op.import_keys(payload),
                None => self.import_actor_keys(f, payload),
            };
            if let Err(e) = res {
                // Archives come from this process's own shards: a failure is a bug, not input.
                panic!("shard {}: group {g} of `{}` did not import: {e}", self.id, self.plan.functions[f].name);
            }
        }
        self.mig.held[f][g as usize] = true;
        self.host_groups(f, 1);
        if !self.plan.apps[self.sched.cost.fn_app[f] as usize].shards.contains(&self.id) {
            // A group of an app that did not start here: it came to spread load.
            self.rb.spread_in_ns = now_ns();
        }
        // Spread or given back: either way, no load goes back to `from` for a while.
        self.rb.took_load_from(from, now_ns());
        let wm = self.slots.insts[f].as_ref().map_or(0, |i| i.watermark);
        if wm > 0 && !payload.is_empty() {
            self.fire_imported(f, wm);
        }
    }

    /// Group `g` of `f` on its way here: its state arrived (`state`), or `drained` more
    /// answers came (negative) or are owed. Once both are done, the held-back messages run.
    fn arrival_progress(&mut self, f: usize, g: KeyGroup, state: bool, drained: i64) {
        let arriving = &mut self.mig.arriving;
        let i = match arriving.iter().position(|a| a.function == f && a.group == g) {
            Some(i) => i,
            None => {
                arriving.push(Arriving { function: f, group: g, state: false, drained_left: 0 });
                arriving.len() - 1
            }
        };
        arriving[i].state |= state;
        arriving[i].drained_left += drained;
        if !arriving[i].state || arriving[i].drained_left != 0 {
            return;
        }
        arriving.swap_remove(i);
        self.mig.incoming[f] -= 1;
        if let Some(c) = &self.snap.coord {
            c.move_done();
        }
        if self.mig.incoming[f] == 0 {
            self.refresh_chainable();
            let back = std::mem::take(&mut self.mig.held_back[f]);
            for (e, slot) in back {
                self.readmit(e, slot);
            }
            self.finish_deferred(f);
        }
    }

    /// The instance's watermark `wm` already passed: fire what is due in the keys that just
    /// arrived (the rest fired when it passed; a repeated watermark changes nothing for them).
    fn fire_imported(&mut self, f: usize, wm: u64) {
        let app = self.sched.cost.fn_app[f];
        let h = Header { kind: MessageKind::Watermark, event_time: wm, ..Header::data(app, f as FunctionId, 0) };
        if self.slots.actors[f].is_some() {
            // On the merged state: a barrier, like any watermark that matters to an actor.
            self.actor_barrier(f, Pending::control(h));
            return;
        }
        let fp = &self.plan.functions[f];
        let op = self.slots.ops[f].as_mut().expect("instance");
        let mut router = Router::new(&mut self.out, &mut self.sched, &self.placement, &fp.outputs, h);
        op.on_watermark(wm, &mut router);
    }

    /// Account a key group of `f` gained (+1) or lost (-1) as hosting its app here.
    fn host_groups(&mut self, f: usize, delta: i32) {
        if self.slots.insts[f].as_ref().is_some_and(|i| i.open() > 0) {
            self.hosting.counted[f] = self.hosting.counted[f].checked_add_signed(delta).expect("group count");
            self.host(self.sched.cost.fn_app[f] as usize, delta);
        }
    }

    /// Every `forced_every` messages run (a test setting; queued and chained ones alike), move
    /// a random group of a random movable function held here to a random other shard it may
    /// go to. `msgs_run` is the shard's count of messages run so far.
    pub(super) fn force_moves(&mut self, msgs_run: u64) {
        if self.mig.forced_every == 0 || msgs_run - self.mig.forced_mark < self.mig.forced_every {
            return;
        }
        self.mig.forced_mark = msgs_run;
        let candidates: Vec<usize> = (0..self.mig.movable.len())
            .filter(|&f| self.mig.movable[f] && self.mig.outgoing[f].is_none() && self.mig.groups_held(f) > 0)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let f = candidates[(self.mig.next_random() % candidates.len() as u64) as usize];
        let held: Vec<KeyGroup> =
            (0..self.mig.held[f].len()).filter(|&g| self.mig.held[f][g]).map(|g| g as KeyGroup).collect();
        let g = held[(self.mig.next_random() % held.len() as u64) as usize];
        let targets: Vec<ShardId> = self.plan.functions[f]
            .shards
            .iter()
            .copied()
            .filter(|&s| s != self.id && self.local.contains(&s))
            .collect();
        if targets.is_empty() {
            return;
        }
        let to = targets[(self.mig.next_random() % targets.len() as u64) as usize];
        self.start_move(f, g, to, MoveReason::Forced);
    }
}
