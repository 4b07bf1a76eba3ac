//! Keyed rolling aggregates: count, sum, min, max or avg of a field per key, emitting the
//! updated `{key, <op>}` on every record.

use super::agg::{AggOp, AggPartial};
use super::keyed::check_new_keys;
use super::keyed::{ExactKind, ExactTable, KeyRef, KeyedTable, OwnedKey};
use super::{output_schema, BuildError, KeySource};
use crate::builtins::moved::{agg_name, same_agg, AggKey, KeyArchive, StateCopy};
use crate::migrate::MigrateError;
use crate::operator::{Emitter, Msg, Operator};
use crate::record::{ArchivedRecord, ArchivedValue, Schema, Value};
use rkyv::util::AlignedVec;

/// Rolling aggregate per key, with the input's key hash and event time on each output.
pub struct Aggregate {
    key: KeySource,
    field: Option<usize>,
    zero: AggPartial,
    state: Partials,
    /// Scratch output row `{key, <op>}`, reused.
    row: [Value; 2],
}

/// Every key's partial. A count, sum, min or max is one number, kept as a word (its op and type
/// are the zero's); an average keeps its whole partial. A key that is not a string is kept as
/// its hash alone (`ExactTable`): W1's count entry is then 16 bytes (64 as a whole partial
/// beside its key), and 10,000 keys are a quarter of a core's L2.
enum Partials {
    ExactWords(ExactTable<u64>),
    ExactWhole(ExactTable<AggPartial>),
    Words(KeyedTable<u64>),
    Whole(KeyedTable<AggPartial>),
}

/// `$body` on the aggregate's table, whichever table and slot type it holds (each arm is
/// compiled for its own table and [`Slot`]).
macro_rules! with_table {
    ($state:expr, |$t:ident| $body:expr) => {
        match $state {
            Partials::ExactWords($t) => $body,
            Partials::ExactWhole($t) => $body,
            Partials::Words($t) => $body,
            Partials::Whole($t) => $body,
        }
    };
}

/// How a key's partial sits in the table, read and written against the aggregate's zero.
trait Slot: Copy {
    fn load(self, zero: &AggPartial) -> AggPartial;
    fn store(partial: AggPartial) -> Self;
}

impl Slot for u64 {
    #[inline(always)]
    fn load(self, zero: &AggPartial) -> AggPartial {
        zero.with_word(self)
    }
    /// Only partials of a word op reach a table of words (`Aggregate::new`, and `same_agg` on
    /// import), so the 0 is never stored.
    #[inline(always)]
    fn store(partial: AggPartial) -> Self {
        partial.to_word().unwrap_or(0)
    }
}

impl Slot for AggPartial {
    #[inline(always)]
    fn load(self, _: &AggPartial) -> AggPartial {
        self
    }
    #[inline(always)]
    fn store(partial: AggPartial) -> Self {
        partial
    }
}

impl Aggregate {
    /// The same aggregate, its key field being what every edge into it partitions by (as an engine's
    /// plan routes a keyed built-in): a record's key hash is its message's, not computed again.
    /// Cold path.
    pub fn routed_by_key(mut self) -> Self {
        self.key = self.key.routed();
        self
    }

    /// `op` over `field` (`None` for count) per `key` (`None`: the upstream key hash, emitted as
    /// a u64). Output schema: `key` (the key field's type, or u64) and the op's name (count: u64,
    /// sum/min/max: the field's type, avg: f64). Cold path.
    pub fn new(
        input: &Schema,
        op: AggOp,
        field: Option<&str>,
        key: Option<&str>,
    ) -> Result<(Aggregate, Schema), BuildError> {
        let (zero, field) = AggPartial::build(op, input, field)?;
        let (key, key_ty) = KeySource::resolve(input, key)?;
        let schema = output_schema(vec![("key".into(), key_ty), (op.name().into(), zero.output_type())])?;
        let row = [Value::U64(0), Value::U64(0)];
        let exact = ExactKind::of(match key {
            KeySource::Upstream => None,
            _ => Some(key_ty),
        });
        let state = match (exact, zero.to_word()) {
            (Some(kind), Some(_)) => Partials::ExactWords(ExactTable::new(kind)),
            (Some(kind), None) => Partials::ExactWhole(ExactTable::new(kind)),
            (None, Some(_)) => Partials::Words(KeyedTable::new()),
            (None, None) => Partials::Whole(KeyedTable::new()),
        };
        Ok((Aggregate { key, field, zero, state, row }, schema))
    }

    /// Every (key hash, key, partial), ordered by hash, then key. Cold path.
    pub fn partials(&self) -> Vec<(u64, OwnedKey, AggPartial)> {
        with_table!(&self.state, |t| t
            .entries()
            .into_iter()
            .map(|(h, k, s)| (h, k.clone(), s.load(&self.zero)))
            .collect())
    }

    /// The kind of the keys, unless they are strings.
    fn exact_kind(&self) -> Option<ExactKind> {
        match &self.state {
            Partials::ExactWords(t) => Some(t.kind()),
            Partials::ExactWhole(t) => Some(t.kind()),
            Partials::Words(_) | Partials::Whole(_) => None,
        }
    }

    /// Number of keys held.
    pub fn key_count(&self) -> usize {
        with_table!(&self.state, |t| t.len())
    }

    /// Remove every key whose routing key hash (the `key_hash` its records are routed by: the
    /// key field's [`key_hash`](crate::record::ArchivedValue::key_hash), or the upstream key
    /// hash, which is what this aggregate keys its state by) is `moving`, and return them as an
    /// rkyv archive for [`Aggregate::import_keys`] on the instance of the same aggregate on
    /// another shard. Cold path.
    pub fn export_keys(&mut self, moving: &dyn Fn(u64) -> bool) -> AlignedVec {
        let zero = self.zero;
        let keys = with_table!(&mut self.state, |t| t
            .drain_where(|hash, _| moving(hash))
            .into_iter()
            .map(|(key, hash, s)| AggKey { key, hash, partial: s.load(&zero) })
            .collect());
        KeyArchive::Aggregate { zero, keys }.to_bytes()
    }

    /// Every key copied, kept in place, to be archived later and elsewhere: [`StateCopy::to_bytes`]
    /// gives the bytes [`Aggregate::export_keys`] of every key would. A snapshot holds its shard
    /// only for the copy.
    pub fn copy_keys(&self) -> StateCopy {
        let keys = self.partials().into_iter().map(|(hash, key, partial)| AggKey { key, hash, partial });
        StateCopy(KeyArchive::Aggregate { zero: self.zero, keys: keys.collect() })
    }

    /// Insert keys exported by [`Aggregate::export_keys`] from another instance of the same
    /// aggregate, none of which this instance holds. The archive is validated first (a corrupt
    /// archive, one of another op or field type, or a key already here is an error); on error
    /// nothing changes. A rolling aggregate has no timers: nothing is emitted, and a watermark
    /// after the import changes nothing.
    pub fn import_keys(&mut self, archive: &[u8]) -> Result<(), MigrateError> {
        let (zero, keys) = match KeyArchive::decode(archive)? {
            KeyArchive::Aggregate { zero, keys } => (zero, keys),
            other => return Err(self.wrong_kind(other.kind())),
        };
        if !same_agg(&zero, &self.zero) {
            return Err(self.wrong_kind(KeyArchive::Aggregate { zero, keys: Vec::new() }.kind()));
        }
        if let Some(k) = keys.iter().find(|k| !same_agg(&k.partial, &self.zero)) {
            let what = (agg_name(&k.partial), agg_name(&zero));
            return Err(MigrateError::Corrupt(format!("a partial of {} in an archive of {}", what.0, what.1)));
        }
        if let Some(kind) = self.exact_kind() {
            if let Some(k) = keys.iter().find(|k| !kind.holds(&k.key, k.hash)) {
                let (key, hash) = (&k.key, k.hash);
                return Err(MigrateError::Corrupt(format!("key {key:?} (hash {hash:#018x}) is not a key of {kind:?}")));
            }
        }
        check_new_keys(|k| with_table!(&self.state, |t| t.get(k).is_some()), keys.iter().map(|k| (&k.key, k.hash)))?;
        for k in keys {
            with_table!(&mut self.state, |t| t.insert_new(&k.key.as_key_ref(k.hash), Slot::store(k.partial)));
        }
        Ok(())
    }

    fn wrong_kind(&self, found: String) -> MigrateError {
        let expected = KeyArchive::Aggregate { zero: self.zero, keys: Vec::new() }.kind();
        MigrateError::WrongKind { expected, found }
    }
}

impl Operator for Aggregate {
    /// The key's entry, where the key is the message's key hash (routed by it, or upstream):
    /// a key read from the record is not known before the record is.
    #[inline(always)]
    fn prefetch(&self, msg: &Msg) {
        if let Partials::ExactWords(t) = &self.state {
            t.prefetch(msg.key_hash);
        }
    }

    /// Where the key is the message's key hash and the table is of exact keys and words (a
    /// count, sum, min or max: one compare per record; an average's larger entries are not
    /// prefetched).
    #[inline(always)]
    fn prefetches(&self) -> bool {
        matches!(self.key, KeySource::Routed(_) | KeySource::Upstream) && matches!(self.state, Partials::ExactWords(_))
    }

    /// Hot path: no allocation in steady state (a new key allocates its entry, and a string
    /// key's copy).
    #[inline]
    fn on_record<E: Emitter>(&mut self, msg: Msg, rec: &ArchivedRecord, _: &[u8], out: &mut E) {
        let Some(key) = self.key.key_of(&msg, &rec.fields) else {
            return;
        };
        let zero = self.zero;
        let value = self.field.and_then(|pos| rec.fields.get(pos));
        // An exact key: the output is two cells (`Emitter::emit_cells`), the key's cell read
        // from the record; a string key: values, the key written from the table's copy.
        let partial = match &mut self.state {
            Partials::ExactWords(t) => exact(t, key.hash(), zero, value),
            Partials::ExactWhole(t) => exact(t, key.hash(), zero, value),
            Partials::Words(t) => keyed(t, &key, zero, value, &mut self.row),
            Partials::Whole(t) => keyed(t, &key, zero, value, &mut self.row),
        };
        match key.cell() {
            Some(k) => out.emit_cells(msg.key_hash, msg.event_time, &[k, partial.result_cell()]),
            None => out.emit(msg.key_hash, msg.event_time, &self.row),
        }
    }
}

/// Fold `value` into the partial of the key whose hash is `hash` in `t`, a table of exact keys.
#[inline(always)]
fn exact<S: Slot>(t: &mut ExactTable<S>, hash: u64, zero: AggPartial, value: Option<&ArchivedValue>) -> AggPartial {
    let slot = t.get_or_insert_with(hash, || S::store(zero));
    let mut partial = slot.load(&zero);
    partial.fold_value(value);
    *slot = S::store(partial);
    partial
}

/// Fold `value` into `key`'s partial in `t`, a table of string keys; the output row `{key,
/// <op>}` written into `row`.
#[inline(always)]
fn keyed<S: Slot>(
    t: &mut KeyedTable<S>,
    key: &KeyRef<'_>,
    zero: AggPartial,
    value: Option<&ArchivedValue>,
    row: &mut [Value; 2],
) -> AggPartial {
    let (owned, slot) = t.get_or_insert_with(key, || S::store(zero));
    let mut partial = slot.load(&zero);
    partial.fold_value(value);
    *slot = S::store(partial);
    owned.write_into(&mut row[0]);
    partial.write_result(&mut row[1]);
    partial
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::VecEmitter;
    use crate::record::FieldType;
    use crate::testkit::{feed, msg, Rng};

    fn bids() -> Schema {
        Schema::new(vec![
            ("auction".into(), FieldType::Str),
            ("price".into(), FieldType::F64),
            ("qty".into(), FieldType::I64),
        ])
    }

    fn bid(a: &str, p: f64, q: i64) -> Vec<Value> {
        vec![Value::Str(a.into()), Value::F64(p), Value::I64(q)]
    }

    #[test]
    fn rolling_max_per_string_key() {
        let (mut agg, schema) = Aggregate::new(&bids(), AggOp::Max, Some("price"), Some("auction")).unwrap();
        let types: Vec<_> = schema.fields().map(|(n, t)| (n.to_owned(), t)).collect();
        assert_eq!(types, vec![("key".into(), FieldType::Str), ("max".into(), FieldType::F64)]);
        let mut out = VecEmitter::default();
        for (i, (a, p)) in [("x", 2.0), ("y", 1.0), ("x", 1.5), ("x", 3.0)].into_iter().enumerate() {
            feed(&mut agg, msg(i as u64, 10 + i as u64), bid(a, p, 0), &mut out);
        }
        let got: Vec<_> = out.out.iter().map(|(h, t, v)| (*h, *t, v[0].clone(), v[1].clone())).collect();
        let s = |x: &str| Value::Str(x.into());
        assert_eq!(
            got,
            vec![
                (0, 10, s("x"), Value::F64(2.0)),
                (1, 11, s("y"), Value::F64(1.0)),
                (2, 12, s("x"), Value::F64(2.0)),
                (3, 13, s("x"), Value::F64(3.0)),
            ]
        );
    }

    #[test]
    fn count_by_upstream_key_hash() {
        let (mut agg, schema) = Aggregate::new(&bids(), AggOp::Count, None, None).unwrap();
        assert_eq!(schema.field(0), ("key", FieldType::U64));
        assert_eq!(schema.field(1), ("count", FieldType::U64));
        let mut out = VecEmitter::default();
        for h in [7, 8, 7, 7] {
            feed(&mut agg, msg(h, 0), bid("", 0.0, 0), &mut out);
        }
        let counts: Vec<_> = out.out.iter().map(|(_, _, v)| (v[0].clone(), v[1].clone())).collect();
        let c = |k, n| (Value::U64(k), Value::U64(n));
        assert_eq!(counts, vec![c(7, 1), c(8, 1), c(7, 2), c(7, 3)]);
        let err = Aggregate::new(&bids(), AggOp::Min, Some("auction"), None).err().unwrap();
        assert!(matches!(err, BuildError::NotNumeric { .. }));
    }

    /// Float sums, minimums and maximums (kept as words of their bits) and a float average
    /// (kept whole), against recomputation from the prefix; integral prices add exactly.
    #[test]
    fn float_aggregates_match_recomputation_from_the_prefix() {
        let ops = [AggOp::Sum, AggOp::Min, AggOp::Max, AggOp::Avg];
        for seed in 0..12 {
            let mut rng = Rng(100 + seed);
            let op = ops[rng.below(4) as usize];
            let (mut agg, _) = Aggregate::new(&bids(), op, Some("price"), Some("auction")).unwrap();
            let mut out = VecEmitter::default();
            let mut seen: Vec<(String, f64)> = Vec::new();
            for i in 0..300 {
                let (key, p) = (format!("a{}", rng.below(6)), rng.below(2001) as f64 - 1000.0);
                feed(&mut agg, msg(i, i), bid(&key, p, 0), &mut out);
                seen.push((key.clone(), p));
                let xs: Vec<f64> = seen.iter().filter(|s| s.0 == key).map(|s| s.1).collect();
                let want = match op {
                    AggOp::Sum => xs.iter().sum::<f64>(),
                    AggOp::Min => xs.iter().copied().fold(f64::INFINITY, f64::min),
                    AggOp::Max => xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    _ => xs.iter().sum::<f64>() / xs.len() as f64,
                };
                assert_eq!(out.out.last().unwrap().2, vec![Value::Str(key), Value::F64(want)], "seed {seed}, {op:?}");
            }
            assert_eq!(agg.key_count(), seen.iter().map(|s| &s.0).collect::<std::collections::BTreeSet<_>>().len());
        }
    }

    #[test]
    fn random_streams_match_recomputation_from_the_prefix() {
        let ops = [AggOp::Count, AggOp::Sum, AggOp::Min, AggOp::Max, AggOp::Avg];
        for seed in 0..20 {
            let mut rng = Rng(seed);
            let op = ops[rng.below(5) as usize];
            let (mut agg, _) = Aggregate::new(&bids(), op, Some("qty"), Some("auction")).unwrap();
            let mut out = VecEmitter::default();
            let mut seen: Vec<(String, i64)> = Vec::new();
            for i in 0..300 {
                let (key, q) = (format!("a{}", rng.below(8)), rng.below(2001) as i64 - 1000);
                feed(&mut agg, msg(i, i), bid(&key, 0.0, q), &mut out);
                seen.push((key.clone(), q));
                let xs: Vec<i64> = seen.iter().filter(|s| s.0 == key).map(|s| s.1).collect();
                let want = match op {
                    AggOp::Count => Value::U64(xs.len() as u64),
                    AggOp::Sum => Value::I64(xs.iter().sum()),
                    AggOp::Min => Value::I64(*xs.iter().min().unwrap()),
                    AggOp::Max => Value::I64(*xs.iter().max().unwrap()),
                    AggOp::Avg => Value::F64(xs.iter().sum::<i64>() as f64 / xs.len() as f64),
                };
                assert_eq!(out.out.last().unwrap().2, vec![Value::Str(key), want], "seed {seed}");
            }
        }
    }

    fn typed_keys() -> Schema {
        Schema::new(vec![
            ("u".into(), FieldType::U64),
            ("i".into(), FieldType::I64),
            ("f".into(), FieldType::F64),
            ("b".into(), FieldType::Bool),
            ("v".into(), FieldType::I64),
        ])
    }

    /// Keys of every type but strings are held as their hashes alone: each running sum is the
    /// oracle's, the keys held are the keys fed (a float key by its bits: -0.0, NaN), and
    /// after every key moved to a fresh instance the sums go on from where they were.
    #[test]
    fn keys_of_every_scalar_type_come_back_from_their_hashes() {
        let floats = [-0.0, 0.0, f64::NAN, -1.5, f64::INFINITY, 1e300];
        for (pos, field) in ["u", "i", "f", "b"].into_iter().enumerate() {
            let make = || Aggregate::new(&typed_keys(), AggOp::Sum, Some("v"), Some(field)).unwrap().0;
            let mut agg = make();
            assert!(agg.exact_kind().is_some(), "{field}: an exact table");
            let mut rng = Rng(40 + pos as u64);
            let mut oracle: std::collections::BTreeMap<u64, i64> = Default::default();
            let mut out = VecEmitter::default();
            let mut fed = std::collections::BTreeSet::new();
            for i in 0..600u64 {
                if i == 300 {
                    // Every key moves to a fresh instance.
                    let keys = agg.export_keys(&|_| true);
                    agg = make();
                    agg.import_keys(&keys).unwrap();
                    assert_eq!(agg.key_count(), oracle.len(), "{field}");
                }
                let n = rng.below(6);
                let values = vec![
                    Value::U64(n << 40),
                    Value::I64(n as i64 - 3),
                    Value::F64(floats[n as usize]),
                    Value::Bool(n.is_multiple_of(2)),
                    Value::I64(rng.below(100) as i64 - 50),
                ];
                let key = values[pos].clone();
                let bits = match &key {
                    Value::U64(v) => *v,
                    Value::I64(v) => *v as u64,
                    Value::F64(v) => v.to_bits(),
                    Value::Bool(v) => *v as u64,
                    Value::Str(_) => unreachable!("no string key"),
                };
                let Value::I64(v) = values[4] else { unreachable!() };
                let sum = oracle.entry(bits).or_default();
                *sum += v;
                let want = vec![key.clone(), Value::I64(*sum)];
                fed.insert(format!("{key:?}"));
                feed(&mut agg, msg(key.key_hash(), i), values, &mut out);
                let got = &out.out.last().unwrap().2;
                assert_eq!(format!("{got:?}"), format!("{want:?}"), "{field}, record {i}");
            }
            // The keys held, as values, are the keys fed (by bits: one NaN, two zeros).
            let held: std::collections::BTreeSet<String> = agg
                .partials()
                .into_iter()
                .map(|(_, k, _)| {
                    let mut v = Value::U64(0);
                    k.write_into(&mut v);
                    format!("{v:?}")
                })
                .collect();
            assert_eq!(held, fed, "{field}");
        }
    }

    /// Moved keys of another type than the receiver's are refused, naming the key, and the
    /// receiver is left as it was.
    #[test]
    fn keys_of_another_type_are_refused() {
        let mut from = Aggregate::new(&typed_keys(), AggOp::Sum, Some("v"), Some("i")).unwrap().0;
        let mut out = VecEmitter::default();
        for i in 0..10 {
            let values = vec![Value::U64(1), Value::I64(-i), Value::F64(0.0), Value::Bool(true), Value::I64(i)];
            feed(&mut from, msg(Value::I64(-i).key_hash(), 0), values, &mut out);
        }
        let keys = from.export_keys(&|_| true);
        for field in ["u", "f", "b"] {
            let mut into = Aggregate::new(&typed_keys(), AggOp::Sum, Some("v"), Some(field)).unwrap().0;
            let err = into.import_keys(&keys).unwrap_err();
            assert!(matches!(&err, MigrateError::Corrupt(m) if m.contains("I64(")), "{field}: {err}");
            assert_eq!(into.key_count(), 0, "{field}");
        }
        let mut same = Aggregate::new(&typed_keys(), AggOp::Sum, Some("v"), Some("i")).unwrap().0;
        same.import_keys(&keys).unwrap();
        assert_eq!(same.key_count(), 10);
    }
}
