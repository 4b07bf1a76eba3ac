//! The lessor: an actor's home activation, its modes (Runnable, Blocked, Critical), two-phase
//! forwarding to lessees, barrier alignment, partial merging, replay and retirement.
//!
//! A documented state machine (see the module docs of [`super`] for the protocol):
//!
//! ```text
//!           barrier on a channel             aligned, no partial owed, pre-barrier work ran
//! Runnable ---------------------> Blocked{b} ---------------------------------> Critical{b}
//!    ^   send Block to lessees     |  buffer the channels that delivered b          |
//!    |                             |  run the other channels' messages here         |
//!    +-----------------------------+-- last critical ran: Unblock, replay buffer <--+
//! ```
//!
//! Invariants, asserted in debug builds and checked by `ProtocolError`s on inputs:
//! - a forwarded message is kept until its lessee answers; answers come in forward order;
//! - no forward is sent unless the actor is Runnable and the state is mergeable;
//! - a critical message runs only with every channel aligned, no partial owed, no forward
//!   unanswered and no pre-barrier message waiting;
//! - barriers complete in increasing id order; buffered messages replay in arrival order,
//!   before any message that arrives after the unblock.

use std::collections::VecDeque;

use super::align::Alignment;
use super::{BarrierId, ChannelId, Command, Config, Control, Decision, ProtocolError, Seq, Work};
use crate::ids::ShardId;
use crate::state::Mergeable;

/// The lessor's mode. Never a set of flags: exactly one of these at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Regular messages run locally or on lessees.
    Runnable,
    /// `barrier` reached the lessor: waiting for alignment, partials and pre-barrier work.
    Blocked { barrier: BarrierId },
    /// `barrier`'s critical messages are running alone; `remaining` have not run yet.
    Critical { barrier: BarrierId, remaining: usize },
}

/// The lessor's view of one lessee slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotPhase {
    /// Takes forwards.
    Leased,
    /// `Block` sent; its `Partial` is owed.
    Blocking { barrier: BarrierId },
    /// Partial merged; waits for `Unblock`.
    Parked { barrier: BarrierId },
    /// `Retire` sent; its `Retired` is owed. Takes no forwards.
    Retiring,
}

/// One lessee slot: where it is, its phase, and the forwards it has not answered (oldest first).
#[derive(Debug)]
struct Slot<M> {
    shard: ShardId,
    phase: SlotPhase,
    in_flight: VecDeque<(Seq, M)>,
}

/// A message that arrived on a channel after that channel delivered the current barrier; a
/// regular one keeps the placement the policy chose on arrival, followed when it replays.
#[derive(Debug)]
enum Arrival<M> {
    Regular { channel: ChannelId, msg: M, decision: Decision },
    Barrier { channel: ChannelId, barrier: BarrierId, critical: Option<M> },
}

/// The home activation of one virtual actor: owns the authoritative state `S`; `M` is the
/// message type the engine carries (a payload handle, or the message itself in tests).
#[derive(Debug)]
pub struct Lessor<S, M> {
    state: S,
    config: Config,
    mode: Mode,
    alignment: Alignment<M>,
    lessees: Vec<Slot<M>>,
    /// Work that runs here, in order: regular messages, or the barrier's critical messages.
    local: VecDeque<Work<M>>,
    /// Arrivals held back by the current barrier, in arrival order.
    buffered: VecDeque<Arrival<M>>,
    next_seq: Seq,
    last_barrier: Option<BarrierId>,
}

impl<S: Mergeable, M: Clone> Lessor<S, M> {
    /// A Runnable lessor with no lessees, holding `state`.
    pub fn new(state: S, config: Config) -> Self {
        Lessor {
            state,
            config,
            mode: Mode::Runnable,
            alignment: Alignment::new(config.channels),
            lessees: Vec::with_capacity(config.max_lessees),
            local: VecDeque::new(),
            buffered: VecDeque::new(),
            next_seq: 0,
            last_barrier: None,
        }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The authoritative state (without the partials lessees hold right now).
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The state, consuming the lessor (when the actor is deactivated).
    /// The lessor's state, to change outside a message (a key group arriving by migration: its
    /// keys are disjoint from every other's, so this is safe in any mode).
    pub fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }

    pub fn into_state(self) -> S {
        self.state
    }

    /// The actor's configuration.
    pub fn config(&self) -> Config {
        self.config
    }

    /// The lessee slots: shard and phase.
    pub fn lessees(&self) -> impl Iterator<Item = (ShardId, SlotPhase)> + '_ {
        self.lessees.iter().map(|slot| (slot.shard, slot.phase))
    }

    /// Forwards not yet answered by their lessee.
    pub fn in_flight(&self) -> usize {
        self.lessees.iter().map(|slot| slot.in_flight.len()).sum()
    }

    /// Messages held back by the current barrier.
    pub fn buffered(&self) -> usize {
        self.buffered.len()
    }

    /// Whether `run_next` has something to run.
    pub fn has_work(&self) -> bool {
        !self.local.is_empty()
    }

    /// Messages waiting here: work to run plus arrivals buffered behind the barrier (a load
    /// figure for the engine's backpressure and delay estimates).
    pub fn queued(&self) -> usize {
        self.local.len() + self.buffered.len()
    }

    /// Lessees whose partial the lessor waits for (blocking or retiring).
    pub fn owed_partials(&self) -> usize {
        let owes = |slot: &&Slot<M>| matches!(slot.phase, SlotPhase::Blocking { .. } | SlotPhase::Retiring);
        self.lessees.iter().filter(owes).count()
    }

    /// Input channels that have not delivered the current barrier (0 when Runnable).
    pub fn unaligned_channels(&self) -> usize {
        match self.mode {
            Mode::Runnable => 0,
            _ => self.alignment.missing(),
        }
    }

    /// The work `run_next` would run next.
    pub fn next_work(&self) -> Option<&Work<M>> {
        self.local.front()
    }

    /// The full sequence number of a forward whose low 32 bits are `low` (an engine may carry
    /// only those): forwards answered are among the last 2^32 sent.
    pub fn widen_seq(&self, low: u32) -> Seq {
        self.next_seq - u64::from((self.next_seq as u32).wrapping_sub(low))
    }

    /// The last barrier whose critical messages all ran.
    pub fn last_barrier(&self) -> Option<BarrierId> {
        self.last_barrier
    }

    /// Input: a regular message arrived on `channel`; `decision` is the policy's advice. Runs it
    /// here, forwards it, or buffers it (the channel already delivered the current barrier).
    pub fn route(
        &mut self,
        channel: ChannelId,
        msg: M,
        decision: Decision,
        out: &mut Vec<Command<S, M>>,
    ) -> Result<(), ProtocolError> {
        self.accept_regular(channel, msg, decision, out)?;
        self.drain_replay(out)
    }

    /// Input: barrier `barrier` arrived on `channel`, with that channel's critical message if
    /// it carries one. The first channel to deliver it blocks the actor.
    pub fn barrier(
        &mut self,
        channel: ChannelId,
        barrier: BarrierId,
        critical: Option<M>,
        out: &mut Vec<Command<S, M>>,
    ) -> Result<(), ProtocolError> {
        self.accept_barrier(channel, barrier, critical, out)?;
        self.drain_replay(out)
    }

    /// Input: a control message from the lessee on shard `from`.
    pub fn receive(
        &mut self,
        from: ShardId,
        control: Control<S, M>,
        out: &mut Vec<Command<S, M>>,
    ) -> Result<(), ProtocolError> {
        match control {
            Control::Accept { seq } => {
                let msg = self.answered(from, seq)?;
                out.push(Command::Done { msg });
                Ok(())
            }
            Control::Refuse { seq } => {
                let msg = self.answered(from, seq)?;
                self.enqueue(Work::Regular(msg), out);
                Ok(())
            }
            Control::Partial { barrier, state } => self.merge_partial(from, barrier, state, out),
            Control::Retired { partial, returned } => self.merge_retired(from, partial, returned, out),
            other => Err(ProtocolError::UnexpectedAtLessor { from, control: other.kind(), mode: self.mode }),
        }?;
        self.drain_replay(out)
    }

    /// Re-decide where the buffered regular messages that will replay at the next unblock go
    /// (those before the first buffered barrier): `decide` sees each message and the placement
    /// chosen on its arrival, in arrival order, and returns the one to follow. Placement only:
    /// the protocol stays exact whatever it returns. An engine calls this just before the
    /// unblock, when the loads that made the arrival-time choice are stale.
    pub fn plan_replay(&mut self, mut decide: impl FnMut(&M, Decision) -> Decision) {
        for arrival in &mut self.buffered {
            match arrival {
                Arrival::Regular { msg, decision, .. } => *decision = decide(msg, *decision),
                Arrival::Barrier { .. } => break,
            }
        }
    }

    /// Input: the policy retires the lessee on `shard` (idle or too slow). It refuses what it
    /// has not accepted, hands back what it has not run, and ships its partial. Only while
    /// Runnable; otherwise retry after the unblock.
    pub fn retire(&mut self, shard: ShardId, out: &mut Vec<Command<S, M>>) -> Result<(), ProtocolError> {
        if self.mode != Mode::Runnable {
            return Err(ProtocolError::NotRunnable { mode: self.mode });
        }
        let slot = self
            .lessees
            .iter_mut()
            .find(|slot| slot.shard == shard && slot.phase == SlotPhase::Leased)
            .ok_or(ProtocolError::UnknownLessee { shard })?;
        slot.phase = SlotPhase::Retiring;
        out.push(Command::Send { to: shard, control: Control::Retire });
        Ok(())
    }

    /// Input: the scheduler runs this activation. Runs the next work item through `apply` with
    /// the state; returns whether there was one. A critical message's `apply` sees the state
    /// merged and consolidated at its barrier.
    pub fn run_next(
        &mut self,
        apply: impl FnOnce(&mut S, Work<M>),
        out: &mut Vec<Command<S, M>>,
    ) -> Result<bool, ProtocolError> {
        let Some(work) = self.local.pop_front() else {
            return Ok(false);
        };
        if let Work::Critical { barrier, .. } = &work {
            debug_assert_eq!(self.owed_partials(), 0, "critical ran with a partial owed");
            debug_assert_eq!(self.in_flight(), 0, "critical ran with a forward unanswered");
            debug_assert!(matches!(self.mode, Mode::Critical { barrier: b, .. } if b == *barrier));
        } else {
            debug_assert!(!matches!(self.mode, Mode::Critical { .. }));
        }
        apply(&mut self.state, work);
        match &mut self.mode {
            Mode::Runnable => {}
            Mode::Blocked { .. } => self.advance(out),
            Mode::Critical { barrier, remaining } => {
                *remaining -= 1;
                if *remaining == 0 {
                    let barrier = *barrier;
                    self.unblock(barrier, out);
                }
            }
        }
        self.drain_replay(out)?;
        Ok(true)
    }

    /// While Runnable with no lessee slot and nothing buffered, hand back the regular messages
    /// queued to run here from the oldest on, as long as `take` says so: the engine may run
    /// them outside the machine, in this order, since nothing can come between them (no barrier
    /// is raised, no forward is out). Empty in any other case.
    pub fn take_local(&mut self, take: impl Fn(&M) -> bool) -> impl Iterator<Item = M> + '_ {
        let free = self.mode == Mode::Runnable && self.lessees.is_empty() && self.buffered.is_empty();
        let n =
            if free { self.local.iter().take_while(|w| matches!(w, Work::Regular(m) if take(m))).count() } else { 0 };
        self.local.drain(..n).map(|work| match work {
            Work::Regular(msg) => msg,
            Work::Critical { .. } => unreachable!("only regular work is taken"),
        })
    }

    // ---- regular messages (hot path) ----

    fn accept_regular(
        &mut self,
        channel: ChannelId,
        msg: M,
        decision: Decision,
        out: &mut Vec<Command<S, M>>,
    ) -> Result<(), ProtocolError> {
        self.alignment.check(channel)?;
        match self.mode {
            Mode::Runnable => self.dispatch(msg, decision, out),
            _ if self.held_back(channel) => {
                self.buffered.push_back(Arrival::Regular { channel, msg, decision });
            }
            // Blocked, and this channel has not delivered the barrier: the message precedes
            // it, so it runs before the critical messages, here (no forwarding while blocked).
            _ => self.enqueue(Work::Regular(msg), out),
        }
        Ok(())
    }

    /// Whether arrivals on `channel` wait for the unblock: the channel delivered the current
    /// barrier (every channel has, once Critical).
    fn held_back(&self, channel: ChannelId) -> bool {
        match self.mode {
            Mode::Runnable => false,
            Mode::Blocked { .. } => self.alignment.has_arrived(channel),
            Mode::Critical { .. } => true,
        }
    }

    fn dispatch(&mut self, msg: M, decision: Decision, out: &mut Vec<Command<S, M>>) {
        match self.placement(decision, out) {
            Some(index) => self.forward(index, msg, out),
            None => self.enqueue(Work::Regular(msg), out),
        }
    }

    /// The slot a message goes to, leasing a new one if the decision asks and the limit allows;
    /// `None` runs it here.
    fn placement(&mut self, decision: Decision, out: &mut Vec<Command<S, M>>) -> Option<usize> {
        if !self.config.access.allows_lessees() {
            return None;
        }
        let shard = match decision {
            Decision::Local => return None,
            Decision::Lessee(shard) | Decision::NewLessee(shard) => shard,
        };
        match self.lessees.iter().position(|slot| slot.shard == shard) {
            Some(index) => (self.lessees[index].phase == SlotPhase::Leased).then_some(index),
            None if matches!(decision, Decision::NewLessee(_)) && self.lessees.len() < self.config.max_lessees => {
                Some(self.lease(shard, out))
            }
            None => None,
        }
    }

    /// Cold path: opens a lessee slot on `shard`.
    fn lease(&mut self, shard: ShardId, out: &mut Vec<Command<S, M>>) -> usize {
        let initial = self.state.partition();
        out.push(Command::Send { to: shard, control: Control::Lease { initial } });
        self.lessees.push(Slot { shard, phase: SlotPhase::Leased, in_flight: VecDeque::new() });
        self.lessees.len() - 1
    }

    /// Phase one of forwarding: keep a copy until the lessee answers.
    fn forward(&mut self, index: usize, msg: M, out: &mut Vec<Command<S, M>>) {
        debug_assert_eq!(self.mode, Mode::Runnable);
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = &mut self.lessees[index];
        slot.in_flight.push_back((seq, msg.clone()));
        out.push(Command::Send { to: slot.shard, control: Control::Forward { seq, msg } });
    }

    fn enqueue(&mut self, work: Work<M>, out: &mut Vec<Command<S, M>>) {
        if self.local.is_empty() {
            out.push(Command::Schedule);
        }
        self.local.push_back(work);
    }

    /// Phase two of forwarding: the lessee on `from` answered `seq`; returns the kept copy.
    fn answered(&mut self, from: ShardId, seq: Seq) -> Result<M, ProtocolError> {
        let slot = self.slot_mut(from)?;
        match slot.in_flight.front() {
            Some((oldest, _)) if *oldest == seq => Ok(slot.in_flight.pop_front().expect("front exists").1),
            front => Err(ProtocolError::UnexpectedSeq { from, expected: front.map(|(oldest, _)| *oldest), got: seq }),
        }
    }

    fn slot_mut(&mut self, shard: ShardId) -> Result<&mut Slot<M>, ProtocolError> {
        self.lessees.iter_mut().find(|slot| slot.shard == shard).ok_or(ProtocolError::UnknownLessee { shard })
    }

    // ---- barriers (cold path) ----

    fn accept_barrier(
        &mut self,
        channel: ChannelId,
        barrier: BarrierId,
        critical: Option<M>,
        out: &mut Vec<Command<S, M>>,
    ) -> Result<(), ProtocolError> {
        self.alignment.check(channel)?;
        let current = match self.mode {
            Mode::Runnable => return self.block(channel, barrier, critical, out),
            Mode::Blocked { barrier } | Mode::Critical { barrier, .. } => barrier,
        };
        if self.held_back(channel) {
            if barrier <= current {
                return Err(ProtocolError::BarrierOutOfOrder { channel, expected: current + 1, got: barrier });
            }
            let arrival = Arrival::Barrier { channel, barrier, critical };
            self.buffered.push_back(arrival);
            return Ok(());
        }
        if barrier != current {
            return Err(ProtocolError::BarrierOutOfOrder { channel, expected: current, got: barrier });
        }
        self.alignment.arrive(channel, barrier, critical)?;
        self.advance(out);
        Ok(())
    }

    /// Runnable -> Blocked: stop forwarding and ask every leased lessee for its partial.
    fn block(
        &mut self,
        channel: ChannelId,
        barrier: BarrierId,
        critical: Option<M>,
        out: &mut Vec<Command<S, M>>,
    ) -> Result<(), ProtocolError> {
        if let Some(last) = self.last_barrier.filter(|last| barrier <= *last) {
            return Err(ProtocolError::BarrierRegressed { got: barrier, last });
        }
        self.alignment.arrive(channel, barrier, critical)?;
        self.mode = Mode::Blocked { barrier };
        for slot in &mut self.lessees {
            if slot.phase == SlotPhase::Leased {
                slot.phase = SlotPhase::Blocking { barrier };
                out.push(Command::Send { to: slot.shard, control: Control::Block { barrier } });
            }
        }
        self.advance(out);
        Ok(())
    }

    fn merge_partial(
        &mut self,
        from: ShardId,
        barrier: BarrierId,
        partial: S,
        out: &mut Vec<Command<S, M>>,
    ) -> Result<(), ProtocolError> {
        let mode = self.mode;
        let slot = self.slot_mut(from)?;
        let blocking = SlotPhase::Blocking { barrier };
        if slot.phase != blocking || mode != (Mode::Blocked { barrier }) {
            return Err(ProtocolError::UnexpectedAtLessor { from, control: super::ControlKind::Partial, mode });
        }
        debug_assert!(slot.in_flight.is_empty(), "answers precede the partial");
        slot.phase = SlotPhase::Parked { barrier };
        self.state.combine(partial);
        self.advance(out);
        Ok(())
    }

    fn merge_retired(
        &mut self,
        from: ShardId,
        partial: S,
        returned: Vec<M>,
        out: &mut Vec<Command<S, M>>,
    ) -> Result<(), ProtocolError> {
        let index = self
            .lessees
            .iter()
            .position(|slot| slot.shard == from && slot.phase == SlotPhase::Retiring)
            .ok_or(ProtocolError::UnknownLessee { shard: from })?;
        let count = self.lessees[index].in_flight.len();
        if count > 0 {
            return Err(ProtocolError::UnresolvedForwards { shard: from, count });
        }
        self.lessees.remove(index);
        self.state.combine(partial);
        for msg in returned {
            self.enqueue(Work::Regular(msg), out);
        }
        self.advance(out);
        Ok(())
    }

    /// Blocked -> Critical once every channel is aligned, no partial is owed and every
    /// pre-barrier message has run.
    fn advance(&mut self, out: &mut Vec<Command<S, M>>) {
        let Mode::Blocked { barrier } = self.mode else {
            return;
        };
        if !self.alignment.is_complete() || self.owed_partials() > 0 || !self.local.is_empty() {
            return;
        }
        debug_assert_eq!(self.in_flight(), 0, "every forward is answered before its partial");
        let local = &mut self.local;
        self.alignment.finish(|msg| local.push_back(Work::Critical { barrier, msg }));
        let remaining = self.local.len();
        self.mode = Mode::Critical { barrier, remaining };
        if remaining == 0 {
            self.unblock(barrier, out);
        } else {
            out.push(Command::Schedule);
        }
    }

    /// Critical -> Runnable: release the parked lessees. The buffer replays (`drain_replay`)
    /// before the input that unblocked returns.
    fn unblock(&mut self, barrier: BarrierId, out: &mut Vec<Command<S, M>>) {
        self.last_barrier = Some(barrier);
        self.mode = Mode::Runnable;
        for slot in &mut self.lessees {
            if let SlotPhase::Parked { .. } = slot.phase {
                slot.phase = SlotPhase::Leased;
                out.push(Command::Send { to: slot.shard, control: Control::Unblock { barrier } });
            }
        }
    }

    /// Whether every arrival now waits for the unblock.
    fn all_held_back(&self) -> bool {
        match self.mode {
            Mode::Runnable => false,
            Mode::Blocked { .. } => self.alignment.is_complete(),
            Mode::Critical { .. } => true,
        }
    }

    /// Replays buffered arrivals in arrival order, as if they arrived now (regular ones with
    /// the placement chosen on arrival, which may forward them), before any later arrival. A
    /// replayed barrier may block again: the arrivals behind it on its channel stay buffered
    /// where they are (and so does every later arrival of that channel: a channel never
    /// overtakes itself), and the scan stops as soon as every channel is held back. A replayed
    /// barrier may also complete and unblock within the scan; then what was kept is no longer
    /// held back, and the scan starts again from the front.
    fn drain_replay(&mut self, out: &mut Vec<Command<S, M>>) -> Result<(), ProtocolError> {
        loop {
            if self.buffered.is_empty() || self.all_held_back() {
                return Ok(());
            }
            let mut kept = VecDeque::new();
            // Channels with a kept arrival: their later arrivals wait behind it.
            let mut waiting: Vec<ChannelId> = Vec::new();
            while let Some(arrival) = self.buffered.pop_front() {
                let channel = match &arrival {
                    Arrival::Regular { channel, .. } | Arrival::Barrier { channel, .. } => *channel,
                };
                if waiting.contains(&channel) || self.held_back(channel) {
                    if !waiting.contains(&channel) {
                        waiting.push(channel);
                    }
                    kept.push_back(arrival);
                    if self.all_held_back() {
                        break;
                    }
                    continue;
                }
                match arrival {
                    Arrival::Regular { channel, msg, decision } => self.accept_regular(channel, msg, decision, out)?,
                    Arrival::Barrier { channel, barrier, critical } => {
                        self.accept_barrier(channel, barrier, critical, out)?
                    }
                }
            }
            let released = waiting.iter().any(|&c| !self.held_back(c));
            while let Some(arrival) = kept.pop_back() {
                self.buffered.push_front(arrival);
            }
            if !released {
                return Ok(());
            }
        }
    }
}
