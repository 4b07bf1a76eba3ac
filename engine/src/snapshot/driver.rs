//! The controller's side of snapshots: when to take one, gathering the shards' parts, writing
//! them off the shards, committing the sinks once a snapshot is durable, and what a run resumes
//! from ([`resume`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::coord::{ShardParts, SnapshotCoord};
use super::Restore;
use super::{Deferred, Fingerprint, Part, SnapshotData, SnapshotError, SnapshotStore, SnapshotWriter};
use crate::placement::PlacementTable;
use crate::plan::Plan;

/// `[snapshots]` as the engine runs it.
#[derive(Clone, Debug)]
pub struct SnapshotSettings {
    pub dir: PathBuf,
    pub every: Duration,
    pub keep: usize,
    /// What the snapshots are of: a snapshot of another config is refused.
    pub fingerprint: Fingerprint,
}

/// The part every snapshot has besides state and positions.
const META: &str = "meta";

/// What a snapshot says of the run it was taken from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// Shards of the node (a run resumes on as many).
    pub shards: usize,
    /// Per keyed function: the shard holding each key group.
    pub placement: Vec<(u16, Vec<u16>)>,
    /// The run had finished: every source had ended and every output was committed with this
    /// snapshot. Nothing is left to resume.
    pub finished: bool,
}

impl Meta {
    fn of(plan: &Plan, placement: &PlacementTable, finished: bool) -> Meta {
        let placement = (0..plan.functions.len() as u16)
            .filter(|&f| placement.is_keyed(f))
            .map(|f| (f, (0..placement.groups()).map(|g| placement.owner(f, g)).collect()))
            .collect();
        Meta { shards: plan.shards, placement, finished }
    }

    fn part(&self) -> Part {
        Part::new(META, serde_json::to_vec(self).expect("meta serialises"))
    }
}

/// Why a run cannot resume from its snapshot directory.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Store(#[from] SnapshotError),
    #[error("snapshot {epoch} in {}: {why}", dir.display())]
    Damaged { epoch: u64, dir: PathBuf, why: String },
    #[error(
        "snapshot {epoch} in {} was taken on {taken} shards; run with `--shards {taken}` (or \
         `[engine] shards = {taken}`) to resume from it, or remove the directory to start over",
        dir.display()
    )]
    Shards { epoch: u64, dir: PathBuf, taken: usize },
    #[error("file sink: {0}")]
    Sink(#[from] crate::sink_commit::CommitError),
    #[error(transparent)]
    RedisSink(#[from] crate::redis_sink::RedisSinkError),
    #[error(
        "the run in {} finished (snapshot {epoch}): its output is complete and committed. \
         Remove the directory to run again",
        dir.display()
    )]
    Finished { epoch: u64, dir: PathBuf },
}

/// What `run` resumes from: the newest complete snapshot in `settings.dir` (None: start fresh).
/// Restores the placement table, and brings every file sink back to the snapshot (a fresh run
/// starts each file over).
pub fn resume(
    settings: &SnapshotSettings,
    plan: &Plan,
    placement: &PlacementTable,
    local: std::ops::Range<usize>,
) -> Result<Option<Arc<Restore>>, ResumeError> {
    let store = SnapshotStore::new(&settings.dir, settings.keep, settings.fingerprint.clone());
    let newest = store.complete()?.last().copied();
    resume_at(settings, plan, placement, local, newest)
}

/// A cluster node's snapshots: the complete ones (each node says them when it joins; the
/// cluster resumes from the newest they all have), and whether this node knows that every node
/// of its cluster committed its newest and that one says the run finished (then no node needs
/// it any more).
pub fn node_snapshots(settings: &SnapshotSettings) -> Result<(Vec<u64>, Option<u64>), ResumeError> {
    let store = SnapshotStore::new(&settings.dir, settings.keep, settings.fingerprint.clone());
    let complete = store.complete()?;
    let finished = match (complete.last(), read_marker(&settings.dir)) {
        (Some(&newest), Some((done, true))) if done == newest => {
            let loaded = store.load(newest)?;
            let meta: Option<Meta> = loaded.parts.get(META).and_then(|m| serde_json::from_slice(m).ok());
            meta.filter(|m| m.finished).map(|_| newest)
        }
        _ => None,
    };
    Ok((complete, finished))
}

/// The newest epoch every node has complete: `values` are each node's complete snapshots.
pub fn agreed(values: &[Vec<u64>]) -> Option<u64> {
    let first = values.first()?;
    first.iter().rev().copied().find(|e| values.iter().all(|v| v.contains(e)))
}

/// Where a cluster node records the last snapshot its cluster committed (`<epoch>`: the leader
/// commits only what every node has), and for the run's last one, that every node committed it
/// (`<epoch> all`: the leader heard so from each).
const MARKER: &str = "COMMITTED";

fn read_marker(dir: &std::path::Path) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(dir.join(MARKER)).ok()?;
    let mut words = text.split_whitespace();
    let epoch = words.next()?.parse().ok()?;
    Some((epoch, words.next() == Some("all")))
}

fn write_marker(dir: &std::path::Path, epoch: u64, all: bool) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{MARKER}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{epoch}{}", if all { " all" } else { "" })?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(MARKER))?;
    std::fs::File::open(dir)?.sync_all()
}

/// [`resume`] from snapshot `epoch` (None: start fresh), removing every snapshot after it
/// first: a cluster resumes from the newest snapshot all its nodes have, and what a node took
/// after it was never committed.
pub fn resume_at(
    settings: &SnapshotSettings,
    plan: &Plan,
    placement: &PlacementTable,
    local: std::ops::Range<usize>,
    epoch: Option<u64>,
) -> Result<Option<Arc<Restore>>, ResumeError> {
    let store = SnapshotStore::new(&settings.dir, settings.keep, settings.fingerprint.clone());
    let removed = store.remove_after(epoch.unwrap_or(0))?;
    if removed > 0 {
        tracing::info!(removed, "removed snapshots the cluster never committed");
    }
    let Some(epoch) = epoch else {
        for (path, first) in &plan.files {
            crate::sink_commit::start(path, first)?;
        }
        for (url, stream) in &plan.redis_sinks {
            crate::redis_sink::recover_staged(url, stream, &instances(local.clone()), 0)?;
        }
        return Ok(None);
    };
    let loaded = store.load(epoch)?;
    let (epoch, dir) = (loaded.epoch, loaded.dir.clone());
    let damaged = |why: String| ResumeError::Damaged { epoch, dir: dir.clone(), why };
    let meta: Meta = loaded
        .parts
        .get(META)
        .ok_or_else(|| damaged("it has no `meta` part".into()))
        .and_then(|m| serde_json::from_slice(m).map_err(|e| damaged(format!("its `meta` part: {e}"))))?;
    if meta.shards != plan.shards {
        return Err(ResumeError::Shards { epoch, dir, taken: meta.shards });
    }
    for (path, _) in &plan.files {
        crate::sink_commit::recover(path, Some(epoch))?;
    }
    for (url, stream) in &plan.redis_sinks {
        crate::redis_sink::recover_staged(url, stream, &instances(local.clone()), epoch)?;
    }
    if meta.finished {
        return Err(ResumeError::Finished { epoch, dir: settings.dir.clone() });
    }
    for (f, owners) in &meta.placement {
        let ok = (*f as usize) < plan.functions.len()
            && placement.is_keyed(*f)
            && owners.len() == placement.groups() as usize
            && owners.iter().all(|s| plan.functions[*f as usize].shards.contains(s));
        if !ok {
            return Err(damaged(format!("its placement of function {f} does not fit this config")));
        }
        for (g, &s) in owners.iter().enumerate() {
            placement.set_owner(*f, g as u16, s);
        }
    }
    let mut restore = Restore { epoch, ..Restore::default() };
    for (name, bytes) in loaded.parts {
        let mut it = name.split('/');
        let (kind, a, b) = (
            it.next(),
            it.next().and_then(|a| a.parse::<usize>().ok()),
            it.next().and_then(|b| b.parse::<usize>().ok()),
        );
        match (kind, a, b) {
            (Some("state"), Some(f), Some(s)) if f < plan.functions.len() => {
                restore.states.insert((f, s as u16), bytes);
            }
            (Some("source"), Some(i), Some(n)) if i < plan.sources.len() => {
                restore.sources.insert((i, n as u32), bytes);
            }
            (Some(META), None, None) => {}
            _ => return Err(damaged(format!("a part this config has no place for: `{name}`"))),
        }
    }
    tracing::info!(epoch, dir = %dir.display(), "resuming from snapshot");
    Ok(Some(Arc::new(restore)))
}

/// The instances a staged sink may have on this node: one per local shard, numbered by shard.
fn instances(local: std::ops::Range<usize>) -> Vec<u32> {
    local.map(|s| s as u32).collect()
}

/// What the snapshots of a run came to.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SnapshotCounts {
    /// Snapshots written complete (and their output committed).
    pub taken: u64,
    /// Snapshots that failed (a part or the write); the previous one stayed in use.
    pub failed: u64,
    /// The newest complete snapshot.
    pub last: u64,
    /// The snapshot the run resumed from (0: none).
    pub resumed_from: u64,
    /// Time from a snapshot's start to its manifest written, the last one with state (ms).
    pub last_ms: u64,
    /// Bytes of the last snapshot with state.
    pub last_bytes: u64,
    pub last_error: Option<String>,
    /// From the start of the run to every shard up, with the snapshot it resumed from loaded
    /// and restored (ms): the recovery time when `resumed_from > 0`.
    pub start_ms: f64,
    /// Each snapshot taken: epoch, bytes, ms from its start to its manifest (the first 1,000).
    pub history: Vec<(u64, u64, u64)>,
}

enum Phase {
    Idle,
    /// Waiting for every shard to freeze moves and the moves under way to land.
    Freezing {
        epoch: u64,
    },
    /// Barriers injected; gathering the shards' parts.
    Collecting {
        epoch: u64,
        got: Vec<ShardParts>,
    },
    /// Every part is in; waiting for what sinks staged elsewhere to be durable.
    Durable {
        data: SnapshotData,
        waits: Vec<flume::Receiver<Result<(), String>>>,
    },
    /// With the writer thread.
    Writing {
        epoch: u64,
    },
    /// On a cluster: this node's part is settled (`outcome`); waiting for the cluster's
    /// decision (the leader: for every node's part).
    Agreeing {
        epoch: u64,
        outcome: Outcome,
    },
}

/// How this node's part of a snapshot ended.
#[derive(Clone, Debug)]
enum Outcome {
    /// Written and synced (`bytes` of parts).
    Durable(u64),
    /// It could not be taken or written.
    Failed(String),
    /// Dropped: the run was ending.
    Abandoned(&'static str),
}

/// The messages between the drivers of a cluster's nodes (their control tags). Node 0 leads:
/// it starts each snapshot and decides, once every node's part is in, to commit it or not.
mod tag {
    /// Leader: take snapshot `epoch`.
    pub const BEGIN: u32 = 1;
    /// Follower: my part of `epoch` is durable (`[1]`) or not (`[0]`).
    pub const DONE: u32 = 2;
    /// Leader: every node's part of `epoch` is durable: commit its output.
    pub const COMMIT: u32 = 3;
    /// Leader: some node's part of `epoch` is not: drop it.
    pub const ABORT: u32 = 4;
    /// Follower: my shards have all ended; `[1]`: every source ran to its end and no app failed.
    pub const ENDED: u32 = 5;
    /// Leader: every node ended; write the last snapshot, `epoch` (0: the run did not finish
    /// everywhere: no last snapshot).
    pub const FINAL: u32 = 6;
    /// Follower: I committed the last snapshot.
    pub const COMMITTED: u32 = 7;
    /// Leader: every node committed the last snapshot, `epoch`.
    pub const ALL: u32 = 8;
}

/// The leader of a cluster's snapshots.
const LEADER: usize = 0;

/// A node's part in its cluster's snapshots.
struct Cluster {
    controls: dirigo_net::link::Controls,
    /// Messages from the other nodes' drivers, in arrival order, not yet acted on.
    inbox: std::collections::VecDeque<(usize, dirigo_net::link::Control)>,
    /// Leader: each node's word on the snapshot being agreed (`DONE`).
    done: Vec<Option<bool>>,
    /// Leader: each node's `ENDED`.
    ended: Vec<Option<bool>>,
    /// Where the node records the last epoch its cluster committed.
    dir: PathBuf,
}

impl Cluster {
    fn leads(&self) -> bool {
        self.controls.me() == LEADER
    }

    fn send(&self, node: usize, tag: u32, epoch: u64, values: Vec<u64>) {
        self.controls.send(node, dirigo_net::link::Control { tag, epoch, values });
    }

    fn to_followers(&self, tag: u32, epoch: u64) {
        for n in (0..self.controls.nodes()).filter(|&n| n != LEADER) {
            self.send(n, tag, epoch, Vec::new());
        }
    }

    /// Take what came in.
    fn pump(&mut self) {
        while let Some((from, c)) = self.controls.try_recv() {
            self.accept(from, c);
        }
    }

    /// Wait at most `timeout` for a message from another node, and take it in.
    fn await_message(&mut self, timeout: Duration) {
        if let Some((from, c)) = self.controls.recv_timeout(timeout) {
            self.accept(from, c);
        }
    }

    /// The leader keeps the nodes' `ENDED` apart; the rest waits in the inbox.
    fn accept(&mut self, from: usize, c: dirigo_net::link::Control) {
        if c.tag == tag::ENDED {
            self.ended[from] = Some(c.values.first() == Some(&1));
        } else {
            self.inbox.push_back((from, c));
        }
    }

    /// The first message with `tag` for `epoch` (older ones of that tag are dropped).
    fn take(&mut self, want: u32, epoch: u64) -> Option<(usize, dirigo_net::link::Control)> {
        self.inbox.retain(|(_, c)| c.tag != want || c.epoch >= epoch);
        let i = self.inbox.iter().position(|(_, c)| c.tag == want && c.epoch == epoch)?;
        self.inbox.remove(i)
    }

    /// The first message with `tag`, whatever its epoch.
    fn take_any(&mut self, want: u32) -> Option<(usize, dirigo_net::link::Control)> {
        let i = self.inbox.iter().position(|(_, c)| c.tag == want)?;
        self.inbox.remove(i)
    }
}

/// Drives a node's snapshots from its controller loop.
pub struct Driver {
    coord: Arc<SnapshotCoord>,
    parts: flume::Receiver<ShardParts>,
    writer: Option<SnapshotWriter>,
    store: SnapshotStore,
    every: Duration,
    phase: Phase,
    /// The last snapshot started.
    epoch: u64,
    started: Instant,
    next_at: Instant,
    local: std::ops::Range<usize>,
    plan: Arc<Plan>,
    placement: Arc<PlacementTable>,
    /// What the shards sealed as they exited ([`super::FINAL`]).
    seals: Vec<ShardParts>,
    /// On a cluster: the node's part in it.
    cluster: Option<Cluster>,
    pub counts: SnapshotCounts,
}

impl Driver {
    /// A driver for the node's shards `local`, resuming after snapshot `resumed` (0: none).
    pub fn new(
        settings: &SnapshotSettings,
        plan: Arc<Plan>,
        placement: Arc<PlacementTable>,
        local: std::ops::Range<usize>,
        resumed: u64,
    ) -> std::io::Result<(Driver, Arc<SnapshotCoord>)> {
        let (coord, parts) = SnapshotCoord::new(plan.shards, resumed);
        let coord = Arc::new(coord);
        let store = SnapshotStore::new(&settings.dir, settings.keep, settings.fingerprint.clone());
        let writer = SnapshotWriter::spawn(store.clone(), 1)?;
        let now = Instant::now();
        let driver = Driver {
            coord: coord.clone(),
            parts,
            writer: Some(writer),
            store,
            every: settings.every,
            phase: Phase::Idle,
            epoch: resumed,
            started: now,
            next_at: now + settings.every,
            local,
            plan,
            placement,
            seals: Vec::new(),
            cluster: None,
            counts: SnapshotCounts { last: resumed, resumed_from: resumed, ..SnapshotCounts::default() },
        };
        Ok((driver, coord))
    }

    /// Take part in a cluster's snapshots through `controls` (node 0 leads them). The node's
    /// snapshots are in `settings.dir`, where it also records what the cluster committed.
    pub fn join_cluster(&mut self, controls: dirigo_net::link::Controls, settings: &SnapshotSettings) {
        let n = controls.nodes();
        self.cluster = Some(Cluster {
            controls,
            inbox: Default::default(),
            done: vec![None; n],
            ended: vec![None; n],
            dir: settings.dir.clone(),
        });
    }

    /// How long the controller may wait before calling [`Self::step`] again.
    pub fn wait(&self) -> Duration {
        match self.phase {
            // A follower waits for its leader's word.
            Phase::Idle if self.cluster.as_ref().is_some_and(|c| !c.leads()) => Duration::from_millis(2),
            Phase::Idle => self.next_at.saturating_duration_since(Instant::now()),
            // The write of a large snapshot takes seconds: looked at less often.
            Phase::Writing { .. } => Duration::from_millis(10),
            _ => Duration::from_millis(1),
        }
    }

    /// Move the snapshot under way along. `ended`: shards (global ids) that have finished or
    /// were given up (they take no part); `stopping`: the run is ending (no new snapshot).
    /// `ring` wakes every shard.
    pub fn step(&mut self, ended: &[usize], stopping: bool, ring: &dyn Fn()) {
        if let Some(c) = self.cluster.as_mut() {
            c.pump();
        }
        loop {
            let before = std::mem::discriminant(&self.phase);
            self.advance(ended, stopping, ring);
            if std::mem::discriminant(&self.phase) == before {
                return;
            }
        }
    }

    /// Begin snapshot `epoch`: freeze moves.
    fn begin(&mut self, epoch: u64, ring: &dyn Fn()) {
        self.epoch = epoch;
        self.started = Instant::now();
        self.coord.freeze(epoch);
        self.phase = Phase::Freezing { epoch };
        ring();
    }

    fn advance(&mut self, ended: &[usize], stopping: bool, ring: &dyn Fn()) {
        match &mut self.phase {
            Phase::Idle => match self.cluster.as_mut() {
                Some(c) if !c.leads() => {
                    let Some((_, begin)) = c.take_any(tag::BEGIN) else { return };
                    if !ended.is_empty() || stopping {
                        // Not taken here; the leader hears so and drops it everywhere.
                        self.epoch = begin.epoch;
                        self.started = Instant::now();
                        return self.conclude(begin.epoch, Outcome::Abandoned("the run is ending"));
                    }
                    self.begin(begin.epoch, ring);
                }
                leader => {
                    if stopping || Instant::now() < self.next_at || !ended.is_empty() {
                        return;
                    }
                    let epoch = self.epoch + 1;
                    if let Some(c) = leader {
                        c.done.iter_mut().for_each(|d| *d = None);
                        c.to_followers(tag::BEGIN, epoch);
                    }
                    self.begin(epoch, ring);
                }
            },
            Phase::Freezing { epoch } => {
                let epoch = *epoch;
                if !ended.is_empty() || stopping {
                    return self.conclude(epoch, Outcome::Abandoned("the run is ending"));
                }
                if self.coord.still(self.local.clone(), epoch, ended) {
                    self.coord.inject(epoch);
                    self.phase = Phase::Collecting { epoch, got: Vec::new() };
                    ring();
                }
            }
            Phase::Collecting { epoch, got } => {
                let epoch = *epoch;
                while let Ok(p) = self.parts.try_recv() {
                    if p.epoch == epoch {
                        got.push(p);
                    } else if p.epoch == super::FINAL {
                        self.seals.push(p);
                    }
                }
                if got.len() < self.local.len() {
                    if !ended.is_empty() {
                        self.conclude(epoch, Outcome::Abandoned("a shard finished while it was taken"));
                    }
                    return;
                }
                let got = std::mem::take(got);
                if got.iter().any(|p| p.stopping) {
                    return self.conclude(epoch, Outcome::Abandoned("the run was stopping while it was taken"));
                }
                self.coord.thaw();
                let errors: Vec<String> = got.iter().flat_map(|p| p.errors.iter().cloned()).collect();
                if !errors.is_empty() {
                    return self.conclude(epoch, Outcome::Failed(errors.join("; ")));
                }
                let meta = Meta::of(&self.plan, &self.placement, false);
                let mut parts = vec![meta.part()];
                let mut waits = Vec::new();
                let mut deferred = Vec::new();
                for p in got {
                    parts.extend(p.parts);
                    // Copied on the shards, archived by the writer thread as it writes them.
                    deferred
                        .extend(p.copies.into_iter().map(|(name, copy)| Deferred::new(name, move || copy.to_bytes())));
                    waits.extend(p.durable);
                }
                self.phase = Phase::Durable { data: SnapshotData { epoch, parts, deferred }, waits };
            }
            Phase::Durable { data, waits } => {
                let epoch = data.epoch;
                let mut failure = None;
                waits.retain(|w| match w.try_recv() {
                    Ok(Ok(())) => false,
                    Ok(Err(e)) => {
                        failure = Some(e);
                        false
                    }
                    Err(flume::TryRecvError::Empty) => true,
                    Err(flume::TryRecvError::Disconnected) => {
                        failure = Some("a staged sink stopped before its output was durable".into());
                        false
                    }
                });
                if let Some(e) = failure {
                    return self.conclude(epoch, Outcome::Failed(e));
                }
                if !waits.is_empty() {
                    return;
                }
                // A file sink's parts of this epoch are on disk before the manifest says so.
                for (path, _) in &self.plan.files {
                    if let Err(e) = crate::sink_commit::sync_parts(path, epoch) {
                        return self.conclude(epoch, Outcome::Failed(e.to_string()));
                    }
                }
                let Phase::Durable { data, .. } = std::mem::replace(&mut self.phase, Phase::Writing { epoch }) else {
                    unreachable!()
                };
                if let Err(e) = self.writer.as_ref().expect("writer").submit(data) {
                    self.conclude(epoch, Outcome::Failed(e.to_string()));
                }
            }
            Phase::Writing { epoch } => {
                let epoch = *epoch;
                let Ok(done) = self.writer.as_ref().expect("writer").completions().try_recv() else { return };
                match done {
                    Ok(info) => self.conclude(epoch, Outcome::Durable(info.bytes)),
                    Err((_, e)) => self.conclude(epoch, Outcome::Failed(e.to_string())),
                }
            }
            Phase::Agreeing { epoch, outcome } => {
                let (epoch, outcome) = (*epoch, outcome.clone());
                let c = self.cluster.as_mut().expect("agreeing on a cluster");
                let commit = if c.leads() {
                    while let Some((from, done)) = c.take(tag::DONE, epoch) {
                        c.done[from] = Some(done.values.first() == Some(&1));
                    }
                    c.done[LEADER] = Some(matches!(outcome, Outcome::Durable(_)));
                    if c.done.iter().any(Option::is_none) {
                        return;
                    }
                    let all = c.done.iter().all(|d| *d == Some(true));
                    c.to_followers(if all { tag::COMMIT } else { tag::ABORT }, epoch);
                    all
                } else {
                    if let Some(_commit) = c.take(tag::COMMIT, epoch) {
                        true
                    } else if c.take(tag::ABORT, epoch).is_some() {
                        false
                    } else {
                        return;
                    }
                };
                self.decided(epoch, outcome, commit);
            }
        }
    }

    /// This node's part of snapshot `epoch` ended with `outcome`. On one node that decides it;
    /// on a cluster the node tells its leader (the leader counts its own) and waits for the
    /// decision.
    fn conclude(&mut self, epoch: u64, outcome: Outcome) {
        if matches!(outcome, Outcome::Abandoned(_)) {
            self.coord.thaw();
        }
        match &self.cluster {
            None => self.decided(epoch, outcome, true),
            Some(c) => {
                if !c.leads() {
                    let ok = u64::from(matches!(outcome, Outcome::Durable(_)));
                    c.send(LEADER, tag::DONE, epoch, vec![ok]);
                }
                self.phase = Phase::Agreeing { epoch, outcome };
            }
        }
    }

    /// The snapshot's fate: `commit` (every node's part is durable) or not.
    fn decided(&mut self, epoch: u64, outcome: Outcome, commit: bool) {
        match (outcome, commit) {
            (Outcome::Durable(bytes), true) => self.committed(epoch, bytes),
            (Outcome::Durable(_), false) => {
                // Another node's part is missing: this one must not be resumed from.
                if let Err(e) = self.store.remove_after(epoch - 1) {
                    tracing::warn!(epoch, "{e}");
                }
                tracing::debug!(epoch, "snapshot dropped: another node did not take its part");
                self.idle();
            }
            (Outcome::Failed(why), _) => self.failed(epoch, why),
            (Outcome::Abandoned(why), _) => {
                tracing::debug!(epoch, "snapshot abandoned: {why}");
                self.idle();
            }
        }
    }

    /// Snapshot `epoch` is durable (on a cluster: on every node): commit the output of its
    /// epoch and before.
    fn committed(&mut self, epoch: u64, bytes: u64) {
        if let Some(c) = &self.cluster {
            if let Err(e) = write_marker(&c.dir, epoch, false) {
                tracing::warn!(epoch, "cannot record the commit in {}: {e}", c.dir.display());
            }
        }
        // The snapshot stands whatever happens here: a commit cut short is finished by the next
        // one, or by recovery.
        for (path, _) in &self.plan.files {
            if let Err(e) = crate::sink_commit::commit(path, epoch) {
                tracing::error!(epoch, "{e}");
            }
        }
        for (url, stream) in &self.plan.redis_sinks {
            if let Err(e) = crate::redis_sink::commit_staged(url, stream, &instances(self.local.clone()), epoch) {
                tracing::error!(epoch, "{e}");
            }
        }
        self.counts.taken += 1;
        self.counts.last = epoch;
        let ms = self.started.elapsed().as_millis() as u64;
        // The last snapshot of state (the one that says a run finished holds none).
        if bytes > 0 {
            (self.counts.last_ms, self.counts.last_bytes) = (ms, bytes);
        }
        if self.counts.history.len() < 1_000 {
            self.counts.history.push((epoch, bytes, ms));
        }
        tracing::debug!(epoch, ms = self.counts.last_ms, "snapshot complete");
        self.idle();
    }

    fn failed(&mut self, epoch: u64, why: String) {
        tracing::error!(epoch, "snapshot not taken, the previous one stays in use: {why}");
        self.counts.failed += 1;
        self.counts.last_error = Some(why);
        self.idle();
    }

    fn idle(&mut self) {
        self.phase = Phase::Idle;
        self.next_at = self.started + self.every;
    }

    /// The run ended. If every source ran to its end (`finished`), write a last snapshot that
    /// says so and commit all the output; otherwise (stopped) leave the last snapshot to resume
    /// from (output after it is not committed: the resumed run produces it again).
    pub fn finish(mut self, finished: bool) -> SnapshotCounts {
        // A snapshot with the writer lands (or fails) first.
        if let Some(w) = self.writer.take() {
            let epoch = match self.phase {
                Phase::Writing { epoch } => Some(epoch),
                _ => None,
            };
            let _ = w.finish();
            if let Some(epoch) = epoch {
                match self.store.complete() {
                    Ok(done) if done.contains(&epoch) => self.committed(epoch, 0),
                    _ => self.failed(epoch, "not written before the run ended".into()),
                }
            }
        }
        if !finished {
            return self.counts;
        }
        let epoch = self.epoch + 1;
        match self.write_last(epoch) {
            Ok(()) => {
                self.epoch = epoch;
                self.started = Instant::now();
                self.committed(epoch, 0);
            }
            Err(e) => self.failed(epoch, e),
        }
        self.counts
    }

    /// Write the snapshot `epoch` that says the run finished, once what the sinks produced
    /// after their last barrier (sealed as the shards exited) is durable.
    fn write_last(&mut self, epoch: u64) -> Result<(), String> {
        let mut seals = std::mem::take(&mut self.seals);
        seals.extend(self.parts.try_iter().filter(|p| p.epoch == super::FINAL));
        for seal in seals {
            if let Some(e) = seal.errors.first() {
                return Err(e.clone());
            }
            for ack in seal.durable {
                match ack.recv_timeout(Duration::from_secs(60)) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(format!("a sink's last output was not staged: {e}")),
                }
            }
        }
        for (path, _) in &self.plan.files {
            crate::sink_commit::sync_parts(path, epoch).map_err(|e| e.to_string())?;
        }
        let meta = Meta::of(&self.plan, &self.placement, true);
        self.store
            .write(SnapshotData { epoch, parts: vec![meta.part()], deferred: Vec::new() })
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// [`Self::finish`] on a cluster, once this node's shards have all ended: the snapshot
    /// under way is settled with the other nodes; the node tells its leader it ended; once every
    /// node has, the leader has them all write a last snapshot if the run finished everywhere,
    /// and commit it once all have it. Fails when the cluster lost a node meanwhile.
    pub fn finish_cluster(
        mut self,
        finished: bool,
        ring: &dyn Fn(),
    ) -> Result<SnapshotCounts, dirigo_net::link::LinkError> {
        let all: Vec<usize> = self.local.clone().collect();
        // The snapshot under way: settled (abandoned, most likely) with the others.
        self.wait_for(&all, ring, |d| matches!(d.phase, Phase::Idle))?;
        let c = self.cluster.as_mut().expect("a cluster");
        let last = if c.leads() {
            c.ended[LEADER] = Some(finished);
            self.wait_for(&all, ring, |d| d.cluster.as_ref().is_some_and(|c| c.ended.iter().all(Option::is_some)))?;
            let c = self.cluster.as_mut().expect("a cluster");
            let everywhere = c.ended.iter().all(|e| *e == Some(true));
            let last = if everywhere { self.epoch + 1 } else { 0 };
            c.to_followers(tag::FINAL, last);
            last
        } else {
            c.send(LEADER, tag::ENDED, 0, vec![u64::from(finished)]);
            let mut last = None;
            self.wait_for(&all, ring, |d| {
                let c = d.cluster.as_mut().expect("a cluster");
                last = c.take_any(tag::FINAL).map(|(_, f)| f.epoch);
                last.is_some()
            })?;
            last.expect("waited for")
        };
        if last == 0 {
            self.finish_writer();
            return Ok(self.counts);
        }
        self.epoch = last;
        self.started = Instant::now();
        if let Some(c) = self.cluster.as_mut() {
            c.done.iter_mut().for_each(|d| *d = None);
        }
        let outcome = match self.write_last(last) {
            Ok(()) => Outcome::Durable(0),
            Err(e) => Outcome::Failed(e),
        };
        self.conclude(last, outcome);
        self.wait_for(&all, ring, |d| matches!(d.phase, Phase::Idle))?;
        // Every node committed the last snapshot, and knows that all did, before any leaves: a
        // node that restarts after the run finished knows so from its own marker and needs no
        // peer, while one that committed but did not hear that all did joins its peers again
        // (one of them may still have the last snapshot to commit).
        let committed = self.counts.last == last;
        let c = self.cluster.as_mut().expect("a cluster");
        if c.leads() && committed {
            c.done.iter_mut().for_each(|d| *d = None);
            c.done[LEADER] = Some(true);
            self.wait_for(&all, ring, |d| {
                let c = d.cluster.as_mut().expect("a cluster");
                while let Some((from, _)) = c.take(tag::COMMITTED, last) {
                    c.done[from] = Some(true);
                }
                c.done.iter().all(Option::is_some)
            })?;
            let c = self.cluster.as_mut().expect("a cluster");
            c.to_followers(tag::ALL, last);
            self.all_committed(last);
        } else if !c.leads() && committed {
            c.send(LEADER, tag::COMMITTED, last, Vec::new());
            self.wait_for(&all, ring, |d| d.cluster.as_mut().expect("a cluster").take(tag::ALL, last).is_some())?;
            self.all_committed(last);
        }
        self.finish_writer();
        Ok(self.counts)
    }

    /// Every node committed the run's last snapshot `epoch`.
    fn all_committed(&self, epoch: u64) {
        let dir = &self.cluster.as_ref().expect("a cluster").dir;
        if let Err(e) = write_marker(dir, epoch, true) {
            tracing::warn!(epoch, "cannot record the commit in {}: {e}", dir.display());
        }
    }

    /// Step until `done` says so, or the cluster lost a node. Between steps it waits for the
    /// next message from another node, or for as long as [`Self::wait`] says (this node's own
    /// progress: the writer), whichever comes first.
    fn wait_for(
        &mut self,
        ended: &[usize],
        ring: &dyn Fn(),
        mut done: impl FnMut(&mut Driver) -> bool,
    ) -> Result<(), dirigo_net::link::LinkError> {
        loop {
            self.step(ended, true, ring);
            if done(self) {
                return Ok(());
            }
            let c = self.cluster.as_ref().expect("a cluster");
            if let Some(e) = c.controls.failure() {
                return Err(e);
            }
            let wait = self.wait().clamp(Duration::from_millis(1), Duration::from_millis(10));
            self.cluster.as_mut().expect("a cluster").await_message(wait);
        }
    }

    fn finish_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.finish();
        }
    }
}
