//! The Redis Streams sink: each output record becomes one stream entry (`XADD stream * field
//! value ..`, the schema's fields by name, values as text), written by a thread per sink instance
//! so that the shard never waits for the network.
//!
//! A shard's instance batches its records and hands them over in chunks of at most
//! [`HANDOFF_ENTRIES`] (or at the shard's periodic flush) through a bounded channel of
//! [`QUEUED_BATCHES`]; when Redis falls behind, the hand-over blocks the shard, which backs its
//! inputs up to the sources (nothing is dropped, and the shard holds at most one chunk).
//!
//! Two modes:
//!
//! - **Write-through** (no snapshots): each chunk is one pipeline of `XADD stream *`. A crash may
//!   repeat or lose output.
//! - **Staged** ([`RedisSinkWriter::staged`], exactly once with snapshots; argued in
//!   `docs/why-redis-sink.md`): a two-phase commit whose first phase is durable in Redis.
//!   1. *Stage.* Each chunk is appended by the writer thread, with one Lua script, to this
//!      instance's current staging stream `dirigo:staged:<stream>:<instance>:current`. The script
//!      is told how many entries the stream held before the chunk, so a chunk retried after a
//!      lost reply is not appended twice, and a staging stream left by an earlier run is refused.
//!   2. *Seal* at barrier `n` ([`RedisSinkWriter::barrier`]): after the chunks before it, the
//!      writer thread renames the current staging stream to the epoch's,
//!      `dirigo:staged:<stream>:<instance>:<n as 20 digits>`, and lists `n` in the instance's
//!      index of staged epochs (a sorted set, `dirigo:staged-epochs:<stream>:<instance>`), in one
//!      script; an epoch without output stages nothing. The receiver `barrier` returned then says
//!      `Ok(())`; the controller waits for every instance's before it writes snapshot `n`'s
//!      manifest. The shard never waits for it.
//!   3. *Commit* ([`commit_staged`], on the controller's thread once the manifest of `n` is
//!      written): for each instance, each staged epoch up to `n` is appended to the stream with
//!      one Lua script that copies its entries (`XADD stream *`), sets the instance's marker
//!      `dirigo:commit:<stream>:<instance>` to the epoch and deletes the staged epoch, all or
//!      nothing; an epoch the marker already covers is deleted without being appended.
//!   4. *Recover* ([`recover_staged`], before a run resumes from snapshot `n`): commit the epochs
//!      up to `n` staged before the crash (the manifest of `n` was written, so their output
//!      counts), then delete every staging stream after `n` and each instance's current one
//!      (the sources replay that output).
//!
//! A failure to stage (Redis unreachable, a script refused) fails the writer for good: every
//! later barrier answers `Err` too (the epoch's output is incomplete), and only a recovery from
//! the last snapshot puts it right.

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::thread::JoinHandle;
use std::time::Duration;

use dirigo_actors::record::{ArchivedRecord, ArchivedValue, Schema};

/// Chunks queued for the writer thread, at most.
pub const QUEUED_BATCHES: usize = 8;
/// Hand a chunk over once it holds this many entries (else at the shard's periodic flush).
pub const HANDOFF_ENTRIES: usize = 1024;
/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys asked for per `SCAN` by [`recover_staged`].
const SCAN_COUNT: usize = 1000;

/// What a barrier's receiver gets: `Ok(())` once the output before the barrier is in Redis, or
/// what failed.
pub type BarrierAck = flume::Receiver<Result<(), String>>;

/// The staging stream of `instance`'s output of `epoch`, once sealed.
pub fn staged_key(stream: &str, instance: u32, epoch: u64) -> String {
    format!("dirigo:staged:{stream}:{instance}:{epoch:020}")
}

/// The staging stream `instance` appends to until its next barrier.
pub fn current_key(stream: &str, instance: u32) -> String {
    format!("dirigo:staged:{stream}:{instance}:current")
}

/// The marker of `instance`: the last epoch it committed.
pub fn marker_key(stream: &str, instance: u32) -> String {
    format!("dirigo:commit:{stream}:{instance}")
}

/// The sorted set of `instance`'s sealed epochs (members: 20-digit epochs, score 0).
pub fn index_key(stream: &str, instance: u32) -> String {
    format!("dirigo:staged-epochs:{stream}:{instance}")
}

/// Appends a chunk to the current staging stream, refused unless the stream holds what its writer
/// staged before (a retry whose first attempt may have been applied checks that first).
/// KEYS[1]: the current staging stream. ARGV[1]: the entries it held before this chunk, as the
/// writer counts them; ARGV[2]: fields per entry (nf); ARGV[3 .. 2+nf]: the field names; then nf
/// values per entry. Returns the entries it holds after.
const CHUNK_LUA: &str = r"
local before = tonumber(ARGV[1])
local nf = tonumber(ARGV[2])
if nf < 1 then
  return redis.error_reply('ERR an entry needs at least one field')
end
local count = (#ARGV - 2 - nf) / nf
local have = redis.call('XLEN', KEYS[1])
if have ~= before then
  return redis.error_reply('ERR the staging stream ' .. KEYS[1] .. ' holds ' .. have ..
    ' entries where its writer staged ' .. before .. ' (left by an earlier run? recover_staged removes it)')
end
local args = {}
for i = 0, count - 1 do
  for j = 1, nf do
    args[2 * j - 1] = ARGV[2 + j]
    args[2 * j] = ARGV[2 + nf + i * nf + j]
  end
  redis.call('XADD', KEYS[1], '*', unpack(args))
end
return have + count
";

/// Seals an epoch: the current staging stream becomes the epoch's, listed in the index.
/// KEYS[1]: the current staging stream, KEYS[2]: the epoch's, KEYS[3]: the index.
/// ARGV[1]: the entries the writer staged in the epoch; ARGV[2]: the epoch, 20 digits; ARGV[3]:
/// `1` when an earlier attempt may have sealed it (its connection failed), else `0`.
const SEAL_LUA: &str = r"
local expected = tonumber(ARGV[1])
local have = redis.call('XLEN', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  if ARGV[3] == '1' and have == 0 and redis.call('XLEN', KEYS[2]) == expected then
    return expected -- an earlier attempt sealed it (its reply was lost)
  end
  return redis.error_reply('ERR the staging stream ' .. KEYS[2] ..
    ' exists already (left by an earlier run? recover_staged removes it)')
end
if have ~= expected then
  return redis.error_reply('ERR the staging stream ' .. KEYS[1] .. ' holds ' .. have ..
    ' entries where its writer staged ' .. expected)
end
if expected == 0 then
  return 0 -- an epoch without output stages nothing
end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('ZADD', KEYS[3], 0, ARGV[2])
return expected
";

/// Commits one staged epoch of one instance, at most once.
/// KEYS[1]: the epoch's staging stream, KEYS[2]: the output stream, KEYS[3]: the marker,
/// KEYS[4]: the index. ARGV[1]: the epoch, 20 digits; ARGV[2]: the epoch, decimal.
/// Returns the entries appended, or -1 when the marker covers the epoch (nothing appended).
/// Everything that can refuse is checked before the first write: a script is not rolled back.
const COMMIT_LUA: &str = r"
-- a >= b for digit strings of one length, byte by byte (Lua's `>=` on strings follows the
-- server's locale).
local function at_least(a, b)
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x > y
    end
  end
  return true
end
local done = redis.call('GET', KEYS[3])
if done then
  if not string.match(done, '^%d+$') or #done > 20 then
    return redis.error_reply('ERR the commit marker ' .. KEYS[3] .. ' holds `' .. done .. '`, not an epoch')
  end
  if at_least(string.rep('0', 20 - #done) .. done, ARGV[1]) then
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', KEYS[4], ARGV[1])
    return -1
  end
end
for _, key in ipairs({KEYS[1], KEYS[2]}) do
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= 'stream' then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a stream')
  end
end
local n = 0
local from = '-'
while true do
  local batch = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', 512)
  if #batch == 0 then
    break
  end
  for _, entry in ipairs(batch) do
    redis.call('XADD', KEYS[2], '*', unpack(entry[2]))
  end
  n = n + #batch
  from = '(' .. batch[#batch][1]
end
redis.call('SET', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return n
";

static CHUNK: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CHUNK_LUA));
static SEAL: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SEAL_LUA));
static COMMIT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(COMMIT_LUA));

/// What went wrong committing or recovering a staged redis sink, naming the server, the stream
/// and, where it is one instance's, the instance.
#[derive(Debug, thiserror::Error)]
pub enum RedisSinkError {
    #[error("redis sink (stream `{stream}`): cannot connect to {url}: {source}")]
    Connect { url: String, stream: String, source: redis::RedisError },
    #[error("redis sink (stream `{stream}` at {url}): cannot list its staging streams (SCAN): {source}")]
    Scan { url: String, stream: String, source: redis::RedisError },
    #[error("redis sink (stream `{stream}` at {url}, instance {instance}): cannot {op}: {source}")]
    Instance { url: String, stream: String, instance: u32, op: String, source: redis::RedisError },
    #[error(
        "redis sink (stream `{stream}` at {url}, instance {instance}): the index {key} lists `{member}`, \
         not a 20-digit epoch"
    )]
    Index { url: String, stream: String, instance: u32, key: String, member: String },
}

/// What the writer thread does.
enum Job {
    /// Write through: one pipeline of `XADD`s.
    Pipeline(redis::Pipeline),
    /// Staged: append a chunk of `count` entries to the current staging stream, which holds
    /// `before` (an `EVALSHA` of [`CHUNK_LUA`]).
    Stage { chunk: redis::Cmd, current: String, before: u64, count: u64 },
    /// A barrier: answer `ack` once everything before is written (staged: seal the epoch first).
    Barrier { seal: Option<Seal>, ack: flume::Sender<Result<(), String>> },
}

/// Sealing one staged epoch ([`SEAL_LUA`]).
struct Seal {
    epoch: u64,
    /// Entries staged in the epoch.
    entries: u64,
    current: String,
    sealed: String,
    index: String,
}

/// A staged writer's epoch in progress, on the shard.
struct Staged {
    instance: u32,
    current: String,
    index: String,
    /// The chunk being filled (an `EVALSHA` of [`CHUNK_LUA`]): `entries` of them so far.
    chunk: redis::Cmd,
    entries: usize,
    /// Entries of this epoch handed to the writer thread before `chunk`.
    handed: u64,
}

/// One shard's instance of a redis sink.
pub struct RedisSinkWriter {
    stream: String,
    fields: Vec<String>,
    pipe: redis::Pipeline,
    entries: usize,
    /// Some: exactly-once, output staged in Redis per epoch and committed by the controller.
    staged: Option<Box<Staged>>,
    /// What the writer thread logs and reports, set by `staged`.
    who: std::sync::Arc<std::sync::Mutex<Who>>,
    tx: Option<flume::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    cell: String,
}

/// Who a writer is, in its log lines and errors.
#[derive(Clone, Debug)]
struct Who {
    name: String,
    url: String,
    stream: String,
    instance: Option<u32>,
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redis sink {} (stream `{}` at {}", self.name, self.stream, self.url)?;
        match self.instance {
            Some(i) => write!(f, ", instance {i})"),
            None => write!(f, ")"),
        }
    }
}

impl RedisSinkWriter {
    /// A writer of records of `schema` to `stream` at `url` (checked here; connected by the
    /// writer thread). `name` (`app/sink`) is for logs. It writes through until made
    /// [`staged`](Self::staged).
    pub fn new(url: &str, stream: &str, schema: &Schema, name: String) -> Result<RedisSinkWriter, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let (tx, rx) = flume::bounded::<Job>(QUEUED_BATCHES);
        let who = Who { name, url: url.to_owned(), stream: stream.to_owned(), instance: None };
        let who = std::sync::Arc::new(std::sync::Mutex::new(who));
        let shared = who.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dirigo-redis-out-{stream}"))
            .spawn(move || write_loop(client, rx, &shared))
            .map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::Io, "cannot start the writer thread", e.to_string()))
            })?;
        Ok(RedisSinkWriter {
            stream: stream.to_owned(),
            fields: schema.fields().map(|(n, _)| n.to_owned()).collect(),
            pipe: redis::pipe(),
            entries: 0,
            staged: None,
            who,
            tx: Some(tx),
            thread: Some(thread),
            cell: String::new(),
        })
    }

    /// Exactly once: this is instance `instance` of the sink, and its output is staged in Redis
    /// per epoch ([`barrier`](Self::barrier)) until the controller commits it
    /// ([`commit_staged`]). Call before the first record.
    pub fn staged(mut self, instance: u32) -> RedisSinkWriter {
        if let Ok(mut who) = self.who.lock() {
            who.instance = Some(instance);
        }
        let current = current_key(&self.stream, instance);
        let index = index_key(&self.stream, instance);
        self.staged =
            Some(Box::new(Staged { instance, chunk: redis::Cmd::new(), entries: 0, handed: 0, current, index }));
        self
    }

    /// Barrier `epoch` reached this instance: what it was given since the previous barrier is
    /// the output of `epoch`. Staged, the writer thread seals it in Redis after everything handed
    /// to it before; write-through, it only passes the barrier after them. The receiver gets
    /// `Ok(())` once that is acknowledged by Redis, or what failed (staged: this and every later
    /// barrier; write-through: the batches lost since the previous barrier). Never blocks on
    /// Redis, only on the hand-over ([`QUEUED_BATCHES`]).
    pub fn barrier(&mut self, epoch: u64) -> BarrierAck {
        self.flush();
        let (ack, rx) = flume::bounded(1);
        let seal = self.staged.as_mut().map(|st| {
            let entries = std::mem::take(&mut st.handed);
            Seal {
                epoch,
                entries,
                current: st.current.clone(),
                sealed: staged_key(&self.stream, st.instance, epoch),
                index: st.index.clone(),
            }
        });
        self.send(Job::Barrier { seal, ack });
        rx
    }

    /// Queue one record. Hot path.
    pub fn push(&mut self, rec: &ArchivedRecord) {
        if let Some(st) = &mut self.staged {
            if st.entries == 0 {
                st.chunk = redis::cmd("EVALSHA");
                st.chunk.arg(CHUNK.get_hash()).arg(1).arg(&st.current).arg(st.handed).arg(self.fields.len());
                for name in &self.fields {
                    st.chunk.arg(name);
                }
            }
            for v in rec.fields.iter() {
                self.cell.clear();
                value_text(v, &mut self.cell);
                st.chunk.arg(self.cell.as_str());
            }
            st.entries += 1;
            if st.entries >= HANDOFF_ENTRIES {
                self.flush();
            }
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
        if let Some(st) = &mut self.staged {
            if st.entries == 0 {
                return;
            }
            let (before, count) = (st.handed, st.entries as u64);
            st.handed += count;
            st.entries = 0;
            let chunk = std::mem::replace(&mut st.chunk, redis::Cmd::new());
            let current = st.current.clone();
            self.send(Job::Stage { chunk, current, before, count });
            return;
        }
        if self.entries == 0 {
            return;
        }
        let pipe = std::mem::replace(&mut self.pipe, redis::pipe());
        self.entries = 0;
        self.send(Job::Pipeline(pipe));
    }

    fn send(&self, job: Job) {
        let Some(tx) = &self.tx else { return };
        if let Err(flume::SendError(Job::Barrier { ack, .. })) = tx.send(job) {
            let who = self.who.lock().map(|w| w.to_string()).unwrap_or_default();
            let _ = ack.send(Err(format!("{who}: the writer thread has stopped")));
        }
    }
}

impl Drop for RedisSinkWriter {
    /// Writes through what is queued; a staged writer drops what came after its last barrier
    /// (never committed: the sources replay it).
    fn drop(&mut self) {
        if self.staged.is_none() {
            self.flush();
        }
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

/// The writer thread's connection and what it has lost.
struct Writer<'a> {
    client: redis::Client,
    con: Option<redis::Connection>,
    who: &'a std::sync::Mutex<Who>,
    /// Write-through batches lost since the last barrier.
    lost: u64,
    /// Staged: why staging failed (for good).
    failed: Option<String>,
}

impl Writer<'_> {
    fn who(&self) -> String {
        self.who.lock().map(|w| w.to_string()).unwrap_or_default()
    }

    /// Run `f` on the connection (connecting first). A failure is retried once on a fresh
    /// connection, but an error the server answered only when `retry_refused` (write-through):
    /// the staging scripts refuse before they write, so a retry would be refused again. `f` is
    /// told whether an earlier attempt may have been applied (its connection failed after
    /// sending).
    fn run<T>(
        &mut self,
        what: &str,
        retry_refused: bool,
        f: impl Fn(&mut redis::Connection, bool) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let mut last = String::new();
        let mut unsure = false;
        for attempt in 0..2 {
            if self.con.is_none() {
                match self.client.get_connection_with_timeout(CONNECT_TIMEOUT) {
                    Ok(c) => self.con = Some(c),
                    Err(e) => {
                        last = format!("cannot connect: {e}");
                        tracing::error!(sink = %self.who(), attempt, "{what}: {last}");
                        continue;
                    }
                }
            }
            let Some(c) = self.con.as_mut() else { continue };
            match f(c, unsure) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    last = e.to_string();
                    tracing::error!(sink = %self.who(), attempt, "{what} failed: {last}");
                    if e.code().is_some() && !retry_refused {
                        break;
                    }
                    unsure |= e.code().is_none();
                    self.con = None;
                }
            }
        }
        Err(format!("{}: {what} failed: {last}", self.who()))
    }
}

/// The writer thread: run each job in order, connecting (and reconnecting) as needed.
fn write_loop(client: redis::Client, rx: flume::Receiver<Job>, who: &std::sync::Mutex<Who>) {
    let mut w = Writer { client, con: None, who, lost: 0, failed: None };
    for job in rx.iter() {
        match job {
            Job::Pipeline(pipe) => {
                if w.run("writing a batch", true, |c, _| pipe.query::<()>(c)).is_err() {
                    tracing::error!(sink = %w.who(), "a batch of output was not written to redis");
                    w.lost += 1;
                }
            }
            Job::Stage { chunk, current, before, count } => {
                if w.failed.is_some() {
                    continue; // the epoch is incomplete already: recovery replays it
                }
                let staged = w.run("staging a chunk", false, |c, unsure| {
                    if unsure && redis::cmd("XLEN").arg(&current).query::<u64>(c)? == before + count {
                        return Ok(()); // the first attempt was applied
                    }
                    eval(c, &CHUNK, &chunk).map(|_: u64| ())
                });
                if let Err(e) = staged {
                    w.failed = Some(e);
                }
            }
            Job::Barrier { seal: None, ack } => {
                let lost = std::mem::take(&mut w.lost);
                let outcome = match lost {
                    0 => Ok(()),
                    n => Err(format!("{}: {n} batch(es) of output were not written", w.who())),
                };
                let _ = ack.send(outcome);
            }
            Job::Barrier { seal: Some(seal), ack } => {
                if w.failed.is_none() {
                    let what = format!("sealing epoch {}", seal.epoch);
                    let sealed = w.run(&what, false, |c, unsure| {
                        SEAL.key(&seal.current)
                            .key(&seal.sealed)
                            .key(&seal.index)
                            .arg(seal.entries)
                            .arg(format!("{:020}", seal.epoch))
                            .arg(u8::from(unsure))
                            .invoke::<u64>(c)
                    });
                    if let Err(e) = sealed {
                        w.failed = Some(e);
                    }
                }
                let _ = ack.send(match &w.failed {
                    None => Ok(()),
                    Some(e) => Err(e.clone()),
                });
            }
        }
    }
}

/// Run an `EVALSHA` of `script` built beforehand, loading the script when the server lacks it.
fn eval<T: redis::FromRedisValue>(
    con: &mut redis::Connection,
    script: &redis::Script,
    cmd: &redis::Cmd,
) -> redis::RedisResult<T> {
    match cmd.query(con) {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load(con)?;
            cmd.query(con)
        }
        other => other,
    }
}

fn connect(url: &str, stream: &str) -> Result<redis::Connection, RedisSinkError> {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(CONNECT_TIMEOUT))
        .map_err(|source| RedisSinkError::Connect { url: url.to_owned(), stream: stream.to_owned(), source })
}

/// Snapshot `upto`'s manifest is written: commit, for each of `instances` of the staged sink
/// writing `stream` at `url`, every staged epoch up to `upto` that its marker does not cover, in
/// ascending epoch order, each epoch with one script that appends its entries and moves the
/// marker (all or nothing); staged epochs the marker covers are deleted unwritten. Returns how
/// many entries were appended. Idempotent: a second call appends nothing. Blocking: call it
/// from the controller, not a shard.
pub fn commit_staged(url: &str, stream: &str, instances: &[u32], upto: u64) -> Result<u64, RedisSinkError> {
    let mut con = connect(url, stream)?;
    commit_on(&mut con, url, stream, instances, upto)
}

fn commit_on(
    con: &mut redis::Connection,
    url: &str,
    stream: &str,
    instances: &[u32],
    upto: u64,
) -> Result<u64, RedisSinkError> {
    let mut appended = 0;
    for &instance in instances {
        let fail = |op: String| {
            move |source| RedisSinkError::Instance {
                url: url.to_owned(),
                stream: stream.to_owned(),
                instance,
                op,
                source,
            }
        };
        let index = index_key(stream, instance);
        let epochs: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(&index)
            .arg("-")
            .arg(format!("[{upto:020}"))
            .query(con)
            .map_err(fail(format!("list its staged epochs ({index})")))?;
        for member in epochs {
            let Some(epoch) = parse_epoch(&member) else {
                return Err(RedisSinkError::Index {
                    url: url.to_owned(),
                    stream: stream.to_owned(),
                    instance,
                    key: index,
                    member,
                });
            };
            let n: i64 = COMMIT
                .key(staged_key(stream, instance, epoch))
                .key(stream)
                .key(marker_key(stream, instance))
                .key(&index)
                .arg(&member)
                .arg(epoch)
                .invoke(con)
                .map_err(fail(format!("commit epoch {epoch}")))?;
            match n {
                -1 => tracing::info!(stream, instance, epoch, "epoch committed before: its staged output is dropped"),
                n => appended += n.max(0) as u64,
            }
        }
    }
    Ok(appended)
}

/// A 20-digit epoch.
fn parse_epoch(s: &str) -> Option<u64> {
    (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

/// `s` matched literally in a `SCAN MATCH` pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Before a run resumes from snapshot `snapshot` (0: none): commit what `instances` of the
/// staged sink writing `stream` at `url` staged up to `snapshot` ([`commit_staged`]), then delete
/// every staging stream of theirs after it and their current ones (the sources replay that
/// output). The staging streams are found with `SCAN` (so one the index lost is handled too).
/// `instances`: every instance of the run being recovered.
pub fn recover_staged(url: &str, stream: &str, instances: &[u32], snapshot: u64) -> Result<(), RedisSinkError> {
    let mut con = connect(url, stream)?;
    let prefix = format!("dirigo:staged:{stream}:");
    let pattern = format!("{}*", glob_escape(&prefix));
    let mut keys: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query(&mut con)
            .map_err(|source| RedisSinkError::Scan { url: url.to_owned(), stream: stream.to_owned(), source })?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    // `<instance>:<20-digit epoch | current>` after the prefix; anything else (another stream
    // whose name starts with this one's and a colon) is not ours.
    let mut stale: Vec<(u32, Vec<u8>, Option<u64>)> = Vec::new();
    for key in keys {
        let Some(rest) = key.strip_prefix(prefix.as_bytes()).and_then(|r| std::str::from_utf8(r).ok()) else {
            continue;
        };
        let Some((instance, suffix)) = rest.split_once(':') else { continue };
        let Some(instance) = instance.parse::<u32>().ok().filter(|i| instances.contains(i)) else { continue };
        let epoch = match suffix {
            "current" => None,
            s => match parse_epoch(s) {
                Some(e) => Some(e),
                None => continue,
            },
        };
        match epoch {
            // Staged before snapshot `snapshot` was written: committed below (listed again in
            // the index in case it lost it).
            Some(e) if e <= snapshot => {
                redis::cmd("ZADD")
                    .arg(index_key(stream, instance))
                    .arg(0)
                    .arg(format!("{e:020}"))
                    .query::<()>(&mut con)
                    .map_err(instance_err(url, stream, instance, format!("list epoch {e} in its index")))?;
            }
            _ => stale.push((instance, key.clone(), epoch)),
        }
    }
    commit_on(&mut con, url, stream, instances, snapshot)?;
    for (instance, key, epoch) in stale {
        let what = match epoch {
            Some(e) => format!("delete its staged epoch {e}"),
            None => "delete its current staging stream".to_owned(),
        };
        redis::cmd("DEL").arg(key).query::<()>(&mut con).map_err(instance_err(url, stream, instance, what))?;
    }
    for &instance in instances {
        redis::cmd("ZREMRANGEBYLEX")
            .arg(index_key(stream, instance))
            .arg(format!("({snapshot:020}"))
            .arg("+")
            .query::<()>(&mut con)
            .map_err(instance_err(url, stream, instance, "forget its epochs after the snapshot".into()))?;
    }
    Ok(())
}

fn instance_err<'a>(
    url: &'a str,
    stream: &'a str,
    instance: u32,
    op: String,
) -> impl FnOnce(redis::RedisError) -> RedisSinkError + 'a {
    move |source| RedisSinkError::Instance { url: url.to_owned(), stream: stream.to_owned(), instance, op, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_and_patterns() {
        assert_eq!(staged_key("out", 3, 7), "dirigo:staged:out:3:00000000000000000007");
        assert_eq!(parse_epoch("00000000000000000007"), Some(7));
        assert_eq!(parse_epoch(&format!("{:020}", u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_epoch("99999999999999999999"), None, "past u64");
        assert_eq!(parse_epoch("7"), None);
        assert_eq!(parse_epoch("current"), None);
        assert_eq!(glob_escape("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d");
    }
}
