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
