//! The `dirigo` command: run a config's apps (`dirigo run`), or check a config (`dirigo check`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dirigo_engine::compile::{compile, settings};
use dirigo_engine::config::Config;
use dirigo_engine::engine::{run, StopHandle};
use dirigo_engine::policy::Builtin;

/// Dirigo: real-time stream processing on self-scaling stateful virtual actors.
#[derive(Parser, Debug)]
#[command(name = "dirigo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the apps of a config until their sources end (or Ctrl-C, or --duration).
    Run {
        /// The config file (TOML).
        config: PathBuf,
        /// Print the summary as one JSON object on stdout instead of a table.
        #[arg(long)]
        json: bool,
        /// Override `[engine] shards`.
        #[arg(long)]
        shards: Option<usize>,
        /// Override `[engine] policy` (fifo, edf, laxity, fair).
        #[arg(long)]
        policy: Option<String>,
        /// Stop the sources after this long (e.g. 10s), then drain and summarise.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Do not print progress lines.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Check a config: parse it, resolve every name and type-check every function.
    Check {
        /// The config file (TOML).
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Check { config } => check(&config),
        Command::Run { config, json, shards, policy, duration, quiet } => {
            run_config(&config, json, shards, policy.as_deref(), duration, quiet)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path, shards: Option<usize>) -> anyhow::Result<(Config, dirigo_engine::plan::Plan)> {
    let config = Config::load(path)?;
    let plan = compile(&config, shards.unwrap_or(config.engine.shards))?;
    Ok((config, plan))
}

fn check(path: &Path) -> anyhow::Result<()> {
    let (config, plan) = load(path, None)?;
    println!(
        "{}: ok ({} apps, {} functions and sinks, {} shards)",
        path.display(),
        config.apps.len(),
        plan.functions.len(),
        plan.shards
    );
    Ok(())
}

fn run_config(
    path: &Path,
    json: bool,
    shards: Option<usize>,
    policy: Option<&str>,
    duration: Option<Duration>,
    quiet: bool,
) -> anyhow::Result<()> {
    let (config, plan) = load(path, shards)?;
    let mut s = settings(&config);
    s.run_for = duration;
    let name = policy.unwrap_or(config.engine.policy.name());
    let policy = Builtin::by_name(name).ok_or_else(|| {
        anyhow::anyhow!("unknown policy `{name}`; valid: {}", dirigo_engine::policy::POLICY_NAMES.join(", "))
    })?;
    let stop = StopHandle::default();
    let on_signal = stop.clone();
    let mut interrupted = false;
    ctrlc::set_handler(move || {
        if interrupted {
            std::process::exit(130);
        }
        interrupted = true;
        eprintln!("stopping: draining in-flight messages (Ctrl-C again to abort)");
        on_signal.stop();
    })?;
    let summary = run(plan, &s, policy, stop, |p| {
        if !quiet {
            eprint!("{}", p.render());
        }
    })?;
    if json {
        println!("{}", summary.to_json());
    } else {
        eprint!("{}", summary.to_table());
    }
    Ok(())
}
