//! The archived form of a built-in's moved keys (see [`crate::migrate`]): one tagged enum for
//! every kind of keyed built-in state, and the checks an import makes before it inserts anything.

use rkyv::util::AlignedVec;

use super::agg::AggPartial;
use super::keyed::OwnedKey;
use super::panes::{JoinPane, MovedKey};
use super::shape::ShapeTag;
use crate::migrate::MigrateError;

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

/// A copy of a built-in's keys, taken in place (cheap: the keys and their partials are cloned)
/// and archived later, anywhere (`Send`): a snapshot copies state on its shard and serialises it
/// on another thread. [`StateCopy::to_bytes`] gives the bytes an export of the same keys would.
#[derive(Debug)]
pub struct StateCopy(pub(crate) KeyArchive);

impl StateCopy {
    /// The archive, as an export of the same keys would make it.
    pub fn to_bytes(&self) -> AlignedVec {
        self.0.to_bytes()
    }
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
