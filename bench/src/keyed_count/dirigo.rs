//! W1 on Dirigo: the workload as a config string, parsed with `Config::parse`, compiled with
//! `compile::compile` and run with `engine::run`, exactly as the `dirigo` CLI would.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use dirigo_engine::config::Config;
use dirigo_engine::engine::StopHandle;
use dirigo_engine::policy::Builtin;

use super::{Load, Measurement, Workload};

/// The W1 config for `load` (every `[engine]` key not set here comes from `configs/default.toml`).
pub fn config_text(load: Load, w: &Workload, spin: Option<&str>) -> String {
    config_text_with(load, w, spin, false)
}

/// Events per split of a generator read in splits (`split_events`), as NEXMark's.
pub const SPLIT_EVENTS: u64 = 4_096;

/// [`config_text`], the generator read in splits of [`SPLIT_EVENTS`] (closed loop only).
pub fn config_text_with(load: Load, w: &Workload, spin: Option<&str>, splits: bool) -> String {
    let (rate, events) = match load {
        Load::Max { events } => (0, events),
        Load::Rate { eps, events } => (eps, events),
    };
    let spin = spin.map(|s| format!("spin = \"{s}\"\n")).unwrap_or_default();
    let splits = match splits {
        true => format!("# Each instance takes the next split when it has read one.\nsplit_events = {SPLIT_EVENTS}\n"),
        false => String::new(),
    };
    format!(
        r#"
[engine]
shards = {shards}
pin = true
# Latency mode, as timely's workers spin: spin for the app's 10 ms SLO and wake for each event
# (the serverless defaults park and let events gather; `idle` and the quickstart measure those).
spin_slo = "10ms"
gather = 0
{spin}
[[app]]
name = "w1"
slo = "10ms"
# On every shard, as timely's workers are: W1 measures the data path across cores.
cores = {shards}
schema = {{ key = "u64", value = "u64" }}

[[app.source]]
name = "events"
kind = "generator"
rate = {rate}
events = {events}
keys = {keys}
distribution = "uniform"
seed = {seed}
# One generator instance per shard, as each timely worker feeds its share of the events.
parallelism = {shards}
{splits}
[[app.function]]
name = "mapped"
kind = "map"
input = "events"
fields = {{ key = "key", value = "value + 1" }}

{hops}
[[app.function]]
name = "counts"
kind = "count"
input = "{last}"
key = "key"

[[app.sink]]
name = "latency"
kind = "latency"
input = "counts"
"#,
        shards = w.shards,
        keys = w.keys,
        seed = w.seed,
        hops = identity_maps(w.hops),
        last = stage(w.hops),
    )
}

/// `n` identity maps after `mapped` (`hop1` .. `hopN`), each passing the record on unchanged.
fn identity_maps(n: usize) -> String {
    (1..=n)
        .map(|i| {
            let (name, input) = (stage(i), stage(i - 1));
            format!(
                "[[app.function]]\nname = \"{name}\"\nkind = \"map\"\ninput = \"{input}\"\nfields = {{ key = \"key\", value = \"value\" }}\n\n"
            )
        })
        .collect()
}

/// The function after `i` identity maps: `mapped` itself, then `hop1`, `hop2`...
fn stage(i: usize) -> String {
    if i == 0 {
        "mapped".to_owned()
    } else {
        format!("hop{i}")
    }
}

/// Parse, compile and run `text` under a [`Watchdog`] of `limit`; the summary and its only app.
pub fn run_config(text: &str, limit: Duration) -> anyhow::Result<(dirigo_engine::report::Summary, Measurement)> {
    let config = Config::parse(text, "keyed-count.toml").map_err(|e| anyhow!("{e}"))?;
    let policy = Builtin::by_name(config.engine.policy.name()).context("unknown policy")?;
    let stop = StopHandle::default();
    let watchdog = Watchdog::start(stop.clone(), limit);
    let summary = dirigo_engine::compile::run_config(&config, 0, policy, stop)?;
    let stalled = watchdog.finish();
    let app = summary.apps.first().context("the config has one app")?;
    let m = Measurement {
        events_in: app.events_in,
        events_out: app.events_out,
        // As timely's: the run proper, from the first shard ready to the last one done (the
        // engine's start and teardown are in `cpu_seconds`, as timely's set-up is in its).
        wall_seconds: summary.run_seconds,
        cpu_seconds: summary.cpu_seconds,
        latency_us: app.latency_us.clone(),
        stalled,
        envelopes_per_batch: super::envelopes_per_batch(&summary),
    };
    Ok((summary, m))
}

/// Run W1 under `load` on Dirigo (`splits`: its generator read in splits).
pub fn run(load: Load, w: &Workload, splits: bool) -> anyhow::Result<Measurement> {
    let expected = match load {
        Load::Max { events } => events as f64 / 200_000.0,
        Load::Rate { eps, events } => events as f64 / eps as f64,
    };
    let text = config_text_with(load, w, None, splits);
    let (_, m) = run_config(&text, Duration::from_secs_f64(10.0 + 3.0 * expected))?;
    anyhow::ensure!(
        m.stalled || m.events_in == load.events(),
        "dirigo took {} events of {}",
        m.events_in,
        load.events()
    );
    Ok(m)
}

/// Stops an engine that runs past its time limit (a hang: every shard parked with work due),
/// and ends the process if even that does not stop it, so a scenario always finishes.
pub struct Watchdog {
    done: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

/// How long a stopped engine gets to drain before the process gives up on it.
const GRACE: Duration = Duration::from_secs(10);

impl Watchdog {
    /// Watch a run that should end within `limit`.
    pub fn start(stop: StopHandle, limit: Duration) -> Self {
        let (done, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if rx.recv_timeout(limit).is_ok() {
                return false;
            }
            eprintln!("watchdog: the engine ran past {limit:?}: asking it to stop (a hang?)");
            stop.stop();
            if rx.recv_timeout(GRACE).is_err() {
                eprintln!("watchdog: the engine did not stop within {GRACE:?} of the request: giving up");
                std::process::exit(3);
            }
            true
        });
        Watchdog { done, thread }
    }

    /// The run ended: true if the watchdog had to stop it.
    pub fn finish(self) -> bool {
        let _ = self.done.send(());
        self.thread.join().unwrap_or(true)
    }
}
