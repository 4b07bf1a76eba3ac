//! A protocol ledger for tests and debug builds (like RisingWave's `epoch_check`): no message
//! applied twice, none lost, barriers in order, no critical message while a partial is owed.
//!
//! The engine (or a test) gives every message a unique id and reports each application; the
//! ledger turns the protocol's guarantees into checks.

use std::collections::HashSet;

use super::BarrierId;

/// A broken guarantee.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A regular message was applied a second time (on any activation).
    #[error("message {id} applied twice")]
    AppliedTwice { id: u64 },
    /// Messages that entered the actor were never applied.
    #[error("{} messages lost, first {:?}", ids.len(), ids.first())]
    Lost { ids: Vec<u64> },
    /// Messages applied that never entered the actor.
    #[error("{} messages applied from nowhere, first {:?}", ids.len(), ids.first())]
    Unexpected { ids: Vec<u64> },
    /// A critical message of an earlier barrier ran after a later barrier's.
    #[error("critical message of barrier {got} ran after barrier {last}")]
    BarrierRegressed { got: BarrierId, last: BarrierId },
    /// A critical message ran while lessees still owed partials or forwards were unanswered.
    #[error(
        "critical message of barrier {barrier} ran with {owed} partials owed \
         and {in_flight} forwards unanswered"
    )]
    CriticalTooEarly { barrier: BarrierId, owed: usize, in_flight: usize },
}

/// Records applications and critical runs of one actor and checks them.
#[derive(Debug, Default)]
pub struct Ledger {
    applied: HashSet<u64>,
    last_barrier: Option<BarrierId>,
    criticals: usize,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Ledger::default()
    }

    /// Regular message `id` was applied (on the lessor or a lessee).
    pub fn applied(&mut self, id: u64) -> Result<(), Violation> {
        if self.applied.insert(id) {
            Ok(())
        } else {
            Err(Violation::AppliedTwice { id })
        }
    }

    /// A critical message of `barrier` is about to run; `owed` and `in_flight` are the
    /// lessor's [`owed_partials`](super::Lessor::owed_partials) and
    /// [`in_flight`](super::Lessor::in_flight) just before.
    pub fn critical(&mut self, barrier: BarrierId, owed: usize, in_flight: usize) -> Result<(), Violation> {
        if owed > 0 || in_flight > 0 {
            return Err(Violation::CriticalTooEarly { barrier, owed, in_flight });
        }
        if let Some(last) = self.last_barrier.filter(|last| barrier < *last) {
            return Err(Violation::BarrierRegressed { got: barrier, last });
        }
        self.last_barrier = Some(barrier);
        self.criticals += 1;
        Ok(())
    }

    /// Critical messages run so far.
    pub fn criticals(&self) -> usize {
        self.criticals
    }

    /// Regular messages applied so far.
    pub fn applied_count(&self) -> usize {
        self.applied.len()
    }

    /// At quiescence: every expected message was applied, and nothing else.
    pub fn finish(&self, expected: impl IntoIterator<Item = u64>) -> Result<(), Violation> {
        let expected: HashSet<u64> = expected.into_iter().collect();
        let mut lost: Vec<u64> = expected.difference(&self.applied).copied().collect();
        if !lost.is_empty() {
            lost.sort_unstable();
            return Err(Violation::Lost { ids: lost });
        }
        let mut unexpected: Vec<u64> = self.applied.difference(&expected).copied().collect();
        if !unexpected.is_empty() {
            unexpected.sort_unstable();
            return Err(Violation::Unexpected { ids: unexpected });
        }
        Ok(())
    }
}
