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
//! holds is a [`MigrateError`], never a panic or undefined behaviour.

use rkyv::util::AlignedVec;

use crate::builtins::agg::AggPartial;
use crate::builtins::join::JoinPane;
use crate::builtins::keyed::{ExactKey, KeyedState, OwnedKey};
use crate::builtins::panes::MovedKey;
use crate::record::Value;

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

/// A window shape as archived: `[size, slide, lateness]` in ms (a tumbling window's slide is
/// its size).
pub(crate) type ShapeTag = [u64; 3];

/// One key of a rolling aggregate on the move.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct AggKey {
    pub key: OwnedKey,
    /// The routing key hash.
    pub hash: u64,
    pub partial: AggPartial,
}

/// The archived form of moved keys, of every kind of state that can move.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) enum KeyArchive {
    /// Rolling aggregate keys; `zero` identifies the op and field type.
    Aggregate { zero: AggPartial, keys: Vec<AggKey> },
    /// Window keys with every live pane (fired or not).
    Window { shape: ShapeTag, zero: AggPartial, keys: Vec<MovedKey<AggPartial>> },
    /// Join keys with every live pane's buffered records.
    Join { shape: ShapeTag, keys: Vec<MovedKey<JoinPane>> },
    /// A user actor's split-off state (its own rkyv archive), the actor's type name, and the
    /// routing hashes of the keys it holds (sorted, deduplicated).
    User { actor: String, hashes: Vec<u64>, state: Vec<u8> },
}

impl KeyArchive {
    /// What this archive holds, for error messages.
    pub(crate) fn kind(&self) -> String {
        match self {
            KeyArchive::Aggregate { zero, .. } => format!("aggregate keys ({})", agg_name(zero)),
            KeyArchive::Window { zero, shape, .. } => {
                format!("window keys ({}, {})", agg_name(zero), shape_name(shape))
            }
            KeyArchive::Join { shape, .. } => format!("join keys ({})", shape_name(shape)),
            KeyArchive::User { actor, .. } => format!("user actor keys ({actor})"),
        }
    }

    /// Archive (in memory; cannot fail for these plain types).
    pub(crate) fn to_bytes(&self) -> AlignedVec {
        rkyv::to_bytes::<rkyv::rancor::Error>(self).expect("key archives serialise")
    }

    /// Validate and decode `bytes` (copied first if not aligned for rkyv).
    pub(crate) fn decode(bytes: &[u8]) -> Result<KeyArchive, MigrateError> {
        let corrupt = |e: rkyv::rancor::Error| MigrateError::Corrupt(e.to_string());
        if bytes.as_ptr().align_offset(16) == 0 {
            return rkyv::from_bytes::<KeyArchive, rkyv::rancor::Error>(bytes).map_err(corrupt);
        }
        let mut copy = AlignedVec::<16>::with_capacity(bytes.len());
        copy.extend_from_slice(bytes);
        rkyv::from_bytes::<KeyArchive, rkyv::rancor::Error>(&copy).map_err(corrupt)
    }
}

/// An aggregate's name and field type, e.g. `sum of i64`.
pub(crate) fn agg_name(zero: &AggPartial) -> String {
    let op = match zero {
        AggPartial::Count(_) => return "count".to_owned(),
        AggPartial::Sum(_) => "sum",
        AggPartial::Min(_) => "min",
        AggPartial::Max(_) => "max",
        AggPartial::AvgInt { .. } | AggPartial::AvgF64 { .. } => "avg",
    };
    let ty = match zero {
        AggPartial::AvgInt { .. } => "an integer".to_owned(),
        AggPartial::AvgF64 { .. } => "f64".to_owned(),
        _ => zero.output_type().to_string(),
    };
    format!("{op} of {ty}")
}

fn shape_name(shape: &ShapeTag) -> String {
    let [size, slide, lateness] = shape;
    format!("size {size} ms, slide {slide} ms, lateness {lateness} ms")
}

/// Whether two partials are of the same op over the same field type.
pub(crate) fn same_agg(a: &AggPartial, b: &AggPartial) -> bool {
    use crate::state::Mergeable;
    a.partition() == b.partition()
}

/// Whether `hash` is the routing hash of `key`: the key value's
/// [`key_hash`](crate::record::Value::key_hash), or, for a key taken from the upstream key hash
/// (a u64 whose value is the hash itself), the value.
pub(crate) fn hash_matches(key: &OwnedKey, hash: u64) -> bool {
    let mut value = Value::U64(0);
    key.write_into(&mut value);
    value.key_hash() == hash || *key == OwnedKey::Exact(ExactKey::U64(hash))
}

/// Check moved `(key, hash)` pairs: each hash is its key's, no key appears twice, and `present`
/// holds none of them.
pub(crate) fn check_new_keys<'a, S>(
    present: &KeyedState<S>,
    keys: impl Iterator<Item = (&'a OwnedKey, u64)>,
) -> Result<(), MigrateError> {
    let mut seen: KeyedState<()> = KeyedState::new();
    for (key, hash) in keys {
        if !hash_matches(key, hash) {
            return Err(MigrateError::Corrupt(format!("key {key:?} archived with a hash ({hash:#018x}) not its own")));
        }
        let key_ref = key.as_key_ref(hash);
        if seen.find(key_ref).is_some() {
            return Err(MigrateError::Corrupt(format!("key {key:?} appears twice in the archive")));
        }
        if present.find(key_ref).is_some() {
            return Err(MigrateError::KeyPresent { hash });
        }
        seen.insert_new(key_ref, ());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
