//! What a shard polls for new events: the source instances of every kind behind one enum
//! (socket sources are polled through `dirigo_net`'s [`Ingress`] trait).

use dirigo_actors::function::{ValueBatch, ValueRecord};
use dirigo_actors::record::{Cell, Value};
use dirigo_net::ingress::{Ingress, IoWakeup, Produced};
use rkyv::util::AlignedVec;

/// A source written by an embedding program: makes one typed value per call, which the engine
/// archives only where it must (a function that runs where it was made may take the value:
/// `Function::on_value`).
pub trait CustomSource {
    /// When the next event is due (ns since the source started); None when finished.
    fn next_due_ns(&self) -> Option<u64> {
        Some(0)
    }
    /// Make the next event, kept until the next call ([`CustomSource::current`]), and return
    /// its `(key_hash, event_time_ms)`; None when finished.
    fn advance(&mut self) -> Option<(u64, u64)>;
    /// The event the last [`CustomSource::advance`] made (called only after one made one).
    fn current(&self) -> &dyn ValueRecord;
    /// Whether [`CustomSource::advance_batch`] makes events: every event is due at once (read
    /// as fast as the engine takes them). Default: no, events are made one by one.
    fn batches(&self) -> bool {
        false
    }
    /// Make up to `max` events at once, kept until the next call ([`CustomSource::batch`]);
    /// returns how many (0: finished). Called only where [`CustomSource::batches`] says so, and
    /// freely mixed with [`CustomSource::advance`]: each makes the next events of the source.
    fn advance_batch(&mut self, _max: usize) -> usize {
        0
    }
    /// The events the last [`CustomSource::advance_batch`] made: each one's `(key_hash,
    /// event_time_ms)`, and their values, in order.
    fn batch(&self) -> (&[(u64, u64)], &dyn ValueBatch) {
        unreachable!("a source that makes no batches was asked for one")
    }
}

/// A source instance on one shard.
pub enum SourceInstance {
    Generator(super::Generator),
    /// A file replayed as fast as possible (`rate` 0) or at `rate` records per second.
    File {
        reader: super::FileReader,
        rate: u64,
        produced: u64,
    },
    Custom(Box<dyn CustomSource>),
    /// Clients pushing over TCP; runs until the engine stops.
    Tcp(Box<dirigo_net::tcp::TcpIngress>),
    /// A Redis stream, read by a thread of its own.
    Redis(Box<super::RedisSource>),
}

/// How often a parked shard polls a redis source.
const REDIS_POLL_NS: u64 = 1_000_000;

impl SourceInstance {
    /// When the next event is due, or None when finished.
    pub fn next_due_ns(&self) -> Option<u64> {
        match self {
            SourceInstance::Generator(g) => g.next_due_ns(),
            SourceInstance::File { rate: 0, .. } => Some(0),
            SourceInstance::File { rate, produced, .. } => Some(produced.saturating_mul(1_000_000_000) / rate),
            SourceInstance::Custom(c) => c.next_due_ns(),
            SourceInstance::Tcp(_) | SourceInstance::Redis(_) => Some(0),
        }
    }

    /// For sources fed by sockets (nothing is scheduled, bytes may arrive any time): how a parked
    /// shard learns of new input. None for scheduled sources.
    pub fn io_wakeup(&self) -> Option<IoWakeup> {
        match self {
            SourceInstance::Tcp(t) => Some(t.wakeup()),
            SourceInstance::Redis(_) => Some(IoWakeup::Poll(REDIS_POLL_NS)),
            _ => None,
        }
    }

    /// Socket sources: when (engine clock) the shard must poll them even without input (a
    /// connection's idle timeout falls due); None: only input matters, or not a socket source.
    pub fn io_due_ns(&self) -> Option<u64> {
        match self {
            SourceInstance::Tcp(t) => t.due_ns(),
            _ => None,
        }
    }

    /// A tcp source's connections, records and refusals so far; None for other sources.
    pub fn tcp_counts(&self) -> Option<dirigo_net::tcp::IngressCounts> {
        match self {
            SourceInstance::Tcp(t) => Some(t.counts()),
            _ => None,
        }
    }

    /// Socket sources: ring the doorbell of the shard owning `signal` when input arrives.
    pub fn attach(&mut self, signal: &std::sync::Arc<dirigo_net::signal::ShardSignal>) {
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

    /// Where this instance is in its input: resuming a fresh instance of the same source from it
    /// ([`seek`](Self::seek)) yields exactly the events this one would yield next.
    pub fn position(&self) -> super::SourcePosition {
        match self {
            SourceInstance::Generator(g) => g.position(),
            SourceInstance::File { reader, produced, .. } => {
                super::SourcePosition::File { offset: reader.offset(), line: reader.lines_read(), produced: *produced }
            }
            SourceInstance::Redis(r) => r.position(),
            SourceInstance::Custom(_) | SourceInstance::Tcp(_) => super::SourcePosition::Unreplayable,
        }
    }

    /// Go on from `position`, taken by [`position`](Self::position) from an instance of the
    /// same source (before it produces anything: a freshly built instance).
    pub fn seek(&mut self, position: &super::SourcePosition) -> Result<(), super::PositionError> {
        use super::SourcePosition as P;
        match (self, position) {
            (SourceInstance::Generator(g), p) => g.seek(p),
            (SourceInstance::File { reader, produced, .. }, P::File { offset, line, produced: done }) => {
                reader.seek(*offset, *line)?;
                *produced = *done;
                Ok(())
            }
            (SourceInstance::File { .. }, p) => {
                Err(super::PositionError::WrongKind { found: p.kind(), source_kind: "file" })
            }
            (SourceInstance::Redis(r), p) => r.seek(p),
            (SourceInstance::Custom(_) | SourceInstance::Tcp(_), _) => Err(super::PositionError::Unreplayable),
        }
    }

    /// Produce the next event into the scratch buffers; None when finished.
    pub fn produce(&mut self, values: &mut Vec<Value>, bytes: &mut AlignedVec) -> Option<Produced> {
        self.produce_into(values, None, bytes)
    }

    /// [`SourceInstance::produce`], and given `cells` (the shard's hot path), a generator of
    /// scalars makes its event as archived cells there (`Produced::Cells`), with no `Value`
    /// made.
    #[inline]
    pub fn produce_into(
        &mut self,
        values: &mut Vec<Value>,
        cells: Option<&mut Vec<Cell>>,
        bytes: &mut AlignedVec,
    ) -> Option<Produced> {
        match (self, cells) {
            (SourceInstance::Generator(g), Some(cells)) if g.is_scalar() => {
                g.next_cells(cells).map(|t| Produced::Cells { event_time: Some(t) })
            }
            (this, _) => this.produce_values(values, bytes),
        }
    }

    /// An event of any source as values or an archive.
    #[inline]
    fn produce_values(&mut self, values: &mut Vec<Value>, bytes: &mut AlignedVec) -> Option<Produced> {
        match self {
            SourceInstance::Generator(g) => g.next_event(values).map(|t| Produced::Values { event_time: Some(t) }),
            SourceInstance::File { reader, produced, .. } => match reader.next_record(values) {
                Ok(Some(())) => {
                    *produced += 1;
                    Some(Produced::Values { event_time: None })
                }
                Ok(None) => None,
                Err(e @ super::SourceError::Line { .. }) => {
                    tracing::warn!("skipped: {e}");
                    Some(Produced::Skipped)
                }
                Err(e) => {
                    // The file itself failed: end the source rather than retry forever.
                    tracing::error!("source ends: {e}");
                    None
                }
            },
            // Off the hot path (a shard's poll takes a custom source's values as they are:
            // `shard::sources`): archived with an arena of its own.
            SourceInstance::Custom(c) => c.advance().map(|(key_hash, event_time)| {
                bytes.clear();
                c.current().archive_into(bytes, &mut rkyv::ser::allocator::Arena::new());
                Produced::Archive { key_hash, event_time }
            }),
            SourceInstance::Tcp(t) => Some(t.produce(values, bytes)),
            SourceInstance::Redis(r) => r.produce(values),
        }
    }
}
