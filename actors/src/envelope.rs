//! The fixed-size header every message carries; the payload is an rkyv archive beside it.

use crate::ids::{AppId, FunctionId};

/// What a message is. Data flows through functions; the rest is control that travels on the same
/// channels, in order with data.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// A record for the target function.
    Data = 0,
    /// Event time has reached `event_time` on this channel.
    Watermark = 1,
    /// The channel is finished: nothing more will follow on it.
    End = 2,
    // Dual-mode protocol (between a lessor's shard and a lessee's shard; never crosses a
    // function edge). `aux` carries the forward's sequence number where there is one.
    /// Open a lessee slot of `function` for the lessor on `from_shard`.
    Lease = 3,
    /// A regular message offered to a lessee (payload: the record), sequence `aux`.
    Forward = 4,
    /// The lessee took forward `aux`.
    Accept = 5,
    /// The lessee hands forward `aux` back: the lessor runs it.
    Refuse = 6,
    /// A barrier reached the lessor: ship the partial.
    Block = 7,
    /// A lessee's partial state (payload: its rkyv archive), for the barrier in `event_time`.
    Partial = 8,
    /// The barrier in `event_time` completed: forwarding may resume.
    Unblock = 9,
    /// Leave: ship the partial, hand back what was accepted and not run.
    Retire = 10,
    /// An accepted message the retiring lessee did not run (payload: the record).
    Returned = 11,
    /// The lessee's last partial (payload); the slot is gone.
    Retired = 12,
}

impl MessageKind {
    /// Whether this is a dual-mode protocol message (handled on arrival, not queued).
    #[inline]
    pub fn is_protocol(self) -> bool {
        self as u8 >= MessageKind::Lease as u8
    }
}

/// Envelope header: routing, ordering and timing of one message. 48 bytes, `Copy`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Hash of the partitioning key (0 for unkeyed messages).
    pub key_hash: u64,
    /// Ingress time (ns since the engine's epoch), stamped at the source.
    pub ingress_ns: u64,
    /// Deadline (ns since the engine's epoch): ingress + the app's SLO, inherited by children.
    pub deadline_ns: u64,
    /// Event time in ms (the app's `event_time` field, or the ingress time in ms).
    pub event_time: u64,
    /// Per-channel sequence number (sender shard -> receiver shard), for invariant checks.
    pub seq: u32,
    /// Owning app.
    pub app: AppId,
    /// Target function.
    pub function: FunctionId,
    /// Input port of the target function (0, or 1 for a join's right input).
    pub port: u8,
    /// Message kind.
    pub kind: MessageKind,
    /// Shard that sent the message (the channel it arrived on).
    pub from_shard: u16,
    /// Argument of a protocol message (a forward's sequence number); 0 otherwise. Fills what
    /// would be padding: the header stays 48 bytes.
    pub aux: u32,
}

const _: () = assert!(std::mem::size_of::<Header>() == 48);

impl Header {
    /// A data header for `function` of `app`.
    pub fn data(app: AppId, function: FunctionId, key_hash: u64) -> Self {
        Header {
            key_hash,
            ingress_ns: 0,
            deadline_ns: u64::MAX,
            event_time: 0,
            seq: 0,
            app,
            function,
            port: 0,
            kind: MessageKind::Data,
            from_shard: 0,
            aux: 0,
        }
    }
}
