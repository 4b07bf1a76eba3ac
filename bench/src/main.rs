//! `dirigo-bench`: named benchmark scenarios, each run against a baseline in the same process.
//!
//! Every scenario prints a table and writes `OUT/SCENARIO.json` (fields in `bench/README.md`) and
//! a figure of its medians beside it, `OUT/SCENARIO.svg` ([`figures`], drawn by [`plot`]):
//!
//! - [`keyed_count`]: workload W1 on Dirigo vs a hand-written 2-thread pipeline and
//!   timely-dataflow: maximum throughput and open-loop latency at fixed rates.
//! - [`mailbox`]: the cross-shard mailbox round trip (busy, idle, loaded) vs glommio's
//!   `shared_channel`.
//! - [`idle`]: CPU used by an engine that has (almost) nothing to do.
//! - [`hooks`]: CPU ns per message of each scheduling policy against hooks compiled out.
//! - [`tenants`]: a latency-critical app beside a heavy bursty one, under each policy.
//! - [`nexmark`]: NEXMark Q1, Q2, Q5, Q7, Q8, each checked against a sequential reference.
//! - [`slo`]: the Dirigo paper's experiment: a 1 ms-SLO app beside bursty heavy apps, serverful
//!   FIFO against least laxity with dual-mode autoscaling (satisfaction, resources, over time).
//! - [`reaction`]: the scale-up reaction (deadline miss to first message on a new lessee) over
//!   hundreds of leases, with an idle and a busy lender.
//! - [`scaling`]: throughput and p99 against lessees.
//! - [`hops`]: what one more operator costs per event, Dirigo against timely-dataflow (1 shard).
//! - [`scale`]: W1 at 1..N shards against timely-dataflow at as many workers: throughput,
//!   CPU per event and open-loop p99 against cores.
//! - [`barrier`]: barrier time against the number of lessees and the state size.
//! - [`skew`]: a hot key range on one shard through a dual-mode actor, lessor alone vs lessees.
//! - [`tcp_ingress`]: a tcp source's receive path, `recv` against io_uring (`tcp_io`).
//! - [`snapshots`]: snapshot size, duration and recovery time against state size, and W1 with a
//!   snapshot every second against none.
//! - [`redis_streams`] (`redis`): the redis sink (write-through and staged) and source against
//!   `redis-benchmark`'s XADD rate on the same server.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- keyed-count [--quick] [--out bench/results]
//! cargo run --release -p dirigo-bench -- keyed-count --plot-only   # redraw the SVG from the JSON
//! ```

mod apps;
mod barrier;
mod figures;
mod hooks;
mod hops;
mod idle;
mod keyed_count;
mod mailbox;
mod nexmark;
mod plot;
mod reaction;
mod redis_streams;
mod report;
mod scale;
mod scaling;
mod skew;
mod slo;
mod snapshots;
mod sys;
mod tcp_ingress;
mod tenants;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};

/// Command line of `dirigo-bench`.
#[derive(Debug, Parser)]
#[command(name = "dirigo-bench", about = "Dirigo's benchmark scenarios")]
struct Cli {
    /// The scenario to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Run for a few seconds only (smoke test; figures are noisy).
    #[arg(long)]
    quick: bool,
    /// Directory the JSON result and the SVG figure are written to.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Do not run: redraw `OUT/SCENARIO.svg` from an existing `OUT/SCENARIO.json`.
    #[arg(long)]
    plot_only: bool,
    /// Shards of the shared pool (`slo`: Dirigo's; the serverful baseline gets one per app,
    /// at least 1/0.7 as many). Default: the scenario's own (2 for `slo`).
    #[arg(long)]
    shards: Option<usize>,
    /// `nexmark`: run this query only.
    #[arg(long, value_enum)]
    query: Option<nexmark::queries::Query>,
    /// `nexmark`: events per run (default 1,000,000; 20,000 with `--quick`).
    #[arg(long)]
    events: Option<u64>,
}

/// The scenarios, by command-line name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// W1: generator -> map -> keyed count -> latency sink, Dirigo vs hand-written baseline.
    KeyedCount,
    /// Mailbox round trip between two pinned shards vs glommio's shared_channel.
    Mailbox,
    /// CPU use of an engine with one event per second.
    Idle,
    /// Hook overhead: ns per message per policy against `Bare` (hooks compiled out).
    Hooks,
    /// Multi-tenant: a 1 ms-SLO app beside a heavy bursty app, per policy.
    Tenants,
    /// NEXMark queries 1, 2, 5, 7, 8 on 2 shards, each checked against a sequential reference.
    Nexmark,
    /// The paper's experiment: serverful FIFO vs least laxity with dual-mode autoscaling.
    Slo,
    /// Throughput and p99 against lessees.
    Scaling,
    /// W1 at 1..N shards (default 1, 2 and every CPU; `--shards N`: 1, 2, 4, .. N) against
    /// timely-dataflow with as many workers.
    Scale,
    /// What one more operator costs: W1 on 1 shard plus identity maps, Dirigo vs timely-dataflow.
    Hops,
    /// Scale-up reaction: deadline miss to first message on a new lessee, idle and busy lender.
    Reaction,
    /// Barrier time against lessees (1 ..= shards - 1) and state size (1 KB .. 100 MB).
    Barrier,
    /// A hot key range at 10x the others on one shard: lessor alone vs lessees allowed.
    Skew,
    /// TCP ingress: `tcp_io = "recv"` vs `"uring"`: events/s, CPU/event, lone-event latency.
    TcpIngress,
    /// Snapshot size, duration and recovery time against state size; W1 with snapshots vs none.
    Snapshots,
    /// Redis: the sink (write-through, staged + commit_staged) and the source vs redis-benchmark XADD.
    Redis,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::KeyedCount => "keyed-count",
            Scenario::Mailbox => "mailbox",
            Scenario::Idle => "idle",
            Scenario::Hooks => "hooks",
            Scenario::Tenants => "tenants",
            Scenario::Nexmark => "nexmark",
            Scenario::Slo => "slo",
            Scenario::Scaling => "scaling",
            Scenario::Scale => "scale",
            Scenario::Hops => "hops",
            Scenario::Reaction => "reaction",
            Scenario::Barrier => "barrier",
            Scenario::Skew => "skew",
            Scenario::TcpIngress => "tcp-ingress",
            Scenario::Snapshots => "snapshots",
            Scenario::Redis => "redis",
        }
    }
}

/// What every scenario is given.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    /// Short run for smoke tests.
    pub quick: bool,
    /// `--shards`, where a scenario takes it.
    pub shards: Option<usize>,
    /// `--query` (`nexmark`).
    pub query: Option<nexmark::queries::Query>,
    /// `--events` (`nexmark`).
    pub events: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let name = cli.scenario.name();
    let json_path = cli.out.join(format!("{name}.json"));
    let svg_path = cli.out.join(format!("{name}.svg"));
    if cli.plot_only {
        let text = std::fs::read_to_string(&json_path).with_context(|| format!("reading {}", json_path.display()))?;
        let doc: serde_json::Value = serde_json::from_str(&text)?;
        write_figure(name, &doc, &svg_path)?;
        println!("wrote {}", svg_path.display());
        return Ok(());
    }
    let opts = Opts { quick: cli.quick, shards: cli.shards, query: cli.query, events: cli.events };
    let started = std::time::Instant::now();
    let json = match cli.scenario {
        Scenario::KeyedCount => keyed_count::run(opts)?,
        Scenario::Mailbox => mailbox::run(opts)?,
        Scenario::Idle => idle::run(opts)?,
        Scenario::Hooks => hooks::run_scenario(opts)?,
        Scenario::Tenants => tenants::run_scenario(opts)?,
        Scenario::Nexmark => nexmark::run_scenario(opts)?,
        Scenario::Slo => slo::run_scenario(opts)?,
        Scenario::Scaling => scaling::run_scenario(opts)?,
        Scenario::Scale => scale::run_scenario(opts)?,
        Scenario::Hops => hops::run_scenario(opts)?,
        Scenario::Reaction => reaction::run_scenario(opts)?,
        Scenario::Barrier => barrier::run_scenario(opts)?,
        Scenario::Skew => skew::run_scenario(opts)?,
        Scenario::TcpIngress => tcp_ingress::run_scenario(opts)?,
        Scenario::Snapshots => snapshots::run_scenario(opts)?,
        Scenario::Redis => redis_streams::run_scenario(opts)?,
    };
    let doc = report::envelope(name, opts, started.elapsed(), json);
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    let text = serde_json::to_string_pretty(&doc)?;
    std::fs::write(&json_path, text + "\n").with_context(|| format!("writing {}", json_path.display()))?;
    write_figure(name, &doc, &svg_path)?;
    println!("\nwrote {} and {} ({:.1}s)", json_path.display(), svg_path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Draw the figure of a scenario's JSON document `doc` into `path`.
fn write_figure(name: &str, doc: &serde_json::Value, path: &std::path::Path) -> anyhow::Result<()> {
    let quick = if doc["quick"] == true { " (--quick: not for comparison)" } else { "" };
    let title = format!("dirigo-bench {name}{quick}");
    plot::write_svg(path, &title, &figures::panels(name, &doc["results"]))
}
