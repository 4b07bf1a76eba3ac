//! The Redis Streams source and sink against a real `redis-server` (Debian's redis-server 7),
//! started by each test on a free loopback port with no persistence, and stopped after it.
//! `./test.sh` installs the server when it is missing.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{dirigo, free_address, output, stderr, temp_dir};
use dirigo_actors::record::{FieldType, Schema, Value};
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

#[test]
fn redis_commits_are_exactly_once() {
    let server = RedisServer::start("commit");
    let mut con = server.con();
    let entries: Vec<Vec<(String, String)>> = (0..5).map(|i| vec![("k".into(), i.to_string())]).collect();
    let commit = |con: &mut redis::Connection, epoch| {
        dirigo_engine::redis_sink::commit_epoch(con, "out", "dirigo:out:0", epoch, &entries).unwrap()
    };
    assert!(commit(&mut con, 1));
    assert!(!commit(&mut con, 1), "an epoch committed before a crash is not written again");
    let len: u64 = redis::cmd("XLEN").arg("out").query(&mut con).unwrap();
    assert_eq!(len, 5);
    assert!(commit(&mut con, 2));
    assert!(!commit(&mut con, 1), "nor an older one");
    let len: u64 = redis::cmd("XLEN").arg("out").query(&mut con).unwrap();
    assert_eq!(len, 10);
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

/// A staged redis sink writes nothing before its epoch commits; a replay after a crash (a new
/// instance producing the same epoch again) does not write it twice.
#[test]
fn a_staged_redis_sink_commits_each_epoch_once() {
    use dirigo_actors::record::{access, Record};
    use dirigo_engine::redis_sink::RedisSinkWriter;
    let server = RedisServer::start("staged");
    let mut con = server.con();
    let len = |con: &mut redis::Connection| redis::cmd("XLEN").arg("out").query::<u64>(con).unwrap();
    let run = |epochs: &[(u64, u64)], commit_to: u64| {
        let mut w = RedisSinkWriter::new(&server.url, "out", &schema(), "t/out".into()).unwrap().staged(0);
        for &(epoch, records) in epochs {
            for v in 0..records {
                let bytes = Record::from(vec![Value::U64(epoch), Value::U64(v)]).to_archive();
                w.push(access(&bytes).unwrap());
            }
            w.barrier(epoch);
        }
        w.commit(commit_to);
        drop(w); // the writer thread finishes its jobs
    };
    run(&[(1, 3), (2, 4)], 0);
    assert_eq!(len(&mut con), 0, "nothing before a commit");
    run(&[(1, 3), (2, 4)], 1);
    assert_eq!(len(&mut con), 3, "epoch 1 only");
    // A crash, then a replay from snapshot 1... of epochs 1 and 2 again (1 was committed).
    run(&[(1, 3), (2, 4)], 2);
    assert_eq!(len(&mut con), 7, "epoch 1 is not written twice; epoch 2 is written");
    let entries: Vec<(String, BTreeMap<String, String>)> =
        redis::cmd("XRANGE").arg("out").arg("-").arg("+").query(&mut con).unwrap();
    let epochs: Vec<&str> = entries.iter().map(|(_, f)| f["k"].as_str()).collect();
    assert_eq!(epochs, ["1", "1", "1", "2", "2", "2", "2"]);
}
