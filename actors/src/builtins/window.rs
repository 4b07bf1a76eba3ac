//! Keyed event-time windows (tumbling and sliding, with allowed lateness) aggregating one field:
//! the `Window` operator (window shapes and assignment are in `shape.rs`).
//!
//! Output `{key, window_start, window_end, <op>}` (times in ms, end exclusive) at event time
//! `window_end`, keyed by the actor's key hash. Windows fire when the watermark reaches their end,
//! in `(window_end, key value)` order; see `panes.rs` for the lateness rules.

use super::agg::{AggOp, AggPartial};
use super::panes::{Pane, PaneStore};
use super::shape::WindowSpec;
use super::{output_schema, BuildError, KeySource};
use crate::builtins::moved::{agg_name, same_agg, KeyArchive};
use crate::migrate::MigrateError;
use crate::operator::{Emitter, Msg, Operator};
use crate::record::{ArchivedRecord, FieldType, Schema, Value};
use crate::state::Mergeable;
use rkyv::util::AlignedVec;

/// A window's partial state as it travels from a lessee to its lessor (an rkyv archive).
#[derive(Clone, Debug, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct WindowPartial {
    pub keys: Vec<super::panes::KeyPanes<AggPartial>>,
}

/// Mergeable: a lessee starts from empty panes; combining merges pane by pane (each pane's
/// aggregate with [`AggPartial`]'s exact combine).
impl Mergeable for Window {
    fn partition(&self) -> Self {
        self.empty_like()
    }
    fn combine(&mut self, partial: Self) {
        self.merge_partial(partial.export_partial());
    }
}

/// Keyed windowed aggregate of one field.
pub struct Window {
    key: KeySource,
    field: Option<usize>,
    zero: AggPartial,
    panes: PaneStore<AggPartial>,
    /// Scratch output row `{key, window_start, window_end, <op>}`, reused.
    row: [Value; 4],
}

impl Window {
    /// The same window, its key field being what every edge into it partitions by (as an engine's
    /// plan routes a keyed built-in): a record's key hash is its message's, not computed again.
    /// Cold path.
    pub fn routed_by_key(mut self) -> Self {
        self.key = self.key.routed();
        self
    }

    /// A window of `spec` computing `op` over `field` per `key` (`None`: the upstream key hash).
    /// Output schema: `key` (the key field's type, or u64), `window_start`, `window_end` (u64 ms)
    /// and the op's name.
    pub fn new(
        input: &Schema,
        spec: WindowSpec,
        op: AggOp,
        field: Option<&str>,
        key: Option<&str>,
    ) -> Result<(Window, Schema), BuildError> {
        spec.validate()?;
        let (zero, field) = AggPartial::build(op, input, field)?;
        let (key, key_ty) = KeySource::resolve(input, key)?;
        let schema = output_schema(vec![
            ("key".into(), key_ty),
            ("window_start".into(), FieldType::U64),
            ("window_end".into(), FieldType::U64),
            (op.name().into(), zero.output_type()),
        ])?;
        let row = [Value::U64(0), Value::U64(0), Value::U64(0), Value::U64(0)];
        let panes = PaneStore::new(spec);
        Ok((Window { key, field, zero, panes, row }, schema))
    }

    /// Records dropped because all their windows had expired.
    /// Whether its keys move between shards exactly (key-group migration): when it allows no
    /// lateness. With lateness, a late record's fate (re-emitted or dropped) depends on the
    /// watermark it meets, and moving a group changes which instance's watermark that is; such a
    /// window stays where its groups start (documented gap).
    pub fn moves_exactly(&self) -> bool {
        self.panes.spec().lateness_ms == 0
    }

    pub fn late_dropped(&self) -> u64 {
        self.panes.late_dropped()
    }

    /// Whether moving the watermark from `from` to `to` fires or expires anything, or changes
    /// which records are late: only then is it a barrier for lessees.
    pub fn watermark_matters(&self, from: u64, to: u64) -> bool {
        self.panes.spec().has_boundary_in(from, to)
    }

    /// Whether partials of this window merge exactly (see [`AggPartial::merges_exactly`]): only
    /// then may it have lessees.
    pub fn merges_exactly(&self) -> bool {
        self.zero.merges_exactly()
    }

    /// The same window with no panes: what a lessee starts from.
    pub fn empty_like(&self) -> Window {
        let row = [Value::U64(0), Value::U64(0), Value::U64(0), Value::U64(0)];
        Window { key: self.key, field: self.field, zero: self.zero, panes: self.panes.empty_like(), row }
    }

    /// Whether a record at `event_time` may run on a lessee: every window it falls in is still
    /// open at `watermark`, the watermark the record will meet (it only folds into unfired
    /// panes, emits nothing and is not late).
    #[inline]
    pub fn folds_anywhere(&self, event_time: u64, watermark: u64) -> bool {
        self.panes.all_windows_open(event_time, watermark)
    }

    /// The unfired panes of every key, to ship to the lessor.
    pub fn export_partial(&self) -> WindowPartial {
        WindowPartial { keys: self.panes.export() }
    }

    /// Fold a lessee's partial in.
    pub fn merge_partial(&mut self, partial: WindowPartial) {
        self.panes.merge(partial.keys, Mergeable::combine);
    }

    /// Keys that have at least one live window (a measure of state size).
    pub fn live_keys(&self) -> usize {
        self.panes.live_keys()
    }

    /// Number of keys held (those with a live window: the same as [`Window::live_keys`]).
    pub fn key_count(&self) -> usize {
        self.panes.live_keys()
    }

    /// Remove every key whose routing key hash (the `key_hash` its records are routed by: the
    /// key field's [`key_hash`](crate::record::ArchivedValue::key_hash), or the upstream key
    /// hash) is `moving`, with all its live windows, fired or not, and return them as an rkyv
    /// archive for [`Window::import_keys`] on the instance of the same window on another shard.
    /// The late-drop count stays here. Call it on an instance with no lessees (every partial
    /// merged). Cold path.
    pub fn export_keys(&mut self, moving: &dyn Fn(u64) -> bool) -> AlignedVec {
        let keys = self.panes.take_keys(moving);
        KeyArchive::Window { shape: self.panes.shape_tag(), zero: self.zero, keys }.to_bytes()
    }

    /// Insert keys exported by [`Window::export_keys`] from another instance of the same window,
    /// none of which this instance holds. The archive is validated first; on error nothing
    /// changes.
    ///
    /// Watermark contract: the sender may have been at another watermark. Nothing is emitted
    /// here; the caller then calls [`Operator::on_watermark`] with this instance's current
    /// watermark `w` (equal to the last one it saw, or later). That call fires exactly the
    /// imported windows that are due at `w` and had not fired on the sender, in the usual
    /// `(window_end, key)` order, expires imported windows whose lateness has passed, emits
    /// nothing for the keys that were already here (a repeated watermark is a no-op for them),
    /// and does not change the late-drop count. An imported window that fired on the sender
    /// never fires again. If the receiver is behind the sender, records of moved keys are judged
    /// late against the receiver's watermark.
    pub fn import_keys(&mut self, archive: &[u8]) -> Result<(), MigrateError> {
        let (shape, zero, keys) = match KeyArchive::decode(archive)? {
            KeyArchive::Window { shape, zero, keys } => (shape, zero, keys),
            other => return Err(self.wrong_kind(other.kind())),
        };
        if shape != self.panes.shape_tag() || !same_agg(&zero, &self.zero) {
            let found = KeyArchive::Window { shape, zero, keys: Vec::new() }.kind();
            return Err(self.wrong_kind(found));
        }
        if let Some(p) = keys.iter().flat_map(|k| &k.panes).find(|p| !same_agg(&p.body, &self.zero)) {
            return Err(MigrateError::Corrupt(format!(
                "a pane of {} in an archive of {}",
                agg_name(&p.body),
                agg_name(&zero)
            )));
        }
        self.panes.check_keys(&keys)?;
        self.panes.put_keys(keys);
        Ok(())
    }

    /// Every key, its hash and its panes as text (migration tests).
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Vec<(super::keyed::OwnedKey, u64, String)> {
        self.panes.snapshot()
    }

    fn wrong_kind(&self, found: String) -> MigrateError {
        let expected = KeyArchive::Window { shape: self.panes.shape_tag(), zero: self.zero, keys: Vec::new() }.kind();
        MigrateError::WrongKind { expected, found }
    }
}

/// Emit one pane's result. Hot path: no allocation (string keys reuse the row's buffer).
#[inline]
fn emit_pane<E: Emitter>(
    row: &mut [Value; 4],
    key: &super::keyed::OwnedKey,
    hash: u64,
    pane: &Pane<AggPartial>,
    out: &mut E,
) {
    key.write_into(&mut row[0]);
    row[1] = Value::U64(pane.start);
    row[2] = Value::U64(pane.end);
    pane.body.write_result(&mut row[3]);
    out.emit(hash, pane.end, row);
}

impl Operator for Window {
    /// Hot path: allocates only for a new key or pane.
    fn on_record<E: Emitter>(&mut self, msg: Msg, rec: &ArchivedRecord, _: &[u8], out: &mut E) {
        let Some(key) = self.key.key_of(&msg, &rec.fields) else {
            return;
        };
        let value = self.field.and_then(|pos| rec.fields.get(pos));
        let (zero, row) = (self.zero, &mut self.row);
        let update = |key: &_, hash, pane: &mut Pane<AggPartial>| {
            pane.body.fold_value(value);
            if pane.fired {
                emit_pane(row, key, hash, pane, out);
            }
        };
        self.panes.assign(key, msg.event_time, || zero, update);
    }

    fn on_watermark<E: Emitter>(&mut self, watermark: u64, out: &mut E) {
        let row = &mut self.row;
        let fire = |key: &_, hash, pane: &Pane<AggPartial>| emit_pane(row, key, hash, pane, out);
        self.panes.advance(watermark, fire);
    }

    fn on_end<E: Emitter>(&mut self, out: &mut E) {
        let row = &mut self.row;
        self.panes.finish(|key, hash, pane| emit_pane(row, key, hash, pane, out));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtins::WindowKind;
    use crate::operator::VecEmitter;
    use crate::testkit::{feed, msg, Rng};
    use std::collections::HashSet;

    fn bids() -> Schema {
        Schema::new(vec![("auction".into(), FieldType::U64), ("price".into(), FieldType::I64)])
    }

    fn row(key: Value, start: u64, end: u64, result: Value) -> Vec<Value> {
        vec![key, Value::U64(start), Value::U64(end), result]
    }

    #[test]
    fn window_starts_follow_the_definition() {
        let starts = |spec: WindowSpec, t| spec.starts(t).collect::<Vec<_>>();
        assert_eq!(starts(WindowSpec::tumbling(10), 17), vec![10]);
        assert_eq!(starts(WindowSpec::sliding(10, 5), 7), vec![0, 5]);
        assert_eq!(starts(WindowSpec::sliding(10, 5), 3), vec![0]);
        assert_eq!(starts(WindowSpec::sliding(10, 3), 10), vec![3, 6, 9]);
        assert_eq!(starts(WindowSpec::sliding(4, 10), 15), Vec::<u64>::new());
        assert!(Window::new(&bids(), WindowSpec::tumbling(0), AggOp::Count, None, None).is_err());
    }

    #[test]
    fn tumbling_sum_per_auction() {
        let spec = WindowSpec::tumbling(10);
        let (mut w, schema) = Window::new(&bids(), spec, AggOp::Sum, Some("price"), Some("auction")).unwrap();
        let names: Vec<_> = schema.fields().map(|(n, _)| n.to_owned()).collect();
        assert_eq!(names, ["key", "window_start", "window_end", "sum"]);
        let mut out = VecEmitter::default();
        for (auction, price, t) in [(2, 7, 3), (1, 5, 1), (1, 4, 9), (1, 10, 12)] {
            feed(&mut w, msg(0, t), vec![Value::U64(auction), Value::I64(price)], &mut out);
        }
        w.on_watermark(10, &mut out);
        w.on_end(&mut out);
        let got: Vec<_> = out.out.iter().map(|(_, t, v)| (*t, v.clone())).collect();
        assert_eq!(
            got,
            vec![
                (10, row(Value::U64(1), 0, 10, Value::I64(9))),
                (10, row(Value::U64(2), 0, 10, Value::I64(7))),
                (20, row(Value::U64(1), 10, 20, Value::I64(10))),
            ]
        );
        assert_eq!(out.out[0].0, Value::U64(1).key_hash());
    }

    #[test]
    fn late_record_within_lateness_re_emits_and_beyond_is_dropped() {
        let spec = WindowSpec::sliding(10, 5).with_lateness(4);
        let (mut w, _) = Window::new(&bids(), spec, AggOp::Count, None, None).unwrap();
        let mut out = VecEmitter::default();
        let bid = || vec![Value::U64(1), Value::I64(1)];
        feed(&mut w, msg(77, 7), bid(), &mut out);
        w.on_watermark(12, &mut out); // fires [0, 10)
        feed(&mut w, msg(77, 8), bid(), &mut out); // [0, 10) re-emitted; [5, 15) open
        w.on_watermark(14, &mut out); // [0, 10) expires
        feed(&mut w, msg(77, 2), bid(), &mut out); // only in [0, 10): dropped
        w.on_end(&mut out);
        let got: Vec<_> = out.out.iter().map(|(_, _, v)| v.clone()).collect();
        assert_eq!(
            got,
            vec![
                row(Value::U64(77), 0, 10, Value::U64(1)),
                row(Value::U64(77), 0, 10, Value::U64(2)),
                row(Value::U64(77), 5, 15, Value::U64(2)),
            ]
        );
        assert_eq!(w.late_dropped(), 1);
    }

    enum Ev {
        Rec(String, u64, i64),
        Wm(u64),
    }

    /// Brute force: every window's result recomputed from the list of accepted contributions.
    type Emitted = Vec<(u64, u64, Vec<Value>)>;

    /// Returns the output, the dropped count and the number of late re-emissions.
    fn reference(spec: WindowSpec, op: AggOp, events: &[Ev]) -> (Emitted, u64, usize) {
        let (size, slide) = (
            spec.size_ms(),
            match spec.kind {
                WindowKind::Tumbling { size_ms } => size_ms,
                WindowKind::Sliding { slide_ms, .. } => slide_ms,
            },
        );
        let (mut wm, mut dropped, mut late_emits) = (0u64, 0u64, 0);
        let mut accepted: Vec<(String, u64, i64)> = Vec::new();
        let mut fired: HashSet<(String, u64)> = HashSet::new();
        let mut out = Vec::new();
        let result = |acc: &[(String, u64, i64)], k: &str, s: u64| {
            let xs: Vec<i64> = acc.iter().filter(|a| a.0 == k && a.1 == s).map(|a| a.2).collect();
            let sum = xs.iter().fold(0i64, |a, b| a.wrapping_add(*b));
            let value = match op {
                AggOp::Count => Value::U64(xs.len() as u64),
                AggOp::Sum => Value::I64(sum),
                AggOp::Min => Value::I64(*xs.iter().min().unwrap()),
                AggOp::Max => Value::I64(*xs.iter().max().unwrap()),
                AggOp::Avg => Value::F64(xs.iter().map(|x| *x as i128).sum::<i128>() as f64 / xs.len() as f64),
            };
            let key = Value::Str(k.to_owned());
            (key.key_hash(), s + size, row(key, s, s + size, value))
        };
        let fire = |due: Vec<(u64, String)>, acc: &[(String, u64, i64)], fired: &mut HashSet<_>, out: &mut Vec<_>| {
            for (s, k) in due {
                out.push(result(acc, &k, s));
                fired.insert((k, s));
            }
        };
        for ev in events {
            match ev {
                Ev::Rec(k, t, v) => {
                    let live: Vec<u64> = (0..=*t / slide)
                        .map(|i| i * slide)
                        .filter(|s| s + size > *t && s + size + spec.lateness_ms > wm)
                        .collect();
                    if live.is_empty() {
                        dropped += 1;
                    }
                    for s in &live {
                        accepted.push((k.clone(), *s, *v));
                    }
                    let late: Vec<_> = live.into_iter().filter(|s| s + size <= wm).map(|s| (s, k.clone())).collect();
                    late_emits += late.len();
                    fire(late, &accepted, &mut fired, &mut out);
                }
                Ev::Wm(w) if *w > wm => {
                    wm = *w;
                    let mut due: Vec<(u64, String)> = accepted
                        .iter()
                        .filter(|a| a.1 + size <= wm && !fired.contains(&(a.0.clone(), a.1)))
                        .map(|a| (a.1, a.0.clone()))
                        .collect();
                    due.sort();
                    due.dedup();
                    fire(due, &accepted, &mut fired, &mut out);
                }
                Ev::Wm(_) => {}
            }
        }
        let mut due: Vec<(u64, String)> =
            accepted.iter().filter(|a| !fired.contains(&(a.0.clone(), a.1))).map(|a| (a.1, a.0.clone())).collect();
        due.sort();
        due.dedup();
        fire(due, &accepted, &mut fired, &mut out);
        (out, dropped, late_emits)
    }

    #[test]
    fn random_streams_match_a_brute_force_reference() {
        let schema = Schema::new(vec![("k".into(), FieldType::Str), ("v".into(), FieldType::I64)]);
        let ops = [AggOp::Count, AggOp::Sum, AggOp::Min, AggOp::Max, AggOp::Avg];
        let (mut all_dropped, mut all_late) = (0, 0);
        for seed in 0..60 {
            let mut rng = Rng(seed);
            let size = 2 + rng.below(20);
            let spec = match rng.below(2) {
                0 => WindowSpec::tumbling(size),
                _ => WindowSpec::sliding(size, 1 + rng.below(size + 3)),
            }
            .with_lateness(rng.below(3) * rng.below(15));
            let op = ops[rng.below(5) as usize];
            let mut events = Vec::new();
            let mut clock = 0;
            for _ in 0..300 {
                clock += rng.below(3);
                if rng.below(10) == 0 {
                    events.push(Ev::Wm(clock.saturating_sub(rng.below(10))));
                } else {
                    let t = clock.saturating_sub(rng.below(25));
                    let v = rng.below(2001) as i64 - 1000;
                    events.push(Ev::Rec(format!("key{}", rng.below(6)), t, v));
                }
            }
            let (mut w, _) = Window::new(&schema, spec, op, Some("v"), Some("k")).unwrap();
            let mut out = VecEmitter::default();
            for ev in &events {
                match ev {
                    Ev::Rec(k, t, v) => {
                        let values = vec![Value::Str(k.clone()), Value::I64(*v)];
                        feed(&mut w, msg(0, *t), values, &mut out);
                    }
                    Ev::Wm(wm) => w.on_watermark(*wm, &mut out),
                }
            }
            w.on_end(&mut out);
            let (expected, dropped, late) = reference(spec, op, &events);
            (all_dropped, all_late) = (all_dropped + dropped, all_late + late);
            assert_eq!(out.out, expected, "seed {seed} spec {spec:?} op {op}");
            assert_eq!(w.late_dropped(), dropped, "seed {seed}");
        }
        assert!(all_dropped > 0 && all_late > 0, "the streams exercise lateness");
    }

    /// A lessor window and a lessee partial: on-time records go to either at random (late ones
    /// only to the lessor), the partial is shipped through its rkyv archive and merged at each
    /// watermark and at the end. The output equals the single window's, byte for byte.
    #[test]
    fn partials_merged_at_watermarks_equal_one_window() {
        let schema = Schema::new(vec![("k".into(), FieldType::Str), ("v".into(), FieldType::I64)]);
        let ops = [AggOp::Count, AggOp::Sum, AggOp::Min, AggOp::Max, AggOp::Avg];
        let mut on_lessee = 0;
        for seed in 0..60 {
            let mut rng = Rng(seed ^ 0x5eed);
            let size = 2 + rng.below(20);
            let spec = match rng.below(2) {
                0 => WindowSpec::tumbling(size),
                _ => WindowSpec::sliding(size, 1 + rng.below(size + 3)),
            }
            .with_lateness(rng.below(3) * rng.below(15));
            let op = ops[rng.below(5) as usize];
            let (mut single, _) = Window::new(&schema, spec, op, Some("v"), Some("k")).unwrap();
            let (mut lessor, _) = Window::new(&schema, spec, op, Some("v"), Some("k")).unwrap();
            let mut lessee = lessor.partition();
            let (mut want, mut got) = (VecEmitter::default(), VecEmitter::default());
            let ship = |lessor: &mut Window, lessee: &mut Window| {
                let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&lessee.export_partial()).unwrap();
                let partial = rkyv::from_bytes::<WindowPartial, rkyv::rancor::Error>(&bytes).unwrap();
                lessor.merge_partial(partial);
                *lessee = lessor.partition();
            };
            let mut clock = 0;
            for _ in 0..300 {
                clock += rng.below(3);
                if rng.below(10) == 0 {
                    let wm = clock.saturating_sub(rng.below(10));
                    single.on_watermark(wm, &mut want);
                    ship(&mut lessor, &mut lessee);
                    lessor.on_watermark(wm, &mut got);
                } else {
                    let t = clock.saturating_sub(rng.below(25));
                    let values =
                        vec![Value::Str(format!("key{}", rng.below(6))), Value::I64(rng.below(2001) as i64 - 1000)];
                    feed(&mut single, msg(0, t), values.clone(), &mut want);
                    if lessor.folds_anywhere(t, 0) && rng.below(2) == 0 {
                        on_lessee += 1;
                        let before = got.out.len();
                        feed(&mut lessee, msg(0, t), values, &mut got);
                        assert_eq!(got.out.len(), before, "a record folded on a lessee emits nothing");
                    } else {
                        feed(&mut lessor, msg(0, t), values, &mut got);
                    }
                }
            }
            single.on_end(&mut want);
            ship(&mut lessor, &mut lessee);
            lessor.on_end(&mut got);
            assert_eq!(got.out, want.out, "seed {seed} spec {spec:?} op {op}");
            assert_eq!(lessor.late_dropped(), single.late_dropped(), "seed {seed}");
        }
        assert!(on_lessee > 1000, "most records ran on the lessee ({on_lessee})");
    }

    #[test]
    fn boundaries_are_the_window_ends_and_their_lateness() {
        let brute = |spec: WindowSpec, from: u64, to: u64| {
            let (size, slide, l) = (spec.size_ms(), spec.slide_ms(), spec.lateness_ms);
            (0..=to / slide).map(|k| k * slide + size).any(|e| (from < e && e <= to) || (from < e + l && e + l <= to))
        };
        let mut rng = Rng(3);
        for _ in 0..20_000 {
            let size = 1 + rng.below(30);
            let spec = match rng.below(2) {
                0 => WindowSpec::tumbling(size),
                _ => WindowSpec::sliding(size, 1 + rng.below(size + 5)),
            }
            .with_lateness(rng.below(3) * rng.below(20));
            let from = rng.below(200);
            let to = from + rng.below(40);
            assert_eq!(spec.has_boundary_in(from, to), brute(spec, from, to), "{spec:?} ({from}, {to}]");
        }
    }
}
