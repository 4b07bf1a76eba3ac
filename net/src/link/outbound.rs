//! The outbound half of a link: one thread per peer that consumes the rings of local shards
//! addressed to the peer's shards, frames each batch with the next link sequence number and
//! writes it, as long as the peer's credit for that channel lasts. Frames are kept until the
//! peer acknowledges them; after a dropped connection the thread reconnects and sends again
//! every frame the peer did not receive. Each connection opens with the handshake, in which the
//! two nodes prove they hold the cluster secret. A second thread per connection reads the peer's
//! credit frames.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{FrameDecoder, FrameType};
use rkyv::util::AlignedVec;

use super::handshake::{self, DialError};
use super::wire;
use super::{Direction, LinkError, LinkFault, Meet, Shared};
use crate::clock::now_ns;
use crate::mailbox::Inbox;
use crate::signal::{Doorbell, ShardSignal};

/// How long a parked link sleeps at most before it looks again.
const MAX_PARK: Duration = Duration::from_millis(50);

/// What the peer has acknowledged, updated by the credit reader.
struct Acks {
    /// Per channel: batches the receiving shard has finished with (cumulative).
    consumed: Vec<AtomicU64>,
    /// The next link sequence number the peer expects: every frame before it has arrived.
    next: AtomicU64,
}

/// One connection: its socket, and why it was lost (set by either thread).
struct Conn {
    stream: TcpStream,
    lost: Arc<Lost>,
}

#[derive(Default)]
struct Lost {
    flag: AtomicBool,
    why: Mutex<Option<LinkFault>>,
}

impl Lost {
    fn set(&self, why: LinkFault) {
        self.why.lock().expect("lost").get_or_insert(why);
        self.flag.store(true, Ordering::SeqCst);
    }

    fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    fn reason(&self) -> LinkFault {
        self.why.lock().expect("lost").clone().unwrap_or(LinkFault::Closed)
    }
}

/// The outbound link to one peer.
pub(crate) struct Link {
    shared: Arc<Shared>,
    peer: usize,
    rings: Vec<Inbox>,
    /// `(from, to)` global shard ids of each channel.
    channels: Vec<(u16, u16)>,
    /// Batches taken from each channel's ring.
    sent: Vec<u64>,
    acks: Arc<Acks>,
    signal: Arc<ShardSignal>,
    doorbell: Doorbell,
    /// Frames sent and not yet acknowledged, in sequence order.
    retained: VecDeque<(u64, AlignedVec)>,
    pool: Vec<AlignedVec>,
    next_seq: u64,
    conn: Option<Conn>,
    /// Test hook: frames left before the connection is dropped once.
    drop_in: Option<u64>,
}

impl Link {
    pub(crate) fn new(
        shared: Arc<Shared>,
        peer: usize,
        rings: Vec<Inbox>,
        signal: Arc<ShardSignal>,
        doorbell: Doorbell,
    ) -> Link {
        let (me, them) = (&shared.spec.nodes[shared.spec.me], &shared.spec.nodes[peer]);
        let mut channels = Vec::with_capacity(rings.len());
        for from in me.shards.clone() {
            for to in them.shards.clone() {
                channels.push((from as u16, to as u16));
            }
        }
        let n = rings.len();
        let acks = Arc::new(Acks { consumed: (0..n).map(|_| AtomicU64::new(0)).collect(), next: AtomicU64::new(0) });
        let drop_in = shared.spec.settings.drop_after;
        Link {
            shared,
            peer,
            rings,
            channels,
            sent: vec![0; n],
            acks,
            signal,
            doorbell,
            retained: VecDeque::new(),
            pool: Vec::new(),
            next_seq: 0,
            conn: None,
            drop_in,
        }
    }

    fn describe(&self) -> super::Peer {
        self.shared.spec.peer(self.peer)
    }

    /// The link's thread.
    pub(crate) fn run(mut self) {
        if !self.connect_first() {
            return;
        }
        self.shared.up.set_outbound(self.peer);
        let spin_ns = self.shared.spec.settings.spin.as_nanos() as u64;
        let mut idle_since = None;
        loop {
            if self.shared.stopped.load(Ordering::Relaxed) {
                return;
            }
            if let Some(why) = self.lost() {
                if !self.reconnect(why) {
                    return;
                }
            }
            let progress = self.pump();
            if self.shared.finishing.load(Ordering::SeqCst) && self.flushed() {
                self.goodbye();
                return;
            }
            if progress {
                idle_since = None;
                continue;
            }
            let since = *idle_since.get_or_insert_with(now_ns);
            if now_ns() - since < spin_ns {
                // Yield, not spin: link threads share CPUs with the shards.
                std::thread::yield_now();
                continue;
            }
            self.park();
        }
    }

    /// Why the current connection is gone, if it is.
    fn lost(&self) -> Option<LinkFault> {
        let c = self.conn.as_ref()?;
        c.lost.is_set().then(|| c.lost.reason())
    }

    /// Release acknowledged frames, then send every batch the credit allows. Hot path.
    fn pump(&mut self) -> bool {
        let next = self.acks.next.load(Ordering::Acquire);
        while self.retained.front().is_some_and(|(seq, _)| *seq < next) {
            let (_, mut buf) = self.retained.pop_front().expect("front");
            buf.clear();
            self.pool.push(buf);
        }
        let window = self.shared.spec.settings.credits as u64;
        let mut progress = false;
        if self.shared.control_out[self.peer].is_pending() {
            for c in self.shared.control_out[self.peer].take() {
                let mut buf = self.pool.pop().unwrap_or_default();
                c.encode(self.next_seq, &mut buf).expect("aligned frame buffer");
                self.retained.push_back((self.next_seq, buf));
                self.next_seq += 1;
                let frame = &self.retained.back().expect("just pushed").1;
                write_frame(self.conn.as_ref(), frame);
                progress = true;
            }
        }
        for ch in 0..self.rings.len() {
            while self.sent[ch] - self.acks.consumed[ch].load(Ordering::Acquire) < window {
                let Some(batch) = self.rings[ch].recv() else { break };
                let mut buf = self.pool.pop().unwrap_or_default();
                let (from, to) = self.channels[ch];
                wire::encode_batch(self.next_seq, from, to, &batch, &mut buf).expect("aligned frame buffer");
                self.rings[ch].give_back(batch);
                self.sent[ch] += 1;
                self.retained.push_back((self.next_seq, buf));
                self.next_seq += 1;
                self.shared.frames_sent.fetch_add(1, Ordering::Relaxed);
                self.test_drop();
                let frame = &self.retained.back().expect("just pushed").1;
                write_frame(self.conn.as_ref(), frame);
                progress = true;
            }
        }
        progress
    }

    /// Test hook (`DIRIGO_TEST_DROP_LINK`): cut the connection once, after a frame is numbered
    /// and kept but before it is written, so that it must be sent again.
    fn test_drop(&mut self) {
        if let Some(left) = self.drop_in.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.drop_in = None;
                if let Some(c) = &self.conn {
                    c.lost.set(LinkFault::TestDrop);
                    let _ = c.stream.shutdown(Shutdown::Both);
                }
            }
        }
    }

    /// Every ring and the control queue are empty and every frame acknowledged.
    fn flushed(&self) -> bool {
        self.retained.is_empty()
            && !self.shared.control_out[self.peer].is_pending()
            && self.rings.iter().all(|r| !r.has_mail())
    }

    fn has_work(&self) -> bool {
        let window = self.shared.spec.settings.credits as u64;
        let next = self.acks.next.load(Ordering::Acquire);
        self.lost().is_some()
            || self.shared.finishing.load(Ordering::SeqCst)
            || self.shared.control_out[self.peer].is_pending()
            || self.retained.front().is_some_and(|(seq, _)| *seq < next)
            || (0..self.rings.len()).any(|ch| {
                self.rings[ch].has_mail() && self.sent[ch] - self.acks.consumed[ch].load(Ordering::Acquire) < window
            })
    }

    fn park(&mut self) {
        self.signal.going_to_sleep();
        if !self.has_work() {
            let _ = self.doorbell.recv_timeout(MAX_PARK);
        }
        self.signal.awake();
    }

    /// Say goodbye once everything is acknowledged. The goodbye takes the next sequence number,
    /// so the peer's acknowledgement of it (also across a reconnect) says it has arrived.
    fn goodbye(&mut self) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut buf = AlignedVec::new();
        crate::encode_frame(FrameType::End, &seq.to_le_bytes(), &mut buf).expect("aligned");
        write_frame(self.conn.as_ref(), &buf);
        while self.acks.next.load(Ordering::Acquire) <= seq {
            if self.shared.stopped.load(Ordering::Relaxed) {
                return;
            }
            if let Some(why) = self.lost() {
                if !self.reconnect(why) {
                    return;
                }
                if self.acks.next.load(Ordering::Acquire) <= seq {
                    write_frame(self.conn.as_ref(), &buf);
                }
                continue;
            }
            let _ = self.doorbell.recv_timeout(MAX_PARK);
        }
        self.shared.done.set_outbound(self.peer);
    }

    /// Connect at startup, retrying until the cluster is up or the node gives up.
    fn connect_first(&mut self) -> bool {
        let mut pause = Duration::from_millis(5);
        loop {
            match self.connect() {
                Ok(_) => return true,
                Err(e) => self.failed_attempt(&e),
            }
            if self.shared.stopped.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Re-establish a lost connection and send again what the peer has not received.
    fn reconnect(&mut self, why: LinkFault) -> bool {
        tracing::warn!("link to {} lost: {why}; reconnecting", self.describe());
        if let Some(c) = self.conn.take() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        let limit = self.shared.spec.settings.reconnect_timeout;
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.connect() {
                Ok(resent) => {
                    tracing::warn!("link to {} re-established; {resent} frames sent again", self.describe());
                    return true;
                }
                Err(e) if Instant::now() >= deadline => {
                    tracing::warn!("link to {}: last attempt: {e}", self.describe());
                    let (peer, direction) = (self.describe(), Direction::To);
                    self.shared.fail(LinkError::NotReestablished { peer, direction, fault: why, within: limit });
                    return false;
                }
                Err(_) if self.shared.stopped.load(Ordering::Relaxed) => return false,
                Err(e) => {
                    self.failed_attempt(&e);
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
            }
        }
    }

    /// Record why an attempt failed. A refused handshake is logged as a warning (once per
    /// reason: the link keeps trying, since a refusal is not authenticated), anything else
    /// (such as a peer that is not listening yet) at debug level.
    fn failed_attempt(&self, e: &ConnectError) {
        let ConnectError::Fault(fault) = e else { return };
        let changed = self.shared.note(self.peer, Direction::To, fault);
        match fault.is_authentication() && changed {
            true => tracing::warn!("link to {}: {fault}; retrying", self.describe()),
            false => tracing::debug!("link to {}: {fault}; retrying", self.describe()),
        }
    }

    /// The peer is a new process, met while this node joins (so nothing was sent to the
    /// previous one): its link starts over from sequence 0.
    fn forget(&mut self) {
        debug_assert!(self.next_seq == 0 && self.retained.is_empty(), "a joining node sends nothing");
        self.next_seq = 0;
        self.retained.clear();
        self.sent.iter_mut().for_each(|s| *s = 0);
        self.acks.next.store(0, Ordering::Release);
        self.acks.consumed.iter().for_each(|c| c.store(0, Ordering::Release));
    }

    /// One connection attempt: the handshake, start the credit reader, then send again every
    /// kept frame the peer has not received; returns how many.
    fn connect(&mut self) -> Result<usize, ConnectError> {
        let addr = self.shared.spec.nodes[self.peer].address;
        let timeout = self.shared.spec.settings.connect_timeout;
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(LinkFault::from)?;
        stream.set_nodelay(true).map_err(LinkFault::from)?;
        stream.set_read_timeout(Some(timeout)).map_err(LinkFault::from)?;
        let shared = self.shared.clone();
        let spec = &shared.spec;
        let mut decoder = FrameDecoder::default();
        let ends = (spec.me as u32, self.peer as u32);
        let stamp = shared.stamp();
        let dialed = handshake::dial(&stream, &mut decoder, &shared.secret, spec.fingerprint(), ends, stamp);
        let next = match dialed {
            Ok((next, hello)) => match self.shared.meet(self.peer, &hello) {
                Meet::Known => next,
                Meet::New { reset } => {
                    if reset {
                        self.forget();
                    }
                    next
                }
                Meet::Refuse => return Err(LinkFault::Stale.into()),
            },
            Err(DialError::Fault(fault)) => return Err(fault.into()),
            Err(DialError::OtherConfig) => {
                let mismatch = LinkError::ConfigMismatch { peer: self.describe() };
                self.shared.fail(mismatch.clone());
                return Err(ConnectError::Refused(mismatch));
            }
        };
        self.shared.clear(self.peer, Direction::To);
        stream.set_read_timeout(None).map_err(LinkFault::from)?;
        self.acks.next.fetch_max(next, Ordering::AcqRel);
        let lost = Arc::new(Lost::default());
        let reader = stream.try_clone().map_err(LinkFault::from)?;
        let (acks, signal, lost2) = (self.acks.clone(), self.signal.clone(), lost.clone());
        let name = format!("dirigo-acks-from-{}", spec.nodes[self.peer].id);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || read_acks(reader, decoder, &acks, &signal, &lost2))
            .map_err(LinkFault::from)?;
        self.conn = Some(Conn { stream, lost });
        let mut resent = 0;
        for (_, frame) in self.retained.iter().filter(|(seq, _)| *seq >= next) {
            write_frame(self.conn.as_ref(), frame);
            resent += 1;
        }
        Ok(resent)
    }
}

/// Write a whole frame; a failure marks the connection lost (the frame stays kept).
fn write_frame(conn: Option<&Conn>, frame: &[u8]) {
    let Some(c) = conn else { return };
    if c.lost.is_set() {
        return;
    }
    if let Err(e) = (&c.stream).write_all(frame) {
        c.lost.set(e.into());
    }
}

/// The credit reader of one connection: applies the peer's acknowledgements and wakes the link.
fn read_acks(stream: TcpStream, mut decoder: FrameDecoder, acks: &Acks, signal: &ShardSignal, lost: &Lost) {
    let why = loop {
        let mut fault = None;
        while let Some(f) = match decoder.next_frame() {
            Ok(f) => f,
            Err(e) => {
                fault = Some(e.into());
                None
            }
        } {
            if f.ty != FrameType::Credit {
                fault = Some(LinkFault::Unexpected { want: Some(FrameType::Credit), got: f.ty });
                break;
            }
            match wire::decode_credit(f.payload) {
                Ok((next, consumed)) => {
                    acks.next.fetch_max(next, Ordering::AcqRel);
                    for (slot, c) in acks.consumed.iter().zip(consumed) {
                        slot.fetch_max(c, Ordering::AcqRel);
                    }
                }
                Err(e) => fault = Some(e.into()),
            }
            signal.wake();
        }
        if let Some(f) = fault {
            break f;
        }
        let window = match decoder.recv_window(4096) {
            Ok(w) => w,
            Err(e) => break e.into(),
        };
        match (&stream).read(window) {
            Ok(0) => break LinkFault::Closed,
            Ok(n) => {
                if let Err(e) = decoder.commit(n) {
                    break e.into();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break e.into(),
        }
    };
    lost.set(why);
    let _ = stream.shutdown(Shutdown::Both);
    signal.wake();
}

/// Why one connection attempt failed: a fault (retried until the link's timeout), or a refusal
/// that already failed the node.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(transparent)]
    Fault(#[from] LinkFault),
    #[error(transparent)]
    Refused(LinkError),
}
