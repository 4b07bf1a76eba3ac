//! The fuzz target's seed corpus (`fuzz/corpus/frame_decoder/`): generated here, and checked to
//! be current and to behave as each file's name says.
//!
//! Regenerate with `cargo test -p dirigo-net --test corpus -- --ignored write_seed_corpus`.

mod common;

use std::path::PathBuf;

use common::{encode_all, raw_header};
use dirigo_actors::record::Value;
use dirigo_net::frame::VERSION;
use dirigo_net::{encode_record, validate_batch, validate_record, BatchWriter, FrameDecoder, FrameType};
use rkyv::util::AlignedVec;

/// The fuzz input's first byte: chunk size 7 (`knob & 0x3f` + 1), small frame limit.
const KNOB: u8 = 6;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frame_decoder")
}

fn record_frames() -> AlignedVec {
    let mut out = AlignedVec::new();
    encode_record(&[Value::U64(1), Value::Str("auction".into())], &mut out).unwrap();
    encode_record(&[Value::F64(2.5), Value::Bool(true), Value::I64(-3)], &mut out).unwrap();
    out
}

fn batch_frame() -> AlignedVec {
    let mut out = AlignedVec::new();
    let mut batch = BatchWriter::begin(&mut out).unwrap();
    for i in 0..4u64 {
        batch.push_values(i, &[Value::U64(i), Value::Str("x".repeat(i as usize * 5))]);
    }
    batch.finish().unwrap();
    out
}

fn control_frames() -> AlignedVec {
    let frames: Vec<_> = FrameType::ALL
        .into_iter()
        .filter(|t| !matches!(t, FrameType::Data | FrameType::Record))
        .map(|t| (t, vec![t as u8; t as usize * 3]))
        .collect();
    encode_all(&frames)
}

/// Every seed: (file name, bytes without the knob).
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut padding = encode_all(&[(FrameType::Ping, vec![1, 2, 3])]).to_vec();
    padding[20] = 9;
    let mut corrupt = record_frames().to_vec();
    corrupt[16..24].fill(0xff);
    let mut bad_check = control_frames().to_vec();
    bad_check[12] ^= 1;
    vec![
        ("valid-records", record_frames().to_vec()),
        ("valid-batch", batch_frame().to_vec()),
        ("valid-control", control_frames().to_vec()),
        ("invalid-magic", raw_header(*b"GD", VERSION, 1, 0, 0).to_vec()),
        ("invalid-version", raw_header(*b"DG", 9, 1, 0, 0).to_vec()),
        ("invalid-type", raw_header(*b"DG", VERSION, 42, 0, 0).to_vec()),
        ("invalid-check", bad_check),
        ("invalid-oversized", raw_header(*b"DG", VERSION, 2, 1 << 24, 0).to_vec()),
        ("invalid-padding", padding),
        ("invalid-truncated", batch_frame()[..40].to_vec()),
        ("invalid-record", corrupt),
    ]
}

fn with_knob(bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![KNOB];
    v.extend_from_slice(bytes);
    v
}

/// Decode like the fuzz target; true when every frame decoded and validated.
fn decodes_cleanly(stream: &[u8]) -> bool {
    let mut dec = FrameDecoder::new(1 << 12);
    let mut ok = true;
    for chunk in stream.chunks(usize::from(KNOB) + 1) {
        if dec.feed(chunk).is_err() {
            return false;
        }
        while let Ok(Some(f)) = dec.next_frame() {
            ok &= match f.ty {
                FrameType::Record => validate_record(f.payload).is_ok(),
                FrameType::Data => validate_batch(f.payload).is_ok(),
                _ => true,
            };
        }
    }
    dec.finish().is_ok() && dec.error().is_none() && ok
}

#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_seed_corpus() {
    std::fs::create_dir_all(corpus_dir()).unwrap();
    for (name, bytes) in seeds() {
        std::fs::write(corpus_dir().join(name), with_knob(&bytes)).unwrap();
    }
}

#[test]
fn seed_corpus_is_current_and_behaves_as_named() {
    for (name, bytes) in seeds() {
        let file = std::fs::read(corpus_dir().join(name)).expect("run write_seed_corpus");
        assert_eq!(file, with_knob(&bytes), "{name} is stale: run write_seed_corpus");
        assert_eq!(decodes_cleanly(&bytes), name.starts_with("valid-"), "{name}");
    }
}
