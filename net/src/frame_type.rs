//! What a frame carries: [`FrameType`], the frame header's type byte.

/// What a frame carries. Zero is not a frame type, so a zeroed header never decodes.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// A batch of records (see [`crate::batch`]).
    Data = 1,
    /// One record archive.
    Record = 2,
    /// Event time has advanced on the sender's channel.
    Watermark = 3,
    /// The sender's channel is finished.
    End = 4,
    /// The receiver grants the sender credit (backpressure).
    Credit = 5,
    /// First frame on a link: who the peer is.
    Hello = 6,
    /// The peer reports an error before closing.
    Error = 7,
    /// Liveness probe.
    Ping = 8,
    /// Answer to a [`FrameType::Ping`].
    Pong = 9,
    /// A link handshake's answer to the peer's challenge: a MAC that proves the sender holds the
    /// cluster secret.
    Proof = 10,
    /// A message between two nodes' controllers, numbered in a link's sequence.
    Control = 11,
}

impl FrameType {
    /// Every frame type, in wire order.
    pub const ALL: [FrameType; 11] = [
        FrameType::Data,
        FrameType::Record,
        FrameType::Watermark,
        FrameType::End,
        FrameType::Credit,
        FrameType::Hello,
        FrameType::Error,
        FrameType::Ping,
        FrameType::Pong,
        FrameType::Proof,
        FrameType::Control,
    ];
}
