//! The config as written: each file's tables, flat and spanned, every optional key an `Option`.
//!
//! Deserialized strictly (`deny_unknown_fields`); `resolve` and the parts turn it into the model.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::defaults::{DefaultsLayer, EngineLayer};
use super::values::{names, AggregateOp, Distribution, HumanDuration, HumanSize, OrderedTable, WindowType};

/// A whole file: `[engine]`, `[defaults.*]`, `[[app]]`, `[cluster]`, `[[node]]`, `[snapshots]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigDoc {
    #[serde(default)]
    pub engine: EngineLayer,
    #[serde(default)]
    pub defaults: DefaultsLayer,
    #[serde(default)]
    pub app: Vec<Spanned<AppDoc>>,
    #[serde(default)]
    pub cluster: ClusterLayer,
    #[serde(default)]
    pub node: Vec<Spanned<NodeDoc>>,
    #[serde(default)]
    pub admin: AdminLayer,
    #[serde(default)]
    pub snapshots: super::snapshots::SnapshotsLayer,
}

/// One `[[app]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppDoc {
    pub name: Spanned<String>,
    pub slo: Spanned<HumanDuration>,
    pub weight: Option<Spanned<u32>>,
    pub cores: Option<Spanned<u32>>,
    pub max_cores: Option<Spanned<u32>>,
    pub schema: Spanned<OrderedTable>,
    pub event_time: Option<Spanned<String>>,
    pub watermark_delay: Option<Spanned<HumanDuration>>,
    pub watermark_every: Option<Spanned<u64>>,
    #[serde(default)]
    pub source: Vec<Spanned<SourceDoc>>,
    #[serde(default)]
    pub function: Vec<Spanned<FunctionDoc>>,
    #[serde(default)]
    pub sink: Vec<Spanned<SinkDoc>>,
}

names! {
    /// Kinds of source.
    SourceKindName { Generator = "generator", File = "file", Tcp = "tcp", Redis = "redis" }
}

names! {
    /// Kinds of function.
    FunctionKindName {
        Map = "map", Filter = "filter", KeyBy = "key_by", Count = "count", Sum = "sum",
        Min = "min", Max = "max", Avg = "avg", Window = "window", Join = "join",
    }
}

names! {
    /// Kinds of sink.
    SinkKindName { Stdout = "stdout", File = "file", Latency = "latency", Null = "null", Tcp = "tcp", Redis = "redis" }
}

/// One `[[app.source]]`: the union of every kind's keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceDoc {
    pub name: Spanned<String>,
    pub kind: Spanned<SourceKindName>,
    pub rate: Option<Spanned<u64>>,
    pub events: Option<Spanned<u64>>,
    pub duration: Option<Spanned<HumanDuration>>,
    pub keys: Option<Spanned<u64>>,
    pub key_field: Option<Spanned<String>>,
    pub distribution: Option<Spanned<Distribution>>,
    pub zipf_s: Option<Spanned<f64>>,
    pub seed: Option<Spanned<u64>>,
    pub parallelism: Option<Spanned<u32>>,
    pub split_events: Option<Spanned<u64>>,
    pub bursts: Option<Spanned<Vec<Spanned<BurstDoc>>>>,
    pub path: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub header: Option<Spanned<bool>>,
    pub listen: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<usize>>,
    pub idle_timeout: Option<Spanned<HumanDuration>>,
    pub max_line: Option<Spanned<HumanSize>>,
    pub max_frame: Option<Spanned<HumanSize>>,
    pub url: Option<Spanned<String>>,
    pub stream: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub consumer: Option<Spanned<String>>,
    pub start: Option<Spanned<String>>,
    pub follow: Option<Spanned<bool>>,
}

/// One `bursts = [{ at, duration, rate }]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BurstDoc {
    pub at: Spanned<HumanDuration>,
    pub duration: Spanned<HumanDuration>,
    pub rate: Spanned<u64>,
}

/// One `[[app.function]]`: the union of every kind's keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FunctionDoc {
    pub name: Spanned<String>,
    pub kind: Spanned<FunctionKindName>,
    pub input: Option<Spanned<String>>,
    pub left: Option<Spanned<String>>,
    pub right: Option<Spanned<String>>,
    pub fields: Option<Spanned<OrderedTable>>,
    pub predicate: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub field: Option<Spanned<String>>,
    pub window: Option<Spanned<WindowDoc>>,
    pub aggregate: Option<Spanned<AggregateDoc>>,
    pub left_key: Option<Spanned<String>>,
    pub right_key: Option<Spanned<String>>,
    pub max_lessees: Option<Spanned<u32>>,
}

/// `window = { type, size, slide, lateness }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowDoc {
    #[serde(rename = "type")]
    pub kind: Spanned<WindowType>,
    pub size: Spanned<HumanDuration>,
    pub slide: Option<Spanned<HumanDuration>>,
    pub lateness: Option<Spanned<HumanDuration>>,
}

/// `aggregate = { op, field }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AggregateDoc {
    pub op: Spanned<AggregateOp>,
    pub field: Option<Spanned<String>>,
}

/// One `[[app.sink]]`: the union of every kind's keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SinkDoc {
    pub name: Spanned<String>,
    pub kind: Spanned<SinkKindName>,
    pub input: Spanned<String>,
    pub path: Option<Spanned<String>>,
    pub listen: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub stream: Option<Spanned<String>>,
    pub delivery: Option<Spanned<String>>,
}

/// `[cluster]` as written in one file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterLayer {
    pub connect_timeout: Option<Spanned<HumanDuration>>,
    pub reconnect_timeout: Option<Spanned<HumanDuration>>,
    /// A file holding the cluster secret (the secret itself is never in the config).
    pub secret_file: Option<Spanned<String>>,
    /// An environment variable holding the cluster secret.
    pub secret_env: Option<Spanned<String>>,
}

impl ClusterLayer {
    /// `self`'s keys, then `base`'s.
    pub(crate) fn over(self, base: Self) -> Self {
        ClusterLayer {
            connect_timeout: self.connect_timeout.or(base.connect_timeout),
            reconnect_timeout: self.reconnect_timeout.or(base.reconnect_timeout),
            secret_file: self.secret_file.or(base.secret_file),
            secret_env: self.secret_env.or(base.secret_env),
        }
    }
}

/// `[admin]` as written in one file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminLayer {
    pub listen: Option<Spanned<String>>,
    pub max_body: Option<Spanned<HumanSize>>,
    /// A file holding the admin token (the token itself is never in the config).
    pub token_file: Option<Spanned<String>>,
    /// An environment variable holding the admin token.
    pub token_env: Option<Spanned<String>>,
}

impl AdminLayer {
    /// `self`'s keys, then `base`'s.
    pub(crate) fn over(self, base: Self) -> Self {
        AdminLayer {
            listen: self.listen.or(base.listen),
            max_body: self.max_body.or(base.max_body),
            token_file: self.token_file.or(base.token_file),
            token_env: self.token_env.or(base.token_env),
        }
    }
}

/// One `[[node]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeDoc {
    pub id: Spanned<String>,
    pub address: Spanned<String>,
    pub shards: Spanned<usize>,
}

/// The optional keys present in a node, with their value spans, in declaration order.
macro_rules! present {
    ($doc:expr; $($key:ident),+) => {{
        let mut keys: Vec<(&'static str, Range<usize>)> = Vec::new();
        $(if let Some(v) = &$doc.$key { keys.push((stringify!($key), v.span())); })+
        keys
    }};
}

impl SourceDoc {
    /// Every kind-specific key present.
    pub fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        present!(self; rate, events, duration, keys, key_field, distribution, zipf_s, seed,
            parallelism, split_events, bursts, path, format, header, listen, max_connections, idle_timeout, max_line,
            max_frame, url, stream, group, consumer, start, follow)
    }
}

impl FunctionDoc {
    /// Every kind-specific key present.
    pub fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        present!(self; input, left, right, fields, predicate, key, field, window, aggregate,
            left_key, right_key)
    }
}

impl SinkDoc {
    /// Every kind-specific key present.
    pub fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        present!(self; path, listen, format, url, stream, delivery)
    }
}

/// The keys each kind takes besides `name` and `kind` (and a sink's `input`, a function's
/// `max_lessees`).
pub(crate) fn source_keys(kind: SourceKindName) -> &'static [&'static str] {
    match kind {
        SourceKindName::Generator => &[
            "rate",
            "events",
            "duration",
            "keys",
            "key_field",
            "distribution",
            "zipf_s",
            "seed",
            "parallelism",
            "split_events",
            "bursts",
        ],
        SourceKindName::File => &["path", "format", "header", "rate"],
        SourceKindName::Tcp => &["listen", "format", "max_connections", "idle_timeout", "max_line", "max_frame"],
        SourceKindName::Redis => &["url", "stream", "group", "consumer", "start", "follow"],
    }
}

/// See [`source_keys`].
pub(crate) fn function_keys(kind: FunctionKindName) -> &'static [&'static str] {
    use FunctionKindName as K;
    match kind {
        K::Map => &["input", "fields"],
        K::Filter => &["input", "predicate"],
        K::KeyBy => &["input", "key"],
        K::Count => &["input", "key"],
        K::Sum | K::Min | K::Max | K::Avg => &["input", "key", "field"],
        K::Window => &["input", "key", "window", "aggregate"],
        K::Join => &["left", "right", "left_key", "right_key", "window"],
    }
}

/// See [`source_keys`].
pub(crate) fn sink_keys(kind: SinkKindName) -> &'static [&'static str] {
    match kind {
        SinkKindName::File => &["path", "format"],
        SinkKindName::Tcp => &["listen", "format", "delivery"],
        SinkKindName::Redis => &["url", "stream"],
        SinkKindName::Stdout | SinkKindName::Latency | SinkKindName::Null => &[],
    }
}
