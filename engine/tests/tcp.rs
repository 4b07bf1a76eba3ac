//! TCP ingress and egress through real engines on 127.0.0.1: NDJSON and binary ingress counted
//! per key against a reference, two subscribers of a sink, `dirigo send` and `dirigo tail`, every
//! kind of bad input (each followed by a client that is still served, nothing accepted lost),
//! and backpressure. Readiness is waited on (retry-connect, Hello frames, probes), never slept.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dirigo;
use dirigo_actors::envelope::Header;
use dirigo_actors::function::ErasedFunction;
use dirigo_actors::operator::Emitter;
use dirigo_actors::record::{access, Value};
use dirigo_engine::compile::{collect_sinks, compile, settings};
use dirigo_engine::config::Config;
use dirigo_engine::engine::{run, StopHandle};
use dirigo_engine::instance::OperatorInstance;
use dirigo_engine::policy::Builtin;
use dirigo_engine::report::Summary;
use dirigo_net::tcp::{self, client, SendMode};
use dirigo_net::{encode_frame, encode_record, BatchWriter, FrameDecoder, FrameHeader, FrameType};
use rkyv::util::AlignedVec;

const WAIT: Duration = Duration::from_secs(20);
/// Every ingress test runs with both receive paths (`[engine] tcp_io`).
const TCP_IO: [&str; 2] = ["recv", "uring"];

fn io_key(io: &str) -> String {
    format!("tcp_io = \"{io}\"")
}

/// A free port ([`common::free_address`]).
fn free_port() -> u16 {
    common::free_address().port()
}

fn config(src_port: u16, src_format: &str, sink: &str, extra: &str) -> String {
    format!(
        r#"
[engine]
shards = 2
stats_interval = "100ms"
{extra}

[[app]]
name = "t"
slo = "1s"
schema = {{ key = "u64", v = "u64" }}

[[app.source]]
name = "in"
kind = "tcp"
listen = "127.0.0.1:{src_port}"
format = "{src_format}"

[[app.function]]
name = "pass"
kind = "filter"
input = "in"
predicate = "v < 1000000000"

[[app.sink]]
name = "out"
input = "pass"
{sink}
"#
    )
}

/// An engine running on its own thread, stopped through its StopHandle.
struct Running {
    stop: StopHandle,
    outputs: dirigo_engine::sink::Collector,
    thread: std::thread::JoinHandle<Summary>,
}

fn start(toml: &str, collect: bool, edit: impl FnOnce(&mut dirigo_engine::plan::Plan)) -> Running {
    let config = Config::parse(toml, "tcp-test.toml").expect("config");
    let mut plan = compile(&config, config.engine.shards).expect("compiles");
    let outputs = if collect { collect_sinks(&mut plan) } else { dirigo_engine::sink::Collector::closed() };
    edit(&mut plan);
    let (stop, s) = (StopHandle::default(), settings(&config));
    let handle = stop.clone();
    let thread = std::thread::spawn(move || run(plan, &s, Builtin::by_name("fifo").unwrap(), handle, |_| {}).unwrap());
    Running { stop, outputs, thread }
}

impl Running {
    /// Wait until `n` outputs arrived; returns their keys' counts.
    fn counts(&self, n: usize) -> HashMap<u64, u64> {
        let deadline = Instant::now() + WAIT;
        let mut counts = HashMap::new();
        for got in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            let o = self.outputs.recv_timeout(left).unwrap_or_else(|e| panic!("{got} of {n} records came out: {e}"));
            *counts.entry(key_of(&o.archive)).or_default() += 1;
        }
        counts
    }

    fn finish(self) -> Summary {
        self.stop.stop();
        self.thread.join().expect("engine thread")
    }
}

fn key_of(archive: &[u8]) -> u64 {
    let mut aligned: AlignedVec = AlignedVec::new();
    aligned.extend_from_slice(archive);
    access(&aligned).expect("record").fields[0].as_u64().expect("u64 key")
}

fn connect(port: u16) -> TcpStream {
    let s = client::connect(&format!("127.0.0.1:{port}"), WAIT).expect("the engine listens");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Records `(key, v)` with `keys` keys, and their reference counts.
fn workload(n: u64, keys: u64, salt: u64) -> (Vec<[u64; 2]>, HashMap<u64, u64>) {
    let recs: Vec<[u64; 2]> = (0..n).map(|i| [(i * 7 + salt) % keys, i]).collect();
    let mut counts = HashMap::new();
    recs.iter().for_each(|r| *counts.entry(r[0]).or_default() += 1);
    (recs, counts)
}

fn ndjson(recs: &[[u64; 2]]) -> String {
    recs.iter().map(|r| format!("{{\"key\":{},\"v\":{}}}\n", r[0], r[1])).collect()
}

fn merge(a: &mut HashMap<u64, u64>, b: &HashMap<u64, u64>) {
    b.iter().for_each(|(k, n)| *a.entry(*k).or_default() += n);
}

/// Binary: the first half as Record frames, the rest as Data batches of 100.
fn binary(recs: &[[u64; 2]]) -> AlignedVec {
    let mut out: AlignedVec = AlignedVec::new();
    let (singles, batched) = recs.split_at(recs.len() / 2);
    for r in singles {
        encode_record(&[Value::U64(r[0]), Value::U64(r[1])], &mut out).unwrap();
    }
    for chunk in batched.chunks(100) {
        let mut w = BatchWriter::begin(&mut out).unwrap();
        chunk.iter().for_each(|r| w.push_values(0, &[Value::U64(r[0]), Value::U64(r[1])]));
        w.finish().unwrap();
    }
    encode_frame(FrameType::End, &[], &mut out).unwrap();
    out
}

/// Write `bytes`, close the sending side, and return everything the engine answered.
fn push(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = connect(port);
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    reply
}

#[test]
fn ndjson_and_binary_ingress_count_every_record_per_key() {
    for (format, io) in ["ndjson", "binary"].into_iter().flat_map(|f| TCP_IO.map(|io| (f, io))) {
        let port = free_port();
        let eng = start(&config(port, format, "kind = \"null\"", &io_key(io)), true, |_| {});
        let mut expected = HashMap::new();
        let clients: Vec<_> = (0..3u64)
            .map(|c| {
                let (recs, counts) = workload(4000, 50, c);
                merge(&mut expected, &counts);
                let bytes = if format == "ndjson" { ndjson(&recs).into_bytes() } else { binary(&recs).to_vec() };
                std::thread::spawn(move || push(port, &bytes))
            })
            .collect();
        for c in clients {
            assert!(c.join().unwrap().is_empty(), "{format} {io}: no error for good input");
        }
        assert_eq!(eng.counts(12_000), expected, "{format} {io}");
        let summary = eng.finish();
        assert_eq!(summary.apps[0].events_in, 12_000, "{format} {io}: nothing extra accepted");
    }
}

/// Connect a binary subscriber and wait for its Hello frame (it is then registered); the frame
/// is only peeked, so `tail` reads it again.
fn subscribe(port: u16) -> TcpStream {
    let s = connect(port);
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + WAIT;
    loop {
        let n = s.peek(&mut buf).expect("hello");
        if n >= 16 {
            let header: [u8; 16] = buf[..16].try_into().unwrap();
            let h = FrameHeader::parse(&header, u32::MAX).expect("a frame");
            assert_eq!(h.ty, FrameType::Hello);
            if n >= h.frame_len() {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "no hello");
    }
}

#[test]
fn egress_serves_two_subscribers_every_record() {
    let (src, sink) = (free_port(), free_port());
    let eng = start(
        &config(src, "ndjson", &format!("kind = \"tcp\"\nlisten = \"127.0.0.1:{sink}\"\nformat = \"binary\""), ""),
        false,
        |_| {},
    );
    let subs: Vec<TcpStream> = (0..2).map(|_| subscribe(sink)).collect();
    let (recs, expected) = workload(3000, 20, 1);
    assert!(push(src, ndjson(&recs).as_bytes()).is_empty());
    for s in subs {
        let mut text = Vec::new();
        let n = tcp::tail(s, &mut text, Some(3000)).expect("tail");
        assert_eq!(n, 3000);
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for line in String::from_utf8(text).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            *counts.entry(v["key"].as_u64().unwrap()).or_default() += 1;
        }
        assert_eq!(counts, expected);
    }
    eng.finish();
}

/// The tcp source limits of `configs/default.toml` (what the test configs leave unset).
fn default_limits() -> dirigo_engine::config::TcpSourceDefaults {
    Config::parse("", "empty.toml").unwrap().defaults.source.tcp
}

/// Each bad input after 10 good records: the client gets an error (which says `expected`), the
/// engine keeps those 10, and the next well-behaved client is served.
fn bad_inputs(format: &str, cases: Vec<(&str, Vec<u8>, &str)>) {
    for io in TCP_IO {
        bad_inputs_with(format, io, &cases);
    }
}

fn bad_inputs_with(format: &str, io: &str, cases: &[(&str, Vec<u8>, &str)]) {
    let port = free_port();
    let eng = start(&config(port, format, "kind = \"null\"", &io_key(io)), true, |_| {});
    let (good, counts) = workload(10, 3, 0);
    let good = if format == "ndjson" { ndjson(&good).into_bytes() } else { binary(&good[..]).to_vec() };
    // Drop the End frame of the good prefix so the bad bytes follow on the same stream.
    let prefix = if format == "ndjson" { good.clone() } else { good[..good.len() - 16].to_vec() };
    for &(name, ref bad, expected) in cases {
        // The good prefix is produced before the bad bytes are written on the same connection.
        let mut s = connect(port);
        s.write_all(&prefix).unwrap();
        assert_eq!(eng.counts(10), counts, "{name}: the records before the bad input");
        let _ = s.write_all(bad);
        let _ = s.shutdown(Shutdown::Write);
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let error = error_reply(format, &reply).unwrap_or_else(|| panic!("{name}: an error, got {reply:?}"));
        eprintln!("{name}: {error}");
        assert!(error.contains(expected), "{name}: `{expected}` in {error:?}");
        assert!(push(port, &good).is_empty(), "{name}: the next client is served");
        assert_eq!(eng.counts(10), counts, "{name}: the next client's records");
    }
    assert!(eng.outputs.is_empty());
    eng.finish();
}

/// The error message in what the engine answered: an NDJSON error line, or an Error frame.
fn error_reply(format: &str, reply: &[u8]) -> Option<String> {
    if format == "ndjson" {
        let line = String::from_utf8_lossy(reply).lines().next()?.to_owned();
        let v: serde_json::Value = serde_json::from_str(&line).ok()?;
        return v["error"].as_str().map(str::to_owned);
    }
    let mut dec = FrameDecoder::default();
    dec.feed(reply).ok()?;
    let f = dec.next_frame().ok()??;
    (f.ty == FrameType::Error).then(|| tcp::wire::error_message(f.payload))
}

#[test]
fn bad_binary_input_closes_only_its_connection() {
    let max_frame = default_limits().max_frame as u32;
    let mut oversized = FrameHeader { ty: FrameType::Record, len: max_frame + 1 }.to_bytes().to_vec();
    oversized.extend_from_slice(&[0; 64]);
    let mut garbage_record: AlignedVec = AlignedVec::new();
    encode_frame(FrameType::Record, &[0xAB; 40], &mut garbage_record).unwrap();
    let mut misfit: AlignedVec = AlignedVec::new();
    encode_record(&[Value::Str("not a key".into()), Value::U64(1)], &mut misfit).unwrap();
    let mut truncated: AlignedVec = AlignedVec::new();
    encode_record(&[Value::U64(1), Value::U64(2)], &mut truncated).unwrap();
    bad_inputs(
        "binary",
        vec![
            ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec(), "bad frame magic"),
            ("oversized", oversized, "over this source's max_frame of 4MiB"),
            ("invalid archive", garbage_record.to_vec(), "invalid record"),
            ("does not fit the schema", misfit.to_vec(), "does not fit the schema"),
            ("disappears mid-frame", truncated[..24].to_vec(), "stream ended inside a frame"),
        ],
    );
}

#[test]
fn bad_ndjson_input_closes_only_its_connection() {
    let max_line = default_limits().max_line as usize;
    bad_inputs(
        "ndjson",
        vec![
            ("invalid utf-8", b"{\"key\":1,\"v\":\xff\xfe}\n".to_vec(), "line 11 is not valid UTF-8"),
            ("invalid json", b"{\"key\":1,\n".to_vec(), "line 11: "),
            ("does not fit the schema", b"{\"key\":\"one\",\"v\":1}\n".to_vec(), "line 11: "),
            ("oversized line", vec![b'x'; max_line + 10], "longer than this source's max_line of 1MiB"),
        ],
    );
}

/// A sink that takes `cost` per record and counts what it processed.
struct Slow {
    cost: Duration,
    processed: Arc<AtomicU64>,
}

impl ErasedFunction for Slow {
    fn on_message(&mut self, _: &Header, _: &[u8], _: &mut dyn Emitter) {
        let t = Instant::now();
        while t.elapsed() < self.cost {
            std::hint::spin_loop();
        }
        self.processed.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_fast_client_is_slowed_and_loses_nothing() {
    TCP_IO.iter().for_each(|io| fast_client_is_slowed(io));
}

fn fast_client_is_slowed(io: &str) {
    const N: u64 = 40_000;
    const MAX_IN_FLIGHT: u64 = 256;
    let port = free_port();
    let extra = format!("max_in_flight = 256\nbatch_size = 64\n{}", io_key(io));
    let text = config(port, "binary", "kind = \"null\"", &extra).replace("shards = 2", "shards = 1");
    let config = Config::parse(&text, "bp.toml").unwrap();
    let mut plan = compile(&config, 1).unwrap();
    let processed = Arc::new(AtomicU64::new(0));
    let p = processed.clone();
    let sink = plan.functions.iter().position(|f| f.is_sink).unwrap() as u16;
    let slow =
        move |_| OperatorInstance::User(Box::new(Slow { cost: Duration::from_micros(20), processed: p.clone() }));
    plan.replace_factory(sink, Arc::new(slow));
    let (stop, s) = (StopHandle::default(), settings(&config));
    let (handle, seen) = (stop.clone(), processed.clone());
    let engine = std::thread::spawn(move || {
        let (mut accepted, mut worst) = (0f64, 0i64);
        let summary = run(plan, &s, Builtin::by_name("fifo").unwrap(), handle, |p| {
            accepted += p.lines[0].in_per_s * 0.1;
            worst = worst.max(accepted.round() as i64 - seen.load(Ordering::SeqCst) as i64);
        });
        (summary.unwrap(), worst)
    });
    let (recs, _) = workload(N, 10, 0);
    let t = Instant::now();
    assert!(push(port, &binary(&recs)).is_empty());
    let took = t.elapsed();
    let deadline = Instant::now() + WAIT;
    while processed.load(Ordering::SeqCst) < N && Instant::now() < deadline {
        std::thread::yield_now();
    }
    stop.stop();
    let (summary, worst) = engine.join().unwrap();
    eprintln!("{io}: client took {took:?} for {N} records; accepted ran ahead of processed by at most {worst}");
    assert_eq!(processed.load(Ordering::SeqCst), N, "nothing lost");
    assert_eq!(summary.apps[0].events_in, N);
    assert!(worst <= (MAX_IN_FLIGHT + 64 + 64) as i64, "in flight {worst} exceeds the bound");
    // The engine takes >= 20 us per record, so the client cannot finish before most were processed.
    assert!(took >= Duration::from_micros(20) * (N as u32 / 2), "the client was slowed ({took:?})");
}

#[test]
fn dirigo_send_and_tail_end_to_end() {
    let (src, sink) = (free_port(), free_port());
    let dir = common::temp_dir("tcp");
    let cfg = dir.join("cli.toml");
    let sink_kind = format!("kind = \"tcp\"\nlisten = \"127.0.0.1:{sink}\"\nformat = \"binary\"");
    std::fs::write(&cfg, config(src, "binary", &sink_kind, "")).unwrap();
    let (recs, expected) = workload(2000, 7, 3);
    let data = dir.join("data.ndjson");
    std::fs::write(&data, ndjson(&recs)).unwrap();
    let probe = dir.join("probe.ndjson");
    std::fs::write(&probe, "{\"key\":999999,\"v\":0}\n").unwrap();
    let engine = dirigo().args(["run", "--quiet", "--duration", "60s"]).arg(&cfg).spawn().unwrap();
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let mut tail =
        dirigo().args(["tail", &addr(sink), "--wait", "20s"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let (tx, lines) = flume::unbounded();
    let out = tail.stdout.take().unwrap();
    std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    let send = |file: &std::path::Path| {
        let st = dirigo()
            .args(["send", &addr(src), "--binary", "--config"])
            .arg(&cfg)
            .arg(file)
            .args(["--wait", "20s"])
            .status();
        assert!(st.unwrap().success());
    };
    // Probe until the tail is subscribed: a probe it prints proves every later record reaches it.
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "tail never saw a probe");
        send(&probe);
        if lines.recv_timeout(Duration::from_millis(500)).is_ok() {
            break;
        }
    }
    send(&data);
    let mut counts: HashMap<u64, u64> = HashMap::new();
    while counts.values().sum::<u64>() < 2000 {
        let line = lines.recv_timeout(WAIT).expect("tail prints every record");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let key = v["key"].as_u64().unwrap();
        if key != 999999 {
            *counts.entry(key).or_default() += 1;
        }
    }
    assert_eq!(counts, expected);
    // SAFETY: kill(2) on our own child's pid: Ctrl-C, the engine drains and exits.
    unsafe { libc::kill(engine.id() as i32, libc::SIGINT) };
    let exits = common::wait_all(vec![engine, tail], common::DEADLINE);
    assert!(exits[0].status.success());
    assert!(exits[1].status.success(), "tail ends when the sink ends");
}

#[test]
fn send_reports_the_engines_error() {
    let port = free_port();
    let eng = start(&config(port, "ndjson", "kind = \"null\"", ""), true, |_| {});
    let input = b"{\"key\":1,\"v\":2}\n{\"key\":true,\"v\":2}\n".as_slice();
    let report = tcp::send(connect(port), input, &SendMode::Ndjson).unwrap();
    assert_eq!(report.records, 2);
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(report.errors[0].contains("line 2"), "{report:?}");
    assert_eq!(eng.counts(1).get(&1), Some(&1));
    eng.finish();
}

/// Regression (idle CPU fix): a parked shard is woken by its tcp source's readiness waker, not by
/// a timer. With `spin = "0s"` each event is written only once the shard has flagged itself
/// parked (the race window of the park protocol: after the flag, around the arm). Each must come
/// out within 100 ms, and each wake must be a readiness ring: without the waker, only the
/// controller's 200 ms doorbell ring or the 200 ms park cap would deliver it.
#[test]
fn a_parked_shard_is_woken_by_input_on_an_open_connection() {
    TCP_IO.iter().for_each(|io| parked_shard_is_woken(io));
}

fn parked_shard_is_woken(io: &str) {
    const EVENTS: u64 = 10;
    const DEADLINE: Duration = Duration::from_millis(100);
    let port = free_port();
    let extra = format!("spin = \"0s\"\n{}", io_key(io));
    let text = config(port, "binary", "kind = \"null\"", &extra).replace("shards = 2", "shards = 1");
    let engine = start(&text, true, |_| {});
    let mut conn = connect(port);
    let mut worst = Duration::ZERO;
    for i in 0..EVENTS {
        let deadline = Instant::now() + WAIT;
        while !engine.stop.shard_parked(0) {
            assert!(Instant::now() < deadline, "shard 0 never parked");
            std::thread::yield_now();
        }
        let mut one: AlignedVec = AlignedVec::new();
        encode_record(&[Value::U64(i), Value::U64(i)], &mut one).unwrap();
        let t = Instant::now();
        conn.write_all(&one).unwrap();
        let o = engine.outputs.recv_timeout(WAIT).expect("the event comes out");
        let took = t.elapsed();
        assert_eq!(key_of(&o.archive), i);
        assert!(took < DEADLINE, "{io}: event {i} took {took:?} to come out of a parked shard");
        worst = worst.max(took);
    }
    drop(conn);
    let summary = engine.finish();
    eprintln!("{io}: worst write -> sink {worst:?}; readiness wake-ups {}", summary.io_wakeups);
    assert_eq!(summary.apps[0].events_in, EVENTS);
    assert!(summary.io_wakeups >= EVENTS, "{} readiness wake-ups for {EVENTS} events", summary.io_wakeups);
}

/// `text` (from [`config`], listening on `port`) with `keys` added to its tcp source.
fn with_source_keys(text: &str, port: u16, keys: &str) -> String {
    let listen = format!("listen = \"127.0.0.1:{port}\"\n");
    assert!(text.contains(&listen));
    text.replacen(&listen, &format!("{listen}{keys}\n"), 1)
}

/// One record `(key, key)` as a client of `format` sends it.
fn record(format: &str, key: u64) -> Vec<u8> {
    if format == "ndjson" {
        return ndjson(&[[key, key]]).into_bytes();
    }
    let mut out: AlignedVec = AlignedVec::new();
    encode_record(&[Value::U64(key), Value::U64(key)], &mut out).unwrap();
    out.to_vec()
}

/// The tcp source's figures in a run's summary.
fn tcp_counts(summary: &Summary) -> tcp::IngressCounts {
    summary.apps[0].tcp_sources[0].counts
}

#[test]
fn connections_over_max_connections_are_refused_and_counted() {
    for (format, io) in [("ndjson", "recv"), ("binary", "uring")] {
        let port = free_port();
        let text = config(port, format, "kind = \"null\"", &io_key(io));
        let eng = start(&with_source_keys(&text, port, "max_connections = 2"), true, |_| {});
        // Two clients, each served (a record of each came out): both hold a slot.
        let mut a = connect(port);
        a.write_all(&record(format, 1)).unwrap();
        assert_eq!(eng.counts(1), HashMap::from([(1, 1)]));
        let mut b = connect(port);
        b.write_all(&record(format, 2)).unwrap();
        assert_eq!(eng.counts(1), HashMap::from([(2, 1)]));
        // A third is answered with an error and closed.
        let mut reply = Vec::new();
        connect(port).read_to_end(&mut reply).expect("the refusal, then the end");
        let error = error_reply(format, &reply).unwrap_or_else(|| panic!("{format}: an error, got {reply:?}"));
        assert!(error.contains("max_connections (2)"), "{error}");
        // The two keep being served.
        a.write_all(&record(format, 3)).unwrap();
        b.write_all(&record(format, 4)).unwrap();
        assert_eq!(eng.counts(2), HashMap::from([(3, 1), (4, 1)]));
        // One leaves (the engine closing its side shows it saw that): the next client is served.
        a.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        a.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "a clean close");
        assert!(push(port, &record(format, 5)).is_empty(), "a slot is free again");
        assert_eq!(eng.counts(1), HashMap::from([(5, 1)]));
        drop(b);
        let c = tcp_counts(&eng.finish());
        assert_eq!((c.connections, c.connections_refused, c.records), (3, 1, 5), "{format} {io}: {c:?}");
        assert_eq!((c.idle_closed, c.oversized), (0, 0), "{format} {io}: {c:?}");
    }
}

#[test]
fn an_idle_client_is_closed_while_a_good_one_is_served() {
    for (format, io) in [("ndjson", "uring"), ("binary", "recv")] {
        let port = free_port();
        let text = config(port, format, "kind = \"null\"", &io_key(io));
        let eng = start(&with_source_keys(&text, port, "idle_timeout = \"200ms\""), true, |_| {});
        let mut good = connect(port);
        good.write_all(&record(format, 0)).unwrap();
        assert_eq!(eng.counts(1), HashMap::from([(0, 1)]));
        // The idle client connects and sends nothing: its read ends with the engine's error.
        let t = Instant::now();
        let idle = std::thread::spawn(move || {
            let mut s = connect(port);
            let mut reply = Vec::new();
            let _ = s.read_to_end(&mut reply);
            (reply, t.elapsed())
        });
        // Meanwhile the good client is served, record after record.
        let mut key = 0;
        while !idle.is_finished() {
            key += 1;
            good.write_all(&record(format, key)).unwrap();
            assert_eq!(eng.counts(1), HashMap::from([(key, 1)]));
        }
        let (reply, took) = idle.join().unwrap();
        let error = error_reply(format, &reply).unwrap_or_else(|| panic!("{format}: an error, got {reply:?}"));
        assert!(error.contains("idle_timeout"), "{error}");
        assert!(took >= Duration::from_millis(200), "closed after {took:?}, before its idle timeout");
        // ... and after.
        good.write_all(&record(format, key + 1)).unwrap();
        assert_eq!(eng.counts(1), HashMap::from([(key + 1, 1)]));
        good.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        good.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "the good client closes cleanly");
        let c = tcp_counts(&eng.finish());
        eprintln!("{format} {io}: idle client closed after {took:?}; good client served {} records meanwhile", key);
        assert_eq!((c.idle_closed, c.connections, c.records), (1, 2, key + 2), "{format} {io}: {c:?}");
        assert_eq!((c.connections_refused, c.oversized), (0, 0), "{format} {io}: {c:?}");
    }
}

/// Raise this process's open-file limit to its hard limit (the engine it spawns inherits it);
/// returns the limit now in force.
fn raise_fd_limit() -> usize {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 1024;
        }
        if l.rlim_cur < l.rlim_max {
            let raised = libc::rlimit { rlim_cur: l.rlim_max, rlim_max: l.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                l = raised;
            }
        }
        usize::try_from(l.rlim_cur).unwrap_or(usize::MAX)
    }
}

/// Resident memory of process `pid`, in KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the engine runs");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB")
}

/// Kills a spawned engine if the test fails before it ended it.
struct Spawned(Option<std::process::Child>);

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The keys of the Record frames a binary tcp sink sends to one subscriber.
struct SinkKeys {
    stream: TcpStream,
    dec: FrameDecoder,
}

impl SinkKeys {
    fn next(&mut self) -> u64 {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = self.dec.next_frame().expect("frames") {
                match f.ty {
                    FrameType::Record => return key_of(f.payload),
                    _ => continue, // the Hello
                }
            }
            let n = self.stream.read(&mut buf).expect("the sink's output");
            assert!(n > 0, "the sink ended");
            self.dec.feed(&buf[..n]).unwrap();
        }
    }
}

/// `client` sends one record; it comes out of the sink.
fn serve(client: &mut TcpStream, sink: &mut SinkKeys, key: u64) {
    client.write_all(&record("binary", key)).unwrap();
    assert_eq!(sink.next(), key, "served in order");
}

/// 1,000 idle connections and a client that announces a max-size frame and trickles it one byte
/// a second hold little memory (nothing buffered for an idle connection, what was sent for the
/// trickler) and do not stop good clients from being served. Measured on the `dirigo` process.
#[test]
fn idle_connections_and_a_trickler_hold_little_and_block_no_one() {
    const IDLE: usize = 1000;
    /// What 1,000 idle connections and the trickler may add to the engine's RSS. Before the
    /// connections stopped allocating up front, each one held a 64 KiB zeroed buffer from its
    /// first poll (1,000 of them: 62.5 MiB).
    const GROWTH_MAX_KIB: u64 = 16 * 1024;
    /// The engine's whole RSS with them (a debug build, 2 shards).
    const RSS_MAX_KIB: u64 = 256 * 1024;
    let idle_n = IDLE.min(raise_fd_limit().saturating_sub(200) / 2);
    let (src, sink) = (free_port(), free_port());
    let dir = common::temp_dir("tcp-limits");
    let cfg = dir.join("limits.toml");
    let sink_kind = format!("kind = \"tcp\"\nlisten = \"127.0.0.1:{sink}\"\nformat = \"binary\"");
    let text = config(src, "binary", &sink_kind, "");
    std::fs::write(&cfg, with_source_keys(&text, src, "max_connections = 4096\nidle_timeout = \"60s\"")).unwrap();
    let child = dirigo()
        .args(["run", "--json", "--quiet", "--duration", "60s"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut engine = Spawned(Some(child));
    let mut sink = SinkKeys { stream: subscribe(sink), dec: FrameDecoder::default() };
    let mut good = connect(src);
    serve(&mut good, &mut sink, 0);
    let base = rss_kib(pid);

    let idle: Vec<TcpStream> = (0..idle_n).map(|_| connect(src)).collect();
    let max_frame = default_limits().max_frame as u32;
    let mut trickler = connect(src);
    trickler.write_all(&FrameHeader { ty: FrameType::Record, len: max_frame }.to_bytes()).unwrap();
    let trickling = std::thread::spawn(move || {
        for _ in 0..3 {
            std::thread::sleep(Duration::from_secs(1)); // its pace, not a synchronisation
            trickler.write_all(&[0]).unwrap();
        }
        trickler
    });
    // Accepted in order: a client connected after all of them is served once all were accepted.
    let mut late = connect(src);
    serve(&mut late, &mut sink, 1);
    let (mut key, mut worst) = (1, Duration::ZERO);
    while !trickling.is_finished() {
        key += 1;
        let t = Instant::now();
        serve(if key % 2 == 0 { &mut good } else { &mut late }, &mut sink, key);
        worst = worst.max(t.elapsed());
    }
    let rss = rss_kib(pid);
    let _trickler = trickling.join().unwrap();
    eprintln!(
        "{idle_n} idle connections + a trickler: engine RSS {base} KiB -> {rss} KiB (+{} KiB); good clients \
         served {key} records meanwhile, the slowest in {worst:?}",
        rss.saturating_sub(base)
    );
    assert!(rss.saturating_sub(base) < GROWTH_MAX_KIB, "RSS grew by {} KiB", rss - base);
    assert!(rss < RSS_MAX_KIB, "RSS {rss} KiB");
    assert!(worst < Duration::from_secs(2), "a good client waited {worst:?}");

    // SAFETY: kill(2) on our own child's pid: Ctrl-C, the engine drains and prints its summary.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let out = common::wait_all(vec![engine.0.take().unwrap()], common::DEADLINE).remove(0);
    assert!(out.status.success(), "{}", common::stderr(&out));
    drop(idle);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().expect("a summary")).unwrap();
    let t = &summary["apps"][0]["tcp_sources"][0];
    assert_eq!(t["name"], "in");
    assert_eq!(t["connections"].as_u64(), Some(idle_n as u64 + 3), "{t}");
    assert_eq!(t["records"].as_u64(), Some(key + 1), "{t}");
    for k in ["connections_refused", "idle_closed", "oversized"] {
        assert_eq!(t[k].as_u64(), Some(0), "{k}: {t}");
    }
}
