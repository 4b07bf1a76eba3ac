//! Round trips: every frame type, records and batches, however the stream is chunked.

mod common;

use common::{decode_chunks, drain, encode_all, sample_frames, Owned};
use dirigo_actors::record::{Record, Value};
use dirigo_net::{
    encode_archived, encode_frame, encode_record, validate_batch, validate_record, BatchWriter, FrameDecoder, FrameType,
};
use rkyv::util::AlignedVec;

fn values(i: u64) -> Vec<Value> {
    vec![
        Value::U64(i),
        Value::I64(-(i as i64)),
        Value::F64(i as f64 / 4.0),
        Value::Bool(i.is_multiple_of(2)),
        Value::Str("x".repeat(i as usize % 23)),
    ]
}

#[test]
fn every_frame_type_round_trips_in_one_chunk() {
    let frames = sample_frames();
    let wire = encode_all(&frames);
    assert_eq!(wire.len() % 16, 0);
    let (got, end) = decode_chunks(&mut FrameDecoder::default(), [wire.as_slice()]);
    assert_eq!(end, Ok(()));
    assert_eq!(got, frames);
}

#[test]
fn a_split_at_every_byte_boundary_decodes_the_same() {
    let frames = sample_frames();
    let wire = encode_all(&frames);
    for cut in 0..=wire.len() {
        let (a, b) = wire.split_at(cut);
        let (got, end) = decode_chunks(&mut FrameDecoder::default(), [a, b]);
        assert_eq!(end, Ok(()), "cut at {cut}");
        assert_eq!(got, frames, "cut at {cut}");
    }
}

#[test]
fn one_byte_at_a_time_and_odd_chunk_sizes_decode_the_same() {
    let frames = sample_frames();
    let wire = encode_all(&frames);
    for size in [1, 2, 3, 7, 15, 16, 17, 100, 4097] {
        let (got, end) = decode_chunks(&mut FrameDecoder::default(), wire.chunks(size));
        assert_eq!((got, end), (frames.clone(), Ok(())), "chunks of {size}");
    }
}

#[test]
fn many_frames_in_one_chunk_are_yielded_in_order() {
    let frames: Vec<Owned> =
        (0..10_000).map(|i| (FrameType::ALL[i % 9], common::payload(FrameType::Data, i % 40))).collect();
    let wire = encode_all(&frames);
    let (got, end) = decode_chunks(&mut FrameDecoder::default(), [wire.as_slice()]);
    assert_eq!((got, end), (frames, Ok(())));
}

#[test]
fn records_round_trip_through_both_encoders() {
    let mut out = AlignedVec::new();
    for i in 0..50 {
        encode_record(&values(i), &mut out).unwrap();
        encode_archived(FrameType::Record, &Record::from(values(i)), &mut out).unwrap();
    }
    let mut dec = FrameDecoder::default();
    let mut got = Vec::new();
    for chunk in out.chunks(9) {
        dec.feed(chunk).unwrap();
        while let Some(f) = dec.next_frame().unwrap() {
            assert_eq!(f.ty, FrameType::Record);
            got.push(validate_record(f.payload).unwrap().to_values());
        }
    }
    dec.finish().unwrap();
    let want: Vec<_> = (0..50).flat_map(|i| [values(i), values(i)]).collect();
    assert_eq!(got, want);
}

#[test]
fn a_batch_round_trips_and_forwards_archives_unchanged() {
    let mut out = AlignedVec::new();
    let mut batch = BatchWriter::begin(&mut out).unwrap();
    for i in 0..100 {
        batch.push_values(i * 3, &values(i));
    }
    assert_eq!(batch.len(), 100);
    batch.finish().unwrap();

    let mut dec = FrameDecoder::default();
    dec.feed(&out).unwrap();
    let frame = dec.next_frame().unwrap().unwrap();
    assert_eq!(frame.ty, FrameType::Data);
    let valid = validate_batch(frame.payload).unwrap();
    assert_eq!(valid.len(), 100);
    let mut forwarded = AlignedVec::new();
    let mut fwd = BatchWriter::begin(&mut forwarded).unwrap();
    for (i, entry) in valid.iter().enumerate() {
        assert_eq!(entry.tag, i as u64 * 3);
        assert_eq!(entry.record.to_values(), values(i as u64));
        fwd.push_archive(entry.tag, entry.archive);
    }
    fwd.finish().unwrap();
    assert_eq!(forwarded.as_slice(), out.as_slice(), "forwarding is a byte copy");
}

#[test]
fn an_empty_batch_is_valid_and_a_dropped_writer_leaves_no_trace() {
    let mut out = AlignedVec::new();
    encode_frame(FrameType::Ping, b"p", &mut out).unwrap();
    let before = out.len();
    {
        let mut batch = BatchWriter::begin(&mut out).unwrap();
        batch.push_values(1, &values(1));
    }
    assert_eq!(out.len(), before);
    BatchWriter::begin(&mut out).unwrap().finish().unwrap();
    let mut dec = FrameDecoder::default();
    dec.feed(&out).unwrap();
    assert_eq!(dec.next_frame().unwrap().unwrap().payload, b"p");
    let frame = dec.next_frame().unwrap().unwrap();
    assert_eq!(frame.payload.len(), 16, "an empty batch is its header");
    assert!(validate_batch(frame.payload).unwrap().is_empty());
    assert_eq!(dec.next_frame().unwrap(), None);
}

#[test]
fn reading_straight_into_the_receive_window_decodes_the_same() {
    let frames = sample_frames();
    let wire = encode_all(&frames);
    let mut dec = FrameDecoder::default();
    let mut got = Vec::new();
    for chunk in wire.chunks(50) {
        let window = dec.recv_window(chunk.len()).unwrap();
        window[..chunk.len()].copy_from_slice(chunk);
        dec.commit(chunk.len()).unwrap();
        drain(&mut dec, &mut got).unwrap();
    }
    dec.finish().unwrap();
    assert_eq!(got, frames);
}
