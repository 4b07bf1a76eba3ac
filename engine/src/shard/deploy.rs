//! Runtime deploy and undeploy on a shard (`dirigo serve`; see [`crate::control`]): adopt a newly
//! published plan (grow every per-app and per-function array, build this shard's instances of
//! the new functions and sources), gate each app's sources on its state, and tell the controller
//! when nothing of an app is left here (then release its instances). Cold paths only: the turn
//! pays one relaxed load of the plan version.

use std::sync::Arc;

use dirigo_actors::ids::ShardId;

use super::dual_mode::LessorActor;
use super::inputs::InputChannels;
use super::{Shard, FORWARD_PRIOR_NS};
use crate::control::{Ack, ControlPlane, RUNNING, STOPPING};
use crate::instance::OperatorInstance;
use crate::plan::{InstanceCx, Plan};
use crate::policy::Policy;

/// How often a served shard looks for apps that ended here (ns).
const ENDED_CHECK_NS: u64 = 10_000_000;

/// One function's instance on a shard: its operator (or its lessor, for a dual-mode actor) and
/// its input channels; all None where the function does not run on the shard.
pub(super) struct Built {
    pub op: Option<OperatorInstance>,
    pub actor: Option<Box<LessorActor>>,
    pub inst: Option<InputChannels>,
}

/// Build shard `id`'s instance of function `f` of `plan` (nothing where `f` does not run here).
pub(super) fn build_instance(plan: &Plan, f: usize, id: ShardId) -> Built {
    let fp = &plan.functions[f];
    let Some(i) = fp.shards.iter().position(|&s| s == id) else {
        return Built { op: None, actor: None, inst: None };
    };
    let app = &plan.apps[fp.app as usize].name;
    let _span = tracing::debug_span!("instance", app = %app, function = %fp.name, shard = id).entered();
    tracing::debug!("building");
    let cx = InstanceCx { shard: id, shards: plan.shards, instance: i as u32, parallelism: fp.shards.len() as u32 };
    let op = (fp.factory)(cx);
    let op = if fp.max_lessees > 0 { op.into_actor() } else { Err(op) };
    let inst = Some(InputChannels::new(plan.channels_of(f as u16, id)));
    match op {
        Ok(actor) => Built { op: None, actor: Some(Box::new(LessorActor::new(actor, fp.max_lessees as usize))), inst },
        Err(op) => Built { op: Some(op), actor: None, inst },
    }
}

/// A shard's view of the control plane (None outside `dirigo serve`: the plan is fixed).
#[derive(Default)]
pub(super) struct Deploy {
    control: Option<Arc<ControlPlane>>,
    /// The plan version this shard runs.
    version: u64,
    /// Per app: this shard acked that nothing of it is left here.
    ended: Vec<bool>,
    next_check: u64,
    /// The plan changed since the loop last read its idle tuning.
    replanned: bool,
}

impl Deploy {
    pub(super) fn new(control: Option<Arc<ControlPlane>>, apps: usize) -> Self {
        Deploy { control, ended: vec![false; apps], ..Deploy::default() }
    }

    /// Whether app `app`'s sources may produce (a served app waits until every shard built it).
    #[inline]
    pub(super) fn started(&self, app: usize) -> bool {
        self.control.as_ref().is_none_or(|c| c.state(app) != crate::control::PENDING)
    }

    /// Whether app `app` is being undeployed (its sources end).
    #[inline]
    pub(super) fn stopping(&self, app: usize) -> bool {
        self.control.as_ref().is_some_and(|c| c.state(app) == STOPPING)
    }

    /// A served shard stays (and parks) when everything it runs has ended, until the engine
    /// stops: apps may still be deployed.
    #[inline]
    pub(super) fn may_finish(&self, stop: &std::sync::atomic::AtomicBool) -> bool {
        self.control.is_none() || stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True once after each plan change (the loop recomputes its idle tuning).
    pub(super) fn take_replanned(&mut self) -> bool {
        std::mem::take(&mut self.replanned)
    }
}

impl<P: Policy> Shard<P> {
    /// At the start of a turn: adopt a newly published plan, and now and then look for apps
    /// that ended here.
    #[inline]
    pub(super) fn control_turn(&mut self, now: u64) {
        let Some(c) = &self.deploy.control else { return };
        if c.version() != self.deploy.version {
            self.adopt();
        }
        if now >= self.deploy.next_check {
            self.deploy.next_check = now + ENDED_CHECK_NS;
            self.check_ended();
        }
    }

    #[cold]
    fn adopt(&mut self) {
        let c = self.deploy.control.clone().expect("served");
        let published = c.current();
        let (nf0, ns0) = (self.plan.functions.len(), self.plan.sources.len());
        self.plan = published.plan;
        self.placement = published.placement;
        let plan = self.plan.clone();
        let (na, nf) = (plan.apps.len(), plan.functions.len());
        self.hosting.grow(&plan);
        self.tele.grow(&plan);
        self.sched.grow(&plan, FORWARD_PRIOR_NS);
        self.out.grow(na, nf);
        self.deploy.ended.resize(na, false);
        self.snap.grow(nf);
        self.mig.grow(nf);
        self.rb.grow(nf);
        for f in nf0..nf {
            let fp = &plan.functions[f];
            let b = build_instance(&plan, f, self.id);
            if b.inst.is_some() {
                self.slots.live += 1;
                let (counted, held) = super::migrate::initial_groups(&plan, &self.placement, f, self.id);
                self.hosting.counted[f] = counted;
                if let Some(held) = held {
                    let movable =
                        b.op.as_ref().map_or_else(|| b.actor.as_ref().is_some_and(|a| a.migrates()), |o| o.migrates());
                    self.mig.init(f, held, movable);
                    self.rb.track(f, self.placement.groups());
                }
                self.host(fp.app as usize, counted as i32);
            }
            self.slots.ops.push(b.op);
            self.slots.actors.push(b.actor);
            self.slots.insts.push(b.inst);
        }
        self.refresh_chainable();
        let signal = self.signals[self.id as usize].clone();
        self.src.runs.extend(super::sources::instantiate_from(&plan, self.id, &signal, ns0));
        self.deploy.version = published.version;
        self.deploy.replanned = true;
        c.ack(Ack::Adopted { shard: self.id, version: published.version });
    }

    /// Ack every running or stopping app of which nothing is left here, once, and release its
    /// instances. An app still pending (its sources wait) is not looked at.
    #[cold]
    fn check_ended(&mut self) {
        let c = self.deploy.control.clone().expect("served");
        for app in 0..self.deploy.ended.len() {
            if self.deploy.ended[app] || c.state(app) < RUNNING || self.hosting.apps[app] > 0 || self.app_live_here(app)
            {
                continue;
            }
            let sources_done = self.src.runs.iter().all(|s| s.done || self.app_of(s) != app);
            if !sources_done || self.tele.app_queued[app] > 0 || self.out.staged_of(app) > 0 {
                continue;
            }
            self.deploy.ended[app] = true;
            let name = self.plan.apps[app].name.clone();
            let _span = tracing::info_span!("app_ended", app = %name, shard = self.id).entered();
            // The app's last figures travel before the ack (same thread; the controller drains
            // the reports after it has every ack).
            self.report(false);
            self.release_app(app);
            c.ack(Ack::Ended { shard: self.id, app: app as u16 });
        }
    }

    /// Whether an instance of `app` here has not ended (one hosting no key group counts nothing
    /// in `hosting`, and still receives the app's watermarks and ends).
    fn app_live_here(&self, app: usize) -> bool {
        (0..self.slots.insts.len()).any(|f| {
            self.sched.cost.fn_app[f] as usize == app
                && (self.slots.insts[f].as_ref().is_some_and(|i| i.open() > 0)
                    || self.slots.actors[f].as_ref().is_some_and(|a| !a.is_done()))
        })
    }

    /// Drop the ended instances of `app` on this shard (sinks flush first).
    fn release_app(&mut self, app: usize) {
        for f in 0..self.slots.ops.len() {
            if self.sched.cost.fn_app[f] as usize != app {
                continue;
            }
            if let Some(mut op) = self.slots.ops[f].take() {
                op.flush();
            }
            if self.slots.actors[f].as_ref().is_some_and(|a| a.is_done()) {
                self.slots.actors[f] = None;
            }
            if self.slots.actors[f].is_none() {
                self.slots.insts[f] = None;
            }
        }
        self.refresh_chainable();
        tracing::debug!("released");
    }
}
