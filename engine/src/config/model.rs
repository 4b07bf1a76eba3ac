//! The typed result: [`Config`], each app with its sources, functions and sinks, the cluster.
//!
//! Each kind has exactly its own fields. Names and expressions are `Spanned` so later errors can
//! point at them.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use dirigo_actors::record::{FieldType, Schema};
use serde::{Serialize, Serializer};
use toml::Spanned;

use super::defaults::{Defaults, EngineConfig};
use super::error::{ConfigError, Source};
use super::path::{KeyPath, Role};
use super::values::{
    ser_duration, ser_opt_duration, ser_pairs, ser_size, AggregateOp, Delivery, Distribution, FileFormat, WindowType,
    WireFormat,
};

/// A whole, checked configuration; made by [`Config::load`] and [`Config::parse`] (in `config/mod.rs`).
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub engine: EngineConfig,
    /// The per-app and per-node defaults in force (already applied to `apps`).
    #[serde(skip)]
    pub defaults: Defaults,
    #[serde(rename = "app")]
    pub apps: Vec<AppConfig>,
    /// Link settings between nodes.
    pub cluster: ClusterConfig,
    /// The nodes of a cluster, in order; empty: a single node.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeConfig>,
    /// The admin endpoint of `dirigo serve`.
    pub admin: AdminConfig,
    /// `[snapshots]`: None when no `dir` is set (no snapshots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<SnapshotsConfig>,
    /// The file the config came from, for errors found later.
    #[serde(skip)]
    pub(super) source: Source,
}

impl Config {
    /// The node named `id` (`dirigo run --node`), or an error listing the known ids.
    pub fn node(&self, id: &str) -> Result<&NodeConfig, UnknownNode> {
        self.nodes.iter().find(|n| n.id.get_ref() == id).ok_or_else(|| unknown_node(&self.nodes, id))
    }

    /// Shards of the whole cluster: the sum of the nodes' shards, else `[engine] shards`.
    pub fn cluster_shards(&self) -> usize {
        match self.nodes.is_empty() {
            true => self.engine.shards,
            false => self.nodes.iter().map(|n| n.shards).sum(),
        }
    }

    /// The file this config was parsed from: pass it to [`ConfigError::at`].
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// A semantic error at a spanned value of this config (see [`ConfigError::at`]).
    pub fn error_at(&self, span: Range<usize>, key: KeyPath, message: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.source, span, key, message)
    }

    /// Each app with its nodes in topological order (every node after its inputs).
    pub fn apps_in_topological_order(&self) -> impl Iterator<Item = (&AppConfig, Vec<(NodeId, Node<'_>)>)> + '_ {
        self.apps.iter().map(|app| (app, app.nodes_in_order().collect()))
    }

    /// The config as TOML; parsing it again gives the same config.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

/// One `[[app]]`: a DAG of functions between sources and sinks, with a latency SLO.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AppConfig {
    pub name: Spanned<String>,
    /// End-to-end latency target.
    #[serde(serialize_with = "ser_duration")]
    pub slo: Duration,
    /// Share under the `fair` policy.
    pub weight: u32,
    /// Shards the app starts on; 0 = its widest source's parallelism.
    pub cores: u32,
    /// Most shards its key groups may spread to; 0 = every shard of the node.
    pub max_cores: u32,
    /// Record fields in position order.
    pub schema: SchemaConfig,
    /// Field carrying event time in ms; `None` = ingress time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_time: Option<Spanned<String>>,
    /// Bounded out-of-orderness subtracted from the max event time seen.
    #[serde(serialize_with = "ser_duration")]
    pub watermark_delay: Duration,
    /// A source emits a watermark every this many events.
    pub watermark_every: u64,
    #[serde(rename = "source")]
    pub sources: Vec<SourceConfig>,
    #[serde(rename = "function")]
    pub functions: Vec<FunctionConfig>,
    #[serde(rename = "sink")]
    pub sinks: Vec<SinkConfig>,
    /// Every node, sources first, each after all of its inputs.
    #[serde(skip)]
    pub(crate) order: Vec<NodeId>,
}

/// A node of an app by role and index in its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId {
    pub role: Role,
    pub index: usize,
}

/// A node of an app, borrowed.
#[derive(Clone, Copy, Debug)]
pub enum Node<'a> {
    Source(&'a SourceConfig),
    Function(&'a FunctionConfig),
    Sink(&'a SinkConfig),
}

impl AppConfig {
    /// Every node, each after all of its inputs (sources, then functions, then sinks).
    pub fn nodes_in_order(&self) -> impl Iterator<Item = (NodeId, Node<'_>)> + '_ {
        self.order.iter().map(|&id| (id, self.node(id)))
    }

    /// The node with an id.
    pub fn node(&self, id: NodeId) -> Node<'_> {
        match id.role {
            Role::Source => Node::Source(&self.sources[id.index]),
            Role::Function => Node::Function(&self.functions[id.index]),
            Role::Sink => Node::Sink(&self.sinks[id.index]),
        }
    }
}

/// The schema as written, in position order, with spans.
#[derive(Clone, Debug, PartialEq)]
pub struct SchemaConfig {
    pub fields: Vec<SchemaField>,
}

/// One `name = "type"` entry of a schema.
#[derive(Clone, Debug, PartialEq)]
pub struct SchemaField {
    pub name: Spanned<String>,
    pub ty: Spanned<FieldType>,
}

impl SchemaConfig {
    /// The runtime schema.
    pub fn to_schema(&self) -> Schema {
        let fields = self.fields.iter();
        Schema::new(fields.map(|f| (f.name.get_ref().clone(), *f.ty.get_ref())).collect())
    }

    /// The field with a name.
    pub fn field(&self, name: &str) -> Option<&SchemaField> {
        self.fields.iter().find(|f| f.name.get_ref() == name)
    }
}

impl Serialize for SchemaConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let pairs = self.fields.iter();
        ser_pairs(pairs.map(|f| (f.name.get_ref().as_str(), f.ty.get_ref().name())), s)
    }
}

/// One `[[app.source]]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceConfig {
    pub name: Spanned<String>,
    #[serde(flatten)]
    pub kind: SourceKind,
}

/// What a source reads, with the keys of that kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceKind {
    Generator(GeneratorSource),
    File(FileSource),
    Tcp(TcpSource),
    Redis(RedisSource),
}

/// Entries of a Redis stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RedisSource {
    /// `redis://host:port/db`.
    pub url: Spanned<String>,
    pub stream: Spanned<String>,
    /// Consumer group and consumer name (both or neither); without: plain XREAD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<Spanned<String>>,
    /// Read the entries after this id: `0-0` the whole stream, `$` only new ones.
    pub start: String,
    /// Wait for new entries (true), or end at the end of the stream.
    pub follow: bool,
}

/// A seeded synthetic workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GeneratorSource {
    /// Events per second; 0 = as fast as possible.
    pub rate: u64,
    /// Stop after this many events (with `duration`: whichever comes first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// Stop after this long; neither `events` nor `duration` = run until stopped.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_duration")]
    pub duration: Option<Duration>,
    /// Number of distinct keys.
    pub keys: u64,
    /// The field that carries the key (default: the first `u64` field).
    pub key_field: Spanned<String>,
    pub distribution: Distribution,
    /// Zipf exponent.
    pub zipf_s: f64,
    pub seed: u64,
    /// Generator instances.
    pub parallelism: u32,
    /// Read the stream in splits of this many events, each instance taking the next split when
    /// it has read one (None: instance `k` of `p` makes every `p`-th event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_events: Option<u64>,
    /// Periods at another rate.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bursts: Vec<Burst>,
}

impl GeneratorSource {
    /// Its highest rate: the base rate or a burst's, whichever is higher.
    pub fn peak_rate(&self) -> u64 {
        self.bursts.iter().map(|b| b.rate).fold(self.rate, u64::max)
    }
}

/// A period during which a generator runs at another rate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Burst {
    /// Start, from the source's start.
    #[serde(serialize_with = "ser_duration")]
    pub at: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
    /// Events per second during the burst.
    pub rate: u64,
}

/// Records from a file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FileSource {
    pub path: Spanned<String>,
    pub format: FileFormat,
    /// A CSV file starts with a header line.
    pub header: bool,
    /// Events per second; 0 = as fast as possible.
    pub rate: u64,
}

/// Records from TCP clients.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TcpSource {
    /// Address to listen on.
    pub listen: Spanned<String>,
    pub format: WireFormat,
    /// Open connections at most; one more is answered with an error and closed.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is answered with an error and closed.
    #[serde(serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    /// Longest NDJSON line, in bytes.
    #[serde(serialize_with = "ser_size")]
    pub max_line: u64,
    /// Largest binary frame payload, in bytes (at most 1GiB).
    #[serde(serialize_with = "ser_size")]
    pub max_frame: u64,
}

/// One `[[app.function]]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FunctionConfig {
    pub name: Spanned<String>,
    /// Lessees per actor (dual-mode scaling); 0 = off.
    pub max_lessees: u32,
    #[serde(flatten)]
    pub kind: FunctionKind,
}

/// What a function computes, with the keys of that kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FunctionKind {
    Map {
        input: Spanned<String>,
        /// Output fields in schema order: name and expression.
        #[serde(serialize_with = "ser_map_fields")]
        fields: Vec<(Spanned<String>, Spanned<String>)>,
    },
    Filter {
        input: Spanned<String>,
        predicate: Spanned<String>,
    },
    KeyBy {
        input: Spanned<String>,
        key: Spanned<String>,
    },
    Count {
        input: Spanned<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<Spanned<String>>,
    },
    Sum(Aggregate),
    Min(Aggregate),
    Max(Aggregate),
    Avg(Aggregate),
    Window(WindowFunction),
    Join(JoinFunction),
}

fn ser_map_fields<S: Serializer>(fields: &[(Spanned<String>, Spanned<String>)], s: S) -> Result<S::Ok, S::Error> {
    let pairs = fields.iter();
    ser_pairs(pairs.map(|(k, v)| (k.get_ref().as_str(), v.get_ref().as_str())), s)
}

impl FunctionKind {
    /// The inputs this function reads, with their keys (`input`, or a join's `left`, `right`).
    pub fn inputs(&self) -> Vec<(&'static str, &Spanned<String>)> {
        match self {
            FunctionKind::Map { input, .. }
            | FunctionKind::Filter { input, .. }
            | FunctionKind::KeyBy { input, .. }
            | FunctionKind::Count { input, .. } => vec![("input", input)],
            FunctionKind::Sum(a) | FunctionKind::Min(a) | FunctionKind::Max(a) => {
                vec![("input", &a.input)]
            }
            FunctionKind::Avg(a) => vec![("input", &a.input)],
            FunctionKind::Window(w) => vec![("input", &w.input)],
            FunctionKind::Join(j) => vec![("left", &j.left), ("right", &j.right)],
        }
    }
}

/// A keyed running aggregate of one field (`sum`, `min`, `max`, `avg`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Aggregate {
    pub input: Spanned<String>,
    /// Group by this field; `None` = one global group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Spanned<String>>,
    pub field: Spanned<String>,
}

/// An aggregate per window (and per key).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WindowFunction {
    pub input: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Spanned<String>>,
    pub window: Spanned<WindowSpec>,
    pub aggregate: Spanned<AggregateSpec>,
}

/// A windowed equi-join of two inputs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JoinFunction {
    pub left: Spanned<String>,
    pub right: Spanned<String>,
    pub left_key: Spanned<String>,
    pub right_key: Spanned<String>,
    pub window: Spanned<WindowSpec>,
}

/// `window = { type, size, slide, lateness }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WindowSpec {
    #[serde(rename = "type")]
    pub window_type: WindowType,
    #[serde(serialize_with = "ser_duration")]
    pub size: Duration,
    /// Sliding windows only.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_duration")]
    pub slide: Option<Duration>,
    /// How long after its end a window still accepts late events.
    #[serde(serialize_with = "ser_duration")]
    pub lateness: Duration,
}

/// `aggregate = { op, field }`; `count` takes no field.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AggregateSpec {
    pub op: AggregateOp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<Spanned<String>>,
}

/// One `[[app.sink]]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SinkConfig {
    pub name: Spanned<String>,
    pub input: Spanned<String>,
    #[serde(flatten)]
    pub kind: SinkKind,
}

/// Where a sink writes, with the keys of that kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkKind {
    Stdout,
    File {
        path: Spanned<String>,
        format: FileFormat,
    },
    /// Records end-to-end latency against the app's SLO.
    Latency,
    Null,
    Tcp {
        listen: Spanned<String>,
        format: WireFormat,
        /// Block (backpressure, nothing dropped) or lossy (drops counted).
        delivery: Delivery,
    },
    /// Appended to a Redis stream.
    Redis {
        url: Spanned<String>,
        stream: Spanned<String>,
    },
}

/// `[cluster]`: how links between nodes are set up and kept.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterConfig {
    /// How long a node waits for all its links at startup.
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// How long a dropped link is retried before the node gives up.
    #[serde(serialize_with = "ser_duration")]
    pub reconnect_timeout: Duration,
    /// Where each node reads the secret its links prove (`None`: not set; only a single node
    /// may leave it out). Read when a node starts: [`Config::cluster_secret`].
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretSource>,
}

/// Where the cluster secret is read from: `[cluster] secret_file` or `secret_env`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum SecretSource {
    /// A file whose bytes are the secret.
    #[serde(rename = "secret_file")]
    File(Spanned<String>),
    /// An environment variable whose value is the secret.
    #[serde(rename = "secret_env")]
    Env(Spanned<String>),
}

impl SecretSource {
    /// The key it was set with.
    pub fn key(&self) -> &'static str {
        match self {
            SecretSource::File(_) => "secret_file",
            SecretSource::Env(_) => "secret_env",
        }
    }

    /// The file name or the variable name, as written.
    pub fn name(&self) -> &Spanned<String> {
        match self {
            SecretSource::File(name) | SecretSource::Env(name) => name,
        }
    }
}

/// One node of the cluster, checked.
#[derive(Clone, Debug, Serialize)]
pub struct NodeConfig {
    /// The node's name, given to `dirigo run --node`.
    pub id: Spanned<String>,
    /// `host:port` the node listens on for links from its peers.
    pub address: Spanned<String>,
    /// Number of shards the node runs.
    pub shards: usize,
    /// The node's first global shard id.
    #[serde(skip)]
    pub first_shard: usize,
    /// The address resolved.
    #[serde(skip)]
    pub socket: SocketAddr,
}

impl NodeConfig {
    /// The global ids of this node's shards.
    pub fn shard_range(&self) -> Range<usize> {
        self.first_shard..self.first_shard + self.shards
    }
}

/// Why `--node` names no node of the config.
pub fn unknown_node(nodes: &[NodeConfig], id: &str) -> UnknownNode {
    let known = nodes.iter().map(|n| n.id.get_ref().clone()).collect();
    UnknownNode { id: id.to_owned(), known }
}

/// `--node ID` names no node of the config.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--node {id}: {}", match known.is_empty() {
    true => "the config lists no [[node]]; run it without --node".to_owned(),
    false => format!("no such node; known: {}", known.join(", ")),
})]
pub struct UnknownNode {
    /// The id asked for.
    pub id: String,
    /// The ids of the config's nodes (none: the config is not a cluster).
    pub known: Vec<String>,
}

/// `[snapshots]` resolved: present only when `dir` is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotsConfig {
    /// Where the snapshot directories go (relative: from the working directory).
    pub dir: std::path::PathBuf,
    /// How often a snapshot is taken.
    #[serde(serialize_with = "ser_duration")]
    pub every: Duration,
    /// How many complete snapshots are kept (the newest).
    pub keep: usize,
}

/// `[admin]`: where `dirigo serve` listens for its admin requests.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdminConfig {
    /// `host:port` as written.
    pub listen: toml::Spanned<String>,
    /// The address it names.
    #[serde(skip)]
    pub socket: std::net::SocketAddr,
    /// Largest request body accepted (bytes).
    #[serde(serialize_with = "super::values::ser_size")]
    pub max_body: u64,
    /// Where the bearer token is read (None: no token; only on loopback).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenSource>,
}

/// Where the admin token is read from: `[admin] token_file` or `token_env`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum TokenSource {
    #[serde(rename = "token_file")]
    File(toml::Spanned<String>),
    #[serde(rename = "token_env")]
    Env(toml::Spanned<String>),
}

impl TokenSource {
    pub(super) fn key_and_name(&self) -> (&'static str, &toml::Spanned<String>) {
        match self {
            TokenSource::File(n) => ("token_file", n),
            TokenSource::Env(n) => ("token_env", n),
        }
    }

    /// The token, read now (trailing whitespace dropped); an error names the file or variable.
    pub fn read(&self) -> Result<Vec<u8>, String> {
        let (key, name) = self.key_and_name();
        let name = name.get_ref();
        let mut bytes = match self {
            TokenSource::Env(_) => std::env::var(name)
                .map_err(|_| format!("[admin] {key}: environment variable {name} is not set"))?
                .into_bytes(),
            TokenSource::File(_) => {
                std::fs::read(name).map_err(|e| format!("[admin] {key}: cannot read {name}: {e}"))?
            }
        };
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(format!("[admin] {key}: the token in {name} is empty"));
        }
        Ok(bytes)
    }
}
