//! KeyBy: re-partitions records by one field, forwarding the archive unchanged (zero-copy).

use super::{resolve_field, BuildError};
use crate::operator::{Emitter, Msg, Operator};
use crate::record::{ArchivedRecord, Schema};

/// Sets each record's key hash to its key field's
/// [`key_hash`](crate::record::ArchivedValue::key_hash). Output schema = input schema.
pub struct KeyBy {
    key: usize,
}

impl KeyBy {
    /// Key `input` records by the field `key`. Cold path.
    pub fn new(input: &Schema, key: &str) -> Result<(KeyBy, Schema), BuildError> {
        let (key, _) = resolve_field(input, key, "key")?;
        Ok((KeyBy { key }, input.clone()))
    }
}

impl Operator for KeyBy {
    /// Hot path: hashes the key in place and forwards the archive bytes.
    #[inline]
    fn on_record<E: Emitter>(&mut self, msg: Msg, rec: &ArchivedRecord, archive: &[u8], out: &mut E) {
        // A record shorter than its schema (never, once validated) keeps its key hash.
        let key_hash = rec.fields.get(self.key).map_or(msg.key_hash, |v| v.key_hash());
        out.forward(key_hash, msg.event_time, archive);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::VecEmitter;
    use crate::record::{FieldType, Value};
    use crate::testkit::{feed, msg, Rng};

    fn schema() -> Schema {
        Schema::new(vec![("user".into(), FieldType::Str), ("n".into(), FieldType::I64)])
    }

    #[test]
    fn forwards_with_the_key_fields_hash() {
        let (mut k, out_schema) = KeyBy::new(&schema(), "user").unwrap();
        assert_eq!(out_schema, schema());
        let mut out = VecEmitter::default();
        let mut rng = Rng(9);
        for i in 0..200 {
            let row = vec![Value::Str(format!("u{}", rng.below(20))), Value::I64(i)];
            feed(&mut k, msg(0, i as u64), row.clone(), &mut out);
            assert_eq!(out.out.last(), Some(&(row[0].key_hash(), i as u64, row)));
        }
        let err = KeyBy::new(&schema(), "usr").err().unwrap();
        assert_eq!(err.to_string(), "unknown key field `usr`; fields are: user, n");
    }
}
