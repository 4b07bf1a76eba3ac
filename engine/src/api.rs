//! The embedding API: build apps in Rust from your own functions over your own rkyv types,
//! run them in-process, and collect their output.
//!
//! ```no_run
//! use dirigo_engine::api::{Cx, EngineBuilder, Function, Route};
//! use std::time::Duration;
//!
//! struct Count(std::collections::HashMap<u64, u64>);
//! impl Function for Count {
//!     type In = u64;
//!     fn on_message(&mut self, cx: &mut Cx<'_>, word: &rkyv::Archived<u64>) {
//!         let n = self.0.entry(word.to_native()).or_default();
//!         *n += 1;
//!         cx.emit(cx.key_hash(), cx.event_time(), &(word.to_native(), *n));
//!     }
//! }
//!
//! let mut engine = EngineBuilder::new().shards(2);
//! let mut app = engine.app("counts", Duration::from_millis(5));
//! let src = app.source("numbers", 1, |_| (0..1000u64).map(|i| (dirigo_engine::api::key_u64(i % 10), i, i % 10)));
//! let counts = app.function("count", src, Route::ByKey, || Count(Default::default()));
//! let out = app.collect("out", counts);
//! let summary = engine.run().unwrap();
//! assert_eq!(out.drain().count(), 1000);
//! ```

use std::sync::Arc;
use std::time::Duration;

use dirigo_actors::envelope::Header;
use dirigo_actors::ids::{AppId, ShardId};
use dirigo_actors::operator::Emitter;
use dirigo_actors::record::{hash_bytes, mix64, Schema};
use dirigo_actors::state::Mergeable;
use rkyv::api::high::HighSerializer;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::actor::ErasedActor;
use crate::engine::{resolve_shards, run, EngineError, EngineSettings, StopHandle};
use crate::ingest::{CustomSource, SourceInstance};
use crate::operator::{ErasedFunction, OperatorInstance};
use crate::plan::{AppPlan, FunctionPlan, Input, Partition, Plan, SourcePlan, Upstream};
use crate::policy::{Builtin, Policy};
use crate::report::{Progress, Summary};
use crate::sink::{Output, Sink, SinkTarget};

/// A message type: anything rkyv can archive into an engine buffer.
pub trait Message:
    rkyv::Archive + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}
impl<T> Message for T where
    T: rkyv::Archive + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}

/// Key hash of an integer key (a bijection: distinct keys never collide).
pub fn key_u64(k: u64) -> u64 {
    mix64(k)
}

/// Key hash of a string key.
pub fn key_str(k: &str) -> u64 {
    hash_bytes(k.as_bytes())
}

/// What a user function sees of the message it is applied to, and where it emits.
pub struct Cx<'a> {
    msg: Header,
    out: &'a mut dyn Emitter,
    scratch: &'a mut AlignedVec,
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
    /// When the message entered the engine (ns since the engine's epoch; see `clock::now_ns`).
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
    pub fn emit<T: Message>(&mut self, key_hash: u64, event_time: u64, value: &T) {
        let buf = std::mem::take(self.scratch);
        let mut buf = rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, buf).expect("value archives");
        self.out.forward(key_hash, event_time, &buf);
        buf.clear();
        *self.scratch = buf;
    }
}

/// A user function over messages of type `In`. One instance per shard holds the state of every
/// actor (key) of the function homed there.
pub trait Function: 'static {
    /// The input message type.
    type In: rkyv::Archive;
    /// Apply one message, read in place.
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<Self::In>);
    /// Event time reached `watermark` (ms) on every input.
    fn on_watermark(&mut self, _cx: &mut Cx<'_>, _watermark: u64) {}
    /// Every input ended.
    fn on_end(&mut self, _cx: &mut Cx<'_>) {}
}

struct Erased<F> {
    f: F,
    scratch: AlignedVec,
}

impl<F: Function> ErasedFunction for Erased<F> {
    fn on_message(&mut self, msg: &Header, payload: &[u8], out: &mut dyn Emitter) {
        // SAFETY: payloads on this function's inputs were archived in-process from `F::In` by
        // the typed `Cx::emit` or a typed source of this app.
        let m = unsafe { rkyv::access_unchecked::<rkyv::Archived<F::In>>(payload) };
        let mut cx = Cx { msg: *msg, out, scratch: &mut self.scratch };
        self.f.on_message(&mut cx, m);
    }
    fn on_watermark(&mut self, watermark: u64, out: &mut dyn Emitter) {
        let msg = Header { event_time: watermark, ..Header::data(0, 0, 0) };
        self.f.on_watermark(&mut Cx { msg, out, scratch: &mut self.scratch }, watermark);
    }
    fn on_end(&mut self, out: &mut dyn Emitter) {
        let msg = Header { event_time: u64::MAX, ..Header::data(0, 0, 0) };
        self.f.on_end(&mut Cx { msg, out, scratch: &mut self.scratch });
    }
}

/// A dual-mode virtual actor written by the user: a keyed function whose state is
/// [`Mergeable`], so the engine may run its regular messages on lessees (borrowed slots on
/// other shards, each with a partial state) when its home shard cannot meet their deadlines.
///
/// One activation holds the state of every key homed on its shard (use a per-key container
/// such as [`dirigo_actors::state::MapMerge`]). Regular messages (`on_message`) must only fold
/// into the state: they may run on a partial. Critical messages (`is_critical` true, plus the
/// watermark and the end) run alone on the lessor, on the state merged from every partial, with
/// everything that arrived before them applied and nothing after: exactly what a sequential,
/// single-activation run would see.
pub trait Actor: 'static {
    /// The message type (its archive is read in place).
    type In: rkyv::Archive;
    /// The state: mergeable, archivable (partials travel between shards as rkyv archives).
    type State: Mergeable + Default + Message + 'static;
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
}

/// An [`Actor`] with its types erased, and its factory (a lessee builds a fresh one).
struct ErasedActorImpl<A: Actor> {
    make: Arc<dyn Fn() -> A + Send + Sync>,
    actor: A,
    state: A::State,
    scratch: AlignedVec,
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
            scratch: AlignedVec::new(),
        })
    }
    fn is_critical(&self, _header: &Header, payload: &[u8]) -> bool {
        // SAFETY: payloads of user functions are archives of `A::In` written by the engine.
        let m = unsafe { rkyv::access_unchecked::<rkyv::Archived<A::In>>(payload) };
        self.actor.is_critical(m)
    }
    fn on_message(&mut self, header: &Header, payload: &[u8], critical: bool, out: &mut dyn Emitter) {
        // SAFETY: as above.
        let m = unsafe { rkyv::access_unchecked::<rkyv::Archived<A::In>>(payload) };
        let mut cx = Cx { msg: *header, out, scratch: &mut self.scratch };
        if critical {
            self.actor.on_critical(&mut self.state, &mut cx, m)
        } else {
            self.actor.on_message(&mut self.state, &mut cx, m)
        }
    }
    fn uses_watermarks(&self) -> bool {
        self.actor.uses_watermarks()
    }
    fn on_watermark(&mut self, watermark: u64, out: &mut dyn Emitter) {
        if self.actor.uses_watermarks() {
            let msg = Header { event_time: watermark, ..Header::data(0, 0, 0) };
            self.actor.on_watermark(&mut self.state, &mut Cx { msg, out, scratch: &mut self.scratch }, watermark);
        }
    }
    fn on_end(&mut self, out: &mut dyn Emitter) {
        let msg = Header { event_time: u64::MAX, ..Header::data(0, 0, 0) };
        self.actor.on_end(&mut self.state, &mut Cx { msg, out, scratch: &mut self.scratch });
    }
    fn export(&self) -> AlignedVec {
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(&self.state, AlignedVec::new()).expect("state archives")
    }
    fn combine_archive(&mut self, bytes: &[u8]) {
        // SAFETY: the archive was written by `export` of an activation of the same actor.
        let archived = unsafe { rkyv::access_unchecked::<rkyv::Archived<A::State>>(bytes) };
        self.actor.combine_archived(&mut self.state, archived);
    }
}

/// How a function's input is partitioned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Run where the upstream runs (stateless functions).
    Forward,
    /// Run on the home shard of the key hash the upstream emitted with.
    ByKey,
}

/// A node of an app under construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRef(Upstream);

/// Builds an engine: settings, apps, then `run`.
pub struct EngineBuilder {
    settings: EngineSettings,
    plan: Plan,
    stop: StopHandle,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineBuilder {
    /// An engine with default settings (one shard per CPU).
    pub fn new() -> Self {
        let settings = EngineSettings::default();
        let plan = Plan { shards: resolve_shards(settings.shards), ..Plan::default() };
        EngineBuilder { settings, plan, stop: StopHandle::default() }
    }

    /// Run on `n` shards (more shards than CPUs run unpinned).
    pub fn shards(mut self, n: usize) -> Self {
        self.settings.shards = n;
        self.plan.shards = resolve_shards(n);
        self
    }

    /// Change any engine setting.
    pub fn settings(mut self, f: impl FnOnce(&mut EngineSettings)) -> Self {
        f(&mut self.settings);
        self.plan.shards = resolve_shards(self.settings.shards);
        self
    }

    /// A handle to stop the engine from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Add an app with a latency SLO.
    pub fn app(&mut self, name: &str, slo: Duration) -> AppBuilder<'_> {
        let id = self.plan.apps.len() as AppId;
        self.plan.apps.push(AppPlan {
            name: name.to_owned(),
            slo_ns: slo.as_nanos() as u64,
            weight: 1,
            watermark_every: 1000,
            watermark_delay_ms: 0,
        });
        AppBuilder { plan: &mut self.plan, app: id }
    }

    /// Run every app to completion under the FIFO policy.
    pub fn run(self) -> Result<Summary, EngineError> {
        self.run_with(Builtin::by_name("fifo").expect("fifo exists"), |_| {})
    }

    /// Run with `policy` (a built-in or your own), reporting progress each stats interval.
    pub fn run_with<P: Policy + Clone + Send>(
        self,
        policy: P,
        on_progress: impl FnMut(&Progress),
    ) -> Result<Summary, EngineError> {
        run(self.plan, &self.settings, policy, self.stop, on_progress)
    }
}

/// Several schedules merged by due time (the logical source instances one shard runs).
struct MergeByDue<T, I> {
    instances: Vec<I>,
    heads: Vec<Option<(u64, u64, u64, T)>>,
}

impl<T, I: Iterator<Item = (u64, u64, u64, T)>> Iterator for MergeByDue<T, I> {
    type Item = (u64, u64, u64, T);
    fn next(&mut self) -> Option<Self::Item> {
        let i =
            (self.heads.iter().enumerate()).filter_map(|(i, h)| h.as_ref().map(|e| (e.0, i))).min().map(|(_, i)| i)?;
        std::mem::replace(&mut self.heads[i], self.instances[i].next())
    }
}

/// Builds one app's DAG.
pub struct AppBuilder<'a> {
    plan: &'a mut Plan,
    app: AppId,
}

struct IterSource<I> {
    iter: I,
    /// Events per second (0: as fast as the engine takes them), and how many were produced.
    rate: u64,
    produced: u64,
}

impl<T: Message, I: Iterator<Item = (u64, u64, T)>> CustomSource for IterSource<I> {
    fn next_due_ns(&self) -> Option<u64> {
        Some(self.produced.saturating_mul(1_000_000_000).checked_div(self.rate).unwrap_or(0))
    }

    fn next(&mut self, buf: &mut AlignedVec) -> Option<(u64, u64)> {
        let (key, time, value) = self.iter.next()?;
        self.produced += 1;
        let taken = std::mem::take(buf);
        *buf = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&value, taken).expect("value archives");
        Some((key, time))
    }
}

/// A source replaying events at the times they carry (see [`AppBuilder::scheduled_source`]).
struct ScheduledSource<T, I> {
    iter: I,
    /// The next event, read ahead so its due time is known before it is produced.
    ahead: Option<(u64, u64, u64, T)>,
}

impl<T: Message, I: Iterator<Item = (u64, u64, u64, T)>> CustomSource for ScheduledSource<T, I> {
    fn next_due_ns(&self) -> Option<u64> {
        self.ahead.as_ref().map(|e| e.0)
    }

    fn next(&mut self, buf: &mut AlignedVec) -> Option<(u64, u64)> {
        let (_, key, time, value) = std::mem::replace(&mut self.ahead, self.iter.next())?;
        let taken = std::mem::take(buf);
        *buf = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&value, taken).expect("value archives");
        Some((key, time))
    }
}

impl AppBuilder<'_> {
    /// Set the share under the `fair` policy.
    pub fn weight(&mut self, weight: u32) -> &mut Self {
        self.plan.apps[self.app as usize].weight = weight;
        self
    }

    /// Set how often sources emit watermarks (every `every` events) and their delay (ms).
    pub fn watermarks(&mut self, every: u64, delay_ms: u64) -> &mut Self {
        let a = &mut self.plan.apps[self.app as usize];
        a.watermark_every = every;
        a.watermark_delay_ms = delay_ms;
        self
    }

    /// A source of `parallelism` instances; `make(i)` gives instance i's events as
    /// `(key_hash, event_time_ms, value)`.
    pub fn source<T, I>(
        &mut self,
        name: &str,
        parallelism: u32,
        make: impl Fn(u32) -> I + Send + Sync + 'static,
    ) -> NodeRef
    where
        T: Message + 'static,
        I: Iterator<Item = (u64, u64, T)> + 'static,
    {
        self.paced_source(name, parallelism, 0, make)
    }

    /// [`AppBuilder::source`] offering `rate` events per second per shard it runs on (open
    /// loop: an event is due at its index / rate; 0 = as fast as the engine takes them).
    pub fn paced_source<T, I>(
        &mut self,
        name: &str,
        parallelism: u32,
        rate: u64,
        make: impl Fn(u32) -> I + Send + Sync + 'static,
    ) -> NodeRef
    where
        T: Message + 'static,
        I: Iterator<Item = (u64, u64, T)> + 'static,
    {
        let make = Arc::new(make);
        self.add_source(name, parallelism, move |cx, logical| {
            let make = make.clone();
            let iter = (cx.instance..logical).step_by(cx.parallelism as usize).flat_map(move |i| make(i));
            SourceInstance::Custom(Box::new(IterSource { iter, rate, produced: 0 }))
        })
    }

    /// A source replaying a schedule (a trace, a burst pattern): `make(i)` gives instance i's
    /// events as `(due_ns, key_hash, event_time_ms, value)`, where `due_ns` (ns since the source
    /// started, non-decreasing) is when the event is offered. Open loop: an event is stamped
    /// with its due time, so time it waits behind a slow engine counts as latency.
    pub fn scheduled_source<T, I>(
        &mut self,
        name: &str,
        parallelism: u32,
        make: impl Fn(u32) -> I + Send + Sync + 'static,
    ) -> NodeRef
    where
        T: Message + 'static,
        I: Iterator<Item = (u64, u64, u64, T)> + 'static,
    {
        self.add_source(name, parallelism, move |cx, logical| {
            // The logical instances a shard runs are merged by due time, so each keeps its schedule.
            let mut instances: Vec<I> = (cx.instance..logical).step_by(cx.parallelism as usize).map(&make).collect();
            let heads = instances.iter_mut().map(Iterator::next).collect();
            let mut iter = MergeByDue { instances, heads };
            let ahead = iter.next();
            SourceInstance::Custom(Box::new(ScheduledSource { iter, ahead }))
        })
    }

    /// A source of `parallelism` logical instances, at most one physical instance per shard:
    /// `make(cx, logical)` builds shard `cx.shard`'s, which runs the logical instances
    /// `cx.instance`, `cx.instance + cx.parallelism`... (so every instance's events are produced).
    fn add_source(
        &mut self,
        name: &str,
        parallelism: u32,
        make: impl Fn(crate::plan::InstanceCx, u32) -> SourceInstance + Send + Sync + 'static,
    ) -> NodeRef {
        let logical = parallelism.max(1);
        let shards: Vec<ShardId> = (0..logical.min(self.plan.shards as u32) as ShardId).collect();
        self.plan.sources.push(SourcePlan {
            app: self.app,
            name: name.to_owned(),
            factory: Arc::new(move |cx| make(cx, logical)),
            shards,
            outputs: Vec::new(),
            schema: Schema::default(),
            event_time_field: None,
        });
        NodeRef(Upstream::Source(self.plan.sources.len() - 1))
    }

    /// A function on `input`; `make` builds its instance on each shard.
    pub fn function<F: Function>(
        &mut self,
        name: &str,
        input: NodeRef,
        route: Route,
        make: impl Fn() -> F + Send + Sync + 'static,
    ) -> NodeRef {
        self.function_on(name, &[(input, route)], make)
    }

    /// A dual-mode actor on `input` (routed by key): with `max_lessees > 0` a hot partition
    /// scales out to lessees on other shards when the policy's `on_route` says its home shard
    /// cannot meet a message's deadline (see [`Actor`]). `make` builds a fresh actor (the
    /// lessor's, and each lessee's).
    pub fn actor<A: Actor>(
        &mut self,
        name: &str,
        input: NodeRef,
        max_lessees: u32,
        make: impl Fn() -> A + Send + Sync + 'static,
    ) -> NodeRef
    where
        rkyv::Archived<A::State>: rkyv::Deserialize<A::State, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        let make: Arc<dyn Fn() -> A + Send + Sync> = Arc::new(make);
        let factory = Arc::new(move |_cx: crate::plan::InstanceCx| {
            let erased = ErasedActorImpl {
                make: make.clone(),
                actor: make(),
                state: A::State::default(),
                scratch: AlignedVec::new(),
            };
            OperatorInstance::Actor(Box::new(erased))
        });
        let node = self.add_node(name, &[(input, Route::ByKey)], factory, false);
        if let NodeRef(Upstream::Function(id)) = node {
            self.plan.functions[id as usize].max_lessees = max_lessees;
        }
        node
    }

    /// A function with several inputs (port i = the i-th input).
    pub fn function_on<F: Function>(
        &mut self,
        name: &str,
        inputs: &[(NodeRef, Route)],
        make: impl Fn() -> F + Send + Sync + 'static,
    ) -> NodeRef {
        let factory = Arc::new(move |_cx: crate::plan::InstanceCx| {
            OperatorInstance::User(Box::new(Erased { f: make(), scratch: AlignedVec::new() }))
        });
        self.add_node(name, inputs, factory, false)
    }

    /// A sink that hands every output to the returned receiver.
    pub fn collect(&mut self, name: &str, input: NodeRef) -> flume::Receiver<Output> {
        let (tx, rx) = flume::unbounded();
        let sink_name = name.to_owned();
        let factory = Arc::new(move |_cx: crate::plan::InstanceCx| {
            let target = SinkTarget::Collect { name: sink_name.clone(), tx: tx.clone() };
            OperatorInstance::Sink(Sink::new(target, Schema::default()))
        });
        self.add_node(name, &[(input, Route::Forward)], factory, true);
        rx
    }

    /// A sink that only measures latency.
    pub fn measure(&mut self, name: &str, input: NodeRef) {
        let factory = Arc::new(|_cx: crate::plan::InstanceCx| {
            OperatorInstance::Sink(Sink::new(SinkTarget::Latency, Schema::default()))
        });
        self.add_node(name, &[(input, Route::Forward)], factory, true);
    }

    fn add_node(
        &mut self,
        name: &str,
        inputs: &[(NodeRef, Route)],
        factory: crate::plan::OperatorFactory,
        is_sink: bool,
    ) -> NodeRef {
        let inputs: Vec<Input> = inputs
            .iter()
            .enumerate()
            .map(|(port, (n, r))| Input {
                port: port as u8,
                from: n.0,
                partition: if *r == Route::ByKey { Partition::ByKey } else { Partition::Forward },
            })
            .collect();
        let id = self.plan.add_function(FunctionPlan {
            app: self.app,
            name: name.to_owned(),
            factory,
            shards: Vec::new(),
            inputs,
            outputs: Vec::new(),
            input_schema: Schema::default(),
            is_sink,
            max_lessees: 0,
        });
        NodeRef(Upstream::Function(id))
    }
}
