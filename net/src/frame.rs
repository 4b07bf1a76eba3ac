//! The frame: a 16-byte header, then the payload zero-padded to 16 bytes; and its encoders.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `b"DG"` |
//! | 2 | 1 | version, [`VERSION`] = 1 |
//! | 3 | 1 | [`FrameType`] |
//! | 4 | 4 | payload length in bytes, `u32` little-endian, padding excluded |
//! | 8 | 4 | reserved, zero in version 1 |
//! | 12 | 4 | header check, `u32` little-endian: [`header_check`] of bytes 0..12 |
//! | 16 | len | payload (an rkyv archive: its root ends exactly at `16 + len`) |
//! | 16 + len | 0..15 | zero padding up to a multiple of 16 |
//!
//! Every frame is a multiple of 16 bytes long, so in a 16-aligned buffer of whole frames every
//! payload starts 16-aligned and can be read in place as an rkyv archive.

use std::ops::Range;

use dirigo_actors::record::{archive_values_into, mix64, Value};
use rkyv::api::high::HighSerializer;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::error::{DecodeError, EncodeError};
pub use crate::frame_type::FrameType;

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"DG";
/// The wire version this build speaks.
pub const VERSION: u8 = 1;
/// Length of the frame header.
pub const HEADER_LEN: usize = 16;
/// Alignment of frames and payloads.
pub const ALIGN: usize = 16;
/// Largest payload any frame may declare (1 GiB); a decoder's configured maximum is lower.
pub const PAYLOAD_LIMIT: u32 = 1 << 30;

impl TryFrom<u8> for FrameType {
    type Error = DecodeError;

    #[inline]
    fn try_from(byte: u8) -> Result<Self, DecodeError> {
        match byte {
            1..=11 => Ok(FrameType::ALL[byte as usize - 1]),
            found => Err(DecodeError::UnknownFrameType { found }),
        }
    }
}

/// The decoded fields of a frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub ty: FrameType,
    /// Payload length, padding excluded.
    pub len: u32,
}

impl FrameHeader {
    /// The 16 header bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2] = VERSION;
        b[3] = self.ty as u8;
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        let check = header_check(&b);
        b[12..16].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Check and decode a header (hot path). Checks run cheapest first: magic, version, check
    /// word, type, reserved word, then the length against `max_payload` (capped at
    /// [`PAYLOAD_LIMIT`]).
    #[inline]
    pub fn parse(b: &[u8; HEADER_LEN], max_payload: u32) -> Result<FrameHeader, DecodeError> {
        if b[0..2] != MAGIC {
            return Err(DecodeError::BadMagic { found: [b[0], b[1]] });
        }
        if b[2] != VERSION {
            let found = b[2];
            return Err(DecodeError::UnsupportedVersion { found, supported: VERSION });
        }
        let (found, computed) = (le_u32(b, 12), header_check(b));
        if found != computed {
            return Err(DecodeError::BadHeaderCheck { found, computed });
        }
        let ty = FrameType::try_from(b[3])?;
        let reserved = le_u32(b, 8);
        if reserved != 0 {
            return Err(DecodeError::ReservedNonzero { found: reserved });
        }
        let (len, max) = (le_u32(b, 4), max_payload.min(PAYLOAD_LIMIT));
        if len > max {
            return Err(DecodeError::Oversized { declared: len, max });
        }
        Ok(FrameHeader { ty, len })
    }

    /// Length of the whole frame: header, payload and padding.
    #[inline]
    pub fn frame_len(self) -> usize {
        HEADER_LEN + padded(self.len as usize)
    }
}

/// The header check word: a mix of header bytes 0..12 (bytes 12..16 are ignored). It catches a
/// stream that lost sync or a sender's framing bug; TCP already checks the payload bytes.
#[inline]
pub fn header_check(b: &[u8; HEADER_LEN]) -> u32 {
    let lo = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let hi = le_u32(b, 8) as u64;
    (mix64(mix64(lo) ^ hi) >> 32) as u32
}

#[inline]
fn le_u32(b: &[u8; HEADER_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `len` rounded up to a multiple of [`ALIGN`].
#[inline]
pub fn padded(len: usize) -> usize {
    len.next_multiple_of(ALIGN)
}

/// Append one frame carrying `payload` (copied) to `out`. Returns the payload's range in `out`.
pub fn encode_frame(ty: FrameType, payload: &[u8], out: &mut AlignedVec) -> Result<Range<usize>, EncodeError> {
    if payload.len() > PAYLOAD_LIMIT as usize {
        let len = payload.len();
        return Err(EncodeError::PayloadTooLarge { len, max: PAYLOAD_LIMIT });
    }
    let start = begin_frame(out)?;
    out.extend_from_slice(payload);
    end_frame(ty, start, out)
}

/// Serialise `value` with rkyv straight into `out` after a reserved header, then patch the
/// header: no intermediate buffer. Uses rkyv's thread-local arena, so it does not allocate once
/// `out` has grown to its working size.
pub fn encode_archived<T>(ty: FrameType, value: &T, out: &mut AlignedVec) -> Result<Range<usize>, EncodeError>
where
    T: for<'a, 'w> rkyv::Serialize<HighSerializer<&'w mut AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    let start = begin_frame(out)?;
    if let Err(e) = rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, &mut *out) {
        out.resize(start, 0);
        return Err(EncodeError::Serialize(e));
    }
    end_frame(ty, start, out)
}

/// Archive `values` as a [`dirigo_actors::record::Record`] straight into a
/// [`FrameType::Record`] frame appended to `out`.
pub fn encode_record(values: &[Value], out: &mut AlignedVec) -> Result<Range<usize>, EncodeError> {
    let start = begin_frame(out)?;
    archive_values_into(values, out);
    end_frame(FrameType::Record, start, out)
}

/// Reserve a header at the end of `out`; returns where the frame starts. Pair with [`end_frame`].
pub fn begin_frame(out: &mut AlignedVec) -> Result<usize, EncodeError> {
    let start = out.len();
    if start % ALIGN != 0 {
        return Err(EncodeError::UnalignedOutput { len: start });
    }
    out.resize(start + HEADER_LEN, 0);
    Ok(start)
}

/// Finish the frame begun at `start`: everything after its header is the payload. Pads the
/// payload, writes the header and returns the payload's range; on error `out` is cut back.
pub fn end_frame(ty: FrameType, start: usize, out: &mut AlignedVec) -> Result<Range<usize>, EncodeError> {
    let body = start + HEADER_LEN;
    if !start.is_multiple_of(ALIGN) || out.len() < body {
        return Err(EncodeError::UnalignedOutput { len: start });
    }
    let len = out.len() - body;
    if len > PAYLOAD_LIMIT as usize {
        out.resize(start, 0);
        return Err(EncodeError::PayloadTooLarge { len, max: PAYLOAD_LIMIT });
    }
    let header = FrameHeader { ty, len: len as u32 }.to_bytes();
    out[start..body].copy_from_slice(&header);
    out.resize(body + padded(len), 0);
    Ok(body..body + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_type_byte_round_trips_and_rejects_the_rest() {
        for ty in FrameType::ALL {
            assert_eq!(FrameType::try_from(ty as u8), Ok(ty));
        }
        for b in [0u8, 12, 0x7f, 0xff] {
            assert_eq!(FrameType::try_from(b), Err(DecodeError::UnknownFrameType { found: b }));
        }
    }

    #[test]
    fn header_round_trips_and_every_frame_is_a_multiple_of_16() {
        for len in [0u32, 1, 15, 16, 17, 4096] {
            let h = FrameHeader { ty: FrameType::Ping, len };
            assert_eq!(FrameHeader::parse(&h.to_bytes(), u32::MAX), Ok(h));
            assert_eq!(h.frame_len() % ALIGN, 0);
        }
    }

    #[test]
    fn encoding_into_unaligned_output_is_refused_and_leaves_it_alone() {
        let mut out: AlignedVec = AlignedVec::new();
        out.extend_from_slice(&[1, 2, 3]);
        let err = encode_frame(FrameType::End, b"x", &mut out).unwrap_err();
        assert!(matches!(err, EncodeError::UnalignedOutput { len: 3 }));
        assert_eq!(out.as_slice(), &[1, 2, 3]);
    }

    #[test]
    fn record_payload_starts_right_after_the_header() {
        let mut out: AlignedVec = AlignedVec::new();
        let r = encode_record(&[Value::U64(7)], &mut out).unwrap();
        assert_eq!(r.start, HEADER_LEN);
        assert_eq!(out.len(), HEADER_LEN + padded(r.len()));
        let rec = dirigo_actors::record::access(&out[r]).unwrap();
        assert_eq!(rec.fields[0].as_u64(), Some(7));
    }
}
