//! The built-in functions of `dirigo-actors` behind one enum, statically dispatched.

use dirigo_actors::builtins::{Aggregate, Filter, Join, KeyBy, Map, Window};
use dirigo_actors::operator::{Emitter, Msg, Operator};
use dirigo_actors::record::ArchivedRecord;

/// A built-in function instance.
pub enum Builtin {
    Map(Map),
    Filter(Filter),
    KeyBy(KeyBy),
    Aggregate(Aggregate),
    Window(Window),
    Join(Join),
}

macro_rules! each {
    ($self:ident, $op:ident => $e:expr) => {
        match $self {
            Builtin::Map($op) => $e,
            Builtin::Filter($op) => $e,
            Builtin::KeyBy($op) => $e,
            Builtin::Aggregate($op) => $e,
            Builtin::Window($op) => $e,
            Builtin::Join($op) => $e,
        }
    };
}

impl Operator for Builtin {
    #[inline]
    fn on_record<E: Emitter>(&mut self, msg: Msg, rec: &ArchivedRecord, archive: &[u8], out: &mut E) {
        each!(self, op => op.on_record(msg, rec, archive, out))
    }
    fn on_watermark<E: Emitter>(&mut self, watermark: u64, out: &mut E) {
        each!(self, op => op.on_watermark(watermark, out))
    }
    fn on_end<E: Emitter>(&mut self, out: &mut E) {
        each!(self, op => op.on_end(out))
    }
}

impl Builtin {
    /// Records dropped for lateness (windows and joins).
    pub fn late_dropped(&self) -> u64 {
        match self {
            Builtin::Window(w) => w.late_dropped(),
            Builtin::Join(j) => j.late_dropped(),
            _ => 0,
        }
    }
}
