//! What a run resumes from (the state and source positions of one snapshot), and the names of
//! a snapshot's parts.

use std::collections::HashMap;

/// What a run resumes from: the state and source positions of one snapshot.
#[derive(Debug, Default)]
pub struct Restore {
    /// The snapshot's epoch: the next barrier is `epoch + 1`.
    pub epoch: u64,
    /// (function, shard) -> the archive of that instance's keys.
    pub states: HashMap<(usize, u16), Vec<u8>>,
    /// (plan source index, instance) -> its position ([`crate::source::SourcePosition`] bytes).
    pub sources: HashMap<(usize, u32), Vec<u8>>,
}

/// The epoch of the seals a shard makes as it exits (the shards' sinks seal what they produced after the last barrier as they exit).
pub const FINAL: u64 = u64::MAX;

/// The name of an instance's state part.
pub fn state_part(f: usize, shard: u16) -> String {
    format!("state/{f}/{shard}")
}

/// The name of a source instance's position part.
pub fn source_part(source: usize, instance: u32) -> String {
    format!("source/{source}/{instance}")
}
