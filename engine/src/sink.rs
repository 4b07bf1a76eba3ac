//! Sinks: where an app's results leave the engine (stdout, a file, tcp subscribers, a collector
//! for embedding programs and tests) or are only measured (`latency`, `null`). Latency is
//! recorded by the shard for every sink; a sink only writes.

use std::fs::{File, OpenOptions};
use std::io::Write;

use dirigo_actors::envelope::Header;
use dirigo_actors::record::{ArchivedRecord, ArchivedValue, RecordsOnly, Schema};

use crate::config::FileFormat;

/// One output delivered to a collecting sink.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The sink's name (shared by its outputs).
    pub sink: std::sync::Arc<str>,
    pub key_hash: u64,
    pub event_time: u64,
    pub ingress_ns: u64,
    /// The payload archive (a `Record` for config apps, the user's type otherwise).
    pub archive: Vec<u8>,
}

/// Where a sink writes.
///
/// The targets that read records (stdout, file, tcp) carry the proof that their input is records
/// (only config apps, whose streams are records, have them).
pub enum SinkTarget {
    Stdout(RecordsOnly),
    File(File, RecordsOnly),
    /// A file sink with snapshots: output goes to this instance's pending part, and reaches the
    /// file when the snapshot of its epoch commits ([`crate::sink_commit`]).
    PendingFile(crate::sink_commit::PartWriter, RecordsOnly),
    /// Measured only: latency is recorded, nothing is written.
    Latency,
    /// Dropped.
    Null,
    /// Served to the subscribers of a tcp sink.
    Tcp(dirigo_net::tcp::EgressSink, RecordsOnly),
    /// Appended to a Redis stream.
    Redis(crate::redis_sink::RedisSinkWriter, RecordsOnly),
    /// Sent to a [`Collector`] (tests, embedding programs), in chunks: what the instance made
    /// in a turn of its shard goes in one send.
    Collect {
        tx: flume::Sender<Chunk>,
        chunk: Chunk,
    },
}

impl SinkTarget {
    /// A collecting target: outputs go to the [`Collector`] of `tx`, named `name`.
    pub fn collect(name: &str, tx: flume::Sender<Chunk>) -> SinkTarget {
        SinkTarget::Collect { tx, chunk: Chunk::new(name.into(), 0) }
    }
}

/// What a collecting sink instance sends its [`Collector`] at once: the outputs it made in one
/// turn of its shard (at most `COLLECT_CHUNK`), with the sink's name once and every payload
/// in one buffer. The shard pays one channel operation and no allocation per output; the
/// collector makes each [`Output`] as it is read.
pub struct Chunk {
    sink: std::sync::Arc<str>,
    heads: Vec<ChunkHead>,
    bytes: Vec<u8>,
}

/// An output of a chunk but its payload, which ends at `end` in the chunk's bytes (it starts
/// where the one before ended).
struct ChunkHead {
    key_hash: u64,
    event_time: u64,
    ingress_ns: u64,
    end: usize,
}

impl Chunk {
    fn new(sink: std::sync::Arc<str>, outputs: usize) -> Chunk {
        Chunk { sink, heads: Vec::with_capacity(outputs), bytes: Vec::with_capacity(outputs * 32) }
    }

    #[inline]
    fn push(&mut self, h: &Header, payload: &[u8]) {
        self.bytes.extend_from_slice(payload);
        let head = ChunkHead {
            key_hash: h.key_hash,
            event_time: h.event_time,
            ingress_ns: h.ingress_ns,
            end: self.bytes.len(),
        };
        self.heads.push(head);
    }

    fn len(&self) -> usize {
        self.heads.len()
    }

    /// Send what it holds (if anything), keeping room for as many outputs in the next one.
    fn send(&mut self, tx: &flume::Sender<Chunk>) {
        if self.heads.is_empty() {
            return;
        }
        let room = self.heads.len().next_power_of_two().min(COLLECT_CHUNK);
        let full = std::mem::replace(self, Chunk::new(self.sink.clone(), room));
        let _ = tx.send(full);
    }

    /// Its outputs, in the order they were made.
    fn into_outputs(self) -> impl Iterator<Item = Output> {
        let Chunk { sink, heads, bytes } = self;
        let mut start = 0;
        heads.into_iter().map(move |h| {
            let archive = bytes[start..h.end].to_vec();
            start = h.end;
            Output {
                sink: sink.clone(),
                key_hash: h.key_hash,
                event_time: h.event_time,
                ingress_ns: h.ingress_ns,
                archive,
            }
        })
    }
}

/// A collecting sink sends its chunk once it holds this many outputs, or at the end of the turn
/// that made them (`Sink::send_collected`).
const COLLECT_CHUNK: usize = 256;

/// Where the outputs of `collect` sinks arrive (`AppBuilder::collect`,
/// `compile::collect_sinks`): read one at a time, in the order each sink instance made them.
///
/// Shards send them in chunks (what a sink instance made in one turn of its shard), so that a
/// sink with many outputs costs its shard one channel operation per chunk, not per output.
/// The methods are those of a channel's receiver; clones read the same outputs (each output
/// once, by whichever clone asks first).
#[derive(Clone)]
pub struct Collector {
    rx: flume::Receiver<Chunk>,
    ready: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Output>>>,
}

impl Collector {
    /// A collector and the sender its sinks share.
    pub fn new() -> (flume::Sender<Chunk>, Collector) {
        let (tx, rx) = flume::unbounded();
        (tx, Collector { rx, ready: Default::default() })
    }

    /// A collector no sink sends to (it is closed and empty).
    pub fn closed() -> Collector {
        Collector::new().1
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Output>> {
        self.ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next output, waiting for one; an error once every sink is gone and nothing is left.
    pub fn recv(&self) -> Result<Output, flume::RecvError> {
        self.next_with(|| self.rx.recv())
    }

    /// The next output, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Result<Output, flume::RecvTimeoutError> {
        self.next_with(|| self.rx.recv_timeout(timeout))
    }

    /// The next output if one has arrived.
    pub fn try_recv(&self) -> Result<Output, flume::TryRecvError> {
        self.next_with(|| self.rx.try_recv())
    }

    fn next_with<E>(&self, chunk: impl FnOnce() -> Result<Chunk, E>) -> Result<Output, E> {
        let mut ready = self.ready();
        if let Some(o) = ready.pop_front() {
            return Ok(o);
        }
        drop(ready);
        // Chunks are never empty.
        let mut outputs = chunk()?.into_outputs();
        let first = outputs.next().expect("a collected chunk holds an output");
        self.ready().extend(outputs);
        Ok(first)
    }

    /// Every output, waiting for each, until every sink is gone.
    pub fn iter(&self) -> impl Iterator<Item = Output> + '_ {
        std::iter::from_fn(|| self.recv().ok())
    }

    /// The outputs that have arrived, without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = Output> + '_ {
        std::iter::from_fn(|| self.try_recv().ok())
    }

    /// Take every output that has arrived.
    pub fn drain(&self) -> std::vec::IntoIter<Output> {
        let mut ready = self.ready();
        let mut all: Vec<Output> = ready.drain(..).collect();
        for chunk in self.rx.drain() {
            all.extend(chunk.into_outputs());
        }
        all.into_iter()
    }

    /// Outputs that have arrived and are not read yet.
    pub fn len(&self) -> usize {
        let mut ready = self.ready();
        for chunk in self.rx.drain() {
            ready.extend(chunk.into_outputs());
        }
        ready.len()
    }

    /// Whether no output is waiting.
    pub fn is_empty(&self) -> bool {
        self.ready().is_empty() && self.rx.is_empty()
    }
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").field("waiting", &self.len()).finish()
    }
}

/// A sink instance on one shard: formats records as NDJSON into a buffer flushed whole.
pub struct Sink {
    target: SinkTarget,
    schema: Schema,
    buf: String,
    /// How stdout and file sinks write each record.
    format: FileFormat,
}

/// Flush the text buffer once it holds this much.
const FLUSH_BYTES: usize = 64 * 1024;

impl Sink {
    /// A sink writing records of `schema` to `target`.
    pub fn new(target: SinkTarget, schema: Schema) -> Sink {
        Sink { target, schema, buf: String::with_capacity(FLUSH_BYTES + 1024), format: FileFormat::Ndjson }
    }

    /// Open a file sink for appending, as NDJSON or CSV (the engine writes the file's first
    /// line once before shards start).
    pub fn open_file(
        path: &std::path::Path,
        schema: Schema,
        format: FileFormat,
        records: RecordsOnly,
    ) -> std::io::Result<Sink> {
        let f = OpenOptions::new().append(true).create(true).open(path)?;
        let mut sink = Sink::new(SinkTarget::File(f, records), schema);
        sink.format = format;
        Ok(sink)
    }

    /// A file sink that commits with snapshots: instance `instance` writes the output of
    /// `epoch` (the one after the last committed) and on to pending parts of `path`.
    pub fn open_committing_file(
        path: &std::path::Path,
        schema: Schema,
        format: FileFormat,
        records: RecordsOnly,
        (instance, epoch): (u32, u64),
    ) -> Result<Sink, crate::sink_commit::CommitError> {
        let part = crate::sink_commit::PartWriter::open(path, instance, epoch)?;
        let mut sink = Sink::new(SinkTarget::PendingFile(part, records), schema);
        sink.format = format;
        Ok(sink)
    }

    /// Barrier `epoch` reached this sink: what it wrote so far is the output of `epoch` (synced
    /// in its pending part for a file sink with snapshots; handed to its writer thread for a
    /// redis sink, which seals it in Redis when staged; nothing to do for the others). A redis
    /// sink returns the receiver its writer thread answers once that output is acknowledged by
    /// Redis ([`crate::redis_sink::RedisSinkWriter::barrier`]): the controller waits on it
    /// before it writes snapshot `epoch`'s manifest; the shard never does.
    pub fn barrier(
        &mut self,
        epoch: u64,
    ) -> Result<Option<crate::redis_sink::BarrierAck>, crate::sink_commit::CommitError> {
        self.flush();
        match &mut self.target {
            SinkTarget::PendingFile(part, _) => part.barrier(epoch).map(|()| None),
            SinkTarget::Redis(r, _) => Ok(Some(r.barrier(epoch))),
            _ => Ok(None),
        }
    }

    /// Whether it does nothing with a record (`latency`, `null`: the shard records the latency).
    #[inline]
    pub fn ignores_records(&self) -> bool {
        matches!(self.target, SinkTarget::Latency | SinkTarget::Null)
    }

    /// Write one record. Hot path for `latency`/`null` (nothing to do).
    #[inline]
    pub fn on_data(&mut self, h: &Header, payload: &[u8]) {
        match &mut self.target {
            SinkTarget::Latency | SinkTarget::Null => {}
            SinkTarget::Tcp(t, records) => t.push(records.read(payload)),
            SinkTarget::Redis(r, records) => r.push(records.read(payload).get()),
            SinkTarget::Collect { tx, chunk } => {
                chunk.push(h, payload);
                if chunk.len() >= COLLECT_CHUNK {
                    chunk.send(tx);
                }
            }
            SinkTarget::Stdout(records) | SinkTarget::File(_, records) | SinkTarget::PendingFile(_, records) => {
                let rec = records.read(payload).get();
                match self.format {
                    FileFormat::Ndjson => self.schema.write_json(rec, &mut self.buf),
                    FileFormat::Csv => write_csv(rec, &mut self.buf),
                }
                self.buf.push('\n');
                if self.buf.len() >= FLUSH_BYTES {
                    self.flush();
                }
            }
        }
    }

    /// A collecting sink sends what it holds (the end of a turn that ran it); other sinks keep
    /// their buffers for `flush`.
    #[inline]
    pub fn send_collected(&mut self) {
        if let SinkTarget::Collect { tx, chunk } = &mut self.target {
            chunk.send(tx);
        }
    }

    /// Write out whatever is buffered, in one `write` so lines of shards never interleave.
    pub fn flush(&mut self) {
        self.send_collected();
        match &mut self.target {
            SinkTarget::Tcp(t, _) => t.flush(),
            SinkTarget::Redis(r, _) => r.flush(),
            _ => {}
        }
        if self.buf.is_empty() {
            return;
        }
        let res = match &mut self.target {
            SinkTarget::Stdout(_) if STDOUT_SINKS_TO_STDERR.load(std::sync::atomic::Ordering::Relaxed) => {
                std::io::stderr().lock().write_all(self.buf.as_bytes())
            }
            SinkTarget::Stdout(_) => std::io::stdout().lock().write_all(self.buf.as_bytes()),
            SinkTarget::File(f, _) => f.write_all(self.buf.as_bytes()),
            SinkTarget::PendingFile(part, _) => part.write(self.buf.as_bytes()).map_err(std::io::Error::other),
            _ => Ok(()),
        };
        if let Err(e) = res {
            tracing::error!("sink write failed: {e}");
        }
        self.buf.clear();
    }
}

impl Drop for Sink {
    /// A collecting instance sends what it holds (an app torn down mid-turn, a shard's exit).
    fn drop(&mut self) {
        self.send_collected();
    }
}

/// When set, `stdout` sinks write to stderr: `dirigo run --json` and `dirigo serve --json` keep
/// stdout for their one JSON document.
pub static STDOUT_SINKS_TO_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The CSV header line of `schema`.
pub fn csv_header(schema: &Schema) -> String {
    let names: Vec<String> = schema.fields().map(|(n, _)| csv_cell(n)).collect();
    names.join(",") + "\n"
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn write_csv(rec: &ArchivedRecord, out: &mut String) {
    use std::fmt::Write as _;
    for (i, v) in rec.fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = match v {
            ArchivedValue::U64(x) => write!(out, "{}", x.to_native()),
            ArchivedValue::I64(x) => write!(out, "{}", x.to_native()),
            ArchivedValue::F64(x) => write!(out, "{:?}", x.to_native()),
            ArchivedValue::Bool(x) => write!(out, "{x}"),
            ArchivedValue::Str(s) => write!(out, "{}", csv_cell(s.as_str())),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dirigo_actors::record::{access, FieldType, Record, Value};

    #[test]
    fn csv_lines_quote_what_needs_quoting() {
        let schema = Schema::new(vec![("a".into(), FieldType::U64), ("b,c".into(), FieldType::Str)]);
        assert_eq!(csv_header(&schema), "a,\"b,c\"\n");
        let bytes = Record::from(vec![Value::U64(3), Value::Str("say \"hi\"".into())]).to_archive();
        let mut out = String::new();
        write_csv(access(&bytes).unwrap(), &mut out);
        assert_eq!(out, "3,\"say \"\"hi\"\"\"");
    }

    /// A collecting sink instance fed `n` outputs numbered from `first` (in `event_time`).
    fn feed(sink: &mut Sink, first: u64, n: u64) {
        for i in first..first + n {
            let mut h = Header::data(0, 0, i);
            h.event_time = i;
            sink.on_data(&h, &payload(i));
        }
    }

    /// Payloads of 1 to 8 bytes: a chunk holds them back to back.
    fn payload(i: u64) -> Vec<u8> {
        i.to_le_bytes()[..1 + i as usize % 8].to_vec()
    }

    #[test]
    fn a_collector_reads_chunks_one_output_at_a_time_in_order_and_loses_nothing() {
        let (tx, rx) = Collector::new();
        let mut a = Sink::new(SinkTarget::collect("a", tx.clone()), Schema::default());
        let mut b = Sink::new(SinkTarget::collect("b", tx), Schema::default());
        // A full chunk goes at once; a partial one waits for the end of the turn.
        feed(&mut a, 0, COLLECT_CHUNK as u64 + 3);
        assert_eq!(rx.len(), COLLECT_CHUNK);
        assert_eq!(rx.try_recv().map(|o| o.event_time), Ok(0));
        a.send_collected();
        a.send_collected(); // nothing left: no empty chunk is sent
        feed(&mut b, 1000, 2);
        b.flush();
        assert_eq!(rx.len(), COLLECT_CHUNK + 3 - 1 + 2);
        let clone = rx.clone(); // clones read the same outputs, each once
        assert_eq!(clone.recv().map(|o| o.event_time), Ok(1));
        let rest: Vec<(String, u64, Vec<u8>)> =
            rx.try_iter().map(|o| (o.sink.to_string(), o.event_time, o.archive)).collect();
        let want: Vec<(String, u64, Vec<u8>)> = (2..COLLECT_CHUNK as u64 + 3)
            .map(|i| ("a".to_owned(), i))
            .chain([("b".to_owned(), 1000), ("b".to_owned(), 1001)])
            .map(|(sink, i)| (sink, i, payload(i)))
            .collect();
        assert_eq!(rest, want);
        assert!(rx.is_empty());
        assert_eq!(rx.try_recv(), Err(flume::TryRecvError::Empty));
        feed(&mut a, 7, 1);
        drop(a); // an instance dropped sends what it held
        drop(b);
        assert_eq!(rx.recv().map(|o| o.event_time), Ok(7));
        assert_eq!(rx.recv(), Err(flume::RecvError::Disconnected));
        assert_eq!(Collector::closed().drain().count(), 0);
    }
}

#[cfg(test)]
mod commit_tests {
    use super::*;
    use dirigo_actors::envelope::Header;
    use dirigo_actors::record::{FieldType, Record, Value};

    /// A committing file sink writes nothing to the file until its epoch commits; a crash
    /// (dropping it without a commit) and recovery leave only committed lines.
    #[test]
    fn a_committing_file_sink_shows_only_committed_records() {
        let dir = std::env::temp_dir().join(format!("dirigo-sink-commit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("out.ndjson");
        let schema = Schema::new(vec![("a".into(), FieldType::U64)]);
        // SAFETY: the payloads below are record archives.
        let records = unsafe { RecordsOnly::assert() };
        crate::sink_commit::recover(&file, None).unwrap();
        let mut sink = Sink::open_committing_file(&file, schema.clone(), FileFormat::Ndjson, records, (0, 1)).unwrap();
        let header = Header::data(0, 0, 0);
        let write = |sink: &mut Sink, n: u64| sink.on_data(&header, &Record::from(vec![Value::U64(n)]).to_archive());
        write(&mut sink, 1);
        sink.flush();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "");
        sink.barrier(1).unwrap();
        write(&mut sink, 2);
        crate::sink_commit::commit(&file, 1).unwrap();
        sink.flush();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{\"a\":1}\n");
        drop(sink); // crash before snapshot 2
        crate::sink_commit::recover(&file, Some(1)).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{\"a\":1}\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
