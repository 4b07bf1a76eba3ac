//! Key-group migration: moving the state of some keys from one instance of a keyed function to
//! the instance of the same function on another shard.
//!
//! The sender removes every key whose *routing key hash* (the `key_hash` the engine routes a
//! message by) satisfies a predicate and archives them with rkyv (`export_keys`); the receiver,
//! which holds none of those keys, validates the archive and inserts them (`import_keys`). Every
//! keyed built-in ([`Aggregate`](crate::builtins::Aggregate), [`Window`](crate::builtins::Window),
//! [`Join`](crate::builtins::Join)) and user actors that implement
//! [`Actor::split_off`](crate::function::Actor::split_off) (through
//! [`ActorOp`](crate::activation::ActorOp)) can move keys.
//!
//! An archive is untrusted input: it is checked by rkyv's validator before anything reads it,
//! and a corrupt archive, an archive of another kind of state, or a key the receiver already
//! holds is a [`MigrateError`], never a panic or undefined behaviour. The built-ins' archive format
//! lives with them (`builtins::moved`).

/// Why moved keys could not be imported. The receiving instance is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    /// The bytes are not a valid key archive (rkyv's validator's message), or the archive is
    /// internally inconsistent.
    #[error("corrupt key archive: {0}")]
    Corrupt(String),
    /// A valid archive of another kind of state (a window's keys into an aggregate, a count's
    /// into a sum, windows of another shape, another actor's state).
    #[error("wrong kind of state: cannot import {found} into {expected}")]
    WrongKind { expected: String, found: String },
    /// A moved key that the receiving instance already holds: key sets of two instances are
    /// disjoint, so this is a bug upstream (it is reported, never merged silently).
    #[error("key with routing hash {hash:#018x} is already present on the receiving instance")]
    KeyPresent { hash: u64 },
}
