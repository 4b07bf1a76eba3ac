//! Why links fail: [`LinkFault`] is what broke one connection or the link protocol on it (a lost
//! connection is re-established; a protocol fault is fatal), and [`LinkError`] is why a node's
//! links failed as a whole, which the engine reports.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::wire::WireError;
use crate::{DecodeError, FrameType};

/// A node as a link names it: `node b (127.0.0.1:7102)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub address: SocketAddr,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} ({})", self.id, self.address)
    }
}

/// Which half of a link, seen from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The outbound link: this node sends to the peer.
    To,
    /// The inbound link: the peer sends to this node.
    From,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::To => "to",
            Direction::From => "from",
        })
    }
}

/// What broke one connection of a link, or the protocol on it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LinkFault {
    /// The socket failed.
    #[error("{0}")]
    Io(Arc<std::io::Error>),
    /// The peer closed the connection.
    #[error("closed by the peer")]
    Closed,
    /// The peer closed the connection during the handshake.
    #[error("connection closed during the handshake")]
    ClosedInHandshake,
    /// The sender closed the connection without saying goodbye.
    #[error("closed without a goodbye")]
    NoGoodbye,
    /// Bytes that are not a frame.
    #[error("{0}")]
    Frame(#[from] DecodeError),
    /// A frame whose payload is malformed.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// Data frame `seq` failed to decode.
    #[error("frame {seq}: {source}")]
    Batch { seq: u64, source: WireError },
    /// A frame of a type this side of the link does not take (`want`: the one it waited for).
    #[error("{}", unexpected(*want, *got))]
    Unexpected { want: Option<FrameType>, got: FrameType },
    /// A frame or goodbye numbered out of sequence.
    #[error("{what} numbered {seq} while {expected} was expected")]
    Sequence { what: &'static str, seq: u64, expected: u64 },
    /// A batch beyond the credit its receiving shard granted.
    #[error("shard {from} sent to shard {to} beyond its credit")]
    Credit { from: u16, to: u16 },
    /// Dropped on purpose by the test hook `DIRIGO_TEST_DROP_LINK`.
    #[error("dropped by the test hook DIRIGO_TEST_DROP_LINK")]
    TestDrop,
}

fn unexpected(want: Option<FrameType>, got: FrameType) -> String {
    match want {
        Some(want) => format!("expected a {want:?} frame, got {got:?}"),
        None => format!("unexpected {got:?} frame"),
    }
}

impl From<std::io::Error> for LinkFault {
    fn from(e: std::io::Error) -> Self {
        LinkFault::Io(Arc::new(e))
    }
}

/// Why a node's links failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LinkError {
    /// The node cannot listen for its peers.
    #[error("node {node}: cannot listen on {address}: {source}")]
    Listen {
        node: String,
        address: SocketAddr,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Some links were not up within `connect_timeout`.
    #[error("the cluster did not come up within {timeout:?}: {}", missing(no_link_to, not_connected))]
    Startup {
        timeout: Duration,
        /// Peers this node could not link to.
        no_link_to: Vec<Peer>,
        /// Peers that have not linked to this node.
        not_connected: Vec<Peer>,
    },
    /// The listener stopped accepting.
    #[error("listener: {0}")]
    Listener(Arc<std::io::Error>),
    /// A link thread could not be started.
    #[error("cannot start a link thread: {0}")]
    Thread(Arc<std::io::Error>),
    /// A peer runs another cluster config (its handshake carries another fingerprint).
    #[error("{peer} runs a different cluster config ([[node]] list or mailbox_batches)")]
    ConfigMismatch { peer: Peer },
    /// A peer broke the link protocol: not retried.
    #[error("link {direction} {peer}: {fault}")]
    Protocol { peer: Peer, direction: Direction, fault: LinkFault },
    /// A link was lost and not re-established within `reconnect_timeout`.
    #[error("link {direction} {peer} lost: {fault}; not re-established within {within:?}")]
    NotReestablished { peer: Peer, direction: Direction, fault: LinkFault, within: Duration },
}

fn missing(no_link_to: &[Peer], not_connected: &[Peer]) -> String {
    let to = no_link_to.iter().map(|p| format!("no link to {p} (is it running?)"));
    let from = not_connected.iter().map(|p| format!("{p} has not connected to this node"));
    to.chain(from).collect::<Vec<_>>().join("; ")
}
