//! Running a stretch of data records of one function: consecutive records that chained to it,
//! a batch that runs as it arrives, or one queued record. What holds for every record of the
//! stretch is looked up and built once: the function's plan and instance, the router (each
//! record becomes its parent in turn), the instance's kind (`OperatorInstance::on_stretch`),
//! whether the function is counted by key group and whether it has outputs. What each record
//! must see still runs for each: the rebalancer's count (keyed functions), its becoming the
//! router's parent (functions with outputs), `pre_apply` and `post_apply` (unless the policy's
//! are no-ops: `Policy::observes_apply`), and, after user functions and actors, the check for
//! failed user code. A stretch holding a record the shard times is timed as a whole (see
//! `RecordParts::run_stretch`).

use dirigo_actors::envelope::{Entry, Header};
use dirigo_actors::function::any_failure;
use dirigo_actors::operator::Emitter;
use dirigo_actors::record::{Cell, Value};
use rkyv::util::AlignedVec;

use super::rebalance::Rebalance;
use super::router::Router;
use super::sched::Costs;
use crate::instance::StretchCx;
use crate::plan::AppPlan;
use crate::policy::Policy;

/// Which records of a stretch are timed.
#[derive(Clone, Copy)]
pub(super) enum Timing {
    /// Every `COST_SAMPLE`-th record the shard runs (each counts as a message run).
    Counted,
    /// Queued records (the loop counts them), this many of which their arrivals picked: the
    /// stretch is timed if any is, each counting at its mean.
    Once(u64),
}

/// The hooks around each record of a stretch, and the router its outputs go through.
pub(super) struct StretchRun<'a, P: Policy> {
    router: Router<'a, P>,
    apps: &'a [AppPlan],
    cost: &'a Costs,
    rb: &'a mut Rebalance,
    f: usize,
    /// The policy's `pre_apply` and `post_apply` do something (`Policy::observes_apply`).
    hooks: bool,
    /// The function's messages are counted by key group (`Rebalance::counts`).
    keyed: bool,
    /// The function has outputs: each record becomes the router's parent (a sink's is not).
    routes: bool,
    /// The time the hooks see: the stretch's start if it is timed, else 0.
    now: u64,
}

impl<'a, P: Policy> StretchRun<'a, P> {
    #[inline(always)]
    pub fn new(
        mut router: Router<'a, P>,
        apps: &'a [AppPlan],
        cost: &'a Costs,
        rb: &'a mut Rebalance,
        f: usize,
        now: u64,
    ) -> Self {
        let hooks = router.policy().observes_apply();
        let (keyed, routes) = (rb.counts(f), router.routes());
        StretchRun { router, apps, cost, rb, f, hooks, keyed, routes, now }
    }
}

impl<P: Policy> Emitter for StretchRun<'_, P> {
    #[inline(always)]
    fn emit(&mut self, key_hash: u64, event_time: u64, values: &[Value]) {
        self.router.emit(key_hash, event_time, values)
    }

    #[inline(always)]
    fn forward(&mut self, key_hash: u64, event_time: u64, archive: &[u8]) {
        self.router.forward(key_hash, event_time, archive)
    }

    #[inline(always)]
    fn emit_cells(&mut self, key_hash: u64, event_time: u64, cells: &[Cell]) {
        self.router.emit_cells(key_hash, event_time, cells)
    }

    #[inline(always)]
    fn emit_archived(&mut self, key_hash: u64, event_time: u64, write: &mut dyn FnMut(&mut AlignedVec)) {
        self.router.emit_archived(key_hash, event_time, write)
    }

    #[inline(always)]
    fn emit_archived_from(
        &mut self,
        parent: &Header,
        key_hash: u64,
        event_time: u64,
        write: &mut dyn FnMut(&mut AlignedVec),
    ) {
        self.router.emit_archived_from(parent, key_hash, event_time, write)
    }

    #[inline(always)]
    fn forward_from(&mut self, parent: &Header, key_hash: u64, event_time: u64, archive: &[u8]) {
        self.router.forward_from(parent, key_hash, event_time, archive)
    }
}

impl<P: Policy> StretchCx for StretchRun<'_, P> {
    #[inline(always)]
    fn before(&mut self, h: &Header) {
        if self.keyed {
            self.rb.count(self.f, h.key_hash);
        }
        if self.routes {
            self.router.set_parent(h);
        }
        if self.hooks {
            let cx = self.cost.cx(self.apps, self.now);
            self.router.policy().pre_apply(h, &cx);
        }
    }

    #[inline(always)]
    fn after(&mut self, h: &Header) {
        if self.hooks {
            let cx = self.cost.cx(self.apps, self.now);
            self.router.policy().post_apply(h, &cx);
        }
    }

    #[inline(always)]
    fn failed(&mut self) -> bool {
        any_failure()
    }

    #[inline(always)]
    fn observes(&self) -> bool {
        self.keyed || self.routes || self.hooks
    }

    #[inline]
    fn batch(&mut self, stretch: &[Entry]) -> bool {
        if self.hooks {
            return false;
        }
        if self.keyed {
            stretch.iter().for_each(|e| self.rb.count(self.f, e.header.key_hash));
        }
        true
    }
}
