//! The interface between functions and the engine: an `Operator` consumes records, watermarks
//! and end-of-stream, and produces output through an `Emitter`.
//!
//! Built-in operators implement [`Operator`] with generic methods (statically dispatched by the
//! engine's operator enum); the emitter is the engine's router on the hot path.

use rkyv::util::AlignedVec;

use crate::envelope::Header;
use crate::record::{ArchivedRecord, Cell, Value};

/// What the engine knows of the message being applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg {
    /// Partitioning key hash the message was routed by.
    pub key_hash: u64,
    /// Event time in ms.
    pub event_time: u64,
    /// Input port (0, or 1 for a join's right input).
    pub port: u8,
}

/// Where an operator's output goes. Hot path: implementations must not allocate per call in
/// steady state.
pub trait Emitter {
    /// Emit a new record made of `values`, partitioned by `key_hash`, at `event_time` (ms).
    fn emit(&mut self, key_hash: u64, event_time: u64, values: &[Value]);
    /// Pass an existing archive on unchanged: the bytes are copied, never deserialised.
    fn forward(&mut self, key_hash: u64, event_time: u64, archive: &[u8]);
    /// Emit a new record of scalar values, given in their archived form: the same record as
    /// [`emit`](Emitter::emit) of their values, which the engine's router archives by copying
    /// the cells (built-ins with scalar outputs use it). The default makes the values (it
    /// allocates: for emitters off the hot path).
    fn emit_cells(&mut self, key_hash: u64, event_time: u64, cells: &[Cell]) {
        let values: Vec<Value> = cells.iter().map(|c| c.to_value()).collect();
        self.emit(key_hash, event_time, &values)
    }
    /// Emit a new record whose archive `write` appends to the buffer it is given, from the
    /// buffer's end, which is 16-byte aligned when it is called (as rkyv's `to_bytes_in` does
    /// with a buffer handed to it): the engine's router gives it the buffer the record is
    /// staged in, so the archive is written once, where it goes (typed emits use it). The
    /// default archives into a buffer of its own and forwards that (it allocates: for
    /// emitters off the hot path).
    fn emit_archived(&mut self, key_hash: u64, event_time: u64, write: &mut dyn FnMut(&mut AlignedVec)) {
        let mut buf = AlignedVec::new();
        write(&mut buf);
        self.forward(key_hash, event_time, &buf)
    }
    /// [`emit_archived`](Emitter::emit_archived) of a record made while applying message
    /// `parent`: what user functions' emits call, so that an emitter handed a batch of messages
    /// at once (`ErasedFunction::on_values`) knows which of them made the record. The default
    /// ignores `parent` (an emitter applied one message at a time knows it).
    fn emit_archived_from(
        &mut self,
        _parent: &Header,
        key_hash: u64,
        event_time: u64,
        write: &mut dyn FnMut(&mut AlignedVec),
    ) {
        self.emit_archived(key_hash, event_time, write)
    }
    /// [`forward`](Emitter::forward) of an archive passed on while applying message `parent`
    /// (see [`Emitter::emit_archived_from`]).
    fn forward_from(&mut self, _parent: &Header, key_hash: u64, event_time: u64, archive: &[u8]) {
        self.forward(key_hash, event_time, archive)
    }
}

/// A function instance on one shard: holds the state of every actor of that function homed there.
pub trait Operator {
    /// Apply one record. `archive` is the record's rkyv bytes (for zero-copy pass-through).
    fn on_record<E: Emitter>(&mut self, msg: Msg, rec: &ArchivedRecord, archive: &[u8], out: &mut E);

    /// Whether [`Operator::prefetch`] does anything: asked once per batch of records, which
    /// are then walked with it or without it.
    #[inline(always)]
    fn prefetches(&self) -> bool {
        false
    }

    /// A record of `msg` is applied soon (a few records from now): start loading what
    /// applying it reads (a keyed table's entry). A hint, with no effect on results; the
    /// default does nothing.
    #[inline(always)]
    fn prefetch(&self, _msg: &Msg) {}

    /// Event time reached `watermark` (ms) on every input: fire what is due.
    /// The engine forwards the watermark downstream after this returns.
    fn on_watermark<E: Emitter>(&mut self, _watermark: u64, _out: &mut E) {}

    /// Every input has ended: flush what is left. Called once, before `End` goes downstream.
    fn on_end<E: Emitter>(&mut self, _out: &mut E) {}
}

/// An emitter that collects into vectors: for tests and sequential references.
#[derive(Debug, Default)]
pub struct VecEmitter {
    /// (key_hash, event_time, values) per emitted record, in order.
    pub out: Vec<(u64, u64, Vec<Value>)>,
}

impl Emitter for VecEmitter {
    fn emit(&mut self, key_hash: u64, event_time: u64, values: &[Value]) {
        self.out.push((key_hash, event_time, values.to_vec()));
    }
    fn forward(&mut self, key_hash: u64, event_time: u64, archive: &[u8]) {
        let rec = crate::record::access(archive).expect("forwarded archive is valid");
        self.out.push((key_hash, event_time, rec.to_values()));
    }
}
