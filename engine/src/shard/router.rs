//! The emitter handed to operators: routes each output along the node's edges (forward, by key,
//! by field), lets the policy rewrite the child's header (`on_send`), and stages it. Hot path.

use dirigo_actors::envelope::{Header, MessageKind};
use dirigo_actors::function::{ErasedFunction, ValueBatch, ValueRecord};
use dirigo_actors::ids::AppId;
use dirigo_actors::operator::Emitter;
use dirigo_actors::record::{archive_cells, archive_values_with, ArchivedValue, Cell, RecordsOnly, Value};
use dirigo_net::mailbox::{append_aligned, append_copy, Entry};
use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;
use std::ops::Range;

use crate::instance::OperatorInstance;
use crate::placement::PlacementTable;
use crate::plan::{AppPlan, Edge, FunctionPlan, Partition, Plan};
use crate::policy::{Placement, Policy, RouteCx};
use crate::runqueue::RunQueue;
use crate::shard::chain::{ChainBuf, ChainTo};
use crate::shard::fuse::{Decisions, Fused, Fusing, Rows, RowsIn, Stage, Vacant};
use crate::shard::outputs::Outputs;
use crate::shard::sched::{Sched, SchedParts};

/// Routes one node's output. `parent` is the message being applied (or the ingress header).
/// Made from the scheduler part for one message (`Router::new`): it holds the policy and the
/// load figures it reads, not the part, so the hot path reads them without a second hop.
pub struct Router<'a, P: Policy> {
    core: Core<'a, P>,
    edges: &'a [Edge],
    parent: Header,
    /// What this router found for each edge, for its life (see `Decisions`).
    decided: Decisions,
}

/// What routing along any node's edges uses: the node's own router's, and a fused map's
/// (`shard::fuse`), which routes its outputs along its edges with the same parts.
struct Core<'a, P: Policy> {
    out: &'a mut Outputs,
    policy: &'a mut P,
    load: RouteLoad<'a>,
    /// Scale-up signals counted for the parent's app.
    scale_up_signals: &'a mut u64,
    /// The policy's `on_route` may answer `Lessee` (`Policy::observes_route`): it is asked for
    /// each record on a keyed edge.
    signals: bool,
    /// Which shard holds each key group.
    placement: &'a PlacementTable,
    /// Where records on forward edges go when they may run at once (`shard::chain`); None:
    /// chaining is off for this message. Whether an edge's target takes chained records
    /// (`ChainTo::may_run`) is asked once per edge for a router's life (`Decisions::chains`):
    /// what could change it (something staged for the target on this shard, a control message
    /// queued for it, an instance coming or going) happens only between stretches, and a
    /// record that chains stages nothing.
    chain: Option<ChainTo<'a>>,
}

/// What the router knows of the load, refreshed once per turn.
#[derive(Clone, Copy)]
struct RouteLoad<'a> {
    /// Expected delay at each shard, as it last published it.
    delay_ns: &'a [u64],
    cost_ns: &'a [u64],
    cost_to_go_ns: &'a [u64],
    /// Time of this turn of the loop.
    now_ns: u64,
}

impl<'a, P: Policy> Router<'a, P> {
    /// A router for the output of `edges`, whose parent is `parent`.
    #[inline]
    pub(super) fn new(
        out: &'a mut Outputs,
        sched: &'a mut Sched<P>,
        placement: &'a PlacementTable,
        edges: &'a [Edge],
        parent: Header,
    ) -> Self {
        Self::chaining(out, sched, placement, edges, parent, None)
    }

    /// A router that chains records on forward edges into `chain` where they may run at once
    /// (`chain`'s run queue is filled in from `sched`).
    #[inline]
    pub(super) fn chaining(
        out: &'a mut Outputs,
        sched: &'a mut Sched<P>,
        placement: &'a PlacementTable,
        edges: &'a [Edge],
        parent: Header,
        chain: Option<(&'a mut ChainBuf, &'a [bool])>,
    ) -> Self {
        Self::of_parts(out, sched.split(), placement, edges, parent, chain, None)
    }

    /// A chaining router made from the scheduler's parts (`Sched::split`), so that a stretch of
    /// records of one function (`shard::stretch`) keeps the costs its hooks read. With
    /// `fusing`, it fuses maps into what it routes where the policy allows (`shard::fuse`).
    #[inline]
    pub(super) fn of_parts(
        out: &'a mut Outputs,
        sched: SchedParts<'a, P>,
        placement: &'a PlacementTable,
        edges: &'a [Edge],
        parent: Header,
        chain: Option<(&'a mut ChainBuf, &'a [bool])>,
        fusing: Option<Fusing<'a>>,
    ) -> Self {
        let policy = sched.policy;
        let fuses = policy.chains() && !policy.observes_apply() && !policy.observes_send();
        let mut fusing = fusing.filter(|_| fuses);
        if let Some(f) = fusing.as_mut() {
            f.fusion.gen += 1;
        }
        let runq = sched.runq;
        let chain = chain.map(|(buf, chainable)| ChainTo { buf, chainable, runq, fusing });
        let load = RouteLoad {
            delay_ns: sched.peer_delay,
            cost_ns: &sched.cost.ns,
            cost_to_go_ns: &sched.cost.to_go_ns,
            now_ns: sched.now,
        };
        let scale_up_signals = &mut sched.scale_up[parent.app as usize];
        let signals = policy.observes_route();
        let core = Core { out, policy, load, scale_up_signals, signals, placement, chain };
        Router { core, edges, parent, decided: Decisions::default() }
    }

    /// The message being applied now: the parent of what is emitted next (its app stays).
    #[inline(always)]
    pub(super) fn set_parent(&mut self, parent: &Header) {
        debug_assert_eq!(parent.app, self.parent.app);
        self.parent = *parent;
    }

    /// A source's event with `key_hash`, ingested at `ingress_ns` with `event_time`, of `app`:
    /// its header made in place as the parent of what is emitted next (`on_ingress` applied
    /// to it), not on the stack and copied in (`set_parent`).
    #[inline(always)]
    pub(super) fn ingress(&mut self, key_hash: u64, ingress_ns: u64, event_time: u64, app: &AppPlan) {
        let app_id = self.parent.app;
        stamp(self.core.policy, &mut self.parent, app_id, key_hash, ingress_ns, event_time, app);
    }

    /// The parent of what is emitted next.
    #[inline(always)]
    pub(super) fn parent(&self) -> &Header {
        &self.parent
    }

    /// Whether the node has output edges (a sink's has none: what it runs makes no parent).
    #[inline(always)]
    pub(super) fn routes(&self) -> bool {
        !self.edges.is_empty()
    }

    /// The policy, for the hooks around each record of a stretch.
    #[inline(always)]
    pub(super) fn policy(&mut self) -> &mut P {
        self.core.policy
    }

    /// Route one new record along the node's edges (`Core::route`).
    #[inline(always)]
    fn route<T: Payload>(&mut self, key_hash: u64, event_time: u64, record: T) {
        self.core.route(self.edges, &self.parent, &mut self.decided, key_hash, event_time, record)
    }

    /// Route a typed source's event, the value it was made as: archived where it goes, or
    /// handed as it is to a user function fused into the source's poll (`shard::fuse`).
    #[inline(always)]
    pub(super) fn emit_value(&mut self, key_hash: u64, event_time: u64, value: &dyn ValueRecord) {
        self.route(key_hash, event_time, value)
    }

    /// Whether a typed source's values go, a batch at a time (`Router::emit_values`), to a
    /// user function fused into its poll: the node's one edge goes forward to a user function
    /// this router fuses (decided with the first, for the router's life).
    pub(super) fn fuses_values(&mut self) -> bool {
        self.fuses_one(true).is_some() && self.decided.users & 1 != 0
    }

    /// The function the node's one edge goes forward to with records, if it is fused into
    /// what this router routes (`values`: its records are a source's values, `Core::fuses`).
    fn fuses_one(&mut self, values: bool) -> Option<usize> {
        let [edge] = self.edges else { return None };
        let forward = matches!(edge.partition, Partition::Forward) && !edge.headers_only;
        let fused = forward && self.core.chain.is_some() && self.core.fuses(edge, 1, &mut self.decided, values);
        fused.then_some(edge.target as usize)
    }

    /// Whether the node's one edge goes forward with records to a map fused into what this
    /// router routes (`shard::fuse`): a source of cells may then hand it its events a batch
    /// at a time (`Router::emit_fused_rows`). Decided with the first record, as `fuses` is.
    pub(super) fn fuses_map(&mut self) -> bool {
        // A map's stage excludes a user function (those are fused only on values).
        cfg!(target_endian = "little") && self.fuses_one(false).is_some_and(|m| self.core.fused_map(m))
    }

    /// `ingress` into `h`, a header of a batch of a source's events (`emit_fused_rows`), not
    /// into the router's parent.
    #[inline(always)]
    pub(super) fn ingress_into(
        &mut self,
        h: &mut Header,
        key_hash: u64,
        ingress_ns: u64,
        event_time: u64,
        app: &AppPlan,
    ) {
        stamp(self.core.policy, h, self.parent.app, key_hash, ingress_ns, event_time, app);
    }

    /// Route a batch of a source's events along the node's one edge, to the map fused there
    /// (`fuses_map`): event `i` is `block`'s row `i` of `width` cells, made from `headers[i]`
    /// (made by `ingress_into`), with that header's key hash and event time. What the map
    /// makes of each is routed as `emit_cells` would have (`Core::fuse_rows`).
    pub(super) fn emit_fused_rows(&mut self, headers: &[Header], block: &[Cell], width: usize) {
        let edge = &self.edges[0];
        self.core.fuse_rows(edge, headers, block, width)
    }

    /// The header a source's event with `key_hash` and `event_time`, whose header is `parent`,
    /// carries to the user function its values are fused into (`fuses_values`).
    #[inline(always)]
    pub(super) fn child(&self, parent: &Header, key_hash: u64, event_time: u64) -> Header {
        child_of(parent, &self.edges[0], key_hash, event_time, self.core.out.me)
    }

    /// Hand `batch`, a typed source's values, to the user function fused into its poll
    /// (`fuses_values`), `headers[i]` being value `i`'s (`Router::child`): one call for the
    /// batch (`ErasedFunction::on_values`).
    pub(super) fn emit_values(&mut self, headers: &[Header], batch: &dyn ValueBatch) {
        let edge = &self.edges[0];
        self.core.fuse_user_batch(edge, headers, batch)
    }
}

impl<P: Policy> Core<'_, P> {
    /// The receiving shard of a record with key hash `key` along `edge`: this one, or, for a
    /// keyed edge, the home shard of the key.
    #[inline(always)]
    fn dest(&self, edge: &Edge, key: u64) -> usize {
        match edge.partition {
            Partition::Forward => self.out.me as usize,
            Partition::ByKey | Partition::ByField(..) => self.home(edge, key),
        }
    }

    /// The home shard of `key` for keyed edge `edge`: a multiply-shift and a load since key
    /// groups are Fibonacci-hashed, so inlined (out of line it was 24 instructions per record).
    #[inline(always)]
    fn home(&self, edge: &Edge, key: u64) -> usize {
        self.placement.home(edge.target, key) as usize
    }
}

/// A source's event of app `app_id` with `key_hash`, ingested at `ingress_ns` with
/// `event_time`: its header made in `h`, then passed through `on_ingress` (`Router::ingress`,
/// `Router::ingress_into`).
#[inline(always)]
fn stamp<P: Policy>(
    policy: &mut P,
    h: &mut Header,
    app_id: AppId,
    key_hash: u64,
    ingress_ns: u64,
    event_time: u64,
    app: &AppPlan,
) {
    *h = Header::data(app_id, 0, key_hash);
    h.ingress_ns = ingress_ns;
    h.event_time = event_time;
    policy.on_ingress(h, app);
}

/// `on_route` for a record sent along keyed edge `edge` to the key's home shard `home`, `h` its
/// header as it was written where it goes: whether the home shard can meet its deadline (the
/// scale-up signal: where a lessee would go is decided at the home shard). The hook reads the
/// header in its entry, after the push: a header made on the stack for the hook to read would
/// be written there field by field and copied into its entry with wide loads that wait for
/// those stores (a store-forwarding stall on every keyed record: about a tenth of W1's time).
#[inline(never)]
fn route_signal<P: Policy>(
    policy: &mut P,
    load: &RouteLoad<'_>,
    signals: &mut u64,
    edge: &Edge,
    home: usize,
    h: &Header,
) {
    let f = edge.target as usize;
    let slack = h.deadline_ns as i64 - load.now_ns as i64 - load.cost_to_go_ns[f] as i64;
    let route = RouteCx {
        home_delay_ns: load.delay_ns[home],
        peer_delay_ns: 0,
        service_ns: load.cost_ns[f],
        laxity_ns: slack,
        forward_ns: 0,
    };
    if policy.on_route(h, &route) == Placement::Lessee {
        *signals += 1;
    }
}

impl<'a, P: Policy> Core<'a, P> {
    /// Route one new record, made from `parent`, along `edges` (`d`: what was found for them):
    /// its child header (`on_send`), its shard (`dest`), then fused into its target where that
    /// is a map that may be (`shard::fuse`), chained where it may run at once (`shard::chain`),
    /// staged otherwise; on a keyed edge, `on_route` then sees the header as it was written
    /// (`route_signal`). To a sink that reads headers alone (`Edge::headers_only`: latency,
    /// null) the header goes without a payload: nothing is archived for it. The one loop
    /// behind every way a record is made (`Payload`). Hot path.
    #[inline(always)]
    fn route<T: Payload>(
        &mut self,
        edges: &[Edge],
        parent: &Header,
        d: &mut Decisions,
        key_hash: u64,
        event_time: u64,
        mut record: T,
    ) {
        self.route_mut(edges, parent, d, key_hash, event_time, &mut record)
    }

    /// `route`, the record borrowed (a fused filter's input goes on as it came).
    #[inline(always)]
    fn route_mut<T: Payload>(
        &mut self,
        edges: &[Edge],
        parent: &Header,
        d: &mut Decisions,
        key_hash: u64,
        event_time: u64,
        record: &mut T,
    ) {
        // One edge (most nodes' case) without a loop: a loop's set-up (the parts it reads,
        // loaded and kept aside) would be paid per record for one turn.
        if let [edge] = edges {
            return self.route_edge(0, edge, parent, d, key_hash, event_time, record);
        }
        for (i, edge) in edges.iter().enumerate() {
            self.route_edge(i, edge, parent, d, key_hash, event_time, record);
        }
    }

    /// Route a record whose archive `write` appends (`Emitter::emit_archived`) along `edges`:
    /// along one edge not partitioned by a field of the record (the common case) the archive
    /// is written where the record goes; otherwise it is written once into the scratch buffer
    /// and forwarded along every edge. Inlined into each emitter's `emit_archived` (out of
    /// line, it cost 18 more instructions per emit).
    #[inline(always)]
    fn route_archived(
        &mut self,
        edges: &[Edge],
        parent: &Header,
        d: &mut Decisions,
        key_hash: u64,
        event_time: u64,
        write: &mut dyn FnMut(&mut AlignedVec),
    ) {
        if let [edge] = edges {
            if !matches!(edge.partition, Partition::ByField(..)) {
                return self.route(edges, parent, d, key_hash, event_time, InPlace(write));
            }
        }
        let mut scratch = self.out.take_scratch();
        let r = append_aligned(&mut scratch, write);
        self.route(edges, parent, d, key_hash, event_time, &scratch[r]);
        self.out.put_scratch(scratch);
    }

    /// `route` along edge `i`, `edge`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn route_edge<T: Payload>(
        &mut self,
        i: usize,
        edge: &Edge,
        parent: &Header,
        d: &mut Decisions,
        key_hash: u64,
        event_time: u64,
        record: &mut T,
    ) {
        let key = match edge.partition {
            Partition::ByField(p, records) => record.field_key(p, records),
            _ => key_hash,
        };
        let dest = self.dest(edge, key);
        let keyed = !matches!(edge.partition, Partition::Forward);
        let me = self.out.me;
        let bit = if i < 64 { 1u64 << i } else { 0 };
        if !keyed && self.chain.is_some() && self.fuses(edge, bit, d, T::VALUE) {
            if edge.headers_only {
                // A sink that reads headers alone: the record is an output, due now.
                let f = self.fusing();
                f.fusion.fused[edge.target as usize] += 1;
                return f.outputs_due.push(parent.ingress_ns);
            }
            // Compiled out for every payload but a source's value.
            if T::VALUE && d.users & bit != 0 {
                if let Some(v) = record.value() {
                    return self.fuse_user(edge, parent, key, event_time, v);
                }
            }
            return self.fuse(edge, parent, key, event_time, record);
        }
        // The child header, made in its entry from the parent's (see `Batch::push_child`).
        let policy = &mut *self.policy;
        let mut child = |h: &mut Header| {
            h.function = edge.target;
            h.port = edge.port;
            h.key_hash = key;
            h.event_time = event_time;
            h.kind = MessageKind::Data;
            policy.on_send(parent, h);
        };
        if let (true, Some(c)) = (dest == me as usize, self.chain.as_mut()) {
            if d.chains & bit != 0 || c.may_run(self.out, edge.target as usize) {
                debug_assert!(c.may_run(self.out, edge.target as usize), "a chained target stopped taking records");
                d.chains |= bit;
                let child = |h: &mut Header| {
                    child(h);
                    h.from_shard = me;
                };
                match edge.headers_only {
                    true => c.buf.push_child(parent, child, |b, _| b.len()..b.len()),
                    false => c.buf.push_child(parent, child, |b, arena| record.write(b, arena)),
                }
                if keyed && self.signals {
                    route_signal(self.policy, &self.load, self.scale_up_signals, edge, dest, c.buf.last_header());
                }
                return;
            }
        }
        match edge.headers_only {
            true => self.out.stage_child(dest, parent, child, |b, _| b.len()..b.len()),
            false => self.out.stage_child(dest, parent, child, |b, arena| record.write(b, arena)),
        }
        if keyed && self.signals {
            route_signal(self.policy, &self.load, self.scale_up_signals, edge, dest, self.out.last_staged(dest));
        }
    }

    /// Whether a record along forward edge `edge` (bit `bit` of `d`) is fused into its target
    /// (`shard::fuse`): decided for the first, and the same for the rest of the router's life.
    #[inline(always)]
    fn fuses(&mut self, edge: &Edge, bit: u64, d: &mut Decisions, values: bool) -> bool {
        if d.fuse_decided & bit != 0 {
            return d.fuses & bit != 0;
        }
        self.decide_fusion(edge, bit, d, values)
    }

    /// A fusible map (`Fusion::maps`) whose instance may take chained records, with nothing of
    /// it queued, or chained and not yet run (in the chain buffer, or later in the generation
    /// running now: at most `REST_SCANNED` of those are looked through).
    /// A user function is fused only where the record is a source's value (`values`) and the
    /// router may run it (a source's poll: `Fusing::ops`).
    #[inline(never)]
    fn decide_fusion(&mut self, edge: &Edge, bit: u64, d: &mut Decisions, values: bool) -> bool {
        const REST_SCANNED: usize = 256;
        d.fuse_decided |= bit;
        let m = edge.target as usize;
        let Some(c) = self.chain.as_ref() else { return false };
        let Some(f) = c.fusing.as_ref() else { return false };
        let waits = |e: &Entry| e.header.function as usize == m;
        let fuses = bit != 0
            && f.fusion.fusible(m)
            && (!f.fusion.is_user(m) || (values && f.ops.is_some()))
            && c.may_run(self.out, m)
            && c.runq.len_of(edge.target) == 0
            && f.rest.len() <= REST_SCANNED
            && !f.rest.iter().any(waits)
            && !c.buf.batch.entries.iter().any(waits);
        if fuses {
            d.fuses |= bit;
            if f.fusion.is_user(m) {
                d.users |= bit;
            }
        }
        fuses
    }

    /// The maps this router fuses; only asked once a fusion was decided.
    #[inline(always)]
    fn fusing(&mut self) -> &mut Fusing<'a> {
        match self.chain.as_mut().and_then(|c| c.fusing.as_mut()) {
            Some(f) => f,
            None => unreachable!("a fusion was decided"),
        }
    }

    /// Run fused map or filter `edge.target` on `record`, its input made from `parent`. A
    /// map's row is computed from the record's fields as they are, then, while its one edge
    /// goes forward to a map or filter fused too, that one runs on the row, and so on; the last
    /// one's row is routed along its edges as the record it outputs. A filter's input goes on
    /// as it came (`fuse_filter`). Its parent is `parent`: a child takes from its parent only
    /// what the input records of the maps would have taken from it too (times, app), and no
    /// hook is asked about those records (the fusion's condition).
    #[inline(never)]
    fn fuse<T: Payload>(&mut self, edge: &Edge, parent: &Header, key: u64, event_time: u64, record: &mut T) {
        let mut m = edge.target as usize;
        let f = self.fusing();
        let (functions, gen) = (f.functions, f.fusion.gen);
        f.fusion.fused[m] += 1;
        let fused = f.fusion.stage(m);
        let exprs = match &fused.stage {
            Stage::Map(exprs) => exprs,
            Stage::Filter(_) => return self.fuse_filter(m, parent, key, event_time, record),
        };
        let mut rows = Rows::new();
        let mut row = match record.fields(fused.records) {
            Some(fields) => rows.first(exprs, fields),
            None => self.first_row_archived(m, record, &mut rows),
        };
        if one_forward(&functions[m].outputs).is_some() {
            match self.fuse_on(m, &mut row) {
                Some(last) => m = last,
                None => return, // a filter stopped it
            }
        }
        let mut d = *self.fusing().fusion.stage(m).decisions(gen);
        self.route(&functions[m].outputs, parent, &mut d, key, event_time, row.cells());
        *self.fusing().fusion.stage(m).decisions(gen) = d;
    }

    /// Whether `m`, fused here, is a map.
    fn fused_map(&mut self, m: usize) -> bool {
        let f = self.fusing();
        f.fusion.stages.get(m).is_some_and(|s| matches!(s, Some(Fused { stage: Stage::Map(_), .. })))
    }

    /// `fuse` for each of a batch of a source's events, rows of `width` cells in `block` made
    /// from `headers` (`Router::emit_fused_rows`), fused map `edge.target` taking them. The
    /// fusion's parts are looked up, and the map's decisions read and written back, once per
    /// batch, not once per event (they were a third of `fuse`'s instructions in W1), while
    /// each row is computed and routed as `fuse` does it. A map whose row goes on to another
    /// fused one runs `fuse` per row.
    #[inline(never)]
    fn fuse_rows(&mut self, edge: &Edge, headers: &[Header], block: &[Cell], width: usize) {
        let m = edge.target as usize;
        let f = self.fusing();
        let (functions, gen) = (f.functions, f.fusion.gen);
        let outputs = &functions[m].outputs;
        let rows = headers.iter().zip(block.chunks_exact(width));
        if one_forward(outputs).is_some() {
            for (h, mut cells) in rows {
                self.fuse(edge, h, h.key_hash, h.event_time, &mut cells);
            }
            return;
        }
        f.fusion.fused[m] += headers.len() as u64;
        let fused = f.fusion.stage(m);
        // The map's expressions, out of its stage while its rows are routed (nothing routed
        // from it reaches it again: a plan is a DAG), so they are read without a lookup.
        let exprs = match &mut fused.stage {
            Stage::Map(exprs) => std::mem::take(exprs),
            Stage::Filter(_) => unreachable!("fuses_map: a map"),
        };
        let mut d = *fused.decisions(gen);
        for (h, cells) in rows {
            let mut row = Rows::new();
            let row = row.first(&exprs, Cell::as_archived(cells));
            self.route(outputs, h, &mut d, h.key_hash, h.event_time, row.cells());
        }
        let fused = self.fusing().fusion.stage(m);
        *fused.decisions(gen) = d;
        fused.stage = Stage::Map(exprs);
    }

    /// Run fused user function `edge.target` on `value`, a source's event made from `parent`
    /// (`ErasedFunction::on_value`: the value as it is, or its archive for a function that does
    /// not take values). Its instance is the one in the shard's slots, taken out for the call
    /// (a placeholder stands in: a DAG never routes back into it); its header is the one the
    /// record would have carried to it (no hook sees it: the fusion's condition), and what it
    /// emits is routed along its edges, with that header as the parent.
    #[inline(never)]
    fn fuse_user(&mut self, edge: &Edge, parent: &Header, key: u64, event_time: u64, value: &dyn ValueRecord) {
        let h = child_of(parent, edge, key, event_time, self.out.me);
        self.run_fused_user(edge, 1, &h, |func, out| func.on_value(&h, value, out));
    }

    /// Run fused user function `edge.target` on `batch`, values a source's poll made
    /// (`headers[i]`: the header value `i`'s record would have carried to it, as `fuse_user`
    /// makes it): one call for the batch (`ErasedFunction::on_values`), what it emits while
    /// applying value `i` routed with `headers[i]` as the parent.
    #[inline(never)]
    fn fuse_user_batch(&mut self, edge: &Edge, headers: &[Header], batch: &dyn ValueBatch) {
        let Some(first) = headers.first() else { return };
        self.run_fused_user(edge, headers.len() as u64, first, |func, out| func.on_values(headers, batch, out));
    }

    /// Run fused user function `edge.target` on `n` records with `call`: its instance taken out
    /// of its slot for the call (a placeholder stands in: a DAG never routes back into it),
    /// marked running for the stall detector as a stretch is, and what it emits routed along
    /// its edges (with `parent` as the parent, unless the emit names its own:
    /// `Emitter::emit_archived_from`).
    #[inline(always)]
    fn run_fused_user(
        &mut self,
        edge: &Edge,
        n: u64,
        parent: &Header,
        call: impl FnOnce(&mut dyn ErasedFunction, &mut FusedOut<'_, 'a, P>),
    ) {
        let m = edge.target as usize;
        let now = self.load.now_ns;
        // What the call needs of the fusion, taken in one borrow.
        let f = self.fusing();
        let (functions, gen, signal) = (f.functions, f.fusion.gen, f.signal);
        f.fusion.fused[m] += n;
        let mut d = *f.fusion.user_decisions(m, gen);
        let ops = f.ops.as_deref_mut().expect("user functions fuse into a source's poll only");
        let mut func = match ops[m].as_mut() {
            Some(OperatorInstance::User(b)) => std::mem::replace(b, Box::new(Vacant)),
            _ => unreachable!("a fused user function's instance is a user function"),
        };
        // Marked running as a stretch is (the stall detector names it if it holds the shard).
        signal.inspect(|s| s.begin_run(edge.target, now));
        call(&mut *func, &mut FusedOut { core: self, edges: &functions[m].outputs, parent, d: &mut d });
        signal.inspect(|s| s.end_run());
        let f = self.fusing();
        *f.fusion.user_decisions(m, gen) = d;
        f.fusion.ran_user(m);
        if let Some(OperatorInstance::User(b)) = f.ops.as_deref_mut().and_then(|ops| ops[m].as_mut()) {
            *b = func;
        }
    }

    /// Route `record` along fused map or filter `m`'s edges, with the decisions its router of
    /// generation `gen` found for them.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn route_stage<T: Payload>(
        &mut self,
        m: usize,
        functions: &[FunctionPlan],
        gen: u64,
        parent: &Header,
        key: u64,
        event_time: u64,
        record: &mut T,
    ) {
        let mut d = *self.fusing().fusion.stage(m).decisions(gen);
        self.route_mut(&functions[m].outputs, parent, &mut d, key, event_time, record);
        *self.fusing().fusion.stage(m).decisions(gen) = d;
    }

    /// `record` (values, or an archive written in place) archived once into the scratch
    /// buffer, which the caller hands back (`Outputs::put_scratch`): what a fused function
    /// whose input cannot be read in place reads. Cold path.
    fn archive_to_scratch<T: Payload>(&mut self, record: &mut T) -> (AlignedVec, Range<usize>) {
        let mut scratch = self.out.take_scratch();
        let arena = self.chain.as_mut().expect("fusion chains").buf.arena();
        let r = record.write(&mut scratch, arena);
        (scratch, r)
    }

    /// Fused map `m`'s row from `record`, values (a record with strings) or an archive written
    /// in place: archived once into the scratch buffer, read from there. Out of line: a map's
    /// input is mostly cells or an archive, read as they are.
    #[cold]
    #[inline(never)]
    fn first_row_archived<'r, T: Payload>(&mut self, m: usize, record: &mut T, rows: &'r mut Rows) -> RowsIn<'r> {
        let (scratch, r) = self.archive_to_scratch(record);
        let fused = self.fusing().fusion.stage(m);
        let Stage::Map(exprs) = &fused.stage else { unreachable!("a row of a fused filter") };
        let row = rows.first(exprs, &fused.records.read(&scratch[r]).get().fields);
        self.out.put_scratch(scratch);
        row
    }

    /// Run fused filter `m` on `record`, made from `parent`: if its fields (read as they are)
    /// satisfy the predicate, the record goes on along the filter's edges unchanged, with
    /// `key` and `event_time` (the filter forwards its input's). Out of line, as `fuse`.
    #[inline(never)]
    fn fuse_filter<T: Payload>(&mut self, m: usize, parent: &Header, key: u64, event_time: u64, record: &mut T) {
        let f = self.fusing();
        let (functions, gen) = (f.functions, f.fusion.gen);
        let fused = f.fusion.stage(m);
        let Stage::Filter(predicate) = &fused.stage else { unreachable!("a fused map as a filter") };
        let passes = match record.fields(fused.records) {
            Some(fields) => predicate.test_fields(fields),
            None => return self.fuse_filter_archived(m, parent, key, event_time, record),
        };
        if passes {
            self.route_stage(m, functions, gen, parent, key, event_time, record);
        }
    }

    /// `fuse_filter` for values (a record with strings) or an archive written in place:
    /// archived once into the scratch buffer, tested there, and, if it passes, forwarded from
    /// there (an archive written in place is written once).
    #[cold]
    #[inline(never)]
    fn fuse_filter_archived<T: Payload>(
        &mut self,
        m: usize,
        parent: &Header,
        key: u64,
        event_time: u64,
        record: &mut T,
    ) {
        let (scratch, r) = self.archive_to_scratch(record);
        let f = self.fusing();
        let (functions, gen) = (f.functions, f.fusion.gen);
        let fused = f.fusion.stage(m);
        let Stage::Filter(predicate) = &fused.stage else { unreachable!("a fused map as a filter") };
        if predicate.test_fields(&fused.records.read(&scratch[r.clone()]).get().fields) {
            self.route_stage(m, functions, gen, parent, key, event_time, &mut &scratch[r]);
        }
        self.out.put_scratch(scratch);
    }

    /// While fused map `m`'s one edge goes forward to a map or filter that is fused too, that
    /// one runs on `row` (a map makes the next row; a filter keeps it or stops it); returns
    /// the last one fused, or `None` if a filter stopped the row. Out of line: most fused maps
    /// feed something else.
    #[inline(never)]
    fn fuse_on(&mut self, mut m: usize, row: &mut RowsIn<'_>) -> Option<usize> {
        let (functions, gen) = (self.fusing().functions, self.fusing().fusion.gen);
        while let Some(e) = one_forward(&functions[m].outputs) {
            let d = self.fusing().fusion.stage(m).decisions(gen);
            let fuses = match d.fuse_decided & 1 != 0 {
                true => d.fuses & 1 != 0,
                false => {
                    let mut found = *d;
                    // A row is not a value: a user function next is not fused.
                    let fuses = self.decide_fusion(e, 1, &mut found, false);
                    *self.fusing().fusion.stage(m).decisions(gen) = found;
                    fuses
                }
            };
            if !fuses {
                break;
            }
            m = e.target as usize;
            let fusion = &mut self.fusing().fusion;
            fusion.fused[m] += 1;
            match &fusion.stage(m).stage {
                Stage::Map(exprs) => row.next(exprs),
                Stage::Filter(predicate) => {
                    if !predicate.test_fields(Cell::as_archived(row.cells())) {
                        return None;
                    }
                }
            }
        }
        Some(m)
    }
}

/// The one edge of `edges`, if there is one and it goes forward with records (what a fused map
/// may fuse on along: `Core::fuse_on`).
#[inline(always)]
fn one_forward(edges: &[Edge]) -> Option<&Edge> {
    match edges {
        [e] if matches!(e.partition, Partition::Forward) && !e.headers_only => Some(e),
        _ => None,
    }
}

/// The emitter of a user function fused into a source's poll (`Core::fuse_user`): routes
/// what it emits along its edges with the poll's router's parts.
struct FusedOut<'c, 'a, P: Policy> {
    core: &'c mut Core<'a, P>,
    edges: &'c [Edge],
    /// The parent of what is emitted without one named (`Emitter::emit_archived_from` names
    /// it): the header of the one record applied, or of a batch's first.
    parent: &'c Header,
    d: &'c mut Decisions,
}

impl<P: Policy> FusedOut<'_, '_, P> {
    #[inline(always)]
    fn route<T: Payload>(&mut self, key_hash: u64, event_time: u64, record: T) {
        self.core.route(self.edges, self.parent, self.d, key_hash, event_time, record)
    }
}

impl<P: Policy> Emitter for FusedOut<'_, '_, P> {
    fn emit(&mut self, key_hash: u64, event_time: u64, values: &[Value]) {
        self.route(key_hash, event_time, values)
    }

    fn emit_cells(&mut self, key_hash: u64, event_time: u64, cells: &[Cell]) {
        self.route(key_hash, event_time, cells)
    }

    fn emit_archived(&mut self, key_hash: u64, event_time: u64, write: &mut dyn FnMut(&mut AlignedVec)) {
        self.core.route_archived(self.edges, self.parent, self.d, key_hash, event_time, write)
    }

    fn forward(&mut self, key_hash: u64, event_time: u64, archive: &[u8]) {
        self.route(key_hash, event_time, archive)
    }

    fn emit_archived_from(
        &mut self,
        parent: &Header,
        key_hash: u64,
        event_time: u64,
        write: &mut dyn FnMut(&mut AlignedVec),
    ) {
        self.core.route_archived(self.edges, parent, self.d, key_hash, event_time, write)
    }

    fn forward_from(&mut self, parent: &Header, key_hash: u64, event_time: u64, archive: &[u8]) {
        self.core.route(self.edges, parent, self.d, key_hash, event_time, archive)
    }
}

/// The header a record made from `parent` with `key` and `event_time` carries along forward
/// edge `edge`, made on shard `me`: what a fused user function is applied to.
#[inline(always)]
fn child_of(parent: &Header, edge: &Edge, key: u64, event_time: u64, me: u16) -> Header {
    let mut h = *parent;
    (h.function, h.port, h.key_hash, h.event_time) = (edge.target, edge.port, key, event_time);
    h.kind = MessageKind::Data;
    h.from_shard = me;
    h
}

/// A record as an emitter hands it over, and how its archive is written where it goes (a chain
/// or a batch: `Batch::push_child`).
trait Payload {
    /// The key hash of field `p` (an edge partitioned by that field).
    fn field_key(&self, p: usize, records: RecordsOnly) -> u64;
    /// Its fields as archived values, where they can be read as they are (cells, an archive):
    /// what a fused map computes its fields from (`records`: the archive is a record).
    fn fields(&self, records: RecordsOnly) -> Option<&[ArchivedValue]>;
    /// Append its archive to `bytes`, 16-byte aligned (`arena`: the serializer's scratch);
    /// returns its range there.
    fn write(&mut self, bytes: &mut AlignedVec, arena: &mut Arena) -> Range<usize>;
    /// It is a typed source's event, the value it was made as: it may be handed to a user
    /// function fused into the source's poll (`Core::fuse_user`). A constant, so the check
    /// is compiled out of every other payload's routing.
    const VALUE: bool = false;
    /// The value it was made as, when it is one (a typed source's event).
    #[inline(always)]
    fn value(&self) -> Option<&dyn ValueRecord> {
        None
    }
}

/// A typed source's event, as it was made: archived where it goes (`ValueRecord::archive_into`).
impl Payload for &dyn ValueRecord {
    const VALUE: bool = true;
    fn field_key(&self, _: usize, _: RecordsOnly) -> u64 {
        unreachable!("a typed source's edges are not partitioned by a field")
    }
    #[inline(always)]
    fn fields(&self, _: RecordsOnly) -> Option<&[ArchivedValue]> {
        None
    }
    #[inline(always)]
    fn write(&mut self, bytes: &mut AlignedVec, arena: &mut Arena) -> Range<usize> {
        append_aligned(bytes, &mut |b| self.archive_into(b, arena))
    }
    #[inline(always)]
    fn value(&self) -> Option<&dyn ValueRecord> {
        Some(*self)
    }
}

impl Payload for &[Value] {
    #[inline(always)]
    fn field_key(&self, p: usize, _: RecordsOnly) -> u64 {
        self[p].key_hash()
    }
    #[inline(always)]
    fn fields(&self, _: RecordsOnly) -> Option<&[ArchivedValue]> {
        None
    }
    #[inline(always)]
    fn write(&mut self, bytes: &mut AlignedVec, arena: &mut Arena) -> Range<usize> {
        archive_values_with(self, bytes, arena)
    }
}

impl Payload for &[Cell] {
    #[inline(always)]
    fn field_key(&self, p: usize, _: RecordsOnly) -> u64 {
        self[p].key_hash()
    }
    #[cfg(target_endian = "little")]
    #[inline(always)]
    fn fields(&self, _: RecordsOnly) -> Option<&[ArchivedValue]> {
        Some(Cell::as_archived(self))
    }
    #[cfg(not(target_endian = "little"))]
    #[inline(always)]
    fn fields(&self, _: RecordsOnly) -> Option<&[ArchivedValue]> {
        None
    }
    #[inline(always)]
    fn write(&mut self, bytes: &mut AlignedVec, _: &mut Arena) -> Range<usize> {
        archive_cells(self, bytes)
    }
}

/// An archive's bytes, copied (a pass-through).
impl Payload for &[u8] {
    #[inline(always)]
    fn field_key(&self, p: usize, records: RecordsOnly) -> u64 {
        records.read(self).get().fields[p].key_hash()
    }
    #[inline(always)]
    fn fields(&self, records: RecordsOnly) -> Option<&[ArchivedValue]> {
        Some(&records.read(self).get().fields)
    }
    #[inline(always)]
    fn write(&mut self, bytes: &mut AlignedVec, _: &mut Arena) -> Range<usize> {
        append_copy(bytes, self)
    }
}

/// An archive written in place by the emitter's closure (`Emitter::emit_archived`): routed
/// along one edge only (it is written once), never one partitioned by a field of it.
struct InPlace<'w>(&'w mut dyn FnMut(&mut AlignedVec));

impl Payload for InPlace<'_> {
    fn field_key(&self, _: usize, _: RecordsOnly) -> u64 {
        unreachable!("an archive written in place is routed only along an edge not partitioned by a field")
    }
    fn fields(&self, _: RecordsOnly) -> Option<&[ArchivedValue]> {
        None
    }
    #[inline(always)]
    fn write(&mut self, bytes: &mut AlignedVec, _: &mut Arena) -> Range<usize> {
        append_aligned(bytes, self.0)
    }
}

impl<P: Policy> Emitter for Router<'_, P> {
    #[inline(always)]
    fn emit(&mut self, key_hash: u64, event_time: u64, values: &[Value]) {
        self.route(key_hash, event_time, values)
    }

    #[inline(always)]
    fn emit_cells(&mut self, key_hash: u64, event_time: u64, cells: &[Cell]) {
        self.route(key_hash, event_time, cells)
    }

    /// Made from `parent`, a message of a stretch applied in one call
    /// (`ErasedFunction::on_messages`), not from the router's parent.
    #[inline]
    fn emit_archived_from(
        &mut self,
        parent: &Header,
        key_hash: u64,
        event_time: u64,
        write: &mut dyn FnMut(&mut AlignedVec),
    ) {
        debug_assert_eq!(parent.app, self.parent.app);
        self.core.route_archived(self.edges, parent, &mut self.decided, key_hash, event_time, write)
    }

    #[inline]
    fn forward_from(&mut self, parent: &Header, key_hash: u64, event_time: u64, archive: &[u8]) {
        debug_assert_eq!(parent.app, self.parent.app);
        self.core.route(self.edges, parent, &mut self.decided, key_hash, event_time, archive)
    }

    /// Written where the record goes, or once for every edge (`Core::route_archived`).
    #[inline]
    fn emit_archived(&mut self, key_hash: u64, event_time: u64, write: &mut dyn FnMut(&mut AlignedVec)) {
        self.core.route_archived(self.edges, &self.parent, &mut self.decided, key_hash, event_time, write)
    }

    #[inline]
    fn forward(&mut self, key_hash: u64, event_time: u64, archive: &[u8]) {
        self.route(key_hash, event_time, archive)
    }
}

/// Send a control message (watermark or end) along `edges` to every instance downstream. A
/// watermark to a shard that holds none of the target's key groups does not wake it if it is
/// parked (it has no state the watermark could fire; it reads it when it next wakes, in order).
pub fn broadcast(
    out: &mut Outputs,
    plan: &Plan,
    placement: &PlacementTable,
    edges: &[Edge],
    parent: Header,
    kind: MessageKind,
    event_time: u64,
) {
    let to = Control { plan, placement, edges, parent, kind, event_time };
    to.send(out, |out, h, lazy| stage(out, out.me as usize, h, lazy));
}

/// Send a watermark along `edges` as [`broadcast`] does, except that the one for an instance on
/// this shard is chained (`shard::chain`) when a record for it could be: it then runs in order
/// with the records chained before and after it, which keep chaining. Staged here instead, it
/// would send every later record of its function through the queue until it had run.
#[allow(clippy::too_many_arguments)]
pub(super) fn broadcast_watermark(
    out: &mut Outputs,
    plan: &Plan,
    placement: &PlacementTable,
    edges: &[Edge],
    parent: Header,
    watermark: u64,
    chain: Option<(&mut ChainBuf, &[bool], &RunQueue)>,
) {
    let Some((buf, chainable, runq)) = chain else {
        return broadcast(out, plan, placement, edges, parent, MessageKind::Watermark, watermark);
    };
    let mut c = ChainTo { buf, chainable, runq, fusing: None };
    let to = Control { plan, placement, edges, parent, kind: MessageKind::Watermark, event_time: watermark };
    to.send(out, |out, mut h, lazy| {
        h.from_shard = out.me;
        if !c.watermark(out, h.function as usize, h) {
            stage(out, out.me as usize, h, lazy);
        }
    });
}

/// A control message for every instance downstream of `edges`.
struct Control<'a> {
    plan: &'a Plan,
    placement: &'a PlacementTable,
    edges: &'a [Edge],
    parent: Header,
    kind: MessageKind,
    event_time: u64,
}

impl Control<'_> {
    /// Stage it for the other shards; hand the one for this shard to `here`, with whether it
    /// would be staged lazily.
    fn send(&self, out: &mut Outputs, mut here: impl FnMut(&mut Outputs, Header, bool)) {
        for edge in self.edges {
            let mut h = self.parent;
            h.function = edge.target;
            h.port = edge.port;
            h.kind = self.kind;
            h.event_time = self.event_time;
            h.key_hash = 0;
            match edge.partition {
                Partition::Forward => here(out, h, false),
                _ => {
                    for &s in &self.plan.functions[edge.target as usize].shards {
                        let lazy = self.kind == MessageKind::Watermark && !self.placement.hosts(edge.target, s);
                        if s == out.me {
                            here(out, h, lazy);
                        } else {
                            stage(out, s as usize, h, lazy);
                        }
                    }
                }
            }
        }
    }
}

/// Stage control message `h` for shard `dest`: lazily, it does not wake `dest` if it is parked.
#[inline]
fn stage(out: &mut Outputs, dest: usize, h: Header, lazy: bool) {
    if lazy {
        out.push_lazy(dest, h);
    } else {
        out.push_header(dest, h);
    }
}
