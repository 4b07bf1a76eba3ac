//! Every decode and validation error, by its exact variant, and the decoder's refusal after one.

mod common;

use common::{encode_all, raw_header, sample_frames};
use dirigo_actors::record::{RecordError, Value};
use dirigo_net::frame::VERSION;
use dirigo_net::{
    encode_frame, validate_batch, BatchFault, BatchWriter, DecodeError, FrameDecoder, FrameType, ValidateError,
};
use rkyv::util::AlignedVec;

fn feed_err(bytes: &[u8]) -> DecodeError {
    let mut dec = FrameDecoder::new(1024);
    let err = dec.feed(bytes).unwrap_err();
    assert_eq!(dec.error(), Some(err));
    err
}

#[test]
fn bad_magic() {
    let h = raw_header(*b"GD", VERSION, 1, 0, 0);
    assert_eq!(feed_err(&h), DecodeError::BadMagic { found: *b"GD" });
}

#[test]
fn unsupported_version() {
    let h = raw_header(*b"DG", 2, 1, 0, 0);
    let want = DecodeError::UnsupportedVersion { found: 2, supported: 1 };
    assert_eq!(feed_err(&h), want);
}

#[test]
fn bad_header_check() {
    let mut h = raw_header(*b"DG", VERSION, 1, 0, 0);
    h[4] = 1; // the length changed after the check was computed
    assert!(matches!(feed_err(&h), DecodeError::BadHeaderCheck { .. }));
}

#[test]
fn unknown_frame_type() {
    for ty in [0u8, 12, 255] {
        let h = raw_header(*b"DG", VERSION, ty, 0, 0);
        assert_eq!(feed_err(&h), DecodeError::UnknownFrameType { found: ty });
    }
}

#[test]
fn reserved_nonzero() {
    let h = raw_header(*b"DG", VERSION, 1, 0, 7);
    assert_eq!(feed_err(&h), DecodeError::ReservedNonzero { found: 7 });
}

#[test]
fn oversized_is_refused_before_any_payload_is_buffered() {
    let mut wire = raw_header(*b"DG", VERSION, 2, 1025, 0).to_vec();
    wire.extend_from_slice(&[0u8; 2048]);
    let mut dec = FrameDecoder::new(1024);
    let want = DecodeError::Oversized { declared: 1025, max: 1024 };
    assert_eq!(dec.feed(&wire), Err(want));
    assert_eq!(dec.buffered(), 16, "only the header was buffered");
    let exact = raw_header(*b"DG", VERSION, 2, 1024, 0);
    assert_eq!(FrameDecoder::new(1024).feed(&exact), Ok(()));
}

#[test]
fn nonzero_padding() {
    let mut wire = encode_all(&[(FrameType::Error, b"abc".to_vec())]).to_vec();
    wire[16 + 5] = 1;
    let mut dec = FrameDecoder::default();
    dec.feed(&wire).unwrap();
    let want = DecodeError::NonzeroPadding { ty: FrameType::Error, len: 3 };
    assert_eq!(dec.next_frame(), Err(want));
}

#[test]
fn truncated_inside_a_header_and_inside_a_payload() {
    let wire = encode_all(&[(FrameType::Hello, vec![9; 20])]);
    let mut dec = FrameDecoder::default();
    dec.feed(&wire[..5]).unwrap();
    let want = DecodeError::Truncated { buffered: 5, needed: 16 };
    assert_eq!(dec.finish(), Err(want));

    let mut dec = FrameDecoder::default();
    dec.feed(&wire[..40]).unwrap();
    assert_eq!(dec.next_frame(), Ok(None));
    let want = DecodeError::Truncated { buffered: 40, needed: 48 };
    assert_eq!(dec.finish(), Err(want));
}

#[test]
fn after_an_error_every_call_returns_it() {
    let wire = encode_all(&sample_frames());
    let mut dec = FrameDecoder::default();
    let err = dec.feed(&[0xde, 0xad, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
    assert_eq!(dec.feed(&wire), Err(err));
    assert_eq!(dec.next_frame(), Err(err));
    assert_eq!(dec.recv_window(64).map(|w| w.len()), Err(err));
    assert_eq!(dec.commit(0), Err(err));
    assert_eq!(dec.finish(), Err(err));
}

#[test]
fn a_bad_header_closes_the_decoder_with_frames_before_it() {
    let mut wire = encode_all(&[(FrameType::Ping, vec![1; 3])]).to_vec();
    wire.extend_from_slice(&raw_header(*b"XX", VERSION, 1, 0, 0));
    let mut dec = FrameDecoder::default();
    assert!(matches!(dec.feed(&wire), Err(DecodeError::BadMagic { .. })));
    assert!(dec.next_frame().is_err(), "the connection is to be closed");
}

fn batch_of_two() -> AlignedVec {
    let mut out = AlignedVec::new();
    let mut batch = BatchWriter::begin(&mut out).unwrap();
    batch.push_values(5, &[Value::U64(1)]);
    batch.push_values(6, &[Value::Str("two".into())]);
    batch.finish().unwrap();
    out
}

/// A copy of the batch payload (at offset 16 of its frame) in its own aligned buffer.
fn payload_of(frame: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> AlignedVec {
    let mut p = frame[16..].to_vec();
    edit(&mut p);
    let mut out = AlignedVec::new();
    out.extend_from_slice(&p);
    out
}

#[test]
fn batch_layout_faults_name_their_offset() {
    let frame = batch_of_two();
    let check = |edit: fn(&mut Vec<u8>)| validate_batch(&payload_of(&frame, edit)).unwrap_err();
    let fault = |offset, what| ValidateError::Batch { offset, what };
    assert_eq!(check(|p| p.truncate(8)), fault(0, BatchFault::MissingHeader));
    assert_eq!(check(|p| p[7] = 1), fault(4, BatchFault::ReservedNonzero));
    assert_eq!(check(|p| p[20] = 1), fault(20, BatchFault::ReservedNonzero));
    assert_eq!(check(|p| p[0] = 3), fault(p_len(&frame), BatchFault::EntryHeaderTruncated));
    assert_eq!(check(|p| p.extend([0; 16])), { fault(p_len(&frame), BatchFault::TrailingBytes { extra: 16 }) });
    assert_eq!(check(|p| p[16] = 0xff), fault(32, BatchFault::RecordTruncated { len: 0xff }));
    let padding_at = 32 + le_u32(&frame[32..]) as usize;
    assert_eq!(padding_at % 16, 8, "the first record leaves padding to corrupt");
    let e = validate_batch(&payload_of(&frame, |p| p[padding_at] = 1)).unwrap_err();
    assert_eq!(e, fault(padding_at, BatchFault::NonzeroPadding));
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn p_len(frame: &[u8]) -> usize {
    frame.len() - 16
}

#[test]
fn a_corrupt_record_inside_a_batch_is_named_by_index() {
    let frame = batch_of_two();
    let bad = payload_of(&frame, |p| {
        let second = 32 + (le_u32(&p[16..]) as usize).next_multiple_of(16);
        let root_end = second + 16 + le_u32(&p[second..]) as usize;
        p[root_end - 8..root_end].fill(0xff); // the archive's root: a vector's offset and length
    });
    assert!(matches!(
        validate_batch(&bad),
        Err(ValidateError::BatchRecord { index: 1, source: RecordError::Invalid(_) })
    ));
}

#[test]
fn frames_encode_from_any_payload_size() {
    let mut out = AlignedVec::new();
    encode_frame(FrameType::Credit, &[], &mut out).unwrap();
    assert_eq!(out.len(), 16);
}
