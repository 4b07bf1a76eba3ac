//! Why links fail: [`LinkFault`] is what broke one connection or the link protocol on it (a lost
//! connection is re-established; a protocol fault is fatal), and [`LinkError`] is why a node's
//! links failed as a whole, which the engine reports.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::wire::{Refusal, WireError};
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
    /// The peer's process is not the one this node links with (see the link's `meet`).
    #[error("it runs with an earlier incarnation of this node, or this node with an earlier one of it")]
    Stale,
    /// Dropped on purpose by the test hook `DIRIGO_TEST_DROP_LINK`.
    #[error("dropped by the test hook DIRIGO_TEST_DROP_LINK")]
    TestDrop,
    /// The peer refused this node's handshake (its word for it: not authenticated).
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The peer's handshake proof does not verify: it does not hold this node's cluster secret,
    /// or it is not the node it claims to be. The connection is refused.
    #[error("its proof does not verify: it does not hold this node's cluster secret")]
    BadProof,
}

impl LinkFault {
    /// The fault is the handshake's authentication failing (either side's proof), not the
    /// network.
    pub fn is_authentication(&self) -> bool {
        matches!(self, LinkFault::Refused(Refusal::BadProof) | LinkFault::BadProof)
    }
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
        /// Peers this node could not link to, each with why its last attempt failed.
        no_link_to: Vec<Missing>,
        /// Peers that have not linked to this node, each with why its last attempt was refused
        /// (if one was).
        not_connected: Vec<Missing>,
    },
    /// Every link came up, but these peers did not say they were ready within `connect_timeout`.
    #[error("the cluster did not come up within {timeout:?}: {} linked but did not say it was ready", peers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    NotReady { timeout: Duration, peers: Vec<Peer> },
    /// A node with peers was started without the cluster secret its links prove.
    #[error("node {node}: a cluster of {nodes} nodes needs a cluster secret")]
    NoSecret { node: String, nodes: usize },
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
    /// A peer came back as a new process after this node had joined the cluster with its
    /// previous one: what the two exchanged is gone on its side.
    #[error("{peer} restarted (a new process) after this node joined the cluster with its previous one")]
    PeerRestarted { peer: Peer },
}

impl LinkError {
    /// The cluster lost a node while this one ran (it restarted, or its link did not come
    /// back): with snapshots, the node rolls back to the last global snapshot and joins again.
    pub fn is_node_lost(&self) -> bool {
        matches!(self, LinkError::PeerRestarted { .. } | LinkError::NotReestablished { .. })
    }
}

/// A link that did not come up, and why its last attempt failed, if one did.
#[derive(Clone, Debug)]
pub struct Missing {
    pub peer: Peer,
    pub last: Option<LinkFault>,
}

fn missing(no_link_to: &[Missing], not_connected: &[Missing]) -> String {
    let to = no_link_to.iter().map(|m| match &m.last {
        Some(f) if f.is_authentication() => format!("no link to {}: {f}", m.peer),
        Some(f) => format!("no link to {} (is it running? last attempt: {f})", m.peer),
        None => format!("no link to {} (is it running?)", m.peer),
    });
    let from = not_connected.iter().map(|m| match &m.last {
        Some(f) => format!("{} has not connected to this node (its last attempt was refused: {f})", m.peer),
        None => format!("{} has not connected to this node", m.peer),
    });
    to.chain(from).collect::<Vec<_>>().join("; ")
}
