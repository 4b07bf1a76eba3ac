//! Scenario `idle`: what an engine costs when it has almost nothing to do. One app (workload W1)
//! whose generator emits 1 event per second on 2 pinned shards; the figure is the process's CPU
//! time over wall time (`Summary::cpu_seconds / wall_seconds`), in % of one core.
//!
//! It isolates the idle path of the shard loop: the spin window before parking, parking on the
//! doorbell or a timer, and the wake-ups for the next source event and the stats interval.
//! Run with the default spin window (200 µs) and with `spin = "0s"` (park at once).
//! Target: under 1% of a core.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- idle [--quick]    # 2 x 2 x 5 s (quick: 2 x 2 s)
//! ```

use serde::Serialize;
use serde_json::{json, Value};

use crate::keyed_count::{dirigo, Load, W1};
use crate::report::{median, Table};
use crate::Opts;

/// The CPU share an idle engine should stay under, in % of one core.
const TARGET_CPU_PERCENT: f64 = 1.0;
/// Events per second while idle.
const RATE: u64 = 1;

/// One engine run.
#[derive(Debug, Serialize)]
struct Run {
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
    spin: &'static str,
    repeats: usize,
    cpu_percent: f64,
    /// CPU time per wall second, in µs.
    cpu_us_per_second: f64,
    met: bool,
}

/// The spin settings compared: the default and none.
const SPINS: [(&str, Option<&str>); 2] = [("default", None), ("0s", Some("0s"))];

/// Run the scenario; returns its `results` JSON.
pub fn run(opts: Opts) -> anyhow::Result<Value> {
    crate::sys::load_before();
    let (seconds, repeats) = if opts.quick { (2, 1) } else { (5, 2) };
    // Event i is due at i s: `seconds + 1` events span `seconds` of wall time.
    let load = Load::Rate { eps: RATE, events: seconds + 1 };
    let mut runs = Vec::new();
    for repeat in 0..repeats {
        for (spin, setting) in SPINS {
            let (summary, m) = dirigo::run_config(
                &dirigo::config_text(load, &W1, setting),
                std::time::Duration::from_secs(10 + 3 * seconds),
            )?;
            let cpu_percent = 100.0 * summary.cpu_seconds / summary.wall_seconds.max(1e-9);
            println!(
                "spin {spin:<8} #{repeat}: {} events in {:.2}s, cpu {:.3}s = {cpu_percent:.2}% of a core",
                m.events_in, m.wall_seconds, m.cpu_seconds
            );
            runs.push(Run {
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
    let medians: Vec<MedianRow> = SPINS.iter().map(|(spin, _)| median_of(spin, &runs)).collect();
    let mut t = Table::new(&["spin", "n", "cpu %", "cpu us/s", "< 1%"]);
    for m in &medians {
        t.row(vec![
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

fn median_of(spin: &'static str, runs: &[Run]) -> MedianRow {
    let xs: Vec<f64> = runs.iter().filter(|r| r.spin == spin && !r.stalled).map(|r| r.cpu_percent).collect();
    let cpu_percent = median(&xs);
    MedianRow {
        spin,
        repeats: xs.len(),
        cpu_percent,
        cpu_us_per_second: cpu_percent * 1e4,
        met: cpu_percent < TARGET_CPU_PERCENT,
    }
}
