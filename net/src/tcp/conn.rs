//! One client connection of a tcp source: bytes are read (non-blocking) straight into the
//! connection's decoder, and records come out one per call, validated against the app's schema.
//! A bad input is answered with an error (an Error frame or an NDJSON error line), logged, and
//! the connection is closed; records produced before it are already in the engine.
//!
//! The source's [`Limits`] apply here: a line over `max_line` or a frame over `max_frame`, and
//! a connection silent for `idle_timeout`, are refusals: answered and closed like a bad input,
//! and handed to the source ([`Connection::take_refusal`]) to count and log. A connection holds
//! only what its client sent: while its buffer has no free room it reads into the source's
//! scratch buffer and keeps what came (an idle one holds no buffer at all).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

use crate::{validate_batch, validate_record, DecodeError, FrameDecoder, FrameType, ValidateError};
use dirigo_actors::record::{ArchivedRecord, RecordError, Schema, Value};
use rkyv::util::AlignedVec;

use super::limits::{human_size, Limits, Refusal};
use super::uring::{RxToken, UringRx};
use super::wire::{encode_error, error_line, error_message, fits};
use super::WireFormat;
use crate::clock::now_ns;
use crate::ingress::Produced;

/// How long, and how many bytes, a failed connection is drained so its error report is not
/// lost to a reset, before it is closed.
const DRAIN_NS: u64 = 1_000_000_000;
const DRAIN_BYTES: usize = 4 << 20;
/// A connection reads into its own buffer while that has this much free room, else into the
/// source's scratch buffer (and keeps only what arrived).
const MIN_DIRECT: usize = 16 * 1024;
/// Most a line buffer grows beyond what it must hold (as [`crate::decoder::MAX_GROWTH`]).
const MAX_LINE_GROWTH: usize = 256 * 1024;

/// Why a connection is closed. Each is reported to the client where possible, and logged.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("malformed frame: {0}")]
    Frame(DecodeError),
    #[error("a frame declares {declared} payload bytes, over this source's max_frame of {}", human_size(u64::from(*.max)))]
    FrameTooLarge { declared: u32, max: u32 },
    #[error("invalid record: {0}")]
    Invalid(#[from] ValidateError),
    #[error("record {index} does not fit the schema: {source}")]
    Schema { index: u64, source: RecordError },
    #[error("line {line} is not valid UTF-8 (byte {at})")]
    Utf8 { line: u64, at: usize },
    #[error("line {line}: {source}")]
    Json { line: u64, source: RecordError },
    #[error("line {line} is longer than this source's max_line of {}", human_size(*.max as u64))]
    LineTooLong { line: u64, max: usize },
    #[error("no input for {idle:?} (this source's idle_timeout): closing the connection")]
    Idle { idle: std::time::Duration },
    #[error("a client may not send {ty:?} frames")]
    UnexpectedFrame { ty: FrameType },
    #[error("the client reported an error: {0}")]
    FromClient(String),
}

impl From<DecodeError> for IngressError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Oversized { declared, max } => IngressError::FrameTooLarge { declared, max },
            e => IngressError::Frame(e),
        }
    }
}

impl IngressError {
    /// The limit this error enforces, if it is a refusal rather than a bad input.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            IngressError::FrameTooLarge { .. } | IngressError::LineTooLong { .. } => Some(Refusal::Oversized),
            IngressError::Idle { .. } => Some(Refusal::Idle),
            _ => None,
        }
    }
}

/// Why a read failed: the socket, or a frame header it delivered.
enum ReadFail {
    Io(std::io::Error),
    Decode(DecodeError),
}

/// What one call on a connection gave.
#[derive(Debug)]
pub enum Step {
    Event(Produced),
    /// Nothing now: the socket has no more bytes.
    Empty,
    /// The connection is over; drop it.
    Closed,
}

/// What a connection needs to know about its source.
#[derive(Clone, Copy, Debug)]
pub struct SourceCx<'a> {
    pub name: &'a str,
    pub schema: &'a Schema,
    pub event_time_field: Option<usize>,
    /// `idle_timeout` in ns.
    pub idle_ns: u64,
}

enum Input {
    Binary(FrameDecoder),
    Ndjson(Lines),
}

enum State {
    Open,
    Draining { until_ns: u64, budget: usize },
}

/// One client connection.
pub struct Connection {
    stream: TcpStream,
    /// Where its bytes come from: None: `recv` on the socket; Some: the source's io_uring.
    ring: Option<RxToken>,
    peer: SocketAddr,
    input: Input,
    /// Records of a validated batch not yet produced: their archives and event times.
    staged: AlignedVec,
    spans: VecDeque<(usize, usize, u64)>,
    state: State,
    eof: bool,
    /// When the client last sent bytes, or the connection last ran dry after producing
    /// (engine clock): its idle time counts from there.
    last_input_ns: u64,
    /// `accepted` when the idle clock last started (records produced since restart it).
    accepted_at_input: u64,
    /// A limit this connection ran into, and its message, until the source takes it.
    refusal: Option<(Refusal, String)>,
    /// Records accepted into the engine from this connection.
    pub accepted: u64,
}

impl Connection {
    /// A connection accepted from `peer`, under the source's `limits`; the stream is made
    /// non-blocking. Allocates no buffer until its client sends something.
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        format: WireFormat,
        limits: &Limits,
    ) -> std::io::Result<Connection> {
        stream.set_nonblocking(true)?;
        let _ = stream.set_nodelay(true);
        let input = match format {
            WireFormat::Binary => Input::Binary(FrameDecoder::new(limits.max_frame)),
            WireFormat::Ndjson => Input::Ndjson(Lines::new(limits.max_line)),
        };
        let (staged, spans) = (AlignedVec::new(), VecDeque::new());
        Ok(Connection {
            stream,
            ring: None,
            peer,
            input,
            staged,
            spans,
            state: State::Open,
            eof: false,
            last_input_ns: now_ns(),
            accepted_at_input: 0,
            refusal: None,
            accepted: 0,
        })
    }

    /// The limit this connection ran into since the last call (it is being closed), with the
    /// message its client was sent.
    pub fn take_refusal(&mut self) -> Option<(Refusal, String)> {
        self.refusal.take()
    }

    /// When (engine clock) this connection must be polled even without input: its idle
    /// deadline, or the end of its drain once it failed.
    pub fn due_ns(&self, idle_ns: u64) -> u64 {
        match self.state {
            State::Open => self.last_input_ns.saturating_add(idle_ns),
            State::Draining { until_ns, .. } => until_ns,
        }
    }

    /// Bytes of receive buffer this connection holds (its decoder's or its line buffer).
    pub fn buffer_capacity(&self) -> usize {
        match &self.input {
            Input::Binary(d) => d.capacity(),
            Input::Ndjson(l) => l.buf.len(),
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Receive through the source's io_uring from now on.
    pub fn set_ring(&mut self, token: RxToken) {
        self.ring = Some(token);
    }

    /// Its place in the source's io_uring, if it receives through it.
    pub fn ring(&self) -> Option<RxToken> {
        self.ring
    }

    /// The socket's fd (for readiness notifications).
    pub fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.stream)
    }

    /// The next record, reading the socket (or taking from `ring`) at most once (hot path);
    /// `scratch` is the source's buffer for reads that do not fit the connection's own.
    pub fn next(
        &mut self,
        cx: SourceCx<'_>,
        values: &mut Vec<Value>,
        bytes: &mut AlignedVec,
        mut ring: Option<&mut UringRx>,
        scratch: &mut [u8],
    ) -> Step {
        if let State::Draining { .. } = self.state {
            return self.drain(ring, scratch);
        }
        let mut read = false;
        loop {
            match self.decode(cx, values, bytes) {
                Ok(Some(p)) => {
                    self.accepted += 1;
                    return Step::Event(p);
                }
                Ok(None) if self.eof => return self.at_eof(cx),
                Ok(None) if read => return Step::Empty,
                Ok(None) => {}
                Err(e) => return self.fail(cx, e),
            }
            read = true;
            match self.read(ring.as_deref_mut(), scratch) {
                Ok(true) => {}
                Ok(false) => return self.quiet(cx),
                Err(ReadFail::Decode(e)) => return self.fail(cx, e.into()),
                Err(ReadFail::Io(e)) => {
                    tracing::warn!(source = cx.name, peer = %self.peer, accepted = self.accepted, "connection lost: {e}");
                    return Step::Closed;
                }
            }
        }
    }

    /// Nothing to read now: past `idle_timeout` since the last bytes, the connection is closed.
    /// Records produced since then restart the clock: a client is idle from when its input was
    /// used up (a long backlog, or backpressure, is not its silence).
    fn quiet(&mut self, cx: SourceCx<'_>) -> Step {
        let now = now_ns();
        if self.accepted != self.accepted_at_input {
            (self.accepted_at_input, self.last_input_ns) = (self.accepted, now);
            return Step::Empty;
        }
        if now.saturating_sub(self.last_input_ns) < cx.idle_ns {
            return Step::Empty;
        }
        self.fail(cx, IngressError::Idle { idle: std::time::Duration::from_nanos(cx.idle_ns) })
    }

    /// Read once into the decoder (or line buffer): in place while its free room is large
    /// enough, else into `scratch`, keeping what arrived. `Ok(false)`: no bytes now. End of
    /// stream sets `eof`. The decoder checks each header as it arrives: a bad one fails the
    /// read, and frames that came in the same read are refused with it (those of earlier reads
    /// were produced already).
    fn read(&mut self, ring: Option<&mut UringRx>, scratch: &mut [u8]) -> Result<bool, ReadFail> {
        let window = match &mut self.input {
            Input::Binary(d) => match d.spare_window(MIN_DIRECT) {
                Ok(w) => w,
                Err(_) => return Ok(false), // failed decoders are drained, not read
            },
            Input::Ndjson(l) => l.spare_window(MIN_DIRECT),
        };
        let direct = window.is_some();
        let n = match receive(&self.stream, self.ring, ring, window.unwrap_or(&mut *scratch)) {
            Ok(0) => {
                self.eof = true;
                return Ok(true);
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return Ok(false),
            Err(e) => return Err(ReadFail::Io(e)),
        };
        (self.accepted_at_input, self.last_input_ns) = (self.accepted, now_ns());
        match (&mut self.input, direct) {
            (Input::Binary(d), true) => d.commit(n).map_err(ReadFail::Decode)?,
            (Input::Binary(d), false) => d.feed(&scratch[..n]).map_err(ReadFail::Decode)?,
            (Input::Ndjson(l), true) => l.end += n,
            (Input::Ndjson(l), false) => l.extend(&scratch[..n]),
        }
        Ok(true)
    }

    /// The next buffered record, if a whole one is buffered.
    fn decode(
        &mut self,
        cx: SourceCx<'_>,
        values: &mut Vec<Value>,
        bytes: &mut AlignedVec,
    ) -> Result<Option<Produced>, IngressError> {
        if let Some((start, end, event_time)) = self.spans.pop_front() {
            bytes.clear();
            bytes.extend_from_slice(&self.staged[start..end]);
            return Ok(Some(Produced::Archive { key_hash: 0, event_time }));
        }
        self.staged.clear();
        match &mut self.input {
            Input::Binary(d) => decode_frames(d, cx, &mut self.staged, &mut self.spans, bytes),
            Input::Ndjson(l) => l.next_record(cx, values, self.eof),
        }
    }

    /// The client closed its side: a clean end only at a frame boundary.
    fn at_eof(&mut self, cx: SourceCx<'_>) -> Step {
        if let Input::Binary(d) = &mut self.input {
            if let Err(e) = d.finish() {
                return self.fail(cx, e.into());
            }
        }
        tracing::debug!(source = cx.name, peer = %self.peer, accepted = self.accepted, "client closed");
        Step::Closed
    }

    /// Report `e` to the client, then drain the connection until it closes. A bad input is
    /// logged here; a refusal is left to the source to count and log ([`Self::take_refusal`]).
    fn fail(&mut self, cx: SourceCx<'_>, e: IngressError) -> Step {
        let msg = e.to_string();
        match e.refusal() {
            Some(r) => self.refusal = Some((r, msg.clone())),
            None => {
                tracing::warn!(source = cx.name, peer = %self.peer, accepted = self.accepted, "closing connection: {e}")
            }
        }
        let format = match &self.input {
            Input::Binary(_) => WireFormat::Binary,
            Input::Ndjson(_) => WireFormat::Ndjson,
        };
        report_error(&self.stream, format, &msg);
        self.spans.clear();
        if self.eof {
            return Step::Closed;
        }
        self.state = State::Draining { until_ns: now_ns() + DRAIN_NS, budget: DRAIN_BYTES };
        Step::Empty
    }

    /// Discard input (read into `sink`) until the client closes, the budget is spent or the
    /// deadline passes.
    fn drain(&mut self, mut ring: Option<&mut UringRx>, sink: &mut [u8]) -> Step {
        let State::Draining { until_ns, budget } = &mut self.state else { return Step::Empty };
        loop {
            match receive(&self.stream, self.ring, ring.as_deref_mut(), sink) {
                Ok(0) => return Step::Closed,
                Ok(n) if n >= *budget => return Step::Closed,
                Ok(n) => *budget -= n,
                Err(e) if e.kind() == ErrorKind::WouldBlock && now_ns() < *until_ns => return Step::Empty,
                Err(_) => return Step::Closed,
            }
        }
    }
}

/// Send the client an error (an Error frame, or an NDJSON error line) and close the sending
/// side. Best effort: a client that does not read may not get it.
fn report_error(stream: &TcpStream, format: WireFormat, msg: &str) {
    let _ = match format {
        WireFormat::Binary => {
            let mut out: AlignedVec = AlignedVec::new();
            encode_error(msg, &mut out);
            (&*stream).write(&out)
        }
        WireFormat::Ndjson => (&*stream).write(error_line(msg).as_bytes()),
    };
    let _ = stream.shutdown(Shutdown::Write);
}

/// Refuse a connection the source will not serve: send its client `msg` and close it. What the
/// client already sent is read first (into `scratch`, discarded), so that the close does not
/// answer it with a reset that could discard the error before the client reads it.
pub fn refuse(stream: TcpStream, format: WireFormat, msg: &str, scratch: &mut [u8]) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    report_error(&stream, format, msg);
    for _ in 0..4 {
        match (&stream).read(scratch) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// One non-blocking read: from the source's io_uring if the connection receives through it,
/// otherwise `recv` on the socket.
fn receive(
    stream: &TcpStream,
    token: Option<RxToken>,
    ring: Option<&mut UringRx>,
    dst: &mut [u8],
) -> std::io::Result<usize> {
    match (token, ring) {
        (Some(t), Some(r)) => r.read(t, dst),
        _ => (&*stream).read(dst),
    }
}

/// The next record from buffered frames; a Data frame's records are staged whole.
fn decode_frames(
    d: &mut FrameDecoder,
    cx: SourceCx<'_>,
    staged: &mut AlignedVec,
    spans: &mut VecDeque<(usize, usize, u64)>,
    bytes: &mut AlignedVec,
) -> Result<Option<Produced>, IngressError> {
    while let Some(frame) = d.next_frame()? {
        match frame.ty {
            FrameType::Record => {
                let rec = validate_record(frame.payload)?;
                fits(cx.schema, rec).map_err(|source| IngressError::Schema { index: 0, source })?;
                let event_time = event_time(cx, rec);
                bytes.clear();
                bytes.extend_from_slice(frame.payload);
                return Ok(Some(Produced::Archive { key_hash: 0, event_time }));
            }
            FrameType::Data => {
                stage_batch(frame.payload, cx, staged, spans)?;
                if let Some((start, end, event_time)) = spans.pop_front() {
                    bytes.clear();
                    bytes.extend_from_slice(&staged[start..end]);
                    return Ok(Some(Produced::Archive { key_hash: 0, event_time }));
                }
            }
            FrameType::Error => return Err(IngressError::FromClient(error_message(frame.payload))),
            FrameType::End | FrameType::Hello | FrameType::Ping | FrameType::Pong => {}
            ty @ (FrameType::Watermark | FrameType::Credit | FrameType::Proof | FrameType::Control) => {
                return Err(IngressError::UnexpectedFrame { ty })
            }
        }
    }
    Ok(None)
}

/// Validate a whole batch (all or nothing) and stage its archives, 16-aligned.
fn stage_batch(
    payload: &[u8],
    cx: SourceCx<'_>,
    staged: &mut AlignedVec,
    spans: &mut VecDeque<(usize, usize, u64)>,
) -> Result<(), IngressError> {
    let batch = validate_batch(payload)?;
    for (index, e) in batch.iter().enumerate() {
        let index = index as u64;
        fits(cx.schema, e.record).map_err(|source| IngressError::Schema { index, source })?;
    }
    for e in batch.iter() {
        let start = staged.len().next_multiple_of(16);
        staged.resize(start, 0);
        staged.extend_from_slice(e.archive);
        spans.push_back((start, staged.len(), event_time(cx, e.record)));
    }
    Ok(())
}

fn event_time(cx: SourceCx<'_>, rec: &ArchivedRecord) -> u64 {
    let field = cx.event_time_field.and_then(|f| rec.fields.get(f)).and_then(|v| v.as_u64());
    field.unwrap_or_else(|| now_ns() / 1_000_000)
}

/// The NDJSON receive buffer: bytes `[start, end)` are unparsed. Like the frame decoder's, it
/// grows only with what arrives (a partial line plus a bounded slack).
struct Lines {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    line: u64,
    /// Longest line, in bytes (without its newline).
    max: usize,
}

impl Lines {
    fn new(max: usize) -> Lines {
        Lines { buf: Vec::new(), start: 0, end: 0, line: 0, max }
    }

    /// The free room after the unparsed bytes (moved to the front first if that makes room), if
    /// it holds at least `min_len` bytes; None: the buffer would have to grow.
    fn spare_window(&mut self, min_len: usize) -> Option<&mut [u8]> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.buf.len() - self.end < min_len && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        match self.buf.len() - self.end >= min_len.max(1) {
            true => Some(&mut self.buf[self.end..]),
            false => None,
        }
    }

    /// Append bytes that were read elsewhere, growing the buffer by what they need (doubling
    /// while small, by [`MAX_LINE_GROWTH`] at most).
    fn extend(&mut self, bytes: &[u8]) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        let need = self.end - self.start + bytes.len();
        if self.start > 0 && self.buf.len() - self.end < bytes.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.buf.len() < need {
            let len = self.buf.len();
            self.buf.resize(need.max(len + len.min(MAX_LINE_GROWTH)).max(4096), 0);
        }
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Parse the next complete line (at end of stream, the unterminated rest too).
    fn next_record(
        &mut self,
        cx: SourceCx<'_>,
        values: &mut Vec<Value>,
        eof: bool,
    ) -> Result<Option<Produced>, IngressError> {
        loop {
            let pending = &self.buf[self.start..self.end];
            let (line, used) = match pending.iter().position(|&b| b == b'\n') {
                Some(i) if i > self.max => {
                    return Err(IngressError::LineTooLong { line: self.line + 1, max: self.max })
                }
                Some(i) => (&pending[..i], i + 1),
                None if pending.len() > self.max => {
                    return Err(IngressError::LineTooLong { line: self.line + 1, max: self.max })
                }
                None if eof && !pending.is_empty() => (pending, pending.len()),
                None => return Ok(None),
            };
            self.line += 1;
            let text =
                std::str::from_utf8(line).map_err(|e| IngressError::Utf8 { line: self.line, at: e.valid_up_to() });
            let text = text?.trim();
            if !text.is_empty() {
                let parsed =
                    cx.schema.parse_json(text).map_err(|source| IngressError::Json { line: self.line, source });
                self.start += used;
                *values = parsed?;
                return Ok(Some(Produced::Values { event_time: None }));
            }
            self.start += used;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::READ_CHUNK;
    use super::*;
    use crate::BatchWriter;
    use dirigo_actors::record::FieldType;

    fn staged_record(staged: &AlignedVec, span: (usize, usize)) -> &ArchivedRecord {
        dirigo_actors::record::access(&staged[span.0..span.1]).unwrap()
    }

    #[test]
    fn a_batch_is_staged_whole_or_refused() {
        let schema = Schema::new(vec![("k".into(), FieldType::U64)]);
        let cx = SourceCx { name: "t", schema: &schema, event_time_field: Some(0), idle_ns: u64::MAX };
        let mut out: AlignedVec = AlignedVec::new();
        let mut w = BatchWriter::begin(&mut out).unwrap();
        w.push_values(0, &[Value::U64(7)]);
        w.push_values(0, &[Value::U64(8)]);
        let payload = w.finish().unwrap();
        let (mut staged, mut spans) = (AlignedVec::new(), VecDeque::new());
        stage_batch(&out[payload], cx, &mut staged, &mut spans).unwrap();
        assert_eq!(spans.len(), 2);
        let (s, e, t) = spans[1];
        assert_eq!((staged_record(&staged, (s, e)).fields[0].as_u64(), t), (Some(8), 8));
        let other = Schema::new(vec![("k".into(), FieldType::Str)]);
        let cx = SourceCx { schema: &other, ..cx };
        let (mut staged, mut spans) = (AlignedVec::new(), VecDeque::new());
        let mut out: AlignedVec = AlignedVec::new();
        let mut w = BatchWriter::begin(&mut out).unwrap();
        w.push_values(0, &[Value::U64(7)]);
        let payload = w.finish().unwrap();
        assert!(stage_batch(&out[payload], cx, &mut staged, &mut spans).is_err());
        assert!(spans.is_empty());
    }

    const LIMITS: Limits = Limits {
        max_connections: 8,
        idle_timeout: std::time::Duration::from_secs(3600),
        max_line: 1 << 20,
        max_frame: 4 << 20,
    };

    /// A connection accepted on loopback, and its client.
    fn pair(format: WireFormat, limits: &Limits) -> (Connection, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, peer) = listener.accept().unwrap();
        (Connection::new(stream, peer, format, limits).unwrap(), client)
    }

    fn schema() -> Schema {
        Schema::new(vec![("k".into(), FieldType::U64)])
    }

    fn cx(schema: &Schema, idle_ns: u64) -> SourceCx<'_> {
        SourceCx { name: "t", schema, event_time_field: None, idle_ns }
    }

    /// Poll `c` until `ready` holds (the bytes written are on their way through loopback).
    fn poll_until(c: &mut Connection, schema: &Schema, mut ready: impl FnMut(&Connection) -> bool) {
        let (mut values, mut bytes, mut scratch) = (Vec::new(), AlignedVec::new(), vec![0u8; READ_CHUNK]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !ready(c) {
            assert!(std::time::Instant::now() < deadline, "the bytes never arrived");
            let step = c.next(cx(schema, u64::MAX), &mut values, &mut bytes, None, &mut scratch);
            assert!(matches!(step, Step::Empty), "{step:?}");
            std::thread::yield_now();
        }
    }

    fn buffered(c: &Connection) -> usize {
        match &c.input {
            Input::Binary(d) => d.buffered(),
            Input::Ndjson(l) => l.end - l.start,
        }
    }

    #[test]
    fn an_idle_connection_holds_no_buffer_until_it_times_out() {
        let schema = schema();
        let (mut conn, mut client) = pair(WireFormat::Ndjson, &LIMITS);
        let (mut values, mut bytes, mut scratch) = (Vec::new(), AlignedVec::new(), vec![0u8; READ_CHUNK]);
        for _ in 0..3 {
            let step = conn.next(cx(&schema, u64::MAX), &mut values, &mut bytes, None, &mut scratch);
            assert!(matches!(step, Step::Empty));
        }
        assert_eq!(conn.buffer_capacity(), 0, "polling a silent connection allocates nothing");
        assert!(conn.take_refusal().is_none());
        // Past its idle timeout (1 ns here), it is answered and closed.
        let step = conn.next(cx(&schema, 1), &mut values, &mut bytes, None, &mut scratch);
        assert!(matches!(step, Step::Empty), "draining: {step:?}");
        let (refusal, msg) = conn.take_refusal().expect("a refusal");
        assert_eq!(refusal, Refusal::Idle);
        assert!(msg.contains("idle_timeout"), "{msg}");
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, error_line(&msg));
    }

    /// Records produced restart the idle clock: a backlog that took longer than the timeout
    /// to produce is not the client's silence.
    #[test]
    fn the_idle_clock_starts_when_the_input_is_used_up() {
        let schema = schema();
        let (mut conn, mut client) = pair(WireFormat::Ndjson, &LIMITS);
        let (mut values, mut bytes, mut scratch) = (Vec::new(), AlignedVec::new(), vec![0u8; READ_CHUNK]);
        client.write_all(b"{\"k\": 1}\n").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match conn.next(cx(&schema, u64::MAX), &mut values, &mut bytes, None, &mut scratch) {
                Step::Event(_) => break,
                Step::Empty => assert!(std::time::Instant::now() < deadline, "the record never came"),
                Step::Closed => panic!("closed"),
            }
        }
        // Read long ago (as far as a 1 ns timeout is concerned): dry now, but it just produced.
        conn.last_input_ns = 0;
        let step = conn.next(cx(&schema, 1), &mut values, &mut bytes, None, &mut scratch);
        assert!(matches!(step, Step::Empty) && conn.take_refusal().is_none(), "not idle: {step:?}");
        assert!(conn.last_input_ns > 0, "the idle clock restarted");
        // Silent from then on: idle.
        conn.next(cx(&schema, 1), &mut values, &mut bytes, None, &mut scratch);
        assert_eq!(conn.take_refusal().map(|r| r.0), Some(Refusal::Idle));
    }

    #[test]
    fn a_trickling_client_holds_only_what_it_sent() {
        let schema = schema();
        let (mut conn, mut client) = pair(WireFormat::Binary, &LIMITS);
        let header = crate::FrameHeader { ty: FrameType::Record, len: LIMITS.max_frame }.to_bytes();
        client.write_all(&header).unwrap();
        let mut sent = header.len();
        poll_until(&mut conn, &schema, |c| buffered(c) == sent);
        assert!(conn.buffer_capacity() <= 4096, "a header: {} bytes held", conn.buffer_capacity());
        for step in 0..400 {
            let chunk = if step % 2 == 0 { 1 } else { 3000 };
            client.write_all(&vec![0u8; chunk]).unwrap();
            sent += chunk;
            poll_until(&mut conn, &schema, |c| buffered(c) == sent);
            let held = conn.buffer_capacity();
            assert!(held <= sent + crate::decoder::MAX_GROWTH, "{held} bytes held for {sent} sent");
        }
        assert!(sent < LIMITS.max_frame as usize / 4, "the frame is far from whole");
    }

    #[test]
    fn a_trickled_line_holds_only_what_was_sent() {
        let schema = schema();
        let (mut conn, mut client) = pair(WireFormat::Ndjson, &LIMITS);
        let mut sent = 0;
        for step in 0..400 {
            let chunk = if step % 2 == 0 { 1 } else { 2000 };
            client.write_all(&vec![b' '; chunk]).unwrap();
            sent += chunk;
            poll_until(&mut conn, &schema, |c| buffered(c) == sent);
            let held = conn.buffer_capacity();
            assert!(held <= sent + MAX_LINE_GROWTH, "{held} bytes held for {sent} sent");
        }
    }

    #[test]
    fn a_line_over_max_line_is_refused_even_when_whole() {
        let schema = schema();
        let cx = cx(&schema, u64::MAX);
        let mut values = Vec::new();
        let mut lines = Lines::new(12);
        lines.extend(b"{\"k\": 1234}\n{\"k\":    1234}\n");
        assert!(matches!(lines.next_record(cx, &mut values, false), Ok(Some(_))), "12 bytes: fine");
        let e = lines.next_record(cx, &mut values, false).unwrap_err();
        assert!(matches!(e, IngressError::LineTooLong { line: 2, max: 12 }), "{e}");
        assert_eq!(e.to_string(), "line 2 is longer than this source's max_line of 12B");
        assert_eq!(e.refusal(), Some(Refusal::Oversized));
    }

    #[test]
    fn an_oversized_frame_names_max_frame() {
        let e = IngressError::from(DecodeError::Oversized { declared: (4 << 20) + 1, max: 4 << 20 });
        assert_eq!(e.to_string(), "a frame declares 4194305 payload bytes, over this source's max_frame of 4MiB");
        assert_eq!(e.refusal(), Some(Refusal::Oversized));
        assert_eq!(IngressError::from(DecodeError::BadMagic { found: *b"GE" }).refusal(), None);
    }
}
