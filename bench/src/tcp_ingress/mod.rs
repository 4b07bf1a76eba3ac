//! Scenario `tcp-ingress`: the receive path of a tcp source, `[engine] tcp_io = "recv"` (a
//! non-blocking `recv` into the decoder when it runs dry) against `"uring"` (io_uring multishot
//! receive into a provided buffer ring), through a real engine: 1 shard pinned to CPU 0, a tcp
//! source (binary) -> null sink, the client pinned to CPU 1. Runs interleaved, order alternating.
//!
//! - throughput: one client writes `events` records as Data batches of 256 over loopback;
//!   events/s from its first write until the engine has read everything (it closes the
//!   connection after the End frame), and the engine's CPU per event: CPU time of the shard
//!   thread and the source's readiness thread (`/proc/self/task/*/schedstat`), client excluded.
//! - lone events: one record written after 20 ms of silence (the shard has parked), 40 times;
//!   latency from the write to the collecting sink.
//! - the receive loop alone ([`receive`]): the same bytes read and decoded by one pinned glommio
//!   executor without the engine, through `recv`, the io_uring ring, and glommio's `TcpStream`.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- tcp-ingress [--quick]    # 3 repeats, about 1 min
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context};
use dirigo_actors::record::Value as Field;
use dirigo_engine::compile::{collect_sinks, compile, settings};
use dirigo_engine::config::Config;
use dirigo_engine::engine::{run, StopHandle};
use dirigo_engine::policy::Builtin;
use dirigo_engine::report::{LatencyUs, Summary};
use dirigo_net::tcp::client;
use dirigo_net::{encode_frame, encode_record, BatchWriter, FrameType};
use rkyv::util::AlignedVec;
use serde::Serialize;
use serde_json::{json, Value};

mod receive;

use crate::apps;
use crate::report::{histogram, latency_of, median, median_latency, ratio, Table};
use crate::{sys, Opts};

/// The receive paths compared, by their `tcp_io` name.
const PATHS: [&str; 2] = ["recv", "uring"];
/// The schema of [`record`]: a NEXMark bid's numeric fields.
const BID_SCHEMA: &str = r#"{ auction = "u64", bidder = "u64", price = "u64", date_time = "u64" }"#;
/// Records per Data batch.
const BATCH: usize = 256;
/// Lone events per run, and the silence before each.
const LONE: usize = 40;
const SILENCE: Duration = Duration::from_millis(20);

/// One run of one path.
#[derive(Debug, Serialize)]
struct Run {
    io: &'static str,
    repeat: usize,
    events: u64,
    events_per_s: f64,
    /// CPU ns of the engine's threads (shard + readiness) per event.
    engine_cpu_ns_per_event: f64,
    lone_latency_us: LatencyUs,
}

/// Run the scenario; returns its `results` JSON.
pub fn run_scenario(opts: Opts) -> anyhow::Result<Value> {
    sys::load_before();
    let (events, repeats) = if opts.quick { (100_000, 1) } else { (2_000_000, 3) };
    sys::pin_to(1).context("pinning the client to CPU 1")?;
    let bytes = batches(events);
    let mut runs = Vec::new();
    for repeat in 0..repeats {
        let order: Vec<&'static str> =
            if repeat % 2 == 0 { PATHS.to_vec() } else { PATHS.iter().rev().copied().collect() };
        for io in order {
            let (events_per_s, cpu_ns) = throughput(io, &bytes, events)?;
            let lone_latency_us = lone_latency(io)?;
            println!(
                "{io:<6} #{repeat}: {:.2} M events/s, {cpu_ns:.0} engine CPU ns/event, lone event p50 {:.0} us p90 {:.0} us max {:.0} us",
                events_per_s / 1e6,
                lone_latency_us.p50,
                lone_latency_us.p90,
                lone_latency_us.max
            );
            runs.push(Run { io, repeat, events, events_per_s, engine_cpu_ns_per_event: cpu_ns, lone_latency_us });
        }
    }
    let loops = receive_loops(&bytes, events, repeats)?;
    let medians: Vec<Value> = PATHS.iter().map(|io| median_of(io, &runs)).collect();
    let (recv, uring) = (&medians[0], &medians[1]);
    let r = |k: &str| ratio(uring[k].as_f64().unwrap_or(0.0), recv[k].as_f64().unwrap_or(0.0));
    let ratios = json!({
        "events_per_s": r("events_per_s"),
        "engine_cpu_ns_per_event": r("engine_cpu_ns_per_event"),
        "lone_p50_us": ratio(uring["lone_latency_us"]["p50"].as_f64().unwrap_or(0.0), recv["lone_latency_us"]["p50"].as_f64().unwrap_or(0.0)),
    });
    let mut t = Table::new(&["tcp_io", "n", "M events/s", "CPU ns/event", "lone p50 us", "lone p90 us", "lone max us"]);
    for m in &medians {
        let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
        t.row(vec![
            m["io"].as_str().unwrap_or("?").to_owned(),
            m["repeats"].to_string(),
            format!("{:.2}", f(&m["events_per_s"]) / 1e6),
            format!("{:.0}", f(&m["engine_cpu_ns_per_event"])),
            format!("{:.0}", f(&m["lone_latency_us"]["p50"])),
            format!("{:.0}", f(&m["lone_latency_us"]["p90"])),
            format!("{:.0}", f(&m["lone_latency_us"]["max"])),
        ]);
    }
    println!("\ntcp ingress, 1 shard, binary batches of {BATCH}, {events} events, medians\n{}", t.render());
    println!(
        "uring / recv: events/s {:.2}x, CPU/event {:.2}x, lone p50 {:.2}x",
        ratios["events_per_s"].as_f64().unwrap_or(f64::NAN),
        ratios["engine_cpu_ns_per_event"].as_f64().unwrap_or(f64::NAN),
        ratios["lone_p50_us"].as_f64().unwrap_or(f64::NAN)
    );
    Ok(json!({
        "events": events, "batch": BATCH, "repeats": repeats, "runs": runs, "medians": medians, "ratios": ratios,
        "receive_loop": loops,
    }))
}

/// The receive loop alone, each path `repeats` times, interleaved (order rotating).
fn receive_loops(bytes: &[u8], events: u64, repeats: usize) -> anyhow::Result<Value> {
    let bytes: &'static [u8] = Box::leak(bytes.to_vec().into_boxed_slice());
    let paths = receive::PATHS;
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); paths.len()];
    for repeat in 0..repeats {
        for k in 0..paths.len() {
            let i = (k + repeat) % paths.len();
            let t = Instant::now();
            let (records, cpu_ns) = receive::run(paths[i], bytes)?;
            let secs = t.elapsed().as_secs_f64();
            ensure!(records == events, "{}: {records} of {events} records", paths[i]);
            samples[i].push((events as f64 / secs, cpu_ns as f64 / events as f64));
        }
    }
    let mut t = Table::new(&["path", "n", "M events/s", "receiver CPU ns/event", "vs recv events/s"]);
    let base = median(&samples[0].iter().map(|s| s.0).collect::<Vec<_>>());
    let mut rows = Vec::new();
    for (path, xs) in paths.iter().zip(&samples) {
        let eps = median(&xs.iter().map(|s| s.0).collect::<Vec<_>>());
        let cpu = median(&xs.iter().map(|s| s.1).collect::<Vec<_>>());
        t.row(vec![
            path.to_string(),
            xs.len().to_string(),
            format!("{:.2}", eps / 1e6),
            format!("{cpu:.0}"),
            format!("{:.2}x", ratio(eps, base)),
        ]);
        let vs = ratio(eps, base);
        rows.push(json!({ "path": path, "repeats": xs.len(), "events_per_s": eps, "cpu_ns_per_event": cpu, "events_per_s_vs_recv": vs }));
    }
    println!("\nreceive loop alone (read + decode + validate batches, no engine), medians\n{}", t.render());
    Ok(json!(rows))
}

fn median_of(io: &'static str, runs: &[Run]) -> Value {
    let mine: Vec<&Run> = runs.iter().filter(|r| r.io == io).collect();
    let of = |f: fn(&Run) -> f64| median(&mine.iter().map(|r| f(r)).collect::<Vec<_>>());
    let lat: Vec<&LatencyUs> = mine.iter().map(|r| &r.lone_latency_us).collect();
    json!({
        "io": io,
        "repeats": mine.len(),
        "events_per_s": of(|r| r.events_per_s),
        "engine_cpu_ns_per_event": of(|r| r.engine_cpu_ns_per_event),
        "lone_latency_us": median_latency(&lat),
    })
}

fn config(port: u16, io: &str) -> String {
    let app = apps::tcp_to_null("ingress", BID_SCHEMA, port, "binary");
    format!("[engine]\nshards = 1\npin = true\ntcp_io = \"{io}\"\n{app}")
}

fn record(i: u64) -> [Field; 4] {
    [Field::U64(i % 10_000), Field::U64(i % 977), Field::U64(100 + i % 5000), Field::U64(1_700_000_000_000 + i)]
}

/// `n` records as Data batches, then an End frame.
fn batches(n: u64) -> Vec<u8> {
    let mut out: AlignedVec = AlignedVec::new();
    let mut i = 0;
    while i < n {
        let mut w = BatchWriter::begin(&mut out).expect("aligned");
        for _ in 0..BATCH.min((n - i) as usize) {
            w.push_values(0, &record(i));
            i += 1;
        }
        w.finish().expect("a batch fits");
    }
    encode_frame(FrameType::End, &[], &mut out).expect("aligned");
    out.to_vec()
}

/// An engine for `io` on a free port, on its own thread.
struct Engine {
    port: u16,
    stop: StopHandle,
    outputs: dirigo_engine::sink::Collector,
    thread: std::thread::JoinHandle<anyhow::Result<Summary>>,
}

impl Engine {
    fn start(io: &str) -> anyhow::Result<Engine> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = Config::parse(&config(port, io), "tcp-ingress.toml").map_err(|e| anyhow!("{e}"))?;
        let mut plan = compile(&config, 1).map_err(|e| anyhow!("{e}"))?;
        let outputs = collect_sinks(&mut plan);
        let (stop, s) = (StopHandle::default(), settings(&config));
        let handle = stop.clone();
        let policy = Builtin::by_name("fifo").context("fifo")?;
        let thread = std::thread::spawn(move || Ok(run(plan, &s, policy, handle, |_| {})?));
        Ok(Engine { port, stop, outputs, thread })
    }

    fn connect(&self) -> anyhow::Result<TcpStream> {
        let s = client::connect(&format!("127.0.0.1:{}", self.port), Duration::from_secs(10))?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    fn finish(self) -> anyhow::Result<Summary> {
        self.stop.stop();
        self.thread.join().map_err(|_| anyhow!("the engine thread panicked"))?
    }
}

/// Events/s and engine CPU ns per event for `bytes` (`n` records) pushed through one connection.
fn throughput(io: &str, bytes: &[u8], n: u64) -> anyhow::Result<(f64, f64)> {
    let engine = Engine::start(io)?;
    let mut s = engine.connect()?;
    let cpu0 = engine_cpu_ns();
    let t = Instant::now();
    s.write_all(bytes)?;
    s.shutdown(Shutdown::Write)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?; // the engine closes after the End frame: everything was read
    let took = t.elapsed();
    let cpu = engine_cpu_ns().saturating_sub(cpu0);
    ensure!(reply.is_empty(), "the engine refused input: {}", String::from_utf8_lossy(&reply));
    // Outputs are collected by the sink: drain them so the channel does not hold gigabytes.
    let drained = std::thread::spawn({
        let rx = engine.outputs.clone();
        move || rx.iter().count()
    });
    let summary = engine.finish()?;
    let _ = drained.join();
    ensure!(summary.apps[0].events_in == n, "{io}: {} of {n} events accepted", summary.apps[0].events_in);
    Ok((n as f64 / took.as_secs_f64(), cpu as f64 / n as f64))
}

/// Write -> sink latency of lone events, each after `SILENCE`.
fn lone_latency(io: &str) -> anyhow::Result<LatencyUs> {
    let engine = Engine::start(io)?;
    let mut s = engine.connect()?;
    let mut h = histogram();
    let mut one: AlignedVec = AlignedVec::new();
    for i in 0..=LONE as u64 {
        std::thread::sleep(SILENCE); // the condition measured: the shard has gone idle and parked
        one.clear();
        encode_record(&record(i), &mut one)?;
        let t = Instant::now();
        s.write_all(&one)?;
        engine.outputs.recv_timeout(Duration::from_secs(5)).context("the lone event comes out")?;
        if i > 0 {
            h.record(t.elapsed().as_nanos() as u64)?;
        }
    }
    drop(s);
    engine.finish()?;
    Ok(latency_of(&h))
}

/// CPU time (ns) of this process's engine threads: shards and tcp readiness threads.
fn engine_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .flatten()
        .filter(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            comm.starts_with("dirigo-shard") || comm.starts_with("dirigo-ready")
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|x| x.parse::<u64>().ok()))
        .sum()
}
