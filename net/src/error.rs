//! Errors of the wire format: decoding a byte stream, encoding frames, validating payloads.

use dirigo_actors::record::RecordError;

use crate::frame_type::FrameType;

/// Why a byte stream is not a valid sequence of frames. Every variant is `Copy` and names the
/// offending value; after any of them the decoder refuses further input and the connection is
/// to be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header does not start with `b"DG"`: not a Dirigo stream, or the stream lost sync.
    #[error("bad frame magic {found:02x?}, expected \"DG\"")]
    BadMagic { found: [u8; 2] },
    /// The peer speaks a protocol version this build does not.
    #[error("unsupported wire version {found} (this build speaks {supported})")]
    UnsupportedVersion { found: u8, supported: u8 },
    /// The header's check word does not match its other 12 bytes.
    #[error("frame header check mismatch: found {found:#010x}, computed {computed:#010x}")]
    BadHeaderCheck { found: u32, computed: u32 },
    /// The frame type byte names no [`FrameType`].
    #[error("unknown frame type {found}")]
    UnknownFrameType { found: u8 },
    /// The reserved header word is not zero (version 1 gives it no meaning).
    #[error("reserved header word is {found:#010x}, must be zero")]
    ReservedNonzero { found: u32 },
    /// The declared payload length exceeds the decoder's configured maximum.
    #[error("frame declares {declared} payload bytes, the maximum is {max}")]
    Oversized { declared: u32, max: u32 },
    /// A padding byte after the payload is not zero.
    #[error("nonzero padding after a {ty:?} payload of {len} bytes")]
    NonzeroPadding { ty: FrameType, len: u32 },
    /// The stream ended inside a frame (`finish` with a partial frame buffered).
    #[error("stream ended inside a frame: {buffered} of at least {needed} bytes received")]
    Truncated { buffered: usize, needed: usize },
    /// `commit` was told more bytes than the receive window it handed out.
    #[error("committed {committed} bytes into a receive window of {window}")]
    WindowOverrun { committed: usize, window: usize },
}

/// Why a frame could not be encoded. The output buffer is left as it was before the call.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Frames must start 16-byte aligned: the output holds something other than whole frames.
    #[error("output buffer length {len} is not a multiple of 16: frames must start aligned")]
    UnalignedOutput { len: usize },
    /// The payload exceeds the wire format's limit.
    #[error("payload of {len} bytes exceeds the wire limit of {max}")]
    PayloadTooLarge { len: usize, max: u32 },
    /// rkyv failed to serialise the value.
    #[error("serialising the payload failed: {0}")]
    Serialize(rkyv::rancor::Error),
}

/// Why a frame's payload is not what its type promises. Raised at the trust boundary; after it,
/// payloads are read in place without further checks.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ValidateError {
    /// The payload does not start 16-byte aligned in memory (it did not come from a decoder).
    #[error("payload at address {addr:#x} is not 16-byte aligned")]
    Misaligned { addr: usize },
    /// The payload is not a valid archive of the expected type.
    #[error("invalid archive: {0}")]
    Archive(RecordError),
    /// A batch's layout is broken at byte `offset` of the payload.
    #[error("malformed record batch at byte {offset}: {what}")]
    Batch { offset: usize, what: BatchFault },
    /// Record `index` of a batch is not a valid record archive.
    #[error("record {index} of the batch is invalid: {source}")]
    BatchRecord { index: u32, source: RecordError },
}

/// What is wrong with a batch's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchFault {
    #[error("shorter than its 16-byte header")]
    MissingHeader,
    #[error("entry header runs past the payload")]
    EntryHeaderTruncated,
    #[error("record of {len} bytes runs past the payload")]
    RecordTruncated { len: u32 },
    #[error("reserved bytes are not zero")]
    ReservedNonzero,
    #[error("padding after a record is not zero")]
    NonzeroPadding,
    #[error("{extra} bytes follow the last of its records")]
    TrailingBytes { extra: usize },
}
