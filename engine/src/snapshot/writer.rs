//! [`SnapshotWriter`]: the thread that writes snapshots, so the shards never wait for the disk.
//!
//! The barrier protocol hands each snapshot's parts to [`SnapshotWriter::submit`], which never
//! blocks: the channel is bounded, and a snapshot that finds it full is refused (and counted as
//! skipped) rather than stalling a shard; the next barrier takes a newer one. The thread writes
//! each snapshot with its [`SnapshotStore`] and reports the outcome on
//! [`completions`](SnapshotWriter::completions): the controller commits the sinks on success.
//! A failed write (permissions, a full disk) is counted, reported on `completions`, and leaves the previous
//! snapshot complete and usable; the engine runs on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{SnapshotData, SnapshotError, SnapshotInfo, SnapshotStore};

/// What the writer has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterCounts {
    /// Snapshots written complete.
    pub written: u64,
    /// Snapshots whose write failed.
    pub failed: u64,
    /// Snapshots refused because the writer was still busy with earlier ones.
    pub skipped: u64,
    /// The newest epoch written complete.
    pub last_complete: Option<u64>,
    /// The last failure, as text.
    pub last_error: Option<String>,
}

/// Why [`SnapshotWriter::submit`] refused a snapshot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("snapshot {epoch} skipped: the writer is still busy with {queued} earlier snapshots")]
    Busy { epoch: u64, queued: usize },
    #[error("snapshot {epoch} refused: the snapshot writer has stopped")]
    Stopped { epoch: u64 },
}

#[derive(Default)]
struct Shared {
    written: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    /// Newest complete epoch + 1; 0: none.
    last_complete: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The outcome of one snapshot write.
pub type Completion = Result<SnapshotInfo, (u64, SnapshotError)>;

/// A thread writing snapshots in the order submitted.
pub struct SnapshotWriter {
    tx: Option<flume::Sender<SnapshotData>>,
    shared: Arc<Shared>,
    done: flume::Receiver<Completion>,
    thread: Option<JoinHandle<()>>,
}

impl SnapshotWriter {
    /// Start the writer thread for `store`, queueing at most `capacity` (at least 1) snapshots.
    pub fn spawn(store: SnapshotStore, capacity: usize) -> std::io::Result<SnapshotWriter> {
        let (tx, rx) = flume::bounded::<SnapshotData>(capacity.max(1));
        let (done_tx, done) = flume::unbounded();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("dirigo-snapshots".into()).spawn(move || {
            background_priority();
            for snapshot in rx.iter() {
                let epoch = snapshot.epoch;
                let outcome = store.write(snapshot);
                match &outcome {
                    Ok(info) => {
                        s.written.fetch_add(1, Ordering::Relaxed);
                        s.last_complete.fetch_max(info.epoch + 1, Ordering::Relaxed);
                        tracing::debug!(epoch, bytes = info.bytes, pruned = info.pruned, "snapshot written");
                    }
                    Err(e) => {
                        s.failed.fetch_add(1, Ordering::Relaxed);
                        // Logged at error by whoever reads the completion (the controller).
                        tracing::debug!(epoch, "snapshot not written: {e}");
                        *s.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    }
                }
                let _ = done_tx.send(outcome.map_err(|e| (epoch, e)));
            }
        })?;
        Ok(SnapshotWriter { tx: Some(tx), shared, done, thread: Some(thread) })
    }

    /// Queue `snapshot` for writing; never blocks.
    pub fn submit(&self, snapshot: SnapshotData) -> Result<(), SubmitError> {
        let epoch = snapshot.epoch;
        let Some(tx) = &self.tx else {
            return Err(SubmitError::Stopped { epoch });
        };
        match tx.try_send(snapshot) {
            Ok(()) => Ok(()),
            Err(flume::TrySendError::Full(_)) => {
                self.shared.skipped.fetch_add(1, Ordering::Relaxed);
                let queued = tx.len();
                tracing::warn!(epoch, queued, "snapshot skipped: the writer is behind");
                Err(SubmitError::Busy { epoch, queued })
            }
            Err(flume::TrySendError::Disconnected(_)) => Err(SubmitError::Stopped { epoch }),
        }
    }

    /// The outcome of every write, in order.
    pub fn completions(&self) -> &flume::Receiver<Completion> {
        &self.done
    }

    /// What the writer has done so far.
    pub fn counts(&self) -> WriterCounts {
        let s = &self.shared;
        WriterCounts {
            written: s.written.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            skipped: s.skipped.load(Ordering::Relaxed),
            last_complete: s.last_complete.load(Ordering::Relaxed).checked_sub(1),
            last_error: s.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Write what is queued, stop the thread, and return the counts.
    pub fn finish(mut self) -> WriterCounts {
        self.stop();
        self.counts()
    }

    fn stop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lower the calling thread's CPU priority to the lowest (`nice` 19): the writer's work is in
/// the background, and where it shares a core with a busy shard (a machine with no core to
/// spare) the kernel should run the shard first, not let the writer preempt it for its bursts
/// of archiving and syncing. The write takes longer then; the shards' latency does not pay for
/// it. A failure is ignored (the thread keeps the default priority).
pub(crate) fn background_priority() {
    // SAFETY: gettid and setpriority on this thread's own id; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}
