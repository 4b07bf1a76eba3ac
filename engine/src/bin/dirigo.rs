//! The `dirigo` command: run a config's apps (`dirigo run`), check a config (`dirigo check`), push
//! events to a tcp source (`dirigo send`) or print a tcp sink's output (`dirigo tail`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dirigo_actors::record::{FieldType, Schema};
use dirigo_engine::compile::{compile, settings};
use dirigo_engine::config::Config;
use dirigo_engine::config::SourceKind;
use dirigo_engine::engine::{run, StopHandle};
use dirigo_engine::policy::Builtin;
use dirigo_engine::tcp::{self, client, SendMode};

/// Dirigo: real-time stream processing on self-scaling stateful virtual actors.
#[derive(Parser, Debug)]
#[command(
    name = "dirigo",
    version,
    about = "Dirigo: real-time stream processing on self-scaling stateful virtual actors"
)]
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
    /// Push events to a tcp source: NDJSON lines as they are, or binary frames with --binary.
    Send {
        /// The source's address (host:port).
        addr: String,
        /// NDJSON lines (or binary frames) to send; stdin when absent.
        file: Option<PathBuf>,
        /// Send binary frames: NDJSON input is converted (needs --schema or --config).
        #[arg(long)]
        binary: bool,
        /// Schema for --binary, as `name=type,...` (e.g. `auction=u64,price=u64,note=string`).
        #[arg(long)]
        schema: Option<String>,
        /// Take the schema for --binary from this config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The config's app (default: the app with a tcp source on ADDR, or the only app).
        #[arg(long)]
        app: Option<String>,
        /// Keep retrying to connect for this long (e.g. 5s).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        wait: Duration,
    },
    /// Print a tcp sink's output as NDJSON lines (binary output is decoded).
    Tail {
        /// The sink's address (host:port).
        addr: String,
        /// Exit after this many records.
        #[arg(long)]
        limit: Option<u64>,
        /// Keep retrying to connect for this long (e.g. 5s).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        wait: Duration,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Check { config } => check(&config),
        Command::Send { addr, file, binary, schema, config, app, wait } => {
            send(&addr, file.as_deref(), binary, schema.as_deref(), config.as_deref(), app.as_deref(), wait)
        }
        Command::Tail { addr, limit, wait } => tail(&addr, limit, wait),
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

fn send(
    addr: &str,
    file: Option<&Path>,
    binary: bool,
    schema: Option<&str>,
    config: Option<&Path>,
    app: Option<&str>,
    wait: Duration,
) -> anyhow::Result<()> {
    let mode = match binary {
        true => SendMode::Binary(send_schema(addr, schema, config, app)?),
        false => SendMode::Ndjson,
    };
    let input: Box<dyn BufRead> = match file {
        Some(p) => Box::new(BufReader::new(
            std::fs::File::open(p).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", p.display()))?,
        )),
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    let report = tcp::send(client::connect(addr, wait)?, input, &mode)?;
    eprintln!("sent {} records ({} bytes) to {addr}", report.records, report.bytes);
    for e in &report.errors {
        eprintln!("error from the engine: {e}");
    }
    anyhow::ensure!(report.errors.is_empty(), "the engine refused part of the input");
    Ok(())
}

/// The schema for `send --binary`: from `--schema`, or from an app of `--config`.
fn send_schema(addr: &str, schema: Option<&str>, config: Option<&Path>, app: Option<&str>) -> anyhow::Result<Schema> {
    if let Some(text) = schema {
        let mut fields = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, ty) = part.split_once('=').ok_or_else(|| anyhow::anyhow!("`{part}`: write name=type"))?;
            let ty = FieldType::parse(ty.trim())
                .ok_or_else(|| anyhow::anyhow!("`{ty}`: types are u64, i64, f64, bool, string"))?;
            fields.push((name.trim().to_owned(), ty));
        }
        return Ok(Schema::new(fields));
    }
    let path = config.ok_or_else(|| anyhow::anyhow!("--binary needs --schema or --config"))?;
    let config = Config::load(path)?;
    let listens_on = |a: &&dirigo_engine::config::AppConfig| {
        a.sources.iter().any(|s| matches!(&s.kind, SourceKind::Tcp(t) if t.listen.get_ref() == addr))
    };
    let found = match app {
        Some(name) => config.apps.iter().find(|a| a.name.get_ref() == name),
        None => config.apps.iter().find(listens_on).or(config.apps.first().filter(|_| config.apps.len() == 1)),
    };
    let app = found.ok_or_else(|| anyhow::anyhow!("{}: no such app; name it with --app", path.display()))?;
    Ok(app.schema.to_schema())
}

fn tail(addr: &str, limit: Option<u64>, wait: Duration) -> anyhow::Result<()> {
    let stream = client::connect(addr, wait)?;
    tcp::tail(stream, &mut std::io::stdout().lock(), limit)?;
    Ok(())
}
