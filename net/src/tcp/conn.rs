//! One client connection of a tcp source: bytes are read (non-blocking) straight into the
//! connection's decoder, and records come out one per call, validated against the app's schema.
//! A bad input is answered with an error (an Error frame or an NDJSON error line), logged, and
//! the connection is closed; records produced before it are already in the engine.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

use crate::{validate_batch, validate_record, DecodeError, FrameDecoder, FrameType, ValidateError};
use dirigo_actors::record::{ArchivedRecord, RecordError, Schema, Value};
use rkyv::util::AlignedVec;

use super::uring::{RxToken, UringRx};
use super::wire::{encode_error, error_line, error_message, fits};
use super::WireFormat;
use super::{MAX_LINE, MAX_PAYLOAD, READ_CHUNK};
use crate::clock::now_ns;
use crate::ingress::Produced;

/// How long, and how many bytes, a failed connection is drained so its error report is not
/// lost to a reset, before it is closed.
const DRAIN_NS: u64 = 1_000_000_000;
const DRAIN_BYTES: usize = 4 << 20;

/// Why a connection is closed. Each is reported to the client where possible, and logged.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("malformed frame: {0}")]
    Frame(#[from] DecodeError),
    #[error("invalid record: {0}")]
    Invalid(#[from] ValidateError),
    #[error("record {index} does not fit the schema: {source}")]
    Schema { index: u64, source: RecordError },
    #[error("line {line} is not valid UTF-8 (byte {at})")]
    Utf8 { line: u64, at: usize },
    #[error("line {line}: {source}")]
    Json { line: u64, source: RecordError },
    #[error("line {line} is longer than {max} bytes")]
    LineTooLong { line: u64, max: usize },
    #[error("a client may not send {ty:?} frames")]
    UnexpectedFrame { ty: FrameType },
    #[error("the client reported an error: {0}")]
    FromClient(String),
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
    /// Records accepted into the engine from this connection.
    pub accepted: u64,
}

impl Connection {
    /// A connection accepted from `peer`; the stream is made non-blocking.
    pub fn new(stream: TcpStream, peer: SocketAddr, format: WireFormat) -> std::io::Result<Connection> {
        stream.set_nonblocking(true)?;
        let _ = stream.set_nodelay(true);
        let input = match format {
            WireFormat::Binary => Input::Binary(FrameDecoder::new(MAX_PAYLOAD)),
            WireFormat::Ndjson => Input::Ndjson(Lines::default()),
        };
        let (staged, spans) = (AlignedVec::new(), VecDeque::new());
        Ok(Connection { stream, ring: None, peer, input, staged, spans, state: State::Open, eof: false, accepted: 0 })
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

    /// The next record, reading the socket (or taking from `ring`) at most once (hot path).
    pub fn next(
        &mut self,
        cx: SourceCx<'_>,
        values: &mut Vec<Value>,
        bytes: &mut AlignedVec,
        mut ring: Option<&mut UringRx>,
    ) -> Step {
        if let State::Draining { .. } = self.state {
            return self.drain(ring);
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
            match self.read(ring.as_deref_mut()) {
                Ok(true) => {}
                Ok(false) => return Step::Empty,
                Err(ReadFail::Decode(e)) => return self.fail(cx, e.into()),
                Err(ReadFail::Io(e)) => {
                    tracing::warn!(source = cx.name, peer = %self.peer, accepted = self.accepted, "connection lost: {e}");
                    return Step::Closed;
                }
            }
        }
    }

    /// Read once into the decoder. `Ok(false)`: no bytes now. End of stream sets `eof`. The
    /// decoder checks each header as it arrives: a bad one fails the read, and frames that came
    /// in the same read are refused with it (those of earlier reads were produced already).
    fn read(&mut self, ring: Option<&mut UringRx>) -> Result<bool, ReadFail> {
        let window = match &mut self.input {
            Input::Binary(d) => match d.recv_window(READ_CHUNK) {
                Ok(w) => w,
                Err(_) => return Ok(false), // failed decoders are drained, not read
            },
            Input::Ndjson(l) => l.window(),
        };
        let n = match receive(&self.stream, self.ring, ring, window) {
            Ok(0) => {
                self.eof = true;
                return Ok(true);
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return Ok(false),
            Err(e) => return Err(ReadFail::Io(e)),
        };
        match &mut self.input {
            Input::Binary(d) => d.commit(n).map_err(ReadFail::Decode)?,
            Input::Ndjson(l) => l.end += n,
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

    /// Report `e` to the client and the log, then drain the connection until it closes.
    fn fail(&mut self, cx: SourceCx<'_>, e: IngressError) -> Step {
        tracing::warn!(source = cx.name, peer = %self.peer, accepted = self.accepted, "closing connection: {e}");
        let msg = e.to_string();
        let _ = match &self.input {
            Input::Binary(_) => {
                let mut out: AlignedVec = AlignedVec::new();
                encode_error(&msg, &mut out);
                (&self.stream).write(&out)
            }
            Input::Ndjson(_) => (&self.stream).write(error_line(&msg).as_bytes()),
        };
        let _ = self.stream.shutdown(Shutdown::Write);
        self.spans.clear();
        if self.eof {
            return Step::Closed;
        }
        self.state = State::Draining { until_ns: now_ns() + DRAIN_NS, budget: DRAIN_BYTES };
        Step::Empty
    }

    /// Discard input until the client closes, the budget is spent or the deadline passes.
    fn drain(&mut self, mut ring: Option<&mut UringRx>) -> Step {
        let State::Draining { until_ns, budget } = &mut self.state else { return Step::Empty };
        let mut sink = [0u8; 4096];
        loop {
            match receive(&self.stream, self.ring, ring.as_deref_mut(), &mut sink) {
                Ok(0) => return Step::Closed,
                Ok(n) if n >= *budget => return Step::Closed,
                Ok(n) => *budget -= n,
                Err(e) if e.kind() == ErrorKind::WouldBlock && now_ns() < *until_ns => return Step::Empty,
                Err(_) => return Step::Closed,
            }
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
            ty @ (FrameType::Watermark | FrameType::Credit | FrameType::Proof) => {
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

/// The NDJSON receive buffer: bytes `[start, end)` are unparsed.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    line: u64,
}

impl Lines {
    /// Room for one read after the unparsed bytes.
    fn window(&mut self) -> &mut [u8] {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.buf.len() - self.end < READ_CHUNK && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.buf.len() - self.end < READ_CHUNK {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        &mut self.buf[self.end..]
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
                Some(i) => (&pending[..i], i + 1),
                None if pending.len() > MAX_LINE => {
                    return Err(IngressError::LineTooLong { line: self.line + 1, max: MAX_LINE })
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
    use super::*;
    use crate::BatchWriter;
    use dirigo_actors::record::FieldType;

    fn staged_record(staged: &AlignedVec, span: (usize, usize)) -> &ArchivedRecord {
        dirigo_actors::record::access(&staged[span.0..span.1]).unwrap()
    }

    #[test]
    fn a_batch_is_staged_whole_or_refused() {
        let schema = Schema::new(vec![("k".into(), FieldType::U64)]);
        let cx = SourceCx { name: "t", schema: &schema, event_time_field: Some(0) };
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
}
