//! Unit tests of the snapshot store and writer: durability order, pruning, fingerprints, damaged
//! parts, and write failures that leave the previous snapshot usable.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::config::Config;

/// A fresh directory under the temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("dirigo-snap-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fingerprint() -> Fingerprint {
    Fingerprint::new(vec!["app a".into(), "key_groups 64".into()])
}

fn store(dir: &Path, keep: usize) -> SnapshotStore {
    SnapshotStore::new(dir.join("snaps"), keep, fingerprint())
}

fn data(epoch: u64) -> SnapshotData {
    SnapshotData {
        epoch,
        parts: vec![
            Part::new("state/a/count/kg-3", format!("state {epoch}").into_bytes()),
            Part::new(
                "source/a/in/0",
                crate::source::SourcePosition::Redis { last_id: format!("{epoch}-0") }.to_bytes(),
            ),
            Part::new("sink/a/out/0", vec![]),
        ],
        deferred: Vec::new(),
    }
}

#[test]
fn a_written_snapshot_loads_back_with_every_part() {
    let tmp = TempDir::new("load");
    let store = store(&tmp.0, 3);
    assert_eq!(store.latest().unwrap(), None, "an empty store has no snapshot");
    let info = store.write(data(7)).unwrap();
    assert_eq!((info.epoch, info.pruned), (7, 0));
    assert!(info.dir.join(MANIFEST).is_file());
    assert!(!info.dir.join("MANIFEST.tmp").exists());
    let loaded = store.latest().unwrap().expect("a complete snapshot");
    assert_eq!(loaded.epoch, 7);
    let expected: std::collections::BTreeMap<_, _> = data(7).parts.into_iter().map(|p| (p.name, p.bytes)).collect();
    assert_eq!(loaded.parts, expected);
    let position = crate::source::SourcePosition::from_bytes(&loaded.parts["source/a/in/0"]).unwrap();
    assert_eq!(position, crate::source::SourcePosition::Redis { last_id: "7-0".into() });
    // A complete snapshot is never overwritten.
    assert!(matches!(store.write(data(7)), Err(SnapshotError::Exists { epoch: 7, .. })));
}

#[test]
fn a_snapshot_without_its_manifest_does_not_count() {
    let tmp = TempDir::new("crash");
    let store = store(&tmp.0, 3);
    store.write(data(1)).unwrap();
    // A crash while writing epoch 2: its parts are there, its manifest is not (or only the
    // temporary one).
    let dir = store.snapshot_dir(2);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("part-00000"), b"half").unwrap();
    std::fs::write(dir.join("MANIFEST.tmp"), b"{\"format\":").unwrap();
    assert_eq!(store.complete().unwrap(), [1]);
    assert_eq!(store.latest().unwrap().unwrap().epoch, 1);
    // Writing epoch 2 again replaces the leftover; then the older leftovers are pruned.
    store.write(data(2)).unwrap();
    assert_eq!(store.latest().unwrap().unwrap().parts, store.load(2).unwrap().parts);
    let stale = store.snapshot_dir(0);
    std::fs::create_dir_all(&stale).unwrap();
    store.write(data(3)).unwrap();
    assert!(!stale.exists(), "an incomplete snapshot older than a complete one is pruned");
}

#[test]
fn only_the_newest_keep_snapshots_are_kept() {
    let tmp = TempDir::new("keep");
    let store = store(&tmp.0, 2);
    for epoch in 1..=5 {
        store.write(data(epoch)).unwrap();
    }
    assert_eq!(store.complete().unwrap(), [4, 5]);
    let dirs = std::fs::read_dir(store.dir()).unwrap().count();
    assert_eq!(dirs, 2, "pruned directories are gone");
    assert_eq!(store.latest().unwrap().unwrap().epoch, 5);
}

#[test]
fn a_snapshot_of_another_config_is_refused_naming_the_difference() {
    let tmp = TempDir::new("config");
    store(&tmp.0, 3).write(data(1)).unwrap();
    let other = Fingerprint::new(vec!["app a".into(), "key_groups 128".into()]);
    let err = SnapshotStore::new(tmp.0.join("snaps"), 3, other).latest().unwrap_err();
    let SnapshotError::OtherConfig { only_in_snapshot, only_in_config, .. } = &err else { panic!("{err}") };
    assert_eq!(only_in_snapshot, &["key_groups 64"]);
    assert_eq!(only_in_config, &["key_groups 128"]);
    let text = err.to_string();
    assert!(text.contains("another config") && text.contains("key_groups 128"), "{text}");
}

#[test]
fn a_damaged_part_is_named() {
    let tmp = TempDir::new("damage");
    let store = store(&tmp.0, 3);
    let info = store.write(data(1)).unwrap();
    std::fs::write(info.dir.join("part-00000"), b"state 9").unwrap();
    let err = store.latest().unwrap_err();
    assert!(matches!(&err, SnapshotError::Part { name, .. } if name == "state/a/count/kg-3"), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    std::fs::write(info.dir.join("part-00000"), b"short").unwrap();
    assert!(store.latest().unwrap_err().to_string().contains("5 bytes where the manifest says 7"));
}

#[test]
fn part_names_must_be_unique() {
    let tmp = TempDir::new("names");
    let mut d = data(1);
    d.parts.push(Part::new("sink/a/out/0", vec![1]));
    let err = store(&tmp.0, 3).write(d).unwrap_err();
    assert!(matches!(err, SnapshotError::PartName { why: "given twice", .. }), "{err}");
}

#[test]
fn config_fingerprints_follow_apps_functions_and_key_groups() {
    let base = "[[app]]\nname = \"a\"\nslo = \"1s\"\nschema = { k = \"u64\" }\n\n[[app.source]]\nname = \"in\"\n\
                kind = \"generator\"\nevents = 10\n\n[[app.function]]\nname = \"c\"\nkind = \"count\"\ninput = \"in\"\n\
                key = \"k\"\n\n[[app.sink]]\nname = \"out\"\nkind = \"null\"\ninput = \"c\"\n";
    let fp = |text: &str| Fingerprint::of_config(&Config::parse(text, "t.toml").expect("valid config"));
    let a = fp(base);
    assert_eq!(a, fp(base), "deterministic");
    assert_eq!(a, fp(&base.replace("events = 10", "events = 99")), "source rates and counts do not matter");
    assert!(a.items.iter().any(|i| i.starts_with("app a function c ")), "{:?}", a.items);
    for changed in [
        base.replace("kind = \"count\"", "kind = \"sum\"\nfield = \"k\""),
        base.replace("name = \"c\"", "name = \"d\"").replace("input = \"c\"", "input = \"d\""),
        format!("[engine]\nkey_groups = 32\n{base}"),
        base.replace("name = \"a\"", "name = \"b\""),
    ] {
        assert_ne!(a.digest, fp(&changed).digest, "{changed}");
    }
}

#[test]
fn the_writer_writes_off_thread_and_reports_each_outcome() {
    let tmp = TempDir::new("writer");
    let writer = SnapshotWriter::spawn(store(&tmp.0, 2), 4).unwrap();
    for epoch in 1..=3 {
        writer.submit(data(epoch)).unwrap();
    }
    let epochs: Vec<u64> = (0..3).map(|_| writer.completions().recv().unwrap().unwrap().epoch).collect();
    assert_eq!(epochs, [1, 2, 3]);
    let counts = writer.finish();
    assert_eq!(counts, WriterCounts { written: 3, last_complete: Some(3), ..WriterCounts::default() });
    assert_eq!(store(&tmp.0, 2).complete().unwrap(), [2, 3]);
}

/// A write error (here: something in the way of the snapshot's directory; a read-only directory
/// below) is reported and counted, the writer goes on, and the previous snapshot stays usable.
#[test]
fn a_failed_write_is_counted_and_the_previous_snapshot_stays_usable() {
    let tmp = TempDir::new("fail");
    let writer = SnapshotWriter::spawn(store(&tmp.0, 3), 4).unwrap();
    writer.submit(data(1)).unwrap();
    assert!(writer.completions().recv().unwrap().is_ok());
    std::fs::write(store(&tmp.0, 3).snapshot_dir(2), b"not a directory").unwrap();
    writer.submit(data(2)).unwrap();
    let (epoch, err) = writer.completions().recv().unwrap().unwrap_err();
    assert_eq!(epoch, 2);
    assert!(err.to_string().contains("epoch-00000000000000000002"), "{err}");
    assert_eq!(store(&tmp.0, 3).latest().unwrap().unwrap().epoch, 1, "the previous snapshot loads");
    writer.submit(data(3)).unwrap();
    assert!(writer.completions().recv().unwrap().is_ok(), "the writer goes on");
    let counts = writer.finish();
    assert_eq!((counts.written, counts.failed, counts.last_complete), (2, 1, Some(3)));
    assert!(counts.last_error.unwrap().contains("epoch-00000000000000000002"));
}

#[test]
fn a_read_only_directory_fails_the_write_and_keeps_the_previous_snapshot() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("readonly");
    let store = store(&tmp.0, 3);
    store.write(data(1)).unwrap();
    std::fs::set_permissions(store.dir(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let outcome = store.write(data(2));
    std::fs::set_permissions(store.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    match outcome {
        Err(e) => assert!(e.to_string().contains("cannot create"), "{e}"),
        Ok(_) => assert!(root, "only root may write into a read-only directory"),
    }
    assert!(store.load(1).is_ok(), "the previous snapshot stays usable");
    // Where the store's directory cannot even be made, the error names it.
    let blocked = SnapshotStore::new(tmp.0.join("file/snaps"), 3, fingerprint());
    std::fs::write(tmp.0.join("file"), b"").unwrap();
    let err = blocked.write(data(1)).unwrap_err();
    assert!(err.to_string().contains("cannot create") && err.to_string().contains("file/snaps"), "{err}");
}

/// `submit` never blocks: a snapshot that finds the writer's queue full is refused and counted
/// as skipped; the ones queued are still written.
#[test]
fn a_busy_writer_skips_rather_than_blocks() {
    let tmp = TempDir::new("busy");
    let writer = SnapshotWriter::spawn(store(&tmp.0, 5), 1).unwrap();
    let big = |epoch| SnapshotData {
        epoch,
        parts: vec![Part::new("state/a/c/kg-0", vec![epoch as u8; 32 << 20])],
        deferred: Vec::new(),
    };
    let started = std::time::Instant::now();
    let outcomes: Vec<_> = (1..=4).map(|epoch| writer.submit(big(epoch))).collect();
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "submit blocked");
    let skipped = outcomes.iter().filter(|o| matches!(o, Err(SubmitError::Busy { .. }))).count() as u64;
    assert!(skipped >= 1, "a 32 MiB write takes longer than four submits: {outcomes:?}");
    let counts = writer.finish();
    assert_eq!(counts.skipped, skipped);
    assert_eq!(counts.written + counts.skipped, 4);
    assert_eq!(counts.failed, 0);
}

/// A deferred part is made by the writer as it writes it, and loads like any other.
#[test]
fn deferred_parts_are_made_when_written_and_load_like_the_others() {
    let tmp = TempDir::new("deferred");
    let store = store(&tmp.0, 2);
    let mut snapshot = data(3);
    let mut bytes: rkyv::util::AlignedVec = rkyv::util::AlignedVec::new();
    bytes.extend_from_slice(b"made late");
    snapshot.deferred.push(crate::snapshot::Deferred::new("state/a/sum/0", move || bytes));
    store.write(snapshot).unwrap();
    let loaded = store.latest().unwrap().unwrap();
    assert_eq!(loaded.parts["state/a/sum/0"], b"made late");
    assert_eq!(loaded.parts.len(), 4);
    let mut twice = data(4);
    twice.deferred.push(crate::snapshot::Deferred::new("sink/a/out/0", rkyv::util::AlignedVec::new));
    assert!(matches!(store.write(twice), Err(SnapshotError::PartName { why: "given twice", .. })));
}

#[test]
fn a_cluster_resumes_from_the_newest_snapshot_every_node_has() {
    use super::driver::agreed;
    // The leader had 7 durable and the follower not yet; 6 is on both.
    assert_eq!(agreed(&[vec![5, 6, 7], vec![5, 6]]), Some(6));
    assert_eq!(agreed(&[vec![6], vec![5, 6], vec![6, 7]]), Some(6));
    // Nothing in common (a snapshot was dropped everywhere but one node kept a later one).
    assert_eq!(agreed(&[vec![3], vec![]]), None);
    assert_eq!(agreed(&[vec![], vec![]]), None);
}

#[test]
fn snapshots_after_the_one_resumed_from_are_removed() {
    let tmp = TempDir::new("after");
    let s = store(&tmp.0, 5);
    for epoch in 1..=4 {
        s.write(data(epoch)).unwrap();
    }
    // An incomplete one beyond them (a crash mid-write).
    std::fs::create_dir_all(s.snapshot_dir(5)).unwrap();
    assert_eq!(s.remove_after(2).unwrap(), 3);
    assert_eq!(s.complete().unwrap(), vec![1, 2]);
    assert!(!s.snapshot_dir(5).exists());
    assert_eq!(s.remove_after(0).unwrap(), 2, "0: start afresh");
    assert!(s.complete().unwrap().is_empty());
}
