//! Event producers behind sources: pure, pollable objects with no threads and no engine.
//!
//! The shard loop polls these objects; it stamps ingress time, routes and applies backpressure
//! itself. Each producer fills a caller-owned `Vec<Value>` so nothing allocates per event.
//!
//! - [`generator`]: [`Generator`], a deterministic synthetic stream on an open-loop schedule
//!   (base rate, bursts, uniform or Zipf keys). Event `i` depends only on `(seed, i)`, so
//!   instances split the stream by `i % parallelism` and any parallelism yields the same union.
//! - [`file`](mod@file): [`FileReader`], replay of an NDJSON or CSV file line by line; a malformed line is
//!   reported with its file and line number and the reader carries on.
//! - [`redis`](mod@redis): [`RedisSource`], the entries of a Redis stream, read by a thread of
//!   its own and polled by the shard.
//! - [`position`]: [`SourcePosition`], where an instance is in its input, to resume from after a
//!   crash (`SourceInstance::position` and `SourceInstance::seek`).
//! - [`instance`]: [`SourceInstance`], every kind of source behind one enum (what a shard polls),
//!   and [`CustomSource`], a source written by an embedding program.
//!
//! ```
//! use dirigo_actors::record::{FieldType, Schema, Value};
//! use dirigo_engine::source::{Generator, GeneratorSpec, KeyDistribution};
//!
//! let schema = Schema::new(vec![("key".into(), FieldType::U64), ("ts".into(), FieldType::U64)]);
//! let spec = GeneratorSpec {
//!     rate: 1_000,
//!     events: Some(3),
//!     duration: None,
//!     keys: 10,
//!     key_field: 0,
//!     distribution: KeyDistribution::Uniform,
//!     seed: 7,
//!     bursts: vec![],
//!     event_time_field: Some(1),
//!     instance: 0,
//!     parallelism: 1,
//! };
//! let mut generator = Generator::new(spec, &schema).unwrap();
//! let mut values = Vec::new();
//! assert_eq!(generator.next_due_ns(), Some(0));
//! assert_eq!(generator.next_event(&mut values), Some(0)); // event time in ms
//! assert!(matches!(values[0], Value::U64(k) if k < 10));
//! assert_eq!(generator.next_due_ns(), Some(1_000_000)); // 1000 events/s: one per ms
//! generator.next_event(&mut values);
//! assert_eq!(values[1], Value::U64(1)); // the event-time field
//! ```

pub mod file;
pub mod generator;
pub mod instance;
pub mod position;
pub mod redis;

#[cfg(test)]
mod position_tests;
#[cfg(test)]
mod tests;

pub use file::{format_from_path, FileFormat, FileReader, SourceError};
pub use generator::{Burst, FieldRole, Generator, GeneratorError, GeneratorSpec, KeyDistribution};
pub use instance::{CustomSource, SourceInstance};
pub use position::{PositionError, SourcePosition};
pub use redis::{RedisSource, RedisSpec};
