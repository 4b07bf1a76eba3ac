//! The state of a dual-mode actor's activation: an operator whose state is mergeable, so a
//! lessee can fold records into a partial that its lessor combines at each barrier.
//!
//! Built-in: [`Window`] (records fold into panes; the watermark fire is the critical message).
//! User code: [`ErasedActor`], the type-erased form of [`crate::function::Actor`]. A partial travels
//! from a lessee's shard to its lessor's as an rkyv archive ([`ActorOp::export`]), decoded on
//! arrival into [`ActorOp::Shipped`] and combined by the lessor's machine.

use crate::builtins::moved::KeyArchive;
use crate::builtins::{Window, WindowPartial};
use crate::dual_mode::MessageClass;
use crate::envelope::Header;
use crate::migrate::MigrateError;
use crate::operator::{Emitter, Msg, Operator};
use crate::record::RecordsOnly;
use crate::state::Mergeable;
use rkyv::util::AlignedVec;

use crate::function::ErasedActor;

/// A partial received from a lessee, decoded, until the lessor's machine combines it.
pub enum Shipped {
    Window(WindowPartial),
    User(AlignedVec),
}

/// The mergeable operator of one activation.
// One per actor activation, in a machine: the size does not matter, while boxing the window
// would add a pointer chase per message.
#[allow(clippy::large_enum_variant)]
pub enum ActorOp {
    /// A built-in window, with the proof that its inputs are records.
    Window(Window, RecordsOnly),
    User(Box<dyn ErasedActor>),
    Shipped(Shipped),
}

impl ActorOp {
    /// Whether a message may run on a lessee: it only folds into state (not critical, and for
    /// a window, all its windows still open at `watermark`, the instance's watermark when the
    /// message arrived, which it will meet).
    #[inline]
    pub fn folds_anywhere(&self, h: &Header, payload: &[u8], watermark: u64) -> bool {
        match self {
            ActorOp::Window(w, _) => w.folds_anywhere(h.event_time, watermark),
            ActorOp::User(u) => !u.is_critical(h, payload),
            ActorOp::Shipped(_) => false,
        }
    }

    /// Whether the watermark moving from `from` to `to` is a barrier: for a window, only when it
    /// crosses a window end or an end plus lateness (otherwise it changes nothing a lessee's
    /// partial could miss); for a user actor, when it uses watermarks (its `on_watermark`
    /// sees the state).
    pub fn watermark_is_critical(&self, from: u64, to: u64) -> bool {
        match self {
            ActorOp::Window(w, _) => w.watermark_matters(from, to),
            ActorOp::User(u) => u.uses_watermarks(),
            ActorOp::Shipped(_) => false,
        }
    }

    /// Whether a data message is critical (user actors only).
    #[inline]
    pub fn is_critical(&self, h: &Header, payload: &[u8]) -> bool {
        match self {
            ActorOp::User(u) => u.is_critical(h, payload),
            _ => false,
        }
    }

    /// Apply a data message. Hot path.
    #[inline]
    pub fn on_data<E: Emitter>(&mut self, h: &Header, payload: &[u8], class: MessageClass, out: &mut E) {
        match self {
            ActorOp::Window(w, records) => {
                let msg = Msg { key_hash: h.key_hash, event_time: h.event_time, port: h.port };
                w.on_record(msg, records.read(payload).get(), payload, out)
            }
            ActorOp::User(u) => u.on_message(h, payload, class, out),
            ActorOp::Shipped(_) => unreachable!("a shipped partial never runs messages"),
        }
    }

    /// Event time advanced on every input.
    pub fn on_watermark<E: Emitter>(&mut self, watermark: u64, out: &mut E) {
        match self {
            ActorOp::Window(w, _) => w.on_watermark(watermark, out),
            ActorOp::User(u) => u.on_watermark(watermark, out),
            ActorOp::Shipped(_) => {}
        }
    }

    /// Every input ended.
    pub fn on_end<E: Emitter>(&mut self, out: &mut E) {
        match self {
            ActorOp::Window(w, _) => w.on_end(out),
            ActorOp::User(u) => u.on_end(out),
            ActorOp::Shipped(_) => {}
        }
    }

    /// The partial state as an rkyv archive.
    pub fn export(&self) -> AlignedVec {
        match self {
            ActorOp::Window(w, _) => {
                rkyv::to_bytes::<rkyv::rancor::Error>(&w.export_partial()).expect("partial archives")
            }
            ActorOp::User(u) => u.export(),
            ActorOp::Shipped(_) => unreachable!("a shipped partial is not shipped again"),
        }
    }

    /// Decode a partial archived by a lessee of this actor (`export`).
    pub fn decode_partial(&self, bytes: &[u8]) -> ActorOp {
        ActorOp::Shipped(match self {
            ActorOp::Window(..) => {
                // Archives from another shard of this process: validated all the same (cold path).
                Shipped::Window(rkyv::from_bytes::<WindowPartial, rkyv::rancor::Error>(bytes).expect("window partial"))
            }
            _ => {
                let mut copy = AlignedVec::with_capacity(bytes.len());
                copy.extend_from_slice(bytes);
                Shipped::User(copy)
            }
        })
    }

    /// [`ActorOp::decode_partial`] of an archive this shard may keep: a user actor's partial
    /// is kept as it is, not copied.
    pub fn decode_partial_owned(&self, bytes: AlignedVec) -> ActorOp {
        match self {
            ActorOp::Window(..) => self.decode_partial(&bytes),
            _ => ActorOp::Shipped(Shipped::User(bytes)),
        }
    }

    /// Whether this activation's keys can move to another shard (key-group migration): a window
    /// always; a user actor when it implements [`Actor::split_off`](crate::function::Actor::split_off).
    pub fn migrates(&self) -> bool {
        match self {
            ActorOp::Window(w, _) => w.moves_exactly(),
            ActorOp::User(u) => u.can_split(),
            ActorOp::Shipped(_) => false,
        }
    }

    /// Remove every key whose routing key hash (the header's `key_hash` its messages are routed
    /// by) is `moving` and return them as an rkyv archive for [`ActorOp::import_keys`] on the
    /// activation of the same function on another shard; `None` when the keys cannot move (a
    /// user actor that does not split, or that failed). Call it on a lessor with no lessees
    /// (every partial combined). Cold path.
    pub fn export_keys(&mut self, moving: &dyn Fn(u64) -> bool) -> Option<AlignedVec> {
        match self {
            ActorOp::Window(w, _) => Some(w.export_keys(moving)),
            ActorOp::User(u) => u.split_off(moving),
            ActorOp::Shipped(_) => None,
        }
    }

    /// Every key archived as [`ActorOp::export_keys`] would, kept in place (a snapshot's copy of
    /// the state): exported and imported straight back. None when the state does not split.
    pub fn archive_keys(&mut self) -> Option<AlignedVec> {
        let all = self.export_keys(&|_| true)?;
        self.import_keys(&all).expect("an activation takes back its own keys");
        Some(all)
    }

    /// Fold in keys exported by [`ActorOp::export_keys`] from another activation of the same
    /// function, none of which this one holds (user actors: combined like a partial, which for
    /// disjoint keys is a union). The archive is validated; on error nothing changes.
    ///
    /// Watermark contract: after the import, the caller calls [`ActorOp::on_watermark`] with
    /// this activation's current watermark (the last one it saw, or later); for a window it
    /// fires exactly the imported windows due then (see
    /// [`Window::import_keys`](crate::builtins::Window::import_keys)). A user actor that uses
    /// watermarks sees that call as one more watermark.
    pub fn import_keys(&mut self, archive: &[u8]) -> Result<(), MigrateError> {
        match self {
            ActorOp::Window(w, _) => w.import_keys(archive),
            ActorOp::User(u) => u.import_split(archive),
            ActorOp::Shipped(_) => Err(MigrateError::WrongKind {
                expected: "a shipped partial (which takes no keys)".into(),
                found: KeyArchive::decode(archive)?.kind(),
            }),
        }
    }

    /// Records dropped for lateness.
    pub fn late_dropped(&self) -> u64 {
        match self {
            ActorOp::Window(w, _) => w.late_dropped(),
            _ => 0,
        }
    }
}

impl Mergeable for ActorOp {
    fn partition(&self) -> Self {
        match self {
            ActorOp::Window(w, records) => ActorOp::Window(w.empty_like(), *records),
            ActorOp::User(u) => ActorOp::User(u.partition()),
            ActorOp::Shipped(_) => unreachable!("a shipped partial is never partitioned"),
        }
    }

    fn combine(&mut self, partial: Self) {
        match (self, partial) {
            (ActorOp::Window(w, _), ActorOp::Shipped(Shipped::Window(p))) => w.merge_partial(p),
            (ActorOp::Window(w, _), ActorOp::Window(p, _)) => w.merge_partial(p.export_partial()),
            (ActorOp::User(u), ActorOp::Shipped(Shipped::User(bytes))) => u.combine_archive(&bytes),
            (ActorOp::User(u), ActorOp::User(p)) => u.combine_archive(&p.export()),
            _ => unreachable!("partials combine into an activation of the same function"),
        }
    }
}
