//! [`SnapshotStore`]: one directory per snapshot under the store's `dir`, a manifest written last.
//!
//! Layout: `dir/epoch-00000000000000000042/` holds `part-00000` .. (one file per part, in the
//! order given) and `MANIFEST` (JSON: the epoch, the config fingerprint, and each part's name,
//! file, length and FNV-1a checksum). Writing a snapshot:
//!
//! 1. create the directory (a leftover one without a manifest, from a write that failed or a
//!    crash, is removed first; one with a manifest is never overwritten);
//! 2. write and fsync every part;
//! 3. write the manifest to `MANIFEST.tmp`, fsync it, rename it to `MANIFEST`;
//! 4. fsync the snapshot's directory and `dir`, so the rename and the directory entry survive a
//!    power loss;
//! 5. prune: remove all but the newest `keep` complete snapshots, and any incomplete directory
//!    older than the newest complete one (a failure here is logged: the new snapshot stands).
//!
//! A crash at any step leaves either no manifest (the snapshot does not count: recovery uses the
//! previous one, still complete on disk because pruning happens only after the new manifest is
//! durable) or a complete snapshot.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SnapshotData;
use crate::config::Config;

/// The manifest's file name inside a snapshot directory; a snapshot without it does not count.
pub const MANIFEST: &str = "MANIFEST";
const MANIFEST_TMP: &str = "MANIFEST.tmp";
const PREFIX: &str = "epoch-";
/// The manifest format this build writes and reads.
const FORMAT: u32 = 1;

/// What a snapshot directory was made from: a digest of the config's apps (their schemas,
/// sources, functions and sinks) and key groups, with the items it was computed from so a
/// mismatch can be named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// FNV-1a of the items, in hex.
    pub digest: String,
    /// One line per app, schema, source, function, sink and the key groups, sorted.
    pub items: Vec<String>,
}

impl Fingerprint {
    /// A fingerprint of `items` (order does not matter).
    pub fn new(mut items: Vec<String>) -> Fingerprint {
        items.sort();
        items.dedup();
        let mut h = Fnv::new();
        for item in &items {
            h.write(item.as_bytes());
            h.write(b"\n");
        }
        Fingerprint { digest: format!("{:016x}", h.finish()), items }
    }

    /// What a snapshot's state depends on in `config`: every app's name and schema, each of its
    /// sources (name and kind), functions (name and full definition: kind, keys, windows,
    /// aggregates) and sinks (name and kind), `[engine] key_groups`, how keys are grouped and
    /// which stream a generator's seed gives. Shards, placement, rates and lessees may change
    /// between a snapshot and its recovery.
    pub fn of_config(config: &Config) -> Fingerprint {
        let kind_of = |v: serde_json::Result<serde_json::Value>| {
            v.ok().and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned)).unwrap_or_default()
        };
        let mut items = vec![
            format!("key_groups {}", config.engine.key_groups),
            format!("key_grouping {}", dirigo_actors::ids::KEY_GROUPING),
            format!("generator_stream {}", crate::source::generator::STREAM),
        ];
        for app in &config.apps {
            let a = app.name.get_ref();
            items.push(format!("app {a}"));
            let schema: Vec<String> =
                app.schema.fields.iter().map(|f| format!("{}:{}", f.name.get_ref(), f.ty.get_ref())).collect();
            items.push(format!("app {a} schema {}", schema.join(",")));
            for s in &app.sources {
                items.push(format!("app {a} source {} {}", s.name.get_ref(), kind_of(serde_json::to_value(&s.kind))));
            }
            for f in &app.functions {
                let def = serde_json::to_string(&f.kind).unwrap_or_default();
                items.push(format!("app {a} function {} {def}", f.name.get_ref()));
            }
            for s in &app.sinks {
                items.push(format!("app {a} sink {} {}", s.name.get_ref(), kind_of(serde_json::to_value(&s.kind))));
            }
        }
        Fingerprint::new(items)
    }
}

/// One part as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    pub name: String,
    /// Its file inside the snapshot directory.
    pub file: String,
    pub len: u64,
    /// FNV-1a of its bytes, in hex.
    pub checksum: String,
}

/// A snapshot's manifest: written last; its presence makes the snapshot count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub epoch: u64,
    pub fingerprint: Fingerprint,
    pub parts: Vec<PartEntry>,
    /// When the manifest was written (ms since the Unix epoch).
    pub written_unix_ms: u64,
}

/// A snapshot just written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub epoch: u64,
    pub dir: PathBuf,
    /// Bytes of parts written.
    pub bytes: u64,
    /// Older snapshots removed after it.
    pub pruned: usize,
}

/// A complete snapshot read back, every part's length and checksum verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub epoch: u64,
    pub dir: PathBuf,
    /// Every part by name.
    pub parts: BTreeMap<String, Vec<u8>>,
}

/// What went wrong writing or reading snapshots, naming the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshots: cannot {op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("snapshots: {} is already a complete snapshot of epoch {epoch}; it is never overwritten", path.display())]
    Exists { epoch: u64, path: PathBuf },
    #[error("snapshots: part name `{name}` of epoch {epoch} is {why}")]
    PartName { epoch: u64, name: String, why: &'static str },
    #[error("snapshots: the manifest {} is unreadable: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },
    #[error("snapshots: part `{name}` ({}) is damaged: {reason}", path.display())]
    Part { name: String, path: PathBuf, reason: String },
    #[error(
        "snapshots: {} was made from another config (fingerprint {found}, this config's is {expected}); \
         only in the snapshot: [{}]; only in this config: [{}]; move the snapshot directory away to start afresh",
        path.display(), only_in_snapshot.join("; "), only_in_config.join("; ")
    )]
    OtherConfig {
        path: PathBuf,
        expected: String,
        found: String,
        only_in_snapshot: Vec<String>,
        only_in_config: Vec<String>,
    },
}

/// Writes, lists, loads and prunes the snapshots of one config under one directory.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    keep: usize,
    fingerprint: Fingerprint,
}

impl SnapshotStore {
    /// The store under `dir` (created on the first write), keeping the newest `keep` (at least
    /// 1) complete snapshots of the config with `fingerprint`.
    pub fn new(dir: impl Into<PathBuf>, keep: usize, fingerprint: Fingerprint) -> SnapshotStore {
        SnapshotStore { dir: dir.into(), keep: keep.max(1), fingerprint }
    }

    /// The directory the snapshots are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the snapshot of `epoch`.
    pub fn snapshot_dir(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{epoch:020}"))
    }

    /// Write `snapshot` durably (see the module doc), then prune.
    pub fn write(&self, snapshot: SnapshotData) -> Result<SnapshotInfo, SnapshotError> {
        let epoch = snapshot.epoch;
        let mut names = std::collections::HashSet::new();
        let all = snapshot.parts.iter().map(|p| &p.name).chain(snapshot.deferred.iter().map(|d| &d.name));
        for name in all {
            if name.is_empty() || name.contains('\n') {
                return Err(SnapshotError::PartName { epoch, name: name.clone(), why: "empty or multi-line" });
            }
            if !names.insert(name.as_str()) {
                return Err(SnapshotError::PartName { epoch, name: name.clone(), why: "given twice" });
            }
        }
        fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        let dir = self.snapshot_dir(epoch);
        if dir.join(MANIFEST).exists() {
            return Err(SnapshotError::Exists { epoch, path: dir });
        }
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err("remove the incomplete snapshot", &dir))?;
        }
        fs::create_dir(&dir).map_err(io_err("create", &dir))?;
        let mut parts = Vec::with_capacity(snapshot.parts.len() + snapshot.deferred.len());
        let mut bytes = 0;
        let mut put = |name: String, data: &[u8]| -> Result<(), SnapshotError> {
            let file = format!("part-{:05}", parts.len());
            write_synced(&dir.join(&file), data)?;
            bytes += data.len() as u64;
            let checksum = format!("{:016x}", fnv(data));
            parts.push(PartEntry { name, file, len: data.len() as u64, checksum });
            Ok(())
        };
        for part in snapshot.parts {
            put(part.name, &part.bytes)?;
        }
        for d in snapshot.deferred {
            let data = (d.make)();
            put(d.name, &data)?;
        }
        let written_unix_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let manifest =
            Manifest { format: FORMAT, epoch, fingerprint: self.fingerprint.clone(), parts, written_unix_ms };
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| SnapshotError::Manifest { path: dir.join(MANIFEST), reason: e.to_string() })?;
        let tmp = dir.join(MANIFEST_TMP);
        write_synced(&tmp, &text)?;
        fs::rename(&tmp, dir.join(MANIFEST)).map_err(io_err("rename the manifest into", &dir))?;
        sync_dir(&dir)?;
        sync_dir(&self.dir)?;
        // The snapshot is complete: a failure to prune older ones does not undo it.
        let pruned = self.prune().unwrap_or_else(|e| {
            tracing::warn!(epoch, "snapshot written, but older ones were not pruned: {e}");
            0
        });
        Ok(SnapshotInfo { epoch, dir, bytes, pruned })
    }

    /// The epochs of the complete snapshots (those with a manifest), oldest first.
    pub fn complete(&self) -> Result<Vec<u64>, SnapshotError> {
        Ok(self.entries()?.into_iter().filter(|(_, complete)| *complete).map(|(e, _)| e).collect())
    }

    /// The newest complete snapshot, loaded and checked; None when there is none.
    pub fn latest(&self) -> Result<Option<Loaded>, SnapshotError> {
        match self.complete()?.last() {
            Some(&epoch) => self.load(epoch).map(Some),
            None => Ok(None),
        }
    }

    /// The complete snapshot of `epoch`: refused if it was made from another config, or if a
    /// part is missing, short or fails its checksum.
    pub fn load(&self, epoch: u64) -> Result<Loaded, SnapshotError> {
        let dir = self.snapshot_dir(epoch);
        let path = dir.join(MANIFEST);
        let text = fs::read(&path).map_err(io_err("read", &path))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| SnapshotError::Manifest { path: path.clone(), reason: e.to_string() })?;
        if manifest.format != FORMAT || manifest.epoch != epoch {
            let reason = format!(
                "format {} epoch {} where format {FORMAT} epoch {epoch} was expected",
                manifest.format, manifest.epoch
            );
            return Err(SnapshotError::Manifest { path, reason });
        }
        if manifest.fingerprint.digest != self.fingerprint.digest {
            let missing = |a: &Fingerprint, b: &Fingerprint| {
                a.items.iter().filter(|i| !b.items.contains(i)).cloned().collect::<Vec<_>>()
            };
            return Err(SnapshotError::OtherConfig {
                path: dir,
                expected: self.fingerprint.digest.clone(),
                found: manifest.fingerprint.digest.clone(),
                only_in_snapshot: missing(&manifest.fingerprint, &self.fingerprint),
                only_in_config: missing(&self.fingerprint, &manifest.fingerprint),
            });
        }
        let mut parts = BTreeMap::new();
        for entry in manifest.parts {
            let file = dir.join(&entry.file);
            let damaged = |reason: String| SnapshotError::Part { name: entry.name.clone(), path: file.clone(), reason };
            if entry.file.contains(['/', '\\']) || entry.file.starts_with('.') {
                return Err(damaged("the manifest names a file outside the snapshot".into()));
            }
            let bytes = fs::read(&file).map_err(|e| damaged(e.to_string()))?;
            if bytes.len() as u64 != entry.len {
                return Err(damaged(format!("{} bytes where the manifest says {}", bytes.len(), entry.len)));
            }
            let sum = format!("{:016x}", fnv(&bytes));
            if sum != entry.checksum {
                return Err(damaged(format!("checksum {sum} where the manifest says {}", entry.checksum)));
            }
            parts.insert(entry.name, bytes);
        }
        Ok(Loaded { epoch, dir, parts })
    }

    /// Remove all but the newest `keep` complete snapshots, and every incomplete directory older
    /// than the newest complete one; returns how many directories were removed.
    pub fn prune(&self) -> Result<usize, SnapshotError> {
        let entries = self.entries()?;
        let complete: Vec<u64> = entries.iter().filter(|(_, c)| *c).map(|(e, _)| *e).collect();
        let Some(&newest) = complete.last() else {
            return Ok(0);
        };
        let cut = complete.len().saturating_sub(self.keep);
        let old: Vec<u64> = complete[..cut].to_vec();
        let mut removed = 0;
        for (epoch, is_complete) in entries {
            if (is_complete && old.contains(&epoch)) || (!is_complete && epoch < newest) {
                let dir = self.snapshot_dir(epoch);
                // The manifest first: a removal cut short leaves an incomplete directory, which
                // never counts, rather than a complete-looking one missing parts.
                if is_complete {
                    fs::remove_file(dir.join(MANIFEST)).map_err(io_err("remove the manifest of", &dir))?;
                }
                fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Remove every snapshot after `epoch` (complete or not), newest first; returns how many.
    /// A cluster's node that resumes from `epoch` removes what its cluster never committed.
    pub fn remove_after(&self, epoch: u64) -> Result<usize, SnapshotError> {
        let mut removed = 0;
        for (e, is_complete) in self.entries()?.into_iter().rev().filter(|(e, _)| *e > epoch) {
            let dir = self.snapshot_dir(e);
            if is_complete {
                fs::remove_file(dir.join(MANIFEST)).map_err(io_err("remove the manifest of", &dir))?;
            }
            fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
            removed += 1;
        }
        if removed > 0 && self.dir.exists() {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Every snapshot directory: its epoch and whether it has a manifest, oldest first. A
    /// missing store directory has none.
    fn entries(&self) -> Result<Vec<(u64, bool)>, SnapshotError> {
        let read = match fs::read_dir(&self.dir) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SnapshotError::Io { op: "list", path: self.dir.clone(), source: e }),
        };
        let mut out = Vec::new();
        for entry in read {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let name = entry.file_name();
            let Some(epoch) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)).and_then(|n| n.parse().ok()) else {
                continue;
            };
            if entry.path().is_dir() {
                out.push((epoch, entry.path().join(MANIFEST).is_file()));
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io { op, path: path.to_path_buf(), source }
}

/// Create `path` with `bytes` and fsync it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path).map_err(io_err("create", path))?;
    f.write_all(bytes).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("sync", path))
}

/// fsync a directory, so the entries made in it are durable.
fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("sync", dir))
}

/// FNV-1a, 64 bits: detects torn or damaged parts (not tampering).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.write(bytes);
    h.finish()
}
