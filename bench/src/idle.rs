//! Scenario `idle`: what an engine costs when it has almost nothing to do. One app (workload W1)
//! whose generator emits 1 event per second on 2 pinned shards; the figure is the process's CPU
//! time over wall time (`Summary::cpu_seconds / wall_seconds`), in % of one core.
//!
//! It isolates the idle path of the shard loop: the spin window before parking, parking on the
//! doorbell or a timer, and the wake-ups for the next source event and the stats interval.
//! Run with the default spin window (200 µs) and with `spin = "0s"` (park at once), and a third
//! variant, `tcp`: the same 2 shards with a tcp source (binary) that has one open, silent client
//! connection and a null sink, default spin: the cost of waiting for bytes on a socket.
//! Target: under 1% of a core.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- idle [--quick]    # 2 x 2 x 5 s (quick: 2 x 2 s)
//! ```

use std::net::TcpListener;
use std::time::Duration;

use anyhow::{anyhow, Context};
use dirigo_engine::config::Config;
use dirigo_engine::engine::StopHandle;
use dirigo_engine::policy::Builtin;
use dirigo_engine::report::Summary;
use dirigo_net::tcp::client;
use serde::Serialize;
use serde_json::{json, Value};

use crate::apps;
use crate::keyed_count::{dirigo, Load, Measurement, W1};
use crate::report::{median, Table};
use crate::Opts;

/// The CPU share an idle engine should stay under, in % of one core.
const TARGET_CPU_PERCENT: f64 = 1.0;
/// Events per second while idle.
const RATE: u64 = 1;

/// One engine run.
#[derive(Debug, Serialize)]
struct Run {
    /// `w1` (a generator at 1 event/s) or `tcp` (a tcp source with one silent connection).
    variant: &'static str,
    /// The `[engine] spin` setting, or "default" (configs/default.toml).
    spin: &'static str,
    repeat: usize,
    events_in: u64,
    wall_seconds: f64,
    cpu_seconds: f64,
    cpu_percent: f64,
    /// The watchdog had to stop the run (an engine hang).
    stalled: bool,
}

/// Median of one spin setting.
#[derive(Debug, Serialize)]
struct MedianRow {
    variant: &'static str,
    spin: &'static str,
    repeats: usize,
    cpu_percent: f64,
    /// CPU time per wall second, in µs.
    cpu_us_per_second: f64,
    met: bool,
}

/// The variants compared: (variant, spin label, spin setting).
const VARIANTS: [(&str, &str, Option<&str>); 3] =
    [("w1", "default", None), ("w1", "0s", Some("0s")), ("tcp", "default", None)];

/// Run the scenario; returns its `results` JSON.
pub fn run(opts: Opts) -> anyhow::Result<Value> {
    crate::sys::load_before();
    let (seconds, repeats) = if opts.quick { (2, 1) } else { (5, 2) };
    // Event i is due at i s: `seconds + 1` events span `seconds` of wall time.
    let load = Load::Rate { eps: RATE, events: seconds + 1 };
    let mut runs = Vec::new();
    for repeat in 0..repeats {
        for (variant, spin, setting) in VARIANTS {
            let limit = std::time::Duration::from_secs(10 + 3 * seconds);
            let (summary, m) = match variant {
                "tcp" => tcp_idle(seconds, limit)?,
                _ => dirigo::run_config(&dirigo::config_text(load, &W1, setting), limit)?,
            };
            let cpu_percent = 100.0 * summary.cpu_seconds / summary.wall_seconds.max(1e-9);
            println!(
                "{variant:<4} spin {spin:<8} #{repeat}: {} events in {:.2}s, cpu {:.3}s = {cpu_percent:.2}% of a core",
                m.events_in, m.wall_seconds, m.cpu_seconds
            );
            runs.push(Run {
                variant,
                spin,
                repeat,
                events_in: m.events_in,
                wall_seconds: m.wall_seconds,
                cpu_seconds: m.cpu_seconds,
                cpu_percent,
                stalled: m.stalled,
            });
        }
    }
    let medians: Vec<MedianRow> = VARIANTS.iter().map(|&(v, spin, _)| median_of(v, spin, &runs)).collect();
    let mut t = Table::new(&["variant", "spin", "n", "cpu %", "cpu us/s", "< 1%"]);
    for m in &medians {
        t.row(vec![
            m.variant.into(),
            m.spin.into(),
            m.repeats.to_string(),
            format!("{:.3}", m.cpu_percent),
            format!("{:.0}", m.cpu_us_per_second),
            m.met.to_string(),
        ]);
    }
    println!("\nidle engine ({RATE} event/s, {} shards, {seconds} s), medians\n{}", W1.shards, t.render());
    Ok(
        json!({ "rate_eps": RATE, "seconds": seconds, "shards": W1.shards, "target_cpu_percent": TARGET_CPU_PERCENT, "runs": runs, "medians": medians }),
    )
}

fn median_of(variant: &'static str, spin: &'static str, runs: &[Run]) -> MedianRow {
    let xs: Vec<f64> =
        runs.iter().filter(|r| r.variant == variant && r.spin == spin && !r.stalled).map(|r| r.cpu_percent).collect();
    let cpu_percent = median(&xs);
    MedianRow {
        variant,
        spin,
        repeats: xs.len(),
        cpu_percent,
        cpu_us_per_second: cpu_percent * 1e4,
        met: cpu_percent < TARGET_CPU_PERCENT,
    }
}

/// The `tcp` variant: 2 shards, a tcp source with one open connection that sends nothing, a null
/// sink; stopped after `seconds`.
fn tcp_idle(seconds: u64, limit: Duration) -> anyhow::Result<(Summary, Measurement)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let app = apps::tcp_to_null("idle", r#"{ key = "u64" }"#, port, "binary");
    let text = format!("[engine]\nshards = {}\npin = true\n{app}", W1.shards);
    let config = Config::parse(&text, "idle-tcp.toml").map_err(|e| anyhow!("{e}"))?;
    let policy = Builtin::by_name(config.engine.policy.name()).context("unknown policy")?;
    let stop = StopHandle::default();
    let watchdog = dirigo::Watchdog::start(stop.clone(), limit);
    let engine = {
        let stop = stop.clone();
        std::thread::spawn(move || dirigo_engine::compile::run_config(&config, 0, policy, stop))
    };
    let conn = client::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(10));
    if conn.is_ok() {
        std::thread::sleep(Duration::from_secs(seconds)); // the measurement window: idle on purpose
    }
    stop.stop();
    let summary = engine.join().map_err(|_| anyhow!("the engine thread panicked"))??;
    let stalled = watchdog.finish();
    drop(conn.context("connecting to the tcp source")?);
    let m = Measurement {
        events_in: summary.apps[0].events_in,
        events_out: summary.apps[0].events_out,
        wall_seconds: summary.wall_seconds,
        cpu_seconds: summary.cpu_seconds,
        latency_us: summary.apps[0].latency_us.clone(),
        stalled,
        envelopes_per_batch: crate::keyed_count::envelopes_per_batch(&summary),
    };
    Ok((summary, m))
}
