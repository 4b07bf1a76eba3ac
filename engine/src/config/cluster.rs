//! Resolves `[cluster]` and the `[[node]]` list into `ClusterConfig` and `NodeConfig`s, and reads
//! the cluster secret when a node starts.
//!
//! No `[[node]]` is a single node (every shard local). Ids and addresses are unique; each node's
//! shards are a range of the global shard ids, in the order the nodes are listed. A cluster of
//! more than one node names where its secret is (`secret_file` or `secret_env`, exactly one);
//! the secret itself is never in the config.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use dirigo_net::link::Secret;
use toml::Spanned;

use super::check::positive;
use super::defaults::DEFAULT_TOML_NAME;
use super::doc::{ClusterLayer, NodeDoc};
use super::error::{ConfigError, Problem, SecretProblem, Source};
use super::model::{ClusterConfig, NodeConfig, SecretSource};
use super::path::KeyPath;
use super::values::HumanDuration;

/// Every node, checked: ids and addresses unique, shards positive, addresses resolvable.
pub(crate) fn nodes(src: &Source, docs: Vec<Spanned<NodeDoc>>) -> Result<Vec<NodeConfig>, ConfigError> {
    let mut out: Vec<NodeConfig> = Vec::with_capacity(docs.len());
    let mut first_shard = 0;
    for (i, doc) in docs.into_iter().enumerate() {
        let doc = doc.into_inner();
        let at = |key: &str| KeyPath::table(&format!("node[{i}]")).key(key);
        let shards = Some(doc.shards.clone());
        positive(src, &shards, || at("shards"))?;
        if doc.id.get_ref().is_empty() {
            return Err(ConfigError::at(src, doc.id.span(), at("id"), "a node id must not be empty"));
        }
        if let Some(first) = out.iter().find(|n| n.id.get_ref() == doc.id.get_ref()) {
            let first_line = src.line_col(first.id.span().start).0;
            let problem = Problem::Duplicate { what: "node", name: doc.id.get_ref().clone(), first_line };
            return Err(ConfigError::problem(src, doc.id.span(), at("id"), problem));
        }
        let socket = socket_addr(src, &doc.address, at("address"))?;
        if let Some(first) = out.iter().find(|n| n.socket == socket) {
            let first_line = src.line_col(first.address.span().start).0;
            let what = format!(
                "address {} is also node `{}`'s (line {first_line}); every node needs its own",
                doc.address.get_ref(),
                first.id.get_ref()
            );
            return Err(ConfigError::at(src, doc.address.span(), at("address"), what));
        }
        let shards = doc.shards.into_inner();
        out.push(NodeConfig { id: doc.id, address: doc.address, shards, first_shard, socket });
        first_shard += shards;
    }
    Ok(out)
}

/// The socket address a `host:port` names.
fn socket_addr(src: &Source, address: &Spanned<String>, path: KeyPath) -> Result<SocketAddr, ConfigError> {
    let text = address.get_ref();
    match text.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(ConfigError::at(src, address.span(), path, format!("`{text}` resolves to no address"))),
        Err(e) => Err(ConfigError::at(src, address.span(), path, format!("`{text}` is not a host:port address: {e}"))),
    }
}

/// `[cluster]` resolved from the merged layers (every key has a default in default.toml).
pub(crate) fn settings(src: &Source, layer: ClusterLayer) -> Result<ClusterConfig, ConfigError> {
    let at = |key: &'static str| move || KeyPath::table("cluster").key(key);
    positive(src, &layer.connect_timeout, at("connect_timeout"))?;
    positive(src, &layer.reconnect_timeout, at("reconnect_timeout"))?;
    let get = |v: Option<Spanned<HumanDuration>>, key: &'static str| {
        v.map(|v| v.into_inner().0).ok_or_else(|| {
            let reason = format!("every `[cluster]` key needs a default in {DEFAULT_TOML_NAME}");
            ConfigError::problem(src, 0..0, KeyPath::table("cluster"), Problem::MissingKey { key, reason })
        })
    };
    let secret = match (layer.secret_file, layer.secret_env) {
        (Some(_), Some(env)) => {
            let problem = Problem::Secret(SecretProblem::Both);
            return Err(ConfigError::problem(src, env.span(), KeyPath::table("cluster").key("secret_env"), problem));
        }
        (Some(file), None) => Some(SecretSource::File(file)),
        (None, Some(env)) => Some(SecretSource::Env(env)),
        (None, None) => None,
    };
    if let Some(source) = &secret {
        if source.name().get_ref().is_empty() {
            let problem = Problem::Secret(SecretProblem::EmptyName { key: source.key() });
            return Err(ConfigError::problem(src, source.name().span(), secret_key(source), problem));
        }
    }
    Ok(ClusterConfig {
        connect_timeout: get(layer.connect_timeout, "connect_timeout")?,
        reconnect_timeout: get(layer.reconnect_timeout, "reconnect_timeout")?,
        secret,
    })
}

/// A cluster of more than one node names its secret; the error points at the second node.
pub(crate) fn secret_named(src: &Source, cluster: &ClusterConfig, nodes: &[NodeConfig]) -> Result<(), ConfigError> {
    match (&cluster.secret, nodes.get(1)) {
        (None, Some(second)) => {
            let problem = Problem::Secret(SecretProblem::Missing { nodes: nodes.len() });
            Err(ConfigError::problem(src, second.id.span(), KeyPath::table("cluster"), problem))
        }
        _ => Ok(()),
    }
}

fn secret_key(source: &SecretSource) -> KeyPath {
    KeyPath::table("cluster").key(source.key())
}

/// The secret `source` names, read now (when a node starts), through `env` for a variable.
/// Trailing whitespace (the newline a file ends with) is not part of it; an unset variable, an
/// unreadable file, or nothing left, is an error at the key that names it.
pub(crate) fn read_secret(
    src: &Source,
    source: &SecretSource,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Secret, ConfigError> {
    let name = source.name().get_ref();
    let fail = |problem| ConfigError::problem(src, source.name().span(), secret_key(source), Problem::Secret(problem));
    let mut bytes = match source {
        SecretSource::Env(_) => env(name).ok_or_else(|| fail(SecretProblem::Unset { var: name.clone() }))?.into_vec(),
        SecretSource::File(_) => std::fs::read(name)
            .map_err(|e| fail(SecretProblem::Unreadable { path: PathBuf::from(name), kind: e.kind() }))?,
    };
    while bytes.last().is_some_and(u8::is_ascii_whitespace) {
        bytes.pop();
    }
    Secret::new(bytes).map_err(|_| match source {
        SecretSource::Env(_) => fail(SecretProblem::EmptyVariable { var: name.clone() }),
        SecretSource::File(_) => fail(SecretProblem::EmptyFile { path: PathBuf::from(name) }),
    })
}
