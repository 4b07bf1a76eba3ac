//! Key-group migration against a sequential oracle: records routed by key group to the instance
//! that owns the group now, groups moved between instances at random points, compared with one
//! instance that got every record.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::Config as ProptestConfig;
use rkyv::util::AlignedVec;

use crate::activation::ActorOp;
use crate::builtins::keyed::OwnedKey;
use crate::builtins::{AggOp, Aggregate, Join, Window, WindowSpec};
use crate::dual_mode::MessageClass;
use crate::envelope::Header;
use crate::function::{erase_actor, key_u64, Actor, Cx};
use crate::ids::key_group;
use crate::migrate::MigrateError;
use crate::operator::{Emitter, Msg, Operator, VecEmitter};
use crate::record::{mix64, FieldType, Schema, Value};
use crate::state::{MapMerge, Sum};
use crate::testkit::{feed, Rng};

/// Key groups in these tests (few, so that a group holds several keys).
const GROUPS: u16 = 8;
/// Instances (shards) of the function under test.
const INSTANCES: usize = 3;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

/// A keyed built-in under migration.
trait Subject: Operator {
    fn export(&mut self, moving: &dyn Fn(u64) -> bool) -> AlignedVec;
    fn import(&mut self, archive: &[u8]) -> Result<(), MigrateError>;
    /// Every key, its hash and its state as text.
    fn snapshot(&self) -> Vec<(OwnedKey, u64, String)>;
    fn keys(&self) -> usize;
    fn dropped(&self) -> u64;
}

impl Subject for Aggregate {
    fn export(&mut self, moving: &dyn Fn(u64) -> bool) -> AlignedVec {
        self.export_keys(moving)
    }
    fn import(&mut self, archive: &[u8]) -> Result<(), MigrateError> {
        self.import_keys(archive)
    }
    fn snapshot(&self) -> Vec<(OwnedKey, u64, String)> {
        let mut out: Vec<_> =
            self.partials().into_iter().map(|(hash, k, p)| (k.clone(), hash, format!("{p:?}"))).collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
    fn keys(&self) -> usize {
        self.key_count()
    }
    fn dropped(&self) -> u64 {
        0
    }
}

impl Subject for Window {
    fn export(&mut self, moving: &dyn Fn(u64) -> bool) -> AlignedVec {
        self.export_keys(moving)
    }
    fn import(&mut self, archive: &[u8]) -> Result<(), MigrateError> {
        self.import_keys(archive)
    }
    fn snapshot(&self) -> Vec<(OwnedKey, u64, String)> {
        Window::snapshot(self)
    }
    fn keys(&self) -> usize {
        self.key_count()
    }
    fn dropped(&self) -> u64 {
        self.late_dropped()
    }
}

impl Subject for Join {
    fn export(&mut self, moving: &dyn Fn(u64) -> bool) -> AlignedVec {
        self.export_keys(moving)
    }
    fn import(&mut self, archive: &[u8]) -> Result<(), MigrateError> {
        self.import_keys(archive)
    }
    fn snapshot(&self) -> Vec<(OwnedKey, u64, String)> {
        Join::snapshot(self)
    }
    fn keys(&self) -> usize {
        self.key_count()
    }
    fn dropped(&self) -> u64 {
        self.late_dropped()
    }
}

/// How records are keyed.
#[derive(Clone, Copy, Debug)]
enum Keying {
    /// By a string key field.
    Str,
    /// By a u64 key field.
    U64,
    /// By the upstream key hash (no key field).
    Upstream,
}

impl Keying {
    fn value(self, key: u64) -> Value {
        match self {
            Keying::Str => Value::Str(format!("k{key}")),
            _ => Value::U64(key),
        }
    }
    /// The hash the engine routes a record of `key` by: the key field's `key_hash`, or the
    /// upstream key hash set by `key_by`.
    fn routing_hash(self, key: u64) -> u64 {
        match self {
            Keying::Upstream => mix64(key ^ 0xabcd),
            _ => self.value(key).key_hash(),
        }
    }
    fn field(self) -> Option<&'static str> {
        match self {
            Keying::Upstream => None,
            _ => Some("k"),
        }
    }
    fn field_type(self) -> FieldType {
        match self {
            Keying::Str => FieldType::Str,
            _ => FieldType::U64,
        }
    }
}

/// A generated step: a record, a watermark, or a move of a group to an instance.
#[derive(Clone, Debug)]
enum Ev {
    Rec { port: u8, key: u64, t: u64, v: i64 },
    Wm(u64),
    Move { group: u16, to: usize },
}

/// A raw generated step: `(kind, key, dt, back, v, port, group, to)`.
type Raw = (u8, u64, u64, u64, i64, u8, u16, usize);

/// Raw steps turned into events on a clock.
fn events(raw: &[Raw]) -> Vec<Ev> {
    let mut clock = 0;
    raw.iter()
        .map(|&(kind, key, dt, back, v, port, group, to)| {
            clock += dt;
            match kind {
                0..=1 => Ev::Wm(clock.saturating_sub(back / 3)),
                2..=3 => Ev::Move { group, to },
                _ => Ev::Rec { port, key, t: clock.saturating_sub(back), v },
            }
        })
        .collect()
}

prop_compose! {
    fn script()(
        raw in prop::collection::vec(
            (0u8..20, 0u64..14, 0u64..3, 0u64..25, -1000i64..1000, 0u8..2, 0u16..GROUPS, 0usize..INSTANCES),
            0..160,
        ),
        owners in prop::collection::vec(0usize..INSTANCES, GROUPS as usize),
    ) -> (Vec<Ev>, Vec<usize>) {
        (events(&raw), owners)
    }
}

/// Everything emitted, as sortable text (a multiset once sorted).
fn multiset(outs: &[&VecEmitter]) -> Vec<String> {
    let mut all: Vec<String> = outs.iter().flat_map(|o| o.out.iter().map(|e| format!("{e:?}"))).collect();
    all.sort();
    all
}

fn sorted_snapshots(snaps: Vec<(OwnedKey, u64, String)>) -> Vec<String> {
    let mut all: Vec<String> = snaps.into_iter().map(|s| format!("{s:?}")).collect();
    all.sort();
    all
}

/// Run `events` on one oracle and on `INSTANCES` instances that own key groups (initially
/// `owners`) and move them; compare outputs (multisets), final state per key, key counts and
/// late drops. `record` builds the values of a record from (port, key value, v).
fn run_against_oracle<S: Subject>(
    make: impl Fn() -> S,
    keying: Keying,
    record: impl Fn(u8, Value, i64) -> Vec<Value>,
    events: &[Ev],
    mut owners: Vec<usize>,
) -> Result<usize, TestCaseError> {
    let mut oracle = make();
    let mut insts: Vec<S> = (0..INSTANCES).map(|_| make()).collect();
    let mut want = VecEmitter::default();
    let mut got: Vec<VecEmitter> = (0..INSTANCES).map(|_| VecEmitter::default()).collect();
    let (mut wm, mut moved_keys) = (0u64, 0usize);
    for ev in events {
        match *ev {
            Ev::Rec { port, key, t, v } => {
                let hash = keying.routing_hash(key);
                let msg = Msg { key_hash: hash, event_time: t, port };
                let values = record(port, keying.value(key), v);
                let owner = owners[key_group(hash, GROUPS) as usize];
                feed(&mut oracle, msg, values.clone(), &mut want);
                feed(&mut insts[owner], msg, values, &mut got[owner]);
            }
            Ev::Wm(w) => {
                oracle.on_watermark(w, &mut want);
                for (inst, out) in insts.iter_mut().zip(&mut got) {
                    inst.on_watermark(w, out);
                }
                wm = wm.max(w);
            }
            Ev::Move { group, to } => {
                let from = owners[group as usize];
                let moving = |h: u64| key_group(h, GROUPS) == group;
                let before = (insts[from].keys(), insts[to].keys());
                let archive = insts[from].export(&moving);
                let left = insts[from].snapshot();
                prop_assert!(left.iter().all(|(_, h, _)| !moving(*h)), "a key of the group stayed");
                let n = before.0 - insts[from].keys();
                moved_keys += n;
                if from == to {
                    // Export and import on one instance: the keys come back.
                    prop_assert_eq!(insts[to].import(&archive), Ok(()));
                    prop_assert_eq!(insts[to].keys(), before.0);
                } else {
                    let dropped = insts[to].dropped();
                    prop_assert_eq!(insts[to].import(&archive), Ok(()));
                    prop_assert_eq!(insts[to].keys(), before.1 + n);
                    // The contract: the receiver's current watermark, right after the import.
                    insts[to].on_watermark(wm, &mut got[to]);
                    prop_assert_eq!(insts[to].dropped(), dropped, "an import changes no late-drop count");
                }
                owners[group as usize] = to;
            }
        }
    }
    let total: usize = insts.iter().map(|i| i.keys()).sum();
    prop_assert_eq!(total, oracle.keys(), "every key is on exactly one instance");
    let split: Vec<_> = insts.iter().flat_map(|i| i.snapshot()).collect();
    for (i, inst) in insts.iter().enumerate() {
        for (_, hash, _) in inst.snapshot() {
            prop_assert_eq!(owners[key_group(hash, GROUPS) as usize], i, "a key lives with its group's owner");
        }
    }
    prop_assert_eq!(sorted_snapshots(split), sorted_snapshots(oracle.snapshot()), "final state per key");
    let dropped: u64 = insts.iter().map(|i| i.dropped()).sum();
    prop_assert_eq!(dropped, oracle.dropped());
    oracle.on_end(&mut want);
    for (inst, out) in insts.iter_mut().zip(&mut got) {
        inst.on_end(out);
    }
    let got_refs: Vec<&VecEmitter> = got.iter().collect();
    prop_assert_eq!(multiset(&got_refs), multiset(&[&want]), "outputs");
    Ok(moved_keys)
}

fn agg_schema(keying: Keying, ty: FieldType) -> Schema {
    Schema::new(vec![("k".into(), keying.field_type()), ("v".into(), ty)])
}

/// The value field of a record, of type `ty`, from a generated integer.
fn number(ty: FieldType, v: i64) -> Value {
    match ty {
        FieldType::U64 => Value::U64(v.unsigned_abs()),
        FieldType::F64 => Value::F64(v as f64 / 3.0),
        _ => Value::I64(v),
    }
}

const KEYINGS: [Keying; 3] = [Keying::Str, Keying::U64, Keying::Upstream];
const TYPES: [FieldType; 3] = [FieldType::U64, FieldType::I64, FieldType::F64];

fn aggregate_case(op: AggOp, keying: usize, ty: usize, events: &[Ev], owners: Vec<usize>) -> Result<(), TestCaseError> {
    let (keying, ty) = (KEYINGS[keying], TYPES[ty]);
    let schema = agg_schema(keying, ty);
    let field = (op != AggOp::Count).then_some("v");
    let make = || Aggregate::new(&schema, op, field, keying.field()).unwrap().0;
    run_against_oracle(make, keying, |_, k, v| vec![k, number(ty, v)], events, owners)?;
    Ok(())
}

fn window_case(
    spec: WindowSpec,
    op: usize,
    keying: usize,
    events: &[Ev],
    owners: Vec<usize>,
) -> Result<(), TestCaseError> {
    const OPS: [AggOp; 5] = [AggOp::Count, AggOp::Sum, AggOp::Min, AggOp::Max, AggOp::Avg];
    let (op, keying) = (OPS[op], KEYINGS[keying]);
    let schema = agg_schema(keying, FieldType::I64);
    let make = || Window::new(&schema, spec, op, Some("v"), keying.field()).unwrap().0;
    run_against_oracle(make, keying, |_, k, v| vec![k, Value::I64(v)], events, owners)?;
    Ok(())
}

fn join_schemas(keying: Keying) -> (Schema, Schema) {
    let ty = keying.field_type();
    (
        Schema::new(vec![("k".into(), ty), ("v".into(), FieldType::I64)]),
        Schema::new(vec![("k".into(), ty), ("x".into(), FieldType::I64)]),
    )
}

proptest! {
    #![proptest_config(cases(24))]

    #[test]
    fn count_keys_move_like_one_instance((events, owners) in script(), keying in 0usize..3, ty in 0usize..3) {
        aggregate_case(AggOp::Count, keying, ty, &events, owners)?;
    }

    #[test]
    fn sum_keys_move_like_one_instance((events, owners) in script(), keying in 0usize..3, ty in 0usize..3) {
        aggregate_case(AggOp::Sum, keying, ty, &events, owners)?;
    }

    #[test]
    fn min_keys_move_like_one_instance((events, owners) in script(), keying in 0usize..3, ty in 0usize..3) {
        aggregate_case(AggOp::Min, keying, ty, &events, owners)?;
    }

    #[test]
    fn max_keys_move_like_one_instance((events, owners) in script(), keying in 0usize..3, ty in 0usize..3) {
        aggregate_case(AggOp::Max, keying, ty, &events, owners)?;
    }

    #[test]
    fn avg_keys_move_like_one_instance((events, owners) in script(), keying in 0usize..3, ty in 0usize..3) {
        aggregate_case(AggOp::Avg, keying, ty, &events, owners)?;
    }

    #[test]
    fn tumbling_window_keys_move_like_one_instance(
        (events, owners) in script(), size in 2u64..20, lateness in 0u64..12, op in 0usize..5, keying in 0usize..3,
    ) {
        window_case(WindowSpec::tumbling(size).with_lateness(lateness), op, keying, &events, owners)?;
    }

    #[test]
    fn sliding_window_keys_move_like_one_instance(
        (events, owners) in script(), size in 2u64..20, slide in 1u64..8, lateness in 0u64..12, op in 0usize..5,
        keying in 0usize..3,
    ) {
        window_case(WindowSpec::sliding(size, slide).with_lateness(lateness), op, keying, &events, owners)?;
    }

    #[test]
    fn join_keys_move_like_one_instance(
        (events, owners) in script(), size in 2u64..15, slide in 1u64..20, lateness in 0u64..10, keying in 0usize..2,
    ) {
        let spec = if slide >= size { WindowSpec::tumbling(size) } else { WindowSpec::sliding(size, slide) };
        let spec = spec.with_lateness(lateness);
        let keying = KEYINGS[keying];
        let (left, right) = join_schemas(keying);
        let make = || Join::new(&left, &right, "k", "k", spec).unwrap().0;
        run_against_oracle(make, keying, |_, k, v| vec![k, Value::I64(v)], &events, owners)?;
    }
}

/// The oracle runs move keys at all (not only empty groups).
#[test]
fn the_oracle_scripts_move_keys() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let schema = agg_schema(Keying::Str, FieldType::I64);
    let mut moved = 0;
    for _ in 0..8 {
        let (events, owners) = script().new_tree(&mut runner).unwrap().current();
        let make = || Aggregate::new(&schema, AggOp::Sum, Some("v"), Some("k")).unwrap().0;
        moved += run_against_oracle(make, Keying::Str, |_, k, v| vec![k, Value::I64(v)], &events, owners).unwrap();
    }
    assert!(moved > 20, "only {moved} keys moved");
}

/// Export a group from an instance that got records routed as the engine routes them (the key
/// field's `key_hash`, or the upstream hash): exactly the keys whose routing hash is in the
/// group leave, and the receiver holds exactly those.
fn routed_keys_leave_with_their_group<S: Subject>(make: impl Fn() -> S, keying: Keying, ports: u8) {
    for group in 0..GROUPS {
        let (mut a, mut b) = (make(), make());
        let mut out = VecEmitter::default();
        let mut rng = Rng(u64::from(group) + 1);
        let mut in_group = std::collections::BTreeSet::new();
        for i in 0..200 {
            let key = rng.below(40);
            let hash = keying.routing_hash(key);
            let msg = Msg { key_hash: hash, event_time: 1000 + i, port: (i % u64::from(ports)) as u8 };
            feed(&mut a, msg, vec![keying.value(key), Value::I64(1)], &mut out);
            if key_group(hash, GROUPS) == group {
                in_group.insert(key);
            }
        }
        let before = a.keys();
        let archive = a.export(&|h| key_group(h, GROUPS) == group);
        b.import(&archive).unwrap();
        assert_eq!((b.keys(), a.keys()), (in_group.len(), before - in_group.len()), "group {group}");
        let key_value = |k: &OwnedKey| {
            let mut v = Value::U64(0);
            k.write_into(&mut v);
            v
        };
        for (k, hash, _) in b.snapshot() {
            let v = key_value(&k);
            match keying {
                Keying::Upstream => assert_eq!(v, Value::U64(hash), "an upstream key is its hash"),
                _ => assert_eq!(v.key_hash(), hash, "the state's hash is the key field's key_hash"),
            }
            assert_eq!(key_group(hash, GROUPS), group);
        }
        let keys_in_b: std::collections::BTreeSet<u64> = b
            .snapshot()
            .iter()
            .map(|(k, hash, _)| {
                let stored = |key: u64| match keying {
                    Keying::Upstream => Value::U64(keying.routing_hash(key)),
                    _ => keying.value(key),
                };
                (0..40).find(|key| keying.routing_hash(*key) == *hash && stored(*key) == key_value(k)).unwrap()
            })
            .collect();
        assert_eq!(keys_in_b, in_group);
        assert!(a.snapshot().iter().all(|(_, h, _)| key_group(*h, GROUPS) != group));
    }
}

#[test]
fn aggregate_state_is_keyed_by_the_routing_hash() {
    for keying in KEYINGS {
        let schema = agg_schema(keying, FieldType::I64);
        routed_keys_leave_with_their_group(
            || Aggregate::new(&schema, AggOp::Sum, Some("v"), keying.field()).unwrap().0,
            keying,
            1,
        );
    }
}

#[test]
fn window_state_is_keyed_by_the_routing_hash() {
    for keying in KEYINGS {
        let schema = agg_schema(keying, FieldType::I64);
        let spec = WindowSpec::sliding(100, 30);
        routed_keys_leave_with_their_group(
            || Window::new(&schema, spec, AggOp::Max, Some("v"), keying.field()).unwrap().0,
            keying,
            1,
        );
    }
}

#[test]
fn join_state_is_keyed_by_the_routing_hash_of_each_side() {
    for keying in [Keying::Str, Keying::U64] {
        let (left, right) = join_schemas(keying);
        let spec = WindowSpec::tumbling(50);
        routed_keys_leave_with_their_group(|| Join::new(&left, &right, "k", "k", spec).unwrap().0, keying, 2);
    }
}

/// A repeated or older watermark is a no-op for an instance's own keys.
#[test]
fn a_repeated_watermark_emits_nothing() {
    let schema = agg_schema(Keying::Str, FieldType::I64);
    for seed in 0..30 {
        let mut rng = Rng(seed);
        let spec = WindowSpec::sliding(2 + rng.below(20), 1 + rng.below(6)).with_lateness(rng.below(10));
        let (mut w, _) = Window::new(&schema, spec, AggOp::Sum, Some("v"), Some("k")).unwrap();
        let (left, right) = join_schemas(Keying::Str);
        let (mut j, _) = Join::new(&left, &right, "k", "k", spec).unwrap();
        let (mut out, mut wm) = (VecEmitter::default(), 0);
        for i in 0..300 {
            if rng.below(8) == 0 {
                wm += rng.below(10);
                w.on_watermark(wm, &mut out);
                j.on_watermark(wm, &mut out);
                let (before, dropped) = (out.out.len(), (w.late_dropped(), j.late_dropped()));
                let snap = (w.snapshot(), j.snapshot());
                for again in [wm, wm.saturating_sub(rng.below(20)), wm] {
                    w.on_watermark(again, &mut out);
                    j.on_watermark(again, &mut out);
                }
                assert_eq!(out.out.len(), before, "seed {seed}");
                assert_eq!((w.late_dropped(), j.late_dropped()), dropped);
                assert_eq!((w.snapshot(), j.snapshot()), snap);
            } else {
                let t = (wm + 5).saturating_sub(rng.below(30));
                let values = vec![Value::Str(format!("k{}", rng.below(6))), Value::I64(i)];
                let msg = Msg { key_hash: 0, event_time: t, port: (i % 2) as u8 };
                feed(&mut w, msg, values.clone(), &mut out);
                feed(&mut j, msg, values, &mut out);
            }
        }
    }
}

/// Sender and receiver at different watermarks. Instance A holds the moving group (mirrored by
/// C, which gets exactly A's records of that group and A's watermarks) and other keys; B holds
/// other keys (mirrored by D). After the move and `on_watermark(wm_b)` on B, B emitted exactly
/// what C emits on `on_watermark(wm_b)`. When B is not behind A, B then goes on exactly as C and
/// D together.
fn skewed_watermarks<S: Subject>(
    make: impl Fn() -> S,
    raw: &[(u8, u64, u64, u64, i64, u8)],
    group: u16,
) -> Result<(), TestCaseError> {
    let (mut a, mut b, mut c, mut d) = (make(), make(), make(), make());
    let (mut oa, mut ob, mut oc, mut od) =
        (VecEmitter::default(), VecEmitter::default(), VecEmitter::default(), VecEmitter::default());
    let keying = Keying::Str;
    let in_group = |key: u64| key_group(keying.routing_hash(key), GROUPS) == group;
    let (mut clock_a, mut clock_b, mut wm_a, mut wm_b) = (0u64, 0u64, 0u64, 0u64);
    let half = raw.len() / 2;
    for &(kind, key, dt, back, v, port) in &raw[..half] {
        let to_a = kind % 2 == 0 || in_group(key);
        let clock = if to_a { &mut clock_a } else { &mut clock_b };
        *clock += dt * 2;
        let msg = Msg { key_hash: keying.routing_hash(key), event_time: clock.saturating_sub(back), port };
        let values = vec![keying.value(key), Value::I64(v)];
        match (kind < 4, to_a) {
            (true, true) => {
                wm_a = wm_a.max(clock_a.saturating_sub(back / 3));
                a.on_watermark(wm_a, &mut oa);
                c.on_watermark(wm_a, &mut oc);
            }
            (true, false) => {
                wm_b = wm_b.max(clock_b.saturating_sub(back / 3));
                b.on_watermark(wm_b, &mut ob);
                d.on_watermark(wm_b, &mut od);
            }
            (false, true) => {
                if in_group(key) {
                    feed(&mut c, msg, values.clone(), &mut oc);
                }
                feed(&mut a, msg, values, &mut oa);
            }
            (false, false) => {
                feed(&mut b, msg, values.clone(), &mut ob);
                feed(&mut d, msg, values, &mut od);
            }
        }
    }
    let archive = a.export(&|h| key_group(h, GROUPS) == group);
    let (b_at, c_at, b_dropped) = (ob.out.len(), oc.out.len(), b.dropped());
    prop_assert_eq!(b.import(&archive), Ok(()));
    b.on_watermark(wm_b, &mut ob);
    c.on_watermark(wm_b, &mut oc);
    prop_assert_eq!(&ob.out[b_at..], &oc.out[c_at..], "wm_a {} wm_b {}", wm_a, wm_b);
    prop_assert_eq!(b.dropped(), b_dropped, "the import changed no late-drop count");
    if wm_b < wm_a {
        return Ok(()); // records of moved keys are judged against B's watermark from now on
    }
    let (b_at, c_at, d_at) = (ob.out.len(), oc.out.len(), od.out.len());
    let (c_dropped, d_dropped) = (c.dropped(), d.dropped());
    let mut clock = wm_b;
    for &(kind, key, dt, back, v, port) in &raw[half..] {
        clock += dt;
        if kind < 3 {
            wm_b = wm_b.max(clock.saturating_sub(back / 3));
            b.on_watermark(wm_b, &mut ob);
            c.on_watermark(wm_b, &mut oc);
            d.on_watermark(wm_b, &mut od);
            continue;
        }
        let msg = Msg { key_hash: keying.routing_hash(key), event_time: clock.saturating_sub(back), port };
        let values = vec![keying.value(key), Value::I64(v)];
        feed(&mut b, msg, values.clone(), &mut ob);
        match in_group(key) {
            true => feed(&mut c, msg, values, &mut oc),
            false => feed(&mut d, msg, values, &mut od),
        }
    }
    let mut both: Vec<_> = c.snapshot().into_iter().chain(d.snapshot()).map(|s| format!("{s:?}")).collect();
    both.sort();
    prop_assert_eq!(sorted_snapshots(b.snapshot()), both);
    prop_assert_eq!(b.dropped() - b_dropped, (c.dropped() - c_dropped) + (d.dropped() - d_dropped));
    b.on_end(&mut ob);
    c.on_end(&mut oc);
    d.on_end(&mut od);
    let tail = |o: &VecEmitter, at: usize| VecEmitter { out: o.out[at..].to_vec() };
    let (tb, tc, td) = (tail(&ob, b_at), tail(&oc, c_at), tail(&od, d_at));
    prop_assert_eq!(multiset(&[&tb]), multiset(&[&tc, &td]));
    Ok(())
}

proptest! {
    #![proptest_config(cases(40))]

    #[test]
    fn window_import_at_another_watermark_fires_exactly_what_is_due(
        raw in prop::collection::vec((0u8..20, 0u64..14, 0u64..3, 0u64..25, -1000i64..1000, Just(0u8)), 0..200),
        group in 0u16..GROUPS, size in 2u64..20, slide in 1u64..25, lateness in 0u64..12,
    ) {
        let spec = if slide >= size { WindowSpec::tumbling(size) } else { WindowSpec::sliding(size, slide) };
        let schema = agg_schema(Keying::Str, FieldType::I64);
        let make = || Window::new(&schema, spec.with_lateness(lateness), AggOp::Sum, Some("v"), Some("k")).unwrap().0;
        skewed_watermarks(make, &raw, group)?;
    }

    #[test]
    fn join_import_at_another_watermark_fires_exactly_what_is_due(
        raw in prop::collection::vec((0u8..20, 0u64..14, 0u64..3, 0u64..25, -1000i64..1000, 0u8..2), 0..200),
        group in 0u16..GROUPS, size in 2u64..20, slide in 1u64..25, lateness in 0u64..12,
    ) {
        let spec = if slide >= size { WindowSpec::tumbling(size) } else { WindowSpec::sliding(size, slide) };
        let (left, right) = join_schemas(Keying::Str);
        let make = || Join::new(&left, &right, "k", "k", spec.with_lateness(lateness)).unwrap().0;
        skewed_watermarks(make, &raw, group)?;
    }
}

/// A message of the example actor: add `amount` to `key`'s total, or (critical) report it.
type TallyIn = (u64, u64, bool);

/// An example user actor keyed by its routing hash: a total per key in a [`MapMerge`], a query
/// as critical message, and every total at the end.
struct Tally;

impl Actor for Tally {
    type In = TallyIn;
    type State = MapMerge<u64, Sum<u64>>;
    fn is_critical(&self, msg: &rkyv::Archived<TallyIn>) -> bool {
        msg.2
    }
    fn on_message(&mut self, state: &mut Self::State, _cx: &mut Cx<'_>, msg: &rkyv::Archived<TallyIn>) {
        state.entry(msg.0.to_native()).add(msg.1.to_native());
    }
    fn on_critical(&mut self, state: &mut Self::State, cx: &mut Cx<'_>, msg: &rkyv::Archived<TallyIn>) {
        let key = msg.0.to_native();
        let total = state.0.get(&key).map_or(0, |s| s.0);
        cx.emit(cx.key_hash(), cx.event_time(), &(key, total));
    }
    fn on_end(&mut self, state: &mut Self::State, cx: &mut Cx<'_>) {
        for (key, total) in &state.0 {
            cx.emit(key_u64(*key), u64::MAX, &(*key, total.0));
        }
    }
    fn split_off(&mut self, state: &mut Self::State, moving: &dyn Fn(u64) -> bool) -> Option<Self::State> {
        Some(state.split_off(|k| key_u64(*k), moving))
    }
}

/// The same actor, without `split_off`: its keys cannot move.
struct Stuck;

impl Actor for Stuck {
    type In = TallyIn;
    type State = MapMerge<u64, Sum<u64>>;
    fn on_message(&mut self, state: &mut Self::State, cx: &mut Cx<'_>, msg: &rkyv::Archived<TallyIn>) {
        Tally.on_message(state, cx, msg)
    }
    fn on_critical(&mut self, state: &mut Self::State, cx: &mut Cx<'_>, msg: &rkyv::Archived<TallyIn>) {
        Tally.on_critical(state, cx, msg)
    }
}

/// Collects what a user actor emits: `(key hash, event time, (key, total))`.
#[derive(Default)]
struct Totals(Vec<(u64, u64, (u64, u64))>);

impl Emitter for Totals {
    fn emit(&mut self, _: u64, _: u64, _: &[Value]) {
        unreachable!("user actors forward archives")
    }
    fn forward(&mut self, key_hash: u64, event_time: u64, archive: &[u8]) {
        let mut aligned = AlignedVec::<16>::new();
        aligned.extend_from_slice(archive);
        let v = rkyv::from_bytes::<(u64, u64), rkyv::rancor::Error>(&aligned).expect("a (key, total)");
        self.0.push((key_hash, event_time, v));
    }
}

fn tally() -> ActorOp {
    ActorOp::User(erase_actor(Arc::new(|| Tally)))
}

/// Apply one message to a user activation, as the lessor's machine would (critical or not).
fn send(op: &mut ActorOp, key: u64, t: u64, amount: u64, query: bool, out: &mut Totals) {
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&(key, amount, query)).unwrap();
    let h = Header { event_time: t, ..Header::data(0, 0, key_u64(key)) };
    let class = if op.is_critical(&h, &payload) { MessageClass::Critical } else { MessageClass::Regular };
    op.on_data(&h, &payload, class, out);
}

proptest! {
    #![proptest_config(cases(48))]

    /// The example actor's keys move between three activations through `ActorOp`; outputs
    /// (queries included) and final totals equal one activation's.
    #[test]
    fn user_actor_keys_move_like_one_activation((events, mut owners) in script()) {
        let mut oracle = tally();
        let mut acts: Vec<ActorOp> = (0..INSTANCES).map(|_| tally()).collect();
        prop_assert!(acts.iter().all(ActorOp::migrates));
        let mut want = Totals::default();
        let mut got: Vec<Totals> = (0..INSTANCES).map(|_| Totals::default()).collect();
        let mut wm = 0;
        for ev in &events {
            match *ev {
                Ev::Rec { port, key, t, v } => {
                    let (amount, query) = (v.unsigned_abs(), port == 1 && v % 3 == 0);
                    let owner = owners[key_group(key_u64(key), GROUPS) as usize];
                    send(&mut oracle, key, t, amount, query, &mut want);
                    send(&mut acts[owner], key, t, amount, query, &mut got[owner]);
                }
                Ev::Wm(w) => {
                    wm = wm.max(w);
                    oracle.on_watermark(w, &mut want);
                    for (a, out) in acts.iter_mut().zip(&mut got) {
                        a.on_watermark(w, out);
                    }
                }
                Ev::Move { group, to } => {
                    let from = owners[group as usize];
                    let archive = acts[from].export_keys(&|h| key_group(h, GROUPS) == group);
                    let archive = archive.expect("a splitting actor exports");
                    prop_assert_eq!(acts[to].import_keys(&archive), Ok(()));
                    acts[to].on_watermark(wm, &mut got[to]);
                    owners[group as usize] = to;
                }
            }
        }
        prop_assert_eq!(crate::function::take_failure(), None);
        oracle.on_end(&mut want);
        for (a, out) in acts.iter_mut().zip(&mut got) {
            a.on_end(out);
        }
        let mut all: Vec<_> = got.into_iter().flat_map(|t| t.0).collect();
        all.sort_unstable();
        want.0.sort_unstable();
        prop_assert_eq!(all, want.0);
    }
}

#[test]
fn an_actor_without_split_off_does_not_migrate() {
    let mut op = ActorOp::User(erase_actor(Arc::new(|| Stuck)));
    let mut out = Totals::default();
    send(&mut op, 1, 0, 5, false, &mut out);
    assert!(!op.migrates());
    assert!(op.export_keys(&|_| true).is_none());
    let mut other = tally();
    send(&mut other, 2, 0, 5, false, &mut out);
    let archive = other.export_keys(&|_| true).unwrap();
    assert!(matches!(op.import_keys(&archive), Err(MigrateError::WrongKind { .. })));
}

#[test]
fn a_user_key_already_present_is_reported_not_merged() {
    let (mut a, mut b) = (tally(), tally());
    let mut out = Totals::default();
    for (key, amount) in [(1, 10), (2, 20), (3, 30)] {
        send(&mut a, key, 0, amount, false, &mut out);
    }
    send(&mut b, 2, 0, 7, false, &mut out);
    let archive = a.export_keys(&|_| true).unwrap();
    assert_eq!(b.import_keys(&archive), Err(MigrateError::KeyPresent { hash: key_u64(2) }));
    send(&mut b, 2, 1, 0, true, &mut out);
    assert_eq!(out.0.last().map(|o| o.2), Some((2, 7)), "the receiver is unchanged");
    send(&mut a, 1, 1, 0, true, &mut out);
    assert_eq!(out.0.last().map(|o| o.2), Some((1, 0)), "the sender's keys left");
}

/// Corrupt, truncated and foreign archives are errors (never a panic), and leave the receiver
/// unchanged; single-byte corruptions of valid archives never panic.
#[test]
fn corrupt_and_foreign_archives_are_errors() {
    let schema = agg_schema(Keying::Str, FieldType::I64);
    let spec = WindowSpec::sliding(20, 5).with_lateness(5);
    let (left, right) = join_schemas(Keying::Str);
    let mut agg = Aggregate::new(&schema, AggOp::Sum, Some("v"), Some("k")).unwrap().0;
    let mut count = Aggregate::new(&schema, AggOp::Count, None, Some("k")).unwrap().0;
    let mut win = Window::new(&schema, spec, AggOp::Sum, Some("v"), Some("k")).unwrap().0;
    let mut other_win = Window::new(&schema, WindowSpec::tumbling(20), AggOp::Sum, Some("v"), Some("k")).unwrap().0;
    let mut join = Join::new(&left, &right, "k", "k", spec).unwrap().0;
    let mut user = tally();
    let mut out = VecEmitter::default();
    for i in 0..30u64 {
        let msg = Msg { key_hash: 0, event_time: i * 3, port: (i % 2) as u8 };
        let values = vec![Value::Str(format!("k{}", i % 7)), Value::I64(i as i64)];
        feed(&mut agg, msg, values.clone(), &mut out);
        feed(&mut count, msg, values.clone(), &mut out);
        feed(&mut win, msg, values.clone(), &mut out);
        feed(&mut join, msg, values, &mut out);
        send(&mut user, i % 7, i, i, false, &mut Totals::default());
    }
    win.on_watermark(40, &mut out);
    join.on_watermark(40, &mut out);
    let half = |h: u64| h.is_multiple_of(2);
    let archives = [
        ("aggregate", agg.export_keys(&half)),
        ("window", win.export_keys(&half)),
        ("join", join.export_keys(&half)),
        ("user", user.export_keys(&half).unwrap()),
    ];
    // Fresh receivers, one per kind.
    let mut agg_rx = Aggregate::new(&schema, AggOp::Sum, Some("v"), Some("k")).unwrap().0;
    let mut win_rx = Window::new(&schema, spec, AggOp::Sum, Some("v"), Some("k")).unwrap().0;
    let mut join_rx = Join::new(&left, &right, "k", "k", spec).unwrap().0;
    let mut user_rx = tally();
    let mut import = |kind: usize, bytes: &[u8]| match kind {
        0 => agg_rx.import_keys(bytes),
        1 => win_rx.import_keys(bytes),
        2 => join_rx.import_keys(bytes),
        _ => user_rx.import_keys(bytes),
    };
    let mut rng = Rng(5);
    for (kind, (name, archive)) in archives.iter().enumerate() {
        assert!(matches!(import(kind, &[]), Err(MigrateError::Corrupt(_))), "{name}: empty");
        let garbage: Vec<u8> = (0..64).map(|_| rng.below(256) as u8).collect();
        assert!(matches!(import(kind, &garbage), Err(MigrateError::Corrupt(_))), "{name}: garbage");
        for cut in [1, archive.len() / 2, archive.len() - 1] {
            assert!(matches!(import(kind, &archive[..cut]), Err(MigrateError::Corrupt(_))), "{name}: cut at {cut}");
        }
        for (other, (other_name, _)) in archives.iter().enumerate().filter(|(o, _)| *o != kind) {
            let err = import(other, archive);
            assert!(matches!(err, Err(MigrateError::WrongKind { .. })), "{name} into {other_name}: {err:?}");
        }
        // Unaligned bytes are copied, not rejected.
        let mut shifted = AlignedVec::<16>::new();
        shifted.push(0);
        shifted.extend_from_slice(archive);
        for _ in 0..300 {
            let mut flipped = shifted.to_vec();
            let at = 1 + rng.below(archive.len() as u64) as usize;
            flipped[at] ^= 1 << rng.below(8);
            let _ = import(kind, &flipped[1..]); // an error or a plausible archive: no panic
        }
    }
    assert_eq!(crate::function::take_failure(), None, "no user code panicked");
    // Another op, another window shape: the wrong kind.
    let sum_keys = Aggregate::new(&schema, AggOp::Sum, Some("v"), Some("k")).unwrap().0.export_keys(&|_| true);
    assert!(matches!(count.import_keys(&sum_keys), Err(MigrateError::WrongKind { .. })));
    let sliding = win.export_keys(&|_| true);
    assert!(matches!(other_win.import_keys(&sliding), Err(MigrateError::WrongKind { .. })));
    // Errors leave the receiver unchanged, and the intact archives still import.
    let mut agg2 = Aggregate::new(&schema, AggOp::Sum, Some("v"), Some("k")).unwrap().0;
    let keys = agg.export_keys(&|_| true);
    agg2.import_keys(&keys).unwrap();
    let n = agg2.key_count();
    assert!(n > 0);
    assert!(matches!(agg2.import_keys(&keys), Err(MigrateError::KeyPresent { .. })));
    assert_eq!(agg2.key_count(), n);
    let msg = MigrateError::Corrupt("x".into()).to_string();
    assert!(msg.contains("corrupt key archive"), "{msg}");
}

/// A snapshot's copy of an aggregate's keys is the archive a move of all of them would ship,
/// and leaves them in place.
#[test]
fn archiving_an_aggregate_keeps_its_keys_and_equals_exporting_them() {
    let schema = agg_schema(Keying::Str, FieldType::I64);
    let mut a = Aggregate::new(&schema, AggOp::Sum, Some("v"), Some("k")).unwrap().0;
    let mut b = Aggregate::new(&schema, AggOp::Sum, Some("v"), Some("k")).unwrap().0;
    let mut out = VecEmitter::default();
    for i in 0..40u64 {
        let msg = Msg { key_hash: 0, event_time: i, port: 0 };
        let values = vec![Value::Str(format!("k{}", i % 9)), Value::I64(i as i64)];
        feed(&mut a, msg, values.clone(), &mut out);
        feed(&mut b, msg, values, &mut out);
    }
    let copy = a.copy_keys().to_bytes();
    assert_eq!(copy.as_slice(), b.export_keys(&|_| true).as_slice());
    assert_eq!(a.copy_keys().to_bytes().as_slice(), copy.as_slice(), "the keys stayed");
    let mut c = Aggregate::new(&schema, AggOp::Sum, Some("v"), Some("k")).unwrap().0;
    assert_eq!(c.import_keys(&copy), Ok(()));
    assert_eq!(c.copy_keys().to_bytes().as_slice(), copy.as_slice());
}

/// A stretch of an actor's messages applied in one call (`ErasedActor::on_messages`, where the
/// engine runs an activation alone and no hook runs around each message) does what applying
/// them one at a time does: each classified as it says, the same outputs byte for byte, in
/// order, each emit naming the message it was made from; through the default too.
#[test]
fn an_actors_stretch_in_one_call_applies_each_message_as_one_at_a_time_does() {
    use crate::envelope::Entry;
    use crate::function::{Collect, ErasedActor};
    let msgs: Vec<TallyIn> = (0..40u64).map(|i| (i % 3, i, i % 7 == 6)).collect();
    let mut bytes = AlignedVec::<16>::new();
    let entries: Vec<Entry> = (msgs.iter().enumerate())
        .map(|(i, m)| {
            let archive = rkyv::to_bytes::<rkyv::rancor::Error>(m).unwrap();
            let off = bytes.len().next_multiple_of(16);
            bytes.resize(off, 0);
            bytes.extend_from_slice(&archive);
            let header = Header { event_time: 100 + i as u64, ..Header::data(0, 0, key_u64(m.0)) };
            Entry { header, off: off as u32, len: archive.len() as u32 }
        })
        .collect();
    let outputs = |out: Collect| -> Vec<_> {
        out.0.into_iter().map(|e| (e.key_hash, e.event_time, e.archive.to_vec(), e.made_from)).collect()
    };
    let mut one = erase_actor(Arc::new(|| Tally));
    let mut out = Collect::default();
    for e in &entries {
        let payload = e.payload(&bytes);
        let class = if one.is_critical(&e.header, payload) { MessageClass::Critical } else { MessageClass::Regular };
        one.on_message(&e.header, payload, class, &mut out);
    }
    let want: Vec<_> = outputs(out).into_iter().map(|(k, t, b, _)| (k, t, b)).collect();
    assert_eq!(want.len(), 5, "messages 6, 13, 20, 27, 34 are queries");
    // Each query's output, made from the query.
    let from: Vec<Option<(u64, u64)>> =
        [6u64, 13, 20, 27, 34].iter().map(|&i| Some((key_u64(i % 3), 100 + i))).collect();
    /// The same actor through the default `on_messages` (a dyn call per message).
    struct Default(Box<dyn ErasedActor>);
    impl ErasedActor for Default {
        fn partition(&self) -> Box<dyn ErasedActor> {
            self.0.partition()
        }
        fn is_critical(&self, header: &Header, payload: &[u8]) -> bool {
            self.0.is_critical(header, payload)
        }
        fn on_message(&mut self, header: &Header, payload: &[u8], class: MessageClass, out: &mut dyn Emitter) {
            self.0.on_message(header, payload, class, out)
        }
        fn uses_watermarks(&self) -> bool {
            self.0.uses_watermarks()
        }
        fn on_watermark(&mut self, watermark: u64, out: &mut dyn Emitter) {
            self.0.on_watermark(watermark, out)
        }
        fn on_end(&mut self, out: &mut dyn Emitter) {
            self.0.on_end(out)
        }
        fn export(&self) -> AlignedVec {
            self.0.export()
        }
        fn combine_archive(&mut self, bytes: &[u8]) {
            self.0.combine_archive(bytes)
        }
    }
    let actors: [Box<dyn ErasedActor>; 2] =
        [erase_actor(Arc::new(|| Tally)), Box::new(Default(erase_actor(Arc::new(|| Tally))))];
    for mut actor in actors {
        let mut out = Collect::default();
        actor.on_messages(&entries, &bytes, &mut out);
        let got = outputs(out);
        assert_eq!(got.iter().map(|o| o.3).collect::<Vec<_>>(), from);
        assert_eq!(got.into_iter().map(|(k, t, b, _)| (k, t, b)).collect::<Vec<_>>(), want);
    }
}
