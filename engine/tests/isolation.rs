//! A failing app fails alone: user code that panics stops its own app (its sources stop, the
//! failure is reported with the app, function and message), and every other app on the same
//! shards runs on to exactly the output it produces alone.

use std::collections::BTreeMap;
use std::time::Duration;

use dirigo_actors::state::{MapMerge, Sum};
use dirigo_engine::api::{key_u64, Actor, Cx, EngineBuilder, Function, Route};
use dirigo_engine::report::Summary;

const EVENTS: u64 = 5_000;
const KEYS: u64 = 37;

/// Running count per key: emits `(key, count)`; panics on its `panic_at`-th message (if set).
struct Count {
    counts: BTreeMap<u64, u64>,
    seen: u64,
    panic_at: Option<u64>,
}

impl Function for Count {
    type In = u64;
    fn on_message(&mut self, cx: &mut Cx<'_>, key: &rkyv::Archived<u64>) {
        self.seen += 1;
        if Some(self.seen) == self.panic_at {
            panic!("message {} is one too many", self.seen);
        }
        let n = self.counts.entry(key.to_native()).or_default();
        *n += 1;
        cx.emit(cx.key_hash(), cx.event_time(), &(key.to_native(), *n));
    }
}

/// A dual-mode actor summing per key (its state merges); answers each key's sum at the end.
#[derive(Default)]
struct Sums;

impl Actor for Sums {
    type In = u64;
    type State = MapMerge<u64, Sum<u64>>;
    fn on_message(&mut self, state: &mut Self::State, _cx: &mut Cx<'_>, key: &rkyv::Archived<u64>) {
        state.entry(key.to_native()).add(1);
    }
    fn on_critical(&mut self, _state: &mut Self::State, _cx: &mut Cx<'_>, _key: &rkyv::Archived<u64>) {}
    fn on_end(&mut self, state: &mut Self::State, cx: &mut Cx<'_>) {
        for (&k, total) in &state.0 {
            cx.emit(key_u64(k), 0, &(k, total.0));
        }
    }
}

type Outputs = BTreeMap<String, Vec<(u64, u64)>>;

/// The tests here run one at a time: the flood test measures SLO satisfaction, which another
/// engine running beside it on a 2-core machine would change.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run the apps named in `which` ("counts", "failing", "sums") together on 2 shards; the
/// failing app's count panics on its 1,000th message on a shard.
fn run(which: &[&str]) -> (Summary, Outputs) {
    let mut engine = EngineBuilder::new().shards(2);
    let mut sinks = Vec::new();
    for &name in which {
        let mut app = engine.app(name, Duration::from_millis(50));
        let src = app.source("in", 1, |_| (0..EVENTS).map(|i| (key_u64(i % KEYS), i, i % KEYS)));
        let out = match name {
            "sums" => app.actor("sum", src, 1, Sums::default),
            _ => {
                let panic_at = (name == "failing").then_some(1_000);
                app.function("count", src, Route::ByKey, move || Count { counts: BTreeMap::new(), seen: 0, panic_at })
            }
        };
        sinks.push((name.to_owned(), app.collect("out", out)));
    }
    let summary = engine.run().expect("the engine runs to completion although an app failed");
    let mut outputs = Outputs::new();
    for (name, rx) in sinks {
        let mut got: Vec<(u64, u64)> = rx
            .drain()
            .map(|o| {
                let mut buf = rkyv::util::AlignedVec::<16>::new();
                buf.extend_from_slice(&o.archive);
                rkyv::from_bytes::<(u64, u64), rkyv::rancor::Error>(&buf).expect("a (key, n) output")
            })
            .collect();
        got.sort_unstable();
        outputs.insert(name, got);
    }
    (summary, outputs)
}

#[test]
fn a_panicking_app_fails_alone_and_the_others_produce_their_outputs() {
    let _one = one_at_a_time();
    let (_, alone_counts) = run(&["counts"]);
    let (_, alone_sums) = run(&["sums"]);
    let (summary, together) = run(&["counts", "failing", "sums"]);

    assert_eq!(together["counts"], alone_counts["counts"], "counts: exactly its output alone");
    assert_eq!(together["sums"], alone_sums["sums"], "sums: exactly its output alone");
    assert_eq!(alone_counts["counts"].len() as u64, EVENTS, "the reference is complete");

    let failed: Vec<(&str, &str)> =
        summary.apps.iter().filter_map(|a| a.failure.as_deref().map(|f| (a.name.as_str(), f))).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let (app, why) = failed[0];
    assert_eq!(app, "failing");
    assert!(why.starts_with("function `count` panicked on shard "), "{why}");
    assert!(why.ends_with("message 1000 is one too many"), "{why}");
    // It stopped: what it emitted before the panic, no more than its instances had seen.
    assert!(together["failing"].len() < EVENTS as usize, "the failed app stopped early");
}

/// Holds its shard for `hold` on its 10th message (user code that blocks: what the stall
/// detector is for), and forwards every message.
struct Slow {
    seen: u64,
    hold: Duration,
}

impl Function for Slow {
    type In = u64;
    fn on_message(&mut self, cx: &mut Cx<'_>, key: &rkyv::Archived<u64>) {
        self.seen += 1;
        if self.seen == 10 {
            std::thread::sleep(self.hold);
        }
        cx.emit(cx.key_hash(), cx.event_time(), &key.to_native());
    }
}

#[test]
fn a_function_holding_its_shard_past_the_budget_is_reported_by_name() {
    let _one = one_at_a_time();
    let mut engine = EngineBuilder::new().shards(2).settings(|s| s.stall_budget = Duration::from_millis(40));
    let mut app = engine.app("sluggish", Duration::from_millis(500));
    let src = app.source("in", 1, |_| (0..100u64).map(|i| (key_u64(i), i, i)));
    let slow = app.function("slow", src, Route::Forward, || Slow { seen: 0, hold: Duration::from_millis(400) });
    let out = app.collect("out", slow);
    let summary = engine.run().expect("runs");
    assert_eq!(out.drain().count(), 100, "a slow function is reported, not failed");
    // The 400 ms hold is reported (a loaded machine may add stalls of its own: any other must
    // also name this app's only function).
    assert!(summary.stalls.iter().any(|s| s.held_ms > 40.0), "{:?}", summary.stalls);
    for stall in &summary.stalls {
        assert_eq!((stall.app.as_str(), stall.function.as_str()), ("sluggish", "slow"), "{stall:?}");
    }
}

/// Blocks its shard for good on its 10th message (user code that never returns), and
/// forwards every message before that.
struct Hang {
    seen: u64,
}

impl Function for Hang {
    type In = u64;
    fn on_message(&mut self, cx: &mut Cx<'_>, key: &rkyv::Archived<u64>) {
        self.seen += 1;
        if self.seen == 10 {
            loop {
                std::thread::park(); // never unparked: the thread stays here until the process ends
            }
        }
        cx.emit(cx.key_hash(), cx.event_time(), &key.to_native());
    }
}

/// Run apps on 2 shards: `counts` (a keyed count) and `sums` (a dual-mode actor) on shard 0
/// only, and, with `hanging`, `stuck` (its function never returns) on shard 1 and `spread` (a
/// keyed count over both shards). A function holding its shard 300 ms stops its app. The run
/// must end: it runs on a thread of its own and the test fails after a minute.
fn run_beside_a_hang(hanging: bool) -> (Summary, Outputs) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut engine = EngineBuilder::new().shards(2).settings(|s| {
            s.stall_budget = Duration::from_millis(50);
            s.stall_stop = Duration::from_millis(300);
        });
        let mut sinks = Vec::new();
        let names: &[&str] = if hanging { &["counts", "sums", "stuck", "spread"] } else { &["counts", "sums"] };
        for &name in names {
            let mut app = engine.app(name, Duration::from_millis(50));
            match name {
                "counts" | "sums" => app.on_shards(&[0]),
                "stuck" => app.on_shards(&[1]),
                _ => &mut app,
            };
            let src = app.source("in", 1, |_| (0..EVENTS).map(|i| (key_u64(i % KEYS), i, i % KEYS)));
            let out = match name {
                "sums" => app.actor("sum", src, 0, Sums::default),
                "stuck" => app.function("hang", src, Route::Forward, || Hang { seen: 0 }),
                _ => app.function("count", src, Route::ByKey, || Count {
                    counts: BTreeMap::new(),
                    seen: 0,
                    panic_at: None,
                }),
            };
            sinks.push((name.to_owned(), app.collect("out", out)));
        }
        let summary = engine.run().expect("the engine runs to its end although a shard was given up");
        let mut outputs = Outputs::new();
        for (name, rx) in sinks {
            let mut got: Vec<(u64, u64)> = rx
                .drain()
                .filter_map(|o| {
                    let mut buf = rkyv::util::AlignedVec::<16>::new();
                    buf.extend_from_slice(&o.archive);
                    rkyv::from_bytes::<(u64, u64), rkyv::rancor::Error>(&buf).ok()
                })
                .collect();
            got.sort_unstable();
            outputs.insert(name, got);
        }
        let _ = tx.send((summary, outputs));
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("the run ended (a shard held by a stuck function is given up)")
}

#[test]
fn a_function_that_never_returns_stops_its_app_and_the_apps_on_other_shards_run_on() {
    let _one = one_at_a_time();
    let (_, alone) = run_beside_a_hang(false);
    let (summary, together) = run_beside_a_hang(true);
    for app in ["counts", "sums"] {
        assert_eq!(together[app], alone[app], "`{app}` produced exactly its output alone");
        assert_eq!(summary.apps.iter().find(|a| a.name == app).unwrap().failure, None);
    }
    assert_eq!(alone["counts"].len(), EVENTS as usize);
    assert_eq!(alone["sums"].len(), KEYS as usize);
    let failure = |app: &str| summary.apps.iter().find(|a| a.name == app).unwrap().failure.clone().unwrap_or_default();
    let stuck = failure("stuck");
    assert!(stuck.starts_with("function `hang` held shard 1 past the stall limit: one message ran for "), "{stuck}");
    // The app with key groups on the stuck shard could not be whole: it fails too, saying why.
    let spread = failure("spread");
    assert!(spread.starts_with("shard 1 was given up: "), "{spread}");
    assert!(together["stuck"].len() < 10, "the stuck app emitted only what came before the hang");
    eprintln!("stuck: {stuck}\nspread: {spread}\nstalls: {:?}", summary.stalls);
    assert!(summary.stalls.iter().any(|s| s.function == "hang" && s.shard == 1), "{:?}", summary.stalls);
}

/// The 1 ms-SLO app of the flood test: `rate` readings a second for `secs`, counted per sensor.
fn tight_app(rate: u64, secs: u64, cores: usize) -> String {
    format!(
        r#"
[[app]]
name = "tight"
slo = "1ms"
weight = 8
cores = {cores}
schema = {{ sensor = "u64", value = "u64" }}
[[app.source]]
name = "readings"
kind = "generator"
rate = {rate}
duration = "{secs}s"
keys = 100
[[app.function]]
name = "per_sensor"
kind = "count"
input = "readings"
key = "sensor"
[[app.sink]]
name = "latency"
kind = "latency"
input = "per_sensor"
"#
    )
}

/// The flood: an app declaring 10x a shard's capacity (`[engine] shard_capacity`, 200,000/s),
/// so its `events` are all due at once and it offers them as fast as the engine takes them (a
/// debug build takes a few seconds for 300,000).
fn flood_app(events: u64, cores: usize) -> String {
    format!(
        r#"
[[app]]
name = "flood"
slo = "100ms"
weight = 1
cores = {cores}
schema = {{ user = "u64", amount = "u64" }}
[[app.source]]
name = "clicks"
kind = "generator"
rate = 2000000
events = {events}
keys = 100000
seed = 3
[[app.function]]
name = "spend"
kind = "sum"
input = "clicks"
key = "user"
field = "amount"
[[app.sink]]
name = "latency"
kind = "latency"
input = "spend"
"#
    )
}

/// One run of `text` on 2 shards under `policy`: the tight app's satisfaction, and the flood's
/// events out (None without it).
fn tight_beside(text: &str, policy: &str, tight_events: u64) -> (f64, Option<u64>) {
    use dirigo_engine::{compile::run_config, config::Config, engine::StopHandle, policy::Builtin};
    let config = Config::parse(text, "flood.toml").expect("config");
    let summary =
        run_config(&config, 2, Builtin::by_name(policy).expect("policy"), StopHandle::default()).expect("runs");
    let app = |name: &str| summary.apps.iter().find(|a| a.name == name);
    let tight = app("tight").expect("the tight app");
    assert_eq!(tight.events_out, tight_events, "every reading of the tight app came out");
    (tight.satisfaction, app("flood").map(|f| f.events_out))
}

/// A flooding app (10x its share) beside a 1 ms-SLO app, both placed by the engine (the
/// flood's declared rate fills a shard, the tight app starts on the other): under the default
/// policy (FIFO) and under `fair`, neither of which spreads load onto a tighter app's shard
/// (fair did, and its weights kept the tight app's share but not its latency: 0.80-0.89 of
/// alone in a debug build once sources admitted by a smaller queue budget), the tight app
/// keeps at least 95% of the satisfaction it has alone.
/// Alone and beside alternate, so a noisy machine weighs on both alike, five times each (with
/// three, a bad minute of a 2-vCPU VM once read medians of 0.97 alone and 0.92 beside under
/// fair, where the runs read 0.99-1.00 both ways before and after). (Both apps forced onto
/// both shards is the `tenants` benchmark's figure: in a debug build the tight app then sits
/// at the 95% line, in release at 99.6%.)
#[test]
fn a_flooding_app_cannot_push_a_tight_app_below_95_percent_of_its_satisfaction_alone() {
    let _one = one_at_a_time();
    const RATE: u64 = 2_000;
    const SECS: u64 = 2;
    for (policy, cores) in [("fifo", 0), ("fair", 0)] {
        let alone_text = tight_app(RATE, SECS, cores);
        let beside_text = format!("{alone_text}\n{}", flood_app(300_000, cores));
        let (mut alone, mut beside) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            alone.push(tight_beside(&alone_text, policy, RATE * SECS).0);
            let (s, flood) = tight_beside(&beside_text, policy, RATE * SECS);
            assert!(flood.is_some_and(|n| n > RATE * SECS), "the flood ran: {flood:?}");
            beside.push(s);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        eprintln!("{policy} (cores = {cores}): runs alone {alone:.4?}, beside the flood {beside:.4?}");
        let (alone, beside) = (median(&mut alone), median(&mut beside));
        eprintln!(
            "{policy} (cores = {cores}): tight app's satisfaction alone {alone:.4}, beside the flood {beside:.4}"
        );
        assert!(
            beside >= 0.95 * alone,
            "under {policy}, the flood pushed the tight app from {alone:.4} alone to {beside:.4} beside it"
        );
    }
}
