//! Aggregation ops (count, sum, min, max, avg) and their partial: folded per record, and
//! [`Mergeable`] so that partials computed on different shards combine exactly.
//!
//! Arithmetic: integer sums wrap on overflow (two's complement), which keeps `combine`
//! associative and exact. An integer average keeps an exact `i128` sum and a count. Float sums and
//! averages are IEEE: exact (and so order-independent) only while no rounding occurs. Min and max
//! start from the type's extreme (`u64::MAX`, `+inf`, ...), the identity of the fold; float min and
//! max ignore NaN (`f64::min`).

use std::fmt;

use super::{resolve_field, BuildError};
use crate::record::{ArchivedValue, Cell, FieldType, Schema, Value};
use crate::state::Mergeable;

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggOp {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

impl AggOp {
    /// Parse an op name as written in a config: `count`, `sum`, `min`, `max` or `avg`.
    pub fn parse(name: &str) -> Result<AggOp, BuildError> {
        Ok(match name {
            "count" => AggOp::Count,
            "sum" => AggOp::Sum,
            "min" => AggOp::Min,
            "max" => AggOp::Max,
            "avg" => AggOp::Avg,
            _ => return Err(BuildError::UnknownOp { op: name.to_owned() }),
        })
    }

    /// The op's name, also the name of its output field.
    pub fn name(self) -> &'static str {
        match self {
            AggOp::Count => "count",
            AggOp::Sum => "sum",
            AggOp::Min => "min",
            AggOp::Max => "max",
            AggOp::Avg => "avg",
        }
    }
}

impl fmt::Display for AggOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A number of one of the three numeric field types.
#[derive(Clone, Copy, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Num {
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Num {
    /// The number in a record field, if the field is numeric.
    #[inline]
    pub fn read(v: &ArchivedValue) -> Option<Num> {
        match v {
            ArchivedValue::U64(x) => Some(Num::U64(x.to_native())),
            ArchivedValue::I64(x) => Some(Num::I64(x.to_native())),
            ArchivedValue::F64(x) => Some(Num::F64(x.to_native())),
            _ => None,
        }
    }

    fn field_type(self) -> FieldType {
        match self {
            Num::U64(_) => FieldType::U64,
            Num::I64(_) => FieldType::I64,
            Num::F64(_) => FieldType::F64,
        }
    }

    /// Combine two numbers of one type with `int` (integers) or `float`; a number of another
    /// type (a record not matching its schema) leaves `self` unchanged.
    #[inline]
    fn zip(self, o: Num, u: fn(u64, u64) -> u64, i: fn(i64, i64) -> i64, f: fn(f64, f64) -> f64) -> Num {
        match (self, o) {
            (Num::U64(a), Num::U64(b)) => Num::U64(u(a, b)),
            (Num::I64(a), Num::I64(b)) => Num::I64(i(a, b)),
            (Num::F64(a), Num::F64(b)) => Num::F64(f(a, b)),
            (a, _) => a,
        }
    }

    fn add(self, o: Num) -> Num {
        self.zip(o, u64::wrapping_add, i64::wrapping_add, |a, b| a + b)
    }
    fn min(self, o: Num) -> Num {
        self.zip(o, u64::min, i64::min, f64::min)
    }
    fn max(self, o: Num) -> Num {
        self.zip(o, u64::max, i64::max, f64::max)
    }

    fn to_value(self) -> Value {
        match self {
            Num::U64(v) => Value::U64(v),
            Num::I64(v) => Value::I64(v),
            Num::F64(v) => Value::F64(v),
        }
    }
}

/// The running state of one aggregate over one key (or one key's window).
#[derive(Clone, Copy, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum AggPartial {
    Count(u64),
    Sum(Num),
    Min(Num),
    Max(Num),
    /// Average of an integer field: exact sum and count.
    AvgInt {
        sum: i128,
        count: u64,
    },
    /// Average of a float field.
    AvgF64 {
        sum: f64,
        count: u64,
    },
}

impl AggPartial {
    /// Resolve `field` of `input` for `op`: the zero partial and the position to read (`None` for
    /// count, which counts records and ignores any field it is given, once it exists).
    pub fn build(op: AggOp, input: &Schema, field: Option<&str>) -> Result<(AggPartial, Option<usize>), BuildError> {
        let resolved = match field {
            Some(name) => Some((name, resolve_field(input, name, "aggregate")?)),
            None => None,
        };
        if op == AggOp::Count {
            return Ok((AggPartial::Count(0), None));
        }
        let Some((name, (pos, ty))) = resolved else {
            return Err(BuildError::MissingField { op });
        };
        let zero = AggPartial::zero(op, ty).ok_or_else(|| BuildError::NotNumeric { op, field: name.to_owned(), ty })?;
        Ok((zero, Some(pos)))
    }

    /// The identity partial of `op` over a field of type `ty`; `None` if `ty` is not numeric.
    pub fn zero(op: AggOp, ty: FieldType) -> Option<AggPartial> {
        let (zero, least, most) = match ty {
            FieldType::U64 => (Num::U64(0), Num::U64(u64::MIN), Num::U64(u64::MAX)),
            FieldType::I64 => (Num::I64(0), Num::I64(i64::MIN), Num::I64(i64::MAX)),
            // -0.0 is IEEE's additive identity: -0.0 + x == x for every x, including 0.0.
            FieldType::F64 => (Num::F64(-0.0), Num::F64(f64::NEG_INFINITY), Num::F64(f64::INFINITY)),
            FieldType::Bool | FieldType::Str => return (op == AggOp::Count).then_some(AggPartial::Count(0)),
        };
        Some(match op {
            AggOp::Count => AggPartial::Count(0),
            AggOp::Sum => AggPartial::Sum(zero),
            AggOp::Min => AggPartial::Min(most),
            AggOp::Max => AggPartial::Max(least),
            AggOp::Avg if ty == FieldType::F64 => AggPartial::AvgF64 { sum: -0.0, count: 0 },
            AggOp::Avg => AggPartial::AvgInt { sum: 0, count: 0 },
        })
    }

    /// Type of the result.
    pub fn output_type(&self) -> FieldType {
        match self {
            AggPartial::Count(_) => FieldType::U64,
            AggPartial::Sum(n) | AggPartial::Min(n) | AggPartial::Max(n) => n.field_type(),
            AggPartial::AvgInt { .. } | AggPartial::AvgF64 { .. } => FieldType::F64,
        }
    }

    /// Fold one record's field (`None` for count). Hot path: no allocation. A value of the wrong
    /// type (a record not matching its schema) is ignored.
    #[inline]
    pub fn fold_value(&mut self, v: Option<&ArchivedValue>) {
        match self {
            AggPartial::Count(c) => *c = c.wrapping_add(1),
            _ => {
                if let Some(x) = v.and_then(Num::read) {
                    self.fold(x)
                }
            }
        }
    }

    /// Fold one number.
    #[inline]
    pub fn fold(&mut self, x: Num) {
        match self {
            AggPartial::Count(c) => *c = c.wrapping_add(1),
            AggPartial::Sum(a) => *a = a.add(x),
            AggPartial::Min(a) => *a = a.min(x),
            AggPartial::Max(a) => *a = a.max(x),
            AggPartial::AvgInt { sum, count } => match x {
                Num::U64(v) => (*sum, *count) = (sum.wrapping_add(v as i128), count.wrapping_add(1)),
                Num::I64(v) => (*sum, *count) = (sum.wrapping_add(v as i128), count.wrapping_add(1)),
                Num::F64(_) => {}
            },
            AggPartial::AvgF64 { sum, count } => {
                if let Num::F64(v) = x {
                    (*sum, *count) = (*sum + v, count.wrapping_add(1));
                }
            }
        }
    }

    /// Write the current result into `out`. An empty min/max yields its identity and an empty
    /// average NaN; operators never emit an empty partial.
    #[inline]
    pub fn write_result(&self, out: &mut Value) {
        // A count into a slot that holds one: in place (one store, no drop).
        if let (AggPartial::Count(c), Value::U64(x)) = (self, &mut *out) {
            *x = *c;
            return;
        }
        *out = match *self {
            AggPartial::Count(c) => Value::U64(c),
            AggPartial::Sum(n) | AggPartial::Min(n) | AggPartial::Max(n) => n.to_value(),
            AggPartial::AvgInt { sum, count } => Value::F64(sum as f64 / count as f64),
            AggPartial::AvgF64 { sum, count } => Value::F64(sum / count as f64),
        };
    }

    /// The current result as an archived cell: the value [`AggPartial::write_result`] writes
    /// (every result is a scalar). Hot path.
    #[inline]
    pub fn result_cell(&self) -> Cell {
        match *self {
            AggPartial::Count(c) => Cell::u64(c),
            AggPartial::Sum(n) | AggPartial::Min(n) | AggPartial::Max(n) => match n {
                Num::U64(v) => Cell::u64(v),
                Num::I64(v) => Cell::i64(v),
                Num::F64(v) => Cell::f64(v),
            },
            AggPartial::AvgInt { sum, count } => Cell::f64(sum as f64 / count as f64),
            AggPartial::AvgF64 { sum, count } => Cell::f64(sum / count as f64),
        }
    }

    /// The current result (see [`AggPartial::write_result`]).
    pub fn result(&self) -> Value {
        let mut v = Value::U64(0);
        self.write_result(&mut v);
        v
    }
}

impl AggPartial {
    /// The partial as one word, for the ops whose partial is one number (count, sum, min, max:
    /// the count, or the number's bits); `None` for an average. A keyed table of words is a
    /// quarter of one of partials, so more of a large key set stays in a core's cache.
    #[inline]
    pub fn to_word(&self) -> Option<u64> {
        match *self {
            AggPartial::Count(c) => Some(c),
            AggPartial::Sum(n) | AggPartial::Min(n) | AggPartial::Max(n) => Some(match n {
                Num::U64(v) => v,
                Num::I64(v) => v as u64,
                Num::F64(v) => v.to_bits(),
            }),
            AggPartial::AvgInt { .. } | AggPartial::AvgF64 { .. } => None,
        }
    }

    /// A partial of `self`'s op and number type holding `word` (see [`AggPartial::to_word`]);
    /// an average is returned unchanged.
    #[inline]
    pub fn with_word(&self, word: u64) -> AggPartial {
        let num = |n: Num| match n {
            Num::U64(_) => Num::U64(word),
            Num::I64(_) => Num::I64(word as i64),
            Num::F64(_) => Num::F64(f64::from_bits(word)),
        };
        match *self {
            AggPartial::Count(_) => AggPartial::Count(word),
            AggPartial::Sum(n) => AggPartial::Sum(num(n)),
            AggPartial::Min(n) => AggPartial::Min(num(n)),
            AggPartial::Max(n) => AggPartial::Max(num(n)),
            avg @ (AggPartial::AvgInt { .. } | AggPartial::AvgF64 { .. }) => avg,
        }
    }
}

impl AggPartial {
    /// Whether combining partials gives exactly the sequential result. Float sums (and float
    /// averages) do not: addition of floats is not associative, so the order partials are
    /// merged in shows in the last bits. Those stay on their lessor.
    pub fn merges_exactly(&self) -> bool {
        !matches!(self, AggPartial::Sum(Num::F64(_)) | AggPartial::AvgF64 { .. })
    }
}

impl Mergeable for AggPartial {
    /// A lessee starts from the zero of the same op and type.
    fn partition(&self) -> Self {
        let ty = match self {
            AggPartial::Count(_) => return AggPartial::Count(0),
            AggPartial::Sum(n) | AggPartial::Min(n) | AggPartial::Max(n) => n.field_type(),
            AggPartial::AvgInt { .. } => return AggPartial::AvgInt { sum: 0, count: 0 },
            AggPartial::AvgF64 { .. } => return AggPartial::AvgF64 { sum: -0.0, count: 0 },
        };
        let op = match self {
            AggPartial::Sum(_) => AggOp::Sum,
            AggPartial::Min(_) => AggOp::Min,
            _ => AggOp::Max,
        };
        AggPartial::zero(op, ty).unwrap_or(*self)
    }

    /// Exact fold of partials: counts and sums add, min of mins, max of maxes, averages add
    /// their sums and counts. Partials of different ops never meet; if they did, `partial` is
    /// ignored.
    fn combine(&mut self, partial: Self) {
        use AggPartial::*;
        match (self, partial) {
            (Count(a), Count(b)) => *a = a.wrapping_add(b),
            (Sum(a), Sum(b)) => *a = a.add(b),
            (Min(a), Min(b)) => *a = a.min(b),
            (Max(a), Max(b)) => *a = a.max(b),
            (AvgInt { sum, count }, AvgInt { sum: s, count: c }) => {
                (*sum, *count) = (sum.wrapping_add(s), count.wrapping_add(c))
            }
            (AvgF64 { sum, count }, AvgF64 { sum: s, count: c }) => (*sum, *count) = (*sum + s, count.wrapping_add(c)),
            (mine, theirs) => debug_assert!(false, "combining {theirs:?} into {mine:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OPS: [AggOp; 5] = [AggOp::Count, AggOp::Sum, AggOp::Min, AggOp::Max, AggOp::Avg];
    const TYPES: [FieldType; 3] = [FieldType::U64, FieldType::I64, FieldType::F64];

    fn num(ty: FieldType, x: i32) -> Num {
        match ty {
            FieldType::U64 => Num::U64(x.unsigned_abs() as u64),
            FieldType::I64 => Num::I64(x as i64),
            // Integral floats of this size add exactly, so float folds are order-independent.
            _ => Num::F64(x as f64),
        }
    }

    fn fold_all(zero: AggPartial, xs: &[Num]) -> AggPartial {
        let mut p = zero;
        xs.iter().for_each(|x| p.fold(*x));
        p
    }

    #[test]
    fn hand_computed_results() {
        let xs: Vec<Num> = [3, -1, 7, 0].iter().map(|x| num(FieldType::I64, *x)).collect();
        let res = |op| fold_all(AggPartial::zero(op, FieldType::I64).unwrap(), &xs).result();
        assert_eq!(res(AggOp::Count), Value::U64(4));
        assert_eq!(res(AggOp::Sum), Value::I64(9));
        assert_eq!(res(AggOp::Min), Value::I64(-1));
        assert_eq!(res(AggOp::Max), Value::I64(7));
        assert_eq!(res(AggOp::Avg), Value::F64(2.25));
        let mut s = AggPartial::zero(AggOp::Sum, FieldType::U64).unwrap();
        s.fold(Num::U64(u64::MAX));
        s.fold(Num::U64(2));
        assert_eq!(s.result(), Value::U64(1), "integer sums wrap");
    }

    #[test]
    fn build_errors_name_the_problem() {
        let schema = Schema::new(vec![("name".into(), FieldType::Str), ("price".into(), FieldType::U64)]);
        let err = AggPartial::build(AggOp::Sum, &schema, Some("name")).unwrap_err();
        assert_eq!(err.to_string(), "aggregate `sum` needs a numeric field (u64, i64 or f64), but `name` is string");
        let err = AggPartial::build(AggOp::Max, &schema, None).unwrap_err();
        assert_eq!(err.to_string(), "aggregate `max` needs a field to aggregate");
        let err = AggPartial::build(AggOp::Avg, &schema, Some("prce")).unwrap_err();
        assert_eq!(err.to_string(), "unknown aggregate field `prce`; fields are: name, price");
        let err = AggOp::parse("median").unwrap_err();
        assert!(err.to_string().contains("valid aggregates are: count, sum, min, max, avg"));
        assert_eq!(AggPartial::build(AggOp::Count, &schema, Some("name")).unwrap().1, None);
    }

    proptest! {
        /// The result as a cell (what a keyed aggregate emits) is the result as a value, for
        /// every op and number type.
        #[test]
        fn result_cells_hold_the_results(
            xs in proptest::collection::vec(-1000i32..1000, 1..30), op in 0usize..5, ty in 0usize..3,
        ) {
            let ty = TYPES[ty];
            let p = fold_all(AggPartial::zero(OPS[op], ty).unwrap(), &xs.iter().map(|x| num(ty, *x)).collect::<Vec<_>>());
            prop_assert_eq!(p.result_cell().to_value(), p.result());
        }

        /// Splitting the input into chunks, folding each from `partition()` and combining the
        /// partials equals folding the whole input.
        #[test]
        fn chunked_partials_combine_to_the_whole(
            xs in proptest::collection::vec(-1000i32..1000, 0..60),
            cuts in proptest::collection::vec(0usize..60, 0..6),
            op in 0usize..5, ty in 0usize..3,
        ) {
            let ty = TYPES[ty];
            let xs: Vec<Num> = xs.iter().map(|x| num(ty, *x)).collect();
            let zero = AggPartial::zero(OPS[op], ty).unwrap();
            let whole = fold_all(zero, &xs);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(xs.len())).collect();
            cuts.push(0);
            cuts.push(xs.len());
            cuts.sort_unstable();
            let mut merged = zero;
            for w in cuts.windows(2) {
                merged.combine(fold_all(merged.partition(), &xs[w[0]..w[1]]));
            }
            prop_assert_eq!(merged, whole);
        }

        /// `partition()` is an identity of `combine`, and `combine` is associative.
        #[test]
        fn partition_is_identity_and_combine_associates(
            a in proptest::collection::vec(-1000i32..1000, 0..20),
            b in proptest::collection::vec(-1000i32..1000, 0..20),
            c in proptest::collection::vec(-1000i32..1000, 0..20),
            op in 0usize..5, ty in 0usize..3,
        ) {
            let ty = TYPES[ty];
            let zero = AggPartial::zero(OPS[op], ty).unwrap();
            let part = |xs: &[i32]| fold_all(zero, &xs.iter().map(|x| num(ty, *x)).collect::<Vec<_>>());
            let (pa, pb, pc) = (part(&a), part(&b), part(&c));
            let mut with_zero = pa;
            with_zero.combine(pa.partition());
            prop_assert_eq!(with_zero, pa);
            let mut left = pa;
            left.combine(pb);
            left.combine(pc);
            let mut right = pb;
            right.combine(pc);
            let mut right_outer = pa;
            right_outer.combine(right);
            prop_assert_eq!(left, right_outer);
        }

        /// A one-number partial survives its word, folded by whole partials or through words.
        #[test]
        fn words_round_trip(xs in proptest::collection::vec(-1000i32..1000, 0..20), op in 0usize..4, ty in 0usize..3) {
            let (op, ty) = (OPS[op], TYPES[ty]);
            let zero = AggPartial::zero(op, ty).unwrap();
            let mut word = zero.to_word().unwrap();
            for x in &xs {
                let mut p = zero.with_word(word);
                p.fold(num(ty, *x));
                word = p.to_word().unwrap();
            }
            let whole = fold_all(zero, &xs.iter().map(|x| num(ty, *x)).collect::<Vec<_>>());
            prop_assert_eq!(zero.with_word(word), whole);
            prop_assert_eq!(whole.to_word(), Some(word));
        }
    }
}
