//! The compiled plan: apps, their sources and functions with global ids, the edges between them
//! with their partitioning, and which shards run an instance of each. Built once (from a config
//! or through the embedding API) and shared read-only by every shard.

use std::sync::Arc;

use dirigo_actors::function::{StreamType, TypedInput};
use dirigo_actors::ids::{AppId, FunctionId, ShardId};
use dirigo_actors::record::{RecordsOnly, Schema};

use crate::instance::OperatorInstance;
use crate::source::SourceInstance;

/// How messages on an edge choose the receiving shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partition {
    /// Stay on the sending shard (stateless functions, sinks): no hop.
    Forward,
    /// To the home shard of the message's key hash (set upstream, e.g. by `key_by`).
    ByKey,
    /// To the home shard of the hash of this output field; the field's hash becomes the key
    /// (config apps only: the proof says the edge carries records).
    ByField(usize, RecordsOnly),
}

/// An output edge: where a node's output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub target: FunctionId,
    pub port: u8,
    pub partition: Partition,
    /// The target reads its records' headers alone ([`FunctionPlan::ignores_records`], on a
    /// forward edge): records go to it with no payload, nothing archived for them.
    pub headers_only: bool,
}

/// Where an input comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    Source(usize),
    Function(FunctionId),
}

/// One input of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Input {
    pub port: u8,
    pub from: Upstream,
    pub partition: Partition,
}

/// What a shard is told when it instantiates an operator or a source.
#[derive(Clone, Copy, Debug)]
pub struct InstanceCx {
    pub shard: ShardId,
    pub shards: usize,
    /// Index of this instance among the node's instances, and their number.
    pub instance: u32,
    pub parallelism: u32,
}

/// Makes one operator instance per shard.
pub type OperatorFactory = Arc<dyn Fn(InstanceCx) -> OperatorInstance + Send + Sync>;
/// Makes one source instance per shard it runs on.
pub type SourceFactory = Arc<dyn Fn(InstanceCx) -> SourceInstance + Send + Sync>;

/// An app: a DAG with a latency SLO.
#[derive(Clone, Debug)]
pub struct AppPlan {
    pub name: String,
    pub slo_ns: u64,
    /// Share under the `fair` policy.
    pub weight: u32,
    /// A source emits a watermark every this many events.
    pub watermark_every: u64,
    /// Bounded out-of-orderness (ms) subtracted from the max event time seen.
    pub watermark_delay_ms: u64,
    /// The shards the app starts on (its key groups, sources and stateless functions), sorted;
    /// see [`crate::placement::AppShards`].
    pub shards: Vec<ShardId>,
    /// The shards its key groups may move to (a superset of `shards`, sorted): its keyed
    /// functions, and what runs after them, have an instance on each, idle until a group
    /// arrives. Migration moves groups only within one node, so in a cluster this is `shards`.
    pub reach: Vec<ShardId>,
    /// Per mille of a shard's capacity (`shard_capacity`) the app declares at its peak on each
    /// of its start shards (its sources' peak rate over its shards); 1000 when unbounded, 0 when
    /// unknown (an embedded app). Rebalancing keeps other apps' groups off a shard whose
    /// declared peaks leave no room: its sources cannot leave it when they burst.
    pub peak_permille: u64,
}

/// A source node.
#[derive(Clone)]
pub struct SourcePlan {
    pub app: AppId,
    pub name: String,
    pub factory: SourceFactory,
    pub shards: Vec<ShardId>,
    pub outputs: Vec<Edge>,
    pub schema: Schema,
    /// Position of the schema field holding event time (ms), if the app declares one.
    pub event_time_field: Option<usize>,
    /// The Rust type an embedded app's source archives (None: records).
    pub emits: Option<StreamType>,
}

/// A function or sink node.
#[derive(Clone)]
pub struct FunctionPlan {
    pub app: AppId,
    pub name: String,
    pub factory: OperatorFactory,
    pub shards: Vec<ShardId>,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Edge>,
    /// Schema of the records this node receives (port 0); sinks format with it.
    pub input_schema: Schema,
    pub is_sink: bool,
    /// A sink that does nothing with its records' contents (latency, null): the edges into it
    /// carry headers alone ([`Edge::headers_only`]). Its instances must be such sinks: replace
    /// its factory with [`Plan::replace_factory`], which clears this.
    pub ignores_records: bool,
    /// Dual-mode scaling: lessees per actor (0 = off).
    pub max_lessees: u32,
    /// The Rust type a user function or actor takes (None: built-ins and sinks).
    pub takes: Option<StreamType>,
}

/// The whole plan of an engine.
#[derive(Clone, Default)]
pub struct Plan {
    pub shards: usize,
    pub apps: Vec<AppPlan>,
    pub sources: Vec<SourcePlan>,
    pub functions: Vec<FunctionPlan>,
    /// Files that sinks append to, with their first line (a CSV header, or empty); written
    /// once when the engine starts.
    pub files: Vec<(std::path::PathBuf, String)>,
    /// Every tcp sink this node serves: its app, its name and its hub (for the drops it counts).
    pub tcp_sinks: Vec<(AppId, String, std::sync::Arc<dirigo_net::tcp::EgressHub>)>,
    /// The snapshot the run resumes from (0: none), set before the shards build their
    /// instances: a committing sink writes the output of the epoch after it.
    pub resume_epoch: Arc<std::sync::atomic::AtomicU64>,
    /// Every staged redis sink (with snapshots): its url and stream, committed per snapshot.
    pub redis_sinks: Vec<(String, String)>,
}

impl Plan {
    /// Shards running `up`.
    pub fn upstream_shards(&self, up: Upstream) -> &[ShardId] {
        match up {
            Upstream::Source(i) => &self.sources[i].shards,
            Upstream::Function(f) => &self.functions[f as usize].shards,
        }
    }

    /// Input channels (port, sending shard) an instance of `f` on `shard` receives on; the
    /// instance has ended when every one of them has delivered `End`.
    pub fn channels_of(&self, f: FunctionId, shard: ShardId) -> Vec<(u8, ShardId)> {
        let mut out = Vec::new();
        for input in &self.functions[f as usize].inputs {
            let ups = self.upstream_shards(input.from);
            match input.partition {
                Partition::Forward => {
                    if ups.contains(&shard) {
                        out.push((input.port, shard));
                    }
                }
                Partition::ByKey | Partition::ByField(..) => {
                    out.extend(ups.iter().map(|&s| (input.port, s)));
                }
            }
        }
        out
    }

    /// Shards that run a function of `app`, computed from its inputs: keyed inputs over the
    /// app's reach (where its groups may move), forward inputs stay where their upstream runs.
    pub fn derive_shards(&self, app: AppId, inputs: &[Input]) -> Vec<ShardId> {
        let mut set = vec![false; self.shards];
        for input in inputs {
            match input.partition {
                Partition::Forward => {
                    for &s in self.upstream_shards(input.from) {
                        set[s as usize] = true;
                    }
                }
                _ => self.apps[app as usize].reach.iter().for_each(|&s| set[s as usize] = true),
            }
        }
        (0..self.shards as ShardId).filter(|s| set[*s as usize]).collect()
    }

    /// Add a function or sink: connect its inputs' edges to it and place it on the shards its
    /// inputs lead to (`f.shards` and `f.outputs` are filled here). Returns its id.
    pub fn add_function(&mut self, mut f: FunctionPlan) -> FunctionId {
        let id = self.functions.len() as FunctionId;
        for i in &f.inputs {
            let headers_only = f.ignores_records && i.partition == Partition::Forward;
            let edge = Edge { target: id, port: i.port, partition: i.partition, headers_only };
            match i.from {
                Upstream::Source(s) => self.sources[s].outputs.push(edge),
                Upstream::Function(up) => self.functions[up as usize].outputs.push(edge),
            }
        }
        f.shards = self.derive_shards(f.app, &f.inputs);
        f.outputs = Vec::new();
        self.functions.push(f);
        id
    }

    /// Check the types on the edges of embedded apps, and bind them into the functions'
    /// factories: every user function or actor then checks its emits against the type of the
    /// user functions it feeds, and one whose every input is so checked (or is a source of its
    /// type) reads its inputs unchecked. A source of another type than the function it feeds, or
    /// a function feeding functions of different types, is an error naming them. Call it once,
    /// when the plan is complete.
    pub fn bind_types(&mut self) -> Result<(), PlanError> {
        // Per function: the type of the user functions it feeds, and the first of them.
        let mut output: Vec<Option<(StreamType, FunctionId)>> = vec![None; self.functions.len()];
        let mut trusted = vec![false; self.functions.len()];
        for (c, f) in self.functions.iter().enumerate() {
            let Some(takes) = f.takes else { continue };
            let mut all_typed = !f.inputs.is_empty();
            for input in &f.inputs {
                match input.from {
                    Upstream::Source(s) => match self.sources[s].emits {
                        Some(emits) if emits == takes => {}
                        Some(emits) => {
                            return Err(PlanError::SourceType {
                                name: self.sources[s].name.clone(),
                                emits: emits.name(),
                                function: f.name.clone(),
                                takes: takes.name(),
                            })
                        }
                        None => all_typed = false,
                    },
                    Upstream::Function(up) => {
                        let up = up as usize;
                        if self.functions[up].takes.is_none() {
                            all_typed = false;
                            continue;
                        }
                        match output[up] {
                            Some((other, first)) if other != takes => {
                                return Err(PlanError::OutputTypes {
                                    function: self.functions[up].name.clone(),
                                    first: self.functions[first as usize].name.clone(),
                                    first_takes: other.name(),
                                    second: f.name.clone(),
                                    second_takes: takes.name(),
                                })
                            }
                            Some(_) => {}
                            None => output[up] = Some((takes, c as FunctionId)),
                        }
                    }
                }
            }
            trusted[c] = all_typed;
        }
        for (c, f) in self.functions.iter_mut().enumerate() {
            // SAFETY: `f`'s every input is a source that archives exactly `f`'s input type
            // (checked above; embedded sources archive their item type with rkyv into aligned
            // buffers), or a user function or actor whose instances all come from the factory
            // wrapped below with `bind_output(f's type)`, so every emit of theirs that reaches
            // `f` is an archive of that type made by `Cx::emit`. Embedded apps never cross a
            // node and snapshots hold no messages, so no payload of theirs comes from elsewhere.
            let typed = trusted[c].then(|| unsafe { TypedInput::assert() });
            let out = output[c].map(|(stream, _)| stream);
            if typed.is_none() && out.is_none() {
                continue;
            }
            let inner = f.factory.clone();
            f.factory = Arc::new(move |cx| {
                let mut op = inner(cx);
                op.bind_types(out, typed);
                op
            });
        }
        Ok(())
    }

    /// Make function `f`'s instances with `factory` instead (a test's or an embedding
    /// program's own sink in place of a configured one). The new instances may read their
    /// records: the edges into `f` carry payloads from now on.
    pub fn replace_factory(&mut self, f: FunctionId, factory: OperatorFactory) {
        self.functions[f as usize].factory = factory;
        self.functions[f as usize].ignores_records = false;
        let edges =
            self.sources.iter_mut().map(|s| &mut s.outputs).chain(self.functions.iter_mut().map(|g| &mut g.outputs));
        for e in edges.flatten().filter(|e| e.target == f) {
            e.headers_only = false;
        }
    }

    /// Check the plan's invariants; an error names the function.
    pub fn validate(&self) -> Result<(), PlanError> {
        for (i, f) in self.functions.iter().enumerate() {
            let function = || f.name.clone();
            if f.shards.is_empty() {
                return Err(PlanError::NoShard { function: function() });
            }
            for e in &f.outputs {
                if e.target as usize >= self.functions.len() {
                    return Err(PlanError::UnknownTarget { function: function(), target: e.target });
                }
                if e.target as usize <= i {
                    return Err(PlanError::BackwardEdge { function: function() });
                }
            }
        }
        Ok(())
    }
}

/// A plan that breaks an invariant (built by hand through the API, or a bug in `compile`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("function `{function}` runs on no shard")]
    NoShard { function: String },
    #[error("function `{function}` sends to unknown function {target}")]
    UnknownTarget { function: String, target: FunctionId },
    #[error("function `{function}`: edges must go forward in topological order")]
    BackwardEdge { function: String },
    #[error("the plan has {plan} shards, the cluster {cluster}")]
    ClusterShards { plan: usize, cluster: usize },
    #[error("source `{name}` emits `{emits}`, but function `{function}`, which it feeds, takes `{takes}`")]
    SourceType { name: String, emits: &'static str, function: String, takes: &'static str },
    #[error(
        "function `{function}` feeds `{first}`, which takes `{first_takes}`, and `{second}`, which takes `{second_takes}`: a stream carries one type"
    )]
    OutputTypes {
        function: String,
        first: String,
        first_takes: &'static str,
        second: String,
        second_takes: &'static str,
    },
}
