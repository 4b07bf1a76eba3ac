//! # dirigo-net: every path a message takes between threads and machines
//!
//! Shards talk only through this crate: bounded mailboxes between the cores of a node, framed
//! TCP links between nodes, and TCP ingress and egress with clients. The wire format is shared:
//! everything that crosses a socket is a sequence of **frames**, a 16-byte header then an rkyv
//! archive zero-padded to 16 bytes. A frame is checked before it is parsed, its payload is read
//! in place from a reused 16-aligned receive buffer, and archives from the network are validated
//! once, at this trust boundary; after that they are read without checks.
//!
//! Between shards:
//! - [`mailbox`]: [`mailbox::Batch`]es of envelopes on bounded single-producer/single-consumer
//!   rings ([`mailbox::Outbox`], [`mailbox::Inbox`]), emptied batches returning on a second ring;
//!   [`mailbox::Mesh`], a node's full mesh.
//! - [`signal`]: each shard's cache-padded load and sleep slot, and the doorbell that wakes it.
//! - [`clock`]: the time base every header time is in.
//!
//! Between nodes and with clients:
//! - [`link`]: node-to-node links: an outbound and an inbound thread per peer that carry the
//!   mailboxes crossing nodes, with credits, numbered frames and resend after a reconnect; each
//!   connection opens with a handshake in which both nodes prove they hold the cluster secret.
//! - [`tcp`]: tcp sources polled by their shard ([`tcp::TcpIngress`]), tcp sinks served by an
//!   edge thread ([`tcp::EgressHub`]), and the reference clients behind `dirigo send` and
//!   `dirigo tail`.
//! - [`ingress`]: the [`ingress::Ingress`] trait a shard polls socket sources through, and what
//!   a poll produces.
//!
//! The wire format (sans-I/O):
//! - [`frame`] and [`frame_type`]: the header layout, [`FrameType`], and the encoders
//!   ([`encode_frame`] copies a payload in; [`encode_archived`] and [`encode_record`] serialise
//!   straight into the output).
//! - [`decoder`]: [`FrameDecoder`], which turns byte chunks of any size into [`Frame`]s borrowed
//!   from its buffer, refusing bad or oversized headers before buffering their payload.
//! - [`batch`]: many records in one Data frame ([`BatchWriter`], [`validate_batch`]), each record
//!   archived once at its source and copied, never re-serialised, on the way.
//! - [`validate`]: [`validate_record`] and [`validate_archive`], the checked reads.
//! - [`error`]: [`DecodeError`] (cheap, `Copy`), [`EncodeError`], [`ValidateError`].
//!
//! ```
//! use dirigo_actors::record::Value;
//! use dirigo_net::{encode_frame, encode_record, validate_record, FrameDecoder, FrameType};
//! use rkyv::util::AlignedVec;
//!
//! // Sender: frames are appended to one reused, aligned output buffer.
//! let mut out = AlignedVec::new();
//! encode_record(&[Value::U64(42), Value::Str("bid".into())], &mut out)?;
//! encode_frame(FrameType::End, &[], &mut out)?;
//!
//! // Receiver: chunks of any size in, frames out, payloads read in place.
//! let mut decoder = FrameDecoder::default();
//! for chunk in out.chunks(7) {
//!     decoder.feed(chunk)?;
//! }
//! let frame = decoder.next_frame()?.expect("a whole frame was fed");
//! assert_eq!(frame.ty, FrameType::Record);
//! let record = validate_record(frame.payload)?;
//! assert_eq!(record.fields[0].as_u64(), Some(42));
//! assert_eq!(decoder.next_frame()?.map(|f| f.ty), Some(FrameType::End));
//! decoder.finish()?; // the stream ended at a frame boundary
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod batch;
pub mod clock;
pub mod decoder;
pub mod error;
pub mod frame;
pub mod frame_type;
pub mod ingress;
pub mod link;
pub mod mailbox;
pub mod signal;
pub mod tcp;
pub mod validate;

pub use batch::{validate_batch, BatchEntry, BatchWriter, ValidBatch};
pub use decoder::{Frame, FrameDecoder, DEFAULT_MAX_PAYLOAD};
pub use error::{BatchFault, DecodeError, EncodeError, ValidateError};
pub use frame::{encode_archived, encode_frame, encode_record, FrameHeader, FrameType};
pub use validate::{validate_archive, validate_record};
