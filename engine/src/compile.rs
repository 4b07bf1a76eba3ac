//! Compiles a checked [`Config`] into a [`Plan`]: schemas flow through the DAG, every built-in
//! function is built once here (field names resolve to positions, expressions type-check), and
//! any error points at the config's file, line and key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use dirigo_actors::builtins::{AggOp, Aggregate, Filter, Join, KeyBy, Map, Window, WindowKind, WindowSpec as Spec};
use dirigo_actors::ids::{AppId, FunctionId, ShardId};
use dirigo_actors::record::{hash_bytes, RecordsOnly, Schema};
use toml::Spanned;

use crate::config::{
    AggregateOp, AppConfig, Config, ConfigError, FunctionConfig, FunctionKind, KeyPath, Node, NodeConfig, Role,
    SinkConfig, SinkKind, SourceConfig, SourceKind, WindowType,
};
use crate::engine::{resolve_shards, EngineSettings};
use crate::instance::Builtin;
use crate::instance::OperatorInstance;
use crate::placement::AppShards;
use crate::plan::{AppPlan, FunctionPlan, Input, Partition, Plan, SourcePlan, Upstream};
use crate::shard::ShardSettings;
use crate::sink::{Sink, SinkTarget};
use crate::source::SourceInstance;
use crate::source::{Burst, FileFormat, FileReader, Generator, GeneratorSpec, KeyDistribution};

/// Engine settings from the `[engine]` table.
pub fn settings(config: &Config) -> EngineSettings {
    let e = &config.engine;
    EngineSettings {
        shards: e.shards,
        pin: e.pin,
        shard: ShardSettings {
            batch_size: e.batch_size,
            max_in_flight: e.max_in_flight as u64,
            queue_budget: e.queue_budget,
            spin: e.spin,
            spin_slo: e.spin_slo,
            gather: e.gather,
            standby: e.standby,
            tick: e.tick,
            lessee_idle: e.lessee_idle,
            migrate_every: e.migrate_every,
            rebalance: e.rebalance,
            stats_interval: e.stats_interval,
        },
        key_groups: e.key_groups,
        stall_budget: e.stall_budget,
        stall_stop: e.stall_stop,
        mailbox_batches: e.mailbox_batches,
        preempt_timer: e.preempt_timer,
        run_for: None,
        snapshots: config.snapshots.as_ref().map(|s| crate::snapshot::SnapshotSettings {
            dir: s.dir.clone(),
            every: s.every,
            keep: s.keep,
            fingerprint: crate::snapshot::Fingerprint::of_config(config),
        }),
    }
}

/// Why a node of a config cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterSpecError {
    /// `--node` names no node of the config.
    #[error(transparent)]
    UnknownNode(#[from] crate::config::UnknownNode),
    /// The cluster secret cannot be read (its key, and the variable or file it names).
    #[error(transparent)]
    Secret(#[from] ConfigError),
}

/// The cluster of `config` as node `node` sees it, with the cluster secret read now; or why
/// `node` names no node of it, or the secret cannot be read.
pub fn cluster_spec(config: &Config, node: &str) -> Result<dirigo_net::link::ClusterSpec, ClusterSpecError> {
    let me = config.node(node)?;
    let nodes = config
        .nodes
        .iter()
        .map(|n| dirigo_net::link::NodeSpec { id: n.id.get_ref().clone(), address: n.socket, shards: n.shard_range() })
        .collect();
    let me = config.nodes.iter().position(|n| std::ptr::eq(n, me)).expect("found above");
    let settings = dirigo_net::link::LinkSettings {
        connect_timeout: config.cluster.connect_timeout,
        reconnect_timeout: config.cluster.reconnect_timeout,
        credits: config.engine.mailbox_batches,
        // Link threads come on top of the shards, unpinned: a spinning one would take a CPU a
        // shard needs (measured: a 50 µs spin made a one-hop 5x slower on 2 CPUs).
        spin: std::time::Duration::ZERO,
        drop_after: None,
    };
    let secret = config.cluster_secret()?;
    Ok(dirigo_net::link::ClusterSpec { nodes, me, settings, secret })
}

/// Why a config could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

/// Compile `config` for `shards` shards (0: the config's own setting) and run it to completion
/// with `policy`: the one call for programs and benchmarks that start from a config.
pub fn run_config<P: crate::policy::Policy + Clone + Send>(
    config: &Config,
    shards: usize,
    policy: P,
    stop: crate::engine::StopHandle,
) -> Result<crate::report::Summary, RunError> {
    let shards = if shards == 0 { config.engine.shards } else { shards };
    let plan = compile(config, shards)?;
    Ok(crate::engine::run(plan, &settings(config), policy, stop, |_| {})?)
}

/// Compile every app of `config` for `shards` shards.
pub fn compile(config: &Config, shards: usize) -> Result<Plan, ConfigError> {
    compile_node(config, shards, None)
}

/// The placeholder a file sink's path may hold: the node's id (`local` on a single node).
pub const NODE_PLACEHOLDER: &str = "{node}";

/// Compile every app of `config` for `shards` shards as node `node` of its cluster (None: a
/// single node). Every node compiles the same plan; only what this node runs binds sockets, and
/// `{node}` in a file sink's path becomes the node's id.
pub fn compile_node(config: &Config, shards: usize, node: Option<&NodeConfig>) -> Result<Plan, ConfigError> {
    compile_with(config, shards, node, Binding::Bind)
}

/// Compile every app of `config` as [`compile`] does, to check it, binding no socket: a tcp
/// address must resolve, but may be in use (by the engine the config is checked for). The plan
/// is for inspection only: its tcp sources have no listener and its tcp sinks write nowhere.
pub fn compile_check(config: &Config, shards: usize) -> Result<Plan, ConfigError> {
    compile_with(config, shards, None, Binding::ResolveOnly)
}

/// Whether compiling binds the sockets of what the node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Binding {
    /// Bind them: a busy address is an error at its `listen` key.
    Bind,
    /// Only resolve the addresses (`dirigo check`).
    ResolveOnly,
}

fn compile_with(
    config: &Config,
    shards: usize,
    node: Option<&NodeConfig>,
    binding: Binding,
) -> Result<Plan, ConfigError> {
    let mut plan = Plan { shards: resolve_shards(shards), ..Plan::default() };
    let local = node.map_or(0..plan.shards, |n| n.shard_range());
    let node_id = node.map_or("local", |n| n.id.get_ref().as_str());
    // SAFETY: a config app is made of record streams only. Its sources archive records
    // (generators and files with `archive_values_into`; tcp sources validate binary frames and
    // archive parsed NDJSON values), its built-in functions emit records (new values, or the
    // records they received), and node links validate every data payload as a record before a
    // shard sees it. No user code feeds a config app: the embedding API builds apps of its own.
    let records = unsafe { RecordsOnly::assert() };
    let mut placer = AppShards::new(plan.shards, config.engine.shard_capacity);
    for (index, app) in config.apps.iter().enumerate() {
        let id = index as AppId;
        let shards = placer.place(app_cores(app), declared_rate(app));
        // Key groups migrate between the shards of one node: in a cluster an app stays where
        // it was placed (every node's table must agree on where a group is).
        let reach = match node {
            None => placer.reach(&shards, app.max_cores as usize),
            Some(_) => shards.clone(),
        };
        let here = Here { node: node_id, local: local.clone() };
        let nodes = HashMap::new();
        let peak = peak_permille(app, shards.len(), config.engine.shard_capacity);
        AppCompiler { config, app, index, id, plan: &mut plan, nodes, here, records, binding }
            .compile(shards, reach, peak)?;
    }
    plan.validate().map_err(|e| config.error_at(0..0, KeyPath::table("app"), e.to_string()))?;
    Ok(plan)
}

/// Compile app `index` of `config` into `plan` (a running single-node plan of `dirigo serve`):
/// it takes the next app id and is placed by `placer` beside the apps placed before it, by the
/// same rules as [`compile_node`]. On error `plan` may hold part of the app: compile into a
/// clone and keep it only on success.
pub fn compile_app(config: &Config, index: usize, plan: &mut Plan, placer: &mut AppShards) -> Result<(), ConfigError> {
    // SAFETY: as in `compile_node`: a config app is made of record streams only.
    let records = unsafe { RecordsOnly::assert() };
    let app = &config.apps[index];
    let id = plan.apps.len() as AppId;
    let shards = placer.place(app_cores(app), declared_rate(app));
    let here = Here { node: "local", local: 0..plan.shards };
    let reach = placer.reach(&shards, app.max_cores as usize);
    let peak = peak_permille(app, shards.len(), config.engine.shard_capacity);
    AppCompiler { config, app, index, id, plan, nodes: HashMap::new(), here, records, binding: Binding::Bind }
        .compile(shards, reach, peak)?;
    plan.validate().map_err(|e| config.error_at(0..0, KeyPath::table("app"), e.to_string()))
}

/// Per mille of a shard's capacity an app declares at its peak on each of its `shards` start
/// shards (1000 when a source has no bound).
fn peak_permille(app: &AppConfig, shards: usize, capacity: u64) -> u64 {
    match declared_rate(app) {
        Some(eps) => (eps.saturating_mul(1000) / capacity.max(1) / shards.max(1) as u64).min(1000),
        None => 1000,
    }
}

/// What an app declares to the placer: the shards it asks for and its events per second (see
/// [`AppShards::place`]); give them back with [`AppShards::release`] when it is undeployed.
pub fn app_demand(app: &AppConfig) -> (usize, Option<u64>) {
    (app_cores(app), declared_rate(app))
}

struct AppCompiler<'a> {
    config: &'a Config,
    app: &'a AppConfig,
    index: usize,
    id: AppId,
    plan: &'a mut Plan,
    /// Output of every node compiled so far, by name.
    nodes: HashMap<String, (Upstream, Schema)>,
    here: Here<'a>,
    /// The proof that this app's streams are records.
    records: RecordsOnly,
    binding: Binding,
}

/// The cluster node being compiled for.
struct Here<'a> {
    node: &'a str,
    /// Its shards' global ids.
    local: std::ops::Range<usize>,
}

type Res<T> = Result<T, ConfigError>;

impl AppCompiler<'_> {
    fn compile(mut self, shards: Vec<ShardId>, reach: Vec<ShardId>, peak_permille: u64) -> Res<()> {
        let a = self.app;
        self.plan.apps.push(AppPlan {
            name: a.name.get_ref().clone(),
            slo_ns: a.slo.as_nanos() as u64,
            weight: a.weight,
            watermark_every: a.watermark_every,
            watermark_delay_ms: a.watermark_delay.as_millis() as u64,
            shards,
            reach,
            peak_permille,
        });
        for (id, node) in a.nodes_in_order() {
            match node {
                Node::Source(s) => self.source(id.index, s)?,
                Node::Function(f) => self.function(id.index, f)?,
                Node::Sink(s) => self.sink(id.index, s)?,
            }
        }
        Ok(())
    }

    fn path(&self, role: Role, index: usize, name: &str, key: &str) -> KeyPath {
        KeyPath::app(self.index, self.app.name.get_ref()).node(role, index, name).key(key)
    }

    fn err<T>(
        &self,
        role: Role,
        index: usize,
        name: &str,
        key: &str,
        span: std::ops::Range<usize>,
        msg: String,
    ) -> Res<T> {
        Err(self.config.error_at(span, self.path(role, index, name, key), msg))
    }

    /// Shards of the app for a source of `parallelism` instances, starting at one chosen by the
    /// source's name so that the sources of an app spread over its shards.
    fn spread(&self, name: &str, parallelism: u32) -> Vec<ShardId> {
        let mine = &self.plan.apps[self.id as usize].shards;
        let n = mine.len();
        let start = (hash_bytes(format!("{}/{name}", self.app.name.get_ref()).as_bytes()) % n as u64) as usize;
        let p = (parallelism.max(1) as usize).min(n);
        let mut v: Vec<ShardId> = (0..p).map(|i| mine[(start + i) % n]).collect();
        v.sort_unstable();
        v
    }

    fn source(&mut self, index: usize, s: &SourceConfig) -> Res<()> {
        let name = s.name.get_ref().as_str();
        let schema = self.app.schema.to_schema();
        let event_time_field = self.app.event_time.as_ref().and_then(|f| schema.position(f.get_ref()));
        let (factory, shards): (crate::plan::SourceFactory, _) = match &s.kind {
            SourceKind::Generator(g) => {
                let key_field = schema.position(g.key_field.get_ref()).expect("checked by the config");
                let spec = GeneratorSpec {
                    rate: g.rate,
                    events: g.events,
                    duration: g.duration,
                    keys: g.keys,
                    key_field,
                    distribution: match g.distribution {
                        crate::config::Distribution::Uniform => KeyDistribution::Uniform,
                        crate::config::Distribution::Zipf => KeyDistribution::Zipf { s: g.zipf_s },
                    },
                    seed: g.seed,
                    bursts: g.bursts.iter().map(|b| Burst { at: b.at, duration: b.duration, rate: b.rate }).collect(),
                    event_time_field,
                    instance: 0,
                    parallelism: g.parallelism,
                };
                if let Err(e) = Generator::new(spec.clone(), &schema) {
                    return self.err(Role::Source, index, name, "kind", s.name.span(), e.to_string());
                }
                if g.split_events.is_some() && self.config.snapshots.is_some() {
                    let why = "a generator read in splits (`split_events`) has no replay position: which \
                               splits its other instances took is theirs, so a run with [snapshots] could \
                               not resume it exactly; leave `split_events` out, or take no snapshots"
                        .to_owned();
                    return self.err(Role::Source, index, name, "split_events", s.name.span(), why);
                }
                let shards = self.spread(name, g.parallelism);
                let sch = schema.clone();
                // The splits taken so far, shared by this source's instances (a plan runs once).
                let splits = g.split_events.map(|n| (n, Arc::new(std::sync::atomic::AtomicU64::new(0))));
                let f = Arc::new(move |cx: crate::plan::InstanceCx| {
                    let spec = GeneratorSpec { instance: cx.instance, parallelism: cx.parallelism, ..spec.clone() };
                    let g = Generator::new(spec, &sch).expect("checked when the plan was built");
                    SourceInstance::Generator(match &splits {
                        None => g,
                        Some((n, taken)) => g.with_splits(*n, taken.clone()),
                    })
                });
                (f as _, shards)
            }
            SourceKind::File(fs) => {
                let path = PathBuf::from(fs.path.get_ref());
                let format = match fs.format {
                    crate::config::FileFormat::Ndjson => FileFormat::Ndjson,
                    crate::config::FileFormat::Csv => FileFormat::Csv { header: fs.header },
                };
                if let Err(e) = FileReader::open(&path, format, &schema) {
                    return self.err(Role::Source, index, name, "path", fs.path.span(), e.to_string());
                }
                let (sch, rate) = (schema.clone(), fs.rate);
                let f = Arc::new(move |_cx: crate::plan::InstanceCx| {
                    let reader = FileReader::open(&path, format, &sch).expect("opened when the plan was built");
                    SourceInstance::File { reader, rate, produced: 0 }
                });
                (f as _, self.spread(name, 1))
            }
            SourceKind::Tcp(t) if self.config.snapshots.is_some() => {
                let why = "a tcp source cannot replay what it received, so a run with [snapshots] \
                           could not resume it exactly; use a file or redis source, or take no snapshots"
                    .to_owned();
                return self.err(Role::Source, index, name, "kind", s.name.span(), why);
            }
            SourceKind::Tcp(t) => {
                // Bound here, so a bad or busy address is an error at the `listen` key; only by
                // the node that runs the source.
                let shards = self.spread(name, 1);
                let runs_here = self.here.local.contains(&(shards[0] as usize));
                if let Err(e) = dirigo_net::tcp::resolve(t.listen.get_ref()) {
                    return self.err(Role::Source, index, name, "listen", t.listen.span(), e.to_string());
                }
                let listener = match runs_here && self.binding == Binding::Bind {
                    false => std::sync::Mutex::new(None),
                    true => match dirigo_net::tcp::bind(t.listen.get_ref()) {
                        Ok(l) => std::sync::Mutex::new(Some(l)),
                        Err(e) => return self.err(Role::Source, index, name, "listen", t.listen.span(), e.to_string()),
                    },
                };
                let spec = dirigo_net::tcp::IngressSpec {
                    name: format!("{}/{name}", self.app.name.get_ref()),
                    format: t.format,
                    schema: schema.clone(),
                    event_time_field,
                    io: self.config.engine.tcp_io,
                    limits: dirigo_net::tcp::Limits {
                        max_connections: t.max_connections,
                        idle_timeout: t.idle_timeout,
                        max_line: usize::try_from(t.max_line).unwrap_or(usize::MAX),
                        // The config caps it at the wire format's limit, which fits.
                        max_frame: u32::try_from(t.max_frame).unwrap_or(u32::MAX),
                    },
                };
                let f = Arc::new(move |_cx: crate::plan::InstanceCx| {
                    // One instance (parallelism 1): the first call takes the listener.
                    let l = listener.lock().ok().and_then(|mut l| l.take());
                    SourceInstance::Tcp(Box::new(dirigo_net::tcp::TcpIngress::new(l, spec.clone())))
                });
                (f as _, shards)
            }
            SourceKind::Redis(r) => {
                let spec = crate::source::RedisSpec {
                    url: r.url.get_ref().clone(),
                    stream: r.stream.get_ref().clone(),
                    group: r
                        .group
                        .as_ref()
                        .zip(r.consumer.as_ref())
                        .map(|(g, c)| (g.get_ref().clone(), c.get_ref().clone())),
                    start: r.start.clone(),
                    follow: r.follow,
                    name: format!("{}/{name}", self.app.name.get_ref()),
                };
                let sch = schema.clone();
                let f = Arc::new(move |_cx: crate::plan::InstanceCx| {
                    let source = crate::source::RedisSource::new(spec.clone(), sch.clone())
                        .expect("the URL was checked by the config");
                    SourceInstance::Redis(Box::new(source))
                });
                (f as _, self.spread(name, 1))
            }
        };
        self.plan.sources.push(SourcePlan {
            app: self.id,
            name: name.to_owned(),
            factory,
            shards,
            outputs: Vec::new(),
            schema: schema.clone(),
            event_time_field,
            emits: None,
        });
        self.nodes.insert(name.to_owned(), (Upstream::Source(self.plan.sources.len() - 1), schema));
        Ok(())
    }

    fn input(
        &self,
        role: Role,
        index: usize,
        node: &str,
        key: &str,
        input: &Spanned<String>,
    ) -> Res<(Upstream, Schema)> {
        match self.nodes.get(input.get_ref()) {
            Some(v) => Ok(v.clone()),
            None => self.err(
                role,
                index,
                node,
                key,
                input.span(),
                format!("no source or function named `{}`", input.get_ref()),
            ),
        }
    }

    /// Position of `field` in `schema`, or an error at the key that names it.
    fn field(&self, index: usize, node: &str, key: &str, schema: &Schema, field: &Spanned<String>) -> Res<usize> {
        schema.position(field.get_ref()).map_or_else(
            || {
                let known: Vec<&str> = schema.fields().map(|(n, _)| n).collect();
                let msg = format!("no field `{}` in the input; fields are: {}", field.get_ref(), known.join(", "));
                self.err(Role::Function, index, node, key, field.span(), msg)
            },
            Ok,
        )
    }

    fn function(&mut self, index: usize, f: &FunctionConfig) -> Res<()> {
        let name = f.name.get_ref().clone();
        let ins = f.kind.inputs();
        let mut inputs = Vec::new();
        let mut schemas = Vec::new();
        for (port, (key, input)) in ins.iter().enumerate() {
            let (up, schema) = self.input(Role::Function, index, &name, key, input)?;
            inputs.push(Input { port: port as u8, from: up, partition: Partition::Forward });
            schemas.push(schema);
        }
        let built = self.build(index, f, &schemas)?;
        for (i, p) in built.partitions.iter().enumerate() {
            inputs[i].partition = *p;
        }
        let (make, records) = (built.make, self.records);
        if self.config.snapshots.is_some() && !OperatorInstance::Builtin(make(), records).migrates() {
            let why = "with [snapshots], every function's state must be archivable, and a window or join \
                       that allows lateness is not (its fired windows are not kept); set `lateness = \"0s\"` \
                       or take no snapshots"
                .to_owned();
            return self.err(Role::Function, index, &name, "kind", f.name.span(), why);
        }
        let factory = Arc::new(move |_cx: crate::plan::InstanceCx| OperatorInstance::Builtin(make(), records));
        let id = self.add(&name, inputs, factory, schemas[0].clone(), NodeKind::Function, f.max_lessees);
        self.nodes.insert(name, (Upstream::Function(id), built.output));
        Ok(())
    }

    fn add(
        &mut self,
        name: &str,
        inputs: Vec<Input>,
        factory: crate::plan::OperatorFactory,
        input_schema: Schema,
        kind: NodeKind,
        max_lessees: u32,
    ) -> FunctionId {
        self.plan.add_function(FunctionPlan {
            app: self.id,
            name: name.to_owned(),
            factory,
            shards: Vec::new(),
            inputs,
            outputs: Vec::new(),
            input_schema,
            is_sink: kind != NodeKind::Function,
            ignores_records: kind == NodeKind::HeadersOnlySink,
            max_lessees,
            takes: None,
        })
    }

    fn sink(&mut self, index: usize, s: &SinkConfig) -> Res<()> {
        let name = s.name.get_ref().clone();
        let (up, schema) = self.input(Role::Sink, index, &name, "input", &s.input)?;
        let (sch, records) = (schema.clone(), self.records);
        let factory: crate::plan::OperatorFactory = match &s.kind {
            SinkKind::Stdout => {
                Arc::new(move |_| OperatorInstance::Sink(Sink::new(SinkTarget::Stdout(records), sch.clone())))
            }
            SinkKind::Latency => Arc::new(move |_| OperatorInstance::Sink(Sink::new(SinkTarget::Latency, sch.clone()))),
            SinkKind::Null => Arc::new(move |_| OperatorInstance::Sink(Sink::new(SinkTarget::Null, sch.clone()))),
            SinkKind::File { path, format } => {
                let p = PathBuf::from(path.get_ref().replace(NODE_PLACEHOLDER, self.here.node));
                let format = *format;
                let header = match format {
                    crate::config::FileFormat::Ndjson => String::new(),
                    crate::config::FileFormat::Csv => crate::sink::csv_header(&schema),
                };
                self.plan.files.push((p.clone(), header));
                if self.config.snapshots.is_some() {
                    // Output goes to pending parts and reaches the file when its snapshot commits.
                    let resume = self.plan.resume_epoch.clone();
                    Arc::new(move |cx: crate::plan::InstanceCx| {
                        let epoch = resume.load(std::sync::atomic::Ordering::Relaxed) + 1;
                        let sink =
                            Sink::open_committing_file(&p, sch.clone(), format, records, (cx.shard.into(), epoch))
                                .unwrap_or_else(|e| panic!("cannot open sink file {}: {e}", p.display()));
                        OperatorInstance::Sink(sink)
                    })
                } else {
                    Arc::new(move |_| {
                        let sink = Sink::open_file(&p, sch.clone(), format, records)
                            .unwrap_or_else(|e| panic!("cannot open sink file {}: {e}", p.display()));
                        OperatorInstance::Sink(sink)
                    })
                }
            }
            SinkKind::Tcp { listen, format, delivery } => {
                let full = format!("{}/{name}", self.app.name.get_ref());
                if self.binding == Binding::ResolveOnly {
                    if let Err(e) = dirigo_net::tcp::resolve(listen.get_ref()) {
                        return self.err(Role::Sink, index, &name, "listen", listen.span(), e.to_string());
                    }
                    let null = move |_| OperatorInstance::Sink(Sink::new(SinkTarget::Null, sch.clone()));
                    let inputs = vec![Input { port: 0, from: up, partition: Partition::Forward }];
                    self.add(&name, inputs, Arc::new(null), schema, NodeKind::Sink, 0);
                    return Ok(());
                }
                let hub = match dirigo_net::tcp::EgressHub::bind(
                    listen.get_ref(),
                    *format,
                    schema.clone(),
                    full,
                    *delivery,
                ) {
                    Ok(h) => Arc::new(h),
                    Err(e) => return self.err(Role::Sink, index, &name, "listen", listen.span(), e.to_string()),
                };
                self.plan.tcp_sinks.push((self.id, name.clone(), hub.clone()));
                Arc::new(move |_| {
                    OperatorInstance::Sink(Sink::new(SinkTarget::Tcp(hub.instance(), records), sch.clone()))
                })
            }
            SinkKind::Redis { url, stream } => {
                let (url, stream) = (url.get_ref().clone(), stream.get_ref().clone());
                let full = format!("{}/{name}", self.app.name.get_ref());
                // With snapshots: staged per epoch in Redis, committed by the controller once
                // each snapshot is durable (exactly once; see `redis_sink`).
                let staged = self.config.snapshots.is_some();
                if staged {
                    self.plan.redis_sinks.push((url.clone(), stream.clone()));
                }
                Arc::new(move |cx: crate::plan::InstanceCx| {
                    let writer = crate::redis_sink::RedisSinkWriter::new(&url, &stream, &sch, full.clone())
                        .unwrap_or_else(|e| panic!("cannot start the redis sink {full}: {e}"));
                    let writer = if staged { writer.staged(cx.shard.into()) } else { writer };
                    OperatorInstance::Sink(Sink::new(SinkTarget::Redis(writer, records), sch.clone()))
                })
            }
        };
        let inputs = vec![Input { port: 0, from: up, partition: Partition::Forward }];
        let kind = match s.kind {
            SinkKind::Latency | SinkKind::Null => NodeKind::HeadersOnlySink,
            _ => NodeKind::Sink,
        };
        self.add(&name, inputs, factory, schema, kind, 0);
        Ok(())
    }
}

/// What a node added to the plan is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeKind {
    Function,
    Sink,
    /// A sink that reads its records' headers alone (latency, null: `FunctionPlan::ignores_records`).
    HeadersOnlySink,
}

/// A built-in function compiled once: how to make an instance, how its inputs are partitioned,
/// and its output schema.
struct Built {
    make: Arc<dyn Fn() -> Builtin + Send + Sync>,
    partitions: Vec<Partition>,
    output: Schema,
}

impl AppCompiler<'_> {
    fn build(&self, index: usize, f: &FunctionConfig, inputs: &[Schema]) -> Res<Built> {
        let name = f.name.get_ref().as_str();
        let input = &inputs[0];
        let fail = |key: &str, span: std::ops::Range<usize>, e: dirigo_actors::builtins::BuildError| -> ConfigError {
            self.config.error_at(span, self.path(Role::Function, index, name, key), e.to_string())
        };
        let keyed = |key: &Option<Spanned<String>>| -> Res<Partition> {
            match key {
                Some(k) => Ok(Partition::ByField(self.field(index, name, "key", input, k)?, self.records)),
                None => Ok(Partition::ByKey),
            }
        };
        match &f.kind {
            FunctionKind::Map { fields, .. } => {
                let pairs: Vec<(String, String)> =
                    fields.iter().map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone())).collect();
                let span = fields.first().map(|(_, v)| v.span()).unwrap_or(f.name.span());
                let (_, out) = Map::new(input, &pairs).map_err(|e| fail("fields", span, e))?;
                let sch = input.clone();
                Ok(built(
                    move || Builtin::Map(Map::new(&sch, &pairs).expect("checked").0),
                    vec![Partition::Forward],
                    out,
                ))
            }
            FunctionKind::Filter { predicate, .. } => {
                let (_, out) =
                    Filter::new(input, predicate.get_ref()).map_err(|e| fail("predicate", predicate.span(), e))?;
                let (sch, p) = (input.clone(), predicate.get_ref().clone());
                Ok(built(
                    move || Builtin::Filter(Filter::new(&sch, &p).expect("checked").0),
                    vec![Partition::Forward],
                    out,
                ))
            }
            FunctionKind::KeyBy { key, .. } => {
                self.field(index, name, "key", input, key)?;
                let (_, out) = KeyBy::new(input, key.get_ref()).map_err(|e| fail("key", key.span(), e))?;
                let (sch, k) = (input.clone(), key.get_ref().clone());
                Ok(built(
                    move || Builtin::KeyBy(KeyBy::new(&sch, &k).expect("checked").0),
                    vec![Partition::Forward],
                    out,
                ))
            }
            FunctionKind::Count { key, .. } => self.aggregate(index, f, input, AggOp::Count, None, key, keyed(key)?),
            FunctionKind::Sum(a) => self.aggregate(index, f, input, AggOp::Sum, Some(&a.field), &a.key, keyed(&a.key)?),
            FunctionKind::Min(a) => self.aggregate(index, f, input, AggOp::Min, Some(&a.field), &a.key, keyed(&a.key)?),
            FunctionKind::Max(a) => self.aggregate(index, f, input, AggOp::Max, Some(&a.field), &a.key, keyed(&a.key)?),
            FunctionKind::Avg(a) => self.aggregate(index, f, input, AggOp::Avg, Some(&a.field), &a.key, keyed(&a.key)?),
            FunctionKind::Window(w) => {
                let part = keyed(&w.key)?;
                let spec = window_spec(w.window.get_ref());
                let agg = w.aggregate.get_ref();
                let op = agg_op(agg.op);
                if let Some(field) = &agg.field {
                    self.field(index, name, "aggregate", input, field)?;
                }
                let field = agg.field.as_ref().map(|s| s.get_ref().clone());
                let key = w.key.as_ref().map(|s| s.get_ref().clone());
                let (_, out) = Window::new(input, spec, op, field.as_deref(), key.as_deref())
                    .map_err(|e| fail("aggregate", w.aggregate.span(), e))?;
                let sch = input.clone();
                let make = move || {
                    // Every edge into it partitions by its key field (`part`).
                    let w = Window::new(&sch, spec, op, field.as_deref(), key.as_deref()).expect("checked").0;
                    Builtin::Window(w.routed_by_key())
                };
                Ok(built(make, vec![part], out))
            }
            FunctionKind::Join(j) => {
                let (l, r) = (&inputs[0], &inputs[1]);
                let lp = self.field(index, name, "left_key", l, &j.left_key)?;
                let rp = self.field(index, name, "right_key", r, &j.right_key)?;
                let spec = window_spec(j.window.get_ref());
                let (lk, rk) = (j.left_key.get_ref().clone(), j.right_key.get_ref().clone());
                let (_, out) = Join::new(l, r, &lk, &rk, spec).map_err(|e| fail("right_key", j.right_key.span(), e))?;
                let (ls, rs) = (l.clone(), r.clone());
                let make = move || Builtin::Join(Join::new(&ls, &rs, &lk, &rk, spec).expect("checked").0);
                Ok(built(make, vec![Partition::ByField(lp, self.records), Partition::ByField(rp, self.records)], out))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn aggregate(
        &self,
        index: usize,
        f: &FunctionConfig,
        input: &Schema,
        op: AggOp,
        field: Option<&Spanned<String>>,
        key: &Option<Spanned<String>>,
        part: Partition,
    ) -> Res<Built> {
        let name = f.name.get_ref().as_str();
        if let Some(fl) = field {
            self.field(index, name, "field", input, fl)?;
        }
        let field = field.map(|s| s.get_ref().clone());
        let key_name = key.as_ref().map(|s| s.get_ref().clone());
        let span = f.name.span();
        let (_, out) = Aggregate::new(input, op, field.as_deref(), key_name.as_deref())
            .map_err(|e| self.config.error_at(span, self.path(Role::Function, index, name, "field"), e.to_string()))?;
        let sch = input.clone();
        let make = move || {
            // Every edge into it partitions by its key field (`part`).
            let agg = Aggregate::new(&sch, op, field.as_deref(), key_name.as_deref()).expect("checked").0;
            Builtin::Aggregate(agg.routed_by_key())
        };
        Ok(built(make, vec![part], out))
    }
}

fn built(make: impl Fn() -> Builtin + Send + Sync + 'static, partitions: Vec<Partition>, output: Schema) -> Built {
    Built { make: Arc::new(make), partitions, output }
}

fn agg_op(op: AggregateOp) -> AggOp {
    AggOp::parse(op.name()).expect("config ops are the built-in ops")
}

fn window_spec(w: &crate::config::WindowSpec) -> Spec {
    let size_ms = w.size.as_millis() as u64;
    let kind = match w.window_type {
        WindowType::Tumbling => WindowKind::Tumbling { size_ms },
        WindowType::Sliding => {
            WindowKind::Sliding { size_ms, slide_ms: w.slide.map_or(size_ms, |s| s.as_millis() as u64) }
        }
    };
    Spec { kind, lateness_ms: w.lateness.as_millis() as u64 }
}

/// Shards an app asks for: its `cores`, else its widest source's parallelism.
fn app_cores(app: &AppConfig) -> usize {
    let widest = app.sources.iter().map(|s| match &s.kind {
        SourceKind::Generator(g) => g.parallelism,
        _ => 1,
    });
    match app.cores {
        0 => widest.max().unwrap_or(1) as usize,
        cores => cores as usize,
    }
}

/// Events per second an app's sources declare; None when one has no bound (a generator or file
/// at rate 0), 0 for sockets (their clients decide). A generator declares its peak, its bursts
/// included: a source stays on the shard it starts on, so two apps whose bursts that shard
/// could not generate together must not be packed onto it for their quiet rates.
fn declared_rate(app: &AppConfig) -> Option<u64> {
    app.sources.iter().try_fold(0u64, |sum, s| match &s.kind {
        SourceKind::Generator(g) if g.rate > 0 => Some(sum + g.peak_rate()),
        SourceKind::File(f) if f.rate > 0 => Some(sum + f.rate),
        SourceKind::Tcp(_) => Some(sum),
        _ => None,
    })
}

/// Replace every sink of `plan` by a collector (tests, embedding programs): outputs arrive on
/// the returned receiver, named by sink; latency is still measured.
pub fn collect_sinks(plan: &mut Plan) -> crate::sink::Collector {
    let (tx, rx) = crate::sink::Collector::new();
    let sinks: Vec<usize> = (0..plan.functions.len()).filter(|&f| plan.functions[f].is_sink).collect();
    for f in sinks {
        let (name, tx) = (plan.functions[f].name.clone(), tx.clone());
        let schema = plan.functions[f].input_schema.clone();
        let collect =
            move |_| OperatorInstance::Sink(Sink::new(SinkTarget::collect(&name, tx.clone()), schema.clone()));
        plan.replace_factory(f as FunctionId, Arc::new(collect));
    }
    plan.files.clear();
    rx
}
