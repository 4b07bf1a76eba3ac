//! Control messages between a lessor and its lessees: plain data, archived with rkyv to cross
//! cores.
//!
//! Every variant travels on the FIFO mailbox between the lessor's shard and one lessee's shard,
//! and the protocol relies on that order: a lessee's `Accept`/`Refuse` of a forward always
//! precedes its `Partial` or `Retired`, and a lessor's `Forward`s precede the `Block` or `Retire`
//! that follows them.
//!
//! `Control<S, M>` derives `rkyv::Archive`, `Serialize` and `Deserialize`; it archives whenever
//! the state `S` and the message `M` do (all built-in strategies in [`crate::state`] do). An
//! engine whose `M` is an archived payload (bytes) archives `M` as those bytes.

use super::{BarrierId, Seq};

/// A control message of the dual-mode protocol. Lessor to lessee: `Lease`, `Forward`, `Block`,
/// `Unblock`, `Retire`. Lessee to lessor: `Accept`, `Refuse`, `Partial`, `Retired`.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Control<S, M> {
    /// Open a lessee slot on the receiving shard, starting from the lessor's `partition()`.
    /// Always the first message a lessee receives.
    Lease { initial: S },
    /// A regular message offered to the lessee (phase one of forwarding). The lessor keeps a copy
    /// until the lessee answers `Accept` or `Refuse` with the same `seq`.
    Forward { seq: Seq, msg: M },
    /// The lessee took the message `seq`: it will fold it into its partial (phase two).
    Accept { seq: Seq },
    /// The lessee will not run message `seq` (overloaded, blocked or retiring): the lessor
    /// runs its kept copy itself.
    Refuse { seq: Seq },
    /// A barrier reached the lessor: finish the accepted work, then ship the partial.
    Block { barrier: BarrierId },
    /// The lessee's partial at `barrier`; the lessee has reset to the partition value. This is
    /// also the lessee's acknowledgement of `Block` (FIFO order makes a separate ack redundant).
    Partial { barrier: BarrierId, state: S },
    /// The barrier's critical messages ran: forwarding may resume.
    Unblock { barrier: BarrierId },
    /// Leave: refuse what is not accepted, hand back accepted work not yet run, ship the partial.
    Retire,
    /// The lessee's last words: its partial and the accepted messages it did not run, which the
    /// lessor runs itself. The lessee slot is gone after this.
    Retired { partial: S, returned: Vec<M> },
}

/// The variant of a [`Control`] without its payload: for errors and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlKind {
    Lease,
    Forward,
    Accept,
    Refuse,
    Block,
    Partial,
    Unblock,
    Retire,
    Retired,
}

impl<S, M> Control<S, M> {
    /// Which variant this is.
    pub fn kind(&self) -> ControlKind {
        match self {
            Control::Lease { .. } => ControlKind::Lease,
            Control::Forward { .. } => ControlKind::Forward,
            Control::Accept { .. } => ControlKind::Accept,
            Control::Refuse { .. } => ControlKind::Refuse,
            Control::Block { .. } => ControlKind::Block,
            Control::Partial { .. } => ControlKind::Partial,
            Control::Unblock { .. } => ControlKind::Unblock,
            Control::Retire => ControlKind::Retire,
            Control::Retired { .. } => ControlKind::Retired,
        }
    }

    /// Whether the lessee sends this variant (and the lessor receives it).
    pub fn is_for_lessor(&self) -> bool {
        matches!(self.kind(), ControlKind::Accept | ControlKind::Refuse | ControlKind::Partial | ControlKind::Retired)
    }
}
