//! Snapshots on disk: the store the snapshot barrier protocol writes to and recovery reads from.
//!
//! A snapshot is a set of named, opaque parts (actor state archives per function and key group,
//! source positions, sink commit points) taken at one barrier `epoch`. This module does not know
//! what a part holds; it makes the set durable and all-or-nothing:
//!
//! - [`store`]: [`SnapshotStore`] writes a snapshot's directory (every part fsync'd, then the
//!   manifest written to a temporary name, fsync'd and renamed, then the directories fsync'd), so
//!   a snapshot counts only once its manifest is there; it keeps the newest `keep` and prunes the
//!   rest, and refuses to load a snapshot made from another config ([`Fingerprint`]).
//! - [`writer`]: [`SnapshotWriter`], the thread that writes snapshots off the shards' threads,
//!   fed by a bounded channel; a failed write is reported and counted, and the previous snapshot
//!   stays the one recovery uses.
//!
//! - [`coord`]: what the controller and the shards share to take one (the protocol, step by
//!   step); the shards' side is the engine's `shard::snapshot`.
//! - [`driver`]: the controller's side: when, gathering parts, writing, committing the sinks,
//!   and what a run resumes from ([`driver::resume`]).

pub mod coord;
pub mod driver;
pub mod restore;
pub mod store;
pub mod writer;

pub use coord::{ShardParts, SnapshotCoord};
pub use driver::{ResumeError, SnapshotCounts, SnapshotSettings};
pub use restore::{Restore, FINAL};

pub use store::{Fingerprint, Loaded, Manifest, PartEntry, SnapshotError, SnapshotInfo, SnapshotStore, MANIFEST};
pub use writer::{SnapshotWriter, SubmitError, WriterCounts};

/// One part of a snapshot: a unique name (e.g. `state/bids/count/kg-17`,
/// `source/bids/bids/0`, `sink/bids/out/0`) and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl Part {
    /// A part named `name` holding `bytes`.
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Part {
        Part { name: name.into(), bytes }
    }
}

/// Everything taken at one barrier: written as one snapshot.
#[derive(Debug, Default)]
pub struct SnapshotData {
    /// The barrier's number; snapshots are ordered by it.
    pub epoch: u64,
    pub parts: Vec<Part>,
    /// Parts whose bytes the writer thread makes just before it writes each (copies of state
    /// archived there, one at a time: off the shards and the controller, and never the whole
    /// snapshot in memory twice). Written after `parts`.
    pub deferred: Vec<Deferred>,
}

/// A part whose bytes are made when it is written (see [`SnapshotData::deferred`]).
pub struct Deferred {
    pub name: String,
    pub make: Box<dyn FnOnce() -> rkyv::util::AlignedVec + Send>,
}

impl Deferred {
    /// A part named `name` whose bytes `make` returns.
    pub fn new(name: impl Into<String>, make: impl FnOnce() -> rkyv::util::AlignedVec + Send + 'static) -> Deferred {
        Deferred { name: name.into(), make: Box::new(make) }
    }
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred").field("name", &self.name).finish()
    }
}

#[cfg(test)]
mod tests;
