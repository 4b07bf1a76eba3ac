//! The reference clients: [`send`] pushes NDJSON or binary events to a tcp source and reports
//! what the engine said back; [`tail`] prints a tcp sink's output as NDJSON, decoding binary
//! frames with the schema the sink announces in its Hello frame.

use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::frame::MAGIC;
use crate::ValidateError;
use crate::{validate_batch, validate_record, BatchWriter, DecodeError, EncodeError, FrameDecoder, FrameType};
use dirigo_actors::record::{RecordError, Schema};
use rkyv::util::AlignedVec;

use super::wire::{encode_end, error_message, schema_from_hello, HelloError};

/// Records per Data frame when `send` converts NDJSON to binary.
const BATCH_RECORDS: u32 = 256;

/// What `send` writes.
#[derive(Clone, Debug)]
pub enum SendMode {
    /// The input's NDJSON lines, as they are.
    Ndjson,
    /// Binary frames: NDJSON input is converted with this schema (batches of records); input
    /// that already is binary frames is sent as it is.
    Binary(Schema),
}

/// What a `send` did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SendReport {
    /// Records written (NDJSON lines or records in frames).
    pub records: u64,
    pub bytes: u64,
    /// Errors the engine reported before it closed the connection.
    pub errors: Vec<String>,
}

/// Errors of the reference clients.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("input line {line}: {source}")]
    Input { line: u64, source: RecordError },
    #[error("bad frame from the server: {0}")]
    Frame(#[from] DecodeError),
    #[error("bad record from the server: {0}")]
    Record(#[from] ValidateError),
    #[error(transparent)]
    Hello(#[from] HelloError),
    #[error("binary output before the sink's hello frame")]
    NoHello,
    #[error("cannot encode: {0}")]
    Encode(#[from] EncodeError),
}

/// Connect to `addr`, retrying until `wait` has passed (0: one attempt).
pub fn connect(addr: &str, wait: Duration) -> Result<TcpStream, ClientError> {
    let deadline = Instant::now() + wait;
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(ClientError::Connect { addr: addr.to_owned(), source: e })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Push `input` to a tcp source, then close the sending side and collect the engine's reply
/// until it closes the connection (which it does once it has read everything).
pub fn send(stream: TcpStream, mut input: impl BufRead, mode: &SendMode) -> Result<SendReport, ClientError> {
    let mut report = SendReport::default();
    let written = match mode {
        SendMode::Binary(_) if input.fill_buf()?.starts_with(&MAGIC) => send_raw(&stream, input, &mut report),
        SendMode::Binary(schema) => send_converted(&stream, input, schema, &mut report),
        SendMode::Ndjson => send_lines(&stream, input, &mut report),
    };
    match written {
        Ok(()) => {}
        Err(ClientError::Io(e)) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {}
        Err(e) => return Err(e),
    }
    let _ = stream.shutdown(Shutdown::Write);
    report.errors = read_errors(&stream)?;
    Ok(report)
}

fn send_lines(mut stream: &TcpStream, input: impl BufRead, report: &mut SendReport) -> Result<(), ClientError> {
    let mut out = Vec::with_capacity(64 * 1024);
    for line in input.split(b'\n') {
        let line = line?;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        out.extend_from_slice(&line);
        out.push(b'\n');
        report.records += 1;
        if out.len() >= 64 * 1024 {
            stream.write_all(&out)?;
            report.bytes += out.len() as u64;
            out.clear();
        }
    }
    stream.write_all(&out)?;
    report.bytes += out.len() as u64;
    Ok(())
}

fn send_converted(
    mut stream: &TcpStream,
    input: impl BufRead,
    schema: &Schema,
    report: &mut SendReport,
) -> Result<(), ClientError> {
    let mut out: AlignedVec = AlignedVec::new();
    let mut batch = BatchWriter::begin(&mut out)?;
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let values = schema.parse_json(&line).map_err(|source| ClientError::Input { line: i as u64 + 1, source })?;
        batch.push_values(0, &values);
        report.records += 1;
        if batch.len() >= BATCH_RECORDS {
            batch.finish()?;
            stream.write_all(&out)?;
            report.bytes += out.len() as u64;
            out.clear();
            batch = BatchWriter::begin(&mut out)?;
        }
    }
    if batch.is_empty() {
        drop(batch);
    } else {
        batch.finish()?;
    }
    encode_end(&mut out);
    stream.write_all(&out)?;
    report.bytes += out.len() as u64;
    Ok(())
}

/// Input that already is frames: copied through, records counted on the way.
fn send_raw(mut stream: &TcpStream, mut input: impl Read, report: &mut SendReport) -> Result<(), ClientError> {
    let mut dec = FrameDecoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
        report.bytes += n as u64;
        dec.feed(&buf[..n])?;
        while let Some(f) = dec.next_frame()? {
            report.records += match f.ty {
                FrameType::Record => 1,
                FrameType::Data => validate_batch(f.payload).map(|b| b.len() as u64).unwrap_or(0),
                _ => 0,
            };
        }
    }
}

/// Read the engine's replies until it closes: Error frames or NDJSON error lines.
fn read_errors(mut stream: &TcpStream) -> Result<Vec<String>, ClientError> {
    let mut bytes = Vec::new();
    match stream.read_to_end(&mut bytes) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => return Err(e.into()),
    }
    if !bytes.starts_with(&MAGIC) {
        let text = String::from_utf8_lossy(&bytes);
        return Ok(text.lines().filter(|l| !l.trim().is_empty()).map(reply_line).collect());
    }
    let mut dec = FrameDecoder::default();
    dec.feed(&bytes)?;
    let mut errors = Vec::new();
    while let Some(f) = dec.next_frame()? {
        if f.ty == FrameType::Error {
            errors.push(error_message(f.payload));
        }
    }
    Ok(errors)
}

fn reply_line(line: &str) -> String {
    let v: Option<serde_json::Value> = serde_json::from_str(line).ok();
    match v.as_ref().and_then(|v| v["error"].as_str()) {
        Some(m) => m.to_owned(),
        None => line.to_owned(),
    }
}

/// Print a tcp sink's output to `out` as NDJSON lines, until the sink ends or `limit` records
/// were printed. Returns the number of records printed.
pub fn tail(mut stream: TcpStream, out: &mut impl Write, limit: Option<u64>) -> Result<u64, ClientError> {
    let mut first = [0u8; 2];
    if stream.read_exact(&mut first).is_err() {
        return Ok(0); // the sink ended before it said anything
    }
    let limit = limit.unwrap_or(u64::MAX);
    if first == MAGIC {
        tail_binary(&first, stream, out, limit)
    } else {
        let mut printed = 0;
        let reader = std::io::BufReader::new(first.as_slice().chain(stream));
        for line in reader.split(b'\n') {
            if printed >= limit {
                break;
            }
            let mut line = line?;
            line.push(b'\n');
            out.write_all(&line)?;
            out.flush()?;
            printed += 1;
        }
        Ok(printed)
    }
}

fn tail_binary(first: &[u8], mut stream: TcpStream, out: &mut impl Write, limit: u64) -> Result<u64, ClientError> {
    let mut dec = FrameDecoder::default();
    dec.feed(first)?;
    let (mut schema, mut printed, mut text, mut ended) = (None, 0u64, String::new(), false);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(f) = dec.next_frame()? {
            match f.ty {
                FrameType::Hello => schema = Some(schema_from_hello(f.payload)?),
                FrameType::Record | FrameType::Data => {
                    let s = schema.as_ref().ok_or(ClientError::NoHello)?;
                    let left = limit - printed;
                    printed += format_records(f.ty, f.payload, s, &mut text, left)?;
                }
                FrameType::Error => tracing::warn!("the sink reported: {}", error_message(f.payload)),
                FrameType::End => ended = true,
                _ => {}
            }
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        text.clear();
        if printed >= limit || ended {
            return Ok(printed);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            dec.finish()?;
            return Ok(printed);
        }
        dec.feed(&buf[..n])?;
    }
}

/// Append up to `left` records of a Record or Data frame as NDJSON lines; returns how many.
fn format_records(
    ty: FrameType,
    payload: &[u8],
    schema: &Schema,
    text: &mut String,
    left: u64,
) -> Result<u64, ClientError> {
    let mut n = 0;
    if ty == FrameType::Record {
        schema.write_json(validate_record(payload)?, text);
        text.push('\n');
        return Ok(1);
    }
    for e in validate_batch(payload)?.iter().take(left.min(u32::MAX as u64) as usize) {
        schema.write_json(e.record, text);
        text.push('\n');
        n += 1;
    }
    Ok(n)
}
