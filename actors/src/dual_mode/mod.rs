//! The dual-mode virtual actor protocol as sans-I/O state machines: one [`Lessor`] (the home
//! activation, authoritative state) and its [`Lessee`]s (borrowed slots with partial state).
//!
//! Nothing here has threads, clocks, I/O or randomness. The engine drives each activation with
//! explicit inputs and executes the [`Command`]s they push into its outbox:
//!
//! | input | lessor | lessee |
//! |---|---|---|
//! | a regular message arrives on channel `c` | [`Lessor::route`] with a [`Decision`] | - |
//! | a barrier (and its critical message) arrives on `c` | [`Lessor::barrier`] | - |
//! | a [`Control`] arrives from the other side | [`Lessor::receive`] | [`Lessee::receive`] |
//! | the policy admits or refuses the oldest forward | - | [`Lessee::admit`] |
//! | the scheduler runs the activation | [`Lessor::run_next`] | [`Lessee::run_next`] |
//! | the policy retires a lessee | [`Lessor::retire`] | - |
//!
//! Outputs: [`Command::Send`] (deliver a control message to a shard, on the FIFO mailbox of that
//! pair), [`Command::Schedule`] (the activation has work: put it on the shard's run queue) and
//! [`Command::Done`] (a message the activation no longer holds: its payload may be recycled).
//! Work runs through `run_next(f)`: the machine hands `f` the activation's state and one
//! [`Work`] item, a regular message to fold in or a critical message that sees the merged state.
//! When to run is the engine's (and its policy's) choice; what may run is the machine's.
//!
//! ## Modes of the lessor ([`Mode`])
//! - **Runnable**: regular messages run locally or are forwarded, as the caller decides.
//!   Forwarding is two-phase: the lessor keeps each forwarded message until the lessee accepts
//!   it, and runs it itself if the lessee refuses.
//! - **Blocked**: a barrier reached the lessor on some input channel. It forwards nothing, sends
//!   `Block` to every lessee, buffers messages that arrive on a channel after that channel
//!   delivered the barrier, and keeps running messages from channels that have not.
//! - **Critical**: every channel delivered the barrier, every partial is merged, every message
//!   before the barrier has run: the barrier's critical messages run alone, in channel order.
//!   After the last one the lessor sends `Unblock`, replays the buffered messages first (in
//!   arrival order) and is Runnable again.
//!
//! ```
//! use dirigo_actors::dual_mode::{Admission, Command, Config, Control, Decision};
//! use dirigo_actors::dual_mode::{Lessee, Lessor, Work};
//! use dirigo_actors::state::{AccessMode, Sum};
//!
//! // The control messages of an outbox, as the engine's mailboxes would carry them.
//! fn sent<S, M>(out: &mut Vec<Command<S, M>>) -> Vec<Control<S, M>> {
//!     out.drain(..).filter_map(|c| match c {
//!         Command::Send { control, .. } => Some(control),
//!         Command::Schedule | Command::Done { .. } => None,
//!     }).collect()
//! }
//! let fold = |s: &mut Sum<u64>, w: Work<u64>| if let Work::Regular(v) = w { s.add(v) };
//! let config = Config { access: AccessMode::Mergeable, max_lessees: 1, channels: 1 };
//! let (mut lessor, mut out) = (Lessor::new(Sum(0), config), Vec::new());
//!
//! // Runnable: the policy sends 5 to a new lessee on shard 1 (Lease, then Forward).
//! lessor.route(0, 5, Decision::NewLessee(1), &mut out).unwrap();
//! let mut to_lessee = sent(&mut out).into_iter();
//! let Some(Control::Lease { initial }) = to_lessee.next() else { unreachable!() };
//! let mut lessee = Lessee::new(0, initial);
//! lessee.receive(to_lessee.next().unwrap(), &mut out).unwrap();
//! lessee.admit(Admission::Accept, &mut out);
//! lessee.run_next(fold, &mut out);
//! for accept in sent(&mut out) { lessor.receive(1, accept, &mut out).unwrap(); }
//!
//! // A barrier with a critical message: Block, the lessee ships its partial, the critical runs.
//! lessor.barrier(0, 1, Some(0), &mut out).unwrap();
//! for block in sent(&mut out) { lessee.receive(block, &mut out).unwrap(); }
//! for partial in sent(&mut out) { lessor.receive(1, partial, &mut out).unwrap(); }
//! let mut seen = None;
//! lessor.run_next(|s: &mut Sum<u64>, _critical| seen = Some(s.0), &mut out).unwrap();
//! assert_eq!(seen, Some(5));
//! assert_eq!(sent(&mut out), vec![Control::Unblock { barrier: 1 }]);
//! ```

mod align;
mod check;
mod control;
mod error;
mod lessee;
mod lessor;

pub use check::{Ledger, Violation};
pub use control::{Control, ControlKind};
pub use error::ProtocolError;
pub use lessee::{Lessee, LesseeMode};
pub use lessor::{Lessor, Mode, SlotPhase};

use crate::ids::ShardId;
use crate::state::AccessMode;

/// Sequence number of a forward, unique per lessor (for two-phase forwarding and checks).
pub type Seq = u64;
/// A barrier's id: barriers reach each input channel in increasing id order.
pub type BarrierId = u64;
/// One of the actor's input channels, `0..Config::channels`.
pub type ChannelId = u16;

/// How one actor's activations behave: fixed when the actor is activated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Exclusive state never has lessees; mergeable state may.
    pub access: AccessMode,
    /// Most lessees at once (0: never forward).
    pub max_lessees: usize,
    /// Input channels a barrier must arrive on before its critical messages run (at least 1).
    pub channels: u16,
}

/// Where the policy wants a regular message to run. Advice: the lessor runs the message itself
/// when the advice cannot be followed (exclusive state, the lessee is retiring or unknown, the
/// lessee limit is reached, or the actor is blocked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run on the lessor.
    Local,
    /// Forward to the existing lessee on this shard.
    Lessee(ShardId),
    /// Forward to the lessee on this shard, leasing a slot there first if there is none.
    NewLessee(ShardId),
}

/// A lessee's answer to the oldest forward it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Take it: it will run here.
    Accept,
    /// Hand it back: the lessor runs it.
    Refuse,
}

/// One unit of work handed to `run_next`'s function together with the activation's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work<M> {
    /// Fold a regular message into the (possibly partial) state.
    Regular(M),
    /// A critical message: the state is the lessor's, merged and consolidated at `barrier`.
    Critical { barrier: BarrierId, msg: M },
}

/// How a message runs on an actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageClass {
    /// It only folds into the state: it may run on a lessee's partial.
    Regular,
    /// It must see the consolidated state: it runs alone on the lessor, at a barrier.
    Critical,
}

impl<M> Work<M> {
    /// The message and how it runs.
    pub fn into_parts(self) -> (M, MessageClass) {
        match self {
            Work::Regular(m) => (m, MessageClass::Regular),
            Work::Critical { msg, .. } => (msg, MessageClass::Critical),
        }
    }
}

/// What the engine must do after an input.
#[derive(Clone, Debug, PartialEq)]
pub enum Command<S, M> {
    /// Put `control` on the FIFO mailbox to shard `to`.
    Send { to: ShardId, control: Control<S, M> },
    /// The activation had no work and now has some: put it on its shard's run queue.
    Schedule,
    /// The activation let go of `msg` without running it (a lessor's kept copy once the lessee
    /// accepted it, a lessee's refused offer): the engine may recycle its payload.
    Done { msg: M },
}

/// The outbox an input pushes commands into; the caller drains it and reuses the allocation.
pub type Commands<S, M> = Vec<Command<S, M>>;

#[cfg(test)]
mod tests;
