//! Actor state and its access modes: exclusive state (lessor only) and mergeable state, which
//! declares how a lessee's partial starts (partition) and how partials fold into the lessor
//! (combine).

/// State that can be split across a lessor and its lessees and merged back exactly.
///
/// Laws (checked by property tests): for any partial `p` produced from `s.partition()` and then
/// updated, `combine` is associative, and `s.partition()` combined into `s` leaves `s` unchanged.
pub trait Mergeable {
    /// What a lessee starts from, given the lessor's state (usually the zero value).
    fn partition(&self) -> Self
    where
        Self: Sized;
    /// Fold a lessee's partial into this (the lessor's) state.
    fn combine(&mut self, partial: Self)
    where
        Self: Sized;
}

mod strategies;
pub use strategies::{Count, Exclusive, MapMerge, Max, Min, SetUnion, Sum};

#[cfg(test)]
mod laws;

/// How an actor's state may be touched: decides whether the actor may ever have lessees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessMode {
    /// Only the lessor touches the state: messages are never forwarded, so per-actor order is the
    /// arrival order (order-sensitive state such as a log or a sequence of window panes).
    Exclusive,
    /// The state is [`Mergeable`]: lessees fold regular messages into partials that the lessor
    /// combines at every barrier.
    Mergeable,
}

impl AccessMode {
    /// Whether an actor in this mode may lease slots on other shards.
    pub fn allows_lessees(self) -> bool {
        matches!(self, AccessMode::Mergeable)
    }
}
