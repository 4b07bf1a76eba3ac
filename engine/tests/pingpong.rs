//! Regression tests for lost wake-ups: messages bounce between two shards many times while both
//! shards also do CPU-bound work and park whenever idle (spin window 0), and a keyed pipeline runs
//! over mailboxes of one batch of one envelope, so rings are full most of the time. If a shard
//! ever parks with work pending (mail, or output staged behind a full ring), the run stops making
//! progress and the test fails on its deadline instead of hanging.

use std::sync::mpsc;
use std::time::Duration;

use dirigo_actors::ids::initial_home;
use dirigo_engine::api::{key_u64, Cx, EngineBuilder, Function, NodeRef, Route};

/// Re-keys each message so that it lands on the other shard, after burning some CPU.
struct Bounce {
    to_key: u64,
}

impl Function for Bounce {
    type In = u64;
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<u64>) {
        let mut x = msg.to_native();
        for _ in 0..2_000 {
            x = x.rotate_left(7) ^ 0x9e37_79b9;
        }
        std::hint::black_box(x);
        cx.emit(self.to_key, cx.event_time(), &msg.to_native());
    }
}

/// A key hash homed on `shard` of 2.
fn key_on(shard: usize) -> u64 {
    (0..).map(key_u64).find(|&h| initial_home(h, 2) == shard).expect("some key lands there")
}

fn bounce_run(events: u64, hops: usize) -> u64 {
    let keys = [key_on(0), key_on(1)];
    let mut engine = EngineBuilder::new().shards(2).settings(|s| {
        s.shard.spin = Duration::ZERO;
        s.shard.max_in_flight = 64;
    });
    let mut app = engine.app("pingpong", Duration::from_secs(1));
    let mut node: NodeRef = app.source("in", 1, move |_| (0..events).map(move |i| (keys[0], i, i)));
    for h in 0..hops {
        let to_key = keys[(h + 1) % 2];
        node = app.function(&format!("hop{h}"), node, Route::ByKey, move || Bounce { to_key });
    }
    let out = app.collect("out", node);
    engine.run().expect("engine runs");
    out.drain().count() as u64
}

#[test]
fn ping_pong_under_cpu_load_never_parks_with_work_pending() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(bounce_run(3_000, 16));
    });
    // 48,000 cross-core hops; a healthy run takes a few seconds even in debug on 2 busy CPUs.
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(n) => assert_eq!(n, 3_000, "every message came back"),
        Err(_) => panic!("no progress for 120 s: a shard parked with work pending"),
    }
}

/// Sum per key, emitting nothing but the count at the end; forwards each message on.
struct Forward;

impl Function for Forward {
    type In = u64;
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<u64>) {
        cx.emit(key_u64(msg.to_native() % 97), cx.event_time(), &msg.to_native());
    }
}

fn full_rings_run(events: u64) -> u64 {
    let mut engine = EngineBuilder::new().shards(2).settings(|s| {
        s.shard.spin = Duration::ZERO;
        s.shard.batch_size = 1;
        s.mailbox_batches = 1;
    });
    let mut app = engine.app("full-rings", Duration::from_secs(1));
    let src =
        app.source("in", 2, move |inst| (0..events).filter(move |i| i % 2 == inst as u64).map(|i| (key_u64(i), i, i)));
    let a = app.function("a", src, Route::ByKey, || Forward);
    let b = app.function("b", a, Route::ByKey, || Forward);
    let out = app.collect("out", b);
    engine.run().expect("engine runs");
    out.drain().count() as u64
}

#[test]
fn output_staged_behind_a_full_ring_is_never_stranded() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..10 {
            let _ = tx.send(full_rings_run(20_000));
        }
    });
    for round in 0..10 {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(n) => assert_eq!(n, 20_000, "round {round}: every message arrived"),
            Err(_) => panic!("round {round}: no progress for 60 s: a shard parked with output staged"),
        }
    }
}
