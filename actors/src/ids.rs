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

/// A key group: a fixed slice of a function's key space, the unit that placement moves.
pub type KeyGroup = u16;

/// Key groups per keyed function unless `[engine] key_groups` says otherwise.
pub const DEFAULT_KEY_GROUPS: u16 = 256;

/// The key group of a key among `groups` groups: a stable hash, the same on every node and for
/// every function, so the actors of one key are co-located across the functions of an app
/// (a keyed pipeline whose functions share a key crosses cores once).
///
/// Fibonacci hashing, then Lemire's multiply-shift: the hash times the golden ratio, whose high
/// bits depend on every bit of the hash (a hash that is a small integer spreads as well as a
/// mixed one), and independent of the hash's own high bits, which a hash table's tags read.
/// Two multiplications: it runs twice per keyed record (its home, its group's count).
#[inline]
pub fn key_group(key_hash: u64, groups: u16) -> KeyGroup {
    let h = key_hash.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((h as u128 * groups as u128) >> 64) as KeyGroup
}

/// How [`key_group`] hashes, for a snapshot's fingerprint: state written under another key
/// grouping would be restored into the wrong groups.
pub const KEY_GROUPING: &str = "fibonacci";

/// Which of `shards` shards holds `group` in the initial placement: contiguous ranges of groups,
/// so neighbouring groups start together and the ranges split evenly.
#[inline]
pub fn initial_owner(group: KeyGroup, groups: u16, shards: usize) -> usize {
    group as usize * shards / groups as usize
}

/// The shard (index among `shards`) a key starts on with the default key groups: what a test
/// or benchmark uses to pick keys homed on a given shard of an app placed on every shard.
#[inline]
pub fn initial_home(key_hash: u64, shards: usize) -> usize {
    initial_owner(key_group(key_hash, DEFAULT_KEY_GROUPS), DEFAULT_KEY_GROUPS, shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_uniform_and_initial_owners_contiguous() {
        let groups = 64;
        let mut count = vec![0u32; groups as usize];
        for k in 0..64_000u64 {
            count[key_group(crate::record::mix64(k), groups) as usize] += 1;
        }
        assert!(count.iter().all(|&c| (800..1200).contains(&c)), "{count:?}");
        // Unmixed hashes (small integers, a user's own hash) spread too.
        let mut raw = vec![0u32; groups as usize];
        for k in 0..64_000u64 {
            raw[key_group(k, groups) as usize] += 1;
        }
        assert!(raw.iter().all(|&c| (800..1200).contains(&c)), "{raw:?}");
        let owners: Vec<usize> = (0..groups).map(|g| initial_owner(g, groups, 3)).collect();
        assert!(owners.windows(2).all(|w| w[0] <= w[1]), "contiguous ranges: {owners:?}");
        assert_eq!((owners[0], owners[63]), (0, 2));
        for s in 0..3 {
            let n = owners.iter().filter(|&&o| o == s).count();
            assert!((21..=22).contains(&n), "shard {s} holds {n} groups");
        }
    }
}
