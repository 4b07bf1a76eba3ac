//! The user's programming model: a [`Function`] (a stateful function over one message type), an
//! [`Actor`] (a dual-mode virtual actor with [`Mergeable`] state and critical messages), the
//! context [`Cx`] they see, and their type-erased forms ([`ErasedFunction`], [`ErasedActor`]) that
//! the engine stores and calls once per message. A function fed by a typed source may also
//! take that source's events as the values they were made as, where it runs in the source's
//! poll ([`Function::on_value`], with [`Function::TAKES_VALUES`]): nothing is archived for it.
//!
//! Nothing here needs the runtime: [`Harness`] applies a function to messages and collects what
//! it emits, so a function is unit-tested like any other Rust code:
//!
//! ```
//! use dirigo_actors::function::{key_u64, Cx, Function, Harness};
//!
//! /// A running count per word.
//! #[derive(Default)]
//! struct Count(std::collections::HashMap<String, u64>);
//!
//! impl Function for Count {
//!     type In = String;
//!     fn on_message(&mut self, cx: &mut Cx<'_>, word: &rkyv::Archived<String>) {
//!         let n = self.0.entry(word.as_str().to_owned()).or_default();
//!         *n += 1;
//!         cx.emit(cx.key_hash(), cx.event_time(), &(word.as_str().to_owned(), *n));
//!     }
//! }
//!
//! let mut h = Harness::new(Count::default());
//! for w in ["a", "b", "a"] {
//!     h.send(key_u64(w.len() as u64), 7, &w.to_owned());
//! }
//! let counts: Vec<(String, u64)> = h.outputs().iter().map(|o| o.decode::<(String, u64)>().unwrap()).collect();
//! assert_eq!(counts, [("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]);
//! assert!(h.outputs().iter().all(|o| o.event_time == 7));
//! ```

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::builtins::moved::KeyArchive;
use crate::dual_mode::MessageClass;
use crate::envelope::{Entry, Header};
use crate::migrate::MigrateError;
use crate::operator::Emitter;
use crate::record::{hash_bytes, mix64, Value};
use crate::state::Mergeable;

/// A message type: anything rkyv can archive into an engine buffer.
pub trait Message:
    rkyv::Archive + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}
impl<T> Message for T where
    T: rkyv::Archive + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}

/// A message as the value it was made as (a typed source's event), not yet archived: what the
/// engine hands a function that runs where the message was made ([`Function::on_value`]), and
/// archives only when it goes anywhere else.
pub trait ValueRecord {
    /// The value, to be downcast to the taker's input type.
    fn value(&self) -> &dyn Any;
    /// Append its archive to `buf`, from its end (16-byte aligned when called), `arena` as
    /// rkyv's scratch.
    fn archive_into(&self, buf: &mut AlignedVec, arena: &mut rkyv::ser::allocator::Arena);
}

impl<T: Message + 'static> ValueRecord for T {
    #[inline(always)]
    fn value(&self) -> &dyn Any {
        self
    }
    #[inline]
    fn archive_into(&self, buf: &mut AlignedVec, arena: &mut rkyv::ser::allocator::Arena) {
        let taken = std::mem::take(buf);
        *buf = rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(self, taken, arena.acquire())
            .expect("value archives");
    }
}

/// Messages a typed source made together, as the values they were made as: what the engine
/// hands a function that runs where they were made, in one call
/// ([`ErasedFunction::on_values`]).
pub trait ValueBatch {
    /// How many it holds.
    fn len(&self) -> usize;
    /// Whether it holds none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The values, as the `Vec<T>` they sit in, to be downcast to the taker's input type.
    fn values(&self) -> &dyn Any;
    /// Value `i` (`i < len()`).
    fn value(&self, i: usize) -> &dyn ValueRecord;
}

impl<T: Message + 'static> ValueBatch for Vec<T> {
    #[inline(always)]
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    #[inline(always)]
    fn values(&self) -> &dyn Any {
        self
    }
    #[inline]
    fn value(&self, i: usize) -> &dyn ValueRecord {
        &self[i]
    }
}

/// Key hash of an integer key (a bijection: distinct keys never collide).
pub fn key_u64(k: u64) -> u64 {
    mix64(k)
}

/// Key hash of a string key.
pub fn key_str(k: &str) -> u64 {
    hash_bytes(k.as_bytes())
}

/// A type a user function takes: rkyv archives it, and its archive can be checked in place.
///
/// The types on an app's edges are the app author's wiring, which the compiler does not see.
/// When the engine builds an embedded app it checks them instead ([`StreamType`]): a source must
/// archive exactly the type its functions take, and a function's emits are checked against the
/// type of the functions it feeds. Inputs wired that way are read in place unchecked
/// ([`TypedInput`]). Anywhere else (a [`Harness`], a function fed by something the engine cannot
/// type) each message is checked against `In` as it is read: bytes that are not a valid archive
/// of `In` fail with a clear panic, never undefined behaviour.
pub trait Input: rkyv::Archive<Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>> + 'static {}

impl<T> Input for T
where
    T: rkyv::Archive + 'static,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
}

/// The Rust type of the messages on a stream: what a source archives, what a function or actor
/// takes, what a function may emit to the functions it feeds. Two are equal when their types are.
#[derive(Clone, Copy, Debug)]
pub struct StreamType {
    id: TypeId,
    name: &'static str,
}

impl StreamType {
    /// The stream type of `T`.
    pub fn of<T: 'static>() -> StreamType {
        StreamType { id: TypeId::of::<T>(), name: std::any::type_name::<T>() }
    }

    /// The type's name, for errors.
    pub fn name(self) -> &'static str {
        self.name
    }
}

impl PartialEq for StreamType {
    fn eq(&self, other: &StreamType) -> bool {
        self.id == other.id
    }
}

impl Eq for StreamType {}

impl fmt::Display for StreamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Proof, zero-sized, that every payload a user function's or actor's instance is handed is an
/// archive of its input type, written in this process, 16-byte aligned. Holding one lets the
/// instance read its inputs in place without checking them (a few ns for plain types, tens for
/// strings). The engine makes one where an app's types check ([`StreamType`]).
#[derive(Clone, Copy, Debug)]
pub struct TypedInput(());

impl TypedInput {
    /// The proof, for the instances of a function or actor.
    ///
    /// # Safety
    /// Every payload later handed to an instance given this proof must be an rkyv archive of
    /// exactly its `In` type, made in this process (by a source that archives that type, or by
    /// [`Cx::emit`] on an instance whose output is bound to that type), in a buffer that starts
    /// 16-byte aligned; never bytes from a file or the network.
    pub unsafe fn assert() -> TypedInput {
        TypedInput(())
    }

    /// The proof for inputs of type `T`, unless its archive needs more than the 16-byte
    /// alignment payloads start at (then it is checked as it is read).
    fn for_input<T: Input>(self) -> Option<TypedInput> {
        (std::mem::align_of::<rkyv::Archived<T>>() <= 16).then_some(self)
    }
}

/// Read a message of a user function's input type: in place unchecked under a [`TypedInput`]
/// proof, checked otherwise. Hot path (user functions).
#[inline]
fn read_input<T: Input>(payload: &[u8], typed: Option<TypedInput>) -> &T::Archived {
    if typed.is_some() {
        // SAFETY: the proof says `payload` is an archive of `T` made in this process, aligned.
        return unsafe { rkyv::access_unchecked::<T::Archived>(payload) };
    }
    match rkyv::access::<T::Archived, rancor::Error>(payload) {
        Ok(m) => m,
        Err(e) => panic!(
            "a message that is not an archived `{}` reached a function that takes one: its upstream emits another type ({e})",
            std::any::type_name::<T>()
        ),
    }
}

/// An emit of a type other than the one the emitting function's stream carries: a panic of the
/// function, which fails its app (and names both types).
#[cold]
#[inline(never)]
fn wrong_output(emitted: &'static str, stream: StreamType) -> ! {
    panic!(
        "a function emitted a `{emitted}`, but the functions it feeds take `{stream}`: a stream carries one type, emit that one"
    )
}

/// What a user function sees of the message it is applied to, and where it emits.
pub struct Cx<'a> {
    msg: Header,
    out: &'a mut dyn Emitter,
    scratch: &'a mut Scratch,
    /// The message being applied and its type (None in `on_watermark` and `on_end`, which
    /// apply none).
    input: Option<(Applied<'a>, StreamType)>,
    /// The message is one of a batch applied in one call: each emit names it as its parent
    /// (`Emitter::emit_archived_from`), as the emitter cannot tell which one is applied.
    batch: bool,
}

/// The message a function is applied to, as it came.
#[derive(Clone, Copy)]
enum Applied<'a> {
    /// An archive's bytes.
    Archive(&'a [u8]),
    /// A value made on this shard, not archived ([`Function::on_value`]).
    Value(&'a dyn ValueRecord),
    /// Value `i` of a batch made on this shard ([`ErasedFunction::on_values`]).
    Batch(&'a dyn ValueBatch, usize),
}

/// What a function's emits reuse: rkyv's scratch arena (kept here, not looked up per emit in a
/// thread-local); and the type they must have, once the engine bound it.
#[derive(Default)]
struct Scratch {
    arena: rkyv::ser::allocator::Arena,
    /// The input type of the functions this one feeds (None: unbound, or only sinks downstream).
    output: Option<StreamType>,
}

impl Cx<'_> {
    /// Key hash the message was routed by.
    pub fn key_hash(&self) -> u64 {
        self.msg.key_hash
    }
    /// Event time of the message (ms).
    pub fn event_time(&self) -> u64 {
        self.msg.event_time
    }
    /// Input port (0, or 1 for a second input).
    pub fn port(&self) -> u8 {
        self.msg.port
    }
    /// When the message entered the engine (ns since the engine's epoch; see `dirigo_net::clock::now_ns`).
    pub fn ingress_ns(&self) -> u64 {
        self.msg.ingress_ns
    }
    /// The message's deadline (ns since the engine's epoch): its ingress time plus the app's SLO,
    /// inherited from parent to child unless the policy rewrote it.
    pub fn deadline_ns(&self) -> u64 {
        self.msg.deadline_ns
    }
    /// Emit `value` downstream, partitioned by `key_hash`. It inherits the deadline of the
    /// message being applied.
    ///
    /// `T` must be the type the functions downstream take (`Function::In`): in an app the engine
    /// runs, an emit of another type panics, and the function's app fails with both types named.
    pub fn emit<T: Message + 'static>(&mut self, key_hash: u64, event_time: u64, value: &T) {
        if let Some(stream) = self.scratch.output {
            if stream != StreamType::of::<T>() {
                wrong_output(std::any::type_name::<T>(), stream);
            }
        }
        let arena = &mut self.scratch.arena;
        // Archived where the record is staged (`Emitter::emit_archived`), not copied there.
        let write = &mut |buf: &mut AlignedVec| {
            let taken = std::mem::take(buf);
            *buf = rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(value, taken, arena.acquire())
                .expect("value archives");
        };
        emit_to(self.out, self.batch.then_some(&self.msg), key_hash, event_time, write)
    }

    /// Emit the message being applied, unchanged, partitioned by `key_hash`: its archive is
    /// passed on as bytes, never deserialised or archived again (what a filter emits). The
    /// functions downstream must take this function's input type, as with [`Cx::emit`].
    ///
    /// # Panics
    /// Outside `on_message` (a watermark or the end applies no message).
    pub fn pass_on(&mut self, key_hash: u64, event_time: u64) {
        let Some((applied, input)) = self.input else {
            panic!("`Cx::pass_on` outside `on_message`: a watermark or the end has no message to pass on")
        };
        if let Some(stream) = self.scratch.output {
            if stream != input {
                wrong_output(input.name(), stream);
            }
        }
        let value = match (applied, self.batch) {
            (Applied::Archive(payload), true) => {
                return self.out.forward_from(&self.msg, key_hash, event_time, payload)
            }
            (Applied::Archive(payload), false) => return self.out.forward(key_hash, event_time, payload),
            (Applied::Value(value), _) => value,
            (Applied::Batch(batch, i), _) => batch.value(i),
        };
        // A value is archived once, where it goes (as an emit is).
        let arena = &mut self.scratch.arena;
        let write = &mut |buf: &mut AlignedVec| value.archive_into(buf, arena);
        emit_to(self.out, self.batch.then_some(&self.msg), key_hash, event_time, write)
    }
}

/// Hand `out` the record `write` archives, made from `parent` where a `Cx` applies one message
/// of a batch (the emitter cannot tell which one is applied: `Emitter::emit_archived_from`).
#[inline(always)]
fn emit_to(
    out: &mut dyn Emitter,
    parent: Option<&Header>,
    key_hash: u64,
    event_time: u64,
    write: &mut dyn FnMut(&mut AlignedVec),
) {
    match parent {
        Some(parent) => out.emit_archived_from(parent, key_hash, event_time, write),
        None => out.emit_archived(key_hash, event_time, write),
    }
}

/// A user function over messages of type `In`. One instance per shard holds the state of every
/// actor (key) of the function homed there.
pub trait Function: 'static {
    /// The input message type.
    type In: Input;
    /// Apply one message, read in place.
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<Self::In>);
    /// Whether the function implements [`Function::on_value`]. Default: no (a message made
    /// where the function runs is archived for `on_message`).
    const TAKES_VALUES: bool = false;
    /// Apply one message handed over as the value it was made as: a typed source's event on
    /// the shard that read it, when this function's input is that source, forward (the
    /// engine's `Route::Forward`), and nothing of it waits queued. The function then runs at
    /// once, and the event is never archived unless it goes on ([`Cx::pass_on`]). Called only
    /// when `TAKES_VALUES` is set, and it must do what `on_message` does with the same
    /// message: which of the two the engine calls is its choice, message by message.
    fn on_value(&mut self, _cx: &mut Cx<'_>, _msg: &Self::In) {
        panic!("a function that sets `TAKES_VALUES` must implement `on_value`")
    }
    /// Event time reached `watermark` (ms) on every input.
    fn on_watermark(&mut self, _cx: &mut Cx<'_>, _watermark: u64) {}
    /// Every input ended.
    fn on_end(&mut self, _cx: &mut Cx<'_>) {}
}

thread_local! {
    /// The message of the last panic caught in user code on this thread, until the engine
    /// takes it ([`take_failure`]).
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
    /// `CAUGHT` holds a message: the engine's check after every message reads this flag only.
    static ANY_CAUGHT: Cell<bool> = const { Cell::new(false) };
}

/// Whether a panic caught in user code on this thread waits for [`take_failure`]: one
/// thread-local read, for loops that check after every message and take the failure outside.
#[inline]
pub fn any_failure() -> bool {
    ANY_CAUGHT.with(Cell::get)
}

/// The message of a panic caught in user code on this thread since the last call, if any: the
/// engine calls it after it called user code, and fails that code's app (not the shard).
#[inline]
pub fn take_failure() -> Option<String> {
    if !ANY_CAUGHT.with(Cell::get) {
        return None;
    }
    ANY_CAUGHT.with(|a| a.set(false));
    CAUGHT.with(|c| c.borrow_mut().take())
}

/// Run user code unless it already failed. A panic is caught: the code is marked failed (every
/// later call returns `fallback` without running it), and its message kept for
/// [`take_failure`]. Hot path: `catch_unwind` costs nothing until something panics.
#[inline]
fn guarded<T>(failed: &Cell<bool>, fallback: impl FnOnce() -> T, code: impl FnOnce() -> T) -> T {
    if failed.get() {
        return fallback();
    }
    match std::panic::catch_unwind(AssertUnwindSafe(code)) {
        Ok(v) => v,
        Err(payload) => {
            failed.set(true);
            let message = match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
                (Some(s), _) => (*s).to_owned(),
                (_, Some(s)) => s.clone(),
                _ => "a panic with no message".to_owned(),
            };
            CAUGHT.with(|c| *c.borrow_mut() = Some(message));
            ANY_CAUGHT.with(|a| a.set(true));
            fallback()
        }
    }
}

/// A [`Function`] with its types erased: what the engine stores (see [`erase_function`]).
struct Erased<F> {
    f: F,
    scratch: Scratch,
    /// It panicked: it runs no more.
    failed: Cell<bool>,
    /// Its inputs are archives of `F::In` made here: read unchecked.
    typed: Option<TypedInput>,
    /// Where a value is archived for `on_message` (`on_value` of a function without
    /// `TAKES_VALUES`), reused.
    bytes: AlignedVec,
}

impl<F: Function> ErasedFunction for Erased<F> {
    fn on_message(&mut self, msg: &Header, payload: &[u8], out: &mut dyn Emitter) {
        let (f, scratch) = (&mut self.f, &mut self.scratch);
        guarded(
            &self.failed,
            || (),
            || {
                let m = read_input::<F::In>(payload, self.typed);
                let input = Some((Applied::Archive(payload), StreamType::of::<F::In>()));
                f.on_message(&mut Cx { msg: *msg, out, scratch, input, batch: false }, m)
            },
        )
    }
    #[inline]
    fn on_value(&mut self, msg: &Header, value: &dyn ValueRecord, out: &mut dyn Emitter) {
        if F::TAKES_VALUES {
            if let Some(v) = value.value().downcast_ref::<F::In>() {
                let (f, scratch) = (&mut self.f, &mut self.scratch);
                let input = Some((Applied::Value(value), StreamType::of::<F::In>()));
                return guarded(
                    &self.failed,
                    || (),
                    || f.on_value(&mut Cx { msg: *msg, out, scratch, input, batch: false }, v),
                );
            }
        }
        // Archived once, here, and read in place as any input (checked unless typed).
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.clear();
        value.archive_into(&mut bytes, &mut self.scratch.arena);
        self.on_message(msg, &bytes, out);
        self.bytes = bytes;
    }
    /// One call for the stretch: `Function::on_message` on each message in a loop compiled for
    /// `F` (one `catch_unwind` around it: a panic stops the stretch there).
    fn on_messages(&mut self, msgs: &[Entry], bytes: &[u8], out: &mut dyn Emitter) {
        let (f, scratch, typed) = (&mut self.f, &mut self.scratch, self.typed);
        let stream = StreamType::of::<F::In>();
        guarded(
            &self.failed,
            || (),
            || {
                for e in msgs {
                    let payload = e.payload(bytes);
                    let m = read_input::<F::In>(payload, typed);
                    let input = Some((Applied::Archive(payload), stream));
                    f.on_message(&mut Cx { msg: e.header, out: &mut *out, scratch, input, batch: true }, m);
                }
            },
        )
    }
    /// One call for the batch: the values downcast once, `Function::on_value` called on each
    /// in a loop compiled for `F` (one `catch_unwind` around it: a panic stops the batch there).
    fn on_values(&mut self, headers: &[Header], batch: &dyn ValueBatch, out: &mut dyn Emitter) {
        debug_assert_eq!(headers.len(), batch.len());
        if F::TAKES_VALUES {
            if let Some(values) = batch.values().downcast_ref::<Vec<F::In>>() {
                let (f, scratch) = (&mut self.f, &mut self.scratch);
                let stream = StreamType::of::<F::In>();
                return guarded(
                    &self.failed,
                    || (),
                    || {
                        for (i, (h, v)) in headers.iter().zip(values).enumerate() {
                            let input = Some((Applied::Batch(batch, i), stream));
                            f.on_value(&mut Cx { msg: *h, out: &mut *out, scratch, input, batch: true }, v);
                        }
                    },
                );
            }
        }
        on_each_value(self, headers, batch, out)
    }
    fn on_watermark(&mut self, watermark: u64, out: &mut dyn Emitter) {
        let msg = Header { event_time: watermark, ..Header::data(0, 0, 0) };
        let (f, scratch) = (&mut self.f, &mut self.scratch);
        guarded(
            &self.failed,
            || (),
            || f.on_watermark(&mut Cx { msg, out, scratch, input: None, batch: false }, watermark),
        )
    }
    fn on_end(&mut self, out: &mut dyn Emitter) {
        let msg = Header { event_time: u64::MAX, ..Header::data(0, 0, 0) };
        let (f, scratch) = (&mut self.f, &mut self.scratch);
        guarded(&self.failed, || (), || f.on_end(&mut Cx { msg, out, scratch, input: None, batch: false }))
    }
    fn bind_output(&mut self, stream: StreamType) {
        self.scratch.output = Some(stream);
    }
    fn trust_input(&mut self, proof: TypedInput) {
        self.typed = proof.for_input::<F::In>();
    }
}

/// A dual-mode virtual actor written by the user: a keyed function whose state is
/// [`Mergeable`], so the engine may run its regular messages on lessees (borrowed slots on
/// other shards, each with a partial state) when its home shard cannot meet their deadlines.
///
/// One activation holds the state of every key homed on its shard (use a per-key container
/// such as [`crate::state::MapMerge`]). Regular messages (`on_message`) must only fold
/// into the state: they may run on a partial. Critical messages (`is_critical` true, plus the
/// watermark and the end) run alone on the lessor, on the state merged from every partial, with
/// everything that arrived before them applied and nothing after: exactly what a sequential,
/// single-activation run would see.
pub trait Actor: 'static {
    /// The message type (its archive is read in place).
    type In: Input;
    /// The state: mergeable, archivable (partials travel between shards as rkyv archives), and
    /// checkable in place (moved keys arrive as an archive that is validated before it is read;
    /// a derived rkyv archive is).
    type State: Mergeable + Default + Message + Input + 'static;
    /// Whether `msg` is critical (a query, a snapshot request...). Default: none is.
    fn is_critical(&self, _msg: &rkyv::Archived<Self::In>) -> bool {
        false
    }
    /// Fold a regular message into `state` (the lessor's, or a lessee's partial). What it emits
    /// must not depend on state other messages built.
    fn on_message(&mut self, state: &mut Self::State, cx: &mut Cx<'_>, msg: &rkyv::Archived<Self::In>);
    /// A critical message, on the merged state.
    fn on_critical(&mut self, state: &mut Self::State, cx: &mut Cx<'_>, msg: &rkyv::Archived<Self::In>);
    /// Whether `on_watermark` is used: then every watermark is a critical message (a barrier
    /// that merges the lessees' partials). Default: no, and watermarks only pass through.
    fn uses_watermarks(&self) -> bool {
        false
    }
    /// Event time reached `watermark` on every input (critical; called only when
    /// `uses_watermarks`).
    fn on_watermark(&mut self, _state: &mut Self::State, _cx: &mut Cx<'_>, _watermark: u64) {}
    /// Every input ended (critical): the state is final.
    fn on_end(&mut self, _state: &mut Self::State, _cx: &mut Cx<'_>) {}
    /// Fold a lessee's partial into `state` (the lessor's, at a barrier or a retirement),
    /// reading the partial in place from the archive it travelled in. Default: deserialise it
    /// and [`Mergeable::combine`] it. Override it when the archive can be folded directly (a
    /// dense vector: element by element), which saves building an owned copy of every partial.
    /// It must have the same effect as the default.
    fn combine_archived(&mut self, state: &mut Self::State, partial: &rkyv::Archived<Self::State>)
    where
        rkyv::Archived<Self::State>: rkyv::Deserialize<Self::State, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        let partial = rkyv::api::high::deserialize::<Self::State, rancor::Error>(partial).expect("state deserialises");
        state.combine(partial);
    }
    /// Key-group migration: remove from `state` every key whose routing key hash (the
    /// [`Cx::key_hash`] its messages are routed by) is `moving`, and return them as a state of
    /// their own; `None` (the default) when this actor's keys cannot move, and then the engine
    /// never migrates it.
    ///
    /// Implementable when the state is keyed by the routing key hash, or by a key whose routing
    /// hash can be recomputed ([`crate::state::MapMerge::split_off`] does the work):
    ///
    /// - call `moving` once per key held, with that key's routing hash, and move exactly the
    ///   keys for which it returns true (the engine also calls it with a predicate that is
    ///   always false, to learn the hashes held, and on a default state, to learn whether the
    ///   actor splits at all: both must leave the state unchanged and return `Some`);
    /// - the receiver folds the returned state into its own with the actor's
    ///   [`Actor::combine_archived`] (by default [`Mergeable::combine`]): the two hold disjoint
    ///   keys, so that combine must be their union, and state not kept per key (a global total)
    ///   must not be split off;
    /// - after an import the engine calls `on_watermark` with the receiver's current watermark,
    ///   which may repeat the last one: an actor that uses watermarks must treat a repeated
    ///   watermark as a no-op for the keys it already held.
    fn split_off(&mut self, _state: &mut Self::State, _moving: &dyn Fn(u64) -> bool) -> Option<Self::State> {
        None
    }
}

/// An [`Actor`] with its types erased, and its factory (a lessee builds a fresh one).
struct ErasedActorImpl<A: Actor> {
    make: Arc<dyn Fn() -> A + Send + Sync>,
    actor: A,
    state: A::State,
    scratch: Scratch,
    /// It panicked: it runs no more.
    failed: Cell<bool>,
    /// Its inputs are archives of `A::In` made here: read unchecked.
    typed: Option<TypedInput>,
}

impl<A: Actor> ErasedActor for ErasedActorImpl<A>
where
    rkyv::Archived<A::State>: rkyv::Deserialize<A::State, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    fn partition(&self) -> Box<dyn ErasedActor> {
        let actor = (self.make)();
        Box::new(ErasedActorImpl {
            make: self.make.clone(),
            actor,
            state: self.state.partition(),
            scratch: Scratch { output: self.scratch.output, ..Scratch::default() },
            failed: Cell::new(self.failed.get()),
            typed: self.typed,
        })
    }
    fn is_critical(&self, _header: &Header, payload: &[u8]) -> bool {
        guarded(&self.failed, || false, || self.actor.is_critical(read_input::<A::In>(payload, self.typed)))
    }
    fn on_message(&mut self, header: &Header, payload: &[u8], class: MessageClass, out: &mut dyn Emitter) {
        let (actor, state, scratch) = (&mut self.actor, &mut self.state, &mut self.scratch);
        guarded(
            &self.failed,
            || (),
            || {
                let m = read_input::<A::In>(payload, self.typed);
                let input = Some((Applied::Archive(payload), StreamType::of::<A::In>()));
                let mut cx = Cx { msg: *header, out, scratch, input, batch: false };
                match class {
                    MessageClass::Critical => actor.on_critical(state, &mut cx, m),
                    MessageClass::Regular => actor.on_message(state, &mut cx, m),
                }
            },
        )
    }
    /// One call for the stretch: each message classified and applied in a loop compiled for
    /// `A` (one `catch_unwind` around it: a panic stops the stretch there).
    fn on_messages(&mut self, msgs: &[Entry], bytes: &[u8], out: &mut dyn Emitter) {
        let (actor, state, scratch, typed) = (&mut self.actor, &mut self.state, &mut self.scratch, self.typed);
        let stream = StreamType::of::<A::In>();
        guarded(
            &self.failed,
            || (),
            || {
                for e in msgs {
                    let payload = e.payload(bytes);
                    let m = read_input::<A::In>(payload, typed);
                    let input = Some((Applied::Archive(payload), stream));
                    let mut cx = Cx { msg: e.header, out: &mut *out, scratch, input, batch: true };
                    match actor.is_critical(m) {
                        true => actor.on_critical(state, &mut cx, m),
                        false => actor.on_message(state, &mut cx, m),
                    }
                }
            },
        )
    }
    fn uses_watermarks(&self) -> bool {
        guarded(&self.failed, || false, || self.actor.uses_watermarks())
    }
    fn on_watermark(&mut self, watermark: u64, out: &mut dyn Emitter) {
        let msg = Header { event_time: watermark, ..Header::data(0, 0, 0) };
        let (actor, state, scratch) = (&mut self.actor, &mut self.state, &mut self.scratch);
        guarded(
            &self.failed,
            || (),
            || {
                if actor.uses_watermarks() {
                    actor.on_watermark(state, &mut Cx { msg, out, scratch, input: None, batch: false }, watermark);
                }
            },
        )
    }
    fn on_end(&mut self, out: &mut dyn Emitter) {
        let msg = Header { event_time: u64::MAX, ..Header::data(0, 0, 0) };
        let (actor, state, scratch) = (&mut self.actor, &mut self.state, &mut self.scratch);
        guarded(&self.failed, || (), || actor.on_end(state, &mut Cx { msg, out, scratch, input: None, batch: false }))
    }
    fn export(&self) -> AlignedVec {
        // A failed activation ships nothing (an empty archive, which `combine_archive` skips).
        guarded(&self.failed, AlignedVec::new, || {
            rkyv::api::high::to_bytes_in::<_, rancor::Error>(&self.state, AlignedVec::new()).expect("state archives")
        })
    }
    fn can_split(&self) -> bool {
        // `split_off` takes `&mut self`: ask a fresh actor (as a lessee would get), on a
        // default state.
        guarded(&self.failed, || false, || (self.make)().split_off(&mut A::State::default(), &|_| false).is_some())
    }
    fn split_off(&mut self, moving: &dyn Fn(u64) -> bool) -> Option<AlignedVec> {
        let (actor, state) = (&mut self.actor, &mut self.state);
        guarded(
            &self.failed,
            || None,
            || {
                let moved = RefCell::new(Vec::new());
                let recording = |hash: u64| {
                    let m = moving(hash);
                    if m {
                        moved.borrow_mut().push(hash);
                    }
                    m
                };
                let part = actor.split_off(state, &recording)?;
                let state = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&part, AlignedVec::<16>::new())
                    .expect("state archives");
                let mut hashes = moved.into_inner();
                hashes.sort_unstable();
                hashes.dedup();
                let archive =
                    KeyArchive::User { actor: std::any::type_name::<A>().to_owned(), hashes, state: state.to_vec() };
                Some(archive.to_bytes())
            },
        )
    }
    fn import_split(&mut self, bytes: &[u8]) -> Result<(), MigrateError> {
        let expected = || format!("user actor keys ({})", std::any::type_name::<A>());
        let (hashes, state_bytes) = match KeyArchive::decode(bytes)? {
            KeyArchive::User { actor, hashes, state } if actor == std::any::type_name::<A>() => (hashes, state),
            other => return Err(MigrateError::WrongKind { expected: expected(), found: other.kind() }),
        };
        if hashes.windows(2).any(|w| w[0] >= w[1]) {
            return Err(MigrateError::Corrupt("the moved key hashes are not sorted and distinct".into()));
        }
        let mut aligned = AlignedVec::<16>::with_capacity(state_bytes.len());
        aligned.extend_from_slice(&state_bytes);
        if let Err(e) = rkyv::access::<rkyv::Archived<A::State>, rancor::Error>(&aligned) {
            return Err(MigrateError::Corrupt(e.to_string()));
        }
        if self.failed.get() {
            return Ok(()); // a failed activation runs no more user code (its app has failed)
        }
        let (actor, state) = (&mut self.actor, &mut self.state);
        // Keys are disjoint: look for a moved hash among the keys held here (moving nothing).
        let present = Cell::new(None);
        let probe = |hash: u64| {
            if hashes.binary_search(&hash).is_ok() {
                present.set(Some(hash));
            }
            false
        };
        guarded(&self.failed, || (), || drop(actor.split_off(state, &probe)));
        if let Some(hash) = present.get() {
            return Err(MigrateError::KeyPresent { hash });
        }
        guarded(
            &self.failed,
            || (),
            || {
                // Validated above.
                if let Ok(archived) = rkyv::access::<rkyv::Archived<A::State>, rancor::Error>(&aligned) {
                    actor.combine_archived(state, archived);
                }
            },
        );
        Ok(())
    }
    fn combine_archive(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return; // the partial of a failed lessee
        }
        let (actor, state) = (&mut self.actor, &mut self.state);
        guarded(
            &self.failed,
            || (),
            || {
                // SAFETY: a non-empty partial was archived by `export` of an activation of the
                // same actor.
                let archived = unsafe { rkyv::access_unchecked::<rkyv::Archived<A::State>>(bytes) };
                actor.combine_archived(state, archived);
            },
        )
    }
    fn bind_output(&mut self, stream: StreamType) {
        self.scratch.output = Some(stream);
    }
    fn trust_input(&mut self, proof: TypedInput) {
        self.typed = proof.for_input::<A::In>();
    }
}

/// `on_value` for each value of `batch`, what it emits made from the value's header, until user
/// code fails.
fn on_each_value<F: ErasedFunction + ?Sized>(
    f: &mut F,
    headers: &[Header],
    batch: &dyn ValueBatch,
    out: &mut dyn Emitter,
) {
    for (i, parent) in headers.iter().enumerate() {
        f.on_value(parent, batch.value(i), &mut FromParent { parent, out: &mut *out });
        if any_failure() {
            return;
        }
    }
}

/// An emitter for one message of a batch, `parent`: every emit goes out as made from it. The
/// default `on_values`/`on_messages`' (hand-written erased functions), off the hot path: an emit
/// of values or cells archives them here (its arena allocates).
struct FromParent<'a> {
    parent: &'a Header,
    out: &'a mut dyn Emitter,
}

impl Emitter for FromParent<'_> {
    fn emit(&mut self, key_hash: u64, event_time: u64, values: &[Value]) {
        let mut arena = rkyv::ser::allocator::Arena::new();
        let write = &mut |buf: &mut AlignedVec| {
            crate::record::archive_values_with(values, buf, &mut arena);
        };
        self.out.emit_archived_from(self.parent, key_hash, event_time, write)
    }
    fn emit_cells(&mut self, key_hash: u64, event_time: u64, cells: &[crate::record::Cell]) {
        let write = &mut |buf: &mut AlignedVec| {
            crate::record::archive_cells(cells, buf);
        };
        self.out.emit_archived_from(self.parent, key_hash, event_time, write)
    }
    fn forward(&mut self, key_hash: u64, event_time: u64, archive: &[u8]) {
        self.out.forward_from(self.parent, key_hash, event_time, archive)
    }
    fn emit_archived(&mut self, key_hash: u64, event_time: u64, write: &mut dyn FnMut(&mut AlignedVec)) {
        self.out.emit_archived_from(self.parent, key_hash, event_time, write)
    }
    fn emit_archived_from(
        &mut self,
        parent: &Header,
        key_hash: u64,
        event_time: u64,
        write: &mut dyn FnMut(&mut AlignedVec),
    ) {
        self.out.emit_archived_from(parent, key_hash, event_time, write)
    }
    fn forward_from(&mut self, parent: &Header, key_hash: u64, event_time: u64, archive: &[u8]) {
        self.out.forward_from(parent, key_hash, event_time, archive)
    }
}

/// A user function with its types erased (see [`Function`] for the typed trait).
pub trait ErasedFunction {
    /// Apply one message; `payload` is the archive the engine carried.
    fn on_message(&mut self, header: &Header, payload: &[u8], out: &mut dyn Emitter);
    /// Apply one message handed over as a value made on this shard: `Function::on_value` where
    /// the function takes values of its type, `on_message` on its archive otherwise. The
    /// default archives it into a buffer of its own (it allocates: the functions `Function`
    /// makes archive into one they keep).
    fn on_value(&mut self, header: &Header, value: &dyn ValueRecord, out: &mut dyn Emitter) {
        let mut bytes = AlignedVec::new();
        value.archive_into(&mut bytes, &mut rkyv::ser::allocator::Arena::new());
        self.on_message(header, &bytes, out)
    }
    /// Apply `msgs`, in order, their payloads (archives) in `bytes`: one call for a stretch of
    /// messages where the engine would call `on_message` for each (it does where nothing runs
    /// around each message). What is emitted while applying a message names it as its parent
    /// (`Emitter::emit_archived_from`). If user code panics on one, the rest are not applied.
    /// The default calls `on_message` for each (a dyn call per message).
    fn on_messages(&mut self, msgs: &[Entry], bytes: &[u8], out: &mut dyn Emitter) {
        for e in msgs {
            let parent = &e.header;
            self.on_message(parent, e.payload(bytes), &mut FromParent { parent, out: &mut *out });
            if any_failure() {
                return;
            }
        }
    }
    /// Apply `batch`, messages made together on this shard as values, in order, `headers[i]`
    /// being value `i`'s: one call for the batch where the engine would call `on_value` for
    /// each. What is emitted while applying value `i` goes out with `headers[i]` as its parent
    /// (`Emitter::emit_archived_from`). If user code panics on one, the rest are not applied.
    /// The default calls `on_value` for each (a dyn call per message).
    fn on_values(&mut self, headers: &[Header], batch: &dyn ValueBatch, out: &mut dyn Emitter) {
        on_each_value(self, headers, batch, out)
    }
    /// Event time reached `watermark` on every input.
    fn on_watermark(&mut self, _watermark: u64, _out: &mut dyn Emitter) {}
    /// Every input ended.
    fn on_end(&mut self, _out: &mut dyn Emitter) {}
    /// Check every later emit against `stream`, the type of the functions it feeds: an emit of
    /// another type is then a panic of the function (its app fails). Default: nothing checked.
    fn bind_output(&mut self, _stream: StreamType) {}
    /// Read every later input in place unchecked (see [`TypedInput`]). Default: ignored.
    fn trust_input(&mut self, _proof: TypedInput) {}
}

/// A user actor with its types erased (see [`Actor`] for the typed trait).
pub trait ErasedActor {
    /// A fresh activation of the same function on the partition value of the state.
    fn partition(&self) -> Box<dyn ErasedActor>;
    /// Whether this message is critical: it runs alone, on the merged state.
    fn is_critical(&self, header: &Header, payload: &[u8]) -> bool;
    /// Apply a message (a critical one runs alone, on the merged state).
    fn on_message(&mut self, header: &Header, payload: &[u8], class: MessageClass, out: &mut dyn Emitter);
    /// Apply `msgs`, in order, each as critical or regular as it says (`is_critical`), in one
    /// call, where the engine runs the activation alone (no lessees) and no hook runs around
    /// each message: as [`ErasedFunction::on_messages`], each emit names its message as its
    /// parent, and a panic stops the stretch there. Default: each in turn (two dyn calls per
    /// message).
    fn on_messages(&mut self, msgs: &[Entry], bytes: &[u8], out: &mut dyn Emitter) {
        for e in msgs {
            let (parent, payload) = (&e.header, e.payload(bytes));
            let class = if self.is_critical(parent, payload) { MessageClass::Critical } else { MessageClass::Regular };
            self.on_message(parent, payload, class, &mut FromParent { parent, out: &mut *out });
            if any_failure() {
                return;
            }
        }
    }
    /// Whether watermarks matter to it (then each one is a critical message).
    fn uses_watermarks(&self) -> bool;
    /// Event time reached `watermark` on every input (critical).
    fn on_watermark(&mut self, watermark: u64, out: &mut dyn Emitter);
    /// Every input ended (critical).
    fn on_end(&mut self, out: &mut dyn Emitter);
    /// The state as an rkyv archive (a partial on its way to the lessor).
    fn export(&self) -> AlignedVec;
    /// Combine a partial archived by `export` into this state.
    fn combine_archive(&mut self, bytes: &[u8]);
    /// Whether the actor's keys can move to another activation ([`Actor::split_off`] is
    /// implemented; asked of a fresh actor on a default state, so a cold-path call). Default: no.
    fn can_split(&self) -> bool {
        false
    }
    /// Remove the keys whose routing key hash is `moving` and return them as a key archive for
    /// [`ErasedActor::import_split`]; `None` when the actor cannot split (or has failed).
    /// Default: `None`.
    fn split_off(&mut self, _moving: &dyn Fn(u64) -> bool) -> Option<AlignedVec> {
        None
    }
    /// Fold in keys exported by [`ErasedActor::split_off`] from another activation of the same
    /// actor, none of which this one holds. The archive is validated first (a corrupt one, one
    /// of another actor, or a key held here is an error, and nothing changes). An activation
    /// that failed (a panic in user code: its app has failed) drops the keys. Default: every
    /// archive is of the wrong kind.
    fn import_split(&mut self, _bytes: &[u8]) -> Result<(), MigrateError> {
        Err(MigrateError::WrongKind { expected: "an actor that cannot split".into(), found: "moved keys".into() })
    }
    /// As [`ErasedFunction::bind_output`]; kept by every activation made from this one.
    fn bind_output(&mut self, _stream: StreamType) {}
    /// As [`ErasedFunction::trust_input`]; kept by every activation made from this one.
    fn trust_input(&mut self, _proof: TypedInput) {}
}

/// Erase a function's types for the engine, which calls it once per message through the returned
/// box.
pub fn erase_function<F: Function>(f: F) -> Box<dyn ErasedFunction> {
    Box::new(Erased { f, scratch: Scratch::default(), failed: Cell::new(false), typed: None, bytes: AlignedVec::new() })
}

/// Erase an actor's types for the engine; `make` builds a fresh actor (the lessor's, then one per
/// lessee), each starting from the state's default.
pub fn erase_actor<A: Actor>(make: Arc<dyn Fn() -> A + Send + Sync>) -> Box<dyn ErasedActor>
where
    rkyv::Archived<A::State>: rkyv::Deserialize<A::State, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    let (state, scratch, failed) = (A::State::default(), Scratch::default(), Cell::new(false));
    Box::new(ErasedActorImpl { actor: make(), make, state, scratch, failed, typed: None })
}

/// One message a [`Harness`] collected from its function.
#[derive(Debug)]
pub struct Emitted {
    /// The key hash it was emitted with (its partition downstream).
    pub key_hash: u64,
    /// Its event time (ms).
    pub event_time: u64,
    /// Its rkyv archive, as the engine would carry it.
    pub archive: AlignedVec,
    /// The key hash and event time of the message it was made from, where the function said
    /// (`Emitter::emit_archived_from`: every emit of a [`Cx`]).
    pub made_from: Option<(u64, u64)>,
}

impl Emitted {
    /// The emitted value, validated and deserialised.
    pub fn decode<T>(&self) -> Result<T, rancor::Error>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
            + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        rkyv::from_bytes::<T, rancor::Error>(&self.archive)
    }
}

/// Collects emitted archives (the [`Emitter`] of a [`Harness`]).
#[derive(Debug, Default)]
pub(crate) struct Collect(pub(crate) Vec<Emitted>);

impl Emitter for Collect {
    fn emit(&mut self, key_hash: u64, event_time: u64, values: &[Value]) {
        let archive = crate::record::Record::from(values.to_vec()).to_archive();
        self.0.push(Emitted { key_hash, event_time, archive, made_from: None });
    }
    fn forward(&mut self, key_hash: u64, event_time: u64, archive: &[u8]) {
        let mut copy = AlignedVec::with_capacity(archive.len());
        copy.extend_from_slice(archive);
        self.0.push(Emitted { key_hash, event_time, archive: copy, made_from: None });
    }
    fn emit_archived_from(
        &mut self,
        parent: &Header,
        key_hash: u64,
        event_time: u64,
        write: &mut dyn FnMut(&mut AlignedVec),
    ) {
        self.emit_archived(key_hash, event_time, write);
        self.made_from(parent);
    }
    fn forward_from(&mut self, parent: &Header, key_hash: u64, event_time: u64, archive: &[u8]) {
        self.forward(key_hash, event_time, archive);
        self.made_from(parent);
    }
}

impl Collect {
    /// The message just emitted was made from `parent`.
    fn made_from(&mut self, parent: &Header) {
        if let Some(e) = self.0.last_mut() {
            e.made_from = Some((parent.key_hash, parent.event_time));
        }
    }
}

/// Runs a [`Function`] without the engine, one message at a time, in the order given, as a
/// single activation would: for unit tests of user functions (see the module's example).
pub struct Harness {
    f: Box<dyn ErasedFunction>,
    out: Collect,
    buf: AlignedVec,
}

impl Harness {
    /// A harness around `f`.
    pub fn new<F: Function>(f: F) -> Harness {
        Harness { f: erase_function(f), out: Collect::default(), buf: AlignedVec::new() }
    }

    /// A harness around a function written against [`ErasedFunction`] directly.
    pub fn of_erased(f: Box<dyn ErasedFunction>) -> Harness {
        Harness { f, out: Collect::default(), buf: AlignedVec::new() }
    }

    /// Apply `msg` (archived as the engine would) with this key hash and event time (ms).
    pub fn send<T: Message>(&mut self, key_hash: u64, event_time: u64, msg: &T) -> &mut Self {
        let buf = std::mem::take(&mut self.buf);
        let buf = rkyv::api::high::to_bytes_in::<_, rancor::Error>(msg, buf).expect("message archives");
        let header = Header { event_time, ..Header::data(0, 0, key_hash) };
        self.f.on_message(&header, &buf, &mut self.out);
        self.buf = buf;
        self.buf.clear();
        self.rethrow()
    }

    /// Apply `msg` as the value it was made as, as the engine does where the function runs in
    /// its source's poll (`Function::on_value`, or `on_message` on its archive for a function
    /// that does not take values): a test sends the same messages both ways and compares.
    pub fn send_value<T: Message + 'static>(&mut self, key_hash: u64, event_time: u64, msg: &T) -> &mut Self {
        let header = Header { event_time, ..Header::data(0, 0, key_hash) };
        self.f.on_value(&header, msg, &mut self.out);
        self.rethrow()
    }

    /// Apply `msgs`, `(key_hash, event_time, message)` each, as values made together, in one
    /// call, as the engine does where the function runs in its source's poll on a batch of
    /// its events (`ErasedFunction::on_values`).
    pub fn send_values<T: Message + 'static>(&mut self, msgs: Vec<(u64, u64, T)>) -> &mut Self {
        let headers: Vec<Header> = msgs
            .iter()
            .map(|&(key_hash, event_time, _)| Header { event_time, ..Header::data(0, 0, key_hash) })
            .collect();
        let batch: Vec<T> = msgs.into_iter().map(|(_, _, m)| m).collect();
        self.f.on_values(&headers, &batch, &mut self.out);
        self.rethrow()
    }

    /// Apply `msgs`, `(key_hash, event_time, message)` each, archived as the engine would and
    /// applied in one call, as the engine applies a stretch of records of one function where
    /// no hook runs around each (`ErasedFunction::on_messages`).
    pub fn send_stretch<T: Message>(&mut self, msgs: &[(u64, u64, T)]) -> &mut Self {
        let mut bytes: AlignedVec = AlignedVec::new();
        let mut entries = Vec::with_capacity(msgs.len());
        for (key_hash, event_time, msg) in msgs {
            let archive: AlignedVec =
                rkyv::api::high::to_bytes_in::<_, rancor::Error>(msg, AlignedVec::new()).expect("message archives");
            let off = bytes.len().next_multiple_of(16);
            bytes.resize(off, 0);
            bytes.extend_from_slice(&archive);
            let header = Header { event_time: *event_time, ..Header::data(0, 0, *key_hash) };
            entries.push(Entry { header, off: off as u32, len: archive.len() as u32 });
        }
        self.f.on_messages(&entries, &bytes, &mut self.out);
        self.rethrow()
    }

    /// The engine catches a panic of user code (it fails that app alone); a test wants to see it.
    fn rethrow(&mut self) -> &mut Self {
        match take_failure() {
            Some(message) => panic!("{message}"),
            None => self,
        }
    }

    /// Event time reached `watermark` (ms) on every input.
    pub fn watermark(&mut self, watermark: u64) -> &mut Self {
        self.f.on_watermark(watermark, &mut self.out);
        self.rethrow()
    }

    /// Every input ended.
    pub fn end(&mut self) -> &mut Self {
        self.f.on_end(&mut self.out);
        self.rethrow()
    }

    /// What the function emitted so far, in order.
    pub fn outputs(&self) -> &[Emitted] {
        &self.out.0
    }

    /// Take what the function emitted so far.
    pub fn take_outputs(&mut self) -> Vec<Emitted> {
        std::mem::take(&mut self.out.0)
    }
}
