//! Resolves `[cluster]` and the `[[node]]` list into `ClusterConfig` and `NodeConfig`s.
//!
//! No `[[node]]` is a single node (every shard local). Ids and addresses are unique; each node's
//! shards are a range of the global shard ids, in the order the nodes are listed.

use std::net::{SocketAddr, ToSocketAddrs};

use toml::Spanned;

use super::check::positive;
use super::defaults::DEFAULT_TOML_NAME;
use super::doc::{ClusterLayer, NodeDoc};
use super::error::{ConfigError, Problem, Source};
use super::model::{ClusterConfig, NodeConfig};
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
    Ok(ClusterConfig {
        connect_timeout: get(layer.connect_timeout, "connect_timeout")?,
        reconnect_timeout: get(layer.reconnect_timeout, "reconnect_timeout")?,
    })
}
