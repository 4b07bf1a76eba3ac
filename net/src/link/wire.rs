//! What crosses a node link, inside `dirigo-net` frames (16-byte header, payload padded to 16):
//!
//! - The handshake (`handshake.rs`), before anything else:
//!   - `Hello` (both ways): `fingerprint u64, from u32, to u32, epoch u64, nonce [32],
//!     incarnation u64, running u64`. `epoch` is the sender's clock epoch as Unix time (ns): the
//!     receiver shifts the ingress times and deadlines of what arrives into its own epoch.
//!     `nonce` is the sender's fresh challenge. `incarnation` names the sender's process (a
//!     restarted node has a new one); `running` (0 or 1) says it has joined its cluster and may
//!     have sent or run data: see `Shared::meet` in the link module.
//!   - `Proof` (dialer to acceptor, then acceptor to dialer): `proof [32], next u64`: the
//!     sender's HMAC of the handshake ([`super::auth`]); the acceptor's `next` is the next link
//!     sequence number it expects (the dialer's is 0).
//!   - `Error` (acceptor to dialer, then it closes): `reason u32, 0 u32`: a [`Refusal`].
//! - `Data` (dialer to acceptor): one mailbox batch. `seq u64, from u16, to u16, count u32`,
//!   then `count` entries: the 48-byte envelope header with the payload length in its
//!   last 4 bytes, then the payload (an rkyv archive) padded to 16.
//! - `Credit` (acceptor to dialer): `next u64, count u32, 0 u32`, then per channel of the link
//!   `consumed u64`: batches of the channel the receiving shard has finished with. Both numbers
//!   are cumulative, so a lost credit frame is superseded by the next one.
//! - `End` (dialer to acceptor): goodbye, `seq u64`: it takes the next link sequence number,
//!   so its acknowledgement says it arrived. Everything before it has been acknowledged.
//! - `Control` (dialer to acceptor): `seq u64, tag u32, count u32, epoch u64, 0 u64`, then
//!   `count` values (u64, at most [`MAX_CONTROL_VALUES`]): a [`Control`] message between the two
//!   nodes' controllers, numbered in the link's sequence like a batch (so it is acknowledged,
//!   sent again after a reconnect, and kept in order with the data).
//!
//! Every field is little-endian. Bytes from a peer are checked here, at the trust boundary:
//! ranges, kinds, ids against the plan, and each data payload as a record archive.

use crate::frame::{begin_frame, end_frame};
use crate::{EncodeError, FrameType};
use dirigo_actors::envelope::{Header, MessageKind};
use dirigo_actors::record;
use rkyv::util::AlignedVec;

use super::auth::{Nonce, Proof, PROOF_LEN};
use crate::mailbox::Batch;

/// Length of an encoded envelope header (payload length included).
const ENTRY_HEADER: usize = 48;
/// Length of a batch's or a credit frame's prefix.
const PREFIX: usize = 16;

/// A `Hello` frame's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Hash of the node list: peers with different cluster configs refuse each other.
    pub fingerprint: u64,
    pub from: u32,
    pub to: u32,
    /// The sender's clock epoch, ns since the Unix epoch.
    pub epoch: u64,
    /// The sender's challenge: the other side's proof must cover it.
    pub nonce: Nonce,
    /// The sender's process: a restarted node has a new incarnation.
    pub incarnation: u64,
    /// The sender has joined its cluster (it may have sent or run data).
    pub running: bool,
}

/// Values a [`Control`] message may carry.
pub const MAX_CONTROL_VALUES: usize = 1024;

/// A message between two nodes' controllers: what it means is theirs (tag 0 is the links'
/// own: a node's "ready" at startup).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    pub tag: u32,
    pub epoch: u64,
    pub values: Vec<u64>,
}

impl Control {
    /// Append as Control frame number `seq`.
    pub fn encode(&self, seq: u64, out: &mut AlignedVec) -> Result<(), EncodeError> {
        let start = begin_frame(out)?;
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&self.tag.to_le_bytes());
        out.extend_from_slice(&(self.values.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        for v in &self.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        end_frame(FrameType::Control, start, out).map(|_| ())
    }

    /// Decode a Control payload: its sequence number and the message.
    pub fn decode(p: &[u8]) -> Result<(u64, Control), WireError> {
        const HEAD: usize = 32;
        if p.len() < HEAD {
            return Err(WireError::Short { what: "control", len: p.len() });
        }
        let count = u32_at(p, 12) as usize;
        if count > MAX_CONTROL_VALUES {
            return Err(WireError::TooMany { what: "control values", count: count as u32 });
        }
        if p.len() < HEAD + count * 8 {
            return Err(WireError::Short { what: "control", len: p.len() });
        }
        let values = (0..count).map(|i| u64_at(p, HEAD + i * 8)).collect();
        Ok((u64_at(p, 0), Control { tag: u32_at(p, 8), epoch: u64_at(p, 16), values }))
    }
}

/// A `Proof` frame's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProofFrame {
    /// The sender's MAC of the handshake's transcript.
    pub proof: Proof,
    /// Acceptor: the next link sequence number it expects; dialer: 0.
    pub next: u64,
}

/// Why an acceptor refused a connection (the payload of a link's `Error` frame). Not
/// authenticated: a dialer reports it, and tries again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The dialer's proof does not verify with the acceptor's secret.
    #[error("it does not accept this node's proof: the two nodes hold different cluster secrets")]
    BadProof,
    /// The hello names another node than the acceptor, or a sender it has no link from.
    #[error("the hello names another node, or a sender it has no link from")]
    NotAddressed,
    /// The acceptor will not link with the dialer's incarnation: the dialer ran with a previous
    /// incarnation of the acceptor (or of its cluster), and rolls back when it learns so.
    #[error("it has restarted since this node joined the cluster: this node's run is stale")]
    Stale,
    /// A reason this build does not know.
    #[error("reason {0}")]
    Unknown(u32),
}

impl Refusal {
    fn code(self) -> u32 {
        match self {
            Refusal::BadProof => 1,
            Refusal::NotAddressed => 2,
            Refusal::Stale => 3,
            Refusal::Unknown(code) => code,
        }
    }

    /// Append as an `Error` frame to `out`.
    pub fn encode(self, out: &mut AlignedVec) -> Result<(), EncodeError> {
        let mut payload = [0; 8];
        payload[..4].copy_from_slice(&self.code().to_le_bytes());
        crate::encode_frame(FrameType::Error, &payload, out).map(|_| ())
    }

    /// Decode an `Error` payload.
    pub fn decode(p: &[u8]) -> Result<Refusal, WireError> {
        if p.len() < 4 {
            return Err(WireError::Short { what: "refusal", len: p.len() });
        }
        Ok(match u32_at(p, 0) {
            1 => Refusal::BadProof,
            2 => Refusal::NotAddressed,
            3 => Refusal::Stale,
            code => Refusal::Unknown(code),
        })
    }
}

/// Something wrong in what a peer sent.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("a {what} frame of {len} bytes is too short")]
    Short { what: &'static str, len: usize },
    #[error("entry {index}: {fault}")]
    Entry { index: u32, fault: EntryFault },
    #[error("batch from shard {from} to shard {to} is not a channel of this link")]
    Channel { from: u16, to: u16 },
    #[error("{count} {what}: at most {MAX_CONTROL_VALUES}")]
    TooMany { what: &'static str, count: u32 },
}

/// What is wrong with one envelope of a Data frame.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryFault {
    #[error("truncated header")]
    TruncatedHeader,
    #[error("unknown message kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("app {app} function {function} port {port} out of range")]
    OutOfRange { app: u16, function: u16, port: u8 },
    #[error("from shard {claimed} in a batch from shard {sender}")]
    WrongSender { claimed: u16, sender: u16 },
    #[error("payload of {len} bytes truncated")]
    TruncatedPayload { len: usize },
    #[error("payload is not a valid record: {0}")]
    NotARecord(Box<record::RecordError>),
}

impl Hello {
    /// Append as a frame to `out`.
    pub fn encode(&self, out: &mut AlignedVec) -> Result<(), EncodeError> {
        let start = begin_frame(out)?;
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        out.extend_from_slice(&self.from.to_le_bytes());
        out.extend_from_slice(&self.to.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.incarnation.to_le_bytes());
        out.extend_from_slice(&u64::from(self.running).to_le_bytes());
        end_frame(FrameType::Hello, start, out).map(|_| ())
    }

    /// Decode a `Hello` payload.
    pub fn decode(p: &[u8]) -> Result<Hello, WireError> {
        if p.len() < 24 + PROOF_LEN + 16 {
            return Err(WireError::Short { what: "hello", len: p.len() });
        }
        let (fingerprint, from, to, epoch) = (u64_at(p, 0), u32_at(p, 8), u32_at(p, 12), u64_at(p, 16));
        let nonce = p[24..24 + PROOF_LEN].try_into().expect("a nonce");
        let (incarnation, running) = (u64_at(p, 24 + PROOF_LEN), u64_at(p, 32 + PROOF_LEN) != 0);
        Ok(Hello { fingerprint, from, to, epoch, nonce, incarnation, running })
    }
}

impl ProofFrame {
    /// Append as a frame to `out`.
    pub fn encode(&self, out: &mut AlignedVec) -> Result<(), EncodeError> {
        let start = begin_frame(out)?;
        out.extend_from_slice(&self.proof);
        out.extend_from_slice(&self.next.to_le_bytes());
        end_frame(FrameType::Proof, start, out).map(|_| ())
    }

    /// Decode a `Proof` payload.
    pub fn decode(p: &[u8]) -> Result<ProofFrame, WireError> {
        if p.len() < PROOF_LEN + 8 {
            return Err(WireError::Short { what: "proof", len: p.len() });
        }
        let proof = p[..PROOF_LEN].try_into().expect("a proof");
        Ok(ProofFrame { proof, next: u64_at(p, PROOF_LEN) })
    }
}

/// Append `batch` as Data frame number `seq` of channel `from -> to`. Hot path: copies the
/// headers and payload bytes, allocates only if `out` must grow.
pub fn encode_batch(seq: u64, from: u16, to: u16, batch: &Batch, out: &mut AlignedVec) -> Result<(), EncodeError> {
    let start = begin_frame(out)?;
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&from.to_le_bytes());
    out.extend_from_slice(&to.to_le_bytes());
    out.extend_from_slice(&(batch.entries.len() as u32).to_le_bytes());
    for e in &batch.entries {
        let h = &e.header;
        out.extend_from_slice(&h.key_hash.to_le_bytes());
        out.extend_from_slice(&h.ingress_ns.to_le_bytes());
        out.extend_from_slice(&h.deadline_ns.to_le_bytes());
        out.extend_from_slice(&h.event_time.to_le_bytes());
        out.extend_from_slice(&h.seq.to_le_bytes());
        out.extend_from_slice(&h.app.to_le_bytes());
        out.extend_from_slice(&h.function.to_le_bytes());
        out.extend_from_slice(&[h.port, h.kind as u8]);
        out.extend_from_slice(&h.from_shard.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
        out.extend_from_slice(batch.payload(e.off, e.len));
        let end = out.len().next_multiple_of(16);
        out.resize(end, 0);
    }
    end_frame(FrameType::Data, start, out).map(|_| ())
}

/// The sequence number of a goodbye (`End`) payload.
pub fn goodbye_seq(p: &[u8]) -> Result<u64, WireError> {
    match p.len() < 8 {
        true => Err(WireError::Short { what: "goodbye", len: p.len() }),
        false => Ok(u64_at(p, 0)),
    }
}

/// The prefix of a Data payload: `(seq, from, to)`.
pub fn batch_prefix(p: &[u8]) -> Result<(u64, u16, u16), WireError> {
    if p.len() < PREFIX {
        return Err(WireError::Short { what: "data", len: p.len() });
    }
    Ok((u64_at(p, 0), u16_at(p, 8), u16_at(p, 10)))
}

/// Ids a received envelope may carry: the plan's sizes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub apps: u16,
    pub functions: u16,
}

/// `t` (ns in the sender's epoch) in the receiver's epoch, `shift` = sender's epoch minus the
/// receiver's; "never" (`u64::MAX`) stays never.
#[inline]
pub fn shift_time(t: u64, shift: i64) -> u64 {
    match t {
        u64::MAX => u64::MAX,
        t => (t as i128 + shift as i128).clamp(0, u64::MAX as i128 - 1) as u64,
    }
}

/// Decode a Data payload into `batch` (cleared first), checking every envelope: its kind, its
/// ids against `limits`, that it comes from the frame's sender shard, its bounds, and each data
/// payload as a record archive; times are shifted by `shift` ns into this node's epoch. Hot
/// path on the receiving node.
pub fn decode_batch(p: &[u8], limits: Limits, shift: i64, batch: &mut Batch) -> Result<(), WireError> {
    batch.clear();
    let (_, from, _) = batch_prefix(p)?;
    let count = u32_at(p, 12);
    let mut at = PREFIX;
    for index in 0..count {
        let bad = |fault: EntryFault| WireError::Entry { index, fault };
        let h = p.get(at..at + ENTRY_HEADER).ok_or_else(|| bad(EntryFault::TruncatedHeader))?;
        let kind = match h[41] {
            0 => MessageKind::Data,
            1 => MessageKind::Watermark,
            2 => MessageKind::End,
            20 => MessageKind::Snapshot,
            kind => return Err(bad(EntryFault::UnknownKind { kind })),
        };
        let header = Header {
            key_hash: u64_at(h, 0),
            ingress_ns: shift_time(u64_at(h, 8), shift),
            deadline_ns: shift_time(u64_at(h, 16), shift),
            event_time: u64_at(h, 24),
            seq: u32_at(h, 32),
            app: u16_at(h, 36),
            function: u16_at(h, 38),
            port: h[40],
            kind,
            from_shard: u16_at(h, 42),
            // The header's last 4 bytes carry the payload length on the wire; `aux` is only
            // used by dual-mode protocol messages, which never leave their node (lessees stay on
            // their lessor's node), and their kinds are refused above.
            aux: 0,
        };
        if header.app >= limits.apps || header.function >= limits.functions || header.port > 1 {
            let (app, function, port) = (header.app, header.function, header.port);
            return Err(bad(EntryFault::OutOfRange { app, function, port }));
        }
        if header.from_shard != from {
            return Err(bad(EntryFault::WrongSender { claimed: header.from_shard, sender: from }));
        }
        let len = u32_at(h, 44) as usize;
        let body = at + ENTRY_HEADER;
        let payload = p.get(body..body + len).ok_or_else(|| bad(EntryFault::TruncatedPayload { len }))?;
        if kind == MessageKind::Data {
            record::access(payload).map_err(|e| bad(EntryFault::NotARecord(Box::new(e))))?;
        }
        batch.push_bytes(header, payload);
        at = body + len.next_multiple_of(16);
    }
    Ok(())
}

/// Append a Credit frame: the next sequence expected and every channel's consumed count.
pub fn encode_credit(next: u64, consumed: &[u64], out: &mut AlignedVec) -> Result<(), EncodeError> {
    let start = begin_frame(out)?;
    out.extend_from_slice(&next.to_le_bytes());
    out.extend_from_slice(&(consumed.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for c in consumed {
        out.extend_from_slice(&c.to_le_bytes());
    }
    end_frame(FrameType::Credit, start, out).map(|_| ())
}

/// Decode a Credit payload: the next sequence expected, and each channel's consumed count.
pub fn decode_credit(p: &[u8]) -> Result<(u64, impl Iterator<Item = u64> + '_), WireError> {
    if p.len() < PREFIX {
        return Err(WireError::Short { what: "credit", len: p.len() });
    }
    let count = u32_at(p, 8) as usize;
    if p.len() < PREFIX + count * 8 {
        return Err(WireError::Short { what: "credit", len: p.len() });
    }
    Ok((u64_at(p, 0), (0..count).map(move |i| u64_at(p, PREFIX + i * 8))))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FrameDecoder;
    use dirigo_actors::record::{archive_values_into, Value};

    #[test]
    fn a_batch_round_trips_and_a_bad_one_is_refused() {
        let mut b = Batch::with_capacity(4);
        let mut rec = AlignedVec::new();
        archive_values_into(&[Value::U64(7), Value::Str("x".into())], &mut rec);
        let mut h = Header::data(0, 1, 99);
        h.from_shard = 3;
        h.seq = 5;
        b.push_bytes(h, &rec);
        h.kind = MessageKind::End;
        b.push_bytes(h, &[]);
        let mut out = AlignedVec::new();
        encode_batch(12, 3, 0, &b, &mut out).unwrap();
        let mut d = FrameDecoder::default();
        d.feed(&out).unwrap();
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(batch_prefix(f.payload).unwrap(), (12, 3, 0));
        let mut got = Batch::default();
        decode_batch(f.payload, Limits { apps: 1, functions: 2 }, 0, &mut got).unwrap();
        assert_eq!(got.entries.len(), 2);
        assert_eq!(got.entries[0].header, b.entries[0].header);
        assert_eq!(got.payload(got.entries[0].off, got.entries[0].len), &rec[..]);
        assert_eq!(got.entries[1].header.kind, MessageKind::End);
        let err = decode_batch(f.payload, Limits { apps: 1, functions: 1 }, 0, &mut got).unwrap_err();
        assert!(matches!(err, WireError::Entry { index: 0, .. }), "{err}");
    }

    #[test]
    fn times_shift_into_the_receivers_epoch() {
        assert_eq!(shift_time(1_000, 500), 1_500);
        assert_eq!(shift_time(1_000, -400), 600);
        assert_eq!(shift_time(1_000, -4_000), 0);
        assert_eq!(shift_time(u64::MAX, -4_000), u64::MAX);
    }

    #[test]
    fn credit_and_handshake_frames_round_trip() {
        let mut out = AlignedVec::new();
        encode_credit(9, &[1, 2, 3], &mut out).unwrap();
        let hello = Hello { fingerprint: 5, from: 1, to: 2, epoch: 123, nonce: [9; 32], incarnation: 4, running: true };
        hello.encode(&mut out).unwrap();
        let control = Control { tag: 3, epoch: 17, values: vec![1, 2, 5] };
        control.encode(41, &mut out).unwrap();
        let proof = ProofFrame { proof: [7; 32], next: 77 };
        proof.encode(&mut out).unwrap();
        Refusal::BadProof.encode(&mut out).unwrap();
        let mut d = FrameDecoder::default();
        d.feed(&out).unwrap();
        let f = d.next_frame().unwrap().unwrap();
        let (next, consumed) = decode_credit(f.payload).unwrap();
        assert_eq!((next, consumed.collect::<Vec<_>>()), (9, vec![1, 2, 3]));
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(Hello::decode(f.payload).unwrap(), hello);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!((f.ty, Control::decode(f.payload).unwrap()), (FrameType::Control, (41, control)));
        let mut many = vec![0u8; 32];
        many[12..16].copy_from_slice(&(MAX_CONTROL_VALUES as u32 + 1).to_le_bytes());
        assert!(matches!(Control::decode(&many), Err(WireError::TooMany { .. })), "too many values");
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!((f.ty, ProofFrame::decode(f.payload).unwrap()), (FrameType::Proof, proof));
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!((f.ty, Refusal::decode(f.payload).unwrap()), (FrameType::Error, Refusal::BadProof));
        assert!(Hello::decode(&[0; 32]).is_err(), "a hello without a nonce");
    }
}
