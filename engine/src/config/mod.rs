//! Typed configuration: one TOML file parsed strictly and merged over `configs/default.toml`.
//!
//! - [`Config::parse`] / [`Config::load`]: the whole tree, or a [`ConfigError`] that reads
//!   `file:line:col: key path: what is wrong`.
//! - `defaults`: `[engine]` and `[defaults.*]`, whose every value comes from the embedded
//!   `configs/default.toml`; a user's tables override it key by key.
//! - `model`: the [`Config`] itself: apps (sources, functions, sinks) and the cluster; names,
//!   inputs, fields and expressions are [`toml::Spanned`] so a later stage reports its errors at
//!   them with [`ConfigError::at`].
//!
//! ```
//! use dirigo_engine::config::{Config, Policy};
//! let config = Config::parse("[engine]\npolicy = \"edf\"\n", "inline.toml").unwrap();
//! assert_eq!(config.engine.policy, Policy::Edf);
//! assert!(config.apps.is_empty());
//! ```

// How a config is made: text -> document (each file as written, strictly typed) -> resolve (the
// driver: both files read, the user's layers merged over the built-in ones) -> parts (each
// resolves one piece with the shared rules of `check`) -> model (the typed `Config`). A module
// imports only from the layers below it, so the modules form a DAG:
//
//   mod.rs    entry points (`Config::load`, `Config::parse`) and the public names
//   resolve   the driver: `[engine]`, `[defaults.*]`, each app's own keys, then every part
//   parts     `sources`, `functions`, `sinks`, `graph` (an app's DAG and its order), `cluster`
//             (`[cluster]`, `[[node]]`); no part imports another
//   check     what the parts share: `Ctx` and the rules (`positive`, `require`, `kind_keys`,
//             `known_format`, `duplicate`, `field_in_schema`, `or`, `or_duration`)
//   model     the typed result: `Config`, apps and their nodes, the cluster
//   document  `doc` (a file as written) -> `defaults` (the `[engine]` and `[defaults.*]` layers
//             and their tables) -> `error` (`ConfigError`, `Source`) -> `outline` (a parser
//             error's key path) -> `path` (`KeyPath`, `Role`); `values` (durations, ordered
//             tables, the closed sets of names) is a leaf

mod admin;
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
mod snapshots;
mod sources;
mod values;

use std::ffi::OsString;
use std::path::Path;

use dirigo_net::link::Secret;

pub use admin::{AdminConfig, TokenSource};
pub use defaults::{
    AppDefaults, Defaults, EngineConfig, FileSinkDefaults, FileSourceDefaults, FunctionDefaults, GeneratorDefaults,
    SinkDefaults, SourceDefaults, TcpSinkDefaults, TcpSourceDefaults, WindowDefaults, DEFAULT_TOML, DEFAULT_TOML_NAME,
};
pub use error::{ConfigError, Invalid, Location, Problem, SecretProblem, Source};
pub use model::{
    unknown_node, Aggregate, AggregateSpec, AppConfig, Burst, ClusterConfig, Config, FileSource, FunctionConfig,
    FunctionKind, GeneratorSource, JoinFunction, Node, NodeConfig, NodeId, RedisSource, SchemaConfig, SchemaField,
    SecretSource, SinkConfig, SinkKind, SnapshotsConfig, SourceConfig, SourceKind, TcpSource, UnknownNode,
    WindowFunction, WindowSpec,
};
pub use path::{KeyPath, Role, Segment};
pub use values::{AggregateOp, Delivery, Distribution, FileFormat, Policy, TcpIo, WindowType, WireFormat};

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses config text; `file_name` is what errors are reported under.
    pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        resolve::config(Source::new(file_name, text))
    }

    /// The `[engine]` table of `configs/default.toml`.
    pub fn default_engine() -> Result<EngineConfig, ConfigError> {
        Config::parse("", DEFAULT_TOML_NAME).map(|c| c.engine)
    }

    /// The cluster secret, read now from the file or environment variable `[cluster]` names
    /// (`None` when it names neither: a single node). An unset variable, an unreadable file or
    /// an empty secret is an error at that key, naming the variable or the file.
    pub fn cluster_secret(&self) -> Result<Option<Secret>, ConfigError> {
        self.cluster_secret_from(|var| std::env::var_os(var))
    }

    /// [`Config::cluster_secret`] with the environment given as `env`.
    pub fn cluster_secret_from(&self, env: impl Fn(&str) -> Option<OsString>) -> Result<Option<Secret>, ConfigError> {
        let Some(source) = &self.cluster.secret else { return Ok(None) };
        cluster::read_secret(&self.source, source, env).map(Some)
    }
}

#[cfg(test)]
mod tests;
