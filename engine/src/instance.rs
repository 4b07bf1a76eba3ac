//! Function instances on a shard: built-in functions, sinks and user functions behind one enum
//! ([`OperatorInstance`]), the built-ins behind another ([`Builtin`]), so the hot path dispatches
//! with a `match`, not a virtual call (user code excepted).

use dirigo_actors::activation::ActorOp;
use dirigo_actors::builtins::{Aggregate, Filter, Join, KeyBy, Map, Window};
use dirigo_actors::dual_mode::MessageClass;
use dirigo_actors::envelope::Header;
use dirigo_actors::function::{ErasedActor, ErasedFunction, StreamType, TypedInput};
use dirigo_actors::migrate::MigrateError;
use dirigo_actors::operator::{Emitter, Msg, Operator};
use dirigo_actors::record::{ArchivedRecord, RecordsOnly};
use dirigo_net::mailbox::{Batch, Entry};
use rkyv::util::AlignedVec;

use crate::sink::Sink;

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

/// How many records ahead of the one it applies a built-in is told of the next
/// (`Operator::prefetch`): enough for a line to arrive from L2 or L3 while the records between
/// are applied.
const PREFETCH_AHEAD: usize = 4;

/// An instance's state for a snapshot: archived already, or copied to be archived elsewhere.
pub enum StateOut {
    Bytes(AlignedVec),
    Copy(dirigo_actors::builtins::StateCopy),
}

/// What runs around each message of a stretch ([`OperatorInstance::on_stretch`]): the shard's
/// hooks before and after it; the messages' outputs go to it, as to any emitter.
pub trait StretchCx: Emitter {
    /// Message `h` is about to be applied.
    fn before(&mut self, h: &Header);
    /// Message `h` was applied.
    fn after(&mut self, h: &Header);
    /// Whether user code failed on the message just applied: stop the stretch there. Asked
    /// after user functions and actors only (built-ins and sinks run no user code).
    fn failed(&mut self) -> bool;
    /// Whether `before` or `after` does anything for this stretch: when neither does, a
    /// function that ignores its records (a latency or null sink) need not be walked through
    /// them.
    fn observes(&self) -> bool;
    /// Whether `stretch` may be applied in one call (`ErasedFunction::on_messages`): no hook
    /// runs around each message, so what `before` does for each is done here for all of them
    /// first (the rebalancer's counts), and each emit names its parent (`emit_archived_from`).
    fn batch(&mut self, stretch: &[Entry]) -> bool;
}

/// One function instance on one shard.
// Instances sit in a per-shard table, one per function: their size does not matter, while boxing
// the built-ins would add a pointer chase per message.
#[allow(clippy::large_enum_variant)]
pub enum OperatorInstance {
    /// A built-in function of a config app, with the proof that its inputs are records.
    Builtin(Builtin, RecordsOnly),
    Sink(Sink),
    User(Box<dyn ErasedFunction>),
    /// A user actor (mergeable state, critical messages) run without lessees.
    Actor(Box<dyn ErasedActor>),
}

impl OperatorInstance {
    /// Apply `stretch`, data messages of this instance whose payloads are in `batch`, in
    /// order: the instance's kind (and a built-in's) is matched once for the stretch, not per
    /// message, and `cx` runs the shard's hooks around each message and takes its outputs. True
    /// if `cx` stopped the stretch (user code failed): the rest is not applied. Hot path.
    #[inline]
    pub fn on_stretch<S: StretchCx>(&mut self, stretch: &[Entry], batch: &Batch, cx: &mut S) -> bool {
        // Entry `$e` applied by `$apply`, its header `$h` and payload `$p`, the hooks around it.
        macro_rules! apply {
            ($e:expr, |$h:ident, $p:ident| $apply:expr) => {{
                let ($h, $p) = (&$e.header, batch.payload($e.off, $e.len));
                cx.before($h);
                $apply;
                cx.after($h);
            }};
        }
        macro_rules! each_message {
            // `$user`: the instance runs user code, which may fail (built-ins and sinks run none,
            // so they skip the check).
            ($user:literal, |$h:ident, $p:ident| $apply:expr) => {{
                for e in stretch {
                    apply!(e, |$h, $p| $apply);
                    if $user && cx.failed() {
                        return true;
                    }
                }
                false
            }};
        }
        let msg = |h: &Header| Msg { key_hash: h.key_hash, event_time: h.event_time, port: h.port };
        match self {
            OperatorInstance::Builtin(b, records) => {
                let records = *records;
                macro_rules! on_record {
                    ($op:ident, $e:expr) => {
                        apply!($e, |h, p| $op.on_record(msg(h), records.read(p).get(), p, cx))
                    };
                }
                each!(b, op => match op.prefetches() {
                    // Each record's state loaded a few records ahead (`Operator::prefetch`):
                    // the first ones at once, then each record's with the one that far before
                    // it, then the last ones with none.
                    true => {
                        let ahead = PREFETCH_AHEAD.min(stretch.len());
                        stretch[..ahead].iter().for_each(|e| op.prefetch(&msg(&e.header)));
                        let (body, tail) = stretch.split_at(stretch.len() - ahead);
                        for (e, next) in body.iter().zip(&stretch[ahead..]) {
                            op.prefetch(&msg(&next.header));
                            on_record!(op, e);
                        }
                        tail.iter().for_each(|e| on_record!(op, e));
                        false
                    }
                    false => {
                        stretch.iter().for_each(|e| on_record!(op, e));
                        false
                    }
                })
            }
            // A latency or null sink's figures are taken by the shard (`outputs_due`).
            OperatorInstance::Sink(s) if s.ignores_records() && !cx.observes() => false,
            OperatorInstance::Sink(s) => each_message!(false, |h, p| s.on_data(h, p)),
            // One dyn call for the stretch where no hook runs around each message.
            OperatorInstance::User(f) if cx.batch(stretch) => {
                f.on_messages(stretch, &batch.bytes, cx);
                cx.failed()
            }
            OperatorInstance::User(f) => each_message!(true, |h, p| f.on_message(h, p, cx)),
            OperatorInstance::Actor(a) if cx.batch(stretch) => {
                a.on_messages(stretch, &batch.bytes, cx);
                cx.failed()
            }
            OperatorInstance::Actor(a) => each_message!(true, |h, p| {
                let class = if a.is_critical(h, p) { MessageClass::Critical } else { MessageClass::Regular };
                a.on_message(h, p, class, cx)
            }),
        }
    }

    /// Bind a user function's or actor's types (see `Plan::bind_types`): the type its emits
    /// must have, and the proof that its inputs are archives of its type. Built-ins and sinks
    /// have none.
    pub fn bind_types(&mut self, output: Option<StreamType>, typed: Option<TypedInput>) {
        match self {
            OperatorInstance::User(f) => {
                output.into_iter().for_each(|t| f.bind_output(t));
                typed.into_iter().for_each(|p| f.trust_input(p));
            }
            OperatorInstance::Actor(a) => {
                output.into_iter().for_each(|t| a.bind_output(t));
                typed.into_iter().for_each(|p| a.trust_input(p));
            }
            OperatorInstance::Builtin(..) | OperatorInstance::Sink(_) => {}
        }
    }

    /// Event time advanced on every input.
    pub fn on_watermark<E: Emitter>(&mut self, watermark: u64, out: &mut E) {
        match self {
            OperatorInstance::Builtin(b, _) => b.on_watermark(watermark, out),
            OperatorInstance::Sink(_) => {}
            OperatorInstance::User(f) => f.on_watermark(watermark, out),
            OperatorInstance::Actor(a) => a.on_watermark(watermark, out),
        }
    }

    /// Every input ended.
    pub fn on_end<E: Emitter>(&mut self, out: &mut E) {
        match self {
            OperatorInstance::Builtin(b, _) => b.on_end(out),
            OperatorInstance::Sink(s) => s.flush(),
            OperatorInstance::User(f) => f.on_end(out),
            OperatorInstance::Actor(a) => a.on_end(out),
        }
    }

    /// The instance as a dual-mode actor, if its state is mergeable (a window, a user actor).
    /// Cold path (once per instance): the large `Err` is fine.
    #[allow(clippy::result_large_err)]
    pub fn into_actor(self) -> Result<ActorOp, OperatorInstance> {
        match self {
            OperatorInstance::Builtin(Builtin::Window(w), records) if w.merges_exactly() => {
                Ok(ActorOp::Window(w, records))
            }
            OperatorInstance::Actor(a) => Ok(ActorOp::User(a)),
            other => Err(other),
        }
    }

    /// Whether this instance's keys can move to another shard (key-group migration): every
    /// built-in and sink (stateless ones move nothing) except windows and joins that allow
    /// lateness, a user actor that splits its state; a user function cannot (its state is
    /// opaque). What cannot move stays where its groups start.
    pub fn migrates(&self) -> bool {
        match self {
            OperatorInstance::Builtin(Builtin::Window(w), _) => w.moves_exactly(),
            OperatorInstance::Builtin(Builtin::Join(j), _) => j.moves_exactly(),
            OperatorInstance::Builtin(..) | OperatorInstance::Sink(_) => true,
            OperatorInstance::User(_) => false,
            OperatorInstance::Actor(a) => a.can_split(),
        }
    }

    /// Remove the keys whose routing hash is `moving` and return them archived (empty: no
    /// state). Only called when [`Self::migrates`].
    pub fn export_keys(&mut self, moving: &dyn Fn(u64) -> bool) -> AlignedVec {
        match self {
            OperatorInstance::Builtin(Builtin::Aggregate(a), _) => a.export_keys(moving),
            OperatorInstance::Builtin(Builtin::Window(w), _) => w.export_keys(moving),
            OperatorInstance::Builtin(Builtin::Join(j), _) => j.export_keys(moving),
            OperatorInstance::Builtin(..) | OperatorInstance::Sink(_) => AlignedVec::new(),
            OperatorInstance::Actor(a) => a.split_off(moving).expect("only actors that split are moved"),
            OperatorInstance::User(_) => unreachable!("a user function's keys never move"),
        }
    }

    /// Every key archived as [`Self::export_keys`] would, kept in place (a snapshot's copy of
    /// the state): a rolling aggregate's keys copied, to be archived off the shard; others
    /// archived now (exported and imported back). Only called when [`Self::migrates`].
    pub fn archive_keys(&mut self) -> Result<StateOut, MigrateError> {
        if let OperatorInstance::Builtin(Builtin::Aggregate(a), _) = self {
            return Ok(StateOut::Copy(a.copy_keys()));
        }
        let all = self.export_keys(&|_| true);
        self.import_keys(&all)?;
        Ok(StateOut::Bytes(all))
    }

    /// Merge keys another instance of the same function exported (disjoint from these).
    pub fn import_keys(&mut self, archive: &[u8]) -> Result<(), MigrateError> {
        match self {
            OperatorInstance::Builtin(Builtin::Aggregate(a), _) => a.import_keys(archive),
            OperatorInstance::Builtin(Builtin::Window(w), _) => w.import_keys(archive),
            OperatorInstance::Builtin(Builtin::Join(j), _) => j.import_keys(archive),
            OperatorInstance::Builtin(..) | OperatorInstance::Sink(_) => Ok(()),
            OperatorInstance::Actor(a) => a.import_split(archive),
            OperatorInstance::User(_) => unreachable!("a user function's keys never move"),
        }
    }

    /// Records dropped so far for arriving after their window's allowed lateness.
    pub fn late_dropped(&self) -> u64 {
        match self {
            OperatorInstance::Builtin(b, _) => b.late_dropped(),
            _ => 0,
        }
    }

    /// Periodic flush of buffered output (sinks).
    pub fn flush(&mut self) {
        if let OperatorInstance::Sink(s) = self {
            s.flush()
        }
    }
}

/// A built-in function instance.
pub enum Builtin {
    Map(Map),
    Filter(Filter),
    KeyBy(KeyBy),
    Aggregate(Aggregate),
    Window(Window),
    Join(Join),
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
