//! Filter: passes on the records that satisfy a predicate, unchanged (zero-copy).

use super::BuildError;
use crate::expr::Predicate;
use crate::operator::{Emitter, Msg, Operator};
use crate::record::{ArchivedRecord, Schema};

/// Keeps the records for which the predicate holds. Output schema = input schema.
pub struct Filter {
    predicate: Predicate,
}

impl Filter {
    /// A filter on `predicate`, a bool expression over `input`. Cold path.
    pub fn new(input: &Schema, predicate: &str) -> Result<(Filter, Schema), BuildError> {
        let predicate = Predicate::parse(predicate, input).map_err(|source| BuildError::Expr {
            context: "filter predicate".into(),
            expr: predicate.to_owned(),
            source,
        })?;
        Ok((Filter { predicate }, input.clone()))
    }

    /// Its predicate: a record that satisfies it goes on unchanged (evaluated by whoever runs
    /// the filter where its input is made: operator fusion).
    pub fn predicate(&self) -> &Predicate {
        &self.predicate
    }
}

impl Operator for Filter {
    /// Hot path: evaluates in place and forwards the archive bytes, never deserialised.
    #[inline]
    fn on_record<E: Emitter>(&mut self, msg: Msg, rec: &ArchivedRecord, archive: &[u8], out: &mut E) {
        if self.predicate.test(rec) {
            out.forward(msg.key_hash, msg.event_time, archive);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::VecEmitter;
    use crate::record::{FieldType, Value};
    use crate::testkit::{feed, msg, Rng};

    fn schema() -> Schema {
        Schema::new(vec![("price".into(), FieldType::U64), ("name".into(), FieldType::Str)])
    }

    #[test]
    fn keeps_matching_records_with_their_header() {
        let (mut f, out_schema) = Filter::new(&schema(), "price >= 10 && name != \"x\"").unwrap();
        assert_eq!(out_schema, schema());
        let mut out = VecEmitter::default();
        let row = |p, n: &str| vec![Value::U64(p), Value::Str(n.into())];
        feed(&mut f, msg(1, 2), row(10, "a"), &mut out);
        feed(&mut f, msg(3, 4), row(9, "a"), &mut out);
        feed(&mut f, msg(5, 6), row(50, "x"), &mut out);
        assert_eq!(out.out, vec![(1, 2, row(10, "a"))]);
    }

    #[test]
    fn non_bool_predicates_are_rejected() {
        let err = Filter::new(&schema(), "price").err().unwrap();
        assert_eq!(err.to_string(), "filter predicate `price`: expression is u64, a predicate must be bool");
    }

    #[test]
    fn random_records_match_a_direct_test() {
        let (mut f, _) = Filter::new(&schema(), "price % 3 == 1 || name < \"m\"").unwrap();
        let mut rng = Rng(5);
        let mut out = VecEmitter::default();
        let mut expected = Vec::new();
        for i in 0..500 {
            let p = rng.below(1000);
            let name = ((b'a' + rng.below(26) as u8) as char).to_string();
            let row = vec![Value::U64(p), Value::Str(name.clone())];
            if p % 3 == 1 || name.as_str() < "m" {
                expected.push((i, i, row.clone()));
            }
            feed(&mut f, msg(i, i), row, &mut out);
        }
        assert_eq!(out.out, expected);
    }
}
