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
) -> Result<Option<Arc<Restore>>, ResumeError> {
    let store = SnapshotStore::new(&settings.dir, settings.keep, settings.fingerprint.clone());
    let Some(loaded) = store.latest()? else {
        for (path, first) in &plan.files {
            crate::sink_commit::start(path, first)?;
        }
        for (url, stream) in &plan.redis_sinks {
            crate::redis_sink::recover_staged(url, stream, &instances(plan), 0)?;
        }
        return Ok(None);
    };
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
        crate::redis_sink::recover_staged(url, stream, &instances(plan), epoch)?;
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

/// The instances a staged sink may have: one per shard, numbered by shard.
fn instances(plan: &Plan) -> Vec<u32> {
    (0..plan.shards as u32).collect()
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
            counts: SnapshotCounts { last: resumed, resumed_from: resumed, ..SnapshotCounts::default() },
        };
        Ok((driver, coord))
    }

    /// How long the controller may wait before calling [`Self::step`] again.
    pub fn wait(&self) -> Duration {
        match self.phase {
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
        loop {
            let before = std::mem::discriminant(&self.phase);
            self.advance(ended, stopping, ring);
            if std::mem::discriminant(&self.phase) == before {
                return;
            }
        }
    }

    fn advance(&mut self, ended: &[usize], stopping: bool, ring: &dyn Fn()) {
        match &mut self.phase {
            Phase::Idle => {
                if stopping || Instant::now() < self.next_at || !ended.is_empty() {
                    return;
                }
                self.epoch += 1;
                self.started = Instant::now();
                self.coord.freeze(self.epoch);
                self.phase = Phase::Freezing { epoch: self.epoch };
                ring();
            }
            Phase::Freezing { epoch } => {
                let epoch = *epoch;
                if !ended.is_empty() || stopping {
                    return self.abandon(epoch, "the run is ending");
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
                        self.abandon(epoch, "a shard finished while it was taken");
                    }
                    return;
                }
                let got = std::mem::take(got);
                if got.iter().any(|p| p.stopping) {
                    return self.abandon(epoch, "the run was stopping while it was taken");
                }
                self.coord.thaw();
                let errors: Vec<String> = got.iter().flat_map(|p| p.errors.iter().cloned()).collect();
                if !errors.is_empty() {
                    return self.failed(epoch, errors.join("; "));
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
                    return self.failed(epoch, e);
                }
                if !waits.is_empty() {
                    return;
                }
                // A file sink's parts of this epoch are on disk before the manifest says so.
                for (path, _) in &self.plan.files {
                    if let Err(e) = crate::sink_commit::sync_parts(path, epoch) {
                        return self.failed(epoch, e.to_string());
                    }
                }
                let Phase::Durable { data, .. } = std::mem::replace(&mut self.phase, Phase::Writing { epoch }) else {
                    unreachable!()
                };
                if let Err(e) = self.writer.as_ref().expect("writer").submit(data) {
                    self.failed(epoch, e.to_string());
                }
            }
            Phase::Writing { epoch } => {
                let epoch = *epoch;
                let Ok(done) = self.writer.as_ref().expect("writer").completions().try_recv() else { return };
                match done {
                    Ok(info) => self.committed(epoch, info.bytes),
                    Err((_, e)) => self.failed(epoch, e.to_string()),
                }
            }
        }
    }

    /// Snapshot `epoch` is durable: commit the output of its epoch and before.
    fn committed(&mut self, epoch: u64, bytes: u64) {
        // The snapshot stands whatever happens here: a commit cut short is finished by the next
        // one, or by recovery.
        for (path, _) in &self.plan.files {
            if let Err(e) = crate::sink_commit::commit(path, epoch) {
                tracing::error!(epoch, "{e}");
            }
        }
        for (url, stream) in &self.plan.redis_sinks {
            if let Err(e) = crate::redis_sink::commit_staged(url, stream, &instances(&self.plan), epoch) {
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

    fn abandon(&mut self, epoch: u64, why: &str) {
        tracing::debug!(epoch, "snapshot abandoned: {why}");
        self.coord.thaw();
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
        // What the sinks produced after their last barrier, sealed as the shards exited: durable
        // before the snapshot that says the run finished.
        let mut seals = std::mem::take(&mut self.seals);
        seals.extend(self.parts.try_iter().filter(|p| p.epoch == super::FINAL));
        let outcome = (|| -> Result<(), String> {
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
        })();
        match outcome {
            Ok(()) => {
                self.epoch = epoch;
                self.started = Instant::now();
                self.committed(epoch, 0);
            }
            Err(e) => self.failed(epoch, e),
        }
        self.counts
    }
}
