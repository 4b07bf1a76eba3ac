//! The Redis Streams source and sink against a real `redis-server` (Debian's redis-server 7),
//! started by each test on a free loopback port with no persistence, and stopped after it.
//! `./test.sh` installs the server when it is missing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{dirigo, free_address, output, stderr, temp_dir};
use dirigo_actors::record::{access, FieldType, Record, Schema, Value};
use dirigo_engine::redis_sink::{
    commit_staged, current_key, index_key, marker_key, recover_staged, staged_key, BarrierAck, RedisSinkWriter,
    HANDOFF_ENTRIES,
};
use dirigo_engine::source::{RedisSource, RedisSpec, SourceInstance, SourcePosition};
use dirigo_net::ingress::Produced;
use rkyv::util::AlignedVec;

/// A `redis-server` of this test: killed and its directory removed on drop.
struct RedisServer {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl RedisServer {
    fn start(tag: &str) -> RedisServer {
        let dir = temp_dir(&format!("redis-{tag}"));
        let port = free_address().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): run ./test.sh, which installs it, or `apt-get install redis-server`")
            });
        let url = format!("redis://127.0.0.1:{port}/");
        let server = RedisServer { child, dir, url };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ping = redis::Client::open(server.url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return server;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer on {}: {ping:?}", server.url);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn con(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str()).unwrap().get_connection().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn xadd(con: &mut redis::Connection, stream: &str, fields: &[(&str, String)]) {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (f, v) in fields {
        cmd.arg(*f).arg(v);
    }
    cmd.query::<String>(con).unwrap();
}

fn schema() -> Schema {
    Schema::new(vec![("k".into(), FieldType::U64), ("v".into(), FieldType::U64)])
}

fn source(url: &str, start: &str) -> SourceInstance {
    let spec = RedisSpec {
        url: url.into(),
        stream: "in".into(),
        group: None,
        start: start.into(),
        follow: false,
        name: "t/in".into(),
    };
    SourceInstance::Redis(Box::new(RedisSource::new(spec, schema()).unwrap()))
}

/// Records (None: a skipped entry) of `s` until it ends or `limit`.
fn read(s: &mut SourceInstance, limit: usize) -> Vec<Option<Vec<Value>>> {
    let (mut values, mut bytes) = (Vec::new(), AlignedVec::new());
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < limit {
        match s.produce(&mut values, &mut bytes) {
            Some(Produced::Values { .. }) => out.push(Some(values.clone())),
            Some(Produced::Skipped) => out.push(None),
            Some(Produced::Idle) => {
                assert!(Instant::now() < deadline, "the redis source stalled");
                std::thread::sleep(Duration::from_micros(200));
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    out
}

#[test]
fn a_redis_source_resumes_exactly_from_its_position() {
    let server = RedisServer::start("resume");
    let mut con = server.con();
    for i in 0..40u64 {
        xadd(&mut con, "in", &[("k", (i % 3).to_string()), ("v", i.to_string())]);
        if i == 17 {
            xadd(&mut con, "in", &[("k", "not a number".into()), ("v", "1".into())]);
        }
    }
    let whole = read(&mut source(&server.url, "0-0"), usize::MAX);
    assert_eq!(whole.len(), 41);
    assert_eq!(whole.iter().filter(|r| r.is_none()).count(), 1, "the bad entry is skipped");
    for n in [0, 1, 18, 19, 40, 41] {
        let mut first = source(&server.url, "0-0");
        let mut head = read(&mut first, n);
        let position = SourcePosition::from_bytes(&first.position().to_bytes()).unwrap();
        drop(first);
        let mut second = source(&server.url, "0-0");
        second.seek(&position).unwrap();
        head.extend(read(&mut second, usize::MAX));
        assert_eq!(head, whole, "split after {n}");
    }
}

#[test]
fn a_consumer_group_source_reads_every_entry_once() {
    let server = RedisServer::start("group");
    let mut con = server.con();
    for i in 0..10u64 {
        xadd(&mut con, "in", &[("k", i.to_string()), ("v", i.to_string())]);
    }
    let spec = RedisSpec {
        url: server.url.clone(),
        stream: "in".into(),
        group: Some(("g".into(), "c1".into())),
        start: "0-0".into(),
        follow: false,
        name: "t/in".into(),
    };
    let mut s = SourceInstance::Redis(Box::new(RedisSource::new(spec.clone(), schema()).unwrap()));
    let got = read(&mut s, usize::MAX);
    assert_eq!(got.len(), 10);
    let position = s.position();
    drop(s);
    // Resuming the group from a position re-reads exactly what came after it.
    let mut s = SourceInstance::Redis(Box::new(RedisSource::new(spec, schema()).unwrap()));
    let SourcePosition::Redis { last_id } = &position else { unreachable!() };
    let ids: Vec<String> = redis::cmd("XRANGE")
        .arg("in")
        .arg("-")
        .arg("+")
        .query::<Vec<(String, Vec<String>)>>(&mut con)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(last_id, ids.last().unwrap());
    s.seek(&SourcePosition::Redis { last_id: ids[6].clone() }).unwrap();
    assert_eq!(read(&mut s, usize::MAX), got[7..].to_vec());
}

/// A config app reads a redis stream, counts by key and writes to a redis stream: each key's last
/// count equals the oracle.
#[test]
fn a_config_app_counts_a_redis_stream_into_a_redis_stream() {
    let server = RedisServer::start("app");
    let mut con = server.con();
    let mut oracle: BTreeMap<u64, u64> = BTreeMap::new();
    let mut pipe = redis::pipe();
    for i in 0..3000u64 {
        let k = (i * 7919) % 13;
        *oracle.entry(k).or_default() += 1;
        pipe.cmd("XADD").arg("in").arg("*").arg("k").arg(k).arg("v").arg(i).ignore();
    }
    pipe.query::<()>(&mut con).unwrap();
    let dir = temp_dir("redis-app");
    let config = dir.join("redis.toml");
    let text = format!(
        "[[app]]\nname = \"r\"\nslo = \"1s\"\nschema = {{ k = \"u64\", v = \"u64\" }}\n\n[[app.source]]\nname = \"in\"\n\
         kind = \"redis\"\nurl = \"{url}\"\nstream = \"in\"\nfollow = false\n\n[[app.function]]\nname = \"c\"\n\
         kind = \"count\"\ninput = \"in\"\nkey = \"k\"\n\n[[app.sink]]\nname = \"out\"\nkind = \"redis\"\ninput = \"c\"\n\
         url = \"{url}\"\nstream = \"out\"\n",
        url = server.url
    );
    std::fs::write(&config, text).unwrap();
    let out = output(dirigo().arg("run").arg(&config).args(["--quiet", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let entries: Vec<(String, BTreeMap<String, String>)> =
        redis::cmd("XRANGE").arg("out").arg("-").arg("+").query(&mut con).unwrap();
    assert_eq!(entries.len(), 3000, "one output per input");
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for (_, fields) in &entries {
        // A keyed count emits `{key, count}`.
        last.insert(fields["key"].parse().unwrap(), fields["count"].parse().unwrap());
    }
    assert_eq!(last, oracle);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn redis_keys_are_checked_at_their_line() {
    let dir = temp_dir("redis-check");
    let base = "[[app]]\nname = \"r\"\nslo = \"1s\"\nschema = { k = \"u64\" }\n\n[[app.source]]\nname = \"in\"\n\
                kind = \"redis\"\nurl = \"redis://127.0.0.1:1/\"\nstream = \"in\"\n\n[[app.sink]]\nname = \"out\"\n\
                kind = \"redis\"\ninput = \"in\"\nurl = \"redis://127.0.0.1:1/\"\nstream = \"out\"\n";
    let check = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        (output(dirigo().arg("check").arg(&p)), p)
    };
    let (out, _) = check("ok.toml", base);
    assert!(out.status.success(), "{}", stderr(&out));
    for (text, line, what) in [
        (base.replacen("redis://127.0.0.1:1/", "http://x", 1), 9, "`url`"),
        (base.replacen("stream = \"in\"", "stream = \"in\"\nstart = \"yesterday\"", 1), 11, "`start`"),
        (base.replacen("stream = \"in\"", "stream = \"in\"\ngroup = \"g\"", 1), 6, "`consumer`"),
        (base.replacen("stream = \"out\"", "stream = \"out\"\nfollow = true", 1), 18, "`follow`"),
        (base.replacen("stream = \"out\"\n", "", 1), 12, "`stream`"),
    ] {
        let (out, p) = check("bad.toml", &text);
        assert!(!out.status.success(), "accepted: {text}");
        let err = stderr(&out);
        assert!(err.contains(&format!("{}:{line}:", p.display())) && err.contains(what), "{what} at {line}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A redis sink writer of `schema()` to stream `out`, staged as `instance` (None: write-through).
fn writer(url: &str, instance: Option<u32>) -> RedisSinkWriter {
    let w = RedisSinkWriter::new(url, "out", &schema(), "t/out".into()).unwrap();
    match instance {
        Some(i) => w.staged(i),
        None => w,
    }
}

/// Push records `{k, v}` for `v` in `vs`.
fn push(w: &mut RedisSinkWriter, k: u64, vs: impl IntoIterator<Item = u64>) {
    for v in vs {
        let bytes = Record::from(vec![Value::U64(k), Value::U64(v)]).to_archive();
        w.push(access(&bytes).unwrap());
    }
}

/// What a barrier's receiver says (a writer thread answers it, whatever happens).
fn ack(rx: BarrierAck) -> Result<(), String> {
    rx.recv_timeout(Duration::from_secs(60)).expect("the writer thread answers every barrier")
}

/// The `(k, v)` of every entry of `key`, in stream order.
fn pairs(con: &mut redis::Connection, key: &str) -> Vec<(u64, u64)> {
    let entries: Vec<(String, BTreeMap<String, String>)> =
        redis::cmd("XRANGE").arg(key).arg("-").arg("+").query(con).unwrap();
    entries.iter().map(|(_, f)| (f["k"].parse().unwrap(), f["v"].parse().unwrap())).collect()
}

/// Every key of the staged sink protocol.
fn protocol_keys(con: &mut redis::Connection) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for pattern in ["dirigo:staged:*", "dirigo:staged-epochs:*"] {
        keys.extend(redis::cmd("KEYS").arg(pattern).query::<Vec<String>>(con).unwrap());
    }
    keys
}

fn exists(con: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query::<u64>(con).unwrap() == 1
}

/// Staged output stays out of the stream until `commit_staged`, which appends each instance's
/// epochs once, in epoch order (an epoch larger than a hand-over spans several chunks; an epoch
/// without output stages nothing); committing again appends nothing.
#[test]
fn staged_output_appears_only_when_committed_and_once() {
    let server = RedisServer::start("staged");
    let mut con = server.con();
    let (mut w0, mut w1) = (writer(&server.url, Some(0)), writer(&server.url, Some(1)));
    let big = HANDOFF_ENTRIES as u64 * 2 + 17;
    // Instance 0 writes k = epoch, instance 1 k = 100 + epoch.
    push(&mut w0, 1, 0..3);
    push(&mut w1, 101, 0..2);
    assert_eq!(ack(w0.barrier(1)), Ok(()));
    assert_eq!(ack(w1.barrier(1)), Ok(()));
    push(&mut w0, 2, 0..big);
    assert_eq!(ack(w0.barrier(2)), Ok(()));
    assert_eq!(ack(w1.barrier(2)), Ok(()), "an epoch without output");
    push(&mut w1, 103, 0..4);
    assert_eq!(ack(w0.barrier(3)), Ok(()));
    assert_eq!(ack(w1.barrier(3)), Ok(()));
    assert!(!exists(&mut con, "out"), "nothing reaches the stream before a commit");
    assert_eq!(pairs(&mut con, &staged_key("out", 0, 2)).len() as u64, big, "sealed durably in redis");
    assert!(!exists(&mut con, &staged_key("out", 1, 2)), "an epoch without output stages nothing");
    assert!(!exists(&mut con, &current_key("out", 0)), "a barrier seals what was current");

    assert_eq!(commit_staged(&server.url, "out", &[0, 1], 2).unwrap(), 3 + big + 2);
    let out = pairs(&mut con, "out");
    let of = |inst: u64| out.iter().copied().filter(|&(k, _)| k / 100 == inst).collect::<Vec<_>>();
    let expected0: Vec<(u64, u64)> = (0..3).map(|v| (1, v)).chain((0..big).map(|v| (2, v))).collect();
    assert_eq!(of(0), expected0, "instance 0: epoch 1 then epoch 2, each in order, once");
    assert_eq!(of(1), [(101, 0), (101, 1)]);
    assert_eq!(commit_staged(&server.url, "out", &[0, 1], 2).unwrap(), 0, "idempotent");
    assert_eq!(pairs(&mut con, "out"), out);
    let marker =
        |con: &mut redis::Connection, i| redis::cmd("GET").arg(marker_key("out", i)).query::<String>(con).unwrap();
    assert_eq!((marker(&mut con, 0), marker(&mut con, 1)), ("2".into(), "1".into()));
    assert_eq!(
        protocol_keys(&mut con),
        BTreeSet::from([staged_key("out", 1, 3), index_key("out", 1)]),
        "committed epochs are deleted; epoch 3 waits for its snapshot"
    );

    assert_eq!(commit_staged(&server.url, "out", &[0, 1], 3).unwrap(), 4);
    assert_eq!(commit_staged(&server.url, "out", &[0, 1], 3).unwrap(), 0);
    let out = pairs(&mut con, "out");
    assert_eq!(out.len() as u64, 3 + big + 2 + 4);
    assert_eq!(out[out.len() - 4..], [(103, 0), (103, 1), (103, 2), (103, 3)]);
    assert!(protocol_keys(&mut con).is_empty(), "{:?}", protocol_keys(&mut con));

    // Epochs compare as numbers: a marker at 9 covers epoch 9, not epoch 10.
    redis::cmd("SET").arg(marker_key("out", 0)).arg(9).query::<()>(&mut con).unwrap();
    push(&mut w0, 9, 0..1);
    assert_eq!(ack(w0.barrier(9)), Ok(()));
    push(&mut w0, 10, 0..2);
    assert_eq!(ack(w0.barrier(10)), Ok(()));
    assert_eq!(commit_staged(&server.url, "out", &[0], 10).unwrap(), 2);
    assert_eq!(pairs(&mut con, "out")[out.len()..], [(10, 0), (10, 1)]);
    assert_eq!(marker(&mut con, 0), "10");
}

/// A crash after barrier 3 (snapshot 2's manifest written, its commit not made; epoch 3 sealed
/// but no snapshot 3; part of epoch 4 staged) loses nothing and repeats nothing: recovery from
/// snapshot 2 commits epoch 2 once and deletes what came after; the replay of epoch 3 commits
/// with snapshot 3. A replay of an epoch the marker covers is dropped whole.
#[test]
fn recovery_commits_what_a_crash_left_staged_once() {
    let server = RedisServer::start("recover");
    let mut con = server.con();
    let mut w = writer(&server.url, Some(0));
    push(&mut w, 1, 0..3);
    assert_eq!(ack(w.barrier(1)), Ok(()));
    assert_eq!(commit_staged(&server.url, "out", &[0], 1).unwrap(), 3);
    push(&mut w, 2, 0..4);
    assert_eq!(ack(w.barrier(2)), Ok(()));
    push(&mut w, 3, 0..5);
    assert_eq!(ack(w.barrier(3)), Ok(()));
    push(&mut w, 4, 0..6);
    w.flush();
    push(&mut w, 4, 6..8); // not handed over: the crash drops it
    drop(w); // the crash: its writer thread finishes what it was handed
    assert_eq!(pairs(&mut con, &current_key("out", 0)).len(), 6, "epoch 4 so far is staged");
    assert_eq!(pairs(&mut con, "out").len(), 3);

    recover_staged(&server.url, "out", &[0], 2).unwrap();
    let committed: Vec<(u64, u64)> = (0..3).map(|v| (1, v)).chain((0..4).map(|v| (2, v))).collect();
    assert_eq!(pairs(&mut con, "out"), committed, "epoch 2 committed once, after epoch 1");
    assert!(protocol_keys(&mut con).is_empty(), "epochs 3 and 4 deleted: {:?}", protocol_keys(&mut con));
    recover_staged(&server.url, "out", &[0], 2).unwrap();
    assert_eq!(pairs(&mut con, "out"), committed, "recovering twice changes nothing");

    // The replay of epoch 3 (different output this time) commits with snapshot 3.
    let mut w = writer(&server.url, Some(0));
    push(&mut w, 3, 100..102);
    assert_eq!(ack(w.barrier(3)), Ok(()));
    assert_eq!(commit_staged(&server.url, "out", &[0], 3).unwrap(), 2);
    drop(w);
    let mut all = committed.clone();
    all.extend([(3, 100), (3, 101)]);
    assert_eq!(pairs(&mut con, "out"), all);

    // Recovery from an older snapshot (2) replays epoch 3 again: the marker (3) drops it whole.
    recover_staged(&server.url, "out", &[0], 2).unwrap();
    let mut w = writer(&server.url, Some(0));
    push(&mut w, 3, 200..205);
    assert_eq!(ack(w.barrier(3)), Ok(()));
    assert!(exists(&mut con, &staged_key("out", 0, 3)));
    assert_eq!(commit_staged(&server.url, "out", &[0], 3).unwrap(), 0);
    assert_eq!(pairs(&mut con, "out"), all);
    assert!(protocol_keys(&mut con).is_empty(), "{:?}", protocol_keys(&mut con));
}

/// A commit refused by redis, an unreachable server and a staging stream left by an earlier run
/// give errors that name the stream; a refused commit leaves the staged epoch for the next try.
#[test]
fn staged_sink_failures_name_the_stream() {
    let server = RedisServer::start("fail");
    let mut con = server.con();
    let mut w = writer(&server.url, Some(0));
    push(&mut w, 1, 0..3);
    assert_eq!(ack(w.barrier(1)), Ok(()));
    redis::cmd("SET").arg("out").arg("not a stream").query::<()>(&mut con).unwrap();
    let err = commit_staged(&server.url, "out", &[0], 1).unwrap_err().to_string();
    for part in ["stream `out`", "instance 0", "commit epoch 1", "not a stream"] {
        assert!(err.contains(part), "{part}: {err}");
    }
    assert_eq!(pairs(&mut con, &staged_key("out", 0, 1)).len(), 3, "the staged epoch is kept");
    assert!(!exists(&mut con, &marker_key("out", 0)));
    redis::cmd("DEL").arg("out").query::<()>(&mut con).unwrap();
    assert_eq!(commit_staged(&server.url, "out", &[0], 1).unwrap(), 3);

    redis::cmd("SET").arg(marker_key("out", 0)).arg("soon").query::<()>(&mut con).unwrap();
    push(&mut w, 2, 0..1);
    assert_eq!(ack(w.barrier(2)), Ok(()));
    let err = commit_staged(&server.url, "out", &[0], 2).unwrap_err().to_string();
    assert!(err.contains("stream `out`") && err.contains("`soon`, not an epoch"), "{err}");
    drop(w);

    // A new writer whose recovery was skipped finds the previous one's staging stream.
    let mut w = writer(&server.url, Some(0));
    push(&mut w, 3, 0..2);
    w.flush();
    drop(w);
    let mut w = writer(&server.url, Some(0));
    push(&mut w, 3, 0..2);
    let err = ack(w.barrier(3)).unwrap_err();
    assert!(err.contains("stream `out`") && err.contains("left by an earlier run"), "{err}");
    assert!(ack(w.barrier(4)).is_err(), "a writer that failed to stage fails every later barrier");
    drop(w);

    let nobody = format!("redis://{}/", free_address());
    let err = commit_staged(&nobody, "out", &[0], 1).unwrap_err().to_string();
    assert!(err.contains("stream `out`") && err.contains(&nobody), "{err}");
    let err = recover_staged(&nobody, "out", &[0], 1).unwrap_err().to_string();
    assert!(err.contains("stream `out`") && err.contains("cannot connect"), "{err}");
    let mut w = writer(&nobody, Some(2));
    push(&mut w, 1, 0..2);
    let err = ack(w.barrier(1)).unwrap_err();
    assert!(err.contains("stream `out`") && err.contains("instance 2"), "{err}");
}

/// Write-through, a barrier is answered once what came before it is in the stream; a lost batch
/// makes it an error.
#[test]
fn a_write_through_barrier_follows_the_writes() {
    let server = RedisServer::start("through");
    let mut con = server.con();
    let mut w = writer(&server.url, None);
    push(&mut w, 1, 0..5);
    assert_eq!(ack(w.barrier(1)), Ok(()));
    assert_eq!(pairs(&mut con, "out"), (0..5).map(|v| (1, v)).collect::<Vec<_>>());
    let mut w = writer(&format!("redis://{}/", free_address()), None);
    push(&mut w, 1, 0..5);
    let err = ack(w.barrier(1)).unwrap_err();
    assert!(err.contains("stream `out`") && err.contains("not written"), "{err}");
}

/// Staging keys are found by pattern: a stream whose name extends this one's (`out:1`) is left
/// alone by recovery.
#[test]
fn recovery_leaves_other_streams_alone() {
    let server = RedisServer::start("others");
    let mut con = server.con();
    let mut other = RedisSinkWriter::new(&server.url, "out:1", &schema(), "t/o".into()).unwrap().staged(0);
    push(&mut other, 1, 0..2);
    assert_eq!(ack(other.barrier(7)), Ok(()));
    push(&mut other, 1, 0..2);
    other.flush();
    drop(other);
    let before = protocol_keys(&mut con);
    assert!(before.contains(&staged_key("out:1", 0, 7)) && before.contains(&current_key("out:1", 0)), "{before:?}");
    // `dirigo:staged:out:1:0:...` starts like instance 1 of `out`.
    recover_staged(&server.url, "out", &[0, 1], 0).unwrap();
    assert_eq!(protocol_keys(&mut con), before);
    recover_staged(&server.url, "out:1", &[0], 0).unwrap();
    assert!(protocol_keys(&mut con).is_empty());
}

/// A config counting the redis stream `in` per key into the stream `out_stream`, with snapshots
/// in `dir`.
fn counting_config(url: &str, out_stream: &str, dir: &std::path::Path) -> String {
    format!(
        r#"
[engine]
shards = 2

[snapshots]
dir = "{dir}"
every = "100ms"
keep = 2

[[app]]
name = "r"
slo = "1s"
cores = 2
schema = {{ k = "u64", v = "u64" }}

[[app.source]]
name = "in"
kind = "redis"
url = "{url}"
stream = "in"
follow = false

[[app.function]]
name = "c"
kind = "count"
input = "in"
key = "k"

[[app.sink]]
name = "out"
kind = "redis"
input = "c"
url = "{url}"
stream = "{out_stream}"
"#,
        dir = dir.display()
    )
}

/// Every entry of `stream` as `key count`, sorted.
fn counted(con: &mut redis::Connection, stream: &str) -> Vec<(u64, u64)> {
    let entries: Vec<(String, BTreeMap<String, String>)> =
        redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query(con).unwrap();
    let mut v: Vec<(u64, u64)> =
        entries.iter().map(|(_, f)| (f["key"].parse().unwrap(), f["count"].parse().unwrap())).collect();
    v.sort_unstable();
    v
}

#[test]
fn a_run_killed_at_20_random_points_counts_a_redis_stream_into_a_redis_stream_exactly_once() {
    // Enough entries that 20 kills come before the end: a release build counts them several
    // times faster (500,000 were done after 13 kills).
    const N: u64 = if cfg!(debug_assertions) { 500_000 } else { 2_000_000 };
    const KEYS: u64 = 61;
    let server = RedisServer::start("kill");
    let mut con = server.con();
    for chunk in (0..N).collect::<Vec<_>>().chunks(5_000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.cmd("XADD").arg("in").arg("*").arg("k").arg((i * 7) % KEYS).arg("v").arg(i).ignore();
        }
        pipe.query::<()>(&mut con).unwrap();
    }
    let dir = temp_dir("redis-kill");
    let clean = dir.join("clean.toml");
    std::fs::write(&clean, counting_config(&server.url, "out_clean", &dir.join("snaps-clean"))).unwrap();
    let out = output(dirigo().arg("run").arg(&clean).arg("--quiet"));
    assert!(out.status.success(), "{}", stderr(&out));
    let want = counted(&mut con, "out_clean");
    assert_eq!(want.len() as u64, N, "the clean run counted every entry once");

    let killed = dir.join("killed.toml");
    std::fs::write(&killed, counting_config(&server.url, "out", &dir.join("snaps"))).unwrap();
    let mut rng = common::Rng(4_242);
    let (mut kills, mut resumed) = (0, 0);
    while kills < 20 {
        let (exited, err) = common::run_and_kill(&killed, Duration::from_millis(120 + rng.below(300)));
        resumed += usize::from(err.contains("resuming from snapshot"));
        if exited {
            break;
        }
        kills += 1;
    }
    let last = output(dirigo().arg("run").arg(&killed).arg("--quiet"));
    assert!(last.status.success(), "{}", stderr(&last));
    eprintln!("{kills} kills, {resumed} restarts resumed from a snapshot");
    assert_eq!(kills, 20, "the run was killed 20 times before it could finish");
    assert!(resumed >= 5, "most restarts resumed from a snapshot: {resumed}");
    let got = counted(&mut con, "out");
    if got != want {
        let missing = want.iter().filter(|w| got.binary_search(w).is_err()).count();
        panic!("after {kills} kills: {} entries where {} were expected ({missing} missing)", got.len(), want.len());
    }
    // Nothing is left staged.
    let left: Vec<String> = redis::cmd("KEYS").arg("dirigo:staged*").query(&mut con).unwrap();
    assert!(left.is_empty(), "staging keys left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
