//! What the controller and the shards of one node share to take a snapshot.
//!
//! Taking snapshot `n` (the controller drives it, see [`super::driver`]):
//!
//! 1. **Freeze.** The controller sets `freeze = n` and rings every shard. A shard that sees it
//!    starts no key-group move and says so (`frozen[shard] = n`). Moves already under way
//!    finish: every move started is counted in `moves_started`, and counted again in
//!    `moves_done` when the new owner has installed the group (or the old owner heard it
//!    refused). Once every shard froze and the two counts agree, no group is in flight and the
//!    placement table holds still.
//! 2. **Inject.** The controller records the placement table and sets `inject = n`. Each shard,
//!    at its next poll of each source, records the source's replay position and broadcasts
//!    barrier `n` on the source's output edges.
//! 3. **Align.** Each instance takes barrier `n` on each input channel, holds back what comes
//!    after it on that channel, and once every channel delivered it, archives its state (a
//!    dual-mode actor on its merged state, as a barrier), forwards barrier `n` downstream and
//!    releases what it held. Sinks seal their output of epoch `n`.
//! 4. **Report.** When every instance and source of a shard is done, the shard sends its parts
//!    ([`ShardParts`]). The controller writes the snapshot off the shards (the writer thread),
//!    thaws moves, and once the manifest is durable commits the sinks' output of epoch `n`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Part;

/// One shard's share of snapshot `epoch`.
#[derive(Debug)]
pub struct ShardParts {
    pub shard: usize,
    pub epoch: u64,
    pub parts: Vec<Part>,
    /// Parts whose state was copied on the shard and is archived by the controller (off the
    /// shard): name and copy.
    pub copies: Vec<(String, dirigo_actors::builtins::StateCopy)>,
    /// Waits the controller must see resolve before the snapshot counts (a staged sink's output
    /// of the epoch written durably where it is staged).
    pub durable: Vec<flume::Receiver<Result<(), String>>>,
    /// What went wrong taking this shard's share (a sink that could not seal its output): the
    /// snapshot is not written.
    pub errors: Vec<String>,
    /// The run was stopping (or an app had failed) when the shard took its share: sources may
    /// have ended early and their ends fired what a resumed run must fire itself, so the
    /// snapshot is dropped (not an error).
    pub stopping: bool,
}

/// Shared by a node's controller and its shards (one per node; `None` on the shards when the
/// run takes no snapshots).
#[derive(Debug)]
pub struct SnapshotCoord {
    /// The snapshot being taken (0: none): shards start no move while `freeze > thawed`.
    freeze: AtomicU64,
    /// The last snapshot whose moves were thawed.
    thawed: AtomicU64,
    /// Per shard (global id): the last `freeze` it saw (it starts no move for it).
    frozen: Vec<AtomicU64>,
    moves_started: AtomicU64,
    moves_done: AtomicU64,
    /// Sources inject barriers up to this epoch.
    inject: AtomicU64,
    /// Bumped on every change the shards must notice (one relaxed load per turn).
    generation: AtomicU64,
    parts: flume::Sender<ShardParts>,
}

impl SnapshotCoord {
    /// A coordinator for a node of `shards` shards (global ids), resuming after snapshot
    /// `resumed` (0: a fresh run), and where the shards' parts arrive.
    pub fn new(shards: usize, resumed: u64) -> (SnapshotCoord, flume::Receiver<ShardParts>) {
        let (tx, rx) = flume::unbounded();
        let coord = SnapshotCoord {
            freeze: AtomicU64::new(resumed),
            thawed: AtomicU64::new(resumed),
            frozen: (0..shards).map(|_| AtomicU64::new(resumed)).collect(),
            moves_started: AtomicU64::new(0),
            moves_done: AtomicU64::new(0),
            inject: AtomicU64::new(resumed),
            generation: AtomicU64::new(0),
            parts: tx,
        };
        (coord, rx)
    }

    /// Changes since a shard last looked: compare with what it saw.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Controller: freeze moves for snapshot `epoch`. Ring the shards after.
    pub fn freeze(&self, epoch: u64) {
        self.freeze.store(epoch, Ordering::Release);
        self.bump();
    }

    /// Controller: moves may start again.
    pub fn thaw(&self) {
        self.thawed.store(self.freeze.load(Ordering::Acquire), Ordering::Release);
        self.bump();
    }

    /// Shard: whether it may start a key-group move now.
    #[inline]
    pub fn moves_frozen(&self) -> bool {
        self.freeze.load(Ordering::Acquire) > self.thawed.load(Ordering::Acquire)
    }

    /// Shard: it saw the freeze of `epoch` and starts no move for it.
    pub fn froze(&self, shard: usize, epoch: u64) {
        self.frozen[shard].store(epoch, Ordering::Release);
    }

    /// The freeze being asked for.
    pub fn freezing(&self) -> u64 {
        self.freeze.load(Ordering::Acquire)
    }

    /// Controller: every shard of `local` froze for `epoch` and no move is in flight.
    pub fn still(&self, local: std::ops::Range<usize>, epoch: u64, gone: &[usize]) -> bool {
        let frozen = local.filter(|s| !gone.contains(s)).all(|s| self.frozen[s].load(Ordering::Acquire) >= epoch);
        frozen && self.moves_done.load(Ordering::Acquire) == self.moves_started.load(Ordering::Acquire)
    }

    /// Shard (old owner): a move started.
    pub fn move_started(&self) {
        self.moves_started.fetch_add(1, Ordering::AcqRel);
    }

    /// Shard: a move finished (installed by the new owner, or refused).
    pub fn move_done(&self) {
        self.moves_done.fetch_add(1, Ordering::AcqRel);
    }

    /// Controller: sources inject barrier `epoch`. Ring the shards after.
    pub fn inject(&self, epoch: u64) {
        self.inject.store(epoch, Ordering::Release);
        self.bump();
    }

    /// The last barrier sources are to inject.
    #[inline]
    pub fn injecting(&self) -> u64 {
        self.inject.load(Ordering::Acquire)
    }

    /// Shard: its share of a snapshot.
    pub fn report(&self, parts: ShardParts) {
        let _ = self.parts.send(parts);
    }
}
