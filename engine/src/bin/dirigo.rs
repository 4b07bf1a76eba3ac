//! The `dirigo` command: run a config's apps (`dirigo run`), check a config (`dirigo check`), push
//! events to a tcp source (`dirigo send`) or print a tcp sink's output (`dirigo tail`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[path = "dirigo/service.rs"]
mod service;

use clap::{Parser, Subcommand};
use dirigo_actors::record::{FieldType, Schema};
use dirigo_engine::compile::{cluster_spec, compile, compile_check, compile_node, settings, ClusterSpecError};
use dirigo_engine::config::SourceKind;
use dirigo_engine::config::{unknown_node, Config};
use dirigo_engine::engine::{run_node, StopHandle};
use dirigo_engine::policy::Builtin;
use dirigo_net::link::ClusterSpec;
use dirigo_net::tcp::{self, client, SendMode};

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
        /// Run this node of the config's cluster (its `[[node]]` id).
        #[arg(long)]
        node: Option<String>,
    },
    /// Check a config: parse it, resolve every name and type-check every function.
    Check {
        /// The config file (TOML).
        config: PathBuf,
        /// Also check that the cluster has this node, and read its cluster secret as `run` would.
        #[arg(long)]
        node: Option<String>,
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
    /// Run the engine as a service: the config's apps (possibly none) and an admin HTTP
    /// endpoint (`[admin] listen`) to deploy, list and undeploy apps, `/metrics` and a dashboard.
    Serve {
        /// The config file (TOML).
        config: PathBuf,
        /// Print the admin address as one JSON object on stdout (`{"admin":"127.0.0.1:7900"}`);
        /// `stdout` sinks then write to stderr.
        #[arg(long)]
        json: bool,
        /// Override `[engine] shards`.
        #[arg(long)]
        shards: Option<usize>,
        /// Override `[engine] policy` (fifo, edf, laxity, fair).
        #[arg(long)]
        policy: Option<String>,
        /// Override `[admin] listen` (host:port; port 0 picks a free one).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Deploy the app of a TOML file (one `[[app]]`) into a running `dirigo serve`.
    Deploy {
        /// The server's admin address (host:port or http://host:port).
        addr: String,
        /// The app's TOML.
        app: PathBuf,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the apps of a running `dirigo serve`.
    Apps {
        /// The server's admin address.
        addr: String,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Undeploy an app from a running `dirigo serve`: its sources stop, what they produced is
    /// processed, then its instances are released. Waits until it has drained.
    Undeploy {
        /// The server's admin address.
        addr: String,
        /// The app's name.
        name: String,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
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
        Command::Check { config, node } => check(&config, node.as_deref()),
        Command::Send { addr, file, binary, schema, config, app, wait } => {
            send(&addr, file.as_deref(), binary, schema.as_deref(), config.as_deref(), app.as_deref(), wait)
        }
        Command::Tail { addr, limit, wait } => tail(&addr, limit, wait),
        Command::Serve { config, json, shards, policy, listen } => {
            service::serve(&config, json, shards, policy.as_deref(), listen.as_deref())
        }
        Command::Deploy { addr, app, json } => service::deploy(&addr, &app, json),
        Command::Apps { addr, json } => service::apps(&addr, json),
        Command::Undeploy { addr, name, json } => service::undeploy(&addr, &name, json),
        Command::Run { config, json, shards, policy, duration, quiet, node } => {
            let opts = RunOptions { json, shards, policy, duration, quiet, node };
            run_config(&config, &opts)
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

/// How `dirigo run` was asked to run.
struct RunOptions {
    json: bool,
    shards: Option<usize>,
    policy: Option<String>,
    duration: Option<Duration>,
    quiet: bool,
    node: Option<String>,
}

/// The config, its plan and, on a cluster, this node's view of it.
fn load(
    path: &Path,
    shards: Option<usize>,
    node: Option<&str>,
) -> anyhow::Result<(Config, dirigo_engine::plan::Plan, Option<ClusterSpec>)> {
    let config = Config::load(path)?;
    if config.nodes.is_empty() {
        if let Some(id) = node {
            anyhow::bail!("{}: {}", path.display(), unknown_node(&config.nodes, id));
        }
        let plan = compile(&config, shards.unwrap_or(config.engine.shards))?;
        return Ok((config, plan, None));
    }
    let ids: Vec<&str> = config.nodes.iter().map(|n| n.id.get_ref().as_str()).collect();
    anyhow::ensure!(shards.is_none(), "--shards: a cluster sets each node's shards in its [[node]] table");
    let Some(id) = node else {
        anyhow::bail!("{}: the config lists nodes {}; pick one with --node", path.display(), ids.join(", "));
    };
    let spec = cluster_spec(&config, id).map_err(|e| node_error(path, e))?;
    let plan = compile_node(&config, config.cluster_shards(), Some(&config.nodes[spec.me]))?;
    Ok((config, plan, Some(spec)))
}

/// A node that cannot start: an unknown id is reported under the config's path (a secret that
/// cannot be read already names the file, line and key).
fn node_error(path: &Path, e: ClusterSpecError) -> anyhow::Error {
    match e {
        ClusterSpecError::UnknownNode(e) => anyhow::anyhow!("{}: {e}", path.display()),
        ClusterSpecError::Secret(e) => e.into(),
    }
}

/// `dirigo check`: the config, and with `--node` that node's view of the cluster (its cluster
/// secret read as it would be at startup).
fn check(path: &Path, node: Option<&str>) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    if let Some(id) = node {
        cluster_spec(&config, id).map_err(|e| node_error(path, e))?;
    }
    let plan = compile_check(&config, config.cluster_shards())?;
    let nodes = match config.nodes.len() {
        0 => String::new(),
        n => format!(", {n} nodes"),
    };
    println!(
        "{}: ok ({} apps, {} functions and sinks, {} shards{nodes})",
        path.display(),
        config.apps.len(),
        plan.functions.len(),
        plan.shards
    );
    Ok(())
}

fn run_config(path: &Path, opts: &RunOptions) -> anyhow::Result<()> {
    let (config, plan, cluster) = load(path, opts.shards, opts.node.as_deref())?;
    if opts.json {
        dirigo_engine::sink::STDOUT_SINKS_TO_STDERR.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let mut s = settings(&config);
    s.run_for = opts.duration;
    let policy = policy_named(opts.policy.as_deref().unwrap_or(config.engine.policy.name()))?;
    let cluster = cluster.map(|mut c| {
        c.settings.drop_after = test_drop_link();
        c
    });
    let rolls_back = s.snapshots.is_some() && cluster.is_some();
    let stop = stop_on_ctrl_c("stopping: draining in-flight messages (Ctrl-C again to abort)")?;
    let quiet = opts.quiet;
    let summary = run_node(
        plan,
        &s,
        policy,
        stop,
        |p| {
            if !quiet {
                eprint!("{}", p.render());
            }
        },
        cluster,
    );
    let summary = match summary {
        // Resumed a run that had finished: nothing is left to do (its output is committed).
        Err(dirigo_engine::engine::EngineError::Resume(e))
            if matches!(*e, dirigo_engine::snapshot::ResumeError::Finished { .. }) =>
        {
            eprintln!("{e}");
            return Ok(());
        }
        // The cluster lost a node: with snapshots, roll back to the last snapshot every node
        // has, by starting this process again (its shards cannot be unwound in place), and join
        // the cluster again; the lost node's operator restarts it.
        Err(dirigo_engine::engine::EngineError::Link(e)) if e.is_node_lost() && rolls_back => {
            return Err(roll_back(&e));
        }
        other => other?,
    };
    if opts.json {
        use std::io::Write;
        // One JSON document on stdout: sinks were sent to stderr.
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", summary.to_json())?;
        out.flush()?;
    } else {
        eprint!("{}", summary.to_table());
    }
    let failed: Vec<String> =
        summary.apps.iter().filter_map(|a| a.failure.as_ref().map(|f| format!("app `{}`: {f}", a.name))).collect();
    if !failed.is_empty() {
        anyhow::bail!("{} app(s) failed (the others ran to completion): {}", failed.len(), failed.join("; "));
    }
    Ok(())
}

/// Start this process again, with the same arguments (it does not return unless that fails):
/// the new process resumes from the newest snapshot every node of the cluster has.
fn roll_back(why: &dirigo_net::link::LinkError) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    eprintln!("{why}: rolling back to the cluster's last snapshot and joining the cluster again");
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return anyhow::anyhow!("{why}; cannot find this program to restart it: {e}"),
    };
    let e = std::process::Command::new(&exe).args(std::env::args_os().skip(1)).exec();
    anyhow::anyhow!("{why}; cannot restart {} to roll back: {e}", exe.display())
}

/// Test hook: `DIRIGO_TEST_DROP_LINK=N` makes every outbound link of this node drop its
/// connection once, after N data frames (the link must reconnect and lose nothing).
/// The built-in policy `name`, or an error listing the valid ones.
fn policy_named(name: &str) -> anyhow::Result<Builtin> {
    Builtin::by_name(name).ok_or_else(|| {
        anyhow::anyhow!("unknown policy `{name}`; valid: {}", dirigo_engine::policy::POLICY_NAMES.join(", "))
    })
}

/// A stop handle that the first Ctrl-C stops (saying `message`); a second one aborts.
fn stop_on_ctrl_c(message: &'static str) -> anyhow::Result<StopHandle> {
    let stop = StopHandle::default();
    let on_signal = stop.clone();
    let mut interrupted = false;
    ctrlc::set_handler(move || {
        if interrupted {
            std::process::exit(130);
        }
        interrupted = true;
        eprintln!("{message}");
        on_signal.stop();
    })?;
    Ok(stop)
}

fn test_drop_link() -> Option<u64> {
    let v = std::env::var("DIRIGO_TEST_DROP_LINK").ok()?;
    match v.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            eprintln!("warning: DIRIGO_TEST_DROP_LINK={v} is not a number; ignored");
            None
        }
    }
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
