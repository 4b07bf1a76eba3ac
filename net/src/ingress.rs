//! What a shard polls for new events from outside the process: [`Produced`] (one poll's result),
//! [`IoWakeup`] (how a parked shard learns of new input) and the [`Ingress`] trait that socket
//! sources implement, so the shard's loop drives them without knowing their transport.
//!
//! The shard calls [`Ingress::produce`] from its own loop (no task, no thread per connection); a
//! poll that finds nothing returns [`Produced::Idle`] and the shard moves on. Before it parks,
//! the shard [`arm`](Ingress::arm)s the source, whose readiness waker then rings the shard's
//! doorbell ([`ShardSignal::wake`]) when bytes arrive.

use std::sync::Arc;

use dirigo_actors::record::Value;
use rkyv::util::AlignedVec;

use crate::signal::ShardSignal;

/// One event produced by a source, its payload left in the shard's scratch buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Produced {
    /// A record, in the values scratch; event time from the app's field or the given ms.
    Values { event_time: Option<u64> },
    /// A record of scalars, in the cells scratch (`dirigo_actors::record::Cell`); event time
    /// from the app's field or the given ms.
    Cells { event_time: Option<u64> },
    /// An archive, in the bytes scratch.
    Archive { key_hash: u64, event_time: u64 },
    /// A malformed input was skipped (already logged); nothing to emit.
    Skipped,
    /// Nothing is available now (a socket source read all it could); poll again later.
    Idle,
}

/// How a parked shard learns that a socket source has input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoWakeup {
    /// A readiness waker rings the shard's doorbell (armed as the shard parks).
    Readiness,
    /// The shard wakes after this many ns to poll it.
    Poll(u64),
}

/// A source fed by sockets, polled by the shard that owns it. Runs until the engine stops.
pub trait Ingress {
    /// How a parked shard learns of new input.
    fn wakeup(&self) -> IoWakeup;
    /// Ring the doorbell of the shard owning `signal` when input arrives.
    fn attach(&mut self, signal: &Arc<ShardSignal>);
    /// Before the shard parks: arm the readiness wake-up. False: the shard must not park now
    /// (input already waits where no readiness would report it, or arming failed and the source
    /// fell back to timed polls).
    fn arm(&mut self) -> bool;
    /// Doorbell rings by readiness since the last call.
    fn take_io_wakes(&self) -> u64;
    /// When (engine clock) the shard must poll this source even if no input arrives (a timeout
    /// of its own falls due then); None: only input matters.
    fn due_ns(&self) -> Option<u64>;
    /// Read what is available and produce the next event into the scratch buffers
    /// ([`Produced::Idle`] when nothing is).
    fn produce(&mut self, values: &mut Vec<Value>, bytes: &mut AlignedVec) -> Produced;
}
