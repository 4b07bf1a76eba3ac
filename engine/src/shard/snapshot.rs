//! Snapshots on a shard: barriers injected at the sources, aligned at every instance, state
//! archived at alignment, parts reported to the controller (the protocol is in
//! [`crate::snapshot::coord`]).
//!
//! An instance aligns barrier `n` across its input channels: once a channel delivered it, what
//! follows on that channel waits (a queued entry is set aside when it reaches the head of its
//! function's queue; a dual-mode actor's arrival is set aside on arrival) until every open
//! channel delivered it. Then the instance's state is archived (export and import back: the
//! same archive a key-group move ships; a dual-mode actor does it as a critical message, on the
//! merged state), a sink seals its output of epoch `n`, barrier `n` goes downstream, and what
//! waited runs first, in its order. The hot path pays one branch per message while no instance
//! here is aligning.
//!
//! An instance or source that has ended has nothing in flight: its state (final) and position
//! (the end) are taken when the snapshot starts here.

use std::sync::Arc;

use dirigo_actors::envelope::{Header, MessageKind};
use dirigo_net::clock::now_ns;
use dirigo_net::mailbox::Entry;
use rkyv::util::AlignedVec;

use super::router::broadcast;
use super::Shard;
use crate::instance::OperatorInstance;
use crate::policy::Policy;
use crate::runqueue::QEntry;
use crate::snapshot::coord::{ShardParts, SnapshotCoord};
use crate::snapshot::restore::{source_part, state_part, Restore, FINAL};
use crate::snapshot::Part;

/// A shard's snapshot state.
#[derive(Default)]
pub(super) struct Snap {
    pub(super) coord: Option<Arc<SnapshotCoord>>,
    /// The coordinator's generation last read.
    seen: u64,
    /// Sources inject barriers up to this one.
    target: u64,
    /// The snapshot being taken here, or the last one taken.
    pub(super) epoch: u64,
    /// Instances and sources still to take their share of `epoch`.
    pending: usize,
    reported: bool,
    parts: Vec<Part>,
    copies: Vec<(String, dirigo_actors::builtins::StateCopy)>,
    durable: Vec<flume::Receiver<Result<(), String>>>,
    errors: Vec<String>,
    /// Instances waiting for a barrier on some channel: while 0, no message is checked.
    pub(super) aligning: usize,
    /// Per function: queued entries set aside behind a barrier, in order.
    held_q: Vec<Vec<QEntry>>,
    /// Per function: arrivals of a dual-mode actor set aside behind a barrier, in order.
    held_arr: Vec<Vec<(Entry, u32)>>,
}

impl Snap {
    pub(super) fn new(coord: Option<Arc<SnapshotCoord>>, functions: usize, resumed: u64) -> Snap {
        Snap {
            coord,
            epoch: resumed,
            target: resumed,
            held_q: (0..functions).map(|_| Vec::new()).collect(),
            held_arr: (0..functions).map(|_| Vec::new()).collect(),
            ..Snap::default()
        }
    }

    pub(super) fn grow(&mut self, functions: usize) {
        self.held_q.resize_with(functions, Vec::new);
        self.held_arr.resize_with(functions, Vec::new);
    }
}

impl<P: Policy> Shard<P> {
    /// Once per turn: notice a freeze (start no move) and a barrier to inject.
    pub(super) fn snapshot_turn(&mut self) {
        let Some(c) = self.snap.coord.as_ref() else { return };
        let g = c.generation();
        if g == self.snap.seen {
            return;
        }
        self.snap.seen = g;
        let c = c.clone();
        if c.moves_frozen() {
            c.froze(self.id as usize, c.freezing());
        }
        let target = c.injecting();
        if target > self.snap.target {
            self.snap.target = target;
            if self.snap.epoch < target {
                self.begin_snapshot(target);
            }
            self.inject_barriers();
        }
    }

    /// Whether key-group moves wait for a snapshot.
    pub(super) fn moves_frozen(&self) -> bool {
        self.snap.coord.as_ref().is_some_and(|c| c.moves_frozen())
    }

    /// Snapshot `n` starts here (its barrier is to be injected, or one reached an instance).
    fn begin_snapshot(&mut self, n: u64) {
        tracing::debug!(shard = self.id, epoch = n, "snapshot begins");
        debug_assert_eq!(n, self.snap.epoch + 1, "shard {}: snapshot {n} after {}", self.id, self.snap.epoch);
        let s = &mut self.snap;
        s.epoch = n;
        s.pending = 0;
        s.reported = false;
        s.parts.clear();
        s.copies.clear();
        s.durable.clear();
        s.errors.clear();
        for f in 0..self.slots.insts.len() {
            let Some(open) = self.slots.insts[f].as_ref().map(|i| i.open()) else { continue };
            if self.torn_down(f) || self.app_failed(self.sched.cost.fn_app[f] as usize) {
                continue;
            }
            if open == 0 {
                self.seal_instance(f, n);
            } else {
                self.snap.pending += 1;
            }
        }
        for i in 0..self.src.runs.len() {
            if self.src.runs[i].done {
                self.record_source(i, n);
            } else {
                self.snap.pending += 1;
            }
        }
        self.maybe_report();
    }

    /// Inject the current barrier at every source that has not yet (at a poll boundary).
    fn inject_barriers(&mut self) {
        let n = self.snap.target;
        for i in 0..self.src.runs.len() {
            if self.src.runs[i].done || self.src.runs[i].barrier >= n {
                continue;
            }
            self.record_source(i, n);
            self.snap.pending -= 1;
            let sp = &self.plan.sources[self.src.runs[i].index];
            let mut h = Header::data(sp.app, 0, 0);
            h.ingress_ns = now_ns();
            broadcast(&mut self.out, &self.plan, &self.placement, &sp.outputs, h, MessageKind::Snapshot, n);
        }
        self.maybe_report();
    }

    /// Source `i`'s position for snapshot `n`.
    fn record_source(&mut self, i: usize, n: u64) {
        let run = &mut self.src.runs[i];
        run.barrier = n;
        let sp = &self.plan.sources[run.index];
        let instance = sp.shards.iter().position(|&s| s == self.id).unwrap_or(0) as u32;
        let bytes = run.inst.position().to_bytes();
        self.snap.parts.push(Part::new(source_part(run.index, instance), bytes));
    }

    /// Source `i` finished: if the snapshot under way still waited for it, its position is the
    /// end (its `End` goes downstream instead of the barrier).
    pub(super) fn snapshot_source_finished(&mut self, i: usize) {
        if self.snap.coord.is_some() && self.src.runs[i].barrier < self.snap.epoch {
            let n = self.snap.epoch;
            self.record_source(i, n);
            self.snap.pending -= 1;
            self.maybe_report();
        }
    }

    /// Whether a queued entry waits behind a barrier (then it is set aside). Hot path: one
    /// branch while no instance here aligns.
    #[inline]
    pub(super) fn held_by_barrier(&mut self, e: &QEntry) -> bool {
        if self.snap.aligning == 0 {
            return false;
        }
        let f = e.header.function as usize;
        if self.slots.insts[f].as_ref().is_some_and(|i| i.blocks(e.header.port, e.header.from_shard)) {
            self.snap.held_q[f].push(*e);
            return true;
        }
        false
    }

    /// Whether an arrival for a dual-mode actor waits behind a barrier (then it is set aside).
    #[inline]
    pub(super) fn arrival_held_by_barrier(&mut self, e: Entry, slot: u32) -> bool {
        if self.snap.aligning == 0 {
            return false;
        }
        let f = e.header.function as usize;
        if self.slots.insts[f].as_ref().is_some_and(|i| i.blocks(e.header.port, e.header.from_shard)) {
            self.snap.held_arr[f].push((e, slot));
            return true;
        }
        false
    }

    fn recount_aligning(&mut self) {
        self.snap.aligning = self.slots.insts.iter().flatten().filter(|i| i.aligning).count();
    }

    /// A barrier reached instance `f` on its channel: returns whether `f` is now aligned on
    /// it (the caller takes the instance's share).
    pub(super) fn on_barrier(&mut self, h: &Header) -> bool {
        let n = h.event_time;
        if self.snap.epoch < n {
            self.begin_snapshot(n);
        }
        let inst = self.slots.insts[h.function as usize].as_mut().expect("instance");
        let aligned = inst.on_barrier(h.port, h.from_shard, n);
        self.recount_aligning();
        aligned
    }

    /// A channel of `f` ended: whether `f` is now aligned on a barrier the channel still owed.
    pub(super) fn aligned_by_end(&mut self, f: usize) -> bool {
        if self.snap.coord.is_none() {
            return false;
        }
        let aligned = self.slots.insts[f].as_mut().is_some_and(|i| i.aligned_by_end());
        self.recount_aligning();
        aligned
    }

    /// Barrier `aligned` passed instance `f` (not a dual-mode actor): take its share, send the
    /// barrier on, and run what waited behind it.
    pub(super) fn instance_aligned(&mut self, h: &Header) {
        let f = h.function as usize;
        let n = self.slots.insts[f].as_ref().expect("instance").aligned;
        let t0 = now_ns();
        self.seal_instance(f, n);
        tracing::debug!(
            shard = self.id,
            function = f,
            epoch = n,
            held = self.snap.held_q[f].len(),
            seal_us = (now_ns() - t0) / 1000,
            "aligned"
        );
        self.snap.pending -= 1;
        let fp = &self.plan.functions[f];
        broadcast(&mut self.out, &self.plan, &self.placement, &fp.outputs, *h, MessageKind::Snapshot, n);
        for e in std::mem::take(&mut self.snap.held_q[f]).into_iter().rev() {
            self.sched.runq.push_front(e);
        }
        self.maybe_report();
    }

    /// Barrier `n` passed dual-mode actor `f` (its critical message ran on the merged state,
    /// which `archive` holds): record it and send the barrier on.
    pub(super) fn actor_aligned(&mut self, h: &Header, archive: Option<Option<AlignedVec>>) {
        let f = h.function as usize;
        let n = h.event_time;
        self.put_state(f, archive.flatten());
        self.snap.pending -= 1;
        let fp = &self.plan.functions[f];
        broadcast(&mut self.out, &self.plan, &self.placement, &fp.outputs, *h, MessageKind::Snapshot, n);
        self.maybe_report();
    }

    /// Run the arrivals of actor `f` that waited behind a barrier it just aligned on.
    pub(super) fn release_arrivals(&mut self, f: usize) {
        for (e, slot) in std::mem::take(&mut self.snap.held_arr[f]) {
            self.actor_arrival(e, slot);
        }
    }

    /// Instance `f` ended while snapshot `epoch` still waited for it: its final state is its
    /// share.
    pub(super) fn snapshot_instance_ended(&mut self, f: usize) {
        let n = self.snap.epoch;
        if self.snap.coord.is_none() || self.slots.insts[f].as_ref().is_none_or(|i| i.aligned >= n) {
            return;
        }
        self.seal_instance(f, n);
        self.snap.pending -= 1;
        self.recount_aligning();
        self.maybe_report();
    }

    /// Take instance `f`'s share of snapshot `n` now: its state archived, or its output sealed
    /// (a sink). Marks it aligned on `n`.
    fn seal_instance(&mut self, f: usize, n: u64) {
        if let Some(inst) = self.slots.insts[f].as_mut() {
            inst.aligned = n;
            inst.aligning = false;
        }
        let name = &self.plan.functions[f].name;
        match (self.slots.ops[f].as_mut(), self.slots.actors[f].as_mut()) {
            (Some(OperatorInstance::Sink(sink)), _) => {
                seal_sink(sink, name, self.id, n, &mut self.snap.durable, &mut self.snap.errors);
            }
            (Some(op), _) if !op.migrates() => {
                // Embedded plans only: a config app's functions are checked when it compiles.
                let why = "keeps state the engine cannot archive (a user function, or a window or join with lateness)";
                self.snap.errors.push(format!("shard {}: `{name}` {why}", self.id));
            }
            (Some(op), _) => match op.archive_keys() {
                Ok(crate::instance::StateOut::Bytes(all)) => self.put_state(f, Some(all)),
                Ok(crate::instance::StateOut::Copy(copy)) => self.snap.copies.push((state_part(f, self.id), copy)),
                Err(e) => panic!("shard {}: `{name}` did not take back its own state: {e}", self.id),
            },
            (None, Some(actor)) => {
                let all = actor.state_mut().archive_keys();
                self.put_state(f, all);
            }
            (None, None) => {}
        }
    }

    /// An instance's archive, a part unless empty (None: its state does not split, so it cannot
    /// be archived).
    fn put_state(&mut self, f: usize, archive: Option<AlignedVec>) {
        match archive {
            Some(a) if a.is_empty() => {}
            Some(a) => self.snap.parts.push(Part::new(state_part(f, self.id), a.to_vec())),
            None => {
                let name = &self.plan.functions[f].name;
                self.snap.errors.push(format!("shard {}: actor `{name}` keeps state it cannot archive", self.id));
            }
        }
    }

    fn maybe_report(&mut self) {
        let s = &mut self.snap;
        if s.pending > 0 || s.reported || s.epoch == 0 {
            return;
        }
        s.reported = true;
        tracing::debug!(shard = self.id, epoch = s.epoch, "snapshot share reported");
        let Some(c) = s.coord.as_ref() else { return };
        c.report(ShardParts {
            shard: self.id as usize,
            epoch: s.epoch,
            parts: std::mem::take(&mut s.parts),
            copies: std::mem::take(&mut s.copies),
            durable: std::mem::take(&mut s.durable),
            errors: std::mem::take(&mut s.errors),
            stopping: self.stop.load(std::sync::atomic::Ordering::Acquire)
                || self.faults.failed_apps.iter().any(|f| f.load(std::sync::atomic::Ordering::Acquire)),
        });
    }

    /// The shard is done (every instance ended): each sink seals what it produced after the
    /// last barrier as the epoch after it, for the controller to commit with the snapshot that
    /// says the run finished ([`FINAL`]).
    pub(super) fn seal_at_exit(&mut self) {
        let Some(c) = self.snap.coord.clone() else { return };
        let epoch = self.snap.epoch + 1;
        let (mut durable, mut errors) = (Vec::new(), Vec::new());
        for (f, op) in self.slots.ops.iter_mut().enumerate() {
            if let Some(OperatorInstance::Sink(sink)) = op {
                seal_sink(sink, &self.plan.functions[f].name, self.id, epoch, &mut durable, &mut errors);
            }
        }
        let (parts, copies) = (Vec::new(), Vec::new());
        let stopping = self.stop.load(std::sync::atomic::Ordering::Acquire);
        c.report(ShardParts { shard: self.id as usize, epoch: FINAL, parts, copies, durable, errors, stopping });
    }

    /// Put the state a run resumes from into this shard's instances and sources.
    pub(super) fn restore(&mut self, r: &Restore) {
        for f in 0..self.slots.insts.len() {
            let Some(inst) = self.slots.insts[f].as_mut() else { continue };
            inst.resume_at(r.epoch);
            let Some(bytes) = r.states.get(&(f, self.id)) else { continue };
            let mut archive: AlignedVec = AlignedVec::new();
            archive.extend_from_slice(bytes);
            let name = &self.plan.functions[f].name;
            let res = match (self.slots.ops[f].as_mut(), self.slots.actors[f].as_mut()) {
                (Some(op), _) => op.import_keys(&archive),
                (None, Some(actor)) => actor.state_mut().import_keys(&archive),
                (None, None) => Ok(()),
            };
            if let Err(e) = res {
                panic!("shard {}: the snapshot's state of `{name}` does not fit it: {e}", self.id);
            }
        }
        for run in &mut self.src.runs {
            run.barrier = r.epoch;
            let sp = &self.plan.sources[run.index];
            let instance = sp.shards.iter().position(|&s| s == self.id).unwrap_or(0) as u32;
            let Some(bytes) = r.sources.get(&(run.index, instance)) else { continue };
            let pos = crate::source::SourcePosition::from_bytes(bytes)
                .unwrap_or_else(|e| panic!("shard {}: source `{}`: a damaged position: {e}", self.id, sp.name));
            if let Err(e) = run.inst.seek(&pos) {
                panic!("shard {}: source `{}` cannot resume from the snapshot: {e}", self.id, sp.name);
            }
            // A resumed schedule goes on from where it was, not from its start.
            run.skip_ns = run.inst.next_due_ns().unwrap_or(0);
        }
    }
}

/// Sink `name` seals its output of epoch `n`: a wait for the controller when it is staged
/// elsewhere (`durable`), or what failed (`errors`).
fn seal_sink(
    sink: &mut crate::sink::Sink,
    name: &str,
    shard: u16,
    n: u64,
    durable: &mut Vec<flume::Receiver<Result<(), String>>>,
    errors: &mut Vec<String>,
) {
    match sink.barrier(n) {
        Ok(Some(ack)) => durable.push(ack),
        Ok(None) => {}
        Err(e) => errors.push(format!("shard {shard}: sink `{name}`: {e}")),
    }
}
