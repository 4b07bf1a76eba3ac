//! The cluster: `[[node]]` tables (id, address, shards) and the `[cluster]` link settings. No
//! `[[node]]` is a single node (every shard local). Ids and addresses are unique; each node's
//! shards are a range of the global shard ids, in the order the nodes are listed.

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::check::positive;
use super::error::{ConfigError, Problem, Source};
use super::path::KeyPath;
use super::values::HumanDuration;

/// One `[[node]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeDoc {
    pub id: Spanned<String>,
    pub address: Spanned<String>,
    pub shards: Spanned<usize>,
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
        let socket = resolve(src, &doc.address, at("address"))?;
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

fn resolve(src: &Source, address: &Spanned<String>, path: KeyPath) -> Result<SocketAddr, ConfigError> {
    let text = address.get_ref();
    match text.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(ConfigError::at(src, address.span(), path, format!("`{text}` resolves to no address"))),
        Err(e) => Err(ConfigError::at(src, address.span(), path, format!("`{text}` is not a host:port address: {e}"))),
    }
}

/// Why `--node` names no node of the config.
pub fn unknown_node(nodes: &[NodeConfig], id: &str) -> String {
    if nodes.is_empty() {
        return format!("--node {id}: the config lists no [[node]]; run it without --node");
    }
    let known: Vec<&str> = nodes.iter().map(|n| n.id.get_ref().as_str()).collect();
    format!("--node {id}: no such node; known: {}", known.join(", "))
}

/// `[cluster]`: how links between nodes are set up and kept.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterConfig {
    /// How long a node waits for all its links at startup.
    #[serde(serialize_with = "super::values::ser_duration")]
    pub connect_timeout: Duration,
    /// How long a dropped link is retried before the node gives up.
    #[serde(serialize_with = "super::values::ser_duration")]
    pub reconnect_timeout: Duration,
}

/// `[cluster]` as written in one file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterLayer {
    pub connect_timeout: Option<Spanned<HumanDuration>>,
    pub reconnect_timeout: Option<Spanned<HumanDuration>>,
}

impl ClusterLayer {
    /// `self`'s keys, then `base`'s.
    pub(crate) fn over(self, base: Self) -> Self {
        ClusterLayer {
            connect_timeout: self.connect_timeout.or(base.connect_timeout),
            reconnect_timeout: self.reconnect_timeout.or(base.reconnect_timeout),
        }
    }

    /// The resolved table (every key has a default in default.toml).
    pub(crate) fn resolve(self, src: &Source) -> Result<ClusterConfig, ConfigError> {
        let at = |key: &'static str| move || KeyPath::table("cluster").key(key);
        positive(src, &self.connect_timeout, at("connect_timeout"))?;
        positive(src, &self.reconnect_timeout, at("reconnect_timeout"))?;
        let get = |v: Option<Spanned<HumanDuration>>, key: &'static str| {
            v.map(|v| v.into_inner().0).ok_or_else(|| {
                let reason = format!("every `[cluster]` key needs a default in {}", super::DEFAULT_TOML_NAME);
                ConfigError::problem(src, 0..0, KeyPath::table("cluster"), Problem::MissingKey { key, reason })
            })
        };
        Ok(ClusterConfig {
            connect_timeout: get(self.connect_timeout, "connect_timeout")?,
            reconnect_timeout: get(self.reconnect_timeout, "reconnect_timeout")?,
        })
    }
}
