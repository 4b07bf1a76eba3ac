//! Egress of a tcp sink: each shard's sink instance encodes its records (NDJSON lines or binary
//! Record frames) into a buffer and hands it, whole, to the sink's one edge thread, which owns
//! the listener and writes every buffer to every subscriber. Buffers go back to the shards
//! through a pool, so steady state allocates nothing. A subscriber sees the output produced
//! after it subscribed; one that falls more than [`MAX_LAG`] bytes behind is disconnected, so a
//! slow subscriber never slows the engine.

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{encode_frame, FrameType};
use dirigo_actors::record::{Schema, TrustedRecord};
use rkyv::util::AlignedVec;

use super::wire::{encode_end, encode_hello};
use super::BindError;
use super::WireFormat;

/// Bytes a subscriber may fall behind before it is disconnected.
pub const MAX_LAG: usize = 16 << 20;
/// A shard hands its buffer over once it holds this much (else at its periodic flush).
const HANDOFF_BYTES: usize = 64 * 1024;
/// Buffers kept for reuse.
const POOL: usize = 64;
/// How long the edge thread keeps writing to subscribers after the sink ended.
const LINGER: Duration = Duration::from_secs(2);

/// A tcp sink's endpoint: its listener, the edge thread that serves it, and the channel that
/// feeds that thread. Shared by the sink's factory; the thread starts with the first instance
/// and ends (after writing out what it holds) when the hub is dropped with the plan.
pub struct EgressHub {
    name: String,
    format: WireFormat,
    schema: Schema,
    addr: SocketAddr,
    listener: Mutex<Option<TcpListener>>,
    tx: Mutex<Option<flume::Sender<AlignedVec>>>,
    rx: flume::Receiver<AlignedVec>,
    pool: (flume::Sender<AlignedVec>, flume::Receiver<AlignedVec>),
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EgressHub {
    /// Listen on `listen` for subscribers to the sink `name` (`app/sink`).
    pub fn bind(listen: &str, format: WireFormat, schema: Schema, name: String) -> Result<EgressHub, BindError> {
        let listener = super::bind(listen)?;
        let addr = listener.local_addr().map_err(|source| BindError::Listen {
            addr: listen.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            source,
        })?;
        let (tx, rx) = flume::unbounded();
        Ok(EgressHub {
            name,
            format,
            schema,
            addr,
            listener: Mutex::new(Some(listener)),
            tx: Mutex::new(Some(tx)),
            rx,
            pool: flume::bounded(POOL),
            thread: Mutex::new(None),
        })
    }

    /// The address subscribers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A sink instance for one shard; the first one starts the edge thread.
    pub fn instance(&self) -> EgressSink {
        let tx = self.tx.lock().ok().and_then(|t| t.clone());
        if let Some(listener) = self.listener.lock().ok().and_then(|mut l| l.take()) {
            let edge = EdgeThread::new(self, listener);
            let spawned = std::thread::Builder::new()
                .name(format!("dirigo-egress-{}", self.addr.port()))
                .spawn(move || edge.run());
            match spawned {
                Ok(h) => {
                    tracing::info!(sink = %self.name, addr = %self.addr, format = %self.format, "tcp sink listening");
                    *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
                }
                Err(e) => tracing::error!(sink = %self.name, "cannot start the egress thread: {e}"),
            }
        }
        EgressSink {
            tx,
            pool: self.pool.1.clone(),
            format: self.format,
            schema: self.schema.clone(),
            buf: AlignedVec::new(),
            line: String::new(),
        }
    }
}

impl Drop for EgressHub {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

/// One shard's instance of a tcp sink: encodes records and hands buffers to the edge thread.
pub struct EgressSink {
    tx: Option<flume::Sender<AlignedVec>>,
    pool: flume::Receiver<AlignedVec>,
    format: WireFormat,
    schema: Schema,
    buf: AlignedVec,
    line: String,
}

impl EgressSink {
    /// Encode one record. Hot path.
    pub fn push(&mut self, rec: TrustedRecord<'_>) {
        match self.format {
            WireFormat::Binary => {
                let _ = encode_frame(FrameType::Record, rec.bytes(), &mut self.buf);
            }
            WireFormat::Ndjson => {
                self.line.clear();
                self.schema.write_json(rec.get(), &mut self.line);
                self.line.push('\n');
                self.buf.extend_from_slice(self.line.as_bytes());
            }
        }
        if self.buf.len() >= HANDOFF_BYTES {
            self.flush();
        }
    }

    /// Hand the buffered output to the edge thread, and take a recycled buffer.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut next = self.pool.try_recv().unwrap_or_default();
        next.clear();
        let full = std::mem::replace(&mut self.buf, next);
        if let Some(tx) = &self.tx {
            let _ = tx.send(full);
        }
    }
}

/// A subscriber and the bytes it has not taken yet.
struct Subscriber {
    stream: TcpStream,
    peer: SocketAddr,
    pending: Vec<u8>,
}

impl Subscriber {
    /// Queue `bytes` and write what the socket takes; false: drop this subscriber.
    fn send(&mut self, bytes: &[u8], sink: &str) -> bool {
        if self.pending.len() + bytes.len() > MAX_LAG {
            tracing::warn!(sink, peer = %self.peer, "subscriber is {} bytes behind: disconnected", self.pending.len());
            return false;
        }
        self.pending.extend_from_slice(bytes);
        self.write_pending(sink)
    }

    fn write_pending(&mut self, sink: &str) -> bool {
        let mut done = 0;
        let ok = loop {
            if done == self.pending.len() {
                break true;
            }
            match (&self.stream).write(&self.pending[done..]) {
                Ok(0) => break false,
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::info!(sink, peer = %self.peer, "subscriber gone: {e}");
                    break false;
                }
            }
        };
        self.pending.drain(..done);
        ok
    }
}

/// Let this thread run on any CPU: it was spawned from a pinned shard and inherited its mask.
fn unpin() {
    // SAFETY: `cpu_set_t` is a plain bit set, valid zeroed; CPU_SET writes inside it, and
    // sched_setaffinity(0, ..) only reads the set we own for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The edge thread of one tcp sink.
struct EdgeThread {
    name: String,
    format: WireFormat,
    listener: TcpListener,
    rx: flume::Receiver<AlignedVec>,
    pool: flume::Sender<AlignedVec>,
    hello: AlignedVec,
    subs: Vec<Subscriber>,
}

impl EdgeThread {
    fn new(hub: &EgressHub, listener: TcpListener) -> EdgeThread {
        let mut hello: AlignedVec = AlignedVec::new();
        if hub.format == WireFormat::Binary {
            encode_hello(&hub.schema, &mut hello);
        }
        let (rx, pool) = (hub.rx.clone(), hub.pool.0.clone());
        EdgeThread { name: hub.name.clone(), format: hub.format, listener, rx, pool, hello, subs: Vec::new() }
    }

    fn run(mut self) {
        unpin();
        loop {
            let behind = self.subs.iter().any(|s| !s.pending.is_empty());
            let wait = Duration::from_millis(if behind { 1 } else { 5 });
            match self.rx.recv_timeout(wait) {
                Ok(buf) => self.broadcast(buf),
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(buf) = self.rx.try_recv() {
                self.broadcast(buf);
            }
            self.accept();
            let name = &self.name;
            self.subs.retain_mut(|s| s.write_pending(name));
        }
        self.finish();
    }

    fn broadcast(&mut self, buf: AlignedVec) {
        let name = &self.name;
        self.subs.retain_mut(|s| s.send(&buf, name));
        let _ = self.pool.try_send(buf);
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nonblocking(true) {
                        tracing::warn!(sink = %self.name, %peer, "cannot set up subscriber: {e}");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    tracing::info!(sink = %self.name, %peer, "subscriber connected");
                    let mut sub = Subscriber { stream, peer, pending: Vec::new() };
                    if sub.send(&self.hello, &self.name) {
                        self.subs.push(sub);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(sink = %self.name, "accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// The sink ended: an End frame (binary), then write out what is pending, for a while.
    fn finish(mut self) {
        if self.format == WireFormat::Binary {
            let mut end: AlignedVec = AlignedVec::new();
            encode_end(&mut end);
            let name = &self.name;
            self.subs.retain_mut(|s| s.send(&end, name));
        }
        let deadline = Instant::now() + LINGER;
        while Instant::now() < deadline && self.subs.iter().any(|s| !s.pending.is_empty()) {
            let name = &self.name;
            self.subs.retain_mut(|s| s.write_pending(name));
            std::thread::sleep(Duration::from_millis(1));
        }
        for s in &self.subs {
            let _ = s.stream.shutdown(Shutdown::Both);
        }
    }
}
