//! # dirigo-actors: the programming model
//!
//! Everything a Dirigo function sees, with no runtime and no I/O, so that it can be tested
//! without threads (the engine is `dirigo-engine`):
//!
//! - [`function`]: the user API: [`function::Function`], [`function::Actor`] (a dual-mode
//!   virtual actor), the context [`function::Cx`], their type-erased forms, and
//!   [`function::Harness`], which runs a function without the engine.
//! - [`ids`]: ids of apps, functions, shards and actors.
//! - [`record`]: schema-typed records (`Record`, archived with rkyv and read in place through
//!   [`record::TrustedRecord`]), key hashing, and NDJSON conversion.
//! - [`envelope`]: the fixed-size header every message carries, message kinds, and the
//!   arguments of dual-mode protocol messages.
//! - [`operator`]: the `Operator` and `Emitter` traits that the built-in functions implement.
//! - [`state`]: exclusive and mergeable actor state (partition and combine strategies).
//! - [`expr`]: the expression language of map and filter, type-checked once against a schema.
//! - [`builtins`]: the built-in functions: map, filter, key_by, keyed aggregates, windows, joins.
//! - [`dual_mode`]: the dual-mode actor protocol (lessor, lessees) as sans-I/O state machines.
//! - [`migrate`]: moving keys (key groups) between instances of a keyed function.
//! - [`activation`]: the mergeable state of one activation of a dual-mode actor (a window or a
//!   user actor), which the protocol's machines hold.
//!
//! ```
//! use dirigo_actors::record::{Record, Value, ArchivedRecord};
//! let bytes = Record::from(vec![Value::U64(7), Value::Str("a".into())]).to_archive();
//! let rec: &ArchivedRecord = dirigo_actors::record::access(&bytes).unwrap();
//! assert_eq!(rec.fields[0].as_u64(), Some(7));
//! ```

pub mod activation;
pub mod builtins;
pub mod dual_mode;
pub mod envelope;
pub mod expr;
pub mod function;
pub mod ids;
pub mod migrate;
#[cfg(test)]
mod migrate_tests;
pub mod operator;
pub mod record;
pub mod state;
#[cfg(test)]
pub(crate) mod testkit;
