//! The built-in functions (map, filter, key_by, keyed aggregates, windows, joins) and their
//! construction errors.
//!
//! Every built-in is built once, when its app loads, against the [`Schema`] of its input: field
//! names resolve to positions and expressions are parsed and type-checked there, so the hot path
//! ([`Operator::on_record`](crate::operator::Operator::on_record)) does no string lookup. Each
//! constructor returns the operator and its output schema.
//!
//! - [`map`], [`filter`], [`key_by`]: stateless, one record in, at most one out.
//! - [`aggregate`]: keyed rolling count/sum/min/max/avg, emitting the updated value per record.
//! - [`window`]: keyed event-time tumbling and sliding windows with allowed lateness; their
//!   shapes and window assignment are in [`shape`].
//! - [`join`]: windowed equi-join of two inputs.
//! - [`agg`]: the mergeable aggregation partial shared by aggregate and window.
//! - [`keyed`]: the exact per-key state container they all use.

pub mod agg;
pub mod aggregate;
pub mod filter;
pub mod join;
pub mod key_by;
pub mod keyed;
pub mod map;
pub(crate) mod moved;
pub(crate) mod panes;
pub mod shape;
pub mod window;

pub use agg::{AggOp, AggPartial};
pub use aggregate::Aggregate;
pub use filter::Filter;
pub use join::Join;
pub use key_by::KeyBy;
pub use map::Map;
pub use moved::StateCopy;
pub use panes::KeyPanes;
pub use shape::{WindowKind, WindowSpec};
pub use window::{Window, WindowPartial};

use crate::expr::ExprError;
use crate::operator::Msg;
use crate::record::{ArchivedValue, FieldType, Schema};
use keyed::KeyRef;

/// Why a built-in function could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    /// A field name that is not in the input schema.
    #[error("unknown {role} field `{field}`; fields are: {fields}")]
    UnknownField { role: &'static str, field: String, fields: String },
    /// An aggregate name that is not one of [`AggOp`].
    #[error("unknown aggregate `{op}`; valid aggregates are: count, sum, min, max, avg")]
    UnknownOp { op: String },
    /// An aggregate other than count was given no field.
    #[error("aggregate `{op}` needs a field to aggregate")]
    MissingField { op: AggOp },
    /// sum/min/max/avg over a field that is not a number.
    #[error("aggregate `{op}` needs a numeric field (u64, i64 or f64), but `{field}` is {ty}")]
    NotNumeric { op: AggOp, field: String, ty: FieldType },
    /// An expression that does not parse or type-check.
    #[error("{context} `{expr}`: {source}")]
    Expr { context: String, expr: String, source: ExprError },
    /// Two output fields with the same name.
    #[error("duplicate output field `{field}`")]
    DuplicateField { field: String },
    /// A join whose key fields have different types.
    #[error("join keys differ in type: left `{left}` is {left_ty}, right `{right}` is {right_ty}")]
    KeyTypeMismatch { left: String, left_ty: FieldType, right: String, right_ty: FieldType },
    /// A window with a zero size or slide.
    #[error("invalid window: {reason}")]
    InvalidWindow { reason: &'static str },
}

/// Position and type of `name` in `schema`, or an error listing the valid names.
pub(crate) fn resolve_field(schema: &Schema, name: &str, role: &'static str) -> Result<(usize, FieldType), BuildError> {
    match schema.position(name) {
        Some(pos) => Ok((pos, schema.field(pos).1)),
        None => Err(BuildError::UnknownField { role, field: name.to_owned(), fields: field_names(schema) }),
    }
}

/// The schema's field names, comma separated (for error messages).
pub(crate) fn field_names(schema: &Schema) -> String {
    let names: Vec<&str> = schema.fields().map(|(n, _)| n).collect();
    names.join(", ")
}

/// A schema from (name, type) pairs, rejecting duplicate names.
pub(crate) fn output_schema(fields: Vec<(String, FieldType)>) -> Result<Schema, BuildError> {
    for (i, (name, _)) in fields.iter().enumerate() {
        if fields[..i].iter().any(|(n, _)| n == name) {
            return Err(BuildError::DuplicateField { field: name.clone() });
        }
    }
    Ok(Schema::new(fields))
}

/// Where a keyed operator finds a record's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// A field of the record, at this position.
    Field(usize),
    /// A field of the record, at this position, that every input edge partitions by: the
    /// message's key hash is the field's (`KeyRef::of`'s), and is taken rather than computed
    /// again (`routed`).
    Routed(usize),
    /// The message's key hash, as set upstream by `key_by`; the key value is that hash (u64).
    Upstream,
}

impl KeySource {
    /// Resolve an optional key field name; returns the source and the output key type.
    pub(crate) fn resolve(input: &Schema, key: Option<&str>) -> Result<(KeySource, FieldType), BuildError> {
        match key {
            Some(name) => {
                let (pos, ty) = resolve_field(input, name, "key")?;
                Ok((KeySource::Field(pos), ty))
            }
            None => Ok((KeySource::Upstream, FieldType::U64)),
        }
    }

    /// The same key, whose records are routed by it (`Routed`): the caller guarantees that every
    /// edge into the operator partitions by this field. Cold path.
    pub(crate) fn routed(self) -> KeySource {
        match self {
            KeySource::Field(pos) | KeySource::Routed(pos) => KeySource::Routed(pos),
            KeySource::Upstream => KeySource::Upstream,
        }
    }

    /// The record's key. Hot path. `None` only for a record shorter than its schema.
    #[inline]
    pub(crate) fn key_of<'a>(self, msg: &Msg, fields: &'a [ArchivedValue]) -> Option<KeyRef<'a>> {
        match self {
            KeySource::Field(pos) => fields.get(pos).map(KeyRef::of),
            KeySource::Routed(pos) => fields.get(pos).map(|v| {
                debug_assert_eq!(msg.key_hash, v.key_hash(), "a record not routed by its key field");
                KeyRef::hashed(v, msg.key_hash)
            }),
            KeySource::Upstream => Some(KeyRef::upstream(msg.key_hash)),
        }
    }
}
