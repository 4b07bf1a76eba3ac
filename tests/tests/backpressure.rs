//! Backpressure behind a slow function: a fast source feeding a CPU-bound keyed function
//! (~20 us of hashing per message, no sleep) cannot get further ahead of it than a bound
//! derived from `max_in_flight`, the batch and mailbox sizes and the shard count; nothing is
//! lost or duplicated and each key keeps its order.
//!
//! The bound (`M = max_in_flight`, `T = 64` events a source adds per poll, the shard's
//! `TURN_BUDGET` in `shard/mod.rs`, `R = mailbox_batches * batch_size` envelopes per ring). A
//! shard polls its source only while its staged output holds fewer than `M` messages and every
//! shard's last published run-queue length for the app is below `M`. Every event produced and
//! not yet finished by the slow function is in one of these places:
//! - a run queue (or the local queue feeding it): below `M` when last published, plus what
//!   arrived since. A shard publishes at the end of its turn, before its own flushed batch (up
//!   to `T` events of the previous poll) reaches its run queue, and may then poll `T` more:
//!   at most `M + 2T` per shard;
//! - a ring to another shard: at most `R`, plus one more ring's worth that a busy receiver
//!   drains before it next publishes: `2R` per other shard;
//! - staged output of the source's shard waiting for a full ring (only with other shards): at
//!   most `M + T`.
//!
//! Hence `produced - processed <= (M + 2T) + (n - 1) * (M + 2T + 2R) + [n > 1] * (M + T)` on
//! `n` shards, the message in progress included. (A first derivation, `M + T` per shard, was
//! measured exceeded on one shard: 381 > 320; the `2T` term above is why, and 381 <= 384.)
//! Without backpressure the source runs thousands of events ahead; the control test checks
//! that the probe sees that when `max_in_flight` is large. These run with admission by count
//! only (`queue_budget = 0`); the last test bounds the lead by time instead (see there).
//!
//! On one shard a built-in policy chains the slow function's records to the source's poll
//! (they run at once, in the poll, as the key's home is the shard itself), so the source can
//! never get ahead there. The one-shard runs take [`Queued`] instead: arrival order with every
//! message through the run queue, the case the bound is about.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Result};
use dirigo_actors::envelope::Header;
use dirigo_actors::record::mix64;
use dirigo_engine::api::{key_u64, Cx, EngineBuilder, Function, Route};
use dirigo_engine::policy::{Builtin, Policy, SchedCx, POLICY_NAMES};

const EVENTS: u64 = 50_000;
const KEYS: u64 = 61;
const WORK: Duration = Duration::from_micros(20);
const MAX_IN_FLIGHT: u64 = 256;
const BATCH_SIZE: usize = 64;
const MAILBOX_BATCHES: usize = 4;
/// Events a source adds in one poll (the engine's `TURN_BUDGET`).
const TURN_BUDGET: u64 = 64;

/// The derived bound on `produced - processed` for `shards` shards (see the file docs).
fn bound(shards: u64, max_in_flight: u64) -> u64 {
    let (m, t, ring) = (max_in_flight, TURN_BUDGET, (MAILBOX_BATCHES * BATCH_SIZE) as u64);
    let staged = if shards > 1 { m + t } else { 0 };
    (m + 2 * t) + (shards - 1) * (m + 2 * t + 2 * ring) + staged
}

/// Arrival order, every message through the run queue: no chaining (see the file docs), no
/// lessees.
#[derive(Clone, Copy)]
struct Queued;

impl Policy for Queued {
    fn may_lease(&self) -> bool {
        false
    }
    fn on_enqueue(&mut self, _h: &Header, arrival: u64, _cx: &SchedCx<'_>) -> u64 {
        arrival
    }
}

/// The policy a setup names: a built-in one, or `queued` ([`Queued`]).
#[derive(Clone)]
enum Either {
    Builtin(Builtin),
    Queued,
}

fn policy(name: &str) -> Either {
    match name {
        "queued" => Either::Queued,
        name => Either::Builtin(Builtin::by_name(name).expect("a built-in policy")),
    }
}

/// Progress counters shared by the source iterator and the slow function's instances.
#[derive(Default)]
struct Probe {
    produced: AtomicU64,
    processed: AtomicU64,
    /// Largest `produced - processed` seen by the slow function; and over the second half of
    /// the run (the engine's cost estimates have settled by then).
    max_ahead: AtomicU64,
    max_ahead_late: AtomicU64,
}

/// Burn about `d` of CPU hashing (real work, not a sleep); returns the hash.
fn burn(seed: u64, d: Duration) -> u64 {
    let start = Instant::now();
    let mut h = seed;
    while start.elapsed() < d {
        for _ in 0..32 {
            h = mix64(h.wrapping_add(0x9e37_79b9_7f4a_7c15));
        }
    }
    std::hint::black_box(h)
}

/// The slow function: records how far the source is ahead, works, then passes `(key, seq)` on.
struct Slow(Arc<Probe>);

impl Function for Slow {
    type In = (u64, u64);
    fn on_message(&mut self, cx: &mut Cx<'_>, msg: &rkyv::Archived<(u64, u64)>) {
        // Processed first: both only grow, so this never underestimates how far ahead it is.
        let processed = self.0.processed.load(SeqCst);
        let ahead = self.0.produced.load(SeqCst) - processed;
        self.0.max_ahead.fetch_max(ahead, SeqCst);
        if processed >= EVENTS / 2 {
            self.0.max_ahead_late.fetch_max(ahead, SeqCst);
        }
        let (key, seq) = (msg.0.to_native(), msg.1.to_native());
        let digest = burn(seq, WORK);
        self.0.processed.fetch_add(1, SeqCst);
        cx.emit(cx.key_hash(), cx.event_time(), &(key, seq, digest));
    }
}

/// Run the slow pipeline; returns the largest lead seen and every `(key, seq)` output in
/// arrival order. Runs on its own thread so that a hang fails the test instead of blocking it.
fn run_slow(shards: usize, policy_name: &'static str, max_in_flight: u64) -> Result<(u64, Vec<(u64, u64)>)> {
    run_slow_with(shards, policy_name, max_in_flight, 0.0, Duration::from_millis(100))
        .map(|(ahead, _, outs)| (ahead, outs))
}

/// The largest lead, the largest over the second half, and every `(key, seq)` output.
type Leads = (u64, u64, Vec<(u64, u64)>);

/// [`run_slow`] with admission by time (`queue_budget` of the app's `slo`); also returns the
/// largest lead over the second half of the run.
fn run_slow_with(
    shards: usize,
    policy_name: &'static str,
    max_in_flight: u64,
    queue_budget: f64,
    slo: Duration,
) -> Result<Leads> {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let probe = Arc::new(Probe::default());
        let mut engine = EngineBuilder::new().shards(shards).settings(|s| {
            (s.shard.max_in_flight, s.shard.batch_size, s.mailbox_batches) =
                (max_in_flight, BATCH_SIZE, MAILBOX_BATCHES);
            s.shard.queue_budget = queue_budget;
        });
        let mut app = engine.app("slow", slo);
        let p = probe.clone();
        let src = app.source("fast", 1, move |_| {
            let p = p.clone();
            (0..EVENTS).map(move |i| {
                p.produced.fetch_add(1, SeqCst);
                (key_u64(i % KEYS), i, (i % KEYS, i))
            })
        });
        let p = probe.clone();
        let slow = app.function("slow", src, Route::ByKey, move || Slow(p.clone()));
        let out = app.collect("out", slow);
        let run = match policy(policy_name) {
            Either::Builtin(p) => engine.run_with(p, |_| {}),
            Either::Queued => engine.run_with(Queued, |_| {}),
        };
        let result = run.map(|summary| {
            let outs = out.drain().map(|o| decode(&o.archive)).collect::<Vec<_>>();
            (summary, probe.max_ahead.load(SeqCst), probe.max_ahead_late.load(SeqCst), outs)
        });
        let _ = done_tx.send(result);
    });
    let (summary, max_ahead, late, outs) =
        done_rx.recv_timeout(Duration::from_secs(120)).map_err(|e| anyhow!("no result ({e})"))??;
    ensure!(summary.apps[0].events_in == EVENTS, "events_in {}", summary.apps[0].events_in);
    ensure!(summary.apps[0].events_out == outs.len() as u64, "events_out {}", summary.apps[0].events_out);
    Ok((max_ahead, late, outs.into_iter().collect::<Result<_>>()?))
}

fn decode(archive: &[u8]) -> Result<(u64, u64)> {
    let v = rkyv::access::<rkyv::Archived<(u64, u64, u64)>, rkyv::rancor::Error>(archive)?;
    Ok((v.0.to_native(), v.1.to_native()))
}

/// Every event came out exactly once, each key's in input order.
fn check_outputs(outs: &[(u64, u64)]) -> Result<()> {
    let mut per_key: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &(key, seq) in outs {
        per_key.entry(key).or_default().push(seq);
    }
    ensure!(outs.len() as u64 == EVENTS, "{} outputs for {EVENTS} events", outs.len());
    for key in 0..KEYS {
        let got = per_key.remove(&key).unwrap_or_default();
        let want: Vec<u64> = (key..EVENTS).step_by(KEYS as usize).collect();
        ensure!(
            got == want,
            "key {key}: {} outputs, first difference at {:?}",
            got.len(),
            got.iter().zip(&want).position(|(g, w)| g != w)
        );
    }
    ensure!(per_key.is_empty(), "outputs for unknown keys");
    Ok(())
}

#[test]
fn slow_function_bounds_the_source_and_loses_nothing() -> Result<()> {
    let setups = [(1, "queued"), (4, "fifo")].into_iter().chain(POLICY_NAMES.map(|p| (2, p)));
    for (shards, policy) in setups {
        let (max_ahead, outs) = run_slow(shards, policy, MAX_IN_FLIGHT)?;
        let limit = bound(shards as u64, MAX_IN_FLIGHT);
        eprintln!("{shards} shard(s), {policy}: source at most {max_ahead} events ahead (bound {limit})");
        ensure!(max_ahead <= limit, "{shards} shard(s), {policy}: source ran {max_ahead} events ahead, bound {limit}");
        check_outputs(&outs).map_err(|e| e.context(format!("{shards} shard(s), {policy}")))?;
    }
    Ok(())
}

/// Control: with backpressure out of reach (a huge `max_in_flight`), the same probe sees the
/// source run far past the bound, so the bound above is not vacuous. On one shard this does not
/// depend on timing: each turn polls up to 64 new events but runs only 64 messages, about half
/// of them the sink's, so the backlog grows by about 32 events a turn.
#[test]
fn probe_sees_the_source_run_ahead_without_a_tight_limit() -> Result<()> {
    let (max_ahead, outs) = run_slow(1, "queued", 1 << 20)?;
    let limit = bound(1, MAX_IN_FLIGHT);
    eprintln!("1 shard, max_in_flight 2^20: source at most {max_ahead} events ahead");
    ensure!(max_ahead > 4 * limit, "source only {max_ahead} events ahead, bound {limit}");
    check_outputs(&outs)
}

/// Admission by time: with `max_in_flight` out of reach, `queue_budget` alone holds the source
/// back. On one shard it adds events only while the app's queued messages take less than
/// `queue_budget x SLO` to run by the shard's estimates (or fewer than a batch are queued).
/// Each queued slow message is estimated at no less than its ~20 us of work once the estimates
/// have settled (they start at a 1 us prior, so the second half of the run is checked), so the
/// lead stays within `budget / 20 us` (10% slack for the estimate still closing in), plus a
/// batch, plus the `2T` of the publication lag (see the file docs). Count-only, the control
/// above runs tens of times further ahead.
#[test]
fn admission_by_time_bounds_how_far_a_source_runs_ahead() -> Result<()> {
    let (slo, share) = (Duration::from_millis(20), 0.25);
    let (_, late, outs) = run_slow_with(1, "queued", 1 << 20, share, slo)?;
    let budget_ns = slo.as_nanos() as f64 * share;
    let limit = (budget_ns / WORK.as_nanos() as f64 * 1.1) as u64 + BATCH_SIZE as u64 + 2 * TURN_BUDGET;
    eprintln!("1 shard, queue_budget {share} of {slo:?}: source at most {late} events ahead (limit {limit})");
    ensure!(late <= limit, "source {late} events ahead, limit {limit}");
    check_outputs(&outs)
}
