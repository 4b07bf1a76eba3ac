//! What the TCP endpoints add to the `dirigo-net` frames: the schema check of records from
//! clients, the Hello frame that tells a subscriber the sink's schema, and error reports (an
//! Error frame carrying a one-field record, or an NDJSON `{"error": "..."}` line).

use crate::frame::{begin_frame, end_frame};
use crate::{encode_frame, validate_record, FrameType, ValidateError};
use dirigo_actors::record::{
    archive_values_into, ArchivedRecord, ArchivedValue, FieldType, RecordError, Schema, Value,
};
use rkyv::util::AlignedVec;

/// Check that a validated record has the schema's arity and field types.
pub fn fits(schema: &Schema, rec: &ArchivedRecord) -> Result<(), RecordError> {
    if rec.fields.len() != schema.len() {
        return Err(RecordError::WrongArity { expected: schema.len(), found: rec.fields.len() });
    }
    for (i, (name, ty)) in schema.fields().enumerate() {
        let v = &rec.fields[i];
        if value_type(v) != ty {
            let found = format!("{:?}", v.to_value());
            return Err(RecordError::WrongType { field: name.to_owned(), expected: ty, found });
        }
    }
    Ok(())
}

fn value_type(v: &ArchivedValue) -> FieldType {
    match v {
        ArchivedValue::U64(_) => FieldType::U64,
        ArchivedValue::I64(_) => FieldType::I64,
        ArchivedValue::F64(_) => FieldType::F64,
        ArchivedValue::Bool(_) => FieldType::Bool,
        ArchivedValue::Str(_) => FieldType::Str,
    }
}

/// Append a Hello frame describing `schema`: a record of alternating field names and type names.
pub fn encode_hello(schema: &Schema, out: &mut AlignedVec) {
    let values: Vec<Value> =
        schema.fields().flat_map(|(n, t)| [Value::Str(n.to_owned()), Value::Str(t.name().to_owned())]).collect();
    if let Ok(start) = begin_frame(out) {
        archive_values_into(&values, out);
        let _ = end_frame(FrameType::Hello, start, out);
    }
}

/// Why a Hello payload is not a schema.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("hello frame: {0}")]
    Invalid(#[from] ValidateError),
    #[error("hello frame: field {index} is not a name/type string pair")]
    NotPairs { index: usize },
    #[error("hello frame: unknown field type `{0}`")]
    UnknownType(String),
}

/// The schema announced by a Hello frame's payload (a validated read: it came from the network).
pub fn schema_from_hello(payload: &[u8]) -> Result<Schema, HelloError> {
    let rec = validate_record(payload)?;
    let fields = rec.fields.as_slice();
    if fields.len() % 2 != 0 {
        return Err(HelloError::NotPairs { index: fields.len() });
    }
    let mut out = Vec::with_capacity(fields.len() / 2);
    for (i, pair) in fields.chunks(2).enumerate() {
        let (Some(name), Some(ty)) = (pair[0].as_str(), pair[1].as_str()) else {
            return Err(HelloError::NotPairs { index: 2 * i });
        };
        let ty = FieldType::parse(ty).ok_or_else(|| HelloError::UnknownType(ty.to_owned()))?;
        out.push((name.to_owned(), ty));
    }
    Ok(Schema::new(out))
}

/// Append an Error frame carrying `message` (a record of one string field).
pub fn encode_error(message: &str, out: &mut AlignedVec) {
    if let Ok(start) = begin_frame(out) {
        archive_values_into(&[Value::Str(message.to_owned())], out);
        let _ = end_frame(FrameType::Error, start, out);
    }
}

/// The message of an Error frame (or a description of why it has none).
pub fn error_message(payload: &[u8]) -> String {
    match validate_record(payload) {
        Ok(rec) => match rec.fields.first().and_then(|v| v.as_str()) {
            Some(m) => m.to_owned(),
            None => "(error frame without a message)".to_owned(),
        },
        Err(e) => format!("(malformed error frame: {e})"),
    }
}

/// One NDJSON error line, `{"error":"..."}` plus a newline.
pub fn error_line(message: &str) -> String {
    let mut s = serde_json::json!({ "error": message }).to_string();
    s.push('\n');
    s
}

/// Append an End frame (the sender's channel is finished).
pub fn encode_end(out: &mut AlignedVec) {
    let _ = encode_frame(FrameType::End, &[], out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use dirigo_actors::record::{access, Record};

    fn schema() -> Schema {
        Schema::new(vec![("k".into(), FieldType::U64), ("s".into(), FieldType::Str)])
    }

    #[test]
    fn hello_round_trips_the_schema() {
        let mut out: AlignedVec = AlignedVec::new();
        encode_hello(&schema(), &mut out);
        let mut dec = crate::FrameDecoder::default();
        dec.feed(&out).unwrap();
        let f = dec.next_frame().unwrap().unwrap();
        assert_eq!(f.ty, FrameType::Hello);
        assert_eq!(schema_from_hello(f.payload).unwrap(), schema());
    }

    #[test]
    fn records_that_do_not_fit_are_named() {
        let ok = Record::from(vec![Value::U64(1), Value::Str("a".into())]).to_archive();
        assert!(fits(&schema(), access(&ok).unwrap()).is_ok());
        let short = Record::from(vec![Value::U64(1)]).to_archive();
        assert!(matches!(fits(&schema(), access(&short).unwrap()), Err(RecordError::WrongArity { .. })));
        let wrong = Record::from(vec![Value::Str("x".into()), Value::Str("a".into())]).to_archive();
        let e = fits(&schema(), access(&wrong).unwrap()).unwrap_err();
        assert!(e.to_string().contains("`k` should be u64"), "{e}");
    }
}
