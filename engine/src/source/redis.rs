//! A Redis Streams source: entries of one stream read by a thread of its own and handed to the
//! shard through a bounded channel, so the shard's poll never blocks on the network.
//!
//! The I/O thread starts on the first poll (after any [`seek`](RedisSource::seek)) and reads in
//! batches (`XREAD COUNT .. BLOCK ..` after the last id it read, or `XREADGROUP .. NOACK` with a
//! consumer group). When the channel is full it stops reading: Redis keeps the backlog, so a
//! slow engine holds at most [`QUEUED_BATCHES`] batches in memory. The shard polls the source
//! like a socket source (an [`IoWakeup::Poll`](dirigo_net::ingress::IoWakeup) every
//! millisecond while parked); a poll that finds nothing produces `Idle`.
//!
//! Each entry's fields are the schema's fields by name, values as text (`42`, `-1`, `0.5`,
//! `true`, any string); an entry missing a field or with a value of the wrong type is logged and
//! skipped. The source's position is the id of the last entry delivered to the shard (not the
//! last one read ahead), so resuming from it loses and repeats nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use dirigo_actors::record::{Schema, Value};
use dirigo_net::ingress::Produced;
use redis::Value as Reply;

use super::{PositionError, SourcePosition};

/// Batches read ahead of the shard, at most.
pub const QUEUED_BATCHES: usize = 8;
/// Entries asked for per read.
const BATCH: usize = 512;
/// How long one blocking read waits for new entries (so the thread notices a stop).
const BLOCK_MS: u64 = 100;

/// What a redis source reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSpec {
    /// `redis://host:port/db`.
    pub url: String,
    pub stream: String,
    /// Read as `consumer` of consumer group `group` (created at `start` if missing), else plain
    /// XREAD.
    pub group: Option<(String, String)>,
    /// Read the entries after this id (`0-0`: the whole stream; `$`: only new ones).
    pub start: String,
    /// Keep waiting for new entries (true), or end once the stream is read to its end.
    pub follow: bool,
    /// `app/source`, for logs.
    pub name: String,
}

/// One entry read from the stream.
struct Entry {
    id: String,
    /// `(field, value)` as sent.
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the I/O thread sends.
enum Batch {
    Entries(Vec<Entry>),
    /// The source failed (connection, command): it ends.
    Failed(String),
}

/// One instance of a redis source on a shard.
pub struct RedisSource {
    spec: RedisSpec,
    schema: Schema,
    /// The id of the last entry delivered.
    last_id: String,
    rx: Option<flume::Receiver<Batch>>,
    current: VecDeque<Entry>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    ended: bool,
}

impl RedisSource {
    /// A source reading `spec` into records of `schema`; the URL is checked here, the server
    /// is first contacted on the first poll.
    pub fn new(spec: RedisSpec, schema: Schema) -> Result<RedisSource, redis::RedisError> {
        redis::Client::open(spec.url.as_str())?;
        let last_id = spec.start.clone();
        let stop = Arc::new(AtomicBool::new(false));
        Ok(RedisSource { spec, schema, last_id, rx: None, current: VecDeque::new(), stop, thread: None, ended: false })
    }

    /// The id of the last entry delivered (or the start id).
    pub fn position(&self) -> SourcePosition {
        SourcePosition::Redis { last_id: self.last_id.clone() }
    }

    /// Read the entries after the position's id; before the first poll only.
    pub fn seek(&mut self, position: &SourcePosition) -> Result<(), PositionError> {
        let SourcePosition::Redis { last_id } = position else {
            return Err(PositionError::WrongKind { found: position.kind(), source_kind: "redis" });
        };
        // `$` (a source started at the stream's end that delivered nothing yet) resumes at the
        // end as of the restart.
        if !is_stream_id(last_id) && last_id != "$" {
            return Err(PositionError::StreamId { id: last_id.clone() });
        }
        self.last_id = last_id.clone();
        Ok(())
    }

    /// The next entry as a record. `Idle` when none has arrived; None when the source ended.
    pub fn produce(&mut self, values: &mut Vec<Value>) -> Option<Produced> {
        if self.ended {
            return None;
        }
        if self.rx.is_none() {
            self.start();
        }
        loop {
            if let Some(entry) = self.current.pop_front() {
                self.last_id = entry.id.clone();
                return Some(match self.decode(&entry, values) {
                    Ok(()) => Produced::Values { event_time: None },
                    Err(message) => {
                        tracing::warn!(source = %self.spec.name, id = %entry.id, "skipped: {message}");
                        Produced::Skipped
                    }
                });
            }
            match self.rx.as_ref().map(|rx| rx.try_recv()) {
                Some(Ok(Batch::Entries(batch))) => self.current.extend(batch),
                Some(Ok(Batch::Failed(e))) => {
                    tracing::error!(source = %self.spec.name, "source ends: {e}");
                    self.ended = true;
                    return None;
                }
                Some(Err(flume::TryRecvError::Empty)) => return Some(Produced::Idle),
                Some(Err(flume::TryRecvError::Disconnected)) | None => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    fn decode(&self, entry: &Entry, values: &mut Vec<Value>) -> Result<(), String> {
        let mut cells: Vec<&str> = Vec::with_capacity(self.schema.len());
        for (name, _) in self.schema.fields() {
            let found = entry.fields.iter().find(|(f, _)| f.as_slice() == name.as_bytes());
            let Some((_, value)) = found else {
                return Err(format!("field `{name}` is missing"));
            };
            cells.push(std::str::from_utf8(value).map_err(|_| format!("field `{name}` is not UTF-8"))?);
        }
        let mut parsed = self.schema.parse_csv_row(cells).map_err(|e| e.to_string())?;
        values.clear();
        values.append(&mut parsed);
        Ok(())
    }

    fn start(&mut self) {
        let (tx, rx) = flume::bounded(QUEUED_BATCHES);
        self.rx = Some(rx);
        let (spec, from, stop) = (self.spec.clone(), self.last_id.clone(), self.stop.clone());
        let spawned = std::thread::Builder::new().name(format!("dirigo-redis-{}", spec.stream)).spawn(move || {
            if let Err(e) = read_loop(&spec, from, &tx, &stop) {
                let _ = tx.send(Batch::Failed(format!("{} stream `{}`: {e}", spec.url, spec.stream)));
            }
        });
        match spawned {
            Ok(h) => self.thread = Some(h),
            Err(e) => {
                tracing::error!(source = %self.spec.name, "cannot start the redis reader: {e}");
                self.ended = true;
            }
        }
    }
}

impl Drop for RedisSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.rx.take();
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

/// `<ms>-<seq>` (or `0`, `$` for a start).
fn is_stream_id(id: &str) -> bool {
    let mut parts = id.splitn(2, '-');
    let ms = parts.next().unwrap_or("");
    let seq = parts.next().unwrap_or("0");
    !ms.is_empty()
        && ms.bytes().all(|b| b.is_ascii_digit())
        && seq.bytes().all(|b| b.is_ascii_digit())
        && !seq.is_empty()
}

/// The I/O thread: read batches after `from` until stopped (or, without `follow`, until the
/// stream is read to its end).
fn read_loop(
    spec: &RedisSpec,
    mut from: String,
    tx: &flume::Sender<Batch>,
    stop: &AtomicBool,
) -> redis::RedisResult<()> {
    let client = redis::Client::open(spec.url.as_str())?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(5))?;
    if let Some((group, _)) = &spec.group {
        let created: redis::RedisResult<Reply> =
            redis::cmd("XGROUP").arg("CREATE").arg(&spec.stream).arg(group).arg(&from).arg("MKSTREAM").query(&mut con);
        match created {
            Ok(_) => {}
            // The group exists: move it to the position (a resumed source reads after it).
            Err(e) if e.code() == Some("BUSYGROUP") => {
                redis::cmd("XGROUP").arg("SETID").arg(&spec.stream).arg(group).arg(&from).query::<Reply>(&mut con)?;
            }
            Err(e) => return Err(e),
        }
    }
    while !stop.load(Ordering::Relaxed) {
        let mut cmd = match &spec.group {
            Some((group, consumer)) => {
                let mut c = redis::cmd("XREADGROUP");
                c.arg("GROUP").arg(group).arg(consumer);
                c
            }
            None => redis::cmd("XREAD"),
        };
        cmd.arg("COUNT").arg(BATCH);
        if spec.follow {
            cmd.arg("BLOCK").arg(BLOCK_MS);
        }
        if spec.group.is_some() {
            cmd.arg("NOACK");
        }
        let after = if spec.group.is_some() { ">" } else { from.as_str() };
        cmd.arg("STREAMS").arg(&spec.stream).arg(after);
        let reply: Reply = cmd.query(&mut con)?;
        let entries = parse_read(reply).map_err(|what| {
            redis::RedisError::from((redis::ErrorKind::Parse, "unexpected XREAD reply", what.to_owned()))
        })?;
        if entries.is_empty() {
            if spec.follow {
                continue;
            }
            return Ok(());
        }
        if let Some(last) = entries.last() {
            from = last.id.clone();
        }
        if tx.send(Batch::Entries(entries)).is_err() {
            return Ok(()); // the source was dropped
        }
    }
    Ok(())
}

/// The entries of an XREAD/XREADGROUP reply for one stream: `[[stream, [[id, [f, v, ..]], ..]]]`
/// (RESP2) or a map of stream to entries (RESP3); Nil when nothing came.
fn parse_read(reply: Reply) -> Result<Vec<Entry>, &'static str> {
    let streams = match reply {
        Reply::Nil => return Ok(Vec::new()),
        Reply::Array(streams) => streams.into_iter().map(|s| match s {
            Reply::Array(mut pair) if pair.len() == 2 => Ok(pair.remove(1)),
            _ => Err("a stream is not [name, entries]"),
        }),
        Reply::Map(pairs) => {
            return pairs.into_iter().map(|(_, e)| parse_entries(e)).try_fold(Vec::new(), |mut all, e| {
                all.extend(e?);
                Ok(all)
            })
        }
        _ => return Err("the reply is not an array"),
    };
    let mut all = Vec::new();
    for entries in streams {
        all.extend(parse_entries(entries?)?);
    }
    Ok(all)
}

fn parse_entries(entries: Reply) -> Result<Vec<Entry>, &'static str> {
    let Reply::Array(entries) = entries else { return Err("entries are not an array") };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Reply::Array(mut pair) = entry else { return Err("an entry is not [id, fields]") };
        if pair.len() != 2 {
            return Err("an entry is not [id, fields]");
        }
        let fields = pair.pop();
        let id = match pair.pop() {
            Some(Reply::BulkString(b)) => String::from_utf8(b).map_err(|_| "an id is not UTF-8")?,
            Some(Reply::SimpleString(s)) => s,
            _ => return Err("an entry id is not a string"),
        };
        let flat = match fields {
            Some(Reply::Array(flat)) => flat,
            Some(Reply::Nil) => Vec::new(), // deleted entry (XREADGROUP of the pending list)
            _ => return Err("entry fields are not an array"),
        };
        let mut it = flat.into_iter().map(|v| match v {
            Reply::BulkString(b) => Ok(b),
            Reply::SimpleString(s) => Ok(s.into_bytes()),
            _ => Err("a field or value is not a string"),
        });
        let mut fields = Vec::new();
        while let Some(f) = it.next() {
            let v = it.next().ok_or("a field has no value")?;
            fields.push((f?, v?));
        }
        out.push(Entry { id, fields });
    }
    Ok(out)
}
