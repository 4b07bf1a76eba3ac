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
    // Key-group migration (between the shards of one node; see the engine's `shard::migrate`).
    // The argument ([`ProtocolArg::Move`]) names the group and a shard.
    /// Old owner -> new owner: the group is coming; hold the function's input until it is here.
    Migrate = 13,
    /// New owner -> old owner: not now (a migration of the same function is under way there).
    MigrateRefused = 14,
    /// New owner -> every shard of the node: the group is routed to the new owner from now on;
    /// answer the old owner (`shard`) with a `FenceAck` behind what was routed to it before.
    Fence = 15,
    /// A shard -> the old owner, on the channel its data travelled: nothing more of the group
    /// follows. Queued in order with the function's data, not handled on arrival.
    FenceAck = 16,
    /// Old owner -> new owner: the group's state (payload: its rkyv archive); `key_hash`
    /// carries how many `Drained` answers the new owner waits for.
    MigrateState = 17,
    /// Old owner -> what runs after the function: the group's outputs made before the move are
    /// ahead of this. Queued in order with the target's messages; `key_hash` carries the old
    /// owner and the moving function (`shard | function << 16`).
    Drain = 18,
    /// -> new owner: a `Drain` reached its turn (the old owner's outputs of the group are
    /// applied, or queued on a shard where the new owner's will queue behind them).
    Drained = 19,
    /// Snapshot barrier `event_time` (its epoch): everything before it on this channel belongs
    /// to the snapshot, everything after to the next. Flows along function edges like a
    /// watermark, in order with data; an instance aligns it across its input channels (see the
    /// engine's `shard::snapshot`).
    Snapshot = 20,
}

impl MessageKind {
    /// Whether this is a protocol message handled on arrival (dual-mode, migration), not queued
    /// in order with data (as data, watermarks, ends and fence acknowledgements are).
    #[inline]
    pub fn is_protocol(self) -> bool {
        (MessageKind::Lease as u8..=MessageKind::Drained as u8).contains(&(self as u8)) && !self.is_queued_control()
    }

    /// A control message queued in order with a function's data (not handled on arrival).
    #[inline]
    pub fn is_queued_control(self) -> bool {
        matches!(self, MessageKind::FenceAck | MessageKind::Drain)
    }

    /// Whether this is a message of the migration protocol.
    #[inline]
    pub fn is_migration(self) -> bool {
        (MessageKind::Migrate as u8..=MessageKind::Drained as u8).contains(&(self as u8))
    }

    /// Whether this is a control message that flows along function edges in order with data
    /// (watermark, end, snapshot barrier): every instance downstream receives it on every
    /// input channel.
    #[inline]
    pub fn is_edge_control(self) -> bool {
        matches!(self, MessageKind::Watermark | MessageKind::End | MessageKind::Snapshot)
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
    /// Event time in ms (the app's `event_time` field, or the ingress time in ms) of data, and
    /// the watermark of a watermark. A protocol message carries its argument here instead: read
    /// and write it only through [`Header::arg`] and [`Header::protocol`].
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
    /// A protocol message's forward sequence number (see [`Header::arg`]); 0 otherwise. Fills
    /// what would be padding: the header stays 48 bytes.
    pub aux: u32,
}

const _: () = assert!(std::mem::size_of::<Header>() == 48);

/// One envelope inside a batch: its header and its payload's byte range in the batch's bytes.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub header: Header,
    pub off: u32,
    pub len: u32,
}

impl Entry {
    /// Its payload, in `bytes` (the batch's).
    #[inline(always)]
    pub fn payload<'b>(&self, bytes: &'b [u8]) -> &'b [u8] {
        &bytes[self.off as usize..(self.off + self.len) as usize]
    }
}

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

    /// A dual-mode protocol message of `kind` with its argument, on top of `base` (its app,
    /// function, key and times). The argument must be the one `kind` takes (see [`ProtocolArg`]).
    pub fn protocol(base: Header, kind: MessageKind, arg: ProtocolArg) -> Header {
        debug_assert!(kind.is_protocol() || kind.is_migration(), "{kind:?} is not a protocol message");
        debug_assert_eq!(ProtocolArg::kind_of(kind), ProtocolArg::kind_of_arg(arg), "{kind:?} takes another argument");
        let mut h = Header { kind, ..base };
        match arg {
            ProtocolArg::None => {}
            ProtocolArg::Lease { at_ns } => h.event_time = at_ns,
            ProtocolArg::Seq(seq) => h.aux = seq,
            ProtocolArg::Barrier(barrier) => h.event_time = barrier,
            ProtocolArg::Move { group, shard } => h.aux = u32::from(group) | u32::from(shard) << 16,
        }
        h
    }

    /// The argument of a protocol message, by its kind ([`ProtocolArg::None`] for data, watermarks
    /// and ends).
    #[inline]
    pub fn arg(&self) -> ProtocolArg {
        match self.kind {
            MessageKind::Lease => ProtocolArg::Lease { at_ns: self.event_time },
            MessageKind::Forward | MessageKind::Accept | MessageKind::Refuse => ProtocolArg::Seq(self.aux),
            MessageKind::Block | MessageKind::Partial | MessageKind::Unblock => ProtocolArg::Barrier(self.event_time),
            k if k.is_migration() => ProtocolArg::Move { group: self.aux as u16, shard: (self.aux >> 16) as u16 },
            _ => ProtocolArg::None,
        }
    }

    /// The barrier a Block, Partial or Unblock belongs to.
    #[inline]
    pub fn barrier(&self) -> u64 {
        match self.arg() {
            ProtocolArg::Barrier(b) => b,
            other => panic!("a {:?} carries no barrier ({other:?})", self.kind),
        }
    }
}

/// What a dual-mode protocol message carries in its header besides routing, by kind. It shares
/// the header's slots with data's event time (and the padding), so a header stays 48 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolArg {
    /// Retire, Returned, Retired: nothing.
    None,
    /// Lease: when the lessor decided to lease (ns since the engine's epoch), from which the
    /// scale-up reaction is measured.
    Lease { at_ns: u64 },
    /// Forward, Accept, Refuse: the forward's sequence number (low 32 bits; the lessor widens it).
    Seq(u32),
    /// Block, Partial, Unblock: the barrier it belongs to.
    Barrier(u64),
    /// Migrate, MigrateRefused, Fence, FenceAck, MigrateState: the key group, and a shard (the
    /// old owner in a Fence; the new one otherwise).
    Move { group: u16, shard: u16 },
}

impl ProtocolArg {
    /// Which argument `kind` takes (as a variant with zero values).
    fn kind_of(kind: MessageKind) -> ProtocolArg {
        Header { kind, event_time: 0, aux: 0, ..Header::data(0, 0, 0) }.arg()
    }

    fn kind_of_arg(arg: ProtocolArg) -> ProtocolArg {
        match arg {
            ProtocolArg::None => ProtocolArg::None,
            ProtocolArg::Lease { .. } => ProtocolArg::Lease { at_ns: 0 },
            ProtocolArg::Seq(_) => ProtocolArg::Seq(0),
            ProtocolArg::Barrier(_) => ProtocolArg::Barrier(0),
            ProtocolArg::Move { .. } => ProtocolArg::Move { group: 0, shard: 0 },
        }
    }
}

#[cfg(test)]
mod protocol_tests {
    use super::*;

    #[test]
    fn each_protocol_kind_carries_its_own_argument() {
        let base = Header { event_time: 77, ..Header::data(1, 2, 3) };
        let cases = [
            (MessageKind::Lease, ProtocolArg::Lease { at_ns: 123_456 }),
            (MessageKind::Forward, ProtocolArg::Seq(9)),
            (MessageKind::Accept, ProtocolArg::Seq(10)),
            (MessageKind::Refuse, ProtocolArg::Seq(11)),
            (MessageKind::Block, ProtocolArg::Barrier(5)),
            (MessageKind::Partial, ProtocolArg::Barrier(6)),
            (MessageKind::Unblock, ProtocolArg::Barrier(7)),
            (MessageKind::Retire, ProtocolArg::None),
            (MessageKind::Migrate, ProtocolArg::Move { group: 255, shard: 3 }),
            (MessageKind::Fence, ProtocolArg::Move { group: 65_535, shard: 65_535 }),
            (MessageKind::FenceAck, ProtocolArg::Move { group: 0, shard: 1 }),
            (MessageKind::MigrateState, ProtocolArg::Move { group: 7, shard: 0 }),
        ];
        for (kind, arg) in cases {
            let h = Header::protocol(base, kind, arg);
            assert_eq!((h.kind, h.arg()), (kind, arg));
            assert_eq!((h.app, h.function, h.key_hash), (1, 2, 3), "routing kept");
        }
        assert_eq!(Header::protocol(base, MessageKind::Block, ProtocolArg::Barrier(5)).barrier(), 5);
        assert_eq!(base.arg(), ProtocolArg::None, "data carries no protocol argument");
    }

    #[test]
    #[should_panic(expected = "carries no barrier")]
    fn a_forward_has_no_barrier() {
        Header::protocol(Header::data(0, 0, 0), MessageKind::Forward, ProtocolArg::Seq(1)).barrier();
    }
}
