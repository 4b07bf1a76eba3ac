//! Built-in [`Mergeable`] strategies: sum, count, min, max, set union, map merge, tuples of them,
//! and the [`Exclusive`] wrapper for state that is never partitioned.
//!
//! Every strategy's partition is its identity for `combine` (zero, `None`, the empty set or
//! map), so a lessee's partial holds exactly the updates it applied. All of them are plain data
//! and archive with rkyv, because partials cross cores inside control messages.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::ops::AddAssign;

use super::Mergeable;

/// A running sum. `T` is numeric: integers combine exactly (floats only up to rounding, because
/// float addition is not associative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Sum<T>(pub T);

impl<T: Copy + Default + AddAssign> Sum<T> {
    /// Fold one value in.
    #[inline]
    pub fn add(&mut self, value: T) {
        self.0 += value;
    }
}

impl<T: Copy + Default + AddAssign> Mergeable for Sum<T> {
    fn partition(&self) -> Self {
        Sum(T::default())
    }
    fn combine(&mut self, partial: Self) {
        self.0 += partial.0;
    }
}

/// A count of folded messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Count(pub u64);

impl Count {
    /// Count one more.
    #[inline]
    pub fn increment(&mut self) {
        self.0 += 1;
    }
}

impl Mergeable for Count {
    fn partition(&self) -> Self {
        Count(0)
    }
    fn combine(&mut self, partial: Self) {
        self.0 += partial.0;
    }
}

/// The least value seen; `None` (nothing seen) is the identity.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Min<T>(pub Option<T>);

/// The greatest value seen; `None` (nothing seen) is the identity.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Max<T>(pub Option<T>);

impl<T> Default for Min<T> {
    fn default() -> Self {
        Min(None)
    }
}

impl<T> Default for Max<T> {
    fn default() -> Self {
        Max(None)
    }
}

impl<T: Ord> Min<T> {
    /// Fold one value in.
    #[inline]
    pub fn observe(&mut self, value: T) {
        match &self.0 {
            Some(current) if *current <= value => {}
            _ => self.0 = Some(value),
        }
    }
}

impl<T: Ord> Max<T> {
    /// Fold one value in.
    #[inline]
    pub fn observe(&mut self, value: T) {
        match &self.0 {
            Some(current) if *current >= value => {}
            _ => self.0 = Some(value),
        }
    }
}

impl<T: Ord> Mergeable for Min<T> {
    fn partition(&self) -> Self {
        Min(None)
    }
    fn combine(&mut self, partial: Self) {
        if let Some(value) = partial.0 {
            self.observe(value);
        }
    }
}

impl<T: Ord> Mergeable for Max<T> {
    fn partition(&self) -> Self {
        Max(None)
    }
    fn combine(&mut self, partial: Self) {
        if let Some(value) = partial.0 {
            self.observe(value);
        }
    }
}

/// The set of distinct values seen.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SetUnion<T: Eq + Hash>(pub HashSet<T>);

impl<T: Eq + Hash> Default for SetUnion<T> {
    fn default() -> Self {
        SetUnion(HashSet::new())
    }
}

impl<T: Eq + Hash + Clone> SetUnion<T> {
    /// Fold one value in.
    #[inline]
    pub fn insert(&mut self, value: T) {
        self.0.insert(value);
    }
}

impl<T: Eq + Hash + Clone> Mergeable for SetUnion<T> {
    fn partition(&self) -> Self {
        SetUnion::default()
    }
    fn combine(&mut self, partial: Self) {
        if self.0.is_empty() {
            self.0 = partial.0;
        } else {
            self.0.extend(partial.0);
        }
    }
}

/// A map of mergeable values, combined key by key; a lessee starts from the empty map.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MapMerge<K: Eq + Hash, V>(pub HashMap<K, V>);

impl<K: Eq + Hash, V> Default for MapMerge<K, V> {
    fn default() -> Self {
        MapMerge(HashMap::new())
    }
}

impl<K: Eq + Hash, V: Mergeable + Default> MapMerge<K, V> {
    /// The value of `key` to update, inserted as `V::default()` (the strategy's identity) when
    /// absent, so that a lessee's entry holds only its own updates.
    #[inline]
    pub fn entry(&mut self, key: K) -> &mut V {
        self.0.entry(key).or_default()
    }
}

impl<K: Eq + Hash, V> MapMerge<K, V> {
    /// Key-group migration: remove every entry whose key's routing hash (`key_hash(key)`: the
    /// hash the actor's messages for that key are routed by, e.g.
    /// [`key_u64`](crate::function::key_u64) of an integer key) is `moving`, and return them as a
    /// map of their own. Calls `moving` once per entry. What
    /// [`Actor::split_off`](crate::function::Actor::split_off) of an actor keyed by this map
    /// returns (`Some(state.split_off(..))`).
    pub fn split_off(&mut self, key_hash: impl Fn(&K) -> u64, moving: &dyn Fn(u64) -> bool) -> MapMerge<K, V> {
        let (moved, kept): (HashMap<K, V>, HashMap<K, V>) =
            std::mem::take(&mut self.0).into_iter().partition(|(k, _)| moving(key_hash(k)));
        self.0 = kept;
        MapMerge(moved)
    }
}

impl<K: Eq + Hash, V: Mergeable> Mergeable for MapMerge<K, V> {
    fn partition(&self) -> Self {
        MapMerge(HashMap::new())
    }
    fn combine(&mut self, partial: Self) {
        for (key, value) in partial.0 {
            match self.0.get_mut(&key) {
                Some(mine) => mine.combine(value),
                None => {
                    self.0.insert(key, value);
                }
            }
        }
    }
}

/// State touched only by the lessor ([`super::AccessMode::Exclusive`]): any type, including
/// order-sensitive ones. It is never partitioned: the dual-mode lessor never leases an exclusive
/// actor, so `partition` and `combine` are unreachable and panic if reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exclusive<T>(pub T);

impl<T> Mergeable for Exclusive<T> {
    fn partition(&self) -> Self {
        panic!("exclusive state is never partitioned: an exclusive actor has no lessees")
    }
    fn combine(&mut self, _partial: Self) {
        panic!("exclusive state is never combined: an exclusive actor has no lessees")
    }
}

impl Mergeable for () {
    fn partition(&self) -> Self {}
    fn combine(&mut self, _partial: Self) {}
}

/// Tuples combine component-wise, so one actor can keep several aggregates.
macro_rules! mergeable_tuple {
    ($($name:ident $index:tt),+) => {
        impl<$($name: Mergeable),+> Mergeable for ($($name,)+) {
            fn partition(&self) -> Self {
                ($(self.$index.partition(),)+)
            }
            fn combine(&mut self, partial: Self) {
                $(self.$index.combine(partial.$index);)+
            }
        }
    };
}

mergeable_tuple!(A 0);
mergeable_tuple!(A 0, B 1);
mergeable_tuple!(A 0, B 1, C 2);
mergeable_tuple!(A 0, B 1, C 2, D 3);
mergeable_tuple!(A 0, B 1, C 2, D 3, E 4);
