//! Shards given up. A user function that never returns holds its shard's thread for good (Rust
//! cannot interrupt it). Past `[engine] stall_stop` the controller fails that function's app and
//! every app with work on the shard, and gives the shard up (`ShardSignal::abandon`). Each other
//! shard then lets it go here:
//! - nothing more is sent to it (what is staged for it is dropped) and it is not waited for to
//!   exit;
//! - the apps that failed with it are torn down: their instances, lessee slots, moves and
//!   queued messages here are dropped, and so is every message of theirs that arrives later;
//! - every other app's instances stop waiting for it: each of their input channels from it ends
//!   here (an app that kept nothing on the shard loses nothing: its instance there only passed
//!   on watermarks and its end);
//! - an app still running that had something with it (key groups or a source there, a lessee
//!   there, its lessor there, a key group moving while it went) fails too, by name: its result
//!   could not be whole.
//!
//! The stuck shard itself, should its function ever return, stops at once without a word.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dirigo_actors::envelope::{Header, MessageKind};
use dirigo_actors::ids::{FunctionId, ShardId};
use dirigo_net::mailbox::Entry;

use super::dual_mode::NO_PAYLOAD;
use super::Shard;
use crate::metrics::FailureCause;
use crate::policy::Policy;

impl<P: Policy> Shard<P> {
    /// Once per tick: let go of the shards given up since, and tear down the apps failed since
    /// (once a shard is gone, a failed app is not drained: its ends may never come).
    pub(super) fn check_gone(&mut self) {
        for x in self.local.clone() {
            if x != self.id && !self.faults.gone[x as usize] && self.signals[x as usize].is_gone() {
                self.let_go(x);
            }
        }
        if self.faults.any_gone {
            self.tear_down_failed();
        }
    }

    /// This shard was given up: it stops (its function returned after all).
    pub(super) fn given_up(&self) -> bool {
        self.signals[self.id as usize].is_gone()
    }

    #[cold]
    fn let_go(&mut self, x: ShardId) {
        tracing::warn!(
            shard = self.id,
            given_up = x,
            "a shard was given up: nothing more goes to it or is awaited from it"
        );
        self.faults.gone[x as usize] = true;
        self.faults.any_gone = true;
        self.out.abandon(x as usize);
        for f in 0..self.slots.insts.len() {
            let app = self.sched.cost.fn_app[f] as usize;
            // Only what still runs here can lose anything (an ended instance took every input,
            // though an ended lessor may still wait for its lessees' last partials).
            let running = self.slots.insts[f].as_ref().is_some_and(|i| i.open() > 0);
            let lends_there = self.slots.actors[f].as_ref().is_some_and(|a| a.lends_to(x));
            if self.app_failed(app) || !running && !lends_there {
                continue;
            }
            let leases_from_there = self.slots.lessees.iter().flatten().any(|l| l.function() == f && l.lessor() == x);
            let groups_there = self.placement.is_keyed(f as FunctionId) && self.placement.hosts(f as FunctionId, x);
            let source_there = self
                .plan
                .sources
                .iter()
                .any(|s| s.app as usize == app && s.shards.contains(&x) && !s.outputs.is_empty());
            let what = if groups_there {
                Some("key groups of it were there")
            } else if source_there {
                Some("a source of it ran there")
            } else if lends_there {
                Some("its actor had a lessee on it")
            } else if leases_from_there {
                Some("its actor's lessor was on it")
            } else if self.mig.moving(f) {
                Some("a key group of it was moving when it went")
            } else {
                None
            };
            if let Some(what) = what {
                self.fail_app(f, FailureCause::ShardGivenUp, format!("shard {x}: {what}"));
            }
        }
        self.tear_down_failed();
        for f in 0..self.slots.insts.len() {
            let app = self.sched.cost.fn_app[f];
            let Some(inst) = self.slots.insts[f].as_ref() else { continue };
            for port in inst.open_from(x) {
                let h = Header {
                    kind: MessageKind::End,
                    event_time: u64::MAX,
                    port,
                    from_shard: x,
                    ..Header::data(app, f as FunctionId, 0)
                };
                if self.slots.actors[f].is_some() {
                    self.actor_arrival(Entry { header: h, off: 0, len: 0 }, NO_PAYLOAD);
                } else {
                    self.apply_end(&h);
                }
            }
        }
    }

    /// Whether an end from `h.from_shard` is one already taken for it: the shard was given up
    /// and its channel ended here (the real end may still come, from what it sent before).
    pub(super) fn end_already_taken(&self, h: &Header) -> bool {
        self.faults.gone.get(h.from_shard as usize).copied().unwrap_or(false)
            && self.slots.insts[h.function as usize].as_ref().is_some_and(|i| !i.is_open(h.port, h.from_shard))
    }

    /// Whether messages of function `f` are dropped here (its app was torn down).
    #[inline]
    pub(super) fn torn_down(&self, f: usize) -> bool {
        self.faults.torn_down(&self.sched.cost.fn_app, f)
    }

    fn tear_down_failed(&mut self) {
        let apps = self.plan.apps.len();
        if self.faults.torn.len() < apps {
            self.faults.torn.resize(apps, false);
        }
        for app in 0..apps {
            if !self.faults.torn[app] && self.app_failed(app) {
                self.tear_down(app);
            }
        }
    }

    /// Drop everything of failed app `app` here. Batches its dropped machines still held are
    /// not given back (their memory goes; the rings do not depend on it).
    #[cold]
    fn tear_down(&mut self, app: usize) {
        tracing::debug!(shard = self.id, app, "a failed app is torn down");
        self.faults.torn[app] = true;
        for i in 0..self.src.runs.len() {
            if self.app_of(&self.src.runs[i]) == app {
                self.src.runs[i].done = true;
            }
        }
        for f in 0..self.slots.insts.len() {
            if self.sched.cost.fn_app[f] as usize != app {
                continue;
            }
            let live = match (&self.slots.actors[f], &self.slots.insts[f]) {
                (Some(a), _) => !a.has_ended(),
                (None, Some(i)) => i.open() > 0 || self.mig.has_deferred_end(f),
                (None, None) => false,
            };
            if live {
                self.slots.live -= 1;
            }
            for slot in self.mig.forget(f) {
                self.release(slot);
            }
            if let Some(mut op) = self.slots.ops[f].take() {
                op.flush();
            }
            self.slots.actors[f] = None;
            self.slots.insts[f] = None;
            self.hosting.counted[f] = 0;
        }
        for i in 0..self.slots.lessees.len() {
            let f = match &self.slots.lessees[i] {
                Some(l) if self.sched.cost.fn_app[l.function()] as usize == app => l.function(),
                _ => continue,
            };
            self.slots.lessees[i] = None;
            self.tele.lessees_here[f] -= 1;
        }
        let hosted = self.hosting.apps[app] as i32;
        self.host(app, -hosted);
        self.refresh_chainable();
    }
}

/// Failures seen by this shard: apps whose user code failed (on any shard of the node), shards
/// given up, and apps torn down here.
pub(super) struct Faults {
    /// Per app: it failed (see [`super::ShardInit::failed_apps`]).
    pub failed_apps: Arc<Vec<AtomicBool>>,
    /// Per shard (global id): it was given up; and whether any was.
    pub gone: Vec<bool>,
    pub any_gone: bool,
    /// Per app: torn down here (it failed once a shard was given up).
    pub torn: Vec<bool>,
}

impl Faults {
    pub fn new(failed_apps: Arc<Vec<AtomicBool>>, shards: usize, apps: usize) -> Self {
        Faults { failed_apps, gone: vec![false; shards], any_gone: false, torn: vec![false; apps] }
    }

    /// Whether app `app` failed (its user code panicked): its sources stop and its messages
    /// are dropped unapplied, while its watermarks and ends still flow so every shard finishes.
    #[inline]
    pub fn app_failed(&self, app: usize) -> bool {
        self.failed_apps[app].load(Ordering::Relaxed)
    }

    /// Whether messages of function `f` (of app `fn_app[f]`) are dropped here: its app was
    /// torn down.
    #[inline]
    pub fn torn_down(&self, fn_app: &[u16], f: usize) -> bool {
        self.any_gone && fn_app.get(f).is_some_and(|&a| self.torn.get(a as usize).copied().unwrap_or(false))
    }
}
