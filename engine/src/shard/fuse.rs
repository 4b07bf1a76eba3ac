//! Operator fusion. A map whose outputs are scalars (its fields computed from expressions, no
//! state) and whose every input is a forward edge runs where its input is made, when the
//! record could chain to it anyway: its fields are computed on the input's cells or archive as
//! they are routed (`Core::fuse`), and its row goes on along its own edges as the record it
//! outputs, with its input's parent as the parent (a child takes the times and the app from
//! its parent, which the map's input record would have carried unchanged). The input record
//! itself is never made: no entry, no archive, no stretch, no header copied for it. A filter
//! fed by forward edges only is fused the same way: its predicate is evaluated on its input's
//! fields where they are, and the input goes on along the filter's edges as it came (cells,
//! values or an archive) if it holds, or stops there. A map whose one edge goes forward to
//! another such map or filter runs that one on its row next, and so on. A sink
//! that reads headers alone (latency, null), fed by forward edges, takes its record as its
//! ingress time, due as an output when the run ends (`Telemetry::outputs_due`), as its stretch
//! would have. Chaining would run either right after the record's maker; fusion skips making
//! the record in between. A user function fed by forward edges only is fused the same way
//! into a typed source's poll: it is called with the source's event as the value it was made
//! as (`Function::on_value`), or, if it does not take values, with its archive written once
//! into a scratch buffer; what it emits is routed along its own edges, with the event's
//! header (the record it would have been) as the parent. A source whose events are all due at
//! once hands it its values a few at a time, in one call (`Core::fuse_user_batch`), each with
//! the header it would have carried, and each emit naming the one it was made from.
//!
//! When: the policy chains and its `on_send`, `pre_apply` and `post_apply` are no-ops
//! (`Policy::observes_send`, `Policy::observes_apply`), so no hook would do anything with the
//! record; no snapshot aligns (chaining is on); the function's instance here may take chained
//! records (`ChainTo::may_run`); and nothing of it waits on the shard, queued or chained and
//! not yet run (`Core::decide_fusion`): its input channel from this shard is then empty, and
//! the record that would have been the next on it runs now, in its place. A router decides once
//! per edge for its life (a stretch, or a poll of a source), as it decides whether it chains:
//! nothing it does meanwhile queues, stages or chains anything for the function (what it would
//! chain to it, it fuses).
//!
//! User functions are fused only into a source's poll (`Fusing::ops`: a chained stretch holds
//! the instance it runs out of the slots), and only on a source's values (`Payload::VALUE`, a
//! constant, so routing cells and archives carries no check for them). Not fused: watermarks, ends and barriers (they reach the instance as they always do; a
//! fused record never overtakes one, since one waiting stops fusion until it has run), maps
//! with a string output (their rows are values), functions behind a keyed edge (their records
//! are counted by key group), and everything under a policy that observes a hook.

use std::mem::MaybeUninit;

use dirigo_actors::expr::{Predicate, ScalarExpr};
use dirigo_actors::function::any_failure;
use dirigo_actors::record::{ArchivedValue, Cell, RecordsOnly};
use dirigo_net::mailbox::Entry;

use crate::instance::{Builtin, OperatorInstance};
use crate::plan::{Edge, FunctionPlan, Partition, Plan};

/// What a router that may fuse maps (`shard::fuse`) reads.
pub(super) struct Fusing<'a> {
    pub fusion: &'a mut Fusion,
    /// The chained records that have not run yet besides those in the chain buffer (the rest
    /// of the generation running now).
    pub rest: &'a [Entry],
    /// The plan's functions: a fused map's edges.
    pub functions: &'a [FunctionPlan],
    /// The ingress times of the outputs made here (`Telemetry::outputs_due`): a fused sink's.
    pub outputs_due: &'a mut Vec<u64>,
    /// The shard's operator instances, where user functions may be fused (a source's poll);
    /// None: they are not.
    pub ops: Option<&'a mut [Option<OperatorInstance>]>,
    /// The shard's signal, where a fused user function is marked running (the stall
    /// detector reads it, as for a stretch); with `ops`.
    pub signal: Option<&'a dirigo_net::signal::ShardSignal>,
}

/// What stands in a user function's slot while its instance runs fused (`Core::fuse_user`):
/// nothing is ever applied to it.
pub(super) struct Vacant;

impl dirigo_actors::function::ErasedFunction for Vacant {
    fn on_message(
        &mut self,
        _: &dirigo_actors::envelope::Header,
        _: &[u8],
        _: &mut dyn dirigo_actors::operator::Emitter,
    ) {
        unreachable!("a fused user function's instance is back in its slot before anything else runs")
    }
}

/// The maps and filters of this shard that may be fused, by function, and the router generation
/// their decisions belong to.
#[derive(Default)]
pub(super) struct Fusion {
    pub stages: Vec<Option<Fused>>,
    /// Per function: a sink that reads headers alone (latency, null), fed by forward edges: a
    /// record for it fused is its ingress time, due as an output (`Telemetry::outputs_due`).
    pub sinks: Vec<bool>,
    /// Per function: a user function fed by forward edges, and its decisions.
    pub users: Vec<Option<Decided>>,
    /// A fused user function panicked (`Fusion::ran_user`): its app fails once the poll ends.
    pub failed_user: Option<usize>,
    /// Bumped for each router that may fuse: a fused map's decisions are its router's.
    pub gen: u64,
    /// Per function: records of it fused since the last report.
    pub fused: Vec<u64>,
}

/// What a fused function computes.
pub(super) enum Stage {
    /// A map: the expressions of its output row's fields.
    Map(Vec<ScalarExpr>),
    /// A filter: its predicate. A record that satisfies it goes on as it came (cells, values
    /// or an archive), as the filter forwards its input unchanged.
    Filter(Predicate),
}

/// A map or a filter as a fused one runs it.
pub(super) struct Fused {
    pub stage: Stage,
    /// Its input is records (as its instance's is).
    pub records: RecordsOnly,
    /// What the routers found for the map's edges.
    pub decided: Decided,
}

/// A map's output row, computed by `exprs` from its input's fields into `row`.
///
/// # Safety
/// `row` is valid for writes of `MAX_FIELDS` cells (a fused map has at most that many fields:
/// `Fusion::refresh`).
#[inline(always)]
unsafe fn eval(exprs: &[ScalarExpr], fields: &[ArchivedValue], row: *mut Cell) {
    debug_assert!(exprs.len() <= MAX_FIELDS);
    for (i, expr) in exprs.iter().enumerate() {
        // SAFETY: `i < exprs.len() <= MAX_FIELDS` (the caller's contract).
        unsafe { row.add(i).write(expr.eval_fields(fields)) };
    }
}

impl Fused {
    /// Its decisions, for the router of generation `gen` (found afresh for a new router).
    #[inline(always)]
    pub fn decisions(&mut self, gen: u64) -> &mut Decisions {
        self.decided.decisions(gen)
    }
}

/// What the routers of a fused function (a map, a filter, a user function) found for its
/// edges: those of the router of generation `gen`.
#[derive(Default)]
pub(super) struct Decided {
    decided: Decisions,
    gen: u64,
}

impl Decided {
    /// Its decisions, for the router of generation `gen` (found afresh for a new router).
    #[inline(always)]
    pub fn decisions(&mut self, gen: u64) -> &mut Decisions {
        if self.gen != gen {
            (self.gen, self.decided) = (gen, Decisions::default());
        }
        &mut self.decided
    }
}

/// The most fields a fused map has (one with more is chained).
pub(super) const MAX_FIELDS: usize = 16;

/// The output rows of a fused map and of the one fused into it next, on the stack, unwritten
/// until a map writes one (`Rows::first`, `RowsIn::next`): nothing is zeroed per record.
pub(super) struct Rows([MaybeUninit<[Cell; MAX_FIELDS]>; 2]);

impl Rows {
    #[inline(always)]
    pub fn new() -> Rows {
        Rows([MaybeUninit::uninit(), MaybeUninit::uninit()])
    }

    /// The row of a map of `exprs` from its input's `fields`, into the first row.
    #[inline(always)]
    pub fn first<'r>(&'r mut self, exprs: &[ScalarExpr], fields: &[ArchivedValue]) -> RowsIn<'r> {
        let to = self.0[0].as_mut_ptr().cast::<Cell>();
        // SAFETY: `to` is the first row's array.
        unsafe { eval(exprs, fields, to) };
        RowsIn { rows: self, cur: 0, len: exprs.len() }
    }
}

/// Rows, the last one written `cur`, of `len` cells.
pub(super) struct RowsIn<'r> {
    rows: &'r mut Rows,
    cur: usize,
    len: usize,
}

impl RowsIn<'_> {
    /// The row of a map of `exprs` from the last row, into the other one, which is the last
    /// one then.
    #[inline(always)]
    pub fn next(&mut self, exprs: &[ScalarExpr]) {
        let base = self.rows.0.as_mut_ptr();
        // SAFETY: the two rows are distinct arrays; the last one's first `len` cells were
        // written (by `first` or the previous `next`), and `eval` writes the other's.
        unsafe {
            let from = std::slice::from_raw_parts(base.add(self.cur).cast::<Cell>(), self.len);
            eval(exprs, Cell::as_archived(from), base.add(1 - self.cur).cast::<Cell>());
        }
        (self.cur, self.len) = (1 - self.cur, exprs.len());
    }

    /// The last row's cells.
    #[inline(always)]
    pub fn cells(&self) -> &[Cell] {
        // SAFETY: the last row's first `len` cells were written (see `next`).
        unsafe { std::slice::from_raw_parts(self.rows.0[self.cur].as_ptr().cast::<Cell>(), self.len) }
    }
}

/// Per output edge (bit `i` for edge `i`, the first 64), what a router found for its life.
#[derive(Clone, Copy, Default)]
pub(super) struct Decisions {
    /// The target takes chained records (`ChainTo::may_run`).
    pub chains: u64,
    /// Whether the target is fused was decided, and the answer.
    pub fuse_decided: u64,
    pub fuses: u64,
    /// Of those fused, the user functions (`Core::fuse_user`).
    pub users: u64,
}

impl Fusion {
    /// Whether any function here may be fused.
    #[inline]
    pub fn any(&self) -> bool {
        self.stages.iter().any(Option::is_some) || self.sinks.contains(&true) || self.users.iter().any(Option::is_some)
    }

    /// Whether `f` is a user function that may be fused.
    #[inline(always)]
    pub fn is_user(&self, f: usize) -> bool {
        self.users.get(f).is_some_and(Option::is_some)
    }

    /// Fused user function `f`'s decisions for the router of generation `gen`.
    #[inline(always)]
    pub fn user_decisions(&mut self, f: usize, gen: u64) -> &mut Decisions {
        self.users[f].as_mut().expect("a fused user function").decisions(gen)
    }

    /// After fused user function `f` ran: if it panicked, its app fails once the poll ends
    /// (the shard takes `failed_user`).
    #[inline(always)]
    pub fn ran_user(&mut self, f: usize) {
        if any_failure() {
            self.failed_user = Some(f);
        }
    }

    /// Fused map or filter `f` (asked only once its fusion was decided).
    #[inline(always)]
    pub fn stage(&mut self, f: usize) -> &mut Fused {
        self.stages[f].as_mut().expect("a fused map or filter")
    }

    /// Whether function `f` may be fused.
    #[inline]
    pub fn fusible(&self, f: usize) -> bool {
        self.stages.get(f).is_some_and(Option::is_some)
            || self.sinks.get(f).copied().unwrap_or(false)
            || self.is_user(f)
    }

    /// Which functions here may be fused, from their instances and the plan: maps of scalar
    /// outputs and filters, fed by forward edges only, that records may chain to (`chainable`)
    /// and that are not counted by key group (`counted`). Recomputed with `chainable`.
    pub fn refresh(
        &mut self,
        plan: &Plan,
        ops: &[Option<OperatorInstance>],
        chainable: &[bool],
        counted: impl Fn(usize) -> bool,
    ) {
        let forward_only = |f: usize| {
            let into = |e: &&Edge| e.target as usize == f;
            let sources = plan.sources.iter().flat_map(|s| s.outputs.iter().filter(into));
            let functions = plan.functions.iter().flat_map(|g| g.outputs.iter().filter(into));
            sources.chain(functions).all(|e| e.partition == Partition::Forward)
        };
        self.stages = (0..ops.len())
            .map(|f| {
                let (stage, records) = match &ops[f] {
                    Some(OperatorInstance::Builtin(Builtin::Map(map), records)) => {
                        (Stage::Map(map.scalar_exprs().filter(|e| e.len() <= MAX_FIELDS)?.to_vec()), records)
                    }
                    Some(OperatorInstance::Builtin(Builtin::Filter(filter), records)) => {
                        (Stage::Filter(filter.predicate().clone()), records)
                    }
                    _ => return None,
                };
                if !chainable[f] || counted(f) || plan.functions[f].is_sink || !forward_only(f) {
                    return None;
                }
                Some(Fused { stage, records: *records, decided: Decided::default() })
            })
            .collect();
        self.sinks = (0..ops.len())
            .map(|f| {
                let ignores = matches!(&ops[f], Some(OperatorInstance::Sink(s)) if s.ignores_records());
                ignores && plan.functions[f].ignores_records && chainable[f] && !counted(f) && forward_only(f)
            })
            .collect();
        self.users = (0..ops.len())
            .map(|f| {
                let user = matches!(&ops[f], Some(OperatorInstance::User(_)));
                (user && chainable[f] && !counted(f) && !plan.functions[f].is_sink && forward_only(f))
                    .then(Decided::default)
            })
            .collect();
        self.fused.resize(ops.len(), 0);
    }
}
