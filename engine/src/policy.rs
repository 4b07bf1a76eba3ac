//! Scheduling policies: the hooks every message passes on its shard, and the built-in policies
//! (FIFO, EDF, least-laxity, fair share). A shard is generic over its policy, so hooks are
//! statically dispatched: no allocation, lock or virtual call per message.

use dirigo_actors::envelope::Header;
use dirigo_actors::ids::FunctionId;

use crate::plan::AppPlan;
use crate::runqueue::RunQueue;

/// What the hooks can read: the plan's apps and the shard's measured costs, per function.
#[derive(Clone, Copy, Debug)]
pub struct SchedCx<'a> {
    pub apps: &'a [AppPlan],
    /// App of each function.
    pub fn_app: &'a [u16],
    /// Measured service time of each function on this shard (EWMA, ns).
    pub cost_ns: &'a [u64],
    /// Measured cost of the rest of the DAG path from each function, itself included (ns).
    pub cost_to_go_ns: &'a [u64],
    /// Now (engine clock, ns).
    pub now_ns: u64,
}

/// Where a message should run (dual-mode actors: the lessor or a lessee).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Lessor,
    /// Scale out: run on a lessee (the engine picks the least-loaded shard).
    Lessee,
}

/// What `on_route` sees of a message's destination.
#[derive(Clone, Copy, Debug)]
pub struct RouteCx {
    /// Expected wait at the home shard before the message could start (ns).
    pub home_delay_ns: u64,
    /// Expected service time of the target function (ns).
    pub service_ns: u64,
    /// Slack left: deadline - now - cost to go (ns, negative when already late).
    pub laxity_ns: i64,
}

impl RouteCx {
    /// The scale-up signal: the home shard cannot start and finish it within its laxity.
    #[inline]
    pub fn misses_deadline(&self) -> bool {
        (self.home_delay_ns + self.service_ns) as i64 > self.laxity_ns
    }
}

/// The scheduling hooks. Every method has a default; a policy overrides what it decides.
pub trait Policy: 'static {
    /// A message enters the engine: derive its deadline from the app's SLO.
    #[inline]
    fn on_ingress(&mut self, h: &mut Header, app: &AppPlan) {
        h.deadline_ns = h.ingress_ns.saturating_add(app.slo_ns);
    }
    /// Choose the activation for a message about to be sent to a keyed function.
    #[inline]
    fn on_route(&mut self, _h: &Header, _route: &RouteCx) -> Placement {
        Placement::Lessor
    }
    /// Priority of a message entering the run queue: smaller runs first.
    fn on_enqueue(&mut self, h: &Header, arrival: u64, cx: &SchedCx<'_>) -> u64;
    /// Choose the function whose head message runs next.
    #[inline]
    fn pick_next(&mut self, q: &RunQueue, _cx: &SchedCx<'_>) -> Option<FunctionId> {
        q.min_head()
    }
    /// Just before the function runs.
    #[inline]
    fn pre_apply(&mut self, _h: &Header, _cx: &SchedCx<'_>) {}
    /// Just after the function ran.
    #[inline]
    fn post_apply(&mut self, _h: &Header, _cx: &SchedCx<'_>) {}
    /// A message is emitted: the child inherited its parent's deadline; the policy may rewrite it.
    #[inline]
    fn on_send(&mut self, _parent: &Header, _child: &mut Header) {}
    /// The shard found nothing to do.
    #[inline]
    fn on_idle(&mut self) {}
    /// Periodic tick.
    #[inline]
    fn on_tick(&mut self, _cx: &SchedCx<'_>) {}
}

/// Arrival order.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fifo;

impl Policy for Fifo {
    #[inline]
    fn on_enqueue(&mut self, _h: &Header, arrival: u64, _cx: &SchedCx<'_>) -> u64 {
        arrival
    }
}

/// Earliest deadline first.
#[derive(Clone, Copy, Debug, Default)]
pub struct Edf;

impl Policy for Edf {
    #[inline]
    fn on_enqueue(&mut self, h: &Header, _arrival: u64, _cx: &SchedCx<'_>) -> u64 {
        h.deadline_ns
    }
}

/// Least laxity first (Cameo): latest start time = deadline - cost to go.
#[derive(Clone, Copy, Debug, Default)]
pub struct Laxity;

impl Policy for Laxity {
    #[inline]
    fn on_enqueue(&mut self, h: &Header, _arrival: u64, cx: &SchedCx<'_>) -> u64 {
        h.deadline_ns.saturating_sub(cx.cost_to_go_ns[h.function as usize])
    }
    #[inline]
    fn on_route(&mut self, _h: &Header, route: &RouteCx) -> Placement {
        if route.misses_deadline() {
            Placement::Lessee
        } else {
            Placement::Lessor
        }
    }
}

/// Weighted fair share of shard time across apps (start-time fair queuing on measured costs);
/// within an app, arrival order.
#[derive(Clone, Debug, Default)]
pub struct Fair {
    /// Virtual time consumed by each app, in ns of service divided by its weight.
    vtime: Vec<u64>,
}

impl Fair {
    fn vtime_of(&mut self, app: usize) -> &mut u64 {
        if self.vtime.len() <= app {
            self.vtime.resize(app + 1, 0);
        }
        &mut self.vtime[app]
    }
}

impl Policy for Fair {
    #[inline]
    fn on_enqueue(&mut self, _h: &Header, arrival: u64, _cx: &SchedCx<'_>) -> u64 {
        arrival
    }

    fn pick_next(&mut self, q: &RunQueue, cx: &SchedCx<'_>) -> Option<FunctionId> {
        // The active app with the least virtual time; an app waking from idle starts at the
        // least virtual time of the active apps, so idleness earns no credit.
        let mut best: Option<(u64, usize)> = None;
        for &f in q.active() {
            let app = cx.fn_app[f as usize] as usize;
            let v = *self.vtime_of(app);
            if best.is_none_or(|(bv, _)| v < bv) {
                best = Some((v, app));
            }
        }
        let (floor, app) = best?;
        for &f in q.active() {
            let a = cx.fn_app[f as usize] as usize;
            let v = self.vtime_of(a);
            *v = (*v).max(floor);
        }
        q.min_head_by(|f| cx.fn_app[f as usize] as usize == app)
    }

    #[inline]
    fn post_apply(&mut self, h: &Header, cx: &SchedCx<'_>) {
        let weight = cx.apps[h.app as usize].weight.max(1) as u64;
        let cost = cx.cost_ns[h.function as usize].max(1);
        *self.vtime_of(h.app as usize) += cost * 1024 / weight;
    }
}

/// The built-in policies, chosen in the config.
#[derive(Clone, Debug)]
pub enum Builtin {
    Fifo(Fifo),
    Edf(Edf),
    Laxity(Laxity),
    Fair(Fair),
}

/// Names of the built-in policies, as written in configs.
pub const POLICY_NAMES: [&str; 4] = ["fifo", "edf", "laxity", "fair"];

impl Builtin {
    /// The policy called `name` in a config.
    pub fn by_name(name: &str) -> Option<Builtin> {
        Some(match name {
            "fifo" => Builtin::Fifo(Fifo),
            "edf" => Builtin::Edf(Edf),
            "laxity" => Builtin::Laxity(Laxity),
            "fair" => Builtin::Fair(Fair::default()),
            _ => return None,
        })
    }
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Builtin::Fifo($p) => $e,
            Builtin::Edf($p) => $e,
            Builtin::Laxity($p) => $e,
            Builtin::Fair($p) => $e,
        }
    };
}

impl Policy for Builtin {
    #[inline]
    fn on_ingress(&mut self, h: &mut Header, app: &AppPlan) {
        dispatch!(self, p => p.on_ingress(h, app))
    }
    #[inline]
    fn on_route(&mut self, h: &Header, route: &RouteCx) -> Placement {
        dispatch!(self, p => p.on_route(h, route))
    }
    #[inline]
    fn on_enqueue(&mut self, h: &Header, arrival: u64, cx: &SchedCx<'_>) -> u64 {
        dispatch!(self, p => p.on_enqueue(h, arrival, cx))
    }
    #[inline]
    fn pick_next(&mut self, q: &RunQueue, cx: &SchedCx<'_>) -> Option<FunctionId> {
        dispatch!(self, p => p.pick_next(q, cx))
    }
    #[inline]
    fn pre_apply(&mut self, h: &Header, cx: &SchedCx<'_>) {
        dispatch!(self, p => p.pre_apply(h, cx))
    }
    #[inline]
    fn post_apply(&mut self, h: &Header, cx: &SchedCx<'_>) {
        dispatch!(self, p => p.post_apply(h, cx))
    }
    #[inline]
    fn on_send(&mut self, parent: &Header, child: &mut Header) {
        dispatch!(self, p => p.on_send(parent, child))
    }
    #[inline]
    fn on_idle(&mut self) {
        dispatch!(self, p => p.on_idle())
    }
    #[inline]
    fn on_tick(&mut self, cx: &SchedCx<'_>) {
        dispatch!(self, p => p.on_tick(cx))
    }
}
