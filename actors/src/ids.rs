//! Ids of apps, functions, shards and actors: small integers, indexes into engine tables.

/// An app's index in the engine's app table.
pub type AppId = u16;
/// A function's index in the engine's global function table (unique across apps).
pub type FunctionId = u16;
/// A shard's index within a node (shard i runs on CPU i when pinned).
pub type ShardId = u16;

/// One keyed partition of a function: the unit of state and ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorId {
    pub function: FunctionId,
    pub key_hash: u64,
}

/// Home shard of a key among `shards` shards: a stable hash, the same on every node.
///
/// Actors of one key are co-located across the functions of an app, so a keyed pipeline whose
/// functions share a key crosses cores once.
#[inline]
pub fn home_shard(key_hash: u64, shards: usize) -> usize {
    // Lemire's multiply-shift on a remixed hash: uniform and division-free.
    let h = crate::record::mix64(key_hash ^ 0x9e37_79b9_7f4a_7c15);
    ((h as u128 * shards as u128) >> 64) as usize
}
