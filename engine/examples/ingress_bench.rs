//! TCP ingress over loopback, measured through a real engine (tcp source -> null sink, one
//! shard): events/s for binary Data batches, binary Record frames and NDJSON lines, then the
//! cost of an idle tcp source (CPU while parked with an open connection) and the latency of a
//! lone event after idling (how fast the source's readiness waker wakes the parked shard).
//! `dirigo-bench tcp-ingress` compares the receive paths (`tcp_io`) side by side.
//!
//! ```sh
//! cargo run --release -p dirigo-engine --example ingress_bench [-- EVENTS]
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::time::{Duration, Instant};

use dirigo_actors::record::Value;
use dirigo_engine::compile::{collect_sinks, compile, settings};
use dirigo_engine::config::Config;
use dirigo_engine::engine::{cpu_seconds, run, StopHandle};
use dirigo_engine::policy::Builtin;
use dirigo_engine::report::Summary;
use dirigo_net::tcp::client;
use dirigo_net::{encode_record, BatchWriter};
use rkyv::util::AlignedVec;

/// The app: a tcp source straight into a null sink (shared with `dirigo-bench`'s scenarios).
const TCP_TO_NULL: &str = include_str!("tcp_to_null.toml");

fn config(port: u16, format: &str) -> String {
    let app = TCP_TO_NULL
        .replace("NAME", "bench")
        .replace("SCHEMA", r#"{ auction = "u64", bidder = "u64", price = "u64", date_time = "u64" }"#)
        .replace("PORT", &port.to_string())
        .replace("FORMAT", format);
    format!("[engine]\nshards = 1\n{app}")
}

fn record(i: u64) -> [Value; 4] {
    [Value::U64(i % 10_000), Value::U64(i % 977), Value::U64(100 + i % 5000), Value::U64(1_700_000_000_000 + i)]
}

fn encode(kind: &str, n: u64) -> Vec<u8> {
    match kind {
        "ndjson" => (0..n)
            .map(|i| {
                let r = record(i).map(|v| if let Value::U64(x) = v { x } else { 0 });
                format!("{{\"auction\":{},\"bidder\":{},\"price\":{},\"date_time\":{}}}\n", r[0], r[1], r[2], r[3])
            })
            .collect::<String>()
            .into_bytes(),
        "binary-record" => {
            let mut out: AlignedVec = AlignedVec::new();
            (0..n).for_each(|i| drop(encode_record(&record(i), &mut out)));
            out.to_vec()
        }
        _ => {
            let mut out: AlignedVec = AlignedVec::new();
            for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
                let mut w = BatchWriter::begin(&mut out).expect("aligned");
                chunk.iter().for_each(|&i| w.push_values(0, &record(i)));
                w.finish().expect("fits");
            }
            out.to_vec()
        }
    }
}

/// Start an engine with a tcp source on a free port.
fn start(
    format: &str,
    collect: bool,
) -> (u16, StopHandle, Option<dirigo_engine::sink::Collector>, std::thread::JoinHandle<Summary>) {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let config = Config::parse(&config(port, format), "bench.toml").expect("config");
    let mut plan = compile(&config, 1).expect("compiles");
    let rx = collect.then(|| collect_sinks(&mut plan));
    let (stop, s) = (StopHandle::default(), settings(&config));
    let h = stop.clone();
    let t = std::thread::spawn(move || run(plan, &s, Builtin::by_name("fifo").unwrap(), h, |_| {}).expect("runs"));
    (port, stop, rx, t)
}

/// Push `bytes` and wait until the engine closed the connection (it has read everything).
fn push_all(port: u16, bytes: &[u8]) -> Duration {
    let mut s = client::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(10)).expect("connect");
    let t = Instant::now();
    s.write_all(bytes).expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).expect("read");
    assert!(reply.is_empty(), "the engine refused input: {}", String::from_utf8_lossy(&reply));
    t.elapsed()
}

fn throughput(kind: &str, n: u64) -> (f64, f64) {
    let format = if kind == "ndjson" { "ndjson" } else { "binary" };
    let bytes = encode(kind, n);
    let (port, stop, _, t) = start(format, false);
    let took = push_all(port, &bytes);
    stop.stop();
    let summary = t.join().expect("engine");
    assert_eq!(summary.apps[0].events_in, n);
    (n as f64 / took.as_secs_f64(), bytes.len() as f64 / n as f64)
}

/// CPU used by the process while the engine idles with one open connection, per second.
fn idle_cpu() -> f64 {
    let (port, stop, _, t) = start("binary", false);
    let _conn = client::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(10)).expect("connect");
    let (c0, t0) = (cpu_seconds(), Instant::now());
    std::thread::sleep(Duration::from_secs(2)); // measuring idleness: nothing to wait for
    let cpu = (cpu_seconds() - c0) / t0.elapsed().as_secs_f64();
    stop.stop();
    t.join().expect("engine");
    cpu
}

/// Latency of single events sent after 20 ms of silence: write to the collecting sink.
fn lone_event_latency() -> Vec<Duration> {
    let (port, stop, rx, t) = start("binary", true);
    let rx = rx.expect("collecting");
    let mut conn = client::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(10)).expect("connect");
    let mut lat = Vec::new();
    for i in 0..50 {
        std::thread::sleep(Duration::from_millis(20)); // let the shard park
        let one = encode("binary-record", 1);
        let t0 = Instant::now();
        conn.write_all(&one).expect("write");
        rx.recv_timeout(Duration::from_secs(5)).expect("the event comes out");
        if i > 0 {
            lat.push(t0.elapsed());
        }
    }
    stop.stop();
    t.join().expect("engine");
    lat.sort();
    lat
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    println!("tcp ingress over loopback, 1 shard, tcp source -> null sink, {n} events of 4 u64 fields");
    println!("{:<16} {:>14} {:>12} {:>10}", "encoding", "events/s", "bytes/event", "vs ndjson");
    let kinds = ["binary-batch", "binary-record", "ndjson"];
    let results: Vec<(f64, f64)> = kinds.iter().map(|k| throughput(k, n)).collect();
    let base = results[2].0;
    for (k, (eps, b)) in kinds.iter().zip(&results) {
        println!("{k:<16} {eps:>14.0} {b:>12.1} {:>9.2}x", eps / base);
    }
    println!("idle tcp source with one open connection: {:.1}% of a CPU", idle_cpu() * 100.0);
    let lat = lone_event_latency();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    println!("lone event after 20 ms idle, write -> sink: p50 {:?}  p90 {:?}  max {:?}", pct(0.5), pct(0.9), pct(1.0));
}
