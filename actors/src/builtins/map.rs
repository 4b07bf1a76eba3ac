//! Map: computes each output field from an expression over the input record.
//!
//! Output: the given fields in the given order, typed by their expressions, with the input's key
//! hash and event time.

use super::{output_schema, BuildError};
use crate::expr::{Expr, ScalarExpr};
use crate::operator::{Emitter, Msg, Operator};
use crate::record::{ArchivedRecord, Cell, FieldType, Schema, Value};

/// Projects and computes fields.
pub struct Map {
    out: Row,
}

/// A map's expressions, and the scratch output row they are evaluated into (reused: string
/// results reuse their buffers).
enum Row {
    /// Every output is a scalar: a row of archived cells ([`Emitter::emit_cells`]).
    Cells { exprs: Vec<ScalarExpr>, row: Vec<Cell> },
    /// Some output is a string: a row of values.
    Values { exprs: Vec<Expr>, row: Vec<Value> },
}

impl Map {
    /// One output field per (name, expression) pair, in order. Cold path.
    pub fn new(input: &Schema, fields: &[(String, String)]) -> Result<(Map, Schema), BuildError> {
        let mut exprs = Vec::with_capacity(fields.len());
        for (name, src) in fields {
            let expr = Expr::parse(src, input).map_err(|source| BuildError::Expr {
                context: format!("map field `{name}`"),
                expr: src.clone(),
                source,
            })?;
            exprs.push(expr);
        }
        let schema = output_schema(fields.iter().zip(&exprs).map(|((name, _), e)| (name.clone(), e.ty())).collect())?;
        let out = if exprs.iter().all(|e| e.ty() != FieldType::Str) {
            let exprs: Vec<ScalarExpr> = exprs.into_iter().filter_map(|e| e.into_scalar().ok()).collect();
            Row::Cells { row: vec![Cell::u64(0); exprs.len()], exprs }
        } else {
            Row::Values { row: exprs.iter().map(|e| zero(e.ty())).collect(), exprs }
        };
        Ok((Map { out }, schema))
    }
}

impl Map {
    /// Its expressions when every output is a scalar (a row of cells): what a record's fields
    /// become, evaluated by whoever runs the map where its input is made (operator fusion).
    pub fn scalar_exprs(&self) -> Option<&[ScalarExpr]> {
        match &self.out {
            Row::Cells { exprs, .. } => Some(exprs),
            Row::Values { .. } => None,
        }
    }
}

/// A placeholder of type `ty` for the scratch row.
fn zero(ty: FieldType) -> Value {
    match ty {
        FieldType::U64 => Value::U64(0),
        FieldType::I64 => Value::I64(0),
        FieldType::F64 => Value::F64(0.0),
        FieldType::Bool => Value::Bool(false),
        FieldType::Str => Value::Str(String::new()),
    }
}

impl Operator for Map {
    /// Hot path: no allocation in steady state.
    #[inline]
    fn on_record<E: Emitter>(&mut self, msg: Msg, rec: &ArchivedRecord, _: &[u8], out: &mut E) {
        match &mut self.out {
            Row::Cells { exprs, row } => {
                for (expr, cell) in exprs.iter().zip(row.iter_mut()) {
                    *cell = expr.eval_cell(rec);
                }
                out.emit_cells(msg.key_hash, msg.event_time, row);
            }
            Row::Values { exprs, row } => {
                for (expr, slot) in exprs.iter().zip(row.iter_mut()) {
                    expr.eval_into(rec, slot);
                }
                out.emit(msg.key_hash, msg.event_time, row);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::VecEmitter;
    use crate::testkit::{feed, msg, Rng};

    fn bids() -> Schema {
        Schema::new(vec![
            ("auction".into(), FieldType::U64),
            ("price".into(), FieldType::U64),
            ("bidder".into(), FieldType::Str),
        ])
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, e)| (n.to_string(), e.to_string())).collect()
    }

    #[test]
    fn computes_fields_in_order_and_keeps_key_and_time() {
        let spec = fields(&[("bidder", "bidder"), ("euros", "price * 0.9"), ("big", "price > 100")]);
        let (mut map, schema) = Map::new(&bids(), &spec).unwrap();
        let types: Vec<_> = schema.fields().map(|(n, t)| (n.to_owned(), t)).collect();
        assert_eq!(
            types,
            vec![("bidder".into(), FieldType::Str), ("euros".into(), FieldType::F64), ("big".into(), FieldType::Bool),]
        );
        let mut out = VecEmitter::default();
        let bid = |p| vec![Value::U64(1), Value::U64(p), Value::Str("ann".into())];
        feed(&mut map, msg(5, 9), bid(200), &mut out);
        feed(&mut map, msg(6, 10), bid(10), &mut out);
        let s = |x: &str| Value::Str(x.into());
        assert_eq!(out.out[0], (5, 9, vec![s("ann"), Value::F64(180.0), Value::Bool(true)]));
        assert_eq!(out.out[1], (6, 10, vec![s("ann"), Value::F64(9.0), Value::Bool(false)]));
    }

    #[test]
    fn build_errors_name_the_field_and_expression() {
        let err = Map::new(&bids(), &fields(&[("x", "price + bidder")])).err().unwrap();
        assert_eq!(err.to_string(), "map field `x` `price + bidder`: cannot add u64 and string at column 7");
        let err = Map::new(&bids(), &fields(&[("x", "price"), ("x", "auction")])).err().unwrap();
        assert_eq!(err, BuildError::DuplicateField { field: "x".into() });
    }

    #[test]
    fn random_records_match_a_direct_computation() {
        let (mut map, _) = Map::new(&bids(), &fields(&[("d", "auction % 7 + price * 2")])).unwrap();
        let mut rng = Rng(11);
        let mut out = VecEmitter::default();
        let mut expected = Vec::new();
        for i in 0..500 {
            let (a, p) = (rng.next_u64(), rng.below(1 << 40));
            feed(&mut map, msg(i, i), vec![Value::U64(a), Value::U64(p), Value::Str(String::new())], &mut out);
            expected.push((i, i, vec![Value::U64((a % 7).wrapping_add(p.wrapping_mul(2)))]));
        }
        assert_eq!(out.out, expected);
    }
}
