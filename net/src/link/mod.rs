//! Multi-node clusters: the shards of every node form one global id space; a mailbox whose two
//! ends are on different nodes is cut in the middle by a framed TCP link.
//!
//! For each peer, a node runs an [`outbound`] link (a thread that consumes the rings of local
//! shards addressed to the peer's shards, frames each batch and writes it, within the credit the
//! peer granted) and an [`inbound`] link (a thread that validates the peer's frames and pushes
//! each batch into the ring of the local receiving shard, and grants credit as shards finish
//! with them). The shards' loop does not change: a remote shard's mailbox looks like a local
//! one. Links number their frames; a dropped link is re-established and the frames the peer has
//! not acknowledged are sent again, so nothing is lost or duplicated. Before a connection carries
//! anything, its two nodes prove to each other that they hold the cluster's [`Secret`].
//!
//! - [`wire`]: the frames of a link.
//! - [`auth`]: the secret and the proofs of the handshake; `handshake`: the handshake itself.
//! - [`error`]: why a connection or the node's links failed.
//! - [`outbound`], [`inbound`]: the two halves of a link, and the listener.
//! - [`Transport`]: starts every link of a node and waits for them (startup), then flushes,
//!   says goodbye and waits for the peers' goodbyes (shutdown).

pub mod auth;
pub mod error;
mod handshake;
pub mod inbound;
pub mod outbound;
pub mod wire;

pub use auth::{EmptySecret, Secret};
pub use error::{Direction, LinkError, LinkFault, Missing, Peer};
pub use wire::Control;

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use dirigo_actors::record::hash_bytes;

use crate::mailbox::{mailbox, Inbox, Mesh, Outbox};
use crate::signal::ShardSignal;

/// One node of the cluster.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: String,
    pub address: SocketAddr,
    /// Its shards' global ids.
    pub shards: Range<usize>,
}

/// Link settings.
#[derive(Clone, Copy, Debug)]
pub struct LinkSettings {
    pub connect_timeout: Duration,
    pub reconnect_timeout: Duration,
    /// Batches in flight per channel (sent and not yet finished with by the receiving shard):
    /// the credit window. The receiving ring holds this many.
    pub credits: usize,
    /// How long an idle outbound link polls before it parks.
    pub spin: Duration,
    /// Test hook: drop each outbound connection once, after this many data frames.
    pub drop_after: Option<u64>,
}

/// The cluster as one node sees it.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub nodes: Vec<NodeSpec>,
    /// This node's index in `nodes`.
    pub me: usize,
    pub settings: LinkSettings,
    /// The secret every node of the cluster holds; needed when there is more than one node.
    pub secret: Option<Secret>,
}

impl ClusterSpec {
    /// Total shards of the cluster.
    pub fn shards(&self) -> usize {
        self.nodes.iter().map(|n| n.shards.len()).sum()
    }

    /// This node's shards.
    pub fn local(&self) -> Range<usize> {
        self.nodes[self.me].shards.clone()
    }

    /// The node that runs global shard `s`.
    pub fn node_of(&self, s: usize) -> usize {
        self.nodes.iter().position(|n| n.shards.contains(&s)).expect("a shard of the cluster")
    }

    /// A hash of the node list and the credit window (the receiving rings are sized by the
    /// receiver's, the credit spent by the sender's): nodes started from different cluster
    /// configs refuse to link.
    pub fn fingerprint(&self) -> u64 {
        let mut text: String = self.nodes.iter().map(|n| format!("{}@{}:{:?};", n.id, n.address, n.shards)).collect();
        text += &format!("credits={}", self.settings.credits);
        hash_bytes(text.as_bytes())
    }

    /// Node `node` as links name it: `node b (127.0.0.1:7102)`.
    pub fn peer(&self, node: usize) -> Peer {
        Peer { id: self.nodes[node].id.clone(), address: self.nodes[node].address }
    }
}

/// Channel `from -> to` of the link from node `a` to node `b`: its index among the link's
/// channels (sender shards major).
pub fn channel_index(a: &NodeSpec, b: &NodeSpec, from: usize, to: usize) -> usize {
    (from - a.shards.start) * b.shards.len() + (to - b.shards.start)
}

/// The ends of the mailboxes that cross the link with one peer.
pub struct PeerEnds {
    /// Rings from local shards to the peer's shards, by channel index; the outbound link reads them.
    pub outgoing: Vec<Inbox>,
    /// Rings from the peer's shards to local shards, by channel index; the inbound link fills them.
    pub incoming: Vec<Outbox>,
    /// The outbound link's signal slot (local shards ring it when they send) and doorbell.
    pub signal: Arc<ShardSignal>,
    pub doorbell: crate::signal::Doorbell,
}

/// The mesh of this node's shards (indexed by global id; rows of remote shards are empty), and
/// for each peer (None for this node) the ends its links hold.
pub fn node_mesh(spec: &ClusterSpec, signals: &[Arc<ShardSignal>], apps: usize) -> (Mesh, Vec<Option<PeerEnds>>) {
    let n = spec.shards();
    let capacity = spec.settings.credits;
    let local = spec.local();
    let mut outboxes: Vec<Vec<Option<Outbox>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut inboxes: Vec<Vec<Option<Inbox>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut peers = Vec::with_capacity(spec.nodes.len());
    for (p, peer) in spec.nodes.iter().enumerate() {
        if p == spec.me {
            peers.push(None);
            continue;
        }
        let (signal, doorbell) = ShardSignal::new(apps);
        let signal = Arc::new(signal);
        let (mut outgoing, mut incoming) = (Vec::new(), Vec::new());
        for from in local.clone() {
            for to in peer.shards.clone() {
                let (o, i) = mailbox(capacity, signal.clone());
                outboxes[from][to] = Some(o);
                outgoing.push(i);
            }
        }
        for from in peer.shards.clone() {
            for to in local.clone() {
                let (o, i) = mailbox(capacity, signals[to].clone());
                inboxes[to][from] = Some(i);
                incoming.push(o);
            }
        }
        peers.push(Some(PeerEnds { outgoing, incoming, signal, doorbell }));
    }
    for from in local.clone() {
        for to in local.clone().filter(|&to| to != from) {
            let (o, i) = mailbox(capacity, signals[to].clone());
            outboxes[from][to] = Some(o);
            inboxes[to][from] = Some(i);
        }
    }
    (Mesh { outboxes, inboxes }, peers)
}

/// One flag per peer and direction (`up`: the link has been established; `done`: it has said or
/// heard goodbye), and a condvar to wait for them on.
pub(crate) struct PeerFlags {
    bits: Mutex<PeerBits>,
    changed: Condvar,
}

/// The flags of [`PeerFlags`]: the link to each peer, and from each peer.
pub(crate) struct PeerBits {
    pub outbound: Vec<bool>,
    pub inbound: Vec<bool>,
}

impl PeerBits {
    fn all(&self) -> bool {
        self.outbound.iter().chain(&self.inbound).all(|&b| b)
    }
}

impl PeerFlags {
    /// Flags for `n` nodes, those of node `me` (no link to itself) already set.
    fn new(n: usize, me: usize) -> Self {
        let mut bits = PeerBits { outbound: vec![false; n], inbound: vec![false; n] };
        (bits.outbound[me], bits.inbound[me]) = (true, true);
        PeerFlags { bits: Mutex::new(bits), changed: Condvar::new() }
    }

    /// Set the flag of the link to `peer`.
    pub(crate) fn set_outbound(&self, peer: usize) {
        self.bits.lock().expect("flags").outbound[peer] = true;
        self.changed.notify_all();
    }

    /// Set the flag of the link from `peer`.
    pub(crate) fn set_inbound(&self, peer: usize) {
        self.bits.lock().expect("flags").inbound[peer] = true;
        self.changed.notify_all();
    }

    /// Wait until every flag is set (Ok), a link fails, or `deadline` passes (the flags as
    /// they are).
    fn wait_all(&self, failure: &Mutex<Option<LinkError>>, deadline: Option<Instant>) -> Result<(), Waited<'_>> {
        let mut bits = self.bits.lock().expect("flags");
        loop {
            if let Some(f) = failure.lock().expect("failure").clone() {
                return Err(Waited::Failed(f));
            }
            if bits.all() {
                return Ok(());
            }
            let wait = match deadline {
                Some(d) if Instant::now() >= d => return Err(Waited::Timeout(bits)),
                Some(d) => d - Instant::now(),
                None => Duration::from_millis(100),
            };
            bits = self.changed.wait_timeout(bits, wait).expect("flags").0;
        }
    }
}

/// Why each peer's link last failed to come up, by direction (a startup error names it).
#[derive(Default)]
pub(crate) struct LastFaults {
    outbound: Vec<Option<LinkFault>>,
    inbound: Vec<Option<LinkFault>>,
}

impl LastFaults {
    fn new(n: usize) -> Self {
        LastFaults { outbound: vec![None; n], inbound: vec![None; n] }
    }

    fn slot(&mut self, peer: usize, direction: Direction) -> &mut Option<LinkFault> {
        match direction {
            Direction::To => &mut self.outbound[peer],
            Direction::From => &mut self.inbound[peer],
        }
    }
}

/// How [`PeerFlags::wait_all`] ended without every flag set.
enum Waited<'a> {
    Failed(LinkError),
    Timeout(std::sync::MutexGuard<'a, PeerBits>),
}

/// Where a node stands with its cluster; see [`Shared::meet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Linking with its peers; it has sent nothing on any link.
    Joining = 0,
    /// Every link is up; it has told its peers it is ready, and waits for theirs.
    Ready = 1,
    /// Every peer is ready: the node runs.
    Running = 2,
}

/// What a node knows of one peer's process.
#[derive(Clone, Debug, Default)]
pub(crate) struct Seen {
    /// The incarnation this node links with.
    pub incarnation: Option<u64>,
    /// That incarnation's "ready" values, once it said it is ready.
    pub ready: Option<Vec<u64>>,
}

/// How a node meets a peer's process in a handshake ([`Shared::meet`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Meet {
    /// The incarnation this node links with.
    Known,
    /// A new incarnation while this node joins: link with it, its link starting over from
    /// sequence 0 (`reset`: an earlier incarnation's link is forgotten).
    New { reset: bool },
    /// Not this one: the connection is closed.
    Refuse,
}

/// The link's own control tag: a node's "ready", with its startup values.
const READY: u32 = 0;

/// Controller messages waiting for one peer's outbound link.
#[derive(Default)]
pub(crate) struct ControlQueue {
    pub pending: AtomicBool,
    pub queue: Mutex<VecDeque<wire::Control>>,
}

impl ControlQueue {
    fn push(&self, c: wire::Control) {
        self.queue.lock().expect("control queue").push_back(c);
        self.pending.store(true, Ordering::Release);
    }

    /// Everything queued, in order.
    pub(crate) fn take(&self) -> VecDeque<wire::Control> {
        let mut q = self.queue.lock().expect("control queue");
        self.pending.store(false, Ordering::Release);
        std::mem::take(&mut *q)
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }
}

/// State every link thread of a node shares with the controller.
pub(crate) struct Shared {
    pub spec: ClusterSpec,
    /// The secret the handshakes prove.
    pub secret: Secret,
    pub limits: wire::Limits,
    /// Set when the controller wants the outbound links to flush and say goodbye.
    pub finishing: AtomicBool,
    /// The first fatal link error.
    pub failure: Mutex<Option<LinkError>>,
    /// Links established at least once.
    pub up: PeerFlags,
    /// Outbound links that said goodbye, and inbound links that heard it.
    pub done: PeerFlags,
    /// Set when the node stops: the listener exits.
    pub stopped: AtomicBool,
    /// Frames sent in total (tests, benchmarks).
    pub frames_sent: AtomicU64,
    /// Inbound connections that passed the handshake (tests).
    pub accepted: AtomicU64,
    /// Why each link last failed to come up.
    pub last: Mutex<LastFaults>,
    /// This node's process, as its hellos name it.
    pub incarnation: u64,
    /// A [`Phase`].
    pub phase: AtomicU8,
    /// Per node: the peer's process this node links with.
    pub seen: Mutex<Vec<Seen>>,
    pub seen_changed: Condvar,
    /// Per node: messages for its outbound link to send.
    pub control_out: Vec<ControlQueue>,
    /// Messages from peers' controllers, with the peer's index.
    pub control_in: flume::Sender<(usize, wire::Control)>,
}

impl Shared {
    pub(crate) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Joining,
            1 => Phase::Ready,
            _ => Phase::Running,
        }
    }

    /// What this node's hellos say of its process.
    pub(crate) fn stamp(&self) -> handshake::Stamp {
        handshake::Stamp { incarnation: self.incarnation, running: self.phase() != Phase::Joining }
    }

    /// Meet `peer`'s process as its hello describes it, once its proof checked. The
    /// incarnation this node links with is kept; another one is:
    /// - while this node joins (it has sent nothing yet): taken in its place if it joins too
    ///   (a peer that restarted before the cluster ran); refused if it runs (an incarnation
    ///   that ran with an earlier one of this node: it gives up when it meets this one);
    /// - once this node is ready or runs: a peer that restarted. What this node exchanged with
    ///   its previous process is gone on the other side, so the node fails with
    ///   [`LinkError::PeerRestarted`] (with snapshots, the engine rolls back and joins again).
    pub(crate) fn meet(&self, peer: usize, hello: &wire::Hello) -> Meet {
        let mut seen = self.seen.lock().expect("seen");
        let known = seen[peer].incarnation;
        if known == Some(hello.incarnation) {
            return Meet::Known;
        }
        if self.phase() != Phase::Joining {
            drop(seen);
            self.fail(LinkError::PeerRestarted { peer: self.spec.peer(peer) });
            return Meet::Refuse;
        }
        if hello.running {
            tracing::debug!("{} still runs with an earlier incarnation of this node: refused", self.spec.peer(peer));
            return Meet::Refuse;
        }
        seen[peer] = Seen { incarnation: Some(hello.incarnation), ready: None };
        self.seen_changed.notify_all();
        Meet::New { reset: known.is_some() }
    }

    /// A control message from `peer` (incarnation `from`) arrived in sequence.
    pub(crate) fn control(&self, peer: usize, from: u64, c: wire::Control) {
        if c.tag == READY {
            let mut seen = self.seen.lock().expect("seen");
            if seen[peer].incarnation == Some(from) {
                seen[peer].ready = Some(c.values);
                self.seen_changed.notify_all();
            }
            return;
        }
        let _ = self.control_in.send((peer, c));
    }
    /// Record the node's first fatal link error; whoever waits on the links sees it.
    pub(crate) fn fail(&self, error: LinkError) {
        let mut failure = self.failure.lock().expect("failure");
        if failure.is_none() {
            tracing::error!("{error}");
            *failure = Some(error);
        }
        drop(failure);
        self.up.changed.notify_all();
        self.done.changed.notify_all();
    }

    /// Record why the link to or from `peer` failed to come up (a startup error names it);
    /// true when the reason is not the one recorded last, so that a retried failure is logged
    /// once, not per attempt. A refused handshake is kept over later network faults (such as
    /// the refusing peer going away): it says more.
    pub(crate) fn note(&self, peer: usize, direction: Direction, fault: &LinkFault) -> bool {
        let mut last = self.last.lock().expect("last faults");
        let slot = last.slot(peer, direction);
        match slot {
            Some(kept) if kept.is_authentication() && !fault.is_authentication() => false,
            Some(kept) if kept.to_string() == fault.to_string() => false,
            _ => {
                *slot = Some(fault.clone());
                true
            }
        }
    }

    /// The link to or from `peer` has come up.
    pub(crate) fn clear(&self, peer: usize, direction: Direction) {
        *self.last.lock().expect("last faults").slot(peer, direction) = None;
    }
}

/// A node's controller's side of its links: messages to and from peers' controllers.
#[derive(Clone)]
pub struct Controls {
    shared: Arc<Shared>,
    link_signal: Vec<Option<Arc<ShardSignal>>>,
    inbox: flume::Receiver<(usize, wire::Control)>,
}

impl Controls {
    /// Send `c` to `peer`'s controller, in order after what this node sent it before.
    pub fn send(&self, peer: usize, c: wire::Control) {
        self.shared.control_out[peer].push(c);
        if let Some(s) = &self.link_signal[peer] {
            s.wake();
        }
    }

    /// The next message from a peer's controller, if one came: the peer's index and it.
    pub fn try_recv(&self) -> Option<(usize, wire::Control)> {
        self.inbox.try_recv().ok()
    }

    /// The next message from a peer's controller, waiting at most `timeout` for one.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<(usize, wire::Control)> {
        self.inbox.recv_timeout(timeout).ok()
    }

    /// The first fatal link error, if any.
    pub fn failure(&self) -> Option<LinkError> {
        self.shared.failure.lock().expect("failure").clone()
    }

    /// This node's index.
    pub fn me(&self) -> usize {
        self.shared.spec.me
    }

    /// How many nodes the cluster has.
    pub fn nodes(&self) -> usize {
        self.shared.spec.nodes.len()
    }
}

/// The running links of one node.
pub struct Transport {
    shared: Arc<Shared>,
    /// The outbound links' signal slots, rung to make them look at `finishing`.
    wakers: Vec<Arc<ShardSignal>>,
    /// The same, by peer.
    link_signal: Vec<Option<Arc<ShardSignal>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    control: flume::Receiver<(usize, wire::Control)>,
}

impl Transport {
    /// [`Transport::join`] with no startup values.
    pub fn start(
        spec: ClusterSpec,
        peers: Vec<Option<PeerEnds>>,
        limits: wire::Limits,
    ) -> Result<Transport, LinkError> {
        Self::join(spec, peers, limits, Vec::new())
    }

    /// Listen, start a link to and from every peer, wait until every link is up, then tell
    /// every peer this node is ready (with `startup`, values its peers' engines read from
    /// [`Transport::startup_values`]) and wait until every peer said so too: only then may data
    /// flow. Bounded by `connect_timeout` (the error names the missing nodes). A cluster of more
    /// than one node needs `spec.secret`.
    pub fn join(
        spec: ClusterSpec,
        peers: Vec<Option<PeerEnds>>,
        limits: wire::Limits,
        startup: Vec<u64>,
    ) -> Result<Transport, LinkError> {
        let me = &spec.nodes[spec.me];
        let secret = match (&spec.secret, spec.nodes.len()) {
            (Some(s), _) => s.clone(),
            // A lone node links to no one: a secret nobody knows is never used.
            (None, 1) => Secret::random(),
            (None, nodes) => return Err(LinkError::NoSecret { node: me.id.clone(), nodes }),
        };
        let listener = TcpListener::bind(me.address).map_err(|source| LinkError::Listen {
            node: me.id.clone(),
            address: me.address,
            source: Arc::new(source),
        })?;
        let n = spec.nodes.len();
        let (control_in, control) = flume::unbounded();
        let shared = Arc::new(Shared {
            secret,
            limits,
            finishing: AtomicBool::new(false),
            failure: Mutex::new(None),
            up: PeerFlags::new(n, spec.me),
            done: PeerFlags::new(n, spec.me),
            stopped: AtomicBool::new(false),
            frames_sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            last: Mutex::new(LastFaults::new(n)),
            incarnation: rand::random::<u64>() | 1,
            phase: AtomicU8::new(Phase::Joining as u8),
            seen: Mutex::new(vec![Seen::default(); n]),
            seen_changed: Condvar::new(),
            control_out: (0..n).map(|_| ControlQueue::default()).collect(),
            control_in,
            spec,
        });
        let mut threads = Vec::new();
        let mut wakers = Vec::new();
        let mut link_signal = vec![None; n];
        let mut receivers = Vec::with_capacity(n);
        for (p, ends) in peers.into_iter().enumerate() {
            let Some(ends) = ends else {
                receivers.push(None);
                continue;
            };
            let PeerEnds { outgoing, incoming, signal, doorbell } = ends;
            receivers.push(Some(inbound::Receiver::new(p, incoming)));
            wakers.push(signal.clone());
            link_signal[p] = Some(signal.clone());
            let link = outbound::Link::new(shared.clone(), p, outgoing, signal, doorbell);
            let name = format!("dirigo-link-to-{}", shared.spec.nodes[p].id);
            threads.push(std::thread::Builder::new().name(name).spawn(move || link.run()).expect("spawn link"));
        }
        let sh = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("dirigo-listener".into())
                .spawn(move || inbound::listen(sh, listener, receivers))
                .expect("spawn listener"),
        );
        let transport = Transport { shared, wakers, link_signal, threads, control };
        let deadline = Instant::now() + transport.shared.spec.settings.connect_timeout;
        transport.wait_up()?;
        transport.ready(startup, deadline)?;
        Ok(transport)
    }

    /// Every link is up: say ready to every peer, wait for every peer's ready.
    fn ready(&self, startup: Vec<u64>, deadline: Instant) -> Result<(), LinkError> {
        let s = &self.shared;
        s.phase.store(Phase::Ready as u8, Ordering::SeqCst);
        for p in (0..s.spec.nodes.len()).filter(|&p| p != s.spec.me) {
            self.send_control(p, wire::Control { tag: READY, epoch: 0, values: startup.clone() });
        }
        let mut seen = s.seen.lock().expect("seen");
        loop {
            if let Some(f) = s.failure.lock().expect("failure").clone() {
                drop(seen);
                s.stopped.store(true, Ordering::SeqCst);
                return Err(f);
            }
            let missing: Vec<usize> = (0..seen.len()).filter(|&p| p != s.spec.me && seen[p].ready.is_none()).collect();
            if missing.is_empty() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                drop(seen);
                s.stopped.store(true, Ordering::SeqCst);
                let peers = missing.into_iter().map(|p| s.spec.peer(p)).collect();
                return Err(LinkError::NotReady { timeout: s.spec.settings.connect_timeout, peers });
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            seen = s.seen_changed.wait_timeout(seen, wait).expect("seen").0;
        }
        s.phase.store(Phase::Running as u8, Ordering::SeqCst);
        Ok(())
    }

    /// Each node's startup values (this node's own included), as it said them when it was
    /// ready: read once [`Transport::join`] returned.
    pub fn startup_values(&self, mine: &[u64]) -> Vec<Vec<u64>> {
        let seen = self.shared.seen.lock().expect("seen");
        (0..seen.len())
            .map(|p| match p == self.shared.spec.me {
                true => mine.to_vec(),
                false => seen[p].ready.clone().unwrap_or_default(),
            })
            .collect()
    }

    /// Send `c` to `peer`'s controller, in order after what this node sent it before.
    pub fn send_control(&self, peer: usize, c: wire::Control) {
        self.controls().send(peer, c);
    }

    /// A handle that sends controller messages to peers and reads the links' failure.
    pub fn controls(&self) -> Controls {
        Controls { shared: self.shared.clone(), link_signal: self.link_signal.clone(), inbox: self.control.clone() }
    }

    /// Messages from peers' controllers, with the sender's node index.
    pub fn control(&self) -> &flume::Receiver<(usize, wire::Control)> {
        &self.control
    }

    /// This node's index, and how many nodes the cluster has.
    pub fn me(&self) -> (usize, usize) {
        (self.shared.spec.me, self.shared.spec.nodes.len())
    }

    fn wait_up(&self) -> Result<(), LinkError> {
        let s = &self.shared;
        let timeout = s.spec.settings.connect_timeout;
        let waited = s.up.wait_all(&s.failure, Some(Instant::now() + timeout));
        let error = match waited {
            Ok(()) => return Ok(()),
            Err(Waited::Failed(f)) => f,
            Err(Waited::Timeout(bits)) => {
                let last = s.last.lock().expect("last faults");
                let nodes = 0..s.spec.nodes.len();
                let missing =
                    |p: usize, last: &[Option<LinkFault>]| Missing { peer: s.spec.peer(p), last: last[p].clone() };
                let no_link_to =
                    nodes.clone().filter(|&p| !bits.outbound[p]).map(|p| missing(p, &last.outbound)).collect();
                let not_connected = nodes.filter(|&p| !bits.inbound[p]).map(|p| missing(p, &last.inbound)).collect();
                LinkError::Startup { timeout, no_link_to, not_connected }
            }
        };
        s.stopped.store(true, Ordering::SeqCst);
        Err(error)
    }

    /// The first fatal link error, if any (the controller polls it).
    pub fn failure(&self) -> Option<LinkError> {
        self.shared.failure.lock().expect("failure").clone()
    }

    /// Data frames sent so far by every outbound link.
    pub fn frames_sent(&self) -> u64 {
        self.shared.frames_sent.load(Ordering::Relaxed)
    }

    /// Inbound connections that passed the handshake so far (each one replaced its peer's
    /// previous connection, if any).
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// After the local shards have finished: send what is left, wait until peers acknowledge
    /// everything, say goodbye, and wait until every peer has said goodbye too (so no peer
    /// still needs this node's acknowledgements). Bounded by the reconnect timeout per stall.
    pub fn finish(mut self) -> Result<(), LinkError> {
        let s = &self.shared;
        s.finishing.store(true, Ordering::SeqCst);
        self.wakers.iter().for_each(|w| w.wake());
        if let Err(Waited::Failed(f)) = s.done.wait_all(&s.failure, None) {
            s.stopped.store(true, Ordering::SeqCst);
            return Err(f);
        }
        s.stopped.store(true, Ordering::SeqCst);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        Ok(())
    }
}

impl Drop for Transport {
    /// Dropped without [`Transport::finish`] (the node failed): the link threads give up.
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.wakers.iter().for_each(|w| w.wake());
    }
}
