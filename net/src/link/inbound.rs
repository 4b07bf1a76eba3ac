//! The inbound half of a link: the listener accepts a peer's connection (a handshake names the
//! peer, checks its proof of the cluster secret, and tells it the next frame this node expects;
//! only then does the connection replace the peer's previous one), then a thread reads the
//! peer's frames,
//! checks them, and pushes each batch into the ring of the local shard it is for. As the shards
//! finish with batches (they come back on the rings' return side) it grants the peer credit and
//! acknowledges what has arrived. The receiving state outlives a connection: when the peer
//! reconnects, it resumes where the last connection stopped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{FrameDecoder, FrameType};
use rkyv::util::AlignedVec;

use super::handshake::{self, AcceptError};
use super::wire;
use super::{channel_index, Direction, LinkError, LinkFault, Meet, Shared};
use crate::mailbox::{Batch, Outbox};

/// How often a receiver with nothing to read looks for batches its shards have finished with,
/// while some are still out (shards do not ring the link when they hand a batch back)...
const CREDIT_POLL: Duration = Duration::from_micros(50);
/// ... and when none is: only to notice a dead peer's silence sooner than never.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// The receiving side of the link from one peer.
pub(crate) struct Receiver {
    peer: usize,
    state: Mutex<State>,
    /// The current connection, to cut when the peer reconnects.
    current: Mutex<Option<TcpStream>>,
    /// Since when the link has been down, and why.
    lost: Mutex<Option<(Instant, LinkFault)>>,
}

struct State {
    rings: Vec<Outbox>,
    /// The next link sequence number expected.
    next: u64,
    /// Per channel: batches the local shard has finished with (cumulative).
    consumed: Vec<u64>,
    /// Per channel: batches pushed to the local shard (cumulative).
    delivered: Vec<u64>,
    pool: Vec<Batch>,
    /// The peer said goodbye.
    bye: bool,
}

impl Receiver {
    pub(crate) fn new(peer: usize, rings: Vec<Outbox>) -> Receiver {
        let n = rings.len();
        let state = State { rings, next: 0, consumed: vec![0; n], delivered: vec![0; n], pool: Vec::new(), bye: false };
        Receiver { peer, state: Mutex::new(state), current: Mutex::new(None), lost: Mutex::new(None) }
    }
}

/// The listener's thread: accept peers' connections until the node stops; fail the node when a
/// lost inbound link is not re-established in time.
pub(crate) fn listen(shared: Arc<Shared>, listener: TcpListener, receivers: Vec<Option<Receiver>>) {
    let receivers: Arc<Vec<Option<Receiver>>> = Arc::new(receivers);
    if let Err(e) = listener.set_nonblocking(true) {
        shared.fail(LinkError::Listener(Arc::new(e)));
        return;
    }
    let limit = shared.spec.settings.reconnect_timeout;
    while !shared.stopped.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (sh, rx) = (shared.clone(), receivers.clone());
                let spawned =
                    std::thread::Builder::new().name("dirigo-link-in".into()).spawn(move || accept(&sh, &rx, stream));
                if let Err(e) = spawned {
                    shared.fail(LinkError::Thread(Arc::new(e)));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => tracing::warn!("listener: {e}"),
        }
        for r in receivers.iter().flatten() {
            let mut lost = r.lost.lock().expect("lost");
            if let Some((since, why)) = lost.take() {
                if since.elapsed() <= limit {
                    *lost = Some((since, why));
                } else {
                    let (peer, direction) = (shared.spec.peer(r.peer), Direction::From);
                    shared.fail(LinkError::NotReestablished { peer, direction, fault: why, within: limit });
                }
            }
        }
    }
}

/// Handshake with a connecting peer, then receive on this connection until it ends. A
/// connection that does not prove the cluster secret is refused, and leaves the peer's current
/// connection alone.
fn accept(shared: &Shared, receivers: &[Option<Receiver>], stream: TcpStream) {
    let spec = &shared.spec;
    let mut decoder = FrameDecoder::default();
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(spec.settings.connect_timeout));
    let is_peer = |from: u32| receivers.get(from as usize).is_some_and(Option::is_some);
    let stamp = shared.stamp();
    let challenged =
        match handshake::challenge(&stream, &mut decoder, spec.fingerprint(), spec.me as u32, is_peer, stamp) {
            Ok(c) => c,
            Err(AcceptError::Fault(e)) => return tracing::warn!("refused a link connection: {e}"),
            Err(AcceptError::OtherConfig { from }) => {
                return tracing::warn!("refused a link from node index {from}: another cluster config")
            }
            Err(AcceptError::NotAddressed { from, to }) => {
                return tracing::warn!(
                    "refused a link connection: its hello is from node index {from} to node index {to}"
                )
            }
        };
    let receiver = receivers[challenged.hello.from as usize].as_ref().expect("checked by the challenge");
    if let Err(fault) = challenged.verify(&stream, &mut decoder, &shared.secret) {
        let claimed = spec.peer(receiver.peer);
        match shared.note(receiver.peer, Direction::From, &fault) {
            true => tracing::warn!("refused a link from {claimed} (as it claims): {fault}"),
            false => tracing::debug!("refused a link from {claimed} (as it claims): {fault}"),
        }
        return;
    }
    shared.clear(receiver.peer, Direction::From);
    let reset = match shared.meet(receiver.peer, &challenged.hello) {
        Meet::Known => false,
        Meet::New { reset } => reset,
        Meet::Refuse => return challenged.stale(&stream),
    };
    // Authenticated: only now may this connection replace the peer's current one.
    if let Some(old) = receiver.current.lock().expect("current").replace(stream.try_clone().expect("clone")) {
        let _ = old.shutdown(Shutdown::Both);
    }
    let mut state = receiver.state.lock().expect("receiver state");
    if reset {
        // A new process of the peer, met while this node joins: nothing of the previous one's
        // reached a shard (it sent at most its "ready"); its link starts over.
        state.next = 0;
        state.consumed.iter_mut().for_each(|c| *c = 0);
        state.delivered.iter_mut().for_each(|c| *c = 0);
        state.bye = false;
        *receiver.lost.lock().expect("lost") = None;
    }
    if let Err(e) = challenged.welcome(&stream, &shared.secret, state.next) {
        return tracing::warn!("link from {}: handshake failed: {e}", spec.peer(receiver.peer));
    }
    shared.accepted.fetch_add(1, Ordering::Relaxed);
    if state.bye {
        return; // a goodbye that was received, sent again: the welcome above acknowledged it
    }
    if receiver.lost.lock().expect("lost").take().is_some() {
        tracing::warn!("link from {} re-established", spec.peer(receiver.peer));
    }
    shared.up.set_inbound(receiver.peer);
    let _ = stream.set_read_timeout(None);
    let shift = (challenged.hello.epoch as i128 - challenged.epoch as i128).clamp(i64::MIN as i128, i64::MAX as i128);
    let (sent, poll, out) = ((u64::MAX, Vec::new()), IDLE_POLL, AlignedVec::new());
    let incarnation = challenged.hello.incarnation;
    let mut conn =
        Connection { shared, peer: receiver.peer, incarnation, stream, decoder, out, sent, poll, shift: shift as i64 };
    match conn.receive(&mut state) {
        Ok(()) => shared.done.set_inbound(receiver.peer),
        Err(Ending::Lost(why)) => {
            tracing::warn!("link from {} lost: {why}; waiting for it to reconnect", spec.peer(receiver.peer));
            *receiver.lost.lock().expect("lost") = Some((Instant::now(), why));
        }
        Err(Ending::Fatal(fault)) => {
            shared.fail(LinkError::Protocol { peer: spec.peer(receiver.peer), direction: Direction::From, fault })
        }
    }
}

enum Ending {
    /// The connection broke: the peer will reconnect.
    Lost(LinkFault),
    /// The peer sent something invalid.
    Fatal(LinkFault),
}

struct Connection<'a> {
    shared: &'a Shared,
    peer: usize,
    /// The peer's process.
    incarnation: u64,
    stream: TcpStream,
    decoder: FrameDecoder,
    out: AlignedVec,
    /// What the last credit frame said: `next` and the consumed counts.
    sent: (u64, Vec<u64>),
    /// How long to wait for the socket: [`CREDIT_POLL`] while batches are out, else
    /// [`IDLE_POLL`].
    poll: Duration,
    /// The peer's clock epoch minus this node's (ns).
    shift: i64,
}

impl Connection<'_> {
    /// Receive until the peer says goodbye (Ok) or the connection ends.
    fn receive(&mut self, st: &mut State) -> Result<(), Ending> {
        loop {
            while let Some(f) = self.decoder.next_frame().map_err(|e| Ending::Fatal(e.into()))? {
                match f.ty {
                    FrameType::Data => {
                        deliver(self.shared, (self.peer, self.shift), st, f.payload).map_err(Ending::Fatal)?
                    }
                    FrameType::Control => {
                        let (seq, c) = wire::Control::decode(f.payload).map_err(|e| Ending::Fatal(e.into()))?;
                        if seq > st.next {
                            let fault = LinkFault::Sequence { what: "control message", seq, expected: st.next };
                            return Err(Ending::Fatal(fault));
                        }
                        if seq == st.next {
                            st.next += 1;
                            self.shared.control(self.peer, self.incarnation, c);
                        }
                    }
                    FrameType::End => {
                        let seq = wire::goodbye_seq(f.payload).map_err(|e| Ending::Fatal(e.into()))?;
                        if seq != st.next {
                            let fault = LinkFault::Sequence { what: "goodbye", seq, expected: st.next };
                            return Err(Ending::Fatal(fault));
                        }
                        st.next += 1;
                        st.bye = true;
                        self.grant(st, true)?;
                        return Ok(());
                    }
                    got => return Err(Ending::Fatal(LinkFault::Unexpected { want: None, got })),
                }
            }
            self.grant(st, false)?;
            self.set_poll(st);
            if !self.readable()? {
                self.grant(st, true)?;
                continue;
            }
            let window = self.decoder.recv_window(64 * 1024).map_err(|e| Ending::Fatal(e.into()))?;
            match (&self.stream).read(window) {
                Ok(0) => return Err(Ending::Lost(LinkFault::NoGoodbye)),
                Ok(n) => self.decoder.commit(n).map_err(|e| Ending::Fatal(e.into()))?,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Ending::Lost(e.into())),
            }
        }
    }

    /// Poll for handed-back batches often while some are out, rarely when none is.
    fn set_poll(&mut self, st: &State) {
        let out = st.delivered.iter().zip(&st.consumed).any(|(d, c)| d > c);
        self.poll = if out { CREDIT_POLL } else { IDLE_POLL };
    }

    /// Wait until the socket is readable or the poll period passes; true if readable. A socket
    /// read timeout would not do: the kernel rounds it up to a scheduler tick (4 ms measured),
    /// which throttled a busy link to a window per tick; `ppoll` sleeps on a high-resolution
    /// timer.
    fn readable(&self) -> Result<bool, Ending> {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd { fd: self.stream.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ts = libc::timespec {
            tv_sec: self.poll.as_secs() as libc::time_t,
            tv_nsec: self.poll.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask; all outlive the call.
        let n = unsafe { libc::ppoll(&mut fd, 1, &ts, std::ptr::null()) };
        match n {
            0 => Ok(false),
            n if n > 0 => Ok(true),
            _ => match std::io::Error::last_os_error() {
                e if e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
                e => Err(Ending::Lost(e.into())),
            },
        }
    }

    /// Take back the batches shards have finished with, and tell the peer: at once when `now`
    /// (nothing arrived within the poll, or the peer said goodbye), else once a channel has a
    /// quarter of its window to grant. So a busy link sends one credit frame per several
    /// batches, and a quiet one answers within [`CREDIT_POLL`].
    fn grant(&mut self, st: &mut State, now: bool) -> Result<(), Ending> {
        for (ch, ring) in st.rings.iter_mut().enumerate() {
            while let Some(b) = ring.reclaim() {
                st.consumed[ch] += 1;
                st.pool.push(b);
            }
        }
        if self.sent.0 == st.next && self.sent.1 == st.consumed {
            return Ok(());
        }
        let quarter = (self.shared.spec.settings.credits as u64 / 4).max(1);
        let due = self.sent.1.len() != st.consumed.len()
            || st.consumed.iter().zip(&self.sent.1).any(|(c, s)| c - s >= quarter);
        if !now && !due {
            return Ok(());
        }
        self.out.clear();
        wire::encode_credit(st.next, &st.consumed, &mut self.out).expect("aligned");
        (&self.stream).write_all(&self.out).map_err(|e| Ending::Lost(e.into()))?;
        self.sent.0 = st.next;
        self.sent.1.clone_from(&st.consumed);
        Ok(())
    }
}

/// Check one Data frame and push its batch to the receiving shard. Hot path.
fn deliver(shared: &Shared, (peer, shift): (usize, i64), st: &mut State, payload: &[u8]) -> Result<(), LinkFault> {
    let spec = &shared.spec;
    let (seq, from, to) = wire::batch_prefix(payload)?;
    if seq < st.next {
        return Ok(()); // sent again after a reconnect, and already here
    }
    if seq > st.next {
        return Err(LinkFault::Sequence { what: "frame", seq, expected: st.next });
    }
    let (them, me) = (&spec.nodes[peer], &spec.nodes[spec.me]);
    if !them.shards.contains(&(from as usize)) || !me.shards.contains(&(to as usize)) {
        return Err(wire::WireError::Channel { from, to }.into());
    }
    let ch = channel_index(them, me, from as usize, to as usize);
    let mut batch = st.pool.pop().unwrap_or_default();
    wire::decode_batch(payload, shared.limits, shift, &mut batch).map_err(|source| LinkFault::Batch { seq, source })?;
    st.delivered[ch] += 1;
    if batch.entries.is_empty() {
        st.consumed[ch] += 1; // nothing for the shard to finish: credit it at once
        st.pool.push(batch);
    } else {
        let ring = &mut st.rings[ch];
        if ring.try_send(batch).is_err() {
            return Err(LinkFault::Credit { from, to });
        }
        ring.peer.notify();
    }
    st.next += 1;
    Ok(())
}
