//! Event-time panes per key, shared by window and join: assigning a record to its windows under
//! allowed lateness, firing due panes on the watermark in a deterministic order, and expiring
//! them once their lateness has passed.
//!
//! Rules (Flink's, for a window `[start, end)` with allowed lateness `L`, watermark `wm`):
//! - a pane fires once, when `wm >= end` (or at end of input);
//! - it is kept until `wm >= end + L`; a record reaching it in between updates it and the
//!   operator re-emits at once (the visitor sees `fired == true`);
//! - a record whose every window has `end + L <= wm` is dropped and counted;
//! - panes that fire together are visited in `(end, key)` order, keys by value: the output does
//!   not depend on arrival order, on slot reuse, or on how keys were spread over shards.

use crate::record::Value;
use std::collections::BTreeSet;

use super::keyed::{KeyRef, KeyedState, OwnedKey, SlotId};
use super::shape::WindowSpec;

/// One key's window `[start, end)` and what the operator keeps in it.
#[derive(Debug)]
pub(crate) struct Pane<P> {
    pub start: u64,
    pub end: u64,
    /// Whether the pane has fired (it may still take late records until it expires).
    pub fired: bool,
    pub body: P,
}

/// One key's unfired panes `(start, end, body)`, as a lessee ships them to its lessor.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct KeyPanes<P> {
    pub key: OwnedKey,
    pub hash: u64,
    pub panes: Vec<(u64, u64, P)>,
}

/// One key's live panes, fired or not, as they move to another instance (key-group migration).
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct MovedKey<P> {
    pub key: OwnedKey,
    /// The routing key hash.
    pub hash: u64,
    pub panes: Vec<MovedPane<P>>,
}

/// One pane on the move.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct MovedPane<P> {
    pub start: u64,
    pub end: u64,
    pub fired: bool,
    pub body: P,
}

/// Every key's live panes of one windowed operator, with its firing and expiry timers.
pub(crate) struct PaneStore<P> {
    spec: WindowSpec,
    /// Per key, its live panes: few (about size / slide, plus lateness), so scanned linearly.
    keys: KeyedState<Vec<Pane<P>>>,
    /// Unfired panes by (end, slot).
    due: BTreeSet<(u64, SlotId)>,
    /// Fired panes by (end + lateness, slot, end).
    expiry: BTreeSet<(u64, SlotId, u64)>,
    watermark: u64,
    late_dropped: u64,
    /// Scratch: panes firing now, reused across watermarks.
    firing: Vec<(u64, SlotId)>,
}

impl<P> PaneStore<P> {
    pub fn new(spec: WindowSpec) -> Self {
        PaneStore {
            spec,
            keys: KeyedState::new(),
            due: BTreeSet::new(),
            expiry: BTreeSet::new(),
            watermark: 0,
            late_dropped: 0,
            firing: Vec::new(),
        }
    }

    /// Records dropped because every window they belong to had expired.
    pub fn late_dropped(&self) -> u64 {
        self.late_dropped
    }

    /// The window spec.
    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// The same windows, empty: what a lessee starts from.
    pub fn empty_like(&self) -> Self {
        PaneStore::new(self.spec)
    }

    /// Whether a record at event time `t` only folds into panes that have not fired: it is in
    /// some window, emits nothing and is not late, so it may run on a partial (a lessee) and be
    /// merged later.
    #[inline]
    /// `watermark` is the one the record will meet (a record queued behind a watermark that
    /// has not been applied yet meets that one): at least this store's.
    pub fn all_windows_open(&self, t: u64, watermark: u64) -> bool {
        let (wm, size) = (self.watermark.max(watermark), self.spec.size_ms());
        let mut starts = self.spec.starts(t).peekable();
        // A record in no window at all (a gap between sliding windows) is counted as dropped.
        starts.peek().is_some() && starts.all(|start| start.saturating_add(size) > wm)
    }

    /// Every key's unfired panes, for shipping to the lessor.
    pub fn export(&self) -> Vec<KeyPanes<P>>
    where
        P: Clone,
    {
        let unfired = |p: &Pane<P>| (!p.fired).then(|| (p.start, p.end, p.body.clone()));
        let part = |(slot, key, panes): (SlotId, &OwnedKey, &Vec<Pane<P>>)| {
            let hash = self.keys.hash_of(slot).unwrap_or(0);
            KeyPanes { key: key.clone(), hash, panes: panes.iter().filter_map(unfired).collect() }
        };
        self.keys.iter().map(part).filter(|k| !k.panes.is_empty()).collect()
    }

    /// Fold a lessee's panes in: a pane this store has gets `combine`d, a missing one is added
    /// (it has not fired: a lessee only takes records whose windows are all open).
    pub fn merge(&mut self, parts: Vec<KeyPanes<P>>, mut combine: impl FnMut(&mut P, P)) {
        for part in parts {
            let slot = self.keys.find_or_insert_with(&part.key.as_key_ref(part.hash), Vec::new);
            let Some((_, _, panes)) = self.keys.entry_mut(slot) else {
                continue;
            };
            for (start, end, body) in part.panes {
                match panes.iter_mut().find(|p| p.end == end) {
                    Some(pane) => {
                        debug_assert!(!pane.fired, "a lessee's pane merged after it fired");
                        combine(&mut pane.body, body);
                    }
                    None => {
                        debug_assert!(end > self.watermark, "a lessee's pane is already due");
                        self.due.insert((end, slot));
                        panes.push(Pane { start, end, fired: false, body });
                    }
                }
            }
        }
    }

    /// Number of keys with live panes.
    pub fn live_keys(&self) -> usize {
        self.keys.len()
    }

    /// The window shape as archived with moved keys.
    pub fn shape_tag(&self) -> super::shape::ShapeTag {
        [self.spec.size_ms(), self.spec.slide_ms(), self.spec.lateness_ms]
    }

    /// Remove every key whose routing hash is `moving`, with all its live panes (fired or not)
    /// and their timers. Cold path: O(keys + timers).
    pub fn take_keys(&mut self, moving: &dyn Fn(u64) -> bool) -> Vec<MovedKey<P>> {
        let drained = self.keys.drain_where(|hash, _| moving(hash));
        if drained.is_empty() {
            return Vec::new();
        }
        // Timers of the slots just freed: every slot whose entry is gone now.
        let keys = &self.keys;
        self.due.retain(|(_, slot)| keys.get(*slot).is_some());
        self.expiry.retain(|(_, slot, _)| keys.get(*slot).is_some());
        let pane = |p: Pane<P>| MovedPane { start: p.start, end: p.end, fired: p.fired, body: p.body };
        drained
            .into_iter()
            .map(|(key, hash, panes)| MovedKey { key, hash, panes: panes.into_iter().map(pane).collect() })
            .collect()
    }

    /// Check keys moved from another instance before [`PaneStore::put_keys`]: each pane is a
    /// window of this store's shape, appears once, and no key is held here already.
    pub fn check_keys(&self, keys: &[MovedKey<P>]) -> Result<(), crate::migrate::MigrateError> {
        use crate::migrate::MigrateError;
        let (size, slide) = (self.spec.size_ms(), self.spec.slide_ms().max(1));
        for k in keys {
            for (i, p) in k.panes.iter().enumerate() {
                if p.start % slide != 0 || p.end != p.start.saturating_add(size) {
                    return Err(MigrateError::Corrupt(format!(
                        "pane [{}, {}) is not a window of this shape (size {size}, slide {slide})",
                        p.start, p.end
                    )));
                }
                if k.panes[..i].iter().any(|q| q.end == p.end) {
                    return Err(MigrateError::Corrupt(format!("pane [{}, {}) appears twice", p.start, p.end)));
                }
            }
        }
        super::keyed::check_new_keys(|k| self.keys.find(k).is_some(), keys.iter().map(|k| (&k.key, k.hash)))
    }

    /// Insert keys moved from another instance (checked by [`PaneStore::check_keys`]): unfired
    /// panes wait for their end, fired ones for their expiry. Nothing fires here: the next
    /// [`PaneStore::advance`], even to the watermark this store already has, fires the panes
    /// that are due and expires those whose lateness has passed. The late-drop count is
    /// unchanged. Keys without panes are not kept.
    pub fn put_keys(&mut self, keys: Vec<MovedKey<P>>) {
        let lateness = self.spec.lateness_ms;
        for k in keys.into_iter().filter(|k| !k.panes.is_empty()) {
            let mut panes = Vec::with_capacity(k.panes.len());
            let Some(slot) = self.keys.insert_new(&k.key.as_key_ref(k.hash), Vec::new()) else {
                debug_assert!(false, "put_keys on a key that is present (check_keys first)");
                continue;
            };
            for p in k.panes {
                if p.fired {
                    self.expiry.insert((p.end.saturating_add(lateness), slot, p.end));
                } else {
                    self.due.insert((p.end, slot));
                }
                panes.push(Pane { start: p.start, end: p.end, fired: p.fired, body: p.body });
            }
            if let Some((_, _, slot_panes)) = self.keys.entry_mut(slot) {
                *slot_panes = panes;
            }
        }
    }

    /// Every key held, its hash, and its panes `(start, end, fired, body)` in end order, as
    /// text: what migration tests compare.
    #[cfg(test)]
    pub fn snapshot(&self) -> Vec<(OwnedKey, u64, String)>
    where
        P: std::fmt::Debug,
    {
        let keys = &self.keys;
        let mut out: Vec<_> = keys
            .iter()
            .map(|(slot, key, panes)| {
                let mut panes: Vec<_> =
                    panes.iter().map(|p| (p.end, p.start, p.fired, format!("{:?}", p.body))).collect();
                panes.sort_by_key(|a| a.0);
                (key.clone(), keys.hash_of(slot).unwrap_or(0), format!("{panes:?}"))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    /// Assign a record of `key` at event time `t` to each of its live panes (creating missing
    /// ones with `init`) and call `visit(key, key_hash, pane)` on each, in ascending start order.
    /// Hot path: allocates only for a new key or pane.
    pub fn assign(
        &mut self,
        key: KeyRef<'_>,
        t: u64,
        mut init: impl FnMut() -> P,
        mut visit: impl FnMut(&OwnedKey, u64, &mut Pane<P>),
    ) {
        let (wm, lateness, size) = (self.watermark, self.spec.lateness_ms, self.spec.size_ms());
        let live = |start: u64| start.saturating_add(size).saturating_add(lateness) > wm;
        if !self.spec.starts(t).any(live) {
            self.late_dropped += 1;
            return;
        }
        let slot = self.keys.find_or_insert_with(&key, Vec::new);
        let Some((owned, hash, panes)) = self.keys.entry_mut(slot) else {
            return;
        };
        for start in self.spec.starts(t).filter(|s| live(*s)) {
            let end = start.saturating_add(size);
            let at = match panes.iter().position(|p| p.end == end) {
                Some(at) => at,
                None => {
                    // A new pane already past its end (but within lateness) fires at once.
                    let fired = end <= wm;
                    if fired {
                        self.expiry.insert((end.saturating_add(lateness), slot, end));
                    } else {
                        self.due.insert((end, slot));
                    }
                    let body = init();
                    panes.push(Pane { start, end, fired, body });
                    panes.len() - 1
                }
            };
            visit(owned, hash, &mut panes[at]);
        }
    }

    /// The watermark reached `wm`: fire due panes through `emit`, then expire those whose
    /// lateness has passed. A watermark that does not advance stays where it was, and then
    /// only panes imported since the last advance ([`PaneStore::put_keys`]) can be due: for the
    /// panes of this store's own records it is a no-op (an unfired pane always ends after the
    /// watermark, a fired one expires after it).
    pub fn advance(&mut self, wm: u64, mut emit: impl FnMut(&OwnedKey, u64, &Pane<P>)) {
        let wm = wm.max(self.watermark);
        self.watermark = wm;
        while let Some(&(end, slot)) = self.due.first() {
            if end > wm {
                break;
            }
            self.due.pop_first();
            self.firing.push((end, slot));
        }
        self.fire_collected(&mut emit);
        self.expire(wm);
    }

    /// End of input: fire every pane that has not fired, then drop all state.
    pub fn finish(&mut self, mut emit: impl FnMut(&OwnedKey, u64, &Pane<P>)) {
        self.firing.extend(std::mem::take(&mut self.due));
        self.fire_collected(&mut emit);
        self.keys.clear();
        self.expiry.clear();
    }

    fn fire_collected(&mut self, emit: &mut impl FnMut(&OwnedKey, u64, &Pane<P>)) {
        let keys = &self.keys;
        self.firing.sort_unstable_by(|a, b| {
            let by_key = || match (keys.key(a.1), keys.key(b.1)) {
                (Some(ka), Some(kb)) => ka.total_cmp(kb),
                _ => a.1.cmp(&b.1),
            };
            a.0.cmp(&b.0).then_with(by_key)
        });
        let lateness = self.spec.lateness_ms;
        for (end, slot) in self.firing.drain(..) {
            let Some((key, hash, panes)) = self.keys.entry_mut(slot) else {
                continue;
            };
            let Some(pane) = panes.iter_mut().find(|p| p.end == end && !p.fired) else {
                continue;
            };
            pane.fired = true;
            emit(key, hash, pane);
            self.expiry.insert((end.saturating_add(lateness), slot, end));
        }
    }

    fn expire(&mut self, wm: u64) {
        while let Some(&(at, slot, end)) = self.expiry.first() {
            if at > wm {
                break;
            }
            self.expiry.pop_first();
            let Some((_, _, panes)) = self.keys.entry_mut(slot) else {
                continue;
            };
            panes.retain(|p| p.end != end);
            if panes.is_empty() {
                self.keys.remove(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtins::shape::WindowSpec;

    type Fired = Vec<(u64, u64, u32)>;

    fn store(spec: WindowSpec) -> PaneStore<u32> {
        PaneStore::new(spec)
    }

    fn add(s: &mut PaneStore<u32>, key: u64, t: u64, fired: &mut Fired) {
        s.assign(
            KeyRef::upstream(key),
            t,
            || 0,
            |_, h, p| {
                p.body += 1;
                if p.fired {
                    fired.push((h, p.end, p.body));
                }
            },
        );
    }

    fn advance(s: &mut PaneStore<u32>, wm: u64, fired: &mut Fired) {
        s.advance(wm, |_, h, p| fired.push((h, p.end, p.body)));
    }

    #[test]
    fn fires_in_end_then_key_order_and_expires() {
        let mut s = store(WindowSpec::tumbling(10).with_lateness(5));
        let mut fired = Vec::new();
        for (k, t) in [(9, 1), (3, 2), (9, 12), (3, 15), (7, 3)] {
            add(&mut s, k, t, &mut fired);
        }
        advance(&mut s, 20, &mut fired);
        assert_eq!(fired, vec![(3, 10, 1), (7, 10, 1), (9, 10, 1), (3, 20, 1), (9, 20, 1)]);
        fired.clear();
        add(&mut s, 3, 19, &mut fired); // late, within lateness: re-emitted at once
        assert_eq!(fired, vec![(3, 20, 2)]);
        add(&mut s, 3, 5, &mut fired); // window [0, 10) expired at 15
        assert_eq!(s.late_dropped(), 1);
        advance(&mut s, 25, &mut fired);
        assert_eq!(s.live_keys(), 0);
    }
}

/// Which input a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Left = 0,
    Right = 1,
}

/// The records of one key in one window, per side, in arrival order (owned copies).
#[derive(Clone, Debug, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct JoinPane {
    pub(crate) left: Vec<Vec<Value>>,
    pub(crate) right: Vec<Vec<Value>>,
}

impl JoinPane {
    /// The records of `side` (to append to) and of the other side.
    pub(crate) fn sides_mut(&mut self, side: Side) -> (&mut Vec<Vec<Value>>, &[Vec<Value>]) {
        match side {
            Side::Left => (&mut self.left, &self.right),
            Side::Right => (&mut self.right, &self.left),
        }
    }
}
