//! Property tests: random bytes never panic, valid streams decode exactly however they are
//! chunked, truncated streams yield a prefix and then the truncated error.

mod common;

use common::{decode_chunks, encode_all, Owned};
use dirigo_actors::record::Value;
use dirigo_net::frame::HEADER_LEN;
use dirigo_net::{validate_batch, validate_record, BatchWriter, DecodeError, FrameDecoder, FrameType};
use proptest::prelude::*;
use rkyv::util::AlignedVec;

fn frame_type() -> impl Strategy<Value = FrameType> {
    proptest::sample::select(FrameType::ALL.to_vec())
}

fn frames() -> impl Strategy<Value = Vec<Owned>> {
    let frame = (frame_type(), proptest::collection::vec(any::<u8>(), 0..70));
    proptest::collection::vec(frame, 0..24)
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..80, 1..16)
}

/// Split `wire` into chunks whose sizes cycle through `sizes`.
fn chunked<'a>(wire: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let (mut out, mut at, mut i) = (Vec::new(), 0, 0);
    while at < wire.len() {
        let n = sizes[i % sizes.len()].min(wire.len() - at);
        out.push(&wire[at..at + n]);
        at += n;
        i += 1;
    }
    out
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        any::<i32>().prop_map(|x| Value::F64(x as f64 / 8.0)),
        any::<bool>().prop_map(Value::Bool),
        ".{0,20}".prop_map(Value::Str),
    ]
}

/// Decode whatever can be decoded, validating every Record and Data payload.
fn decode_anything(bytes: &[u8], sizes: &[usize], max: u32) {
    let mut dec = FrameDecoder::new(max);
    for chunk in chunked(bytes, sizes) {
        if dec.feed(chunk).is_err() {
            break;
        }
        while let Ok(Some(f)) = dec.next_frame() {
            match f.ty {
                FrameType::Record => drop(validate_record(f.payload)),
                FrameType::Data => drop(validate_batch(f.payload).map(|b| b.iter().count())),
                _ => {}
            }
        }
    }
    let _ = dec.finish();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        sizes in chunk_sizes(),
        max in 0u32..256,
    ) {
        decode_anything(&bytes, &sizes, max);
    }

    #[test]
    fn random_payloads_behind_valid_headers_never_panic(
        frames in proptest::collection::vec((frame_type(), proptest::collection::vec(any::<u8>(), 0..120)), 1..6),
        sizes in chunk_sizes(),
    ) {
        decode_anything(&encode_all(&frames), &sizes, 1 << 16);
    }

    #[test]
    fn valid_frames_decode_exactly_however_chunked(frames in frames(), sizes in chunk_sizes()) {
        let wire = encode_all(&frames);
        let (got, end) = decode_chunks(&mut FrameDecoder::default(), chunked(&wire, &sizes));
        prop_assert_eq!(end, Ok(()));
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn truncation_yields_a_prefix_then_the_truncated_error(
        frames in frames(),
        sizes in chunk_sizes(),
        cut in any::<proptest::sample::Index>(),
    ) {
        let wire = encode_all(&frames);
        let cut = cut.index(wire.len() + 1);
        let (got, end) = decode_chunks(&mut FrameDecoder::default(), chunked(&wire[..cut], &sizes));
        prop_assert!(got.len() <= frames.len());
        prop_assert_eq!(&got[..], &frames[..got.len()]);
        let boundary: usize = got.iter().map(|(_, p)| HEADER_LEN + p.len().next_multiple_of(16)).sum();
        match end {
            Ok(()) => prop_assert_eq!(boundary, cut),
            Err(DecodeError::Truncated { buffered, .. }) => prop_assert_eq!(boundary + buffered, cut),
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn record_batches_round_trip(
        records in proptest::collection::vec(proptest::collection::vec(value(), 0..6), 0..30),
    ) {
        let mut out = AlignedVec::new();
        let mut batch = BatchWriter::begin(&mut out).unwrap();
        for (i, r) in records.iter().enumerate() {
            batch.push_values(i as u64, r);
        }
        batch.finish().unwrap();
        let mut dec = FrameDecoder::default();
        dec.feed(&out).unwrap();
        let frame = dec.next_frame().unwrap().unwrap();
        let valid = validate_batch(frame.payload).unwrap();
        let got: Vec<Vec<Value>> = valid.iter().map(|e| e.record.to_values()).collect();
        prop_assert_eq!(got, records);
    }

    #[test]
    fn a_mutated_batch_never_panics_validation(
        records in proptest::collection::vec(proptest::collection::vec(value(), 0..4), 1..6),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut out = AlignedVec::new();
        let mut batch = BatchWriter::begin(&mut out).unwrap();
        for r in &records {
            batch.push_values(7, r);
        }
        batch.finish().unwrap();
        for (at, byte) in flips {
            let at = HEADER_LEN + at.index(out.len() - HEADER_LEN);
            out[at] = byte;
        }
        if let Ok(valid) = validate_batch(&out[HEADER_LEN..]) {
            for entry in valid {
                let _ = entry.record.to_values();
            }
        }
    }
}
