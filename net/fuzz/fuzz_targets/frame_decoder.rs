//! Fuzz target: arbitrary bytes, in arbitrary chunks, through the frame decoder and the
//! validation of every Record and Data payload it yields. Nothing may panic, and every payload
//! must come out 16-byte aligned.
#![no_main]

use dirigo_net::{validate_batch, validate_record, FrameDecoder, FrameType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size (1..=64) and a small or large frame limit.
    let Some((&knob, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(knob & 0x3f) + 1;
    let max = if knob & 0x40 == 0 { 1 << 12 } else { 1 << 20 };
    let mut decoder = FrameDecoder::new(max);
    for piece in stream.chunks(chunk) {
        if decoder.feed(piece).is_err() {
            return;
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert_eq!(frame.payload.as_ptr() as usize % 16, 0);
                    check_payload(frame.ty, frame.payload);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
});

fn check_payload(ty: FrameType, payload: &[u8]) {
    match ty {
        FrameType::Record => {
            if let Ok(record) = validate_record(payload) {
                let _ = record.to_values();
            }
        }
        FrameType::Data => {
            if let Ok(batch) = validate_batch(payload) {
                for entry in batch {
                    let _ = entry.record.to_values();
                }
            }
        }
        _ => {}
    }
}
