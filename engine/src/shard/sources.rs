//! Ingress: the shard polls its source instances, stamps each new message's ingress time and
//! deadline (`on_ingress`), routes it downstream, and emits watermarks every N events and an
//! end when the source finishes (or the engine is stopping).

use std::sync::atomic::Ordering;

use dirigo_actors::envelope::{Header, MessageKind};
use dirigo_actors::function::ValueRecord;
use dirigo_actors::ids::{FunctionId, ShardId};
use dirigo_actors::operator::Emitter;
use dirigo_actors::record::{Cell, Value};
use rkyv::util::AlignedVec;

use super::fuse::Fusing;
use super::router::Router;
use super::router::{broadcast, broadcast_watermark};
use super::{Shard, TURN_BUDGET, TURN_TIME_NS};
use dirigo_net::clock::now_ns;
use dirigo_net::ingress::{IoWakeup, Produced};

use crate::metrics::AppStats;
use crate::plan::{AppPlan, InstanceCx, Plan, SourcePlan};
use crate::policy::Policy;
use crate::source::{CustomSource, Generator, SourceInstance};

/// The source instances running on this shard, and the scratch their events are made in.
pub(super) struct Sources {
    pub runs: Vec<SourceRun>,
    /// Scratch: the values of the event being produced.
    pub values: Vec<Value>,
    /// Scratch: the event being produced, when it is a record of scalars as archived cells.
    pub cells: Vec<Cell>,
    /// Scratch: the archive of the event being produced (a source that makes archives).
    pub bytes: AlignedVec,
    /// Scratch: the headers of a batch of a typed source's events (`ingest_batches`), or of
    /// a generator's (`ingest_fused`).
    pub headers: Vec<Header>,
    /// Scratch: a batch of a generator's events, as rows of cells (`ingest_fused`).
    pub block: Vec<Cell>,
    /// Every shard of the node is up (`Shard::node_up`): until then no source here polls.
    pub node_up: bool,
    /// A poll goes on past its first `TURN_BUDGET` events only within this long (ns) of its
    /// turn's start: the tightest hosted app's queue budget (`Shard::size_polls`).
    pub poll_time_ns: u64,
    /// A poll of the last `poll_sources` stopped with events of its source still due (at its
    /// size or its time): the shard is saturated, and its output batches may wait to fill
    /// (`Outputs::flush`).
    pub saturated: bool,
}

impl Sources {
    pub fn new(runs: Vec<SourceRun>) -> Self {
        Sources {
            runs,
            values: Vec::new(),
            cells: Vec::new(),
            bytes: AlignedVec::new(),
            headers: Vec::new(),
            block: Vec::new(),
            node_up: false,
            poll_time_ns: TURN_TIME_NS,
            saturated: false,
        }
    }

    /// Whether every source here has finished.
    pub fn all_done(&self) -> bool {
        self.runs.iter().all(|s| s.done)
    }
}

/// Why a run of ingested events stopped (`Shard::ingest_run`).
enum Stop {
    /// The poll's budget is spent.
    Budget,
    /// The next event is not due yet.
    NotDue,
    /// A socket source has nothing buffered or readable now.
    Idle,
    /// The source has no more events.
    Finished,
    /// The last event (its header) makes a watermark due.
    Watermark(Header),
}

/// One source instance running on this shard.
pub struct SourceRun {
    pub(super) index: usize,
    pub(super) inst: SourceInstance,
    pub(super) started_ns: Option<u64>,
    /// Where its schedule resumes (ns into it): a source resumed from a snapshot goes on from
    /// its position, not from the start of its schedule.
    pub(super) skip_ns: u64,
    produced: u64,
    max_event_time: u64,
    last_watermark: u64,
    pub done: bool,
    /// The last snapshot barrier it injected (or resumed from).
    pub(super) barrier: u64,
    /// Events it makes per poll, at most (`Shard::size_polls`).
    pub(super) poll_events: usize,
    /// The keyed functions of its app (where its records may cross to other shards), found at
    /// its first sizing.
    keyed: Option<Vec<FunctionId>>,
}

impl SourceRun {
    /// When an event due `due` ns into the schedule is due in this run: `skip_ns` earlier
    /// (0 stays 0: an unscheduled source's events are always due).
    #[inline]
    fn resumed_due(&self, due: u64) -> u64 {
        resumed_due(self.skip_ns, due)
    }
}

/// The source instances of `plan` that run on shard `id`; socket sources ring `signal` when
/// input arrives while the shard is parked.
pub fn instantiate(
    plan: &Plan,
    id: ShardId,
    signal: &std::sync::Arc<dirigo_net::signal::ShardSignal>,
) -> Vec<SourceRun> {
    instantiate_from(plan, id, signal, 0)
}

/// [`instantiate`] for the plan's sources from index `first` on (those of newly deployed apps).
pub fn instantiate_from(
    plan: &Plan,
    id: ShardId,
    signal: &std::sync::Arc<dirigo_net::signal::ShardSignal>,
    first: usize,
) -> Vec<SourceRun> {
    let mut out = Vec::new();
    for (index, sp) in plan.sources.iter().enumerate().skip(first) {
        if let Some(i) = sp.shards.iter().position(|&s| s == id) {
            let cx =
                InstanceCx { shard: id, shards: plan.shards, instance: i as u32, parallelism: sp.shards.len() as u32 };
            let mut inst = (sp.factory)(cx);
            inst.attach(signal);
            out.push(SourceRun {
                index,
                inst,
                started_ns: None,
                skip_ns: 0,
                produced: 0,
                max_event_time: 0,
                last_watermark: 0,
                done: false,
                barrier: 0,
                poll_events: TURN_BUDGET,
                keyed: None,
            });
        }
    }
    out
}

impl<P: Policy> Shard<P> {
    /// When the shard should wake for its sources (engine clock), or `u64::MAX`: the earliest
    /// due event, plus `gather_ns` for a scheduled source that may ingest (events gather while
    /// the shard sleeps; a paused one is re-checked as soon as its backpressure may lift).
    pub(super) fn next_source_due(&self, engine_start: u64, gather_ns: u64) -> u64 {
        self.src
            .runs
            .iter()
            .filter(|s| !s.done && self.deploy.started(self.app_of(s)))
            .filter_map(|s| match s.inst.io_wakeup() {
                // Socket sources (tcp): nothing is scheduled. Their readiness waker rings the
                // doorbell, and a timeout of their own (an idle connection's) falls due at
                // `io_due_ns`; a paused one (backpressure: it is not armed) or one without a
                // waker is re-polled on a timer.
                Some(IoWakeup::Readiness) if self.may_ingest(self.app_of(s)) => s.inst.io_due_ns(),
                Some(IoWakeup::Readiness) => Some(now_ns() + dirigo_net::tcp::POLL_OPEN_NS),
                Some(IoWakeup::Poll(poll)) => {
                    let poll = now_ns() + poll;
                    Some(s.inst.io_due_ns().map_or(poll, |due| due.min(poll)))
                }
                None => {
                    // Each source's events gather for a share of its own app's SLO (a tight app
                    // on the same shard does not make a loose one wake for every event).
                    let app = self.app_of(s);
                    let own = (self.plan.apps[app].slo_ns as f64 * self.settings.gather).min(u64::MAX as f64) as u64;
                    let gather = if self.may_ingest(app) { own.max(gather_ns) } else { 0 };
                    let start = s.started_ns.unwrap_or(engine_start);
                    s.inst.next_due_ns().map(|d| (start + s.resumed_due(d)).saturating_add(gather))
                }
            })
            .min()
            .unwrap_or(u64::MAX)
    }

    pub(super) fn app_of(&self, s: &SourceRun) -> usize {
        self.plan.sources[s.index].app as usize
    }

    /// Before parking: arm the readiness waker of every socket source that may ingest. False:
    /// do not park now (a source has input waiting, or one fell back to timed polls and the
    /// deadline computed before is stale).
    pub(super) fn arm_sources(&mut self) -> bool {
        let mut ok = true;
        for i in 0..self.src.runs.len() {
            let s = &self.src.runs[i];
            if !s.done && s.inst.io_wakeup() == Some(IoWakeup::Readiness) && self.may_ingest(self.app_of(s)) {
                ok &= self.src.runs[i].inst.arm();
            }
        }
        ok
    }

    /// Each tcp source's figures so far, by its index in the plan.
    pub(super) fn tcp_counts(&self) -> Vec<(usize, dirigo_net::tcp::IngressCounts)> {
        self.src.runs.iter().filter_map(|s| s.inst.tcp_counts().map(|c| (s.index, c))).collect()
    }

    /// Doorbell rings by the sources' readiness wakers since the last call.
    pub(super) fn take_io_wakes(&self) -> u64 {
        self.src.runs.iter().map(|s| s.inst.take_io_wakes()).sum()
    }

    /// Poll every source for events due by `now`, up to a turn's budget each.
    pub(super) fn poll_sources(&mut self, now: u64) -> bool {
        let mut progress = false;
        self.src.saturated = false;
        let stopping = self.stop.load(Ordering::Relaxed);
        if !stopping && !self.node_up() {
            return false;
        }
        for i in 0..self.src.runs.len() {
            if self.src.runs[i].done {
                continue;
            }
            let app = self.app_of(&self.src.runs[i]);
            if stopping || self.app_failed(app) || self.deploy.stopping(app) {
                self.finish_source(i);
                progress = true;
                continue;
            }
            if self.may_ingest(app) && self.deploy.started(app) && self.poll_source(i, now) {
                progress = true;
                self.touch(app);
            }
        }
        progress
    }

    /// Whether every shard of this node is up (built and running its loop): a source polls
    /// only then. Records made for a shard still starting would wait in its ring until it runs
    /// (on a busy machine, milliseconds: up to `max_in_flight` records, a p99 of the run made
    /// by its start); the shards start together, so the wait is short. Checked until true.
    #[inline]
    fn node_up(&mut self) -> bool {
        if !self.src.node_up {
            let local = &self.signals[self.local.start as usize..self.local.end as usize];
            self.src.node_up = local.iter().all(|s| s.is_up());
        }
        self.src.node_up
    }

    /// Size each source's polls: `POLL_FILL` events for each shard of the node its records
    /// can cross to (the shards holding key groups of its app's keyed functions), from a
    /// turn's budget (one shard) to `MAX_POLL_EVENTS`, and past the first `TURN_BUDGET` events
    /// for at most the tightest hosted app's queue budget (`[engine] queue_budget` of its SLO:
    /// what the records made first wait for the poll's end stays within what that app lets
    /// its queues hold; a turn's time without one; 1 ms at most). A shard
    /// flushes its output every turn, so a turn's events spread over the shards they go to
    /// make the batches its rings carry: with a fixed poll, each of N receivers got a batch of
    /// `TURN_BUDGET / N` records per turn, and the cost of a batch (its ring slots, its
    /// receipt, its return) was shared by fewer records the more shards the app spans. Each
    /// turn's own cost (mail, sources, flushes, published load: a look at every other shard)
    /// is shared by its events the same way. Once per tick (key groups move), and before the
    /// first poll.
    pub(super) fn size_polls(&mut self) {
        let tightest = self.tightest_slo_ns();
        let budget = tightest as f64 * self.settings.queue_budget;
        self.src.poll_time_ns = if budget > 0.0 { (budget as u64).min(MAX_POLL_NS) } else { TURN_TIME_NS };
        let (plan, placement, local) = (&self.plan, &self.placement, self.local.clone());
        for run in self.src.runs.iter_mut().filter(|r| !r.done) {
            let app = plan.sources[run.index].app;
            let keyed = run.keyed.get_or_insert_with(|| {
                let of_app = plan.functions.iter().enumerate().filter(|(_, f)| f.app == app);
                of_app.map(|(f, _)| f as FunctionId).filter(|&f| placement.is_keyed(f)).collect()
            });
            let reach = local.clone().filter(|&s| keyed.iter().any(|&f| placement.hosts(f, s))).count();
            run.poll_events = poll_events(reach);
        }
    }

    /// Poll source `i` for up to its `poll_events` events due by `now` (the turn's start), in
    /// chunks of `TURN_BUDGET`: past the first chunk only while less than `poll_time_ns` has
    /// passed since the turn began (what ran before the poll in the turn counts too: mail
    /// waits for the turn's end).
    fn poll_source(&mut self, i: usize, now: u64) -> bool {
        let started = *self.src.runs[i].started_ns.get_or_insert(now);
        let target = self.src.runs[i].poll_events;
        let mut n = 0;
        // Events of the source were still due when the poll stopped.
        let mut more = true;
        while n < target {
            if n >= TURN_BUDGET && now_ns().saturating_sub(now) >= self.src.poll_time_ns {
                break;
            }
            let (ran, stop) = self.ingest_run(i, now, started, (target - n).min(TURN_BUDGET));
            n += ran;
            // A user function fused into the poll panicked: its app fails (its source ends at
            // the next poll, and the function, marked failed, runs no more).
            if let Some(f) = self.chain.fusion.failed_user.take() {
                self.check_user_code(f);
                break;
            }
            match stop {
                Stop::Watermark(h) => {
                    self.emit_watermark(i, h);
                    // A watermark chained for a map fused into this source stops its fusion
                    // until it has run (`Core::decide_fusion`): it runs now, with what the
                    // poll chained before it, and the rest of the poll fuses again.
                    if self.chain.fusion.any() {
                        self.finish_chain();
                    }
                }
                Stop::Finished => {
                    let app = self.app_of(&self.src.runs[i]);
                    self.finish_source(i);
                    self.time_outputs(app);
                    return true;
                }
                // This chunk's share: the next chunk, within the poll's.
                Stop::Budget => {}
                Stop::NotDue | Stop::Idle => {
                    more = false;
                    break;
                }
            }
        }
        self.src.saturated |= more;
        // The records this poll chained run now, in order (see `ingest_run`).
        self.finish_chain();
        // Outputs of sinks fused into the source (`shard::fuse`) are out.
        let app = self.app_of(&self.src.runs[i]);
        self.time_outputs(app);
        n > 0
    }

    /// Ingest up to `budget` events of source `i` due by `now`, through one router, until one
    /// of them makes a watermark due (or none is due, or the source is idle or finished).
    /// Returns how many were polled and why it stopped. Hot path: a generator of scalars (W1's)
    /// runs a loop of its own, its events made inline as cells (`ScalarGenerator`), with no
    /// call, no `Produced` made and matched, no match on the source's kind per event.
    fn ingest_run(&mut self, i: usize, now: u64, started: u64, budget: usize) -> (usize, Stop) {
        let chain = self.chain_on().then_some((&mut self.chain.next, &self.chain.chainable[..]));
        // Between turns' chains: nothing chained waits to run but what this poll chains.
        debug_assert!(!self.chain.running && self.chain.cur.is_empty());
        let (fusion, functions) = (&mut self.chain.fusion, &self.plan.functions[..]);
        let (ops, signal) = (Some(&mut self.slots.ops[..]), Some(&*self.signals[self.id as usize]));
        let outputs_due = &mut self.tele.outputs_due;
        let fusing = Some(Fusing { fusion, rest: &[], functions, outputs_due, ops, signal });
        let Sources { runs, values, cells, block, bytes, headers, .. } = &mut self.src;
        let SourceRun { index, inst, skip_ns, produced, max_event_time, .. } = &mut runs[i];
        let sp = &self.plan.sources[*index];
        let cx = IngestCx {
            app: &self.plan.apps[sp.app as usize],
            sp,
            stats: &mut self.tele.stats[sp.app as usize],
            now,
            started,
            skip_ns: *skip_ns,
            budget,
        };
        let parent = Header::data(sp.app, 0, 0);
        let router =
            Router::of_parts(&mut self.out, self.sched.split(), &self.placement, &sp.outputs, parent, chain, fusing);
        let run = RunState { produced, max_event_time };
        match inst {
            SourceInstance::Generator(g) if g.is_scalar() => {
                let mut router = router;
                if router.fuses_map() {
                    ingest_fused(g, cx, router, run, (block, headers))
                } else {
                    ingest_loop(ScalarGenerator(g, cells), cx, router, run, (values, bytes))
                }
            }
            SourceInstance::Custom(c) => {
                let mut router = router;
                match c.batches() && router.fuses_values() {
                    true => ingest_batches(&mut **c, cx, router, run, headers),
                    false => ingest_loop(Custom(&mut **c), cx, router, run, (values, bytes)),
                }
            }
            inst => ingest_loop(AnySource(inst, cells), cx, router, run, (values, bytes)),
        }
    }

    fn emit_watermark(&mut self, i: usize, h: Header) {
        let run = &mut self.src.runs[i];
        let sp = &self.plan.sources[run.index];
        let delay = self.plan.apps[sp.app as usize].watermark_delay_ms;
        let wm = run.max_event_time.saturating_sub(delay);
        if wm > run.last_watermark {
            run.last_watermark = wm;
            let chain =
                self.chain_on().then_some((&mut self.chain.next, &self.chain.wm_chainable[..], &self.sched.runq));
            broadcast_watermark(&mut self.out, &self.plan, &self.placement, &sp.outputs, h, wm, chain);
        }
    }

    fn finish_source(&mut self, i: usize) {
        // What its last poll chained runs ahead of the end, which is staged behind it.
        self.finish_chain();
        let run = &mut self.src.runs[i];
        run.done = true;
        let sp = &self.plan.sources[run.index];
        // Whatever the end makes fire (remaining windows) is timed from the moment it was issued.
        let mut h = Header::data(sp.app, 0, 0);
        h.ingress_ns = now_ns();
        self.sched.policy.on_ingress(&mut h, &self.plan.apps[sp.app as usize]);
        broadcast(&mut self.out, &self.plan, &self.placement, &sp.outputs, h, MessageKind::End, u64::MAX);
        self.snapshot_source_finished(i);
    }
}

/// What a run of ingested events reads (`ingest_loop`).
struct IngestCx<'a> {
    app: &'a AppPlan,
    sp: &'a SourcePlan,
    stats: &'a mut AppStats,
    now: u64,
    started: u64,
    skip_ns: u64,
    budget: usize,
}

/// What a run of ingested events advances in its `SourceRun`.
struct RunState<'a> {
    produced: &'a mut u64,
    max_event_time: &'a mut u64,
}

/// Where a run's events come from: any source instance, or a generator of scalars read
/// without the match on the source's kind.
trait Produce {
    /// When the next event is due (ns into the schedule; 0: now), or None when finished.
    fn due(&self) -> Option<u64>;
    /// The next event (see `SourceInstance::produce_into`).
    fn produce(&mut self, values: &mut Vec<Value>, bytes: &mut AlignedVec) -> Option<Produced>;
    /// The event made as cells by the last `produce` (`Produced::Cells`).
    fn cells(&self) -> &[Cell];
    /// The event made by the last `produce` as the value it is, when the source makes values
    /// (`Produced::Archive` with nothing archived: a custom source's).
    #[inline(always)]
    fn value(&self) -> Option<&dyn ValueRecord> {
        None
    }
}

/// A custom source (an embedding program's typed events): each event kept as the value it was
/// made as, archived only where it goes (`Router::emit_value`).
struct Custom<'a>(&'a mut dyn CustomSource);

impl Produce for Custom<'_> {
    #[inline(always)]
    fn due(&self) -> Option<u64> {
        self.0.next_due_ns()
    }
    #[inline(always)]
    fn produce(&mut self, _: &mut Vec<Value>, _: &mut AlignedVec) -> Option<Produced> {
        self.0.advance().map(|(key_hash, event_time)| Produced::Archive { key_hash, event_time })
    }
    #[inline(always)]
    fn cells(&self) -> &[Cell] {
        &[]
    }
    #[inline(always)]
    fn value(&self) -> Option<&dyn ValueRecord> {
        Some(self.0.current())
    }
}

struct AnySource<'a>(&'a mut SourceInstance, &'a mut Vec<Cell>);

impl Produce for AnySource<'_> {
    #[inline(always)]
    fn due(&self) -> Option<u64> {
        self.0.next_due_ns()
    }
    #[inline(always)]
    fn produce(&mut self, values: &mut Vec<Value>, bytes: &mut AlignedVec) -> Option<Produced> {
        self.0.produce_into(values, Some(self.1), bytes)
    }
    #[inline(always)]
    fn cells(&self) -> &[Cell] {
        self.1
    }
}

/// A generator of scalars (`Generator::is_scalar`): each event made as cells.
struct ScalarGenerator<'a>(&'a mut Generator, &'a mut Vec<Cell>);

impl Produce for ScalarGenerator<'_> {
    #[inline(always)]
    fn due(&self) -> Option<u64> {
        self.0.next_due_ns()
    }
    #[inline(always)]
    fn produce(&mut self, _: &mut Vec<Value>, _: &mut AlignedVec) -> Option<Produced> {
        self.0.next_cells(self.1).map(|t| Produced::Cells { event_time: Some(t) })
    }
    #[inline(always)]
    fn cells(&self) -> &[Cell] {
        self.1
    }
}

/// The loop of `Shard::ingest_run` over the events of `src`. Hot path.
#[inline(always)]
fn ingest_loop<P: Policy, S: Produce>(
    mut src: S,
    cx: IngestCx<'_>,
    mut router: Router<'_, P>,
    run: RunState<'_>,
    (values, bytes): (&mut Vec<Value>, &mut AlignedVec),
) -> (usize, Stop) {
    let IngestCx { app, sp, stats, now, started, skip_ns, budget } = cx;
    let mut ran = 0;
    let mut to_watermark = events_to_watermark(app, *run.produced);
    while ran < budget {
        let Some(due) = src.due() else { return (ran, Stop::Finished) };
        let Some(ingress_ns) = ingress_at(due, skip_ns, started, now) else { return (ran, Stop::NotDue) };
        let Some(p) = src.produce(values, bytes) else { return (ran, Stop::Finished) };
        ran += 1;
        let (key_hash, event_time) = match p {
            Produced::Idle => return (ran - 1, Stop::Idle), // a socket source has nothing now
            Produced::Skipped => continue,
            Produced::Archive { key_hash, event_time } => (key_hash, event_time),
            Produced::Values { event_time } => {
                let from_field = sp.event_time_field.and_then(|f| values[f].as_u64());
                (0, from_field.or(event_time).unwrap_or(ingress_ns / 1_000_000))
            }
            Produced::Cells { event_time } => {
                let from_field = sp.event_time_field.and_then(|f| src.cells()[f].as_u64());
                (0, from_field.or(event_time).unwrap_or(ingress_ns / 1_000_000))
            }
        };
        router.ingress(key_hash, ingress_ns, event_time, app);
        stats.events_in += 1;
        match p {
            Produced::Archive { .. } => match src.value() {
                Some(v) => router.emit_value(key_hash, event_time, v),
                None => router.forward(key_hash, event_time, bytes),
            },
            Produced::Cells { .. } => router.emit_cells(key_hash, event_time, src.cells()),
            _ => router.emit(key_hash, event_time, values),
        }
        // What the event chained runs once the poll is over (`poll_source`): between two
        // events nothing else runs, so each function still sees its records in the source's
        // order, and a poll's events pay one pass of the chain, not one each.
        *run.produced += 1;
        *run.max_event_time = (*run.max_event_time).max(event_time);
        to_watermark -= 1;
        if to_watermark == 0 {
            return (ran, Stop::Watermark(*router.parent()));
        }
    }
    (ran, Stop::Budget)
}

/// Events a source polls per turn for each shard its records may go to (`Shard::size_polls`):
/// the records a batch to each carries when its keys spread evenly. W1 on 2 shards, 5 runs of
/// each alternated: 128 events per poll against 64 took 0.88x the CPU per event (p50 11 ->
/// 20 µs, p99 53 -> 79 µs); on 8 shards (unpinned on 2 CPUs), 256 against 64: 0.60x.
const POLL_FILL: usize = 64;
/// The most events a source polls per turn (a turn's time bounds it too).
const MAX_POLL_EVENTS: usize = 1024;
/// The longest a poll goes on past its first `TURN_BUDGET` events, and a batch waits to fill
/// (`Outputs::flush`), whatever the apps' SLOs (ns): mail and control wait that long too.
const MAX_POLL_NS: u64 = 1_000_000;

/// Events a source whose records reach `reach` shards polls per turn, at most.
fn poll_events(reach: usize) -> usize {
    (POLL_FILL * reach).clamp(TURN_BUDGET, MAX_POLL_EVENTS)
}

/// The most events of a typed source made and handed to the function fused into its poll at
/// once (`ingest_batches`). Four calls' overhead is most of what batching saves (NEXMark Q1,
/// callgrind: 2,099 instructions per event one by one, 1,949 in batches of 4, 1,994 of 8);
/// larger batches lose it again where events own heap data, which a batch frees together: past
/// the allocator's per-size cache (glibc's tcache keeps 7 chunks) its strings are freed and
/// made again on the allocator's slow paths.
const VALUE_BATCH: usize = 4;

/// The loop of `Shard::ingest_run` over a typed source whose events are all due at once
/// (`CustomSource::batches`) and go to a user function fused into its poll
/// (`Router::fuses_values`): the source makes its events a batch at a time, and the function
/// is called once per batch (`ErasedFunction::on_values`). Each event is stamped and counted
/// as `ingest_loop` does it (its header made and passed through `on_ingress`), and a batch
/// ends where a watermark is due, so the function sees events and watermarks in the source's
/// order. Hot path.
fn ingest_batches<P: Policy>(
    src: &mut dyn CustomSource,
    cx: IngestCx<'_>,
    mut router: Router<'_, P>,
    run: RunState<'_>,
    headers: &mut Vec<Header>,
) -> (usize, Stop) {
    let IngestCx { app, stats, now, budget, .. } = cx;
    let mut ran = 0;
    let mut to_watermark = events_to_watermark(app, *run.produced);
    while ran < budget {
        let max = batch_len(budget - ran, to_watermark, VALUE_BATCH);
        let n = src.advance_batch(max);
        if n == 0 {
            return (ran, Stop::Finished);
        }
        let (keys, batch) = src.batch();
        headers.clear();
        for &(key_hash, event_time) in keys {
            // Stamped as `ingest_loop` stamps an unscheduled source's event.
            router.ingress(key_hash, now, event_time, app);
            *run.max_event_time = (*run.max_event_time).max(event_time);
            headers.push(router.child(router.parent(), key_hash, event_time));
        }
        stats.events_in += n as u64;
        *run.produced += n as u64;
        ran += n;
        router.emit_values(headers, batch);
        to_watermark -= n as u64;
        if to_watermark == 0 {
            return (ran, Stop::Watermark(*router.parent()));
        }
    }
    (ran, Stop::Budget)
}

/// The most events of a generator of scalars made at once and handed to the map fused into
/// its poll (`ingest_fused`): a batch's rows and headers stay in the first-level cache.
const FUSED_BATCH: usize = 32;

/// The loop of `Shard::ingest_run` over a generator of scalars whose one edge goes to a map
/// fused into its poll (`Router::fuses_map`): its events are made a batch at a time, each
/// stamped, timed and counted as `ingest_loop` does it (its header made and passed through
/// `on_ingress`), into rows of `block` and headers in `headers`, then the batch is handed to
/// the map (`Router::emit_fused_rows`), which makes and routes each one's row in turn. A batch
/// ends where a watermark is due, where the next event is not due yet, and where the source
/// ends, so the map's records and the watermarks keep the source's order. Hot path.
fn ingest_fused<P: Policy>(
    g: &mut Generator,
    cx: IngestCx<'_>,
    mut router: Router<'_, P>,
    run: RunState<'_>,
    (block, headers): (&mut Vec<Cell>, &mut Vec<Header>),
) -> (usize, Stop) {
    let IngestCx { app, sp, stats, now, started, skip_ns, budget } = cx;
    let width = g.width();
    if block.len() != FUSED_BATCH * width {
        block.clear(); // cold: first use, or a generator of another shape
        block.resize(FUSED_BATCH * width, Cell::u64(0));
    }
    if headers.len() < FUSED_BATCH {
        headers.resize(FUSED_BATCH, *router.parent());
    }
    let mut ran = 0;
    let mut to_watermark = events_to_watermark(app, *run.produced);
    while ran < budget {
        let max = batch_len(budget - ran, to_watermark, FUSED_BATCH);
        let (mut n, mut stop) = (0, None);
        for (h, row) in headers[..max].iter_mut().zip(block.chunks_exact_mut(width)) {
            let Some(due) = g.next_due_ns() else {
                stop = Some(Stop::Finished);
                break;
            };
            let Some(ingress_ns) = ingress_at(due, skip_ns, started, now) else {
                stop = Some(Stop::NotDue);
                break;
            };
            let Some(t) = g.next_cells_into(row) else {
                stop = Some(Stop::Finished);
                break;
            };
            let event_time = sp.event_time_field.and_then(|f| row[f].as_u64()).unwrap_or(t);
            router.ingress_into(h, 0, ingress_ns, event_time, app);
            *run.max_event_time = (*run.max_event_time).max(event_time);
            n += 1;
        }
        if n > 0 {
            stats.events_in += n as u64;
            *run.produced += n as u64;
            ran += n;
            router.emit_fused_rows(&headers[..n], &block[..n * width], width);
            to_watermark -= n as u64;
            if to_watermark == 0 {
                return (ran, Stop::Watermark(headers[n - 1]));
            }
        }
        if let Some(stop) = stop {
            return (ran, stop);
        }
    }
    (ran, Stop::Budget)
}

/// Events of a source that has produced `produced` until `app`'s next watermark is due: one
/// division per run, not one per event.
#[inline(always)]
fn events_to_watermark(app: &AppPlan, produced: u64) -> u64 {
    let every = app.watermark_every.max(1);
    every - produced % every
}

/// How many events the next batch of a run takes: at most `most`, the `left` of its budget,
/// and the events until the next watermark (a batch never straddles one).
#[inline(always)]
fn batch_len(left: usize, to_watermark: u64, most: usize) -> usize {
    left.min(usize::try_from(to_watermark).unwrap_or(usize::MAX)).min(most)
}

/// The ingress time of an event due `due` ns into its source's schedule (0: unscheduled), in a
/// run started at `started` and resumed `skip_ns` into it, polled at `now`; `None` if it is not
/// due yet. Open-loop sources are stamped with their schedule, so queueing behind a slow engine
/// counts as latency (no coordinated omission); unscheduled ones (rate 0, files, sockets) with
/// the time of the poll: one clock read per poll, not per event, at the price of at most one
/// poll's duration (microseconds) of extra latency.
#[inline(always)]
fn ingress_at(due: u64, skip_ns: u64, started: u64, now: u64) -> Option<u64> {
    let due = resumed_due(skip_ns, due);
    (started + due <= now).then_some(if due == 0 { now } else { started + due })
}

/// When an event due `due` ns into the schedule is due in a run resumed `skip_ns` into it:
/// that much earlier (0 stays 0: an unscheduled source's events are always due).
#[inline(always)]
fn resumed_due(skip_ns: u64, due: u64) -> u64 {
    if due == 0 {
        0
    } else {
        due.saturating_sub(skip_ns).max(1)
    }
}
