//! Where a source instance is in its input, so that a fresh instance can go on from there:
//! [`SourcePosition`], recorded in snapshots and handed back on recovery.
//!
//! A position is taken between two events (the shard polls a source one event at a time), and
//! names the next event the instance would produce: resuming from it yields exactly the events an
//! uninterrupted read would have yielded after that point, no more and no fewer.
//!
//! Positions are plain data (serde for manifests and logs, rkyv for snapshot part blobs).

/// A source instance's replay position.
#[derive(
    Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum SourcePosition {
    /// A generator instance: the seed it draws from, the index of its next event (None: it has
    /// finished) and how many events it has produced. Event `i` is a pure function of
    /// `(seed, i)`, so the instance regenerates exactly from `next`.
    Generator { seed: u64, next: Option<u64>, produced: u64 },
    /// A file: the byte offset of the next unread line (or CSV row), the lines consumed before it
    /// (so line numbers in errors stay right), and the records produced (for `rate` pacing).
    File { offset: u64, line: u64, produced: u64 },
    /// A Redis stream: the id of the last entry delivered to the shard (`0-0`: none yet); the
    /// next read asks for the entries after it.
    Redis { last_id: String },
    /// A source that cannot replay (tcp clients, custom sources): an app with one cannot
    /// recover exactly.
    Unreplayable,
}

impl SourcePosition {
    /// The kind of source the position is for, as config files name it.
    pub fn kind(&self) -> &'static str {
        match self {
            SourcePosition::Generator { .. } => "generator",
            SourcePosition::File { .. } => "file",
            SourcePosition::Redis { .. } => "redis",
            SourcePosition::Unreplayable => "unreplayable",
        }
    }

    /// The position as a snapshot part (an rkyv archive).
    pub fn to_bytes(&self) -> Vec<u8> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self).map(|b| b.to_vec()).unwrap_or_default()
    }

    /// A position read back from a snapshot part; the bytes are checked, not trusted.
    pub fn from_bytes(bytes: &[u8]) -> Result<SourcePosition, PositionError> {
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<SourcePosition, rkyv::rancor::Error>(&aligned)
            .map_err(|e| PositionError::Corrupt { reason: e.to_string() })
    }
}

/// A position that does not fit the source it is handed to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PositionError {
    #[error("a {found} position cannot be applied to a {source_kind} source")]
    WrongKind { found: &'static str, source_kind: &'static str },
    #[error("the position was taken with generator seed {found}, but this generator has seed {expected}")]
    Seed { expected: u64, found: u64 },
    #[error("generator event {next} does not belong to instance {instance} of {parallelism}")]
    Instance { next: u64, instance: u64, parallelism: u64 },
    #[error("cannot seek {path} to byte {offset}: {reason}")]
    Seek { path: String, offset: u64, reason: String },
    #[error("`{id}` is not a Redis stream id (`<ms>-<seq>`)")]
    StreamId { id: String },
    #[error("a source position in a snapshot is corrupt: {reason}")]
    Corrupt { reason: String },
    #[error("this source cannot replay: it has no position to resume from")]
    Unreplayable,
}
