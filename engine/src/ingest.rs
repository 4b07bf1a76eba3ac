//! What a shard polls for new events: the source instances of every kind behind one enum.

use dirigo_actors::record::Value;
use rkyv::util::AlignedVec;

/// A source written by an embedding program: writes one archive per call.
pub trait CustomSource {
    /// When the next event is due (ns since the source started); None when finished.
    fn next_due_ns(&self) -> Option<u64> {
        Some(0)
    }
    /// Append the next event's archive to `buf` (which is empty) and return its
    /// `(key_hash, event_time_ms)`; None when finished.
    fn next(&mut self, buf: &mut AlignedVec) -> Option<(u64, u64)>;
}

/// One event produced by a source, its payload left in the shard's scratch buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Produced {
    /// A record, in the values scratch; event time from the app's field or the given ms.
    Values { event_time: Option<u64> },
    /// An archive, in the bytes scratch.
    Archive { key_hash: u64, event_time: u64 },
    /// A malformed input was skipped (already logged); nothing to emit.
    Skipped,
    /// Nothing is available now (a socket source read all it could); poll again later.
    Idle,
}

/// How a parked shard learns that a socket source has input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoWakeup {
    /// A readiness waker rings the shard's doorbell (armed as the shard parks).
    Readiness,
    /// The shard wakes after this many ns to poll it.
    Poll(u64),
}

/// A source instance on one shard.
pub enum SourceInstance {
    Generator(crate::source::Generator),
    /// A file replayed as fast as possible (`rate` 0) or at `rate` records per second.
    File {
        reader: crate::source::FileReader,
        rate: u64,
        produced: u64,
    },
    Custom(Box<dyn CustomSource>),
    /// Clients pushing over TCP; runs until the engine stops.
    Tcp(Box<crate::tcp::TcpIngress>),
}

impl SourceInstance {
    /// When the next event is due, or None when finished.
    pub fn next_due_ns(&self) -> Option<u64> {
        match self {
            SourceInstance::Generator(g) => g.next_due_ns(),
            SourceInstance::File { rate: 0, .. } => Some(0),
            SourceInstance::File { rate, produced, .. } => Some(produced.saturating_mul(1_000_000_000) / rate),
            SourceInstance::Custom(c) => c.next_due_ns(),
            SourceInstance::Tcp(_) => Some(0),
        }
    }

    /// For sources fed by sockets (nothing is scheduled, bytes may arrive any time): how a parked
    /// shard learns of new input. None for scheduled sources.
    pub fn io_wakeup(&self) -> Option<IoWakeup> {
        match self {
            SourceInstance::Tcp(t) => Some(t.wakeup()),
            _ => None,
        }
    }

    /// Socket sources: ring the doorbell of the shard owning `signal` when input arrives.
    pub fn attach(&mut self, signal: &std::sync::Arc<crate::signal::ShardSignal>) {
        if let SourceInstance::Tcp(t) = self {
            t.attach(signal);
        }
    }

    /// Socket sources, before the shard parks: arm the readiness wake-up. False: the shard must
    /// not park now (input already waits where no readiness would report it, or arming failed
    /// and the source fell back to timed polls).
    pub fn arm(&mut self) -> bool {
        match self {
            SourceInstance::Tcp(t) => t.arm(),
            _ => true,
        }
    }

    /// Doorbell rings by readiness since the last call.
    pub fn take_io_wakes(&self) -> u64 {
        match self {
            SourceInstance::Tcp(t) => t.take_io_wakes(),
            _ => 0,
        }
    }

    /// Produce the next event into the scratch buffers; None when finished.
    pub fn produce(&mut self, values: &mut Vec<Value>, bytes: &mut AlignedVec) -> Option<Produced> {
        match self {
            SourceInstance::Generator(g) => g.next_event(values).map(|t| Produced::Values { event_time: Some(t) }),
            SourceInstance::File { reader, produced, .. } => match reader.next_record(values) {
                Ok(Some(())) => {
                    *produced += 1;
                    Some(Produced::Values { event_time: None })
                }
                Ok(None) => None,
                Err(e @ crate::source::SourceError::Line { .. }) => {
                    tracing::warn!("skipped: {e}");
                    Some(Produced::Skipped)
                }
                Err(e) => {
                    // The file itself failed: end the source rather than retry forever.
                    tracing::error!("source ends: {e}");
                    None
                }
            },
            SourceInstance::Custom(c) => {
                bytes.clear();
                c.next(bytes).map(|(key_hash, event_time)| Produced::Archive { key_hash, event_time })
            }
            SourceInstance::Tcp(t) => Some(t.produce(values, bytes)),
        }
    }
}
