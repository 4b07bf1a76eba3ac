//! Property tests of the [`Mergeable`] laws for every built-in strategy.

use std::fmt::Debug;

use proptest::prelude::*;

use super::{Count, MapMerge, Max, Mergeable, Min, SetUnion, Sum};

/// A state under test, and how one update folds into it.
trait Fold: Mergeable + Clone + PartialEq + Debug + Default {
    type Update: Debug + Clone;
    fn fold(&mut self, update: &Self::Update);
}

impl Fold for Sum<u64> {
    type Update = u32;
    fn fold(&mut self, update: &u32) {
        self.add(u64::from(*update));
    }
}

impl Fold for Count {
    type Update = ();
    fn fold(&mut self, _update: &()) {
        self.increment();
    }
}

impl Fold for Min<i32> {
    type Update = i32;
    fn fold(&mut self, update: &i32) {
        self.observe(*update);
    }
}

impl Fold for Max<i32> {
    type Update = i32;
    fn fold(&mut self, update: &i32) {
        self.observe(*update);
    }
}

impl Fold for SetUnion<u8> {
    type Update = u8;
    fn fold(&mut self, update: &u8) {
        self.insert(*update);
    }
}

impl Fold for MapMerge<u8, Sum<u64>> {
    type Update = (u8, u32);
    fn fold(&mut self, (key, value): &(u8, u32)) {
        self.entry(*key).add(u64::from(*value));
    }
}

impl Fold for (Sum<u64>, Count, Max<i32>) {
    type Update = (u32, i32);
    fn fold(&mut self, (sum, max): &(u32, i32)) {
        self.0.add(u64::from(*sum));
        self.1.increment();
        self.2.observe(*max);
    }
}

fn folded<S: Fold>(mut state: S, updates: &[S::Update]) -> S {
    for update in updates {
        state.fold(update);
    }
    state
}

/// `(a + b) + c == a + (b + c)` for partials built from the same lessor state.
fn associative<S: Fold>(base: &S, a: &[S::Update], b: &[S::Update], c: &[S::Update]) {
    let (pa, pb, pc) = (folded(base.partition(), a), folded(base.partition(), b), folded(base.partition(), c));
    let mut left = pa.clone();
    left.combine(pb.clone());
    left.combine(pc.clone());
    let mut right_tail = pb;
    right_tail.combine(pc);
    let mut right = pa;
    right.combine(right_tail);
    assert_eq!(left, right, "combine is not associative");
}

/// Combining a fresh partition into the lessor leaves it unchanged.
fn partition_is_identity<S: Fold>(base: &S) {
    let mut merged = base.clone();
    merged.combine(base.partition());
    assert_eq!(&merged, base, "combining partition() changed the lessor");
}

/// Updates split arbitrarily between the lessor (slot 0) and `k` partials, then combined, equal
/// all updates applied to one state.
fn split_equals_sequential<S: Fold>(base: &S, updates: &[(S::Update, usize)], k: usize) {
    let mut lessor = base.clone();
    let mut partials: Vec<S> = (0..k).map(|_| base.partition()).collect();
    for (update, slot) in updates {
        match slot % (k + 1) {
            0 => lessor.fold(update),
            i => partials[i - 1].fold(update),
        }
    }
    for partial in partials {
        lessor.combine(partial);
    }
    let all: Vec<S::Update> = updates.iter().map(|(u, _)| u.clone()).collect();
    assert_eq!(lessor, folded(base.clone(), &all), "split then combine differs");
}

fn all_laws<S: Fold>(initial: &[S::Update], updates: &[(S::Update, usize)], k: usize) {
    let base = folded(S::default(), initial);
    let thirds: Vec<S::Update> = updates.iter().map(|(u, _)| u.clone()).collect();
    let (a, rest) = thirds.split_at(thirds.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    associative(&base, a, b, c);
    partition_is_identity(&base);
    partition_is_identity(&folded(base.partition(), a));
    split_equals_sequential(&base, updates, k);
}

fn script<U: Debug + Clone>(
    update: impl Strategy<Value = U> + Clone,
) -> impl Strategy<Value = (Vec<U>, Vec<(U, usize)>, usize)> {
    (prop::collection::vec(update.clone(), 0..8), prop::collection::vec((update, 0usize..16), 0..48), 0usize..5)
}

proptest! {
    #[test]
    fn sum_laws((initial, updates, k) in script(any::<u32>())) {
        all_laws::<Sum<u64>>(&initial, &updates, k);
    }

    #[test]
    fn count_laws((initial, updates, k) in script(Just(()))) {
        all_laws::<Count>(&initial, &updates, k);
    }

    #[test]
    fn min_laws((initial, updates, k) in script(any::<i32>())) {
        all_laws::<Min<i32>>(&initial, &updates, k);
    }

    #[test]
    fn max_laws((initial, updates, k) in script(any::<i32>())) {
        all_laws::<Max<i32>>(&initial, &updates, k);
    }

    #[test]
    fn set_union_laws((initial, updates, k) in script(any::<u8>())) {
        all_laws::<SetUnion<u8>>(&initial, &updates, k);
    }

    #[test]
    fn map_merge_laws((initial, updates, k) in script((0u8..6, any::<u32>()))) {
        all_laws::<MapMerge<u8, Sum<u64>>>(&initial, &updates, k);
    }

    /// `split_off` moves exactly the entries whose hash is moving, and combining them back
    /// (disjoint keys: a union) gives the map it started from.
    #[test]
    fn map_merge_split_off_then_combine_is_identity(
        updates in prop::collection::vec((0u8..40, any::<u32>()), 0..60),
        cut in 0u64..4,
    ) {
        let whole = folded(MapMerge::<u8, Sum<u64>>::default(), &updates);
        let mut kept = whole.clone();
        let hash = |k: &u8| crate::record::mix64(u64::from(*k)); // `function::key_u64` of the key
        let moved = kept.split_off(hash, &|h| h % 4 == cut);
        prop_assert!(moved.0.keys().all(|k| hash(k) % 4 == cut));
        prop_assert!(kept.0.keys().all(|k| hash(k) % 4 != cut));
        kept.combine(moved);
        prop_assert_eq!(kept, whole);
    }

    #[test]
    fn tuple_laws((initial, updates, k) in script((any::<u32>(), any::<i32>()))) {
        all_laws::<(Sum<u64>, Count, Max<i32>)>(&initial, &updates, k);
    }
}

#[test]
fn partials_cross_cores_as_archives() {
    let partial = Sum(41u64);
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&partial).unwrap();
    let back: Sum<u64> = rkyv::from_bytes::<_, rkyv::rancor::Error>(&bytes).unwrap();
    assert_eq!(back, partial);
    let set = SetUnion([1u8, 2, 3].into_iter().collect());
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&set).unwrap();
    let back: SetUnion<u8> = rkyv::from_bytes::<_, rkyv::rancor::Error>(&bytes).unwrap();
    assert_eq!(back, set);
}

#[test]
#[should_panic(expected = "never partitioned")]
fn exclusive_state_is_never_partitioned() {
    let _ = super::Exclusive(vec![1]).partition();
}
