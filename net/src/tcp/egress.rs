//! Egress of a tcp sink: each shard's sink instance encodes its records (NDJSON lines or binary
//! Record frames) into a buffer and hands it, whole, to the sink's one edge thread, which owns
//! the listener and writes every buffer to every subscriber. Buffers go back to the shards
//! through a pool, so steady state allocates nothing.
//!
//! What happens when subscribers do not keep up is the sink's [`Delivery`] mode:
//! - `block` (the default): nothing is dropped. Output produced before the first subscriber
//!   connects waits for it, up to [`MAX_LAG`] bytes in the channel; then, and whenever the slowest
//!   subscriber is [`MAX_LAG`] behind, the edge thread stops taking buffers, the channel fills,
//!   and the shards' hand-over waits: the sink's inputs back up to the sources. A subscriber that
//!   connects later sees the output from then on. A shard waiting logs at warn every 5 s. When
//!   the sink ends with output still queued, it waits up to 2 s for a subscriber; what no one
//!   takes then is dropped, counted and logged at warn.
//! - `lossy`: the engine never waits. A subscriber sees the output produced after it subscribed;
//!   one that falls more than [`MAX_LAG`] bytes behind is disconnected. Every record produced
//!   while no one subscribes, and every record a disconnected subscriber had not taken, is
//!   counted ([`EgressHub::counts`]) and logged at warn (at most once a second per sink, and in
//!   total when the sink ends).

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{encode_frame, FrameType};
use dirigo_actors::record::{Schema, TrustedRecord};
use rkyv::util::AlignedVec;

use super::wire::{encode_end, encode_hello};
use super::BindError;
use super::{Delivery, WireFormat};

/// Bytes a subscriber may fall behind before it is disconnected.
pub const MAX_LAG: usize = 16 << 20;
/// A shard hands its buffer over once it holds this much (else at its periodic flush).
const HANDOFF_BYTES: usize = 64 * 1024;
/// Buffers the channel holds in `block` mode: [`MAX_LAG`] bytes of full buffers.
const BLOCK_BUFFERS: usize = MAX_LAG / HANDOFF_BYTES;
/// A blocked shard logs this often while it waits.
const BLOCKED_LOG: Duration = Duration::from_secs(5);

/// A buffer of encoded records and how many records it holds.
type Chunk = (AlignedVec, u64);

/// What a tcp sink has delivered and dropped so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressCounts {
    /// Records dropped: produced while no one subscribed, or not taken by a subscriber that was
    /// disconnected, counted once per subscriber that missed them (`lossy`); in `block` mode,
    /// only what was still queued when the sink ended with no subscriber.
    pub dropped: u64,
    /// Subscribers disconnected for falling behind (`lossy` only).
    pub disconnected: u64,
}

#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
    disconnected: AtomicU64,
    /// Buffers handed to the edge thread, and buffers it has broadcast.
    sent: AtomicU64,
    done: AtomicU64,
}
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
    delivery: Delivery,
    counters: Arc<Counters>,
    schema: Schema,
    addr: SocketAddr,
    listener: Mutex<Option<TcpListener>>,
    tx: Mutex<Option<flume::Sender<Chunk>>>,
    rx: flume::Receiver<Chunk>,
    pool: (flume::Sender<AlignedVec>, flume::Receiver<AlignedVec>),
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EgressHub {
    /// Listen on `listen` for subscribers to the sink `name` (`app/sink`), delivering as
    /// `delivery` says.
    pub fn bind(
        listen: &str,
        format: WireFormat,
        schema: Schema,
        name: String,
        delivery: Delivery,
    ) -> Result<EgressHub, BindError> {
        let listener = super::bind(listen)?;
        let addr = listener.local_addr().map_err(|source| BindError::Listen {
            addr: listen.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            source,
        })?;
        let (tx, rx) = match delivery {
            Delivery::Block => flume::bounded(BLOCK_BUFFERS),
            Delivery::Lossy => flume::unbounded(),
        };
        Ok(EgressHub {
            name,
            format,
            delivery,
            counters: Arc::new(Counters::default()),
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

    /// The delivery mode.
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// Wait (at most `timeout`) until the edge thread has handled every buffer handed to it, so
    /// that [`counts`](Self::counts) covers all output so far (in `block` mode a buffer waits
    /// for a subscriber, so this may take the whole `timeout`).
    pub fn settle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.counters.done.load(Ordering::Acquire) < self.counters.sent.load(Ordering::Acquire)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Records dropped and subscribers disconnected so far.
    pub fn counts(&self) -> EgressCounts {
        EgressCounts {
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            disconnected: self.counters.disconnected.load(Ordering::Relaxed),
        }
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
            records: 0,
            line: String::new(),
            name: self.name.clone(),
            counters: self.counters.clone(),
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
    tx: Option<flume::Sender<Chunk>>,
    pool: flume::Receiver<AlignedVec>,
    format: WireFormat,
    schema: Schema,
    buf: AlignedVec,
    /// Records in `buf`.
    records: u64,
    line: String,
    name: String,
    counters: Arc<Counters>,
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
        self.records += 1;
        if self.buf.len() >= HANDOFF_BYTES {
            self.flush();
        }
    }

    /// Hand the buffered output to the edge thread, and take a recycled buffer. In `block` mode
    /// this waits while the edge thread is [`MAX_LAG`] behind.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut next = self.pool.try_recv().unwrap_or_default();
        next.clear();
        let full = std::mem::replace(&mut self.buf, next);
        let chunk = (full, std::mem::take(&mut self.records));
        let Some(tx) = &self.tx else { return };
        self.counters.sent.fetch_add(1, Ordering::AcqRel);
        let mut chunk = match tx.try_send(chunk) {
            Ok(()) | Err(flume::TrySendError::Disconnected(_)) => return,
            Err(flume::TrySendError::Full(chunk)) => chunk,
        };
        let started = Instant::now();
        loop {
            match tx.send_timeout(chunk, BLOCKED_LOG) {
                Ok(()) | Err(flume::SendTimeoutError::Disconnected(_)) => return,
                Err(flume::SendTimeoutError::Timeout(back)) => {
                    chunk = back;
                    let waited = started.elapsed().as_secs();
                    tracing::warn!(
                        sink = %self.name,
                        "waiting {waited} s for tcp subscribers to take output (delivery = \"block\")"
                    );
                }
            }
        }
    }
}

/// A subscriber and the bytes it has not taken yet.
struct Subscriber {
    stream: TcpStream,
    peer: SocketAddr,
    pending: Vec<u8>,
    /// The chunks in `pending`: bytes not yet written of each, and its records.
    chunks: VecDeque<(usize, u64)>,
}

impl Subscriber {
    fn new(stream: TcpStream, peer: SocketAddr) -> Subscriber {
        Subscriber { stream, peer, pending: Vec::new(), chunks: VecDeque::new() }
    }

    /// Queue `bytes` (`records` of them) and write what the socket takes; false: drop this
    /// subscriber (lossy: it fell [`MAX_LAG`] behind; `bytes` and what it had pending count as
    /// dropped).
    fn send(&mut self, bytes: &[u8], records: u64, sink: &str, counters: &Counters) -> bool {
        if self.pending.len() + bytes.len() > MAX_LAG {
            let lost = records + self.pending_records();
            tracing::warn!(
                sink, peer = %self.peer,
                "subscriber is {} bytes behind: disconnected; {lost} records it had not taken are dropped (delivery = \"lossy\")",
                self.pending.len()
            );
            counters.dropped.fetch_add(lost, Ordering::Relaxed);
            counters.disconnected.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.pending.extend_from_slice(bytes);
        self.chunks.push_back((bytes.len(), records));
        self.write_pending(sink)
    }

    /// Records in chunks not entirely written.
    fn pending_records(&self) -> u64 {
        self.chunks.iter().map(|c| c.1).sum()
    }

    fn taken(&mut self, mut written: usize) {
        while let Some(front) = self.chunks.front_mut() {
            if front.0 > written {
                front.0 -= written;
                return;
            }
            written -= front.0;
            self.chunks.pop_front();
        }
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
        self.taken(done);
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
    delivery: Delivery,
    counters: Arc<Counters>,
    /// Dropped records not logged yet, and when the last warn was.
    unlogged: u64,
    logged_at: Option<Instant>,
    listener: TcpListener,
    rx: flume::Receiver<Chunk>,
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
        EdgeThread {
            name: hub.name.clone(),
            format: hub.format,
            delivery: hub.delivery,
            counters: hub.counters.clone(),
            unlogged: 0,
            logged_at: None,
            listener,
            rx,
            pool,
            hello,
            subs: Vec::new(),
        }
    }

    fn run(mut self) {
        unpin();
        loop {
            let behind = self.subs.iter().any(|s| !s.pending.is_empty());
            let wait = Duration::from_millis(if behind { 1 } else { 5 });
            if self.may_take() {
                match self.rx.recv_timeout(wait) {
                    Ok(chunk) => self.broadcast(chunk),
                    Err(flume::RecvTimeoutError::Timeout) => {}
                    Err(flume::RecvTimeoutError::Disconnected) => break,
                }
                while self.may_take() {
                    let Ok(chunk) = self.rx.try_recv() else { break };
                    self.broadcast(chunk);
                }
            } else {
                if self.rx.is_disconnected() {
                    break;
                }
                std::thread::sleep(wait);
            }
            self.accept();
            let name = &self.name;
            self.subs.retain_mut(|s| s.write_pending(name));
            self.log_dropped(false);
        }
        self.finish();
    }

    /// Whether to take the next buffer now: always in `lossy` mode; in `block` mode only with a
    /// subscriber, and while every subscriber has room for a full buffer.
    fn may_take(&self) -> bool {
        match self.delivery {
            Delivery::Lossy => true,
            Delivery::Block => {
                !self.subs.is_empty() && self.subs.iter().all(|s| s.pending.len() + HANDOFF_BYTES <= MAX_LAG)
            }
        }
    }

    fn broadcast(&mut self, (buf, records): Chunk) {
        if self.subs.is_empty() {
            // Lossy mode, or block mode ending with no subscriber (finish).
            self.counters.dropped.fetch_add(records, Ordering::Relaxed);
            self.unlogged += records;
        }
        let (name, counters) = (&self.name, &self.counters);
        let before = counters.dropped.load(Ordering::Relaxed);
        self.subs.retain_mut(|s| s.send(&buf, records, name, counters));
        self.unlogged += counters.dropped.load(Ordering::Relaxed) - before;
        let _ = self.pool.try_send(buf);
        self.counters.done.fetch_add(1, Ordering::AcqRel);
    }

    /// Warn about records dropped since the last warn: at most once a second, or now (`all`).
    fn log_dropped(&mut self, all: bool) {
        let due = self.logged_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if self.unlogged > 0 && (due || all) {
            let total = self.counters.dropped.load(Ordering::Relaxed);
            tracing::warn!(
                sink = %self.name,
                "{} records dropped ({total} in all): no subscriber took them (delivery = \"{}\")",
                self.unlogged,
                self.delivery
            );
            self.unlogged = 0;
            self.logged_at = Some(Instant::now());
        }
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
                    let mut sub = Subscriber::new(stream, peer);
                    if sub.send(&self.hello, 0, &self.name, &self.counters) {
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
        // Block mode may end with output queued: it waits for a subscriber a while, then goes
        // out to whoever is there (counted as dropped if no one is).
        let deadline = Instant::now() + LINGER;
        while !self.rx.is_empty() && self.subs.is_empty() && Instant::now() < deadline {
            self.accept();
            std::thread::sleep(Duration::from_millis(5));
        }
        while let Ok(chunk) = self.rx.try_recv() {
            self.broadcast(chunk);
            let name = &self.name;
            self.subs.retain_mut(|s| s.write_pending(name));
        }
        self.log_dropped(true);
        if self.format == WireFormat::Binary {
            let mut end: AlignedVec = AlignedVec::new();
            encode_end(&mut end);
            let (name, counters) = (&self.name, &self.counters);
            self.subs.retain_mut(|s| s.send(&end, 0, name, counters));
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

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};

    use dirigo_actors::record::{FieldType, Record, Value};

    use super::*;

    fn hub(delivery: Delivery) -> EgressHub {
        let schema = Schema::new(vec![("n".into(), FieldType::U64), ("pad".into(), FieldType::Str)]);
        EgressHub::bind("127.0.0.1:0", WireFormat::Ndjson, schema, "t/out".into(), delivery).expect("bind")
    }

    /// Push records `range` (each line about 1 KiB) and flush.
    fn push(sink: &mut EgressSink, range: std::ops::Range<u64>) {
        let pad = "x".repeat(1000);
        for n in range {
            let bytes = Record::from(vec![Value::U64(n), Value::Str(pad.clone())]).to_archive();
            sink.push(TrustedRecord::validate(&bytes).unwrap());
        }
        sink.flush();
    }

    /// The `n` of every line a subscriber reads until `count` lines came.
    fn read(stream: TcpStream, count: usize) -> Vec<u64> {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let lines = BufReader::new(stream).lines().take(count);
        lines.map(|l| serde_json::from_str::<serde_json::Value>(&l.unwrap()).unwrap()["n"].as_u64().unwrap()).collect()
    }

    /// Block mode keeps what was produced before anyone subscribed, and the shard waits while
    /// the edge is `MAX_LAG` behind: every record reaches the subscriber, none is dropped.
    #[test]
    fn block_mode_delivers_everything_and_holds_the_producer_back() {
        let hub = hub(Delivery::Block);
        let addr = hub.local_addr();
        let mut sink = hub.instance();
        push(&mut sink, 0..100); // before any subscriber
                                 // 40 MiB more: more than the channel holds, so the producer must wait for a subscriber.
        const N: u64 = 40_000;
        let (done_tx, done) = flume::bounded(1);
        let producer = std::thread::spawn(move || {
            push(&mut sink, 100..N);
            let _ = done_tx.send(());
            sink
        });
        assert!(done.recv_timeout(Duration::from_millis(500)).is_err(), "the producer was not held back");
        let got = read(TcpStream::connect(addr).unwrap(), N as usize);
        assert_eq!(got, (0..N).collect::<Vec<_>>(), "every record, in order");
        drop(producer.join().unwrap());
        assert_eq!(hub.counts(), EgressCounts::default());
    }

    /// Lossy mode never holds the producer back; what no subscriber took is counted.
    #[test]
    fn lossy_mode_counts_every_dropped_record() {
        let hub = hub(Delivery::Lossy);
        let addr = hub.local_addr();
        let mut sink = hub.instance();
        push(&mut sink, 0..100); // no subscriber: dropped
        let deadline = Instant::now() + Duration::from_secs(10);
        while hub.counts().dropped < 100 {
            assert!(Instant::now() < deadline, "drops not counted: {:?}", hub.counts());
            std::thread::sleep(Duration::from_millis(5));
        }
        let sub = TcpStream::connect(addr).unwrap();
        // A subscriber that reads nothing falls behind and is disconnected: its records count.
        while hub.counts().disconnected == 0 {
            assert!(Instant::now() < deadline, "the lagging subscriber stayed: {:?}", hub.counts());
            push(&mut sink, 0..1000);
        }
        let counts = hub.counts();
        assert!(counts.dropped > 100, "{counts:?}");
        drop(sub);
        drop(sink);
    }
}
