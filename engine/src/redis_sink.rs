//! The Redis Streams sink: each output record becomes one stream entry (`XADD stream * field
//! value ..`, the schema's fields by name, values as text), written by a thread per sink instance
//! so that the shard never waits for the network.
//!
//! A shard's instance batches its records into a pipeline and hands it over at each flush through
//! a bounded channel of [`QUEUED_BATCHES`]; when Redis falls behind, the hand-over blocks the
//! shard, which backs its inputs up to the sources (nothing is dropped).
//!
//! Exactly once ([`commit_epoch`], argued in `docs/why-redis-sink.md`): with snapshots, the
//! output of one epoch (between two barriers) is staged, and committed when the snapshot
//! completes as one MULTI/EXEC transaction that appends the entries and sets this instance's
//! marker key to the epoch, WATCHing the marker; a commit whose marker already holds the epoch (or
//! a later one) is skipped. Recovery replays the epochs after the last snapshot, and an epoch
//! committed before the crash is not written twice ([`RedisSinkWriter::staged`], `barrier`,
//! `commit`; the barriers that call them are not built yet). Without snapshots records are
//! written through.

use std::thread::JoinHandle;
use std::time::Duration;

use dirigo_actors::record::{ArchivedRecord, ArchivedValue, Schema};

/// Pipelines queued for the writer thread, at most.
pub const QUEUED_BATCHES: usize = 8;
/// Hand a pipeline over once it holds this many entries (else at the shard's periodic flush).
const HANDOFF_ENTRIES: usize = 1024;

/// One stream entry: its `(field, value)` pairs.
pub type Entry = Vec<(String, String)>;

/// What the writer thread does.
enum Job {
    /// Write through.
    Pipeline(redis::Pipeline),
    /// Commit an epoch's staged entries ([`commit_epoch`]).
    Commit { epoch: u64, marker: String, entries: Vec<Entry> },
}

/// Staged output, with snapshots: the epoch being written, and sealed epochs awaiting commit.
struct Staged {
    marker: String,
    current: Vec<Entry>,
    sealed: Vec<(u64, Vec<Entry>)>,
}

/// One shard's instance of a redis sink.
pub struct RedisSinkWriter {
    stream: String,
    fields: Vec<String>,
    pipe: redis::Pipeline,
    entries: usize,
    /// Some: exactly-once, output staged per epoch and committed with snapshots.
    staged: Option<Staged>,
    tx: Option<flume::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    cell: String,
}

impl RedisSinkWriter {
    /// A writer of records of `schema` to `stream` at `url` (checked here; connected by the
    /// writer thread). `name` (`app/sink`) is for logs.
    pub fn new(url: &str, stream: &str, schema: &Schema, name: String) -> Result<RedisSinkWriter, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let (tx, rx) = flume::bounded::<Job>(QUEUED_BATCHES);
        let stream_name = stream.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("dirigo-redis-out-{stream}"))
            .spawn(move || write_loop(client, rx, &stream_name, &name))
            .map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::Io, "cannot start the writer thread", e.to_string()))
            })?;
        Ok(RedisSinkWriter {
            stream: stream.to_owned(),
            fields: schema.fields().map(|(n, _)| n.to_owned()).collect(),
            pipe: redis::pipe(),
            entries: 0,
            staged: None,
            tx: Some(tx),
            thread: Some(thread),
            cell: String::new(),
        })
    }

    /// Exactly once: stage output per epoch (instance `instance` of the sink) and write it
    /// only at [`commit`](Self::commit), in a transaction guarded by the marker key
    /// `dirigo:commit:<stream>:<instance>`.
    pub fn staged(mut self, instance: u32) -> RedisSinkWriter {
        let marker = format!("dirigo:commit:{}:{instance}", self.stream);
        self.staged = Some(Staged { marker, current: Vec::new(), sealed: Vec::new() });
        self
    }

    /// Barrier `epoch` reached this instance: what it staged so far is the output of `epoch`.
    pub fn barrier(&mut self, epoch: u64) {
        if let Some(st) = &mut self.staged {
            let entries = std::mem::take(&mut st.current);
            st.sealed.push((epoch, entries));
        }
    }

    /// Snapshot `epoch` is complete: commit the staged output of `epoch` and earlier, each epoch
    /// in its own transaction, on the writer thread.
    pub fn commit(&mut self, epoch: u64) {
        let Some(st) = &mut self.staged else { return };
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut st.sealed).into_iter().partition(|(e, _)| *e <= epoch);
        st.sealed = later;
        for (epoch, entries) in due {
            if let Some(tx) = &self.tx {
                let _ = tx.send(Job::Commit { epoch, marker: st.marker.clone(), entries });
            }
        }
    }

    /// Queue one record. Hot path.
    pub fn push(&mut self, rec: &ArchivedRecord) {
        if let Some(st) = &mut self.staged {
            let entry = self.fields.iter().zip(rec.fields.iter()).map(|(name, v)| {
                let mut text = String::new();
                value_text(v, &mut text);
                (name.clone(), text)
            });
            st.current.push(entry.collect());
            return;
        }
        let cmd = self.pipe.cmd("XADD").arg(&self.stream).arg("*");
        for (name, v) in self.fields.iter().zip(rec.fields.iter()) {
            self.cell.clear();
            value_text(v, &mut self.cell);
            cmd.arg(name).arg(self.cell.as_str());
        }
        cmd.ignore();
        self.entries += 1;
        if self.entries >= HANDOFF_ENTRIES {
            self.flush();
        }
    }

    /// Hand the queued entries to the writer thread (blocks while it is [`QUEUED_BATCHES`]
    /// behind).
    pub fn flush(&mut self) {
        if self.entries == 0 {
            return;
        }
        let pipe = std::mem::replace(&mut self.pipe, redis::pipe());
        self.entries = 0;
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::Pipeline(pipe));
        }
    }
}

impl Drop for RedisSinkWriter {
    fn drop(&mut self) {
        self.flush();
        self.tx.take();
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

/// A record's value as stream entry text: what the redis source parses back.
pub fn value_text(v: &ArchivedValue, out: &mut String) {
    use std::fmt::Write as _;
    let _ = match v {
        ArchivedValue::U64(x) => write!(out, "{}", x.to_native()),
        ArchivedValue::I64(x) => write!(out, "{}", x.to_native()),
        ArchivedValue::F64(x) => write!(out, "{:?}", x.to_native()),
        ArchivedValue::Bool(x) => write!(out, "{x}"),
        ArchivedValue::Str(s) => write!(out, "{}", s.as_str()),
    };
}

/// The writer thread: connect (retrying), then run each job; a failed one is retried once on a
/// fresh connection, then logged and dropped.
fn write_loop(client: redis::Client, rx: flume::Receiver<Job>, stream: &str, name: &str) {
    let mut con: Option<redis::Connection> = None;
    for job in rx.iter() {
        let mut done = false;
        for attempt in 0..2 {
            if con.is_none() {
                match client.get_connection_with_timeout(Duration::from_secs(5)) {
                    Ok(c) => con = Some(c),
                    Err(e) => {
                        tracing::error!(sink = name, attempt, "cannot connect to redis: {e}");
                        continue;
                    }
                }
            }
            let Some(c) = con.as_mut() else { continue };
            let outcome = match &job {
                Job::Pipeline(pipe) => pipe.query::<()>(c),
                Job::Commit { epoch, marker, entries } => {
                    commit_epoch(c, stream, marker, *epoch, entries).map(|written| {
                        if !written {
                            tracing::info!(
                                sink = name,
                                epoch,
                                "epoch already committed before a restart: not written again"
                            );
                        }
                    })
                }
            };
            match outcome {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(e) => {
                    tracing::error!(sink = name, attempt, "redis write failed: {e}");
                    con = None;
                }
            }
        }
        if !done {
            match job {
                Job::Pipeline(_) => tracing::error!(sink = name, "a batch of output was not written to redis"),
                Job::Commit { epoch, .. } => tracing::error!(sink = name, epoch, "an epoch's output was not committed"),
            }
        }
    }
}

/// Commit the output of `epoch` (each entry its `(field, value)` pairs) to `stream` exactly once:
/// one MULTI/EXEC that appends every entry and sets `marker` to `epoch`, WATCHing `marker`. True:
/// committed now; false: `marker` already held `epoch` or a later one (committed before a crash),
/// nothing written.
pub fn commit_epoch(
    con: &mut redis::Connection,
    stream: &str,
    marker: &str,
    epoch: u64,
    entries: &[Entry],
) -> redis::RedisResult<bool> {
    loop {
        redis::cmd("WATCH").arg(marker).query::<()>(con)?;
        let done: Option<u64> = redis::cmd("GET").arg(marker).query(con)?;
        if done.is_some_and(|d| d >= epoch) {
            redis::cmd("UNWATCH").query::<()>(con)?;
            return Ok(false);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for entry in entries {
            let cmd = pipe.cmd("XADD").arg(stream).arg("*");
            for (f, v) in entry {
                cmd.arg(f).arg(v);
            }
            cmd.ignore();
        }
        pipe.cmd("SET").arg(marker).arg(epoch).ignore();
        // EXEC answers Nil when the marker changed since WATCH (another writer): look again.
        let outcome: Option<()> = pipe.query(con)?;
        if outcome.is_some() {
            return Ok(true);
        }
    }
}
