//! Scheduling through real shards: deadlines travel from parent to child across a three-function
//! DAG, a user policy's `on_send` rewrite is what children see, and per-key order holds under
//! every built-in policy; queued records run in the order picking each would give.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dirigo_actors::envelope::Header;
use dirigo_engine::api::{key_u64, Cx, EngineBuilder, Function, Route};
use dirigo_engine::policy::{Builtin, Policy, SchedCx, POLICY_NAMES};

const SLO: Duration = Duration::from_millis(7);

/// Passes `(id, ingress, deadlines seen so far...)` on, appending the deadline it was given.
struct Hop;

impl Function for Hop {
    type In = Vec<u64>;
    fn on_message(&mut self, cx: &mut Cx<'_>, seen: &rkyv::Archived<Vec<u64>>) {
        let mut v: Vec<u64> = seen.iter().map(|x| x.to_native()).collect();
        if v.len() == 1 {
            v.push(cx.ingress_ns());
        }
        v.push(cx.deadline_ns());
        cx.emit(key_u64(v[0] % 7), cx.event_time(), &v);
    }
}

/// EDF, except that every child's deadline is its parent's minus 1 µs (a user rewrite).
#[derive(Clone, Copy)]
struct Tighten;

impl Policy for Tighten {
    fn on_enqueue(&mut self, h: &Header, _arrival: u64, _cx: &SchedCx<'_>) -> u64 {
        h.deadline_ns
    }
    fn on_send(&mut self, parent: &Header, child: &mut Header) {
        child.deadline_ns = parent.deadline_ns - 1_000;
    }
}

fn three_hops<P: Policy + Clone + Send>(policy: P) -> Vec<Vec<u64>> {
    let mut engine = EngineBuilder::new().shards(2);
    let mut app = engine.app("deadlines", SLO);
    let src = app.source("in", 1, |_| (0..500u64).map(|i| (key_u64(i), i, vec![i])));
    let a = app.function("a", src, Route::ByKey, || Hop);
    let b = app.function("b", a, Route::ByKey, || Hop);
    let c = app.function("c", b, Route::Forward, || Hop);
    let out = app.collect("out", c);
    engine.run_with(policy, |_| {}).expect("engine runs");
    out.drain()
        .map(|o| {
            // SAFETY: `Hop` emits archived `Vec<u64>`.
            let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<Vec<u64>>>(&o.archive) };
            v.iter().map(|x| x.to_native()).collect()
        })
        .collect()
}

#[test]
fn children_inherit_their_parents_deadline_across_three_functions() {
    let outs = three_hops(Builtin::by_name("edf").expect("edf"));
    assert_eq!(outs.len(), 500);
    let slo = SLO.as_nanos() as u64;
    for v in outs {
        let (ingress, deadlines) = (v[1], &v[2..]);
        assert_eq!(deadlines, &[ingress + slo; 3], "deadline = ingress + SLO at every hop: {v:?}");
    }
}

#[test]
fn a_policy_rewrite_in_on_send_is_what_children_see() {
    let outs = three_hops(Tighten);
    assert_eq!(outs.len(), 500);
    let slo = SLO.as_nanos() as u64;
    for v in outs {
        let ingress = v[1];
        // The source's edge to `a` is a send too: a sees ingress + SLO - 1 µs, then -1 µs per hop.
        let want: Vec<u64> = (1..=3).map(|k| ingress + slo - k * 1_000).collect();
        assert_eq!(&v[2..], &want[..], "{v:?}");
    }
}

/// Counts per key, emitting `(key, count, input sequence number)`.
#[derive(Default)]
struct Count(HashMap<u64, u64>);

impl Function for Count {
    type In = (u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, m: &rkyv::Archived<(u64, u64)>) {
        let n = self.0.entry(m.0.to_native()).or_default();
        *n += 1;
        cx.emit(cx.key_hash(), cx.event_time(), &(m.0.to_native(), *n, m.1.to_native()));
    }
}

#[test]
fn per_key_order_and_exact_counts_under_every_policy() {
    for name in POLICY_NAMES {
        for shards in [1, 3] {
            let mut engine = EngineBuilder::new().shards(shards).settings(|s| s.shard.max_in_flight = 256);
            let mut app = engine.app("counts", Duration::from_millis(2));
            let src = app.source("in", 2, |inst| {
                (0..5_000u64).filter(move |i| i % 2 == inst as u64).map(|i| (key_u64(i % 31), i, (i % 31, i)))
            });
            let counts = app.function("count", src, Route::ByKey, Count::default);
            let out = app.collect("out", counts);
            engine.run_with(Builtin::by_name(name).expect("policy"), |_| {}).expect("engine runs");
            let mut per_key: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
            for o in out.drain() {
                // SAFETY: `Count` emits archived `(u64, u64, u64)`.
                let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<(u64, u64, u64)>>(&o.archive) };
                per_key.entry(v.0.to_native()).or_default().push((v.1.to_native(), v.2.to_native()));
            }
            assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), 5_000, "{name} on {shards}");
            for (k, seq) in per_key {
                // Counts 1, 2, 3... in order; each source instance's sequence numbers increase.
                assert!(seq.iter().map(|s| s.0).eq(1..=seq.len() as u64), "{name}/{shards}: key {k}");
                for inst in 0..2 {
                    let mine: Vec<u64> = seq.iter().map(|s| s.1).filter(|i| i % 2 == inst).collect();
                    assert!(mine.windows(2).all(|w| w[0] < w[1]), "{name}/{shards}: key {k} reordered");
                }
            }
        }
    }
}

/// Numbers the records it passes on, in the order it runs them: `(key, count, seq, nth)`.
#[derive(Default)]
struct Stamp(u64);

impl Function for Stamp {
    type In = (u64, u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, m: &rkyv::Archived<(u64, u64, u64)>) {
        self.0 += 1;
        cx.emit(cx.key_hash(), cx.event_time(), &(m.0.to_native(), m.1.to_native(), m.2.to_native(), self.0));
    }
}

/// Keyed counts, then two stateless functions on forward edges, then a sink; the summary.
fn forward_chain<P: Policy + Clone + Send>(policy: P, shards: usize) -> (Vec<(u64, u64, u64, u64)>, u64) {
    // No key group moves: `a`'s numbering is per instance.
    let mut engine = EngineBuilder::new().shards(shards).settings(|s| {
        s.shard.max_in_flight = 256;
        s.shard.rebalance = false;
    });
    let mut app = engine.app("chain", Duration::from_millis(5));
    let src = app.source("in", 2, |inst| {
        (0..6_000u64).filter(move |i| i % 2 == inst as u64).map(|i| (key_u64(i % 13), i, (i % 13, i)))
    });
    let counts = app.function("count", src, Route::ByKey, Count::default);
    let a = app.function("a", counts, Route::Forward, Stamp::default);
    let b = app.function("b", a, Route::Forward, || Pass);
    let out = app.collect("out", b);
    let summary = engine.run_with(policy, |_| {}).expect("engine runs");
    let outs = out
        .drain()
        .map(|o| {
            // SAFETY: `Pass` re-emits `Stamp`'s archived `(u64, u64, u64, u64)`.
            let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<(u64, u64, u64, u64)>>(&o.archive) };
            (v.0.to_native(), v.1.to_native(), v.2.to_native(), v.3.to_native())
        })
        .collect();
    (outs, summary.apps[0].chained)
}

/// Passes its record on unchanged.
struct Pass;

impl Function for Pass {
    type In = (u64, u64, u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, m: &rkyv::Archived<(u64, u64, u64, u64)>) {
        cx.emit(cx.key_hash(), cx.event_time(), &(m.0.to_native(), m.1.to_native(), m.2.to_native(), m.3.to_native()));
    }
}

#[test]
fn records_on_forward_edges_chain_under_built_in_policies_in_order() {
    for shards in [1, 2, 4] {
        for name in POLICY_NAMES {
            let (outs, chained) = forward_chain(Builtin::by_name(name).expect("policy"), shards);
            assert_eq!(outs.len(), 6_000, "{name} on {shards}: every record, once");
            let mut per_key: HashMap<u64, Vec<(u64, u64, u64)>> = HashMap::new();
            for (k, n, seq, nth) in outs {
                per_key.entry(k).or_default().push((n, seq, nth));
            }
            for (k, mut seq) in per_key {
                // Sorted by count: `a` ran them in count order, and each source instance's
                // sequence numbers rise with the count.
                seq.sort_unstable();
                assert!(seq.iter().map(|s| s.0).eq(1..=seq.len() as u64), "{name}/{shards}: key {k}");
                assert!(seq.windows(2).all(|w| w[0].2 < w[1].2), "{name}/{shards}: key {k} ran out of order at `a`");
                for inst in 0..2 {
                    let mine: Vec<u64> = seq.iter().map(|s| s.1).filter(|i| i % 2 == inst).collect();
                    assert!(mine.windows(2).all(|w| w[0] < w[1]), "{name}/{shards}: key {k} reordered");
                }
            }
            // Two forward hops per record; some queue (behind a watermark or an end staged for
            // the same function), most chain.
            assert!(chained > 6_000, "{name} on {shards}: {chained} of 12000 forward records chained");
        }
    }
}

/// On one shard every key is homed on the shard that reads it: the keyed hop chains too (the
/// same checks of order hold above). Three forward hops per record chain at most (`a`, `b`,
/// the sink), so more than 3 x 6,000 chained records means keyed ones did.
#[test]
fn records_on_a_keyed_edge_chain_where_their_key_is_homed() {
    for name in ["fifo", "edf"] {
        let (outs, chained) = forward_chain(Builtin::by_name(name).expect("policy"), 1);
        assert_eq!(outs.len(), 6_000, "{name}: every record, once");
        assert!(chained > 18_000, "{name}: {chained} of 24000 records chained, so none on the keyed edge");
    }
}

/// Passes `(key, event time, watermark when the record arrived, watermarks seen)` on.
#[derive(Default)]
struct WatermarkSeen {
    watermark: u64,
    seen: u64,
}

impl Function for WatermarkSeen {
    type In = (u64, u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, m: &rkyv::Archived<(u64, u64, u64)>) {
        cx.emit(cx.key_hash(), cx.event_time(), &(m.0.to_native(), cx.event_time(), self.watermark, self.seen));
    }
    fn on_watermark(&mut self, _cx: &mut Cx<'_>, watermark: u64) {
        self.watermark = watermark;
        self.seen += 1;
    }
}

/// A watermark for an instance on its sender's shard chains in its place among the records: on
/// one shard, with a watermark after every event, every record still chains (three hops: the
/// keyed count, `w`, the sink), and every record reaches `w` after the watermarks before it and
/// before those after it (its event time is at least the watermark `w` had when it arrived,
/// and the watermarks seen rise with it).
#[test]
fn watermarks_chain_in_their_place_so_the_records_behind_them_chain_too() {
    const EVENTS: u64 = 3_000;
    for name in ["fifo", "edf", "laxity"] {
        let mut engine = EngineBuilder::new().shards(1).settings(|s| s.shard.rebalance = false);
        let mut app = engine.app("watermarks", Duration::from_millis(5));
        app.watermarks(1, 0);
        // Event time = the event's number, rising: watermark `i` follows event `i`.
        let src = app.source("in", 1, |_| (0..EVENTS).map(|i| (key_u64(i % 13), i, (i % 13, i))));
        let counts = app.function("count", src, Route::ByKey, Count::default);
        let w = app.function("w", counts, Route::Forward, WatermarkSeen::default);
        let out = app.collect("out", w);
        let summary = engine.run_with(Builtin::by_name(name).expect("policy"), |_| {}).expect("engine runs");
        let mut outs: Vec<(u64, u64, u64)> = out
            .drain()
            .map(|o| {
                // SAFETY: `WatermarkSeen` emits archived `(u64, u64, u64, u64)`.
                let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<(u64, u64, u64, u64)>>(&o.archive) };
                (v.1.to_native(), v.2.to_native(), v.3.to_native())
            })
            .collect();
        assert_eq!(outs.len() as u64, EVENTS, "{name}: every record, once");
        outs.sort_unstable();
        for (i, &(t, wm, seen)) in outs.iter().enumerate() {
            assert_eq!(t, i as u64, "{name}: event times");
            // Watermark i - 1, made after event i - 1, came before event i and no later one did
            // (event 0 makes none: a watermark of 0 does not advance).
            assert_eq!(
                (wm, seen),
                (t.saturating_sub(1), t.saturating_sub(1)),
                "{name}: event {t} met the wrong watermark"
            );
        }
        let chained = summary.apps[0].chained;
        assert_eq!(chained, 3 * EVENTS, "{name}: {chained} of {} records chained", 3 * EVENTS);
    }
}

#[test]
fn a_user_policy_sees_every_message_in_the_run_queue_unless_it_allows_chaining() {
    let (outs, chained) = forward_chain(Tighten, 2);
    assert_eq!(outs.len(), 6_000);
    assert_eq!(chained, 0, "`Policy::chains` defaults to no");
}

/// Under a policy that runs messages in arrival order (fifo), a batch of records that arrives
/// from the other shard while nothing waits runs at once, in order, skipping the run queue
/// (`on_arrival`); the deadline-ordered policies queue every one. The counts are exact and in
/// order per key and source instance either way.
#[test]
fn records_arriving_from_another_shard_run_at_once_under_arrival_order_only() {
    const EVENTS: u64 = 20_000;
    for name in POLICY_NAMES {
        let mut engine = EngineBuilder::new().shards(2).settings(|s| s.shard.rebalance = false);
        let mut app = engine.app("arrivals", Duration::from_millis(50));
        let src = app.source("in", 2, |inst| {
            (0..EVENTS).filter(move |i| i % 2 == inst as u64).map(|i| (key_u64(i % 97), i, (i % 97, i)))
        });
        let counts = app.function("count", src, Route::ByKey, Count::default);
        let out = app.collect("out", counts);
        let summary = engine.run_with(Builtin::by_name(name).expect("policy"), |_| {}).expect("engine runs");
        let mut per_key: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
        for o in out.drain() {
            // SAFETY: `Count` emits archived `(u64, u64, u64)`.
            let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<(u64, u64, u64)>>(&o.archive) };
            per_key.entry(v.0.to_native()).or_default().push((v.1.to_native(), v.2.to_native()));
        }
        assert_eq!(per_key.values().map(Vec::len).sum::<usize>() as u64, EVENTS, "{name}");
        for (k, seq) in &per_key {
            assert!(seq.iter().map(|s| s.0).eq(1..=seq.len() as u64), "{name}: key {k}");
            for inst in 0..2 {
                let mine: Vec<u64> = seq.iter().map(|s| s.1).filter(|i| i % 2 == inst).collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "{name}: key {k}, instance {inst} out of order");
            }
        }
        // Records for keys homed on the other shard cross (at most every count record); the
        // rest chain, and so do the sink's records.
        let (chained, arrived) = (summary.apps[0].chained, summary.apps[0].on_arrival);
        assert!(arrived <= EVENTS, "{name}: {arrived} records ran on arrival");
        if name == "fifo" {
            assert!(arrived > 0, "fifo: no record ran on arrival ({chained} chained)");
        } else {
            assert_eq!(arrived, 0, "{name} orders by deadline or share: every arrival is queued");
        }
    }
}

/// Logs, into a log both functions share, which of them ran which record, in the order they ran.
struct Logged {
    name: char,
    log: Arc<Mutex<Vec<(char, u64)>>>,
}

impl Function for Logged {
    type In = u64;
    fn on_message(&mut self, _cx: &mut Cx<'_>, m: &rkyv::Archived<u64>) {
        self.log.lock().expect("log").push((self.name, m.to_native()));
    }
}

/// Priority: the event time. With `stretches`, it says its pick is `min_head` and nothing else,
/// so the shard may run a picked function's next queued records without asking it again.
#[derive(Clone, Copy)]
struct ByEventTime {
    stretches: bool,
}

impl Policy for ByEventTime {
    fn on_enqueue(&mut self, h: &Header, _arrival: u64, _cx: &SchedCx<'_>) -> u64 {
        h.event_time
    }
    fn picks_min_head(&self) -> bool {
        self.stretches
    }
}

/// Two functions fed the same events, every record queued (the policy neither chains nor runs
/// arrivals at once): picking each record, record `i` of `a` (priority `i`, queued first), then
/// `i` of `b`, then `i + 1` of `a`... A shard that runs a picked function's next records in the
/// same stretch must stop as soon as another function's head comes first: the same order, with
/// the stretches and without.
#[test]
fn queued_records_run_in_the_order_picking_each_would_give() {
    const EVENTS: u64 = 3_000;
    for stretches in [true, false] {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut engine = EngineBuilder::new().shards(1);
        let mut app = engine.app("picks", Duration::from_millis(50));
        let src = app.source("in", 1, |_| (0..EVENTS).map(|i| (key_u64(i), i, i)));
        for name in ['a', 'b'] {
            let log = log.clone();
            app.function(&name.to_string(), src, Route::Forward, move || Logged { name, log: log.clone() });
        }
        let summary = engine.run_with(ByEventTime { stretches }, |_| {}).expect("engine runs");
        let s = &summary.apps[0];
        assert_eq!((s.chained, s.on_arrival), (0, 0), "every record was queued");
        let want: Vec<(char, u64)> = (0..EVENTS).flat_map(|i| [('a', i), ('b', i)]).collect();
        let got = log.lock().expect("log");
        let first = got.iter().zip(&want).position(|(g, w)| g != w);
        assert!(first.is_none() && got.len() == want.len(), "stretches {stretches}: first difference at {first:?}");
    }
}
