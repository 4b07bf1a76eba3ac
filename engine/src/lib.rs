//! # dirigo-engine: the thread-per-core runtime
//!
//! Runs apps (DAGs of functions with a latency SLO) on one pinned glommio executor per core, a
//! *shard*, that makes every per-message decision in one loop. What a function is comes from
//! `dirigo-actors`; how messages move between shards and machines from `dirigo-net`.
//!
//! Entry points:
//! - [`api`]: build apps in Rust from your own functions and actors, run them in-process and
//!   collect their output ([`api::EngineBuilder`]).
//! - [`config`] and [`compile`]: a TOML config (checked, with errors that point at the file,
//!   line and key) compiled to a [`plan::Plan`] and run, as the `dirigo` binary does.
//!
//! The runtime:
//! - [`engine`]: the controller: builds the mailbox mesh (and node links), starts the shards,
//!   gathers their reports, stops them.
//! - [`shard`]: one pinned executor's loop: drain mailboxes, poll sources, run a budget of
//!   messages in the policy's order, flush output batches, park when idle.
//! - [`policy`]: the scheduling hooks and the built-in policies (FIFO, EDF, least laxity, fair
//!   shares); [`runqueue`]: one FIFO per function, picked by the policy.
//! - [`plan`]: the compiled DAGs: apps, functions, edges and how each edge is partitioned.
//! - [`instance`]: what runs for a function on a shard: a built-in, a sink, or user code, behind
//!   one enum.
//! - [`source`]: the event producers (generators, files, custom sources, tcp ingress) behind
//!   one enum; [`sink`]: where results leave (stdout, file, tcp, a collector) or are measured.
//! - [`redis_sink`]: the Redis Streams sink (a writer thread per instance; exactly once by
//!   epochs staged in Redis at each barrier and committed by the controller).
//! - [`sink_commit`]: the file sink's pending parts, commits and recovery, for snapshots.
//! - [`snapshot`]: snapshots by aligned barriers: the store (parts written off the shards, a
//!   manifest written last, pruning, config fingerprints), the coordinator the controller and
//!   the shards share, the controller's driver, and what a run resumes from.
//! - [`metrics`] and [`report`]: what a run measures, and its progress lines and summary.
//!
//! ```
//! use dirigo_engine::api::{key_u64, Cx, EngineBuilder, Function, Route};
//! use std::time::Duration;
//!
//! /// Sums the values of each key, emitting the running sum.
//! #[derive(Default)]
//! struct Sum(std::collections::HashMap<u64, u64>);
//!
//! impl Function for Sum {
//!     type In = (u64, u64);
//!     fn on_message(&mut self, cx: &mut Cx<'_>, kv: &rkyv::Archived<(u64, u64)>) {
//!         let sum = self.0.entry(kv.0.to_native()).or_default();
//!         *sum += kv.1.to_native();
//!         cx.emit(cx.key_hash(), cx.event_time(), &(kv.0.to_native(), *sum));
//!     }
//! }
//!
//! let mut engine = EngineBuilder::new().shards(1);
//! let mut app = engine.app("sums", Duration::from_millis(5));
//! // (key hash, event time, message): keys 0..4, values 1..=100.
//! let input = app.source("in", 1, |_| (1..=100u64).map(|v| (key_u64(v % 4), v, (v % 4, v))));
//! let sums = app.function("sum", input, Route::ByKey, Sum::default);
//! let out = app.collect("out", sums);
//! engine.run().unwrap();
//!
//! // Per-key order holds, so each key's last output is its total.
//! let mut total = std::collections::BTreeMap::new();
//! for o in out.drain() {
//!     let mut buf = rkyv::util::AlignedVec::<16>::new();
//!     buf.extend_from_slice(&o.archive);
//!     let (key, sum) = rkyv::from_bytes::<(u64, u64), rkyv::rancor::Error>(&buf).unwrap();
//!     total.insert(key, sum);
//! }
//! assert_eq!(total[&0], (4..=100).step_by(4).sum::<u64>());
//! assert_eq!(total.values().sum::<u64>(), 5050);
//! ```

pub mod admin;
pub mod api;
pub mod compile;
pub mod config;
pub mod control;
pub mod engine;
pub mod instance;
pub mod metrics;
pub mod placement;
pub mod plan;
pub mod policy;
pub mod prom;
pub mod redis_sink;
pub mod report;
pub mod runqueue;
pub mod serve;
pub mod shard;
pub mod sink;
pub mod sink_commit;
pub mod snapshot;
pub mod source;
