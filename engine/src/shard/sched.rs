//! The shard's scheduler: the policy, the run queue it orders, and the measured costs its hooks
//! read. Every hook call of the shard goes through here (the router's `on_send` and `on_route`
//! borrow it too), so the policy and the cost tables are one part, passed to the others.

use dirigo_actors::envelope::Header;
use dirigo_actors::ids::FunctionId;

use crate::plan::{AppPlan, Plan};
use crate::policy::{Policy, SchedCx};
use crate::runqueue::{QEntry, RunQueue};
use dirigo_net::signal::ShardSignal;

/// Messages between two measurements of the shard's busy time per message (see `Sched::tick`).
const MSG_COST_EVERY: u64 = 64;

/// Costs the hooks see, per function (indexed by global function id).
pub(super) struct Costs {
    /// App of each function.
    pub fn_app: Vec<u16>,
    /// Measured service time of each function on this shard (EWMA, ns).
    pub ns: Vec<u64>,
    /// Cost of the rest of the DAG path from each function, itself included (ns).
    pub to_go_ns: Vec<u64>,
    /// Per actor function: what sending a forward and handling its answer cost this shard
    /// (EWMAs, ns).
    pub forward_ns: Vec<u64>,
    pub answer_ns: Vec<u64>,
}

impl Costs {
    fn new(plan: &Plan, forward_prior_ns: u64) -> Self {
        let nf = plan.functions.len();
        Costs {
            fn_app: plan.functions.iter().map(|f| f.app).collect(),
            ns: vec![1_000; nf],
            to_go_ns: vec![1_000; nf],
            forward_ns: vec![forward_prior_ns; nf],
            answer_ns: vec![forward_prior_ns; nf],
        }
    }

    /// What the hooks read, at time `now_ns`.
    #[inline(always)]
    pub fn cx<'a>(&'a self, apps: &'a [AppPlan], now_ns: u64) -> SchedCx<'a> {
        SchedCx { apps, fn_app: &self.fn_app, cost_ns: &self.ns, cost_to_go_ns: &self.to_go_ns, now_ns }
    }

    /// Fold one timed run of function `f` (ns) into its service time.
    #[inline(always)]
    pub fn sample(&mut self, f: usize, dt_ns: u64) {
        self.ns[f] = (self.ns[f] * 7 + dt_ns) / 8;
    }

    /// Fold `n` timed runs of function `f`, each of `dt_ns` (a stretch's mean), as [`Costs::sample`]
    /// folds one.
    #[inline(always)]
    pub fn fold(&mut self, f: usize, dt_ns: u64, n: u64) {
        (0..n).for_each(|_| self.sample(f, dt_ns));
    }

    /// Make room for the functions of `plan` (a deployed app's, at run time).
    pub fn grow(&mut self, plan: &Plan, forward_prior_ns: u64) {
        let nf = plan.functions.len();
        let nf0 = self.fn_app.len();
        self.fn_app.extend(plan.functions[nf0..].iter().map(|f| f.app));
        self.ns.resize(nf, 1_000);
        self.to_go_ns.resize(nf, 1_000);
        self.forward_ns.resize(nf, forward_prior_ns);
        self.answer_ns.resize(nf, forward_prior_ns);
    }
}

/// The policy, the run queue and what the hooks read.
pub(super) struct Sched<P: Policy> {
    pub policy: P,
    pub runq: RunQueue,
    /// Arrival number of the next message queued here.
    pub arrival: u64,
    /// Time of the current turn.
    pub now: u64,
    /// Expected delay of every shard, read from the signal slots once per turn.
    pub peer_delay: Vec<u64>,
    pub cost: Costs,
    /// Per app: messages `on_route` found unable to meet their deadline on their home shard
    /// since the last report.
    pub scale_up: Vec<u64>,
    /// Messages run so far, and the shard's busy time per message run (ns, an average over
    /// recent ticks: a function's own cost leaves out the loop's share, routing, batching).
    pub msgs_run: u64,
    pub msg_ns: u64,
    msg_mark: (u64, u64),
}

/// The scheduler split into the parts a stretch of records borrows (`shard::stretch`): the
/// router takes the policy, the load figures and the scale-up counts, the stretch the costs
/// (read by the hooks).
pub(super) struct SchedParts<'a, P> {
    pub policy: &'a mut P,
    pub runq: &'a RunQueue,
    pub peer_delay: &'a [u64],
    pub cost: &'a Costs,
    pub now: u64,
    pub scale_up: &'a mut [u64],
}

impl<P: Policy> Sched<P> {
    /// The parts.
    #[inline(always)]
    pub fn split(&mut self) -> SchedParts<'_, P> {
        let Sched { policy, runq, now, peer_delay, cost, scale_up, .. } = self;
        SchedParts { policy, runq, peer_delay, cost, now: *now, scale_up }
    }

    pub fn new(policy: P, plan: &Plan, forward_prior_ns: u64) -> Self {
        Sched {
            policy,
            runq: RunQueue::new(plan.functions.len()),
            arrival: 0,
            now: 0,
            peer_delay: vec![0; plan.shards],
            cost: Costs::new(plan, forward_prior_ns),
            scale_up: vec![0; plan.apps.len()],
            msgs_run: 0,
            msg_ns: 0,
            msg_mark: (0, 0),
        }
    }

    /// Make room for the apps and functions of `plan` (deployed at run time).
    pub fn grow(&mut self, plan: &Plan, forward_prior_ns: u64) {
        self.runq.grow(plan.functions.len());
        self.cost.grow(plan, forward_prior_ns);
        self.scale_up.resize(plan.apps.len(), 0);
    }

    /// A new turn at `now`: read every shard's published delay.
    #[inline]
    pub fn begin_turn(&mut self, now: u64, signals: &[std::sync::Arc<ShardSignal>]) {
        self.now = now;
        for (d, s) in self.peer_delay.iter_mut().zip(signals) {
            *d = s.delay_ns();
        }
    }

    /// Queue a message (`on_enqueue` gives its priority) as the entry `make(priority, arrival)`
    /// builds.
    #[inline(always)]
    pub fn enqueue_with(&mut self, apps: &[AppPlan], now: u64, h: &Header, make: impl FnOnce(u64, u64) -> QEntry) {
        let cx = self.cost.cx(apps, now);
        let priority = self.policy.on_enqueue(h, self.arrival, &cx);
        self.runq.push(make(priority, self.arrival));
        self.arrival += 1;
    }

    /// Queue message `header`, whose payload is at `off..off + len` of held batch `slot`.
    #[inline(always)]
    pub fn enqueue(&mut self, apps: &[AppPlan], now: u64, header: Header, slot: u32, off: u32, len: u32) {
        self.enqueue_with(apps, now, &header, |priority, arrival| QEntry { header, priority, arrival, slot, off, len });
    }

    /// The priority `on_enqueue` gives `h`, as arrival `arrival`, at this turn's time.
    #[inline(always)]
    pub fn priority(&mut self, apps: &[AppPlan], h: &Header, arrival: u64) -> u64 {
        let cx = self.cost.cx(apps, self.now);
        self.policy.on_enqueue(h, arrival, &cx)
    }

    /// The next message in the policy's order.
    #[inline(always)]
    pub fn pick(&mut self, apps: &[AppPlan], now: u64) -> Option<QEntry> {
        let cx = self.cost.cx(apps, now);
        let f: FunctionId = self.policy.pick_next(&self.runq, &cx)?;
        Some(self.runq.pop(f).expect("picked queue is non-empty"))
    }

    #[inline(always)]
    pub fn pre_apply(&mut self, apps: &[AppPlan], h: &Header, now: u64) {
        let cx = self.cost.cx(apps, now);
        self.policy.pre_apply(h, &cx);
    }

    #[inline(always)]
    pub fn post_apply(&mut self, apps: &[AppPlan], h: &Header, now: u64) {
        let cx = self.cost.cx(apps, now);
        self.policy.post_apply(h, &cx);
    }

    /// Once per tick: the busy time per message (from the shard's busy total), every
    /// function's cost to go (functions are in topological order), and the policy's tick.
    pub fn tick(&mut self, plan: &Plan, busy_total_ns: u64, now: u64) {
        let (busy, msgs) = (busy_total_ns - self.msg_mark.0, self.msgs_run - self.msg_mark.1);
        if msgs >= MSG_COST_EVERY {
            self.msg_ns = (self.msg_ns * 3 + busy / msgs) / 4;
            self.msg_mark = (busy_total_ns, self.msgs_run);
        }
        for f in (0..plan.functions.len()).rev() {
            let down = plan.functions[f].outputs.iter().map(|e| self.cost.to_go_ns[e.target as usize]).max();
            self.cost.to_go_ns[f] = self.cost.ns[f] + down.unwrap_or(0);
        }
        let cx = self.cost.cx(&plan.apps, now);
        self.policy.on_tick(&cx);
    }
}
