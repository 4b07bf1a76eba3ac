//! Scenario `barrier`: barrier latency against the number of lessees and the state size (issue
//! 4, benchmark 2).
//!
//! ```text
//! cargo run --release -p dirigo-bench -- barrier [--quick]
//! ```
//! One user [`Actor`] whose state is a dense mergeable vector of S bytes ([`Dense`]: `S / 8`
//! `u64` slots; a partial is zeros of the same length, combined by element-wise wrapping add).
//! Every activation (the lessor and each lessee) holds all S bytes from the start, so every
//! barrier ships a partial of exactly S bytes (plus rkyv's 8-byte root) from each lessee. The
//! lessor folds each partial in place from its archive ([`Actor::combine_archived`]), without
//! deserialising an owned copy first.
//!
//! A source on shard 0 (closed loop) sends messages to one key homed on shard 0. The bench
//! policy ([`FORCED`]) sends every regular message to a lessee, every lessee accepts everything
//! and none is retired before the end, so the actor has `max_lessees` = L lessees, on shards
//! 1 ..= L. The engine opens a new lessee only while the existing ones' shards report a longer
//! wait than a free shard, so the run starts with heavy warm-up messages (no query) until every
//! lessee has run one, then light ones until every heavy one has run (so that the first barrier
//! does not wait for their backlog). Then a regular message `i` adds a pseudo-random value to
//! slot `i % slots` after [`WORK`] rounds of `mix64`, and every [`PER_BARRIER`]-th message is
//! critical: a query answered from the merged state (a slot written a few messages earlier),
//! so each query is a barrier; the end of input, [`PER_BARRIER`] - 1 messages after the last
//! query, is one more. Every run checks the lessee
//! count, the exact partial bytes, every answer and the final state (against a sequential
//! computation of the same input) and fails otherwise.
//!
//! Swept: S in 1 KB .. 100 MB (KB = 2^10, MB = 2^20 bytes), L in 1 ..= shards - 1 on 2 pinned
//! shards (L = 1) and on 4 shards (L = 1, 2, 3; unpinned on a machine with fewer CPUs: the
//! output and `pinned` say so). `max_in_flight` is small ([`MAX_IN_FLIGHT`]): a barrier waits
//! for what the lessees accepted before it, at most that many messages, and the source pauses
//! while the actor is blocked, so a barrier never queues behind the previous one
//! ([`PER_BARRIER`] is larger).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dirigo_actors::ids::initial_home;
use dirigo_actors::record::mix64;
use dirigo_actors::state::Mergeable;
use dirigo_engine::api::{key_u64, Actor, Cx, EngineBuilder};
use dirigo_engine::policy::{AlwaysLease, Retirement};
use dirigo_engine::report::AppSummary;
use serde_json::{json, Value};

use crate::figures::{num, rows};
use crate::plot::{Panel, Series};
use crate::report::{median, Table};
use crate::Opts;

/// Rounds of `mix64` per regular message: a little work for the lessees.
const WORK: u32 = 20;
/// Messages per barrier: every `PER_BARRIER`-th message is a query.
const PER_BARRIER: u64 = 1_000;
/// Messages a shard queues before the source pauses (engine `max_in_flight`): what a barrier
/// may wait for at a lessee before its partial ships. Below `PER_BARRIER`, so the next query
/// cannot arrive while a barrier is open.
const MAX_IN_FLIGHT: u64 = 128;
/// A megabyte (2^20 bytes: the sizes swept are powers of two).
const MB: f64 = (1u64 << 20) as f64;
/// Rounds of `mix64` of a warm-up message (several µs): warm-up messages back the lessees up
/// so that the engine leases all `max_lessees` of them (it opens a new lessee only when the
/// existing ones' shards report a longer wait than a free shard's). The source sends them
/// until every lessee ran one, then light ones (no query) until every warm-up message ran, so
/// the first barrier does not wait for their backlog; each phase at most `WARMUP_MAX` messages.
const WARMUP_WORK: u32 = 5_000;
const WARMUP_MAX: u64 = 1_000_000;
/// A query reads a slot written at most this many messages before it.
const QUERY_BACK: u64 = 16;

/// `u64` slots of every [`Dense::default`] in the current run (runs are sequential).
static SLOTS: AtomicUsize = AtomicUsize::new(0);

/// A dense mergeable vector: the actor's state.
#[derive(Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Dense(pub Vec<u64>);

impl Default for Dense {
    /// Zeros, as many as the run's state size (every activation starts with all S bytes).
    fn default() -> Self {
        Dense(vec![0; SLOTS.load(Ordering::Relaxed)])
    }
}

impl Mergeable for Dense {
    fn partition(&self) -> Self {
        Dense(vec![0; self.0.len()])
    }
    fn combine(&mut self, partial: Self) {
        if self.0.is_empty() {
            // The lessor handed its final state out in `on_end`; the lessees' last (zero)
            // partials arrive after.
            *self = partial;
            return;
        }
        assert_eq!(self.0.len(), partial.0.len(), "partials of one actor have its length");
        for (a, b) in self.0.iter_mut().zip(&partial.0) {
            *a = a.wrapping_add(*b);
        }
    }
}

/// A message: slot, value (a regular message's addend; a query's sequence number), phase
/// ([`HEAVY`], [`DRAIN`] or [`MEASURED`]), query?
type Msg = (u64, u64, u8, bool);
/// Phases of a run: heavy warm-up messages, light ones until the lessees drained them, then the
/// measured ones with the queries.
const HEAVY: u8 = 0;
const DRAIN: u8 = 1;
const MEASURED: u8 = 2;
/// A query's answer: (sequence number, slot, value of the slot).
type Answer = (u64, u64, u64);

/// What a run's source and actors share: the threads (shards) whose lessee ran a heavy
/// warm-up message, how many of those ran, and where the source ended each warm-up phase.
#[derive(Debug, Default)]
struct Warmup {
    /// The source's thread (shard 0's, the lessor's): not a lessee.
    source: Mutex<Option<std::thread::ThreadId>>,
    /// The lessee threads that ran a heavy message, and how many.
    threads: Mutex<Vec<std::thread::ThreadId>>,
    lessees: AtomicUsize,
    /// Heavy messages run.
    heavy_run: AtomicU64,
    /// Per phase ([`HEAVY`], [`DRAIN`]): the index of the first message after it, once the
    /// source moved on.
    ends: [AtomicU64; 2],
}

impl Warmup {
    /// The calling thread ran a heavy message; `first`: its activation's first.
    fn ran_heavy(&self, first: bool) {
        self.heavy_run.fetch_add(1, Ordering::AcqRel);
        let me = std::thread::current().id();
        if !first || *self.source.lock().expect("source thread") == Some(me) {
            return;
        }
        let mut threads = self.threads.lock().expect("warm-up threads");
        if !threads.contains(&me) {
            threads.push(me);
            self.lessees.store(threads.len(), Ordering::Release);
        }
    }
}

/// The final states the lessors hand out in `on_end`: one per shard (the function has an
/// instance on every shard; only shard 0's owns the key).
type Finals = Arc<Mutex<Vec<Vec<u64>>>>;

struct DenseActor {
    finals: Finals,
    warmup: Arc<Warmup>,
    /// This activation ran a heavy message.
    seen: bool,
}

impl Actor for DenseActor {
    type In = Msg;
    type State = Dense;
    fn is_critical(&self, msg: &rkyv::Archived<Msg>) -> bool {
        msg.3
    }
    fn on_message(&mut self, state: &mut Dense, _cx: &mut Cx<'_>, msg: &rkyv::Archived<Msg>) {
        let (slot, value, phase) = (msg.0.to_native() as usize, msg.1.to_native(), msg.2);
        let mut x = value;
        for _ in 0..if phase == HEAVY { WARMUP_WORK } else { WORK } {
            x = mix64(x);
        }
        std::hint::black_box(x);
        state.0[slot] = state.0[slot].wrapping_add(value);
        if phase == HEAVY {
            self.warmup.ran_heavy(!std::mem::replace(&mut self.seen, true));
        }
    }
    fn on_critical(&mut self, state: &mut Dense, cx: &mut Cx<'_>, msg: &rkyv::Archived<Msg>) {
        let (slot, seq) = (msg.0.to_native(), msg.1.to_native());
        cx.emit(cx.key_hash(), cx.event_time(), &(seq, slot, state.0[slot as usize]));
    }
    fn combine_archived(&mut self, state: &mut Dense, partial: &rkyv::Archived<Dense>) {
        // In place, element by element: no owned copy of the partial.
        let partial = partial.0.as_slice();
        if state.0.is_empty() {
            // As in `combine`: the lessees' last partials after `on_end`.
            state.0 = partial.iter().map(|x| x.to_native()).collect();
            return;
        }
        assert_eq!(state.0.len(), partial.len(), "partials of one actor have its length");
        for (a, b) in state.0.iter_mut().zip(partial) {
            *a = a.wrapping_add(b.to_native());
        }
    }
    fn on_end(&mut self, state: &mut Dense, _cx: &mut Cx<'_>) {
        // Moved out, not scanned: the end is a barrier too, and its time is reported with the
        // others. The bench compares the whole vector with the sequential one.
        self.finals.lock().expect("final states").push(std::mem::take(&mut state.0));
    }
}

/// Seed of the regular messages' values.
const SEED: u64 = 0xba55_01e7;

/// Message `i` of a run over `slots` slots whose warm-up phases end at `ends`: heavy regular
/// messages, light ones, then light ones with every [`PER_BARRIER`]-th a query.
fn message(i: u64, slots: u64, ends: [u64; 2]) -> Msg {
    let regular = |phase| (i % slots, mix64(i ^ SEED), phase, false);
    if i < ends[0] {
        regular(HEAVY)
    } else if i < ends[1] {
        regular(DRAIN)
    } else if (i - ends[1]) % PER_BARRIER == PER_BARRIER - 1 {
        let back = 1 + mix64(i) % QUERY_BACK;
        ((i - back) % slots, i, MEASURED, true)
    } else {
        regular(MEASURED)
    }
}

/// The source: the warm-up phases (see [`WARMUP_WORK`]), then the [`measured`] messages.
struct Input {
    i: u64,
    slots: u64,
    lessees: usize,
    queries: u64,
    warmup: Arc<Warmup>,
    /// Where each warm-up phase ended (`u64::MAX`: not yet).
    ends: [u64; 2],
}

impl Iterator for Input {
    type Item = Msg;
    fn next(&mut self) -> Option<Msg> {
        if self.i == 0 {
            *self.warmup.source.lock().expect("source thread") = Some(std::thread::current().id());
        }
        let w = &self.warmup;
        let over = match self.ends {
            // Heavy until every lessee ran one.
            [u64::MAX, _] => w.lessees.load(Ordering::Acquire) >= self.lessees || self.i >= WARMUP_MAX,
            // Light until every heavy one ran.
            [heavy, u64::MAX] => w.heavy_run.load(Ordering::Acquire) >= heavy || self.i - heavy >= WARMUP_MAX,
            _ => false,
        };
        if over {
            let p = usize::from(self.ends[0] != u64::MAX);
            self.ends[p] = self.i;
            w.ends[p].store(self.i, Ordering::Release);
        }
        if self.ends[1] != u64::MAX && self.i >= self.ends[1] + measured(self.queries) {
            return None;
        }
        let m = message(self.i, self.slots, self.ends);
        self.i += 1;
        Some(m)
    }
}

/// Measured messages of a run of `queries` queries: after the last query, as many regular
/// messages as before each, so that the end of input (a barrier too) does not arrive while the
/// last query's barrier is open.
fn measured(queries: u64) -> u64 {
    (queries + 1) * PER_BARRIER - 1
}

/// What a sequential run of `messages` gives: every query's answer, in order, and the final
/// state.
fn sequential(messages: u64, slots: u64, ends: [u64; 2]) -> (Vec<Answer>, Vec<u64>) {
    let mut state = vec![0u64; slots as usize];
    let mut answers = Vec::new();
    for i in 0..messages {
        let (slot, value, _, query) = message(i, slots, ends);
        if query {
            answers.push((value, slot, state[slot as usize]));
        } else {
            state[slot as usize] = state[slot as usize].wrapping_add(value);
        }
    }
    (answers, state)
}

/// The bench policy: FIFO order, every regular message to a lessee, every forward accepted,
/// no lessee retired (the engine retires them all at the end).
const FORCED: AlwaysLease = AlwaysLease { retirement: Retirement::AtEnd };

/// One configuration: shards, lessees, state size in bytes.
#[derive(Clone, Copy, Debug)]
struct Setup {
    shards: usize,
    lessees: u32,
    bytes: usize,
}

/// Bytes of a partial's archive for a state of `slots` slots.
fn archive_bytes(slots: usize) -> usize {
    // The vector's elements and rkyv's root (a relative pointer and a length).
    slots * 8 + 8
}

/// A key homed on shard 0 at every shard count swept.
fn key() -> u64 {
    (0..).find(|&k| [2, 4].iter().all(|&n| initial_home(key_u64(k), n) == 0)).expect("a key homed on shard 0")
}

/// One run of `queries` queries; checks the lessee count, the partial bytes, the answers and
/// the final state.
fn run_once(setup: Setup, queries: u64) -> anyhow::Result<Value> {
    let slots = setup.bytes / 8;
    SLOTS.store(slots, Ordering::Relaxed);
    let mut engine = EngineBuilder::new().shards(setup.shards).settings(|s| {
        s.shard.max_in_flight = MAX_IN_FLIGHT;
        // Progress intervals shorter than a run: `lessees_peak` sums the shards' lessees per
        // interval (a run shorter than one interval reports the most on any one shard).
        s.shard.stats_interval = std::time::Duration::from_millis(10);
    });
    let mut app = engine.app("barrier", std::time::Duration::from_millis(100));
    let k = key_u64(key());
    let warmup = Arc::new(Warmup::default());
    let w = warmup.clone();
    let lessees = setup.lessees as usize;
    let src = app.source("in", 1, move |_| {
        let input = Input { i: 0, slots: slots as u64, lessees, queries, warmup: w.clone(), ends: [u64::MAX; 2] };
        input.enumerate().map(move |(i, m)| (k, i as u64, m))
    });
    let finals = Finals::default();
    let (f, w) = (finals.clone(), warmup.clone());
    let actor = app.actor("dense", src, setup.lessees, move || DenseActor {
        finals: f.clone(),
        warmup: w.clone(),
        seen: false,
    });
    let out = app.collect("answers", actor);
    let summary = engine.run_with(FORCED, |_| {})?;
    let a: &AppSummary = &summary.apps[0];
    let ac = &a.actors;
    let l = u64::from(setup.lessees);
    let what = format!("{} shards, {} lessees, {} bytes", setup.shards, setup.lessees, setup.bytes);
    let ends = [0, 1].map(|p| warmup.ends[p].load(Ordering::Acquire));
    let ready = warmup.lessees.load(Ordering::Acquire);
    anyhow::ensure!(
        ac.lessees_peak == l && ready == setup.lessees as usize,
        "{what}: lessees_peak {} (want {l}), {ready} ran a warm-up message (warm-up phases end at {ends:?})",
        ac.lessees_peak
    );
    anyhow::ensure!(
        ends[1] - ends[0] < WARMUP_MAX,
        "{what}: the lessees did not run the warm-up messages while {WARMUP_MAX} more were sent"
    );
    anyhow::ensure!(ac.lessees_created == l, "{what}: lessees_created {} (want {l})", ac.lessees_created);
    anyhow::ensure!(ac.refused == 0, "{what}: {} forwards refused", ac.refused);
    // The actor's barriers: its queries and its end. The function's instances on the other
    // shards (they own no key) each count one more barrier, their end, with no lessee.
    let barriers = queries + 1;
    let others = setup.shards as u64 - 1;
    anyhow::ensure!(
        ac.barriers == barriers + others,
        "{what}: {} barriers, want {barriers} + {others} (the other instances' ends)",
        ac.barriers
    );
    // Only the actor's own barriers had lessees to block: only they are timed.
    anyhow::ensure!(ac.barrier_us.count == barriers, "{what}: {} barriers timed, want {barriers}", ac.barrier_us.count);
    // Every barrier collects a partial from every lessee, and each retires with one more.
    let partial = archive_bytes(slots) as u64;
    let want_bytes = (barriers + 1) * l * partial;
    anyhow::ensure!(
        ac.partial_bytes == want_bytes,
        "{what}: partial_bytes {} (want {want_bytes}: {l} lessees x ({barriers} barriers + retirement) x {partial})",
        ac.partial_bytes
    );
    let messages = ends[1] + measured(queries);
    let want = sequential(messages, slots as u64, ends);
    let mut answers: Vec<Answer> = out
        .drain()
        .map(|o| {
            // SAFETY: the sink's input is archived `Answer`s emitted by `DenseActor`.
            let v = unsafe { rkyv::access_unchecked::<rkyv::Archived<Answer>>(&o.archive) };
            (v.0.to_native(), v.1.to_native(), v.2.to_native())
        })
        .collect();
    answers.sort_unstable();
    anyhow::ensure!(answers == want.0, "{what}: query answers differ from the sequential run");
    // Shard 0's instance holds the key's state; every other instance saw nothing.
    let finals = std::mem::take(&mut *finals.lock().expect("final states"));
    anyhow::ensure!(finals.len() == setup.shards, "{what}: {} final states, want one per shard", finals.len());
    let owners = finals.iter().filter(|f| f.iter().any(|&x| x != 0)).count();
    anyhow::ensure!(owners == 1, "{what}: {owners} instances hold a non-zero state, want 1");
    anyhow::ensure!(finals.contains(&want.1), "{what}: final state differs from the sequential run");
    // What a barrier shipped: the retirement partials left out.
    let per_barrier = (ac.partial_bytes - l * partial) as f64 / barriers as f64;
    Ok(json!({
        "warmup_messages": ends[0],
        "drain_messages": ends[1] - ends[0],
        "messages": messages,
        "barriers": barriers,
        "engine_barriers": ac.barriers,
        "mean_barrier_us": (ac.blocked_ms + ac.critical_ms) * 1e3 / barriers as f64,
        "barrier_us": ac.barrier_us,
        "partial_bytes": ac.partial_bytes,
        "partial_bytes_per_barrier": per_barrier,
        "lessees_peak": ac.lessees_peak,
        "forwarded": ac.forwarded,
        "blocked_ms": ac.blocked_ms,
        "critical_ms": ac.critical_ms,
        "throughput_eps": a.throughput_eps,
        "wall_seconds": summary.wall_seconds,
        "cpu_seconds": summary.cpu_seconds,
    }))
}

/// Median of a numeric field (a dotted path) over runs.
fn med(runs: &[Value], path: &str) -> f64 {
    let xs: Vec<f64> =
        runs.iter().filter_map(|s| path.split('.').try_fold(s, |v, k| v.get(k)).and_then(Value::as_f64)).collect();
    median(&xs)
}

/// State sizes swept, and the barriers per run at each (fewer for the large ones).
fn plan(quick: bool) -> Vec<(usize, u64)> {
    const KB: usize = 1 << 10;
    const MB: usize = 1 << 20;
    if quick {
        vec![(KB, 30), (256 * KB, 30)]
    } else {
        vec![(KB, 300), (16 * KB, 300), (256 * KB, 200), (4 * MB, 60), (32 * MB, 20), (100 * MB, 10)]
    }
}

/// A size for a table cell.
fn size(bytes: f64) -> String {
    match bytes {
        b if b >= MB => format!("{:.0} MB", b / MB),
        b => format!("{:.0} KB", b / 1024.0),
    }
}

/// Run the scenario.
pub fn run_scenario(opts: Opts) -> anyhow::Result<Value> {
    crate::sys::load_before();
    let rounds = if opts.quick { 1 } else { 3 };
    let cpus = crate::sys::cpus();
    let setups: Vec<(usize, u32)> = [2usize, 4].iter().flat_map(|&n| (1..n as u32).map(move |l| (n, l))).collect();
    let sizes = plan(opts.quick);
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); sizes.len() * setups.len()];
    for round in 0..rounds {
        for (si, &(bytes, queries)) in sizes.iter().enumerate() {
            for c in crate::report::interleaved(&(0..setups.len()).collect::<Vec<_>>(), round) {
                let (shards, lessees) = setups[c];
                runs[si * setups.len() + c].push(run_once(Setup { shards, lessees, bytes }, queries)?);
            }
            println!("round {round}: {} done", size(bytes as f64));
        }
    }
    let mut table = Table::new(&[
        "shards",
        "lessees",
        "state",
        "barriers",
        "p50 us",
        "p99 us",
        "max us",
        "shipped/barrier",
        "MB/s merged",
    ]);
    let mut out = Vec::new();
    for (si, &(bytes, queries)) in sizes.iter().enumerate() {
        for (c, &(shards, lessees)) in setups.iter().enumerate() {
            let r = &runs[si * setups.len() + c];
            let (p50, p99, max) = (med(r, "barrier_us.p50"), med(r, "barrier_us.p99"), med(r, "barrier_us.max"));
            let per_barrier = med(r, "partial_bytes_per_barrier");
            // bytes per µs -> MB/s (MB = 2^20 bytes)
            let rate = if p50 > 0.0 { per_barrier / p50 * 1e6 / MB } else { f64::NAN };
            table.row(vec![
                format!("{shards}{}", if shards <= cpus { "" } else { "*" }),
                lessees.to_string(),
                size(bytes as f64),
                format!("{:.0}", med(r, "barriers")),
                format!("{p50:.1}"),
                format!("{p99:.1}"),
                format!("{max:.1}"),
                size(per_barrier),
                format!("{rate:.0}"),
            ]);
            out.push(json!({
                "shards": shards,
                "pinned": shards <= cpus,
                "lessees": lessees,
                "state_bytes": bytes,
                "partial_archive_bytes": archive_bytes(bytes / 8),
                "queries": queries,
                "warmup_messages": med(r, "warmup_messages"),
                "drain_messages": med(r, "drain_messages"),
                "barriers": med(r, "barriers"),
                "barrier_us": { "p50": p50, "p99": p99, "max": max },
                "mean_barrier_us": med(r, "mean_barrier_us"),
                "partial_bytes_per_barrier": per_barrier,
                "lessees_peak": med(r, "lessees_peak"),
                "merged_mb_per_s": rate,
                "throughput_eps": med(r, "throughput_eps"),
                "runs": r,
            }));
        }
    }
    let unpinned =
        if 4 > cpus { format!("; * = UNPINNED: more shards than the machine's {cpus} CPUs") } else { String::new() };
    println!(
        "\nbarrier time against lessees and state size (one actor, every regular message on a lessee; medians of {rounds} rounds{unpinned})\n{}",
        table.render()
    );
    Ok(json!({
        "cpus": cpus,
        "rounds": rounds,
        "messages_per_barrier": PER_BARRIER,
        "work_rounds": WORK,
        "max_in_flight": MAX_IN_FLIGHT,
        "setups": setups.iter().map(|&(n, l)| json!({ "shards": n, "lessees": l, "pinned": n <= cpus })).collect::<Vec<_>>(),
        "rows": out,
    }))
}

/// The figure: barrier p50 and p99, and MB/s merged, against the state size, one series per
/// (shards, lessees).
pub fn figure(r: &Value) -> Vec<Panel> {
    let all = rows(r, "rows");
    let mut keys: Vec<(u64, u64, bool)> = Vec::new();
    for x in all {
        let k = (x["shards"].as_u64().unwrap_or(0), x["lessees"].as_u64().unwrap_or(0), x["pinned"] == true);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let series = |f: &dyn Fn(&Value) -> f64| -> Vec<Series<(f64, f64)>> {
        keys.iter()
            .map(|&(n, l, pinned)| {
                let name = format!("{n} shards{}, L={l}", if pinned { "" } else { " (unpinned)" });
                let points = all
                    .iter()
                    .filter(|x| x["shards"] == n && x["lessees"] == l)
                    .map(|x| (num(&x["state_bytes"]) / 1024.0, f(x)))
                    .collect();
                Series::new(name, points)
            })
            .collect()
    };
    vec![
        Panel::lines("barrier p50", "state KB", "µs", series(&|x| num(&x["barrier_us"]["p50"])))
            .log()
            .log_x()
            .legend_left(),
        Panel::lines("barrier p99", "state KB", "µs", series(&|x| num(&x["barrier_us"]["p99"])))
            .log()
            .log_x()
            .legend_left(),
        Panel::lines(
            "partial merged, MB per second of barrier (p50)",
            "state KB",
            "MB/s",
            series(&|x| num(&x["merged_mb_per_s"])),
        )
        .log()
        .log_x()
        .legend_left(),
    ]
}
