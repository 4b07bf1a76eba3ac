//! The control plane of a served engine (`dirigo serve`): how the controller publishes a new
//! plan to running shards and starts or stops one app's sources, and how shards answer.
//!
//! A deploy appends an app to the plan (ids of apps, sources and functions never change, so
//! every per-id array only grows). The controller publishes the new `Arc<Plan>` (with its
//! placement table) under a version number and rings every doorbell; each shard notices the
//! version at the start of its next turn (one relaxed load), builds its instances of the new
//! functions and sources, and acks. Only when every shard has acked does the controller mark
//! the app running, so no shard ever receives a message for a function it has not built. An
//! undeploy marks the app stopping: its sources end (sending `End` downstream as at shutdown),
//! its pipeline drains to its sinks, and each shard acks once nothing of the app is left on it,
//! then drops its instances.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use dirigo_actors::ids::ShardId;

use crate::placement::PlacementTable;
use crate::plan::Plan;

/// An app's sources wait: not every shard has built its instances yet.
pub const PENDING: u8 = 0;
/// An app runs.
pub const RUNNING: u8 = 1;
/// An app is being undeployed: its sources end and its pipeline drains.
pub const STOPPING: u8 = 2;

/// What a shard tells the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// The shard runs plan version `version` (it built its instances of every app in it).
    Adopted { shard: ShardId, version: u64 },
    /// Nothing of `app` is left on the shard (its sources here ended, its instances here
    /// ended and were released); its last figures were reported before this.
    Ended { shard: ShardId, app: u16 },
}

/// Shared by the controller and the shards of a served engine.
#[derive(Debug)]
pub struct ControlPlane {
    version: AtomicU64,
    current: Mutex<Published>,
    /// Per app id (sized for `[engine] max_apps`): PENDING, RUNNING or STOPPING.
    state: Box<[AtomicU8]>,
    acks: flume::Sender<Ack>,
}

/// A published plan version.
#[derive(Clone)]
pub struct Published {
    pub version: u64,
    pub plan: Arc<Plan>,
    pub placement: Arc<PlacementTable>,
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published").field("version", &self.version).field("apps", &self.plan.apps.len()).finish()
    }
}

impl ControlPlane {
    /// A control plane for up to `max_apps` apps, starting at `plan` (version 0, whose apps run
    /// at once), and the receiver of the shards' acks.
    pub fn new(plan: Arc<Plan>, placement: Arc<PlacementTable>, max_apps: usize) -> (Arc<Self>, flume::Receiver<Ack>) {
        let (tx, rx) = flume::unbounded();
        let state: Box<[AtomicU8]> =
            (0..max_apps).map(|a| AtomicU8::new(if a < plan.apps.len() { RUNNING } else { PENDING })).collect();
        let current = Mutex::new(Published { version: 0, plan, placement });
        (Arc::new(ControlPlane { version: AtomicU64::new(0), current, state, acks: tx }), rx)
    }

    /// Apps it has slots for.
    pub fn max_apps(&self) -> usize {
        self.state.len()
    }

    /// The latest published version.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The latest published plan.
    pub fn current(&self) -> Published {
        self.current.lock().expect("control plane").clone()
    }

    /// Controller: publish `plan` as the next version; returns it. Ring the shards after.
    pub fn publish(&self, plan: Arc<Plan>, placement: Arc<PlacementTable>) -> u64 {
        let mut cur = self.current.lock().expect("control plane");
        let version = cur.version + 1;
        *cur = Published { version, plan, placement };
        self.version.store(version, Ordering::Release);
        version
    }

    /// App `app`'s state (PENDING, RUNNING or STOPPING).
    #[inline]
    pub fn state(&self, app: usize) -> u8 {
        self.state[app].load(Ordering::Acquire)
    }

    /// Controller: set app `app`'s state. Ring the shards after.
    pub fn set_state(&self, app: usize, state: u8) {
        self.state[app].store(state, Ordering::Release);
    }

    /// Shard: tell the controller.
    pub fn ack(&self, ack: Ack) {
        let _ = self.acks.send(ack);
    }
}
