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

use dirigo_actors::function::{erase_actor, erase_function, StreamType, ValueBatch, ValueRecord};
pub use dirigo_actors::function::{key_str, key_u64, Actor, Cx, Function, Message};
use dirigo_actors::ids::{AppId, ShardId};
use dirigo_actors::record::Schema;
use rkyv::rancor;

use crate::engine::{resolve_shards, run, EngineError, EngineSettings, StopHandle};
use crate::instance::OperatorInstance;
use crate::plan::{AppPlan, FunctionPlan, Input, Partition, Plan, SourcePlan, Upstream};
use crate::policy::{Builtin, Policy};
use crate::report::{Progress, Summary};
use crate::sink::{Collector, Sink, SinkTarget};
use crate::source::{CustomSource, SourceInstance};

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
            // An embedded app runs on every shard: its author placed its keys and sources.
            shards: (0..self.plan.shards as ShardId).collect(),
            reach: (0..self.plan.shards as ShardId).collect(),
            peak_permille: 0,
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
        let mut plan = self.plan;
        plan.bind_types()?;
        run(plan, &self.settings, policy, self.stop, on_progress)
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

struct IterSource<T, I> {
    iter: I,
    /// Events per second (0: as fast as the engine takes them), and how many were produced.
    rate: u64,
    produced: u64,
    /// The event made last, until the next is made.
    current: Option<T>,
    /// The events of the last batch (`CustomSource::advance_batch`): keys and times, values.
    keys: Vec<(u64, u64)>,
    values: Vec<T>,
}

impl<T, I> IterSource<T, I> {
    fn new(iter: I, rate: u64) -> Self {
        IterSource { iter, rate, produced: 0, current: None, keys: Vec::new(), values: Vec::new() }
    }
}

impl<T: Message + 'static, I: Iterator<Item = (u64, u64, T)>> CustomSource for IterSource<T, I> {
    fn next_due_ns(&self) -> Option<u64> {
        Some(self.produced.saturating_mul(1_000_000_000).checked_div(self.rate).unwrap_or(0))
    }

    #[inline]
    fn advance(&mut self) -> Option<(u64, u64)> {
        let (key, time, value) = self.iter.next()?;
        self.produced += 1;
        self.current = Some(value);
        Some((key, time))
    }

    #[inline]
    fn current(&self) -> &dyn ValueRecord {
        self.current.as_ref().expect("an event was made")
    }

    /// A source read as fast as the engine takes it makes its events in batches.
    fn batches(&self) -> bool {
        self.rate == 0
    }

    fn advance_batch(&mut self, max: usize) -> usize {
        self.keys.clear();
        self.values.clear();
        for (key, time, value) in self.iter.by_ref().take(max) {
            self.keys.push((key, time));
            self.values.push(value);
        }
        self.produced += self.keys.len() as u64;
        self.keys.len()
    }

    fn batch(&self) -> (&[(u64, u64)], &dyn ValueBatch) {
        (&self.keys, &self.values)
    }
}

/// A source replaying events at the times they carry (see [`AppBuilder::scheduled_source`]).
struct ScheduledSource<T, I> {
    iter: I,
    /// The next event, read ahead so its due time is known before it is produced.
    ahead: Option<(u64, u64, u64, T)>,
    /// The event made last, until the next is made.
    current: Option<T>,
}

impl<T: Message + 'static, I: Iterator<Item = (u64, u64, u64, T)>> CustomSource for ScheduledSource<T, I> {
    fn next_due_ns(&self) -> Option<u64> {
        self.ahead.as_ref().map(|e| e.0)
    }

    fn advance(&mut self) -> Option<(u64, u64)> {
        let (_, key, time, value) = std::mem::replace(&mut self.ahead, self.iter.next())?;
        self.current = Some(value);
        Some((key, time))
    }

    fn current(&self) -> &dyn ValueRecord {
        self.current.as_ref().expect("an event was made")
    }
}

impl AppBuilder<'_> {
    /// Run this app on `shards` only: its sources' instances, its functions and its key groups
    /// (by default an embedded app runs on every shard). Call it before adding the app's
    /// sources and functions. Panics on an empty list or a shard the engine does not have.
    pub fn on_shards(&mut self, shards: &[ShardId]) -> &mut Self {
        let app = self.app;
        assert!(
            !self.plan.sources.iter().any(|s| s.app == app) && !self.plan.functions.iter().any(|f| f.app == app),
            "on_shards comes before the app's sources and functions"
        );
        assert!(!shards.is_empty(), "an app runs on at least one shard");
        let n = self.plan.shards;
        assert!(shards.iter().all(|&s| (s as usize) < n), "shards {shards:?}: the engine has {n}");
        let a = &mut self.plan.apps[app as usize];
        a.shards = shards.to_vec();
        a.reach = shards.to_vec();
        self
    }

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
        self.add_source(name, parallelism, StreamType::of::<T>(), move |cx, logical| {
            let make = make.clone();
            let iter = (cx.instance..logical).step_by(cx.parallelism as usize).flat_map(move |i| make(i));
            SourceInstance::Custom(Box::new(IterSource::new(iter, rate)))
        })
    }

    /// A source read in `splits` parts, handed out as they are asked for: one instance runs on
    /// each shard of the app, and an instance that has read a split takes the next one no
    /// instance has taken yet (as a reader asks its enumerator for splits in Flink's sources).
    /// `make(s)` gives split `s`'s events, `(key_hash, event_time_ms, value)`. A shard that
    /// runs faster (a core of its own, less of other apps' work) reads more of the input, where
    /// [`AppBuilder::source`]'s fixed shares wait for the slowest shard. Splits are taken in
    /// order and each is read whole by one instance, in its order; so when every split's
    /// events are in event-time order and later than the splits before it, so is each
    /// instance's stream, as watermarks need. Closed loop (events as fast as the engine takes
    /// them). The splits are handed out once: a plan runs once.
    pub fn split_source<T, I>(
        &mut self,
        name: &str,
        splits: u32,
        make: impl Fn(u32) -> I + Send + Sync + 'static,
    ) -> NodeRef
    where
        T: Message + 'static,
        I: Iterator<Item = (u64, u64, T)> + 'static,
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        let make = Arc::new(make);
        // The next split no instance has taken: the only state the instances share, touched
        // once per split (64 bits: instances that find none left count past `splits` freely).
        let taken = Arc::new(AtomicU64::new(0));
        let instances = self.plan.apps[self.app as usize].shards.len() as u32;
        self.add_source(name, instances, StreamType::of::<T>(), move |_, _| {
            let (make, taken) = (make.clone(), taken.clone());
            let mut split: Option<I> = None;
            let iter = std::iter::from_fn(move || loop {
                if let Some(event) = split.as_mut().and_then(Iterator::next) {
                    return Some(event);
                }
                let s = u32::try_from(taken.fetch_add(1, Ordering::Relaxed)).ok().filter(|&s| s < splits)?;
                split = Some(make(s));
            });
            SourceInstance::Custom(Box::new(IterSource::new(iter, 0)))
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
        self.add_source(name, parallelism, StreamType::of::<T>(), move |cx, logical| {
            // The logical instances a shard runs are merged by due time, so each keeps its schedule.
            let mut instances: Vec<I> = (cx.instance..logical).step_by(cx.parallelism as usize).map(&make).collect();
            let heads = instances.iter_mut().map(Iterator::next).collect();
            let mut iter = MergeByDue { instances, heads };
            let ahead = iter.next();
            SourceInstance::Custom(Box::new(ScheduledSource { iter, ahead, current: None }))
        })
    }

    /// A source of `parallelism` logical instances, at most one physical instance per shard:
    /// `make(cx, logical)` builds shard `cx.shard`'s, which runs the logical instances
    /// `cx.instance`, `cx.instance + cx.parallelism`... (so every instance's events are produced).
    fn add_source(
        &mut self,
        name: &str,
        parallelism: u32,
        emits: StreamType,
        make: impl Fn(crate::plan::InstanceCx, u32) -> SourceInstance + Send + Sync + 'static,
    ) -> NodeRef {
        let logical = parallelism.max(1);
        let on = &self.plan.apps[self.app as usize].shards;
        let shards: Vec<ShardId> = on.iter().copied().take(logical as usize).collect();
        self.plan.sources.push(SourcePlan {
            app: self.app,
            name: name.to_owned(),
            factory: Arc::new(move |cx| make(cx, logical)),
            shards,
            outputs: Vec::new(),
            schema: Schema::default(),
            event_time_field: None,
            emits: Some(emits),
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
        let factory = Arc::new(move |_cx: crate::plan::InstanceCx| OperatorInstance::Actor(erase_actor(make.clone())));
        let node = self.add_node(name, &[(input, Route::ByKey)], factory, Some(StreamType::of::<A::In>()));
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
        let factory = Arc::new(move |_cx: crate::plan::InstanceCx| OperatorInstance::User(erase_function(make())));
        self.add_node(name, inputs, factory, Some(StreamType::of::<F::In>()))
    }

    /// A sink that hands every output to the returned receiver.
    pub fn collect(&mut self, name: &str, input: NodeRef) -> Collector {
        let (tx, rx) = Collector::new();
        let sink_name = name.to_owned();
        let factory = Arc::new(move |_cx: crate::plan::InstanceCx| {
            let target = SinkTarget::collect(&sink_name, tx.clone());
            OperatorInstance::Sink(Sink::new(target, Schema::default()))
        });
        self.add_node(name, &[(input, Route::Forward)], factory, None);
        rx
    }

    /// A sink that only measures latency.
    pub fn measure(&mut self, name: &str, input: NodeRef) {
        let factory = Arc::new(|_cx: crate::plan::InstanceCx| {
            OperatorInstance::Sink(Sink::new(SinkTarget::Latency, Schema::default()))
        });
        // It reads its records' headers alone: they go to it with nothing archived.
        self.add_any(name, &[(input, Route::Forward)], factory, None, true);
    }

    fn add_node(
        &mut self,
        name: &str,
        inputs: &[(NodeRef, Route)],
        factory: crate::plan::OperatorFactory,
        takes: Option<StreamType>,
    ) -> NodeRef {
        self.add_any(name, inputs, factory, takes, false)
    }

    /// A node; `ignores_records`: a sink that reads its records' headers alone
    /// (`FunctionPlan::ignores_records`).
    fn add_any(
        &mut self,
        name: &str,
        inputs: &[(NodeRef, Route)],
        factory: crate::plan::OperatorFactory,
        takes: Option<StreamType>,
        ignores_records: bool,
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
            // A node that takes no Rust type is a sink here.
            is_sink: takes.is_none(),
            ignores_records,
            max_lessees: 0,
            takes,
        });
        NodeRef(Upstream::Function(id))
    }
}
