//! Typed configuration: one TOML file parsed strictly and merged over `configs/default.toml`.
//!
//! - [`Config::parse`] / [`Config::load`]: the whole tree, or a [`ConfigError`] that reads
//!   `file:line:col: key path: what is wrong`.
//! - `defaults`: `[engine]` and `[defaults.*]`, whose every value comes from the embedded
//!   `configs/default.toml`; a user's tables override it key by key.
//! - `model`: apps, sources, functions and sinks; names, inputs, fields and expressions are
//!   [`toml::Spanned`] so a later stage reports its errors at them with [`ConfigError::at`].
//!
//! ```
//! use dirigo_engine::config::{Config, Policy};
//! let config = Config::parse("[engine]\npolicy = \"edf\"\n", "inline.toml").unwrap();
//! assert_eq!(config.engine.policy, Policy::Edf);
//! assert!(config.apps.is_empty());
//! ```

mod check;
mod cluster;
mod defaults;
mod doc;
mod error;
mod functions;
mod graph;
mod model;
mod outline;
mod path;
mod resolve;
mod sinks;
mod sources;
mod values;

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

pub use defaults::{
    AppDefaults, Defaults, EngineConfig, FileSinkDefaults, FileSourceDefaults, FunctionDefaults, GeneratorDefaults,
    SinkDefaults, SourceDefaults, TcpSinkDefaults, TcpSourceDefaults, WindowDefaults, DEFAULT_TOML, DEFAULT_TOML_NAME,
};
pub use error::{ConfigError, Invalid, Location, Problem, Source};
pub use model::{
    unknown_node, Aggregate, AggregateSpec, AppConfig, Burst, ClusterConfig, FileSource, FunctionConfig, FunctionKind,
    GeneratorSource, JoinFunction, Node, NodeConfig, NodeId, SchemaConfig, SchemaField, SinkConfig, SinkKind,
    SourceConfig, SourceKind, TcpSource, WindowFunction, WindowSpec,
};
pub use path::{KeyPath, Role, Segment};
pub use values::{AggregateOp, Distribution, FileFormat, Policy, TcpIo, WindowType, WireFormat};

use check::positive;
use defaults::{DefaultsLayer, EngineLayer};
use doc::ConfigDoc;

/// A whole, checked configuration.
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
    /// The file the config came from, for errors found later.
    #[serde(skip)]
    source: Source,
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses config text; `file_name` is what errors are reported under.
    pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        let builtin = Source::new(DEFAULT_TOML_NAME, DEFAULT_TOML);
        let base = read_doc(&builtin)?;
        let source = Source::new(file_name, text);
        let user = read_doc(&source)?;
        let engine = user.engine.over(base.engine).resolve("engine")?;
        let defaults = user.defaults.over(base.defaults).resolve()?;
        let apps = apps(&source, &defaults, user.app)?;
        let cluster = cluster::settings(&source, user.cluster.over(base.cluster))?;
        let nodes = cluster::nodes(&source, user.node)?;
        Ok(Config { engine, defaults, apps, cluster, nodes, source })
    }

    /// The `[engine]` table of `configs/default.toml`.
    pub fn default_engine() -> Result<EngineConfig, ConfigError> {
        Config::parse("", DEFAULT_TOML_NAME).map(|c| c.engine)
    }

    /// The node named `id` (`dirigo run --node`), or an error listing the known ids.
    pub fn node(&self, id: &str) -> Result<&NodeConfig, String> {
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
    pub fn error_at(&self, span: std::ops::Range<usize>, key: KeyPath, message: impl Into<String>) -> ConfigError {
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

/// One file parsed strictly, its `[engine]` and `[defaults.*]` values checked.
fn read_doc(source: &Source) -> Result<ConfigDoc, ConfigError> {
    let doc: ConfigDoc = toml::from_str(&source.text).map_err(|e| ConfigError::from_toml(source, &e))?;
    check_engine(source, &doc.engine)?;
    check_defaults(source, &doc.defaults)?;
    Ok(doc)
}

fn check_engine(src: &Source, e: &EngineLayer) -> Result<(), ConfigError> {
    let at = |key: &'static str| move || KeyPath::table("engine").key(key);
    positive(src, &e.mailbox_batches, at("mailbox_batches"))?;
    positive(src, &e.batch_size, at("batch_size"))?;
    positive(src, &e.max_in_flight, at("max_in_flight"))?;
    positive(src, &e.tick, at("tick"))?;
    positive(src, &e.lessee_idle, at("lessee_idle"))?;
    positive(src, &e.stats_interval, at("stats_interval"))?;
    positive(src, &e.preempt_timer, at("preempt_timer"))
}

fn check_defaults(src: &Source, d: &DefaultsLayer) -> Result<(), ConfigError> {
    let at = |table: &str, key: &str| {
        let path = KeyPath::table(&format!("defaults.{table}")).key(key);
        move || path
    };
    positive(src, &d.app.weight, at("app", "weight"))?;
    positive(src, &d.app.watermark_every, at("app", "watermark_every"))?;
    let generator = &d.source.generator;
    positive(src, &generator.keys, at("source.generator", "keys"))?;
    positive(src, &generator.zipf_s, at("source.generator", "zipf_s"))?;
    positive(src, &generator.parallelism, at("source.generator", "parallelism"))
}

/// Every app resolved; app names are unique.
fn apps(
    source: &Source,
    defaults: &Defaults,
    docs: Vec<toml::Spanned<doc::AppDoc>>,
) -> Result<Vec<AppConfig>, ConfigError> {
    let mut first: HashMap<String, std::ops::Range<usize>> = HashMap::new();
    let mut apps = Vec::with_capacity(docs.len());
    for (index, doc) in docs.into_iter().enumerate() {
        let name = doc.get_ref().name.clone();
        if let Some(span) = first.get(name.get_ref()) {
            let first_line = source.line_col(span.start).0;
            let path = KeyPath::app(index, name.get_ref()).key("name");
            let problem = Problem::Duplicate { what: "app", name: name.get_ref().clone(), first_line };
            return Err(ConfigError::problem(source, name.span(), path, problem));
        }
        first.insert(name.get_ref().clone(), name.span());
        apps.push(resolve::app(source, defaults, index, doc)?);
    }
    Ok(apps)
}

#[cfg(test)]
mod tests;
