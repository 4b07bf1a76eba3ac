//! Keyed rolling aggregates: count, sum, min, max or avg of a field per key, emitting the
//! updated `{key, <op>}` on every record.

use super::agg::{AggOp, AggPartial};
use super::keyed::check_new_keys;
use super::keyed::{KeyedTable, OwnedKey};
use super::{output_schema, BuildError, KeySource};
use crate::builtins::moved::{agg_name, same_agg, AggKey, KeyArchive, StateCopy};
use crate::migrate::MigrateError;
use crate::operator::{Emitter, Msg, Operator};
use crate::record::{ArchivedRecord, Schema, Value};
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
/// are the zero's): W1's count entry is then 40 bytes where a whole partial made it 64, and
/// 10,000 keys fit a core's L2 with room to spare. An average keeps its whole partial.
enum Partials {
    Words(KeyedTable<u64>),
    Whole(KeyedTable<AggPartial>),
}

/// `$body` on the aggregate's table, whichever slot type it holds (each arm is compiled for
/// its own [`Slot`]).
macro_rules! with_table {
    ($state:expr, |$t:ident| $body:expr) => {
        match $state {
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
        let state = match zero.to_word() {
            Some(_) => Partials::Words(KeyedTable::new()),
            None => Partials::Whole(KeyedTable::new()),
        };
        Ok((Aggregate { key, field, zero, state, row }, schema))
    }

    /// Every (key hash, key, partial), ordered by hash, then key. Cold path.
    pub fn partials(&self) -> Vec<(u64, &OwnedKey, AggPartial)> {
        with_table!(&self.state, |t| t.entries().into_iter().map(|(h, k, s)| (h, k, s.load(&self.zero))).collect())
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
        let keys = self.partials().into_iter().map(|(hash, key, partial)| AggKey { key: key.clone(), hash, partial });
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
    /// Hot path: no allocation in steady state (a new key allocates its entry, and a string
    /// key's copy).
    #[inline]
    fn on_record<E: Emitter>(&mut self, msg: Msg, rec: &ArchivedRecord, _: &[u8], out: &mut E) {
        let Some(key) = self.key.key_of(&msg, &rec.fields) else {
            return;
        };
        let zero = self.zero;
        let value = self.field.and_then(|pos| rec.fields.get(pos));
        // A scalar key: the output is two cells (`Emitter::emit_cells`); a string key: values.
        let key_cell = key.cell();
        let partial = with_table!(&mut self.state, |t| {
            let (owned, slot) = t.get_or_insert_with(&key, || Slot::store(zero));
            let mut partial = slot.load(&zero);
            partial.fold_value(value);
            *slot = Slot::store(partial);
            if key_cell.is_none() {
                owned.write_into(&mut self.row[0]);
                partial.write_result(&mut self.row[1]);
            }
            partial
        });
        match key_cell {
            Some(k) => out.emit_cells(msg.key_hash, msg.event_time, &[k, partial.result_cell()]),
            None => out.emit(msg.key_hash, msg.event_time, &self.row),
        }
    }
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
}
