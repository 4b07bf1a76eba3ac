//! Helpers shared by the integration tests: sample frames, raw headers, a decode loop.
#![allow(dead_code)]

use dirigo_net::frame::{header_check, HEADER_LEN};
use dirigo_net::{encode_frame, DecodeError, FrameDecoder, FrameType};
use rkyv::util::AlignedVec;

/// An owned decoded frame.
pub type Owned = (FrameType, Vec<u8>);

/// A payload of `len` bytes that differs per position and type.
pub fn payload(ty: FrameType, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ ty as u8).collect()
}

/// Every frame type, with payload lengths around the padding boundaries.
pub fn sample_frames() -> Vec<Owned> {
    let mut frames = Vec::new();
    for (i, ty) in FrameType::ALL.into_iter().enumerate() {
        for len in [0, 1, 15, 16, 17, 31 + i] {
            frames.push((ty, payload(ty, len)));
        }
    }
    frames
}

/// The wire bytes of `frames`.
pub fn encode_all(frames: &[Owned]) -> AlignedVec {
    let mut out = AlignedVec::new();
    for (ty, p) in frames {
        encode_frame(*ty, p, &mut out).unwrap();
    }
    out
}

/// Feed `chunks` in order, draining frames after each; then `finish`.
pub fn decode_chunks<'a>(
    dec: &mut FrameDecoder,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Owned>, Result<(), DecodeError>) {
    let mut got = Vec::new();
    for chunk in chunks {
        if let Err(e) = dec.feed(chunk).and_then(|()| drain(dec, &mut got)) {
            return (got, Err(e));
        }
    }
    let end = dec.finish();
    (got, end)
}

/// Move every complete frame out of the decoder, checking payload alignment.
pub fn drain(dec: &mut FrameDecoder, got: &mut Vec<Owned>) -> Result<(), DecodeError> {
    while let Some(f) = dec.next_frame()? {
        assert_eq!(f.payload.as_ptr() as usize % 16, 0, "payload not 16-aligned");
        got.push((f.ty, f.payload.to_vec()));
    }
    Ok(())
}

/// A raw header with a correct check word, for building invalid frames field by field.
pub fn raw_header(magic: [u8; 2], version: u8, ty: u8, len: u32, reserved: u32) -> [u8; 16] {
    let mut b = [0u8; HEADER_LEN];
    b[0..2].copy_from_slice(&magic);
    b[2] = version;
    b[3] = ty;
    b[4..8].copy_from_slice(&len.to_le_bytes());
    b[8..12].copy_from_slice(&reserved.to_le_bytes());
    let check = header_check(&b);
    b[12..16].copy_from_slice(&check.to_le_bytes());
    b
}
