//! # dirigo-engine: the thread-per-core runtime
//!
//! - [`engine`]: the controller: starts shards, gathers reports, stops.
//! - [`shard`]: one pinned executor's loop: mailboxes, run queue, policy hooks, operators.
//! - [`mailbox`] and [`signal`]: the only cross-core paths: SPSC rings of batches and padded
//!   load/sleep slots with a doorbell.
//! - [`policy`]: scheduling hooks and the built-in policies; [`runqueue`]: per-function queues.
//! - [`plan`]: the compiled DAGs; [`operator`], [`builtin`], [`sink`], [`ingest`], [`source`]:
//!   what runs on a shard.
//! - [`config`]: the typed config; [`metrics`] and [`report`]: what a run measures and prints.
//! - [`actor`]: the mergeable operator state of dual-mode actors (lessor and lessees).
//! - [`clock`]: the engine's time base.
//! - [`cluster`]: multi-node clusters: the links that carry mailboxes between nodes' shards.
//! - [`tcp`]: tcp sources (polled by their shard's loop) and sinks (served by an edge thread),
//!   and the reference clients behind `dirigo send` and `dirigo tail`.

pub mod api;
pub mod compile;
pub mod config;
pub mod engine;
pub mod instance;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod report;
pub mod runqueue;
pub mod shard;
pub mod sink;
pub mod source;
