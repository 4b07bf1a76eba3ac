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
    pub sink: String,
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
    /// Sent to a collector (tests, embedding programs).
    Collect {
        name: String,
        tx: flume::Sender<Output>,
    },
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
        Ok(Sink { format, ..Sink::new(SinkTarget::File(f, records), schema) })
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
        Ok(Sink { format, ..Sink::new(SinkTarget::PendingFile(part, records), schema) })
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

    /// Write one record. Hot path for `latency`/`null` (nothing to do).
    #[inline]
    pub fn on_data(&mut self, h: &Header, payload: &[u8]) {
        match &mut self.target {
            SinkTarget::Latency | SinkTarget::Null => {}
            SinkTarget::Tcp(t, records) => t.push(records.read(payload)),
            SinkTarget::Redis(r, records) => r.push(records.read(payload).get()),
            SinkTarget::Collect { name, tx } => {
                let out = Output {
                    sink: name.clone(),
                    key_hash: h.key_hash,
                    event_time: h.event_time,
                    ingress_ns: h.ingress_ns,
                    archive: payload.to_vec(),
                };
                let _ = tx.send(out);
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

    /// Write out whatever is buffered, in one `write` so lines of shards never interleave.
    pub fn flush(&mut self) {
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
