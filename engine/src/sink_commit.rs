//! A file sink that commits with snapshots: a consumer of the file never sees output that a crash
//! takes back.
//!
//! Each sink instance writes its output to a *pending part*, `<file>.pending/<epoch>-<instance>`,
//! holding what it produced before barrier `epoch`; at the barrier it syncs the part and starts
//! the next ([`PartWriter::barrier`]). When snapshot `epoch` is complete, [`commit`] appends
//! every part of that epoch and earlier to the file, in epoch then instance order, fsyncs the
//! file, and records the commit in `<file>.commit` (`<epoch> <length>`), written to a temporary
//! name, fsync'd and renamed; only then are the parts removed. On start, [`recover`] brings the
//! file back to the snapshot it resumes from.
//!
//! Why a length marker beside one growing file, and not a part renamed into place per epoch:
//! consumers keep reading one file (as with the write-through sink, and as `tail -f` does), and
//! the marker rename is the commit point: a rename is atomic, so the marker says either the old
//! committed length or the new one, never a torn value. A crash between appending and the marker
//! leaves bytes past the committed length: [`recover`] truncates them and appends the same parts
//! again (they are removed only after the marker), so a reader that saw them sees them again,
//! byte for byte: nothing it read is taken back. Renaming whole parts would give each epoch its
//! own file, which every consumer would have to list and order.
//!
//! Recovery from snapshot `n` with the marker at epoch `m`:
//! - `m == n`: truncate the file to the marker's length; remove every part (those after `n` are
//!   replayed by the sources).
//! - `m < n` (the crash came between snapshot `n`'s manifest and its commit): truncate to the
//!   marker's length, commit the parts of epochs `m+1..=n` (still on disk), remove the rest.
//! - `m > n`: output of a later snapshot is already committed, which the replay from `n` would
//!   write again: refused ([`CommitError::AheadOfSnapshot`]).
//!
//! Without snapshots the file sink writes through, as it always has (`Sink::open_file`); this
//! is what it becomes once snapshot barriers exist.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What went wrong committing or recovering a file sink, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("file sink: cannot {op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("file sink: the commit marker {} is damaged: `{text}`", path.display())]
    Marker { path: PathBuf, text: String },
    #[error(
        "file sink: {} has output committed up to epoch {committed}, after the snapshot recovery \
         starts from (epoch {snapshot}; 0: none); the replay would write it twice",
        path.display()
    )]
    AheadOfSnapshot { path: PathBuf, committed: u64, snapshot: u64 },
    #[error("file sink: {} is {len} bytes, shorter than its committed {committed}", path.display())]
    Shorter { path: PathBuf, len: u64, committed: u64 },
}

/// The commit recorded beside a file: the last epoch committed and the file's length then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    pub epoch: u64,
    pub len: u64,
}

/// The directory of `file`'s pending parts.
pub fn parts_dir(file: &Path) -> PathBuf {
    suffixed(file, ".pending")
}

/// The commit marker of `file`.
pub fn marker_path(file: &Path) -> PathBuf {
    suffixed(file, ".commit")
}

fn suffixed(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CommitError + 'a {
    move |source| CommitError::Io { op, path: path.to_path_buf(), source }
}

/// One instance's pending output, a part per epoch.
#[derive(Debug)]
pub struct PartWriter {
    dir: PathBuf,
    instance: u32,
    epoch: u64,
    part: File,
}

impl PartWriter {
    /// Start writing instance `instance`'s output of `epoch` (the one after the last committed)
    /// for `file`.
    pub fn open(file: &Path, instance: u32, epoch: u64) -> Result<PartWriter, CommitError> {
        let dir = parts_dir(file);
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let part = open_part(&dir, epoch, instance)?;
        Ok(PartWriter { dir, instance, epoch, part })
    }

    /// Append output to the current part.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), CommitError> {
        let path = part_path(&self.dir, self.epoch, self.instance);
        self.part.write_all(bytes).map_err(io_err("write", &path))
    }

    /// Barrier `epoch` passed this instance: its part of `epoch` is complete (synced); what comes
    /// next belongs to `epoch + 1`.
    /// The part is synced off the shard, by the controller before the snapshot's manifest
    /// ([`sync_parts`]).
    pub fn barrier(&mut self, epoch: u64) -> Result<(), CommitError> {
        self.epoch = epoch + 1;
        self.part = open_part(&self.dir, self.epoch, self.instance)?;
        Ok(())
    }

    /// The epoch being written.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

fn part_path(dir: &Path, epoch: u64, instance: u32) -> PathBuf {
    dir.join(format!("{epoch:020}-{instance:05}"))
}

fn open_part(dir: &Path, epoch: u64, instance: u32) -> Result<File, CommitError> {
    let path = part_path(dir, epoch, instance);
    OpenOptions::new().create(true).append(true).open(&path).map_err(io_err("create", &path))
}

/// The pending parts of `file`: `(epoch, instance, path)`, in epoch then instance order.
fn parts(file: &Path) -> Result<Vec<(u64, u32, PathBuf)>, CommitError> {
    let dir = parts_dir(file);
    let read = match fs::read_dir(&dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CommitError::Io { op: "list", path: dir, source: e }),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(io_err("list", &dir))?;
        let name = entry.file_name();
        let parsed =
            name.to_str().and_then(|n| n.split_once('-')).and_then(|(e, i)| Some((e.parse().ok()?, i.parse().ok()?)));
        if let Some((epoch, instance)) = parsed {
            out.push((epoch, instance, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The commit recorded for `file`; None when nothing was ever committed.
pub fn committed(file: &Path) -> Result<Option<Committed>, CommitError> {
    let path = marker_path(file);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CommitError::Io { op: "read", path, source: e }),
    };
    let parsed =
        text.trim().split_once(' ').and_then(|(e, l)| Some(Committed { epoch: e.parse().ok()?, len: l.parse().ok()? }));
    parsed.map(Some).ok_or(CommitError::Marker { path, text })
}

/// Commit every pending part of `file` of epoch `epoch` and earlier (see the module doc).
pub fn commit(file: &Path, epoch: u64) -> Result<Committed, CommitError> {
    let before = committed(file)?.unwrap_or_default();
    let mut out =
        OpenOptions::new().create(true).write(true).truncate(false).open(file).map_err(io_err("open", file))?;
    let len = out.metadata().map_err(io_err("stat", file))?.len();
    if len < before.len {
        return Err(CommitError::Shorter { path: file.to_path_buf(), len, committed: before.len });
    }
    // Bytes past the committed length are a commit cut short: its parts are still pending.
    out.set_len(before.len).map_err(io_err("truncate", file))?;
    let mut end = before.len;
    let (done, pending): (Vec<_>, Vec<_>) = parts(file)?.into_iter().partition(|(e, _, _)| *e <= before.epoch);
    // Parts of epochs already committed: a crash came after the marker, before their removal.
    for (_, _, part) in &done {
        fs::remove_file(part).map_err(io_err("remove", part))?;
    }
    let due: Vec<_> = pending.into_iter().filter(|(e, _, _)| *e <= epoch).collect();
    for (_, _, part) in &due {
        let bytes = fs::read(part).map_err(io_err("read", part))?;
        io::Seek::seek(&mut out, io::SeekFrom::Start(end)).map_err(io_err("seek", file))?;
        out.write_all(&bytes).map_err(io_err("append to", file))?;
        end += bytes.len() as u64;
    }
    out.sync_all().map_err(io_err("sync", file))?;
    let now = Committed { epoch: epoch.max(before.epoch), len: end };
    write_marker(file, now)?;
    for (_, _, part) in &due {
        fs::remove_file(part).map_err(io_err("remove", part))?;
    }
    Ok(now)
}

/// Start `file` over for a fresh run with snapshots: its first line `first` (a CSV header, or
/// nothing), committed at epoch 0, and no pending part.
pub fn start(file: &Path, first: &str) -> Result<(), CommitError> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    let mut f = File::create(file).map_err(io_err("create", file))?;
    f.write_all(first.as_bytes()).map_err(io_err("write", file))?;
    f.sync_all().map_err(io_err("sync", file))?;
    let dir = parts_dir(file);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(CommitError::Io { op: "remove", path: dir, source: e })
        }
        _ => {}
    }
    write_marker(file, Committed { epoch: 0, len: first.len() as u64 })
}

/// Make every pending part of `file` of epoch `epoch` and earlier durable (before the manifest
/// of snapshot `epoch` says its output is there).
pub fn sync_parts(file: &Path, epoch: u64) -> Result<(), CommitError> {
    let mut any = false;
    for (_, _, part) in parts(file)?.into_iter().filter(|(e, _, _)| *e <= epoch) {
        File::open(&part).and_then(|f| f.sync_all()).map_err(io_err("sync", &part))?;
        any = true;
    }
    if any {
        let dir = parts_dir(file);
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err("sync", &dir))?;
    }
    Ok(())
}

/// Atomically replace `file`'s marker with `c`.
fn write_marker(file: &Path, c: Committed) -> Result<(), CommitError> {
    let path = marker_path(file);
    let tmp = suffixed(file, ".commit.tmp");
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(format!("{} {}\n", c.epoch, c.len).as_bytes()).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("sync", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename the marker into", &path))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("sync", dir))
}

/// Bring `file` back to snapshot `snapshot` (None: no snapshot yet, nothing committed): drop
/// output after the last commit, finish a commit of `snapshot` cut short, and remove the parts the
/// replay writes again (see the module doc). Returns the commit now in force.
pub fn recover(file: &Path, snapshot: Option<u64>) -> Result<Committed, CommitError> {
    let n = snapshot.unwrap_or(0);
    let done = committed(file)?.unwrap_or_default();
    if done.epoch > n {
        return Err(CommitError::AheadOfSnapshot { path: file.to_path_buf(), committed: done.epoch, snapshot: n });
    }
    let now = commit(file, n)?;
    for (_, _, part) in parts(file)? {
        fs::remove_file(&part).map_err(io_err("remove", &part))?;
    }
    Ok(now)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A fresh directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("dirigo-commit-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn text(file: &Path) -> String {
        fs::read_to_string(file).unwrap_or_default()
    }

    #[test]
    fn output_appears_only_when_committed_in_epoch_then_instance_order() {
        let tmp = TempDir::new();
        let file = tmp.0.join("out.ndjson");
        assert_eq!(recover(&file, None).unwrap(), Committed { epoch: 0, len: 0 });
        let mut a = PartWriter::open(&file, 0, 1).unwrap();
        let mut b = PartWriter::open(&file, 1, 1).unwrap();
        a.write(b"a1\n").unwrap();
        b.write(b"b1\n").unwrap();
        assert_eq!(text(&file), "", "nothing is visible before the commit");
        a.barrier(1).unwrap();
        b.barrier(1).unwrap();
        a.write(b"a2\n").unwrap(); // epoch 2, not yet complete
        assert_eq!(commit(&file, 1).unwrap(), Committed { epoch: 1, len: 6 });
        assert_eq!(text(&file), "a1\nb1\n");
        a.barrier(2).unwrap();
        b.barrier(2).unwrap();
        assert_eq!(commit(&file, 2).unwrap(), Committed { epoch: 2, len: 9 });
        assert_eq!(text(&file), "a1\nb1\na2\n");
        assert_eq!(committed(&file).unwrap(), Some(Committed { epoch: 2, len: 9 }));
    }

    /// A crash (the writer dropped without a commit) takes back nothing a reader saw: recovery
    /// drops the uncommitted parts, and the replay writes them again.
    #[test]
    fn a_crash_before_the_commit_leaves_only_committed_output() {
        let tmp = TempDir::new();
        let file = tmp.0.join("out.csv");
        recover(&file, None).unwrap();
        let mut w = PartWriter::open(&file, 0, 1).unwrap();
        w.write(b"1\n").unwrap();
        w.barrier(1).unwrap();
        commit(&file, 1).unwrap();
        w.write(b"2\n").unwrap();
        w.barrier(2).unwrap();
        w.write(b"3\n").unwrap();
        drop(w); // crash: snapshot 2 never completed
        assert_eq!(recover(&file, Some(1)).unwrap(), Committed { epoch: 1, len: 2 });
        assert_eq!(text(&file), "1\n");
        assert_eq!(parts(&file).unwrap(), vec![], "the replay writes epochs 2.. again");
        let mut w = PartWriter::open(&file, 0, 2).unwrap();
        w.write(b"2\n").unwrap();
        w.barrier(2).unwrap();
        commit(&file, 2).unwrap();
        assert_eq!(text(&file), "1\n2\n");
    }

    /// A crash in the middle of a commit: bytes appended past the marker are truncated, and the
    /// parts (still pending) appended again, byte for byte.
    #[test]
    fn a_commit_cut_short_is_finished_by_recovery() {
        let tmp = TempDir::new();
        let file = tmp.0.join("out.ndjson");
        recover(&file, None).unwrap();
        let mut w = PartWriter::open(&file, 0, 1).unwrap();
        w.write(b"x\n").unwrap();
        w.barrier(1).unwrap();
        commit(&file, 1).unwrap();
        w.write(b"y\n").unwrap();
        w.barrier(2).unwrap();
        w.write(b"z\n").unwrap();
        drop(w);
        // Snapshot 2 completed; its commit crashed after appending part of its output.
        fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(b"y").unwrap();
        assert_eq!(recover(&file, Some(2)).unwrap(), Committed { epoch: 2, len: 4 });
        assert_eq!(text(&file), "x\ny\n");
        // And a crash after the marker, before the parts were removed: not appended twice.
        let mut w = PartWriter::open(&file, 0, 3).unwrap();
        w.write(b"w\n").unwrap();
        w.barrier(3).unwrap();
        let part = part_path(&parts_dir(&file), 3, 0);
        let kept = fs::read(&part).unwrap();
        commit(&file, 3).unwrap();
        fs::write(&part, kept).unwrap();
        assert_eq!(recover(&file, Some(3)).unwrap(), Committed { epoch: 3, len: 6 });
        assert_eq!(text(&file), "x\ny\nw\n");
    }

    #[test]
    fn output_committed_past_the_snapshot_is_refused() {
        let tmp = TempDir::new();
        let file = tmp.0.join("out.ndjson");
        recover(&file, None).unwrap();
        let mut w = PartWriter::open(&file, 0, 1).unwrap();
        w.write(b"1\n").unwrap();
        w.barrier(4).unwrap();
        commit(&file, 4).unwrap();
        let err = recover(&file, Some(3)).unwrap_err();
        assert!(matches!(err, CommitError::AheadOfSnapshot { committed: 4, snapshot: 3, .. }), "{err}");
        fs::write(marker_path(&file), "four 2").unwrap();
        assert!(recover(&file, Some(4)).unwrap_err().to_string().contains("damaged"));
    }
}
