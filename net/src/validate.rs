//! Validation at the trust boundary: a payload from the network is checked once, here, and read
//! in place afterwards.

use dirigo_actors::record::{self, ArchivedRecord, RecordError};
use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::{rancor, Portable};

use crate::error::ValidateError;
use crate::frame::ALIGN;

/// Check that `payload` is a well-formed archived [`dirigo_actors::record::Record`] and return
/// it, read in place. About 10 ns for a small record; the error path allocates (cold).
#[inline]
pub fn validate_record(payload: &[u8]) -> Result<&ArchivedRecord, ValidateError> {
    check_aligned(payload)?;
    record::access(payload).map_err(ValidateError::Archive)
}

/// Check that `payload` is a well-formed archive of any rkyv type `T` (control payloads).
pub fn validate_archive<T>(payload: &[u8]) -> Result<&T, ValidateError>
where
    T: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    check_aligned(payload)?;
    rkyv::access::<T, rancor::Error>(payload).map_err(|e| ValidateError::Archive(RecordError::Invalid(e.to_string())))
}

/// Payloads are read in place, so they must sit where the decoder put them: 16-aligned.
#[inline]
pub(crate) fn check_aligned(payload: &[u8]) -> Result<(), ValidateError> {
    let addr = payload.as_ptr() as usize;
    match addr % ALIGN {
        0 => Ok(()),
        _ => Err(ValidateError::Misaligned { addr }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dirigo_actors::record::{Record, Value};
    use rkyv::util::AlignedVec;

    #[test]
    fn a_record_validates_and_reads_in_place() {
        let bytes = Record::from(vec![Value::Str("k".into()), Value::F64(0.5)]).to_archive();
        let rec = validate_record(&bytes).unwrap();
        assert_eq!(rec.fields[0].as_str(), Some("k"));
        assert_eq!(rec.fields[1].as_f64(), Some(0.5));
    }

    #[test]
    fn garbage_and_misplaced_records_are_refused() {
        let mut buf: AlignedVec = AlignedVec::new();
        buf.extend_from_slice(&[0xff; 48]);
        assert!(matches!(validate_record(&buf), Err(ValidateError::Archive(RecordError::Invalid(_)))));
        let good = Record::from(vec![Value::U64(1)]).to_archive();
        let mut shifted: AlignedVec = AlignedVec::new();
        shifted.push(0);
        shifted.extend_from_slice(&good);
        assert!(matches!(validate_record(&shifted[1..]), Err(ValidateError::Misaligned { .. })));
    }

    #[test]
    fn any_archive_type_validates() {
        let bytes = rkyv::to_bytes::<rancor::Error>(&(7u64, 9u32)).unwrap();
        let v = validate_archive::<rkyv::Archived<(u64, u32)>>(&bytes).unwrap();
        assert_eq!(v.0, 7);
        assert!(validate_archive::<rkyv::Archived<(u64, u32)>>(&bytes[..4]).is_err());
    }
}
