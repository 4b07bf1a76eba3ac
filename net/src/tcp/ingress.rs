//! The tcp source instance: a non-blocking listener and its connections, polled by the shard loop
//! itself. Each `produce` call returns at most one record, serving connections in turn (a burst
//! each) and accepting new ones once per round; when no connection has a whole record buffered it
//! returns [`Produced::Idle`] and the shard moves on. While the engine is backpressured the shard
//! does not call it, so nothing is read and TCP flow control slows the clients.
//!
//! The source enforces its [`Limits`]: a connection over `max_connections` is answered with an
//! error and closed at accept; the connections themselves enforce the rest. Each refusal is
//! counted ([`TcpIngress::counts`]) and logged once at warn (rate-limited against floods). A
//! parked shard is woken for the earliest idle deadline ([`Ingress::due_ns`]).

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use dirigo_actors::record::{Schema, Value};
use rkyv::util::AlignedVec;

use super::conn::{refuse, Connection, SourceCx, Step};
use super::limits::{IngressCounts, Limits, Refusal, RefusalLog};
use super::readiness::Readiness;
use super::uring::UringRx;
use super::{TcpIo, WireFormat};
use super::{POLL_LISTEN_NS, POLL_OPEN_NS, READ_CHUNK};
use crate::clock::now_ns;
use crate::ingress::{Ingress, IoWakeup, Produced};
use crate::signal::ShardSignal;

/// Records served from one connection before the next one gets its turn.
const BURST: u32 = 32;
/// Connections accepted per round (the rest wait in the kernel's backlog).
const ACCEPTS_PER_ROUND: usize = 16;

/// What serving one connection gave.
enum Served {
    Event(Produced),
    Empty,
    Closed,
}

/// What a tcp source instance is built from (cloned into the source's factory).
#[derive(Clone, Debug)]
pub struct IngressSpec {
    /// `app/source`, for logs.
    pub name: String,
    pub format: WireFormat,
    pub schema: Schema,
    /// Position of the app's event-time field, if it has one.
    pub event_time_field: Option<usize>,
    /// How the connections are received (`[engine] tcp_io`).
    pub io: TcpIo,
    /// What the source lets its clients hold.
    pub limits: Limits,
}

/// A tcp source on its shard.
pub struct TcpIngress {
    listener: Option<TcpListener>,
    spec: IngressSpec,
    /// Rings the shard's doorbell when a socket has input while the shard is parked; None until
    /// attached, or after it failed (the shard then re-polls on a timer).
    readiness: Option<Readiness>,
    /// The io_uring receive path (`tcp_io = "uring"`), set up by `attach`; None: `recv`.
    uring: Option<UringRx>,
    conns: Vec<Connection>,
    /// The connection being served, and how many records it got in this turn.
    cursor: usize,
    served: u32,
    /// Where reads land that do not fit a connection's own buffer (see `conn.rs`).
    scratch: Box<[u8]>,
    /// Connections, records and refusals over the source's life.
    counts: IngressCounts,
    log: RefusalLog,
}

impl TcpIngress {
    /// A source accepting on `listener` (None: its listener could not be handed over; it then
    /// produces nothing, and the cause was logged).
    pub fn new(listener: Option<TcpListener>, spec: IngressSpec) -> TcpIngress {
        if let Some(l) = &listener {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(source = %spec.name, %addr, format = %spec.format, "tcp source listening");
            }
        }
        TcpIngress {
            listener,
            spec,
            readiness: None,
            uring: None,
            conns: Vec::new(),
            cursor: 0,
            served: 0,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            counts: IngressCounts::default(),
            log: RefusalLog::default(),
        }
    }

    /// Connections, records and refusals so far.
    pub fn counts(&self) -> IngressCounts {
        self.counts
    }

    fn readiness_failed(&mut self, e: std::io::Error) {
        no_readiness(&mut self.readiness, &self.spec.name, e);
    }

    /// Open connections.
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// One step of the connection under the cursor.
    fn serve(&mut self, values: &mut Vec<Value>, bytes: &mut AlignedVec) -> Served {
        let cx = SourceCx {
            name: &self.spec.name,
            schema: &self.spec.schema,
            event_time_field: self.spec.event_time_field,
            idle_ns: self.spec.limits.idle_ns(),
        };
        let step = self.conns[self.cursor].next(cx, values, bytes, self.uring.as_mut(), &mut self.scratch);
        if !matches!(step, Step::Event(_)) {
            if let Some((r, msg)) = self.conns[self.cursor].take_refusal() {
                let peer = self.conns[self.cursor].peer();
                self.refused(r, peer, &msg);
            }
        }
        match step {
            Step::Event(p) => {
                self.served += 1;
                self.counts.records += 1;
                Served::Event(p)
            }
            Step::Empty => Served::Empty,
            Step::Closed => {
                let c = self.conns.swap_remove(self.cursor);
                if let (Some(u), Some(t)) = (&mut self.uring, c.ring()) {
                    u.close(t);
                }
                tracing::info!(source = %self.spec.name, peer = %c.peer(), accepted = c.accepted, "connection closed");
                self.served = 0;
                Served::Closed
            }
        }
    }

    /// Count a refusal, and log it unless a flood of them already filled this second's quota.
    fn refused(&mut self, r: Refusal, peer: std::net::SocketAddr, msg: &str) {
        self.counts.refused(r);
        if self.log.admit(&self.spec.name, now_ns()) {
            tracing::warn!(source = %self.spec.name, %peer, refusal = ?r, "refused: {msg}");
        }
    }

    /// Accept the connections waiting in the backlog (up to a round's worth); those over
    /// `max_connections` are answered with an error and closed.
    fn accept(&mut self) {
        if self.log.suppressed() > 0 {
            self.log.roll(&self.spec.name, now_ns());
        }
        for _ in 0..ACCEPTS_PER_ROUND {
            let Some(listener) = &self.listener else { return };
            match listener.accept() {
                Ok((stream, peer)) if self.conns.len() >= self.spec.limits.max_connections => {
                    let max = self.spec.limits.max_connections;
                    let msg = format!("connection refused: this source already serves its max_connections ({max})");
                    refuse(stream, self.spec.format, &msg, &mut self.scratch);
                    self.refused(Refusal::OverCapacity, peer, &msg);
                }
                Ok((stream, peer)) => match Connection::new(stream, peer, self.spec.format, &self.spec.limits) {
                    Ok(mut c) => {
                        if let Some(u) = &mut self.uring {
                            match u.open(c.fd()) {
                                Ok(t) => c.set_ring(t),
                                Err(e) => {
                                    tracing::warn!(source = %self.spec.name, %peer, "io_uring receive failed, using recv: {e}")
                                }
                            }
                        }
                        if let Some(Err(e)) = self.readiness.as_ref().map(|r| r.add(c.fd())) {
                            no_readiness(&mut self.readiness, &self.spec.name, e);
                        }
                        tracing::info!(source = %self.spec.name, %peer, "client connected");
                        self.counts.connections += 1;
                        self.conns.push(c);
                    }
                    Err(e) => tracing::warn!(source = %self.spec.name, %peer, "cannot set up connection: {e}"),
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and the like: keep serving the open connections, retry next round.
                    tracing::warn!(source = %self.spec.name, "accept failed: {e}");
                    return;
                }
            }
        }
    }
}

impl Ingress for TcpIngress {
    /// On the shard's thread, before the first poll: set up the io_uring receive path if the
    /// config asks for it (falling back to `recv`, logged, if the kernel cannot), and wake the
    /// shard owning `signal` when input arrives while it is parked (see `readiness.rs`; on
    /// failure the shard keeps polling on a timer, and the cause is logged).
    fn attach(&mut self, signal: &Arc<ShardSignal>) {
        if self.spec.io == TcpIo::Uring {
            match UringRx::new() {
                Ok(u) => self.uring = Some(u),
                Err(e) => tracing::warn!(source = %self.spec.name, "tcp_io = \"uring\" unavailable, using recv: {e}"),
            }
        }
        let r = Readiness::new(signal.clone(), &self.spec.name);
        let r = r.and_then(|r| match &self.uring {
            Some(u) => r.add(u.eventfd()).map(|()| r),
            None => Ok(r),
        });
        let r = r.and_then(|r| match &self.listener {
            Some(l) => r.add(l.as_raw_fd()).map(|()| r),
            None => Ok(r),
        });
        match r {
            Ok(r) => self.readiness = Some(r),
            Err(e) => self.readiness_failed(e),
        }
    }

    /// How a parked shard learns that this source has input.
    fn wakeup(&self) -> IoWakeup {
        match (&self.readiness, self.conns.is_empty()) {
            (Some(_), _) => IoWakeup::Readiness,
            (None, true) => IoWakeup::Poll(POLL_LISTEN_NS),
            (None, false) => IoWakeup::Poll(POLL_OPEN_NS),
        }
    }

    /// Before the shard parks: have its doorbell rung when input arrives. False: do not park
    /// now (input already waits in the ring, or arming failed and the source fell back to timed
    /// polls).
    fn arm(&mut self) -> bool {
        let Some(r) = &self.readiness else { return true };
        if let Some(u) = &self.uring {
            u.clear_eventfd(); // completions after this signal it again
        }
        if let Err(e) = r.arm() {
            self.readiness_failed(e);
            return false;
        }
        !self.uring.as_mut().is_some_and(UringRx::has_input)
    }

    /// Doorbell rings by readiness since the last call.
    fn take_io_wakes(&self) -> u64 {
        self.readiness.as_ref().map_or(0, Readiness::take_wakes)
    }

    /// The earliest deadline of a connection: when the silent one times out, or a failed one's
    /// drain ends (no input would wake the shard for either). One pass over the connections,
    /// as the shard parks.
    fn due_ns(&self) -> Option<u64> {
        let idle_ns = self.spec.limits.idle_ns();
        self.conns.iter().map(|c| c.due_ns(idle_ns)).min()
    }

    /// The next record from any connection, or `Idle` after one round found none (hot path).
    fn produce(&mut self, values: &mut Vec<Value>, bytes: &mut AlignedVec) -> Produced {
        for _ in 0..=self.conns.len() {
            if self.cursor >= self.conns.len() {
                self.cursor = 0;
                self.accept();
                if let Some(u) = &mut self.uring {
                    u.reap();
                }
                if self.conns.is_empty() {
                    return Produced::Idle;
                }
            }
            if self.served < BURST {
                match self.serve(values, bytes) {
                    Served::Event(p) => return p,
                    Served::Closed => continue, // another connection took its place
                    Served::Empty => {}
                }
            }
            self.cursor += 1;
            self.served = 0;
        }
        Produced::Idle
    }
}

/// Drop a failed readiness waker: the source falls back to timed polls.
fn no_readiness(readiness: &mut Option<Readiness>, name: &str, e: std::io::Error) {
    let every_us = POLL_OPEN_NS / 1000;
    tracing::warn!(source = name, "no readiness wake-ups ({e}): a parked shard re-polls every {every_us} µs");
    *readiness = None;
}
