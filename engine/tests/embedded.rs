//! End-to-end through real shards with user functions: keyed state, per-key order, no loss and
//! no duplicates, at 1, 2 and 4 shards (4 shards on 2 CPUs included).

use std::collections::HashMap;
use std::time::Duration;

use dirigo_engine::api::{key_u64, Cx, EngineBuilder, Function, Route};
use dirigo_engine::sink::Collector;

/// Counts per key and emits (key, count, sequence number of the input).
#[derive(Default)]
struct CountWithSeq(HashMap<u64, u64>);

impl Function for CountWithSeq {
    type In = (u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        let (key, seq) = (msg.0.to_native(), msg.1.to_native());
        let n = self.0.entry(key).or_default();
        *n += 1;
        cx.emit(cx.key_hash(), cx.event_time(), &(key, *n, seq));
    }
}

/// A stateless hop between the source and the keyed function.
struct Relay;

impl Function for Relay {
    type In = (u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        cx.emit(cx.key_hash(), cx.event_time(), &(msg.0.to_native(), msg.1.to_native()));
    }
}

fn run_keyed_count(shards: usize, events: u64, keys: u64, sources: u32) -> Vec<(u64, u64, u64)> {
    let mut engine = EngineBuilder::new().shards(shards).settings(|s| s.shard.max_in_flight = 512);
    let mut app = engine.app("counts", Duration::from_millis(50));
    let src = app.source("in", sources, move |inst| {
        (0..events)
            .filter(move |i| i % sources as u64 == inst as u64)
            .map(move |i| (key_u64(i % keys), i, (i % keys, i)))
    });
    let relay = app.function("relay", src, Route::Forward, || Relay);
    let counts = app.function("count", relay, Route::ByKey, CountWithSeq::default);
    let out = app.collect("out", counts);
    let summary = engine.run().expect("engine runs");
    assert_eq!(summary.apps[0].events_in, events);
    assert_eq!(summary.apps[0].events_out, events);
    out.drain()
        .map(|o| {
            // SAFETY: the sink's input is archived `(u64, u64, u64)` by `CountWithSeq`.
            let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<(u64, u64, u64)>>(&o.archive) };
            (v.0.to_native(), v.1.to_native(), v.2.to_native())
        })
        .collect()
}

fn check_against_sequential(out: &[(u64, u64, u64)], events: u64, keys: u64) {
    assert_eq!(out.len() as u64, events, "every input produced exactly one output");
    let mut per_key: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    for &(k, n, seq) in out {
        per_key.entry(k).or_default().push((n, seq));
    }
    for k in 0..keys {
        let got = per_key.remove(&k).unwrap_or_default();
        // Sequential oracle: key k sees inputs k, k+keys, k+2*keys... in order, counting 1, 2, 3...
        let want: Vec<(u64, u64)> =
            (0..events).filter(|i| i % keys == k).enumerate().map(|(c, i)| (c as u64 + 1, i)).collect();
        assert_eq!(got, want, "key {k}: outputs differ from the sequential run");
    }
    assert!(per_key.is_empty());
}

#[test]
fn keyed_count_equals_sequential_on_1_2_4_shards() {
    for shards in [1, 2, 4] {
        let out = run_keyed_count(shards, 20_000, 97, 1);
        check_against_sequential(&out, 20_000, 97);
    }
}

/// A function feeding two functions emits each record once into each: the keyed count and a
/// second relay after it see every record, on 1, 2 and 4 shards (an emit along several edges is
/// archived once and copied along each; along one edge it is archived where it goes).
#[test]
fn a_function_feeding_two_functions_gives_each_every_record() {
    for shards in [1, 2, 4] {
        let (events, keys) = (12_000, 31);
        let mut engine = EngineBuilder::new().shards(shards);
        let mut app = engine.app("fan-out", Duration::from_millis(50));
        let src = app.source("in", 1, move |_| (0..events).map(move |i| (key_u64(i % keys), i, (i % keys, i))));
        let relay = app.function("relay", src, Route::Forward, || Relay);
        let counts = app.function("count", relay, Route::ByKey, CountWithSeq::default);
        let copies = app.function("copy", relay, Route::ByKey, || Relay);
        let (counted, copied) = (app.collect("counted", counts), app.collect("copied", copies));
        engine.run().expect("engine runs");
        let counted: Vec<(u64, u64, u64)> = counted
            .drain()
            .map(|o| {
                // SAFETY: archived `(u64, u64, u64)` by `CountWithSeq`.
                let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<(u64, u64, u64)>>(&o.archive) };
                (v.0.to_native(), v.1.to_native(), v.2.to_native())
            })
            .collect();
        check_against_sequential(&counted, events, keys);
        let mut copied: Vec<(u64, u64)> = copied
            .drain()
            .map(|o| {
                // SAFETY: archived `(u64, u64)` by `Relay`.
                let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<(u64, u64)>>(&o.archive) };
                (v.0.to_native(), v.1.to_native())
            })
            .collect();
        copied.sort_unstable_by_key(|&(_, i)| i);
        assert!(copied.iter().copied().eq((0..events).map(|i| (i % keys, i))), "{shards} shards: copies differ");
    }
}

#[test]
fn parallel_sources_lose_and_duplicate_nothing() {
    let out = run_keyed_count(3, 30_000, 13, 3);
    assert_eq!(out.len(), 30_000);
    let mut seqs: Vec<u64> = out.iter().map(|o| o.2).collect();
    seqs.sort_unstable();
    assert!(seqs.iter().copied().eq(0..30_000));
    // Per key, counts run 1..=n with no gap whatever the interleaving of the three sources.
    let mut per_key: HashMap<u64, Vec<u64>> = HashMap::new();
    for &(k, n, _) in &out {
        per_key.entry(k).or_default().push(n);
    }
    for (k, ns) in per_key {
        assert!(ns.iter().copied().eq(1..=ns.len() as u64), "key {k}");
    }
}

/// A scheduled source replays its events at their due times, every logical instance of it:
/// three instances on two shards (shard 0 runs instances 0 and 2, merged by due time), each
/// event delivered exactly once, and each shard's events leave in due order.
#[test]
fn scheduled_source_merges_its_instances_by_due_time_and_loses_nothing() {
    const PER_INSTANCE: u64 = 200;
    let mut engine = EngineBuilder::new().shards(2);
    let mut app = engine.app("replay", Duration::from_secs(1));
    // Instance i's event j is due at (3j + i) * 20 µs: the instances interleave.
    let src = app.scheduled_source("trace", 3, |i| {
        (0..PER_INSTANCE).map(move |j| {
            let due = (3 * j + u64::from(i)) * 20_000;
            (due, key_u64(j), 0, (u64::from(i), due))
        })
    });
    let relay = app.function("relay", src, Route::Forward, || Relay);
    let out = app.collect("out", relay);
    engine.run().expect("runs");
    // Instances 0 and 2 run on shard 0, instance 1 on shard 1 (a sink instance per shard).
    let mut by_shard: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    for o in out.drain() {
        // SAFETY: the sink's input is archived `(u64, u64)` emitted by `Relay`.
        let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<(u64, u64)>>(&o.archive) };
        let (instance, due) = (v.0.to_native(), v.1.to_native());
        by_shard.entry(instance % 2).or_default().push((instance, due));
    }
    let mut all: Vec<(u64, u64)> = by_shard.values().flatten().copied().collect();
    all.sort_unstable();
    let mut want: Vec<(u64, u64)> =
        (0..3).flat_map(|i| (0..PER_INSTANCE).map(move |j| (i, (3 * j + i) * 20_000))).collect();
    want.sort_unstable();
    assert_eq!(all, want, "every event of every instance, once");
    for (shard, events) in &by_shard {
        assert!(events.windows(2).all(|w| w[0].1 <= w[1].1), "shard {shard}: events out of due order");
    }
}

/// Panics on one message: the engine must fail the run, naming the shard, not wait forever.
struct Faulty;

impl Function for Faulty {
    type In = (u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        assert!(msg.1.to_native() != 700, "a user function failed on message 700");
        cx.emit(cx.key_hash(), cx.event_time(), &(msg.0.to_native(), msg.1.to_native()));
    }
}

/// A function that panics fails its app, not the run (and never hangs it): the run ends, the
/// app is reported failed with the panic's message, and it produced less than its input.
#[test]
fn a_panicking_function_fails_its_app_instead_of_hanging_the_run() {
    let (failure, outputs) = run_faulty(Route::ByKey, || Faulty);
    assert!(failure.starts_with("function `faulty` panicked on shard "), "{failure}");
    assert!(failure.ends_with("a user function failed on message 700"), "{failure}");
    assert!(outputs < 2_000, "it stopped at its failure");
}

/// Run function `faulty`, fed by 2 source instances of 1,000 `(instance, j)` events each on 2
/// shards along `route`, on a thread of its own (the test fails if the run has not ended in a
/// minute): the app's failure, which it must report, and how many outputs it made.
fn run_faulty<F: Function<In = (u64, u64)>>(route: Route, make: fn() -> F) -> (String, usize) {
    let mut engine = EngineBuilder::new().shards(2);
    let mut app = engine.app("faulty", Duration::from_secs(1));
    let src = app.source("events", 2, |i| (0..1_000u64).map(move |j| (key_u64(j), j, (u64::from(i), j))));
    let faulty = app.function("faulty", src, route, make);
    let out = app.collect("out", faulty);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(engine.run().map_err(|e| e.to_string()));
    });
    let result = rx.recv_timeout(Duration::from_secs(60)).expect("the run ends instead of hanging");
    let summary = result.expect("an app's panic does not fail the run");
    let failure = summary.apps[0].failure.clone().expect("the app is reported failed");
    (failure, out.drain().count())
}

/// Emits `(u64, u64)` for its input, or a `u64` where the input's second field is 300 (a wiring
/// mistake in one branch of user code).
struct SometimesWrong;

impl Function for SometimesWrong {
    type In = (u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        let (a, b) = (msg.0.to_native(), msg.1.to_native());
        if b == 300 {
            cx.emit(cx.key_hash(), cx.event_time(), &b);
        } else {
            cx.emit(cx.key_hash(), cx.event_time(), &(a, b));
        }
    }
}

/// Takes strings.
struct Words;

impl Function for Words {
    type In = String;
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<String>) {
        cx.emit(cx.key_hash(), cx.event_time(), &msg.as_str().to_owned());
    }
}

/// The types on an embedded app's edges are checked when it is built: a source that archives
/// another type than the function it feeds takes is refused before anything runs, naming the
/// source, the function and both types (the function would read its bytes unchecked otherwise).
#[test]
fn a_source_of_another_type_than_its_function_takes_is_refused_at_build() {
    let mut engine = EngineBuilder::new().shards(1);
    let mut app = engine.app("wired", Duration::from_secs(1));
    let src = app.source("numbers", 1, |_| (0..10u64).map(|j| (key_u64(j), j, (j, j))));
    let words = app.function("words", src, Route::Forward, || Words);
    let _out = app.collect("out", words);
    let err = engine.run().expect_err("the wiring is refused").to_string();
    assert_eq!(
        err,
        "invalid plan: source `numbers` emits `(u64, u64)`, but function `words`, which it feeds, takes `alloc::string::String`"
    );
}

/// A stream carries one type: a function that feeds two functions taking different types is
/// refused at build, naming all three.
#[test]
fn a_function_feeding_functions_of_two_types_is_refused_at_build() {
    let mut engine = EngineBuilder::new().shards(1);
    let mut app = engine.app("forked", Duration::from_secs(1));
    let src = app.source("pairs", 1, |_| (0..10u64).map(|j| (key_u64(j), j, (j, j))));
    let relay = app.function("relay", src, Route::Forward, || Relay);
    let counts = app.function("count", relay, Route::ByKey, CountWithSeq::default);
    let words = app.function("words", relay, Route::Forward, || Words);
    let _a = app.collect("a", counts);
    let _b = app.collect("b", words);
    let err = engine.run().expect_err("the wiring is refused").to_string();
    assert_eq!(
        err,
        "invalid plan: function `relay` feeds `count`, which takes `(u64, u64)`, and `words`, which takes \
         `alloc::string::String`: a stream carries one type"
    );
}

/// A function's emits are checked against the type of the functions it feeds, where it emits:
/// an emit of another type fails the emitting function's app with both types named, and the
/// function downstream (which reads its inputs unchecked) never sees it.
#[test]
fn an_emit_of_another_type_than_downstream_takes_fails_the_app_where_it_is_emitted() {
    let mut engine = EngineBuilder::new().shards(2);
    let mut app = engine.app("mistyped", Duration::from_secs(1));
    let src = app.source("events", 2, |i| (0..1_000u64).map(move |j| (key_u64(j), j, (u64::from(i), j))));
    let wrong = app.function("sometimes-wrong", src, Route::Forward, || SometimesWrong);
    let counts = app.function("count", wrong, Route::ByKey, CountWithSeq::default);
    let out = app.collect("out", counts);
    let summary = engine.run().expect("an app's failure does not fail the run");
    let failure = summary.apps[0].failure.as_deref().expect("the app is reported failed");
    assert!(failure.starts_with("function `sometimes-wrong` panicked on shard "), "{failure}");
    assert!(
        failure.ends_with(
            "a function emitted a `u64`, but the functions it feeds take `(u64, u64)`: a stream carries one type, emit that one"
        ),
        "{failure}"
    );
    // Everything `count` saw was a pair made by `sometimes-wrong` before its failure.
    let outputs: Vec<(u64, u64, u64)> = out
        .drain()
        .map(|o| {
            // SAFETY: the sink's input is archived `(u64, u64, u64)` by `CountWithSeq`.
            let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<(u64, u64, u64)>>(&o.archive) };
            (v.0.to_native(), v.1.to_native(), v.2.to_native())
        })
        .collect();
    assert!(outputs.len() < 2_000, "it stopped at its failure");
    assert!(outputs.iter().all(|&(_, _, seq)| seq != 300), "the mistyped message went nowhere");
}

/// Passes on the pairs whose second field is not a multiple of 3, unchanged (`Cx::pass_on`).
struct SkipThirds;

impl Function for SkipThirds {
    type In = (u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        if !msg.1.to_native().is_multiple_of(3) {
            cx.pass_on(cx.key_hash(), cx.event_time());
        }
    }
}

/// A filter that passes its inputs on as they were archived feeds a keyed function on other
/// shards exactly as re-emitted values would: per key, the counts of the passed events in order.
#[test]
fn a_filter_passing_its_inputs_on_feeds_a_keyed_function_exactly() {
    let (events, keys) = (6_000u64, 37u64);
    for shards in [1, 2, 4] {
        let mut engine = EngineBuilder::new().shards(shards);
        let mut app = engine.app("filtered", Duration::from_millis(50));
        let n = shards as u64;
        let src = app.source("in", shards as u32, move |inst| {
            (u64::from(inst)..events).step_by(n as usize).map(move |i| (key_u64(i % keys), i, (i % keys, i)))
        });
        let kept = app.function("skip-thirds", src, Route::Forward, || SkipThirds);
        let counts = app.function("count", kept, Route::ByKey, CountWithSeq::default);
        let out = app.collect("out", counts);
        engine.run().expect("engine runs");
        assert_counts_of_kept(&out, events, keys, &format!("{shards} shards"));
    }
}

/// `CountWithSeq`'s outputs of events `0..events` keyed `i % keys`, of which every third
/// (`i % 3 == 0`) was dropped: per key, the kept events' sequence numbers, each once, and
/// counts 1, 2, 3... in arrival order.
fn assert_counts_of_kept(out: &Collector, events: u64, keys: u64, case: &str) {
    let mut got: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    for o in out.drain() {
        // SAFETY: the sink's input is archived `(u64, u64, u64)` by `CountWithSeq`.
        let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<(u64, u64, u64)>>(&o.archive) };
        got.entry(v.0.to_native()).or_default().push((v.1.to_native(), v.2.to_native()));
    }
    let mut total = 0;
    for (key, mut seen) in got {
        assert!(seen.iter().enumerate().all(|(i, &(c, _))| c == i as u64 + 1), "{case}, key {key}");
        seen.sort_by_key(|&(_, seq)| seq);
        let want: Vec<u64> = (0..events).filter(|i| i % keys == key && i % 3 != 0).collect();
        assert_eq!(seen.iter().map(|&(_, s)| s).collect::<Vec<_>>(), want, "{case}, key {key}");
        total += seen.len();
    }
    assert_eq!(total as u64, (0..events).filter(|i| i % 3 != 0).count() as u64, "{case}");
}

/// The events of a split source: split `s` holds events `s * PER_SPLIT ..` as `(s, index)`.
fn split_events(s: u32, per_split: u64) -> impl Iterator<Item = (u64, u64, (u64, u64))> {
    let first = u64::from(s) * per_split;
    (first..first + per_split).map(move |i| (key_u64(i % 17), i, (u64::from(s), i)))
}

/// Relays `(split, index)` records; with a gate, the instance that meets split 0 first waits,
/// inside its function, until every split has been handed out.
struct SplitRelay(Option<std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>>);

impl Function for SplitRelay {
    type In = (u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        let (split, i) = (msg.0.to_native(), msg.1.to_native());
        if split == 0 {
            if let Some(gate) = self.0.take() {
                let (all_taken, cv) = &*gate;
                let _open = cv.wait_while(all_taken.lock().unwrap(), |taken| !*taken).unwrap();
            }
        }
        cx.emit(cx.key_hash(), cx.event_time(), &(split, i));
    }
}

/// A split taken: the thread (shard) that took it, and the split.
type Taken = (String, u32);

/// Runs a split source of `splits` x `per_split` events on `shards` shards through a relay (gated
/// or not): the outputs, and which thread took each split, in the order they were taken.
fn run_split_source(shards: usize, splits: u32, per_split: u64, gated: bool) -> (Vec<(u64, u64)>, Vec<Taken>) {
    use std::sync::{Arc, Condvar, Mutex};
    let taken: Arc<Mutex<Vec<Taken>>> = Arc::default();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let mut engine = EngineBuilder::new().shards(shards).settings(|s| s.shard.max_in_flight = 512);
    let mut app = engine.app("splits", Duration::from_millis(50));
    let (log, last) = (taken.clone(), gate.clone());
    let src = app.split_source("in", splits, move |s| {
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        log.lock().unwrap().push((thread, s));
        if s + 1 == splits {
            *last.0.lock().unwrap() = true;
            last.1.notify_all();
        }
        split_events(s, per_split)
    });
    let relay = app.function("relay", src, Route::Forward, move || SplitRelay(gated.then(|| gate.clone())));
    let out = app.collect("out", relay);
    let summary = engine.run().expect("engine runs");
    assert_eq!(summary.apps[0].events_in, u64::from(splits) * per_split);
    let outputs = out
        .drain()
        .map(|o| {
            // SAFETY: archived `(u64, u64)` by `SplitRelay`.
            let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<(u64, u64)>>(&o.archive) };
            (v.0.to_native(), v.1.to_native())
        })
        .collect();
    let taken = std::mem::take(&mut *taken.lock().unwrap());
    (outputs, taken)
}

/// A split source on 1, 2 and 4 shards (4 on 2 CPUs included): every split is taken once, by
/// one shard, each shard's in order; every event comes out exactly once, and each split's events in their
/// order (one instance reads a split whole).
#[test]
fn a_split_source_reads_every_split_once_and_each_in_order() {
    const SPLITS: u32 = 40;
    const PER_SPLIT: u64 = 1_000;
    for shards in [1, 2, 4] {
        let (out, taken) = run_split_source(shards, SPLITS, PER_SPLIT, false);
        // Each split taken once; each shard took its splits in order (the log is written
        // after a split is taken, so shards' entries interleave in any order).
        let mut all: Vec<u32> = taken.iter().map(|t| t.1).collect();
        all.sort_unstable();
        assert!(all.iter().copied().eq(0..SPLITS), "{shards} shards: splits taken {taken:?}");
        for (thread, _) in &taken {
            let mine: Vec<u32> = taken.iter().filter(|t| &t.0 == thread).map(|t| t.1).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{shards} shards: {thread} took {mine:?}");
        }
        let mut per_split: HashMap<u64, Vec<u64>> = HashMap::new();
        for &(s, i) in &out {
            per_split.entry(s).or_default().push(i);
        }
        for s in 0..SPLITS {
            let got = per_split.remove(&u64::from(s)).unwrap_or_default();
            let want: Vec<u64> = split_events(s, PER_SPLIT).map(|e| e.1).collect();
            assert_eq!(got, want, "{shards} shards: split {s}'s events, in order");
        }
        assert!(per_split.is_empty(), "{shards} shards: outputs of no split");
    }
}

/// Splits go to the shards that ask: the shard that takes split 0 is held inside its function
/// (a gate that opens when the last split is taken), so the other shard takes every other split,
/// where fixed shares would have held half of them behind the held shard.
#[test]
fn a_split_source_gives_the_splits_to_the_shard_that_is_free() {
    const SPLITS: u32 = 8;
    // More events per split than a poll ingests or the shard admits in flight: the held
    // shard meets its gate before it could finish split 0.
    const PER_SPLIT: u64 = 5_000;
    let (out, taken) = run_split_source(2, SPLITS, PER_SPLIT, true);
    assert_eq!(out.len() as u64, u64::from(SPLITS) * PER_SPLIT, "every event came out");
    let held = &taken.iter().find(|t| t.1 == 0).expect("split 0 was taken").0;
    let by_held: Vec<u32> = taken.iter().filter(|t| &t.0 == held).map(|t| t.1).collect();
    let by_other: Vec<u32> = taken.iter().filter(|t| &t.0 != held).map(|t| t.1).collect();
    assert_eq!(by_held, [0], "the held shard ({held}) took only split 0: {taken:?}");
    assert!(by_other.iter().copied().eq(1..SPLITS), "the free shard took the rest, in order: {taken:?}");
}

/// A config's generator read in splits (`split_events`) on 1, 2 and 4 shards (4 on 2 CPUs),
/// feeding a keyed count: every event counted once, each key's counts 1..n, n as many as the
/// sequential generator makes of that key.
#[test]
fn a_generator_read_in_splits_counts_every_event_once() {
    use dirigo_actors::record::{access, Value};
    use dirigo_engine::compile::{collect_sinks, compile, settings};
    use dirigo_engine::config::Config;
    use dirigo_engine::source::{Generator, GeneratorSpec, KeyDistribution};
    const EVENTS: u64 = 30_000;
    const KEYS: u64 = 101;
    // The sequential generator's events per key (the same spec as the config's, one instance).
    let schema = dirigo_actors::record::Schema::new(vec![
        ("key".into(), dirigo_actors::record::FieldType::U64),
        ("value".into(), dirigo_actors::record::FieldType::U64),
    ]);
    let spec = GeneratorSpec {
        rate: 0,
        events: Some(EVENTS),
        duration: None,
        keys: KEYS,
        key_field: 0,
        distribution: KeyDistribution::Uniform,
        seed: 7,
        bursts: vec![],
        event_time_field: None,
        instance: 0,
        parallelism: 1,
    };
    let mut want: HashMap<u64, u64> = HashMap::new();
    let (mut g, mut values) = (Generator::new(spec, &schema).expect("a valid spec"), Vec::new());
    while g.next_event(&mut values).is_some() {
        let Value::U64(k) = values[0] else { panic!("a u64 key") };
        *want.entry(k).or_default() += 1;
    }
    for shards in [1, 2, 4] {
        let text = format!(
            "[engine]\nshards = {shards}\n\n[[app]]\nname = \"a\"\nslo = \"50ms\"\ncores = {shards}\n\
             schema = {{ key = \"u64\", value = \"u64\" }}\n\n[[app.source]]\nname = \"in\"\nkind = \"generator\"\n\
             rate = 0\nevents = {EVENTS}\nkeys = {KEYS}\nseed = 7\nparallelism = {shards}\nsplit_events = 700\n\n\
             [[app.function]]\nname = \"counts\"\nkind = \"count\"\ninput = \"in\"\nkey = \"key\"\n\n\
             [[app.sink]]\nname = \"out\"\nkind = \"null\"\ninput = \"counts\"\n"
        );
        let config = Config::parse(&text, "split.toml").expect("a valid config");
        let mut plan = compile(&config, shards).expect("compiles");
        let outputs = collect_sinks(&mut plan);
        let policy = dirigo_engine::policy::Builtin::by_name("fifo").unwrap();
        let summary =
            dirigo_engine::engine::run(plan, &settings(&config), policy, Default::default(), |_| {}).expect("runs");
        assert_eq!(summary.apps[0].events_in, EVENTS, "{shards} shards");
        let mut counts: HashMap<u64, Vec<u64>> = HashMap::new();
        for o in outputs.drain() {
            let row = access(&o.archive).expect("a record").to_values();
            let [Value::U64(k), Value::U64(n)] = row[..] else { panic!("a (key, count) row: {row:?}") };
            counts.entry(k).or_default().push(n);
        }
        assert_eq!(counts.len(), want.len(), "{shards} shards: keys counted");
        for (k, mut ns) in counts {
            ns.sort_unstable();
            assert!(ns.iter().copied().eq(1..=want[&k]), "{shards} shards: key {k}'s counts {ns:?}");
        }
    }
}

/// `SkipThirds` reading the values its source made too (`Function::on_value`), counting how
/// each message reached it.
struct SkipThirdsValues {
    values: std::sync::Arc<std::sync::atomic::AtomicU64>,
    archives: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SkipThirdsValues {
    fn keep(cx: &mut Cx<'_>, seq: u64) {
        if !seq.is_multiple_of(3) {
            cx.pass_on(cx.key_hash(), cx.event_time());
        }
    }
}

impl Function for SkipThirdsValues {
    type In = (u64, u64);
    const TAKES_VALUES: bool = true;
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        self.archives.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        SkipThirdsValues::keep(cx, msg.1.to_native());
    }
    fn on_value(&mut self, cx: &mut Cx<'_>, msg: &(u64, u64)) {
        self.values.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        SkipThirdsValues::keep(cx, msg.1);
    }
}

/// A function that takes values, fed forward by a typed source, runs in the source's poll on
/// the events as they were made where the policy lets records be fused (it chains and its
/// send and apply hooks are no-ops: fifo, edf, laxity, `Bare`), and on their archives where
/// not (fair, whose apply hooks keep each app's virtual time); either way
/// every event reaches it exactly once, and what it passes on (a value archived where it
/// goes) feeds a keyed function on other shards exactly: per key, the counts of the kept
/// events in order, at 1, 2 and 4 shards.
#[test]
fn a_function_taking_values_runs_on_its_sources_values_and_feeds_downstream_exactly() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let (events, keys) = (6_000u64, 37u64);
    use dirigo_engine::policy::{Bare, Builtin, Policy};
    // Records may be fused under a policy that chains and whose send and apply hooks do nothing.
    fn fuses(p: &impl Policy) -> bool {
        p.chains() && !p.observes_apply() && !p.observes_send()
    }
    for policy in ["fifo", "edf", "laxity", "fair", "bare"] {
        let fuses = match policy {
            "bare" => fuses(&Bare),
            p => fuses(&Builtin::by_name(p).unwrap()),
        };
        for shards in [1, 2, 4] {
            let (values, archives) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let mut engine = EngineBuilder::new().shards(shards);
            let mut app = engine.app("filtered", Duration::from_millis(50));
            let n = shards as u64;
            let src = app.source("in", shards as u32, move |inst| {
                (u64::from(inst)..events).step_by(n as usize).map(move |i| (key_u64(i % keys), i, (i % keys, i)))
            });
            let (v, a) = (values.clone(), archives.clone());
            let kept = app.function("skip-thirds", src, Route::Forward, move || SkipThirdsValues {
                values: v.clone(),
                archives: a.clone(),
            });
            let counts = app.function("count", kept, Route::ByKey, CountWithSeq::default);
            let out = app.collect("out", counts);
            let summary = match policy {
                "bare" => engine.run_with(Bare, |_| {}),
                p => engine.run_with(Builtin::by_name(p).unwrap(), |_| {}),
            }
            .expect("engine runs");
            let case = format!("{policy} (fuses: {fuses}), {shards} shards");
            let (values, archives) = (values.load(Ordering::Relaxed), archives.load(Ordering::Relaxed));
            assert_eq!(values + archives, events, "{case}: every event applied once");
            if fuses {
                assert!(values > 0, "{case}: events ran as values ({values} values, {archives} archives)");
                assert!(summary.apps[0].fused >= values, "{case}: fused runs are reported");
            } else {
                assert_eq!(values, 0, "{case}: a policy that sees every message's hooks fuses nothing");
            }
            assert_counts_of_kept(&out, events, keys, &case);
        }
    }
}

/// Panics on the value of message 700.
struct FaultyValues;

impl Function for FaultyValues {
    type In = (u64, u64);
    const TAKES_VALUES: bool = true;
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        self.on_value(cx, &(msg.0.to_native(), msg.1.to_native()));
    }
    fn on_value(&mut self, cx: &mut Cx<'_>, msg: &(u64, u64)) {
        assert!(msg.1 != 700, "a user function failed on value {}", msg.1);
        cx.emit(cx.key_hash(), cx.event_time(), msg);
    }
}

/// A function that panics where it runs in its source's poll fails its app, as one that panics
/// in the run queue does: the run ends, the app is reported failed with the function and the
/// message, and the function runs no more.
#[test]
fn a_function_panicking_in_its_sources_poll_fails_its_app() {
    let (failure, outputs) = run_faulty(Route::Forward, || FaultyValues);
    assert!(failure.starts_with("function `faulty` panicked on shard "), "{failure}");
    assert!(failure.ends_with("a user function failed on value 700"), "{failure}");
    assert!(outputs < 2 * 1_000, "it stopped at its failure: {outputs} outputs");
}

/// What a function saw, in order: a value, an archive (of `(instance, index)`), a watermark,
/// the end.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Event(u64),
    Watermark(u64),
    End,
}

/// Per function instance at its end: its source instance, what it saw, how many values.
type Traces = std::sync::Arc<std::sync::Mutex<Vec<(u64, Vec<Seen>, u64)>>>;

/// Records what it sees, per source instance (the first field of every message), and how
/// many messages came as values.
struct Trace {
    instance: Option<u64>,
    seen: Vec<Seen>,
    values: u64,
    out: Traces,
}

impl Trace {
    fn event(&mut self, instance: u64, i: u64) {
        assert_eq!(*self.instance.get_or_insert(instance), instance, "one source instance per shard");
        self.seen.push(Seen::Event(i));
    }
}

impl Function for Trace {
    type In = (u64, u64);
    const TAKES_VALUES: bool = true;
    fn on_message(&mut self, _: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        self.event(msg.0.to_native(), msg.1.to_native());
    }
    fn on_value(&mut self, _: &mut Cx<'_>, msg: &(u64, u64)) {
        self.values += 1;
        self.event(msg.0, msg.1);
    }
    fn on_watermark(&mut self, _: &mut Cx<'_>, watermark: u64) {
        self.seen.push(Seen::Watermark(watermark));
    }
    fn on_end(&mut self, _: &mut Cx<'_>) {
        self.seen.push(Seen::End);
        let seen = std::mem::take(&mut self.seen);
        self.out.lock().unwrap().push((self.instance.unwrap_or(u64::MAX), seen, self.values));
    }
}

/// A function run in its source's poll sees the source's events and watermarks in the order
/// the source made them, as it would through the queue: every event once, in order, each
/// watermark right after the event that made it due (every 10th, at that event's time) and
/// before the next, then the end; on 1 and 2 shards (a source instance and a function
/// instance on each), and with most events handed over as values (fusion resumes after each
/// watermark has run).
#[test]
fn a_function_in_its_sources_poll_sees_events_and_watermarks_in_the_sources_order() {
    use std::sync::{Arc, Mutex};
    const EVENTS: u64 = 5_000;
    const EVERY: u64 = 10;
    for shards in [1usize, 2] {
        let out: Traces = Arc::new(Mutex::new(Vec::new()));
        let mut engine = EngineBuilder::new().shards(shards);
        let mut app = engine.app("traced", Duration::from_millis(50));
        app.watermarks(EVERY, 0);
        let src =
            app.source("in", shards as u32, |inst| (0..EVENTS).map(move |i| (key_u64(i), i, (u64::from(inst), i))));
        let o = out.clone();
        let traced = app.function("trace", src, Route::Forward, move || Trace {
            instance: None,
            seen: Vec::new(),
            values: 0,
            out: o.clone(),
        });
        let _sink = app.collect("out", traced);
        engine.run().expect("engine runs");
        let mut want = Vec::new();
        for i in 0..EVENTS {
            want.push(Seen::Event(i));
            if (i + 1) % EVERY == 0 {
                want.push(Seen::Watermark(i));
            }
        }
        want.push(Seen::End);
        let traces = out.lock().unwrap().clone();
        assert_eq!(traces.len(), shards, "{shards} shards: every instance ended");
        let mut instances: Vec<u64> = traces.iter().map(|t| t.0).collect();
        instances.sort_unstable();
        assert_eq!(instances, (0..shards as u64).collect::<Vec<_>>(), "{shards} shards");
        for (instance, seen, values) in traces {
            assert_eq!(seen, want, "{shards} shards, instance {instance}");
            // A watermark chained to the function runs at once and fusion resumes after it
            // (else only a poll's first events, up to its first watermark, would be values).
            assert!(values >= EVENTS / 2, "{shards} shards, instance {instance}: {values} events ran as values");
        }
    }
}

/// Fifo, with each source event's deadline set by its key: `key_hash % 1000` ns later than the
/// app's SLO allows. Its hooks around records do nothing, so records are fused where they may
/// be; what a function emits then shows, in its deadline, which event it was made from.
#[derive(Clone)]
struct KeyedDeadlines;

impl dirigo_engine::policy::Policy for KeyedDeadlines {
    fn on_ingress(&mut self, h: &mut dirigo_actors::envelope::Header, app: &dirigo_engine::plan::AppPlan) {
        h.deadline_ns = h.ingress_ns + app.slo_ns + h.key_hash % 1000;
    }
    fn chains(&self) -> bool {
        true
    }
    fn observes_apply(&self) -> bool {
        false
    }
    fn observes_send(&self) -> bool {
        false
    }
    fn observes_route(&self) -> bool {
        false
    }
    fn may_lease(&self) -> bool {
        false
    }
    fn on_enqueue(
        &mut self,
        _: &dirigo_actors::envelope::Header,
        arrival: u64,
        _: &dirigo_engine::policy::SchedCx<'_>,
    ) -> u64 {
        arrival
    }
}

/// How many messages came, and how many carried another deadline than their event's.
type DeadlineCounts = std::sync::Arc<[std::sync::atomic::AtomicU64; 2]>;

/// Checks that the message it applies, `(key, seq)`, carries the deadline `KeyedDeadlines` gave
/// its event (key hash `key_u64(key)`), and emits it on when `EMITS`.
struct DeadlineOf<const EMITS: bool> {
    slo_ns: u64,
    counts: DeadlineCounts,
}

impl<const EMITS: bool> DeadlineOf<EMITS> {
    fn check(&mut self, cx: &mut Cx<'_>, msg: (u64, u64)) {
        use std::sync::atomic::Ordering::Relaxed;
        self.counts[0].fetch_add(1, Relaxed);
        if cx.deadline_ns() - cx.ingress_ns() != self.slo_ns + key_u64(msg.0) % 1000 {
            self.counts[1].fetch_add(1, Relaxed);
        }
        if EMITS {
            cx.emit(key_u64(msg.0), cx.event_time(), &msg);
        }
    }
}

impl<const EMITS: bool> Function for DeadlineOf<EMITS> {
    type In = (u64, u64);
    const TAKES_VALUES: bool = true;
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        self.check(cx, (msg.0.to_native(), msg.1.to_native()));
    }
    fn on_value(&mut self, cx: &mut Cx<'_>, msg: &(u64, u64)) {
        self.check(cx, *msg);
    }
}

/// A typed source's events reach a function fused into its poll a batch at a time (one call
/// for several events), and the records of a stretch reach a function in one call too; each is
/// still its own message: the function sees each one's header (its deadline, which the policy
/// set by its event's key), and what it emits while applying one is made from that one (the
/// functions downstream, on other shards too, see the event's deadline on it, not the first
/// one's of its batch or stretch). Every event once through each function, at 1 and 2 shards.
#[test]
fn a_batch_of_values_fused_into_a_function_keeps_each_events_header() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let (events, keys, slo) = (20_000u64, 101u64, Duration::from_millis(50));
    for shards in [1usize, 2] {
        let fused: DeadlineCounts = std::sync::Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let downstream: DeadlineCounts = std::sync::Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let last: DeadlineCounts = std::sync::Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let mut engine = EngineBuilder::new().shards(shards);
        let mut app = engine.app("deadlines", slo);
        let n = shards as u64;
        let src = app.source("in", shards as u32, move |inst| {
            (u64::from(inst)..events).step_by(n as usize).map(move |i| (key_u64(i % keys), i, (i % keys, i)))
        });
        let slo_ns = slo.as_nanos() as u64;
        let c = fused.clone();
        let first =
            app.function("first", src, Route::Forward, move || DeadlineOf::<true> { slo_ns, counts: c.clone() });
        let d = downstream.clone();
        let second =
            app.function("second", first, Route::ByKey, move || DeadlineOf::<true> { slo_ns, counts: d.clone() });
        let l = last.clone();
        let third =
            app.function("third", second, Route::ByKey, move || DeadlineOf::<false> { slo_ns, counts: l.clone() });
        let _out = app.collect("out", third);
        let summary = engine.run_with(KeyedDeadlines, |_| {}).expect("engine runs");
        let case = format!("{shards} shards");
        for (name, counts) in [("first", &fused), ("second", &downstream), ("third", &last)] {
            assert_eq!(counts[0].load(Relaxed), events, "{case}: {name} applied every event once");
            assert_eq!(counts[1].load(Relaxed), 0, "{case}: {name} saw messages with another event's deadline");
        }
        assert!(summary.apps[0].fused >= events / 2, "{case}: {} events fused", summary.apps[0].fused);
    }
}

/// The summary's run is the work, not the engine's start and teardown: a paced source offering
/// 1,500 events per instance at 10,000/s (its last event due 150 ms after its shard starts)
/// keeps the run at least that long; the run ends before the wall clock does (the wall also
/// holds the shards' start and teardown), and events/s are over the run.
#[test]
fn throughput_is_over_the_run_without_the_engines_start_and_teardown() {
    let (per_instance, rate) = (1_500u64, 10_000u64);
    let mut engine = EngineBuilder::new().shards(2);
    let mut app = engine.app("paced", Duration::from_millis(50));
    let src = app
        .paced_source("in", 2, rate, move |inst| (0..per_instance).map(move |i| (key_u64(i), i, (u64::from(inst), i))));
    let counts = app.function("count", src, Route::ByKey, CountWithSeq::default);
    let _out = app.collect("out", counts);
    let summary = engine.run().expect("engine runs");
    let a = &summary.apps[0];
    assert_eq!((a.events_in, a.events_out), (2 * per_instance, 2 * per_instance));
    let due = (per_instance - 1) as f64 / rate as f64;
    // The controller may hear of the first shard's start a little late (a busy 2-CPU machine
    // runs it beside two shards): 20 ms of slack.
    assert!(summary.run_seconds > due - 0.02, "run {:.4} s, last event due after {due:.4} s", summary.run_seconds);
    assert!(
        summary.run_seconds < summary.wall_seconds,
        "run {:.4} s within the wall's {:.4} s",
        summary.run_seconds,
        summary.wall_seconds
    );
    let over_run = a.events_in as f64 / summary.run_seconds;
    assert!(
        (a.throughput_eps - over_run).abs() < 1e-6 * over_run,
        "{} events/s, over the run {over_run}",
        a.throughput_eps
    );
}

/// Instance `inst` of 2's share of `events` events: every other one, keyed over 1,000 keys,
/// each `(key, sequence number)`.
fn interleaved(events: u64, inst: u32) -> impl Iterator<Item = (u64, u64, (u64, u64))> {
    (0..events / 2).map(move |i| {
        let n = i * 2 + u64::from(inst);
        (key_u64(n % 1_000), n, (n % 1_000, n))
    })
}

/// Sources start once every shard of the node is up: records made for a shard still starting
/// would wait in its ring until it runs, and the run's tail latency would be its start. One
/// shard builds its instance of `count` 60 ms late (its factory sleeps); no event is made
/// before that build ended (10 ms of slack for a descheduled thread: without the wait, the
/// first events are made 60 ms before it).
#[test]
fn sources_start_once_every_shard_of_the_node_is_up() {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;
    let (calls, built_at) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU64::new(0)));
    let (c, b) = (calls.clone(), built_at.clone());
    let events = 40_000u64;
    let mut engine = EngineBuilder::new().shards(2);
    let mut app = engine.app("late", Duration::from_millis(50));
    let src = app.source("in", 2, move |inst| interleaved(events, inst));
    let counts = app.function("count", src, Route::ByKey, move || {
        // The second instance's build is late (the sleep is the slow build under test).
        if c.fetch_add(1, Ordering::SeqCst) == 1 {
            std::thread::sleep(Duration::from_millis(60));
            b.store(dirigo_net::clock::now_ns(), Ordering::SeqCst);
        }
        CountWithSeq::default()
    });
    let out = app.collect("out", counts);
    let summary = engine.run().expect("engine runs");
    assert_eq!(summary.apps[0].events_out, events);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one instance per shard");
    let built = built_at.load(Ordering::SeqCst);
    let first = out.drain().map(|o| o.ingress_ns).min().expect("outputs");
    let slack = 10_000_000;
    assert!(
        first + slack >= built,
        "the first event was made {:.1} ms before the last shard was built",
        (built - first) as f64 / 1e6
    );
}

/// Keyed count whose first record, of all its instances, holds its shard for `STALL` (the
/// sleep is the stall under test, as a shard descheduled by the OS: nothing waits on it).
struct StallOnce {
    count: CountWithSeq,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

const STALL: Duration = Duration::from_millis(200);

impl Function for StallOnce {
    type In = (u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        if !self.stalled.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(STALL);
        }
        self.count.on_message(cx, msg);
    }
}

/// A source admits work against what its shard's rings already hold for each receiver, not
/// only against what receivers publish: one shard stalls for 200 ms while the other's source
/// could go on making records for it. They wait in the ring (the stalled shard publishes
/// nothing), so the source stops after a couple of batches: under 1% of 200,000 records wait
/// out the stall (the p99 stays below it). Counted by buffers only, the ring (64 batches) and
/// the sender's staging (`max_in_flight`) filled: over a tenth of the run waited it out.
#[test]
fn a_stalled_receiver_holds_up_only_a_few_batches_of_its_senders_records() {
    let events = 200_000u64;
    let mut engine = EngineBuilder::new().shards(2);
    let mut app = engine.app("stall", Duration::from_secs(1));
    let src = app.source("in", 2, move |inst| interleaved(events, inst));
    let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stalled.clone();
    let counts = app.function("count", src, Route::ByKey, move || StallOnce {
        count: CountWithSeq::default(),
        stalled: flag.clone(),
    });
    let out = app.collect("out", counts);
    let summary = engine.run().expect("engine runs");
    let a = &summary.apps[0];
    assert_eq!((a.events_in, a.events_out), (events, events));
    assert_eq!(out.drain().count() as u64, events);
    assert!(stalled.load(std::sync::atomic::Ordering::SeqCst), "a shard stalled");
    let stall_us = STALL.as_micros() as f64;
    assert!(a.latency_us.max >= stall_us * 0.9, "the stall shows in the max: {:?}", a.latency_us);
    assert!(
        a.latency_us.p99 < stall_us * 0.5,
        "p99 {:.0} us: records waited out a {stall_us} us stall",
        a.latency_us.p99
    );
}

/// A generator of `events` events (`rate` a second, 0: closed loop) on every one of `shards`
/// shards, keyed by 1,000 keys into a count and a null sink, its app's SLO 1 s; `engine` adds
/// lines to the `[engine]` table. Checks that every event came in and made one output.
fn run_generator_count(shards: usize, rate: u64, events: u64, engine: &str) -> dirigo_engine::report::Summary {
    use dirigo_engine::config::Config;
    let text = format!(
        "[engine]\nshards = {shards}\n{engine}\n[[app]]\nname = \"a\"\nslo = \"1s\"\ncores = {shards}\n\
         schema = {{ key = \"u64\", value = \"u64\" }}\n\n[[app.source]]\nname = \"in\"\nkind = \"generator\"\n\
         rate = {rate}\nevents = {events}\nkeys = 1000\nseed = 7\nparallelism = {shards}\n\n\
         [[app.function]]\nname = \"counts\"\nkind = \"count\"\ninput = \"in\"\nkey = \"key\"\n\n\
         [[app.sink]]\nname = \"out\"\nkind = \"null\"\ninput = \"counts\"\n"
    );
    let config = Config::parse(&text, "keyed-count.toml").expect("a valid config");
    let policy = dirigo_engine::policy::Builtin::by_name("fifo").unwrap();
    let summary = dirigo_engine::compile::run_config(&config, 0, policy, Default::default()).expect("runs");
    let a = &summary.apps[0];
    assert_eq!((a.events_in, a.events_out), (events, events));
    summary
}

/// A source's polls grow with the shards its records cross to: a closed-loop generator feeding
/// a keyed count on 8 shards (8 on 2 CPUs) hands each other shard batches of up to `POLL_FILL`
/// (64) records per turn, not a fixed turn's 64 events spread over 8 (8 each, too few for a
/// saturated shard to hold them to fill: `Outputs::flush`), and every event is still counted
/// once. The SLO (1 s) leaves polls 1 ms (its queue budget, 2 ms, at most 1 ms).
#[test]
fn a_sources_polls_fill_the_batches_to_every_shard_its_keys_reach() {
    const EVENTS: u64 = 200_000;
    let summary = run_generator_count(8, 0, EVENTS, "");
    let (batches, envelopes) = summary.sent_between_shards();
    // Seven eighths of the records cross to another shard (and each watermark to all seven).
    assert!(envelopes >= EVENTS / 2, "{envelopes} envelopes sent to other shards: {:?}", summary.shard_time);
    let per_batch = envelopes as f64 / batches as f64;
    assert!(per_batch >= 32.0, "{per_batch:.1} envelopes per batch: {:?}", summary.shard_time);
}

/// Batches wait to fill only while the shard is busy: the same pipeline as above at a rate both
/// shards keep up with (an open loop, polls finding an event or two due, turns with nothing to
/// do between them) hands its records to the other shard as they come, not held for the 1 ms
/// its SLO's queue budget would allow (at 25,000 events/s a shard, half of them crossing,
/// about 12 per batch). Holding every batch, whatever its fill and whatever the turn did,
/// fails it (about 14 per batch); either bound alone (a quarter-full floor, a saturated turn)
/// keeps it.
#[test]
fn batches_wait_to_fill_only_when_the_sources_have_more_due_than_a_poll_takes() {
    let summary = run_generator_count(2, 50_000, 10_000, "gather = 0\n");
    let (batches, envelopes) = summary.sent_between_shards();
    let per_batch = envelopes as f64 / batches as f64;
    assert!(per_batch < 8.0, "{per_batch:.1} envelopes per batch: {:?}", summary.shard_time);
}
