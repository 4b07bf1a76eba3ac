//! The lessee: a borrowed slot of an actor on another shard, folding forwarded messages into a
//! partial state that it ships to the lessor at every barrier and when it retires.
//!
//! ```text
//!  Lease      Block{b}, work left          last accepted ran
//! ------> Leased --------------> Draining{b} -----------------> Parked{b}
//!          ^  | Block{b}, no work left                              |
//!          |  +-----------------------------------------------------+
//!          +------------------------- Unblock{b} -------------------+
//!  Leased --Retire--> Retired (refuses unaccepted, hands back unrun, ships partial)
//! ```
//!
//! Forwards wait in an offer queue until the engine's policy admits or refuses them
//! ([`Lessee::admit`]); admitted ones wait in a work queue until the scheduler runs them
//! ([`Lessee::run_next`]). Both queues are FIFO, so answers reach the lessor in forward order.

use std::collections::VecDeque;
use std::mem;

use super::{Admission, BarrierId, Command, Control, ProtocolError, Seq, Work};
use crate::ids::ShardId;
use crate::state::Mergeable;

/// The lessee's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LesseeMode {
    /// Takes forwards and runs them.
    Leased,
    /// `Block{barrier}` arrived: running what it accepted, then ships its partial.
    Draining { barrier: BarrierId },
    /// Partial shipped for `barrier`; waits for `Unblock`.
    Parked { barrier: BarrierId },
    /// Shipped its last partial: the engine drops the slot.
    Retired,
}

/// One lessee slot of an actor on this shard.
#[derive(Debug)]
pub struct Lessee<S, M> {
    lessor: ShardId,
    state: S,
    mode: LesseeMode,
    /// Forwards not yet admitted or refused, oldest first.
    offered: VecDeque<(Seq, M)>,
    /// Admitted messages not yet run, oldest first.
    accepted: VecDeque<M>,
}

impl<S: Mergeable, M> Lessee<S, M> {
    /// The slot opened by a `Lease { initial }` from the lessor on shard `lessor`.
    pub fn new(lessor: ShardId, initial: S) -> Self {
        Lessee { lessor, state: initial, mode: LesseeMode::Leased, offered: VecDeque::new(), accepted: VecDeque::new() }
    }

    /// The current mode.
    pub fn mode(&self) -> LesseeMode {
        self.mode
    }

    /// The partial state (updates since the last barrier).
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The lessor's shard.
    pub fn lessor(&self) -> ShardId {
        self.lessor
    }

    /// Forwards waiting for [`Lessee::admit`].
    pub fn offered(&self) -> usize {
        self.offered.len()
    }

    /// The accepted message `run_next` would run next.
    pub fn next_accepted(&self) -> Option<&M> {
        self.accepted.front()
    }

    /// Messages waiting here: offered and accepted (a load figure).
    pub fn queued(&self) -> usize {
        self.offered.len() + self.accepted.len()
    }

    /// Whether `run_next` has something to run.
    pub fn has_work(&self) -> bool {
        !self.accepted.is_empty()
    }

    /// Input: a control message from the lessor (all but `Lease`, which creates the slot).
    pub fn receive(&mut self, control: Control<S, M>, out: &mut Vec<Command<S, M>>) -> Result<(), ProtocolError> {
        match (control, self.mode) {
            (Control::Forward { seq, msg }, LesseeMode::Leased) => {
                self.offered.push_back((seq, msg));
            }
            (Control::Block { barrier }, LesseeMode::Leased) => self.block(barrier, out),
            (Control::Unblock { barrier }, LesseeMode::Parked { barrier: parked }) if barrier == parked => {
                self.mode = LesseeMode::Leased;
            }
            (Control::Retire, LesseeMode::Leased) => self.retire(out),
            (control, mode) => return Err(ProtocolError::UnexpectedAtLessee { control: control.kind(), mode }),
        }
        Ok(())
    }

    /// Input: the policy admits or refuses the oldest offered forward. Returns whether there
    /// was one.
    pub fn admit(&mut self, admission: Admission, out: &mut Vec<Command<S, M>>) -> bool {
        let Some((seq, msg)) = self.offered.pop_front() else {
            return false;
        };
        debug_assert_eq!(self.mode, LesseeMode::Leased, "offers are resolved on Block/Retire");
        match admission {
            Admission::Accept => {
                self.send(Control::Accept { seq }, out);
                if self.accepted.is_empty() {
                    out.push(Command::Schedule);
                }
                self.accepted.push_back(msg);
            }
            Admission::Refuse => {
                self.send(Control::Refuse { seq }, out);
                out.push(Command::Done { msg });
            }
        }
        true
    }

    /// Input: the scheduler runs this slot. Folds the oldest accepted message into the partial
    /// through `apply`; returns whether there was one.
    pub fn run_next(&mut self, apply: impl FnOnce(&mut S, Work<M>), out: &mut Vec<Command<S, M>>) -> bool {
        let Some(msg) = self.accepted.pop_front() else {
            return false;
        };
        apply(&mut self.state, Work::Regular(msg));
        if let LesseeMode::Draining { barrier } = self.mode {
            if self.accepted.is_empty() {
                self.ship_partial(barrier, out);
            }
        }
        true
    }

    /// Block: what is only offered goes back; what is accepted runs before the partial ships.
    fn block(&mut self, barrier: BarrierId, out: &mut Vec<Command<S, M>>) {
        self.refuse_offered(out);
        if self.accepted.is_empty() {
            self.ship_partial(barrier, out);
        } else {
            self.mode = LesseeMode::Draining { barrier };
        }
    }

    /// Ship the partial, reset to the partition value, park until `Unblock`.
    fn ship_partial(&mut self, barrier: BarrierId, out: &mut Vec<Command<S, M>>) {
        let state = self.take_partial();
        self.send(Control::Partial { barrier, state }, out);
        self.mode = LesseeMode::Parked { barrier };
    }

    /// Retire: refuse the offered, hand back the accepted but unrun, ship the partial.
    fn retire(&mut self, out: &mut Vec<Command<S, M>>) {
        self.refuse_offered(out);
        let partial = self.take_partial();
        let returned = self.accepted.drain(..).collect();
        self.send(Control::Retired { partial, returned }, out);
        self.mode = LesseeMode::Retired;
    }

    fn refuse_offered(&mut self, out: &mut Vec<Command<S, M>>) {
        while let Some((seq, msg)) = self.offered.pop_front() {
            self.send(Control::Refuse { seq }, out);
            out.push(Command::Done { msg });
        }
    }

    fn take_partial(&mut self) -> S {
        let fresh = self.state.partition();
        mem::replace(&mut self.state, fresh)
    }

    fn send(&self, control: Control<S, M>, out: &mut Vec<Command<S, M>>) {
        out.push(Command::Send { to: self.lessor, control });
    }
}
