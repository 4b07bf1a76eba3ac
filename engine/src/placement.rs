//! Where key groups live: the placement table of a node, and how an app's shards are chosen.
//!
//! A keyed function's keys hash into `key_groups` groups ([`key_group`]); the table says which
//! shard holds each group's lessor. Every shard of a node reads the same table (one relaxed load
//! per keyed message, beside the hash it replaces); only a migration writes an entry. The
//! initial table gives each keyed function of an app the app's shards, in contiguous ranges of
//! groups, the same for every function of the app, so a key's actors are co-located across them.
//!
//! An app's shards ([`AppShards`]) are chosen when the plan is built: as few as its load needs
//! (its `cores`, else its widest source), best fit by declared rate beside the apps placed before
//! it, so apps pack onto as few shards as their rates allow and a shard that hosts nothing parks.

use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::OnceLock;

use dirigo_actors::ids::{initial_owner, key_group, FunctionId, KeyGroup, ShardId};

use crate::plan::{Partition, Plan};

/// The placement table of one node: for each keyed function, the shard of each key group.
///
/// Functions are slots filled once: a served engine (`dirigo serve`) adds the functions of a
/// deployed app to the same table in place ([`PlacementTable::add_functions`]), so a move of
/// another app's group is never lost to a table being replaced.
#[derive(Debug)]
pub struct PlacementTable {
    groups: u16,
    shards: usize,
    /// By function; empty for a function that no edge routes by key.
    homes: Box<[OnceLock<Box<[AtomicU16]>>]>,
    /// By function, then shard: how many of its groups the table places there.
    counts: Box<[OnceLock<Box<[AtomicU32]>>]>,
}

/// Functions a table has room for beyond its plan's (apps deployed at run time).
const SPARE_FUNCTIONS: usize = 4096;

impl PlacementTable {
    /// The initial table of `plan`: each keyed function's groups in contiguous ranges over the
    /// shards its app starts on (those of them it runs on; the function may run on more, its
    /// app's reach, where groups may move later).
    pub fn new(plan: &Plan, groups: u16) -> PlacementTable {
        let room = plan.functions.len() + SPARE_FUNCTIONS;
        let table = PlacementTable {
            groups,
            shards: plan.shards,
            homes: (0..room).map(|_| OnceLock::new()).collect(),
            counts: (0..room).map(|_| OnceLock::new()).collect(),
        };
        table.add_functions(plan, 0);
        table
    }

    /// Fill the entries of `plan`'s functions from `first` on (a deployed app's; cold path).
    /// Panics past the table's room (`SPARE_FUNCTIONS` beyond the start).
    pub fn add_functions(&self, plan: &Plan, first: usize) {
        for (f, fp) in plan.functions.iter().enumerate().skip(first) {
            let keyed = fp.inputs.iter().any(|i| i.partition != Partition::Forward);
            let homes: Box<[AtomicU16]> = if !keyed || fp.shards.is_empty() {
                Box::default()
            } else {
                let start = &plan.apps[fp.app as usize].shards;
                let mut owners: Vec<ShardId> = fp.shards.iter().copied().filter(|s| start.contains(s)).collect();
                if owners.is_empty() {
                    owners = fp.shards.clone();
                }
                (0..self.groups).map(|g| AtomicU16::new(owners[initial_owner(g, self.groups, owners.len())])).collect()
            };
            let counts: Box<[AtomicU32]> = if homes.is_empty() {
                Box::default()
            } else {
                let c: Box<[AtomicU32]> = (0..self.shards).map(|_| AtomicU32::new(0)).collect();
                homes.iter().for_each(|s| {
                    c[s.load(Ordering::Relaxed) as usize].fetch_add(1, Ordering::Relaxed);
                });
                c
            };
            assert!(f < self.homes.len(), "the placement table has room for {} functions", self.homes.len());
            let _ = self.homes[f].set(homes);
            let _ = self.counts[f].set(counts);
        }
    }

    #[inline]
    fn homes_of(&self, f: FunctionId) -> &[AtomicU16] {
        self.homes[f as usize].get().expect("a function of the plan")
    }

    #[inline]
    fn counts_of(&self, f: FunctionId) -> &[AtomicU32] {
        self.counts[f as usize].get().expect("a function of the plan")
    }

    /// Key groups per keyed function.
    pub fn groups(&self) -> u16 {
        self.groups
    }

    /// The key group of `key_hash`.
    #[inline]
    pub fn group_of(&self, key_hash: u64) -> KeyGroup {
        key_group(key_hash, self.groups)
    }

    /// The shard holding the lessor of `key_hash`'s group of keyed function `f`. Hot path.
    #[inline]
    pub fn home(&self, f: FunctionId, key_hash: u64) -> ShardId {
        self.homes_of(f)[self.group_of(key_hash) as usize].load(Ordering::Relaxed)
    }

    /// The shard holding group `g` of function `f`.
    pub fn owner(&self, f: FunctionId, g: KeyGroup) -> ShardId {
        self.homes_of(f)[g as usize].load(Ordering::Relaxed)
    }

    /// Whether function `f` is routed by key (has groups in the table).
    pub fn is_keyed(&self, f: FunctionId) -> bool {
        !self.homes_of(f).is_empty()
    }

    /// Route group `g` of function `f` to shard `to` from now on. Only the group's new owner
    /// writes, inside the migration protocol (`shard::migrate`): the fence it then sends to
    /// every shard carries this store to them (mailboxes release and acquire).
    pub fn set_owner(&self, f: FunctionId, g: KeyGroup, to: ShardId) {
        let from = self.homes_of(f)[g as usize].swap(to, Ordering::Relaxed);
        self.counts_of(f)[from as usize].fetch_sub(1, Ordering::Relaxed);
        self.counts_of(f)[to as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the table places any group of function `f` on shard `s` (always, for a
    /// function not routed by key).
    #[inline]
    pub fn hosts(&self, f: FunctionId, s: ShardId) -> bool {
        let c = self.counts_of(f);
        c.is_empty() || c[s as usize].load(Ordering::Relaxed) > 0
    }

    /// Key groups of function `f` that shard `s` holds.
    pub fn groups_on(&self, f: FunctionId, s: ShardId) -> usize {
        self.homes_of(f).iter().filter(|h| h.load(Ordering::Relaxed) == s).count()
    }
}

/// Chooses each app's shards as apps are added to a plan, packing: an app takes `cores`
/// shards (at least one), each the most loaded one that still has room for its share of the
/// app's declared rate under `capacity` events per second (best fit; ties to the lowest id),
/// else the least loaded one. Apps share shards until their declared load fills them, the rest
/// stay empty and park, and every node of a cluster makes the same choice.
#[derive(Clone, Debug)]
pub struct AppShards {
    /// Declared load per shard (events per second of the apps placed on it).
    load: Vec<u64>,
    capacity: u64,
    /// Shards given up (a function never returned there): nothing is placed on them.
    gone: Vec<bool>,
}

impl AppShards {
    /// For a plan of `shards` shards that each take `capacity` declared events per second.
    pub fn new(shards: usize, capacity: u64) -> AppShards {
        AppShards { load: vec![0; shards], capacity, gone: vec![false; shards] }
    }

    /// Place nothing on shard `s` from now on (it was given up).
    pub fn give_up(&mut self, s: usize) {
        self.gone[s] = true;
    }

    /// Shards apps may still be placed on.
    pub fn available(&self) -> usize {
        self.gone.iter().filter(|&&g| !g).count()
    }

    /// The shards of an app that needs `cores` of them and declares `rate` events per second
    /// (`None`: unbounded, as fast as the engine takes them: a whole shard per core).
    pub fn place(&mut self, cores: usize, rate: Option<u64>) -> Vec<ShardId> {
        let n = self.load.len();
        let cores = cores.clamp(1, self.available().max(1));
        let share = rate.map_or(self.capacity, |r| r.div_ceil(cores as u64));
        let mut chosen: Vec<usize> = Vec::with_capacity(cores);
        for _ in 0..cores {
            let free = (0..n).filter(|&s| !chosen.contains(&s) && (!self.gone[s] || self.available() == 0));
            let fits = free.clone().filter(|&s| self.load[s] + share <= self.capacity);
            // Best fit: the fullest shard that still has room; else the emptiest.
            let pick = fits.max_by_key(|&s| (self.load[s], std::cmp::Reverse(s)));
            let pick = pick.or_else(|| free.min_by_key(|&s| (self.load[s], s))).expect("cores <= shards");
            chosen.push(pick);
        }
        for &s in &chosen {
            self.load[s] += share;
        }
        chosen.sort_unstable();
        chosen.into_iter().map(|s| s as ShardId).collect()
    }

    /// Where an app placed on `shards` may spread: those, then the least loaded others, up to
    /// `max` shards in all (0: every shard). Sorted.
    pub fn reach(&self, shards: &[ShardId], max: usize) -> Vec<ShardId> {
        let n = self.load.len();
        let max = if max == 0 { n } else { max.clamp(shards.len(), n) };
        let mut others: Vec<usize> = (0..n).filter(|&s| !shards.contains(&(s as ShardId)) && !self.gone[s]).collect();
        others.sort_by_key(|&s| (self.load[s], s));
        let mut reach: Vec<ShardId> = shards.to_vec();
        reach.extend(others.into_iter().take(max.saturating_sub(shards.len())).map(|s| s as ShardId));
        reach.sort_unstable();
        reach
    }

    /// Give back what [`AppShards::place`] took for an app placed on `shards` declaring `rate`
    /// (an undeployed app's; `dirigo serve`).
    pub fn release(&mut self, shards: &[ShardId], rate: Option<u64>) {
        let share = rate.map_or(self.capacity, |r| r.div_ceil(shards.len().max(1) as u64));
        for &s in shards {
            self.load[s as usize] = self.load[s as usize].saturating_sub(share);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_placed_on_a_shard_given_up() {
        let mut a = AppShards::new(3, 100_000);
        a.give_up(0);
        assert_eq!(a.available(), 2);
        assert_eq!(a.place(1, Some(10)), [1], "packs on the first shard still there");
        assert_eq!(a.place(3, Some(10)), [1, 2], "no more cores than shards still there");
        assert_eq!(a.reach(&[1], 0), [1, 2], "an app may not spread to it");
    }

    #[test]
    fn apps_pack_until_a_shard_is_full_then_take_the_emptiest() {
        let mut a = AppShards::new(4, 100_000);
        assert_eq!(a.place(1, Some(50_000)), [0]);
        assert_eq!(a.place(1, Some(40_000)), [0], "fits beside the first app");
        assert_eq!(a.place(1, Some(20_000)), [1], "would overfill shard 0");
        assert_eq!(a.place(2, Some(20_000)), [0, 1], "10k per shard fits on both");
        assert_eq!(a.place(1, None), [2], "an unbounded app takes a whole shard");
        assert_eq!(a.place(1, Some(5_000)), [1], "the fullest shard with room");
        assert_eq!(a.place(9, Some(0)), [0, 1, 2, 3], "cores are capped at the shards there are");
        assert_eq!(AppShards::new(3, 1).place(0, Some(0)), [0], "an app takes at least one shard");
    }
}
