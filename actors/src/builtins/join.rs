//! Windowed equi-join of two inputs (port 0 = left, port 1 = right) on one key field each.
//!
//! Output `{window_start, window_end, <left fields>, <right fields>}` at event time `window_end`,
//! keyed by the key's hash. A right field whose name is already taken gets the prefix `right_`;
//! a left field named `window_start` or `window_end` gets `left_`. When a window fires, every
//! (left, right) pair of one key in it is emitted, in left-arrival then right-arrival order, keys
//! in `(window_end, key value)` order. Lateness follows `panes.rs`; a record that reaches a window
//! that already fired (within lateness) emits only the pairs it makes, at once, so no pair is ever
//! emitted twice (Flink would re-emit the whole window).

use super::keyed::KeyRef;
use super::panes::PaneStore;
use super::panes::{JoinPane, Side};
use super::shape::WindowSpec;
use super::{output_schema, resolve_field, BuildError};
use crate::builtins::moved::KeyArchive;
use crate::migrate::MigrateError;
use crate::operator::{Emitter, Msg, Operator};
use crate::record::{ArchivedRecord, FieldType, Schema, Value};
use rkyv::util::AlignedVec;

/// Windowed equi-join operator.
pub struct Join {
    /// Key field position, indexed by [`Side`].
    key_pos: [usize; 2],
    panes: PaneStore<JoinPane>,
    /// Scratch output row, reused.
    row: Vec<Value>,
}

impl Join {
    /// Join `left` and `right` records with equal `left_key` / `right_key` in the same window
    /// of `spec`. The key fields must have the same type.
    pub fn new(
        left: &Schema,
        right: &Schema,
        left_key: &str,
        right_key: &str,
        spec: WindowSpec,
    ) -> Result<(Join, Schema), BuildError> {
        spec.validate()?;
        let (left_pos, left_ty) = resolve_field(left, left_key, "left key")?;
        let (right_pos, right_ty) = resolve_field(right, right_key, "right key")?;
        if left_ty != right_ty {
            return Err(BuildError::KeyTypeMismatch {
                left: left_key.to_owned(),
                left_ty,
                right: right_key.to_owned(),
                right_ty,
            });
        }
        let schema = joined_schema(left, right)?;
        let join =
            Join { key_pos: [left_pos, right_pos], panes: PaneStore::new(spec), row: Vec::with_capacity(schema.len()) };
        Ok((join, schema))
    }

    /// Records dropped because all their windows had expired.
    /// Whether its keys move between shards exactly: when it allows no lateness (see
    /// [`crate::builtins::Window::moves_exactly`]).
    pub fn moves_exactly(&self) -> bool {
        self.panes.spec().lateness_ms == 0
    }

    pub fn late_dropped(&self) -> u64 {
        self.panes.late_dropped()
    }

    /// Every key, its hash and its panes as text (migration tests).
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Vec<(super::keyed::OwnedKey, u64, String)> {
        self.panes.snapshot()
    }

    /// Number of keys held (join keys with a live window).
    pub fn key_count(&self) -> usize {
        self.panes.live_keys()
    }

    /// Remove every key whose routing key hash is `moving`, with all its live windows (fired or
    /// not) and their buffered records, and return them as an rkyv archive for
    /// [`Join::import_keys`] on the instance of the same join on another shard. A join's state
    /// is keyed by the join key, and each side is routed by its join key field's
    /// [`key_hash`](crate::record::ArchivedValue::key_hash) (both fields have one type, so equal
    /// keys hash equally): the routing hash is the state's hash. The late-drop count stays
    /// here. Cold path.
    pub fn export_keys(&mut self, moving: &dyn Fn(u64) -> bool) -> AlignedVec {
        let keys = self.panes.take_keys(moving);
        KeyArchive::Join { shape: self.panes.shape_tag(), keys }.to_bytes()
    }

    /// Insert keys exported by [`Join::export_keys`] from another instance of the same join,
    /// none of which this instance holds. The archive is validated first; on error nothing
    /// changes.
    ///
    /// Watermark contract, as for [`Window::import_keys`](crate::builtins::Window::import_keys):
    /// nothing is emitted here; the caller then calls [`Operator::on_watermark`] with this
    /// instance's current watermark `w` (the last one it saw, or later), which emits the pairs of
    /// exactly the imported windows that are due at `w` and had not fired on the sender, expires
    /// those whose lateness has passed, emits nothing for the keys already here, and leaves the
    /// late-drop count unchanged. No pair is emitted twice.
    pub fn import_keys(&mut self, archive: &[u8]) -> Result<(), MigrateError> {
        let expected = || KeyArchive::Join { shape: self.panes.shape_tag(), keys: Vec::new() }.kind();
        let (shape, keys) = match KeyArchive::decode(archive)? {
            KeyArchive::Join { shape, keys } => (shape, keys),
            other => return Err(MigrateError::WrongKind { expected: expected(), found: other.kind() }),
        };
        if shape != self.panes.shape_tag() {
            let found = KeyArchive::Join { shape, keys: Vec::new() }.kind();
            return Err(MigrateError::WrongKind { expected: expected(), found });
        }
        self.panes.check_keys(&keys)?;
        self.panes.put_keys(keys);
        Ok(())
    }
}

/// `window_start, window_end`, the left fields, then the right fields, renamed where they clash.
fn joined_schema(left: &Schema, right: &Schema) -> Result<Schema, BuildError> {
    let mut fields = vec![("window_start".to_owned(), FieldType::U64), ("window_end".to_owned(), FieldType::U64)];
    for (name, ty) in left.fields() {
        let taken = fields.iter().any(|(n, _)| n == name);
        let name = if taken { format!("left_{name}") } else { name.to_owned() };
        fields.push((name, ty));
    }
    for (name, ty) in right.fields() {
        let taken = fields.iter().any(|(n, _)| n == name);
        let name = if taken { format!("right_{name}") } else { name.to_owned() };
        fields.push((name, ty));
    }
    output_schema(fields)
}

/// Emit one joined pair. Hot path: allocates only to clone string fields.
#[inline]
fn emit_pair<E: Emitter>(row: &mut Vec<Value>, window: (u64, u64), pair: (&[Value], &[Value]), hash: u64, out: &mut E) {
    row.clear();
    row.push(Value::U64(window.0));
    row.push(Value::U64(window.1));
    row.extend_from_slice(pair.0);
    row.extend_from_slice(pair.1);
    out.emit(hash, window.1, row);
}

/// Emit every pair of a fired pane, left-arrival then right-arrival order.
fn emit_pane<E: Emitter>(row: &mut Vec<Value>, window: (u64, u64), pane: &JoinPane, hash: u64, out: &mut E) {
    for l in &pane.left {
        for r in &pane.right {
            emit_pair(row, window, (l, r), hash, out);
        }
    }
}

impl Operator for Join {
    /// Hot path: copies the record into each of its windows (join buffers own their records).
    fn on_record<E: Emitter>(&mut self, msg: Msg, rec: &ArchivedRecord, _: &[u8], out: &mut E) {
        let side = match msg.port {
            0 => Side::Left,
            1 => Side::Right,
            _ => return, // a join has two inputs only
        };
        let Some(key) = rec.fields.get(self.key_pos[side as usize]).map(KeyRef::of) else {
            return;
        };
        let values = rec.to_values();
        let row = &mut self.row;
        let add = |_: &_, hash, pane: &mut super::panes::Pane<JoinPane>| {
            let window = (pane.start, pane.end);
            let (mine, theirs) = pane.body.sides_mut(side);
            mine.push(values.clone());
            if pane.fired {
                // Late but within lateness: only the pairs this record makes are new.
                for other in theirs {
                    let pair = match side {
                        Side::Left => (values.as_slice(), other.as_slice()),
                        Side::Right => (other.as_slice(), values.as_slice()),
                    };
                    emit_pair(row, window, pair, hash, out);
                }
            }
        };
        self.panes.assign(key, msg.event_time, JoinPane::default, add);
    }

    fn on_watermark<E: Emitter>(&mut self, watermark: u64, out: &mut E) {
        let row = &mut self.row;
        self.panes.advance(watermark, |_, hash, pane| emit_pane(row, (pane.start, pane.end), &pane.body, hash, out));
    }

    fn on_end<E: Emitter>(&mut self, out: &mut E) {
        let row = &mut self.row;
        self.panes.finish(|_, hash, pane| emit_pane(row, (pane.start, pane.end), &pane.body, hash, out));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtins::WindowKind;
    use crate::operator::VecEmitter;
    use crate::testkit::{feed, Rng};
    use std::collections::HashSet;

    fn bids() -> Schema {
        Schema::new(vec![("auction".into(), FieldType::U64), ("price".into(), FieldType::U64)])
    }

    fn auctions() -> Schema {
        Schema::new(vec![("auction".into(), FieldType::U64), ("seller".into(), FieldType::Str)])
    }

    fn on(port: u8, t: u64) -> Msg {
        Msg { key_hash: 0, event_time: t, port }
    }

    #[test]
    fn output_schema_prefixes_clashing_right_fields() {
        let (_, schema) = Join::new(&bids(), &auctions(), "auction", "auction", WindowSpec::tumbling(10)).unwrap();
        let names: Vec<_> = schema.fields().map(|(n, _)| n.to_owned()).collect();
        assert_eq!(names, ["window_start", "window_end", "auction", "price", "right_auction", "seller"]);
        let err = Join::new(&bids(), &auctions(), "auction", "seller", WindowSpec::tumbling(10)).err().unwrap();
        assert_eq!(err.to_string(), "join keys differ in type: left `auction` is u64, right `seller` is string");
    }

    #[test]
    fn pairs_per_window_in_arrival_order() {
        let spec = WindowSpec::tumbling(10).with_lateness(5);
        let (mut j, _) = Join::new(&bids(), &auctions(), "auction", "auction", spec).unwrap();
        let mut out = VecEmitter::default();
        let bid = |a, p| vec![Value::U64(a), Value::U64(p)];
        let auction = |a, s: &str| vec![Value::U64(a), Value::Str(s.into())];
        feed(&mut j, on(0, 1), bid(1, 10), &mut out);
        feed(&mut j, on(1, 2), auction(1, "ann"), &mut out);
        feed(&mut j, on(0, 3), bid(1, 11), &mut out);
        feed(&mut j, on(0, 4), bid(2, 99), &mut out); // no partner
        feed(&mut j, on(1, 12), auction(1, "bob"), &mut out); // next window
        j.on_watermark(10, &mut out);
        feed(&mut j, on(1, 9), auction(1, "cid"), &mut out); // late, within lateness
        j.on_end(&mut out);
        let row = |p, s: &str| {
            let mut r = vec![Value::U64(0), Value::U64(10)];
            r.extend(bid(1, p));
            r.extend(auction(1, s));
            r
        };
        let got: Vec<_> = out.out.iter().map(|(_, _, v)| v.clone()).collect();
        assert_eq!(got, vec![row(10, "ann"), row(11, "ann"), row(10, "cid"), row(11, "cid")]);
        assert!(out.out.iter().all(|(h, t, _)| *h == Value::U64(1).key_hash() && *t == 10));
    }

    /// (port, key, t, payload) events and watermarks.
    enum Ev {
        Rec(u8, u64, u64, u64),
        Wm(u64),
    }

    /// Brute force over accepted (port, key, window start, payload) contributions.
    fn reference(spec: WindowSpec, events: &[Ev]) -> (Vec<(u64, u64, Vec<Value>)>, u64) {
        let (size, slide) = match spec.kind {
            WindowKind::Tumbling { size_ms } => (size_ms, size_ms),
            WindowKind::Sliding { size_ms, slide_ms } => (size_ms, slide_ms),
        };
        let (mut wm, mut dropped) = (0, 0);
        let mut acc: Vec<(u8, u64, u64, u64)> = Vec::new();
        let mut fired: HashSet<(u64, u64)> = HashSet::new();
        let mut out = Vec::new();
        let pair = |s: u64, k: u64, l: u64, r: u64| {
            let row =
                vec![Value::U64(s), Value::U64(s + size), Value::U64(k), Value::U64(l), Value::U64(k), Value::U64(r)];
            (Value::U64(k).key_hash(), s + size, row)
        };
        let fire_all = |due: Vec<(u64, u64)>, acc: &[(u8, u64, u64, u64)], out: &mut Vec<_>| {
            for (s, k) in due {
                let side = |p| acc.iter().filter(move |a| a.0 == p && a.1 == k && a.2 == s).map(|a| a.3);
                for l in side(0) {
                    for r in side(1) {
                        out.push(pair(s, k, l, r));
                    }
                }
            }
        };
        let unfired = |acc: &[(u8, u64, u64, u64)], fired: &HashSet<(u64, u64)>, limit: u64| {
            let mut due: Vec<(u64, u64)> =
                acc.iter().map(|a| (a.2, a.1)).filter(|w| w.0 + size <= limit && !fired.contains(w)).collect();
            due.sort();
            due.dedup();
            due
        };
        for ev in events {
            match *ev {
                Ev::Rec(p, k, t, x) => {
                    let live: Vec<u64> = (0..=t / slide)
                        .map(|i| i * slide)
                        .filter(|s| s + size > t && s + size + spec.lateness_ms > wm)
                        .collect();
                    dropped += u64::from(live.is_empty());
                    for s in live {
                        acc.push((p, k, s, x));
                        if s + size <= wm {
                            fired.insert((s, k));
                            let others = acc.iter().filter(|a| a.0 != p && a.1 == k && a.2 == s);
                            let pairs: Vec<_> =
                                others.map(|o| if p == 0 { pair(s, k, x, o.3) } else { pair(s, k, o.3, x) }).collect();
                            out.extend(pairs);
                        }
                    }
                }
                Ev::Wm(w) if w > wm => {
                    wm = w;
                    let due = unfired(&acc, &fired, wm);
                    fired.extend(due.iter().copied());
                    fire_all(due, &acc, &mut out);
                }
                Ev::Wm(_) => {}
            }
        }
        fire_all(unfired(&acc, &fired, u64::MAX - size), &acc, &mut out);
        (out, dropped)
    }

    #[test]
    fn random_streams_match_a_brute_force_reference() {
        let (mut all_out, mut all_dropped) = (0, 0);
        let (left, right) =
            (bids(), Schema::new(vec![("auction".into(), FieldType::U64), ("x".into(), FieldType::U64)]));
        for seed in 0..40 {
            let mut rng = Rng(100 + seed);
            let size = 2 + rng.below(15);
            let spec = match rng.below(2) {
                0 => WindowSpec::tumbling(size),
                _ => WindowSpec::sliding(size, 1 + rng.below(size + 2)),
            }
            .with_lateness(rng.below(2) * rng.below(12));
            let (mut events, mut clock) = (Vec::new(), 0);
            for i in 0..200 {
                clock += rng.below(3);
                events.push(match rng.below(10) {
                    0 => Ev::Wm(clock.saturating_sub(rng.below(8))),
                    _ => Ev::Rec(rng.below(2) as u8, rng.below(4), clock.saturating_sub(rng.below(20)), i),
                });
            }
            let (mut j, _) = Join::new(&left, &right, "auction", "auction", spec).unwrap();
            let mut out = VecEmitter::default();
            for ev in &events {
                match *ev {
                    Ev::Rec(p, k, t, x) => feed(&mut j, on(p, t), vec![Value::U64(k), Value::U64(x)], &mut out),
                    Ev::Wm(w) => j.on_watermark(w, &mut out),
                }
            }
            j.on_end(&mut out);
            let (expected, dropped) = reference(spec, &events);
            assert_eq!(out.out, expected, "seed {seed} {spec:?}");
            assert_eq!(j.late_dropped(), dropped, "seed {seed}");
            (all_out, all_dropped) = (all_out + expected.len(), all_dropped + dropped);
        }
        assert!(all_out > 0 && all_dropped > 0, "the streams exercise pairs and lateness");
    }
}
