//! Exact keyed state: maps from a record's key to that key's state, with no allocation on a hit,
//! and no false sharing between keys whose hashes collide. Two of them:
//! - [`KeyedState`]: stable slots (a window's timers name them); an index (std's `HashMap` with
//!   an identity hasher: keys are already hashed) from hash to slot, then the slot.
//! - [`KeyedTable`]: each entry in the hash table itself (hashbrown's `HashTable`), found in one
//!   probe; no stable handles (a rolling aggregate's state).
//!
//! Non-string keys are looked up by their [`key_hash`](crate::record::ArchivedValue::key_hash)
//! alone: for integers, floats (by bits) and bools that hash is a bijection of the value, so equal
//! hashes mean equal keys. String keys are looked up by hash and then compared with a stored copy
//! of the string.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::migrate::MigrateError;
use crate::record::{mix64, unmix64, ArchivedValue, Cell, FieldType, Value};

/// A hasher for keys that are already well-mixed 64-bit hashes: passes them through.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u64 keys, which this map never uses; stay correct anyway.
        for b in bytes {
            self.0 = mix64(self.0 ^ *b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Build an [`IdentityHasher`].
pub type IdentityBuild = BuildHasherDefault<IdentityHasher>;

/// A key value whose hash identifies it exactly.
#[derive(Clone, Copy, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ExactKey {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
}

/// A borrowed key, as read from a record. Hot path: building one does not allocate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyRef<'a> {
    /// A key compared by hash alone (its hash is a bijection of `value`).
    Exact { hash: u64, value: ExactKey },
    /// A string key: compared by content after the hash matches.
    Str { hash: u64, text: &'a str },
}

impl<'a> KeyRef<'a> {
    /// The key held by a record field.
    #[inline(always)]
    pub fn of(v: &'a ArchivedValue) -> KeyRef<'a> {
        Self::hashed(v, v.key_hash())
    }

    /// The key held by a record field whose key hash (`ArchivedValue::key_hash`) is `hash`.
    #[inline(always)]
    pub fn hashed(v: &'a ArchivedValue, hash: u64) -> KeyRef<'a> {
        let value = match v {
            ArchivedValue::U64(x) => ExactKey::U64(x.to_native()),
            ArchivedValue::I64(x) => ExactKey::I64(x.to_native()),
            ArchivedValue::F64(x) => ExactKey::F64(x.to_native()),
            ArchivedValue::Bool(x) => ExactKey::Bool(*x),
            ArchivedValue::Str(s) => return KeyRef::Str { hash, text: s.as_str() },
        };
        KeyRef::Exact { hash, value }
    }

    /// A key that is an upstream key hash itself (the key value is the hash, as a u64).
    #[inline]
    pub fn upstream(hash: u64) -> KeyRef<'static> {
        KeyRef::Exact { hash, value: ExactKey::U64(hash) }
    }

    /// The key as an archived cell, unless it is a string.
    #[inline]
    pub fn cell(&self) -> Option<Cell> {
        match *self {
            KeyRef::Exact { value, .. } => Some(match value {
                ExactKey::U64(v) => Cell::u64(v),
                ExactKey::I64(v) => Cell::i64(v),
                ExactKey::F64(v) => Cell::f64(v),
                ExactKey::Bool(v) => Cell::bool(v),
            }),
            KeyRef::Str { .. } => None,
        }
    }

    /// The key's hash.
    #[inline]
    pub fn hash(&self) -> u64 {
        match self {
            KeyRef::Exact { hash, .. } | KeyRef::Str { hash, .. } => *hash,
        }
    }

    fn to_owned_key(self) -> OwnedKey {
        match self {
            KeyRef::Exact { value, .. } => OwnedKey::Exact(value),
            KeyRef::Str { text, .. } => OwnedKey::Str(text.into()),
        }
    }
}

/// A key as stored in the map: owns its string, if any.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum OwnedKey {
    Exact(ExactKey),
    Str(Box<str>),
}

impl OwnedKey {
    /// The stored key as a lookup key, given its hash.
    #[inline]
    pub fn as_key_ref(&self, hash: u64) -> KeyRef<'_> {
        match self {
            OwnedKey::Exact(value) => KeyRef::Exact { hash, value: *value },
            OwnedKey::Str(text) => KeyRef::Str { hash, text },
        }
    }

    /// Whether this stored key is `key`, given that their hashes are equal.
    #[inline]
    fn matches(&self, key: &KeyRef<'_>) -> bool {
        match (self, key) {
            (OwnedKey::Exact(_), KeyRef::Exact { .. }) => true,
            (OwnedKey::Str(s), KeyRef::Str { text, .. }) => &**s == *text,
            _ => false,
        }
    }

    /// Write the key into `out`, reusing its string buffer: no allocation in steady state.
    #[inline]
    pub fn write_into(&self, out: &mut Value) {
        // The common case in place: a u64 key into a slot that holds one (one store, no drop).
        if let (OwnedKey::Exact(ExactKey::U64(v)), Value::U64(x)) = (self, &mut *out) {
            *x = *v;
            return;
        }
        *out = match self {
            OwnedKey::Exact(ExactKey::U64(v)) => Value::U64(*v),
            OwnedKey::Exact(ExactKey::I64(v)) => Value::I64(*v),
            OwnedKey::Exact(ExactKey::F64(v)) => Value::F64(*v),
            OwnedKey::Exact(ExactKey::Bool(v)) => Value::Bool(*v),
            OwnedKey::Str(s) => {
                if let Value::Str(buf) = out {
                    buf.clear();
                    buf.push_str(s);
                    return;
                }
                Value::Str(s.to_string())
            }
        };
    }

    /// A total order on keys of one type (floats by `total_cmp`), for deterministic output.
    pub fn total_cmp(&self, other: &OwnedKey) -> Ordering {
        use ExactKey::*;
        match (self, other) {
            (OwnedKey::Exact(U64(a)), OwnedKey::Exact(U64(b))) => a.cmp(b),
            (OwnedKey::Exact(I64(a)), OwnedKey::Exact(I64(b))) => a.cmp(b),
            (OwnedKey::Exact(F64(a)), OwnedKey::Exact(F64(b))) => a.total_cmp(b),
            (OwnedKey::Exact(Bool(a)), OwnedKey::Exact(Bool(b))) => a.cmp(b),
            (OwnedKey::Str(a), OwnedKey::Str(b)) => a.cmp(b),
            // Keys of one operator share a type; order mixed kinds by variant for totality.
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            OwnedKey::Exact(ExactKey::U64(_)) => 0,
            OwnedKey::Exact(ExactKey::I64(_)) => 1,
            OwnedKey::Exact(ExactKey::F64(_)) => 2,
            OwnedKey::Exact(ExactKey::Bool(_)) => 3,
            OwnedKey::Str(_) => 4,
        }
    }
}

/// A stable handle to one key's entry, valid until that entry is removed.
pub type SlotId = u32;

struct Entry<S> {
    hash: u64,
    key: OwnedKey,
    state: S,
}

/// An index entry with this bit set names a list in `KeyedState::many` (distinct keys sharing
/// one hash: colliding strings only); otherwise it is the key's slot. Four bytes, so the index
/// of W1's 10,000 keys is half the size it was as an enum, and stays in a core's cache.
const MANY: u32 = 1 << 31;

/// Per-key state of one operator on one shard.
pub struct KeyedState<S> {
    index: HashMap<u64, u32, IdentityBuild>,
    /// Slots of keys whose hashes collide (see [`MANY`]); an emptied list is reused.
    many: Vec<Vec<SlotId>>,
    slots: Vec<Option<Entry<S>>>,
    free: Vec<SlotId>,
    len: usize,
}

impl<S> Default for KeyedState<S> {
    fn default() -> Self {
        KeyedState { index: HashMap::default(), many: Vec::new(), slots: Vec::new(), free: Vec::new(), len: 0 }
    }
}

impl<S> KeyedState<S> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot of `key`, if present. Hot path: no allocation.
    #[inline]
    pub fn find(&self, key: &KeyRef<'_>) -> Option<SlotId> {
        let hit = |slot: &SlotId| match &self.slots[*slot as usize] {
            Some(e) => e.key.matches(key),
            None => false,
        };
        let at = *self.index.get(&key.hash())?;
        if at & MANY == 0 {
            hit(&at).then_some(at)
        } else {
            self.many[(at & !MANY) as usize].iter().copied().find(|s| hit(s))
        }
    }

    /// The slot of `key`, inserting `init()` first if absent. Hot path: allocates only for a new
    /// key (and then only a string key's copy and map growth).
    #[inline]
    pub fn find_or_insert_with(&mut self, key: &KeyRef<'_>, init: impl FnOnce() -> S) -> SlotId {
        match self.find(key) {
            Some(slot) => slot,
            None => self.insert(*key, init()),
        }
    }

    fn insert(&mut self, key: KeyRef<'_>, state: S) -> SlotId {
        let hash = key.hash();
        let entry = Entry { hash, key: key.to_owned_key(), state };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(entry);
                slot
            }
            None => {
                self.slots.push(Some(entry));
                (self.slots.len() - 1) as SlotId
            }
        };
        assert!(slot < MANY, "more than 2^31 keys in one instance of a keyed function");
        match self.index.get_mut(&hash) {
            None => {
                self.index.insert(hash, slot);
            }
            Some(at) if *at & MANY == 0 => {
                let list = match self.many.iter().position(|l| l.is_empty()) {
                    Some(i) => i,
                    None => {
                        self.many.push(Vec::new());
                        self.many.len() - 1
                    }
                };
                self.many[list].extend([*at, slot]);
                *at = list as u32 | MANY;
            }
            Some(at) => self.many[(*at & !MANY) as usize].push(slot),
        }
        self.len += 1;
        slot
    }

    /// The state in `slot`.
    #[inline]
    pub fn get(&self, slot: SlotId) -> Option<&S> {
        self.slots.get(slot as usize)?.as_ref().map(|e| &e.state)
    }

    /// The key, key hash and mutable state in `slot`.
    #[inline]
    pub fn entry_mut(&mut self, slot: SlotId) -> Option<(&OwnedKey, u64, &mut S)> {
        let e = self.slots.get_mut(slot as usize)?.as_mut()?;
        Some((&e.key, e.hash, &mut e.state))
    }

    /// The hash of the key stored in `slot`.
    #[inline]
    pub fn hash_of(&self, slot: SlotId) -> Option<u64> {
        self.slots.get(slot as usize)?.as_ref().map(|e| e.hash)
    }

    /// The key stored in `slot`.
    #[inline]
    pub fn key(&self, slot: SlotId) -> Option<&OwnedKey> {
        self.slots.get(slot as usize)?.as_ref().map(|e| &e.key)
    }

    /// Insert `key` with `state` if it is absent, returning its new slot; `None` (and `state`
    /// dropped) if it is present. Cold path (used to import moved keys).
    pub fn insert_new(&mut self, key: &KeyRef<'_>, state: S) -> Option<SlotId> {
        match self.find(key) {
            Some(_) => None,
            None => Some(self.insert(*key, state)),
        }
    }

    /// Remove every entry whose `(key hash, key)` satisfies `pred`, returning `(key, hash,
    /// state)` in slot order. Freed slots join the free list and the index forgets them, as
    /// with [`KeyedState::remove`]; the slots of the entries kept do not change. Cold path (used
    /// to move keys to another instance): O(slots).
    pub fn drain_where(&mut self, mut pred: impl FnMut(u64, &OwnedKey) -> bool) -> Vec<(OwnedKey, u64, S)> {
        let doomed: Vec<SlotId> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().filter(|e| pred(e.hash, &e.key)).map(|_| i as SlotId))
            .collect();
        doomed.into_iter().filter_map(|slot| self.remove_entry(slot)).map(|e| (e.key, e.hash, e.state)).collect()
    }

    /// Remove the entry in `slot`, returning its state; the slot may then be reused.
    pub fn remove(&mut self, slot: SlotId) -> Option<S> {
        self.remove_entry(slot).map(|e| e.state)
    }

    fn remove_entry(&mut self, slot: SlotId) -> Option<Entry<S>> {
        let entry = self.slots.get_mut(slot as usize)?.take()?;
        if let Some(at) = self.index.get_mut(&entry.hash) {
            if *at & MANY == 0 {
                self.index.remove(&entry.hash);
            } else {
                let list = &mut self.many[(*at & !MANY) as usize];
                list.retain(|s| *s != slot);
                if let [only] = list[..] {
                    list.clear();
                    *at = only;
                }
            }
        }
        self.free.push(slot);
        self.len -= 1;
        Some(entry)
    }

    /// Every (key hash, key, state), in slot order: what [`KeyedState::drain_where`] would take,
    /// left in place. Cold path (a snapshot's copy of the state).
    pub fn entries(&self) -> impl Iterator<Item = (u64, &OwnedKey, &S)> {
        self.slots.iter().filter_map(|e| e.as_ref().map(|e| (e.hash, &e.key, &e.state)))
    }

    /// Every (slot, key, state), in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (SlotId, &OwnedKey, &S)> {
        self.slots.iter().enumerate().filter_map(|(i, e)| {
            let e = e.as_ref()?;
            Some((i as SlotId, &e.key, &e.state))
        })
    }

    /// Remove every key.
    pub fn clear(&mut self) {
        self.index.clear();
        self.many.clear();
        self.slots.clear();
        self.free.clear();
        self.len = 0;
    }
}

/// Per-key state looked up in one probe: each entry (key hash, key, state) sits in the hash
/// table itself, where [`KeyedState`] keeps an index into a table of slots. A look-up then
/// reads one line of the table, not a line of the index and another of the slots: over many
/// keys, both miss the cache. Entries move when the table grows, so there are no stable handles:
/// this is for state that nothing outside refers to (a rolling aggregate's; a window's timers
/// name slots of a `KeyedState`). Same keys, same hashes, same collisions as `KeyedState`.
pub struct KeyedTable<S> {
    table: hashbrown::HashTable<Entry<S>>,
}

impl<S> Default for KeyedTable<S> {
    fn default() -> Self {
        KeyedTable { table: hashbrown::HashTable::new() }
    }
}

impl<S> KeyedTable<S> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The state of `key`, if present.
    #[inline]
    pub fn get(&self, key: &KeyRef<'_>) -> Option<&S> {
        let hash = key.hash();
        self.table.find(hash, |e| e.is(hash, key)).map(|e| &e.state)
    }

    /// The stored key and the state of `key`, inserting `init()` first if absent. Hot path:
    /// allocates only for a new key (a string key's copy, and table growth).
    #[inline]
    pub fn get_or_insert_with(&mut self, key: &KeyRef<'_>, init: impl FnOnce() -> S) -> (&OwnedKey, &mut S) {
        let hash = key.hash();
        let e = self
            .table
            .entry(hash, |e| e.is(hash, key), |e| e.hash)
            .or_insert_with(|| Entry { hash, key: key.to_owned_key(), state: init() })
            .into_mut();
        (&e.key, &mut e.state)
    }

    /// Insert `key` with `state` if it is absent (true); false, and `state` dropped, if it is
    /// present. Cold path (used to import moved keys).
    pub fn insert_new(&mut self, key: &KeyRef<'_>, state: S) -> bool {
        let hash = key.hash();
        match self.table.entry(hash, |e| e.is(hash, key), |e| e.hash) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(Entry { hash, key: key.to_owned_key(), state });
                true
            }
        }
    }

    /// Remove every entry whose `(key hash, key)` satisfies `pred`, returning `(key, hash,
    /// state)` ordered by hash, then key: the same for the same keys, however they came in.
    /// Cold path (used to move keys to another instance).
    pub fn drain_where(&mut self, mut pred: impl FnMut(u64, &OwnedKey) -> bool) -> Vec<(OwnedKey, u64, S)> {
        let mut out: Vec<_> =
            self.table.extract_if(|e| pred(e.hash, &e.key)).map(|e| (e.key, e.hash, e.state)).collect();
        out.sort_by(|a, b| by_hash_then_key((a.1, &a.0), (b.1, &b.0)));
        out
    }

    /// Every (key hash, key, state), ordered as [`KeyedTable::drain_where`] orders them, left in
    /// place. Cold path (a snapshot's copy of the state).
    pub fn entries(&self) -> Vec<(u64, &OwnedKey, &S)> {
        let mut out: Vec<_> = self.table.iter().map(|e| (e.hash, &e.key, &e.state)).collect();
        out.sort_by(|a, b| by_hash_then_key((a.0, a.1), (b.0, b.1)));
        out
    }
}

/// How the keys of an [`ExactTable`] come back from their hashes: every key of one operator
/// has one type, and its hash is a bijection of its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExactKind {
    /// A field of this type, hashed by [`ArchivedValue::key_hash`](crate::record::ArchivedValue::key_hash)
    /// (`mix64` of its bits): the bits are [`unmix64`] of the hash.
    Field(FieldType),
    /// The upstream key hash itself, as a u64 (`KeyRef::upstream`).
    Upstream,
}

impl ExactKind {
    /// The kind of a key of type `ty` (`None`: a string, which needs its text kept), or of
    /// the upstream key hash.
    pub fn of(ty: Option<FieldType>) -> Option<ExactKind> {
        match ty {
            None => Some(ExactKind::Upstream),
            Some(FieldType::Str) => None,
            Some(t) => Some(ExactKind::Field(t)),
        }
    }

    /// The key whose hash is `hash`.
    #[inline]
    pub fn key(self, hash: u64) -> ExactKey {
        match self {
            ExactKind::Upstream => ExactKey::U64(hash),
            ExactKind::Field(t) => {
                let bits = unmix64(hash);
                match t {
                    FieldType::I64 => ExactKey::I64(bits as i64),
                    FieldType::F64 => ExactKey::F64(f64::from_bits(bits)),
                    FieldType::Bool => ExactKey::Bool(bits != 0),
                    FieldType::U64 | FieldType::Str => ExactKey::U64(bits),
                }
            }
        }
    }

    /// Whether `key` is a key of this kind whose hash is `hash` (what a moved key must be to
    /// enter a table of this kind).
    pub fn holds(self, key: &OwnedKey, hash: u64) -> bool {
        let OwnedKey::Exact(k) = key else { return false };
        // By bits: a NaN key is its own key.
        match (self, *k) {
            (ExactKind::Upstream, ExactKey::U64(v)) => v == hash,
            (ExactKind::Field(FieldType::U64), ExactKey::U64(v)) => mix64(v) == hash,
            (ExactKind::Field(FieldType::I64), ExactKey::I64(v)) => mix64(v as u64) == hash,
            (ExactKind::Field(FieldType::F64), ExactKey::F64(v)) => mix64(v.to_bits()) == hash,
            (ExactKind::Field(FieldType::Bool), ExactKey::Bool(v)) => mix64(v as u64) == hash,
            _ => false,
        }
    }
}

/// Per-key state of keys that are not strings (integers, floats by bits, bools, or the
/// upstream key hash), looked up by hash alone: each entry is the key's hash and its state,
/// and the key is recovered from the hash (`ExactKind::key`) only when it leaves (exports,
/// copies). A word of state makes a 16-byte entry where a [`KeyedTable`] entry is 40: W1's
/// 10,000 counts are 256 KiB of table rather than 640, and a look-up reads one line, not two
/// (the look-up's load of the entry was half of a rolling count's time). Same keys, same
/// hashes, same order of exports as a `KeyedTable`.
pub struct ExactTable<S> {
    table: hashbrown::HashTable<(u64, S)>,
    kind: ExactKind,
    /// Where the table's control bytes start and its bucket mask, as of its last insert (the
    /// table moves only when an insert grows it): what `prefetch` computes a key's first
    /// bucket from. 0 while the table is empty.
    ctrl: usize,
    mask: usize,
}

impl<S> ExactTable<S> {
    /// An empty table of keys of `kind`.
    pub fn new(kind: ExactKind) -> Self {
        ExactTable { table: hashbrown::HashTable::new(), kind, ctrl: 0, mask: 0 }
    }

    /// Start loading the cache lines a look-up of `hash` reads first: its group of control
    /// bytes and its first bucket. A hint, with no effect on what the table holds: a rolling
    /// aggregate calls it for a record a few ahead of the one it applies, so that over many
    /// keys (a table larger than the core's L1) the look-up finds its lines loaded rather
    /// than waiting for them (half of a rolling count's time went to that wait).
    ///
    /// The addresses follow hashbrown's layout (buckets stored downwards from the control
    /// bytes; the probe starts at `hash & mask`), which hashbrown does not promise: were it to
    /// change, the hint would load the wrong lines and cost only its time
    /// (`prefetched_lines_are_the_buckets_a_lookup_reads` checks the layout). A prefetch never
    /// faults, whatever the address.
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        if self.ctrl == 0 {
            return;
        }
        let pos = hash as usize & self.mask;
        prefetch(self.ctrl.wrapping_add(pos));
        prefetch(self.ctrl.wrapping_sub((pos + 1) * std::mem::size_of::<(u64, S)>()));
    }

    /// The address `prefetch` computes for bucket `index`.
    #[cfg(test)]
    fn bucket_address(&self, index: usize) -> usize {
        self.ctrl.wrapping_sub((index + 1) * std::mem::size_of::<(u64, S)>())
    }

    /// Note where the table is now, after an insert put entry `(hash, _)` in bucket `index`.
    #[inline]
    fn located(&mut self, index: usize) {
        if let Some(e) = self.table.get_bucket(index) {
            self.ctrl = e as *const (u64, S) as usize + (index + 1) * std::mem::size_of::<(u64, S)>();
            self.mask = self.table.num_buckets() - 1;
        }
    }

    /// The kind of its keys.
    pub fn kind(&self) -> ExactKind {
        self.kind
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The state of `key`, if present.
    #[inline]
    pub fn get(&self, key: &KeyRef<'_>) -> Option<&S> {
        let hash = key.hash();
        self.table.find(hash, |e| e.0 == hash).map(|e| &e.1)
    }

    /// The state of the key whose hash is `hash`, inserting `init()` first if absent. Hot path:
    /// allocates only when the table grows.
    #[inline]
    pub fn get_or_insert_with(&mut self, hash: u64, init: impl FnOnce() -> S) -> &mut S {
        // Found in one probe (a hit is the steady state); a miss probes again to insert.
        match self.table.find_bucket_index(hash, |e| e.0 == hash) {
            Some(i) => match self.table.get_bucket_mut(i) {
                Some(e) => &mut e.1,
                None => unreachable!("a bucket just found"),
            },
            None => self.insert_absent(hash, init()),
        }
    }

    /// Insert the absent key whose hash is `hash`, with `state`. Out of line: a new key.
    #[cold]
    #[inline(never)]
    fn insert_absent(&mut self, hash: u64, state: S) -> &mut S {
        let index = self.table.insert_unique(hash, (hash, state), |e| e.0).bucket_index();
        self.located(index);
        match self.table.get_bucket_mut(index) {
            Some(e) => &mut e.1,
            None => unreachable!("a bucket just filled"),
        }
    }

    /// Insert `key` with `state` if it is absent (true); false, and `state` dropped, if it is
    /// present. The caller checked that the key is of this table's kind (`ExactKind::holds`).
    /// Cold path (used to import moved keys).
    pub fn insert_new(&mut self, key: &KeyRef<'_>, state: S) -> bool {
        debug_assert!(self.kind.holds(&key.to_owned_key(), key.hash()), "{key:?} is not a key of {:?}", self.kind);
        let hash = key.hash();
        match self.table.entry(hash, |e| e.0 == hash, |e| e.0) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(v) => {
                let index = v.insert((hash, state)).bucket_index();
                self.located(index);
                true
            }
        }
    }

    /// Remove every entry whose `(key hash, key)` satisfies `pred`, returning `(key, hash,
    /// state)` ordered by hash (as [`KeyedTable::drain_where`] orders them: exact keys have
    /// distinct hashes). Cold path.
    pub fn drain_where(&mut self, mut pred: impl FnMut(u64, &OwnedKey) -> bool) -> Vec<(OwnedKey, u64, S)> {
        let kind = self.kind;
        let mut out: Vec<_> = self
            .table
            .extract_if(|e| pred(e.0, &OwnedKey::Exact(kind.key(e.0))))
            .map(|(hash, state)| (OwnedKey::Exact(kind.key(hash)), hash, state))
            .collect();
        out.sort_by_key(|e| e.1);
        out
    }

    /// Every (key hash, key, state), ordered by hash, left in place. Cold path.
    pub fn entries(&self) -> Vec<(u64, OwnedKey, &S)> {
        let mut out: Vec<_> = self.table.iter().map(|(h, s)| (*h, OwnedKey::Exact(self.kind.key(*h)), s)).collect();
        out.sort_by_key(|e| e.0);
        out
    }
}

/// Start loading the cache line at `addr` (a hint: never faults, whatever the address).
#[inline(always)]
fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and never faults; SSE is in every x86_64 target.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

impl<S> Entry<S> {
    /// Whether this is the entry of `key`, whose hash is `hash`.
    #[inline(always)]
    fn is(&self, hash: u64, key: &KeyRef<'_>) -> bool {
        self.hash == hash && self.key.matches(key)
    }
}

/// The order of a `KeyedTable`'s exports: by hash, then key.
fn by_hash_then_key(a: (u64, &OwnedKey), b: (u64, &OwnedKey)) -> Ordering {
    a.0.cmp(&b.0).then_with(|| a.1.total_cmp(b.1))
}

/// Whether `hash` is the routing hash of `key`: the key value's
/// [`key_hash`](crate::record::Value::key_hash), or, for a key taken from the upstream key hash
/// (a u64 whose value is the hash itself), the value.
pub(crate) fn hash_matches(key: &OwnedKey, hash: u64) -> bool {
    let mut value = Value::U64(0);
    key.write_into(&mut value);
    value.key_hash() == hash || *key == OwnedKey::Exact(ExactKey::U64(hash))
}

/// Check moved `(key, hash)` pairs: each hash is its key's, no key appears twice, and `present`
/// holds none of them.
pub(crate) fn check_new_keys<'a>(
    present: impl Fn(&KeyRef<'_>) -> bool,
    keys: impl Iterator<Item = (&'a OwnedKey, u64)>,
) -> Result<(), MigrateError> {
    let mut seen: KeyedState<()> = KeyedState::new();
    for (key, hash) in keys {
        if !hash_matches(key, hash) {
            return Err(MigrateError::Corrupt(format!("key {key:?} archived with a hash ({hash:#018x}) not its own")));
        }
        let key_ref = key.as_key_ref(hash);
        if seen.find(&key_ref).is_some() {
            return Err(MigrateError::Corrupt(format!("key {key:?} appears twice in the archive")));
        }
        if present(&key_ref) {
            return Err(MigrateError::KeyPresent { hash });
        }
        seen.insert_new(&key_ref, ());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{access, Record};
    use crate::testkit::Rng;

    fn str_key(hash: u64, text: &str) -> KeyRef<'_> {
        KeyRef::Str { hash, text }
    }

    #[test]
    fn colliding_strings_stay_distinct() {
        let mut m = KeyedState::new();
        let a = m.find_or_insert_with(&str_key(42, "a"), || 1);
        let b = m.find_or_insert_with(&str_key(42, "b"), || 2);
        assert_ne!(a, b);
        assert_eq!(m.find(&str_key(42, "a")), Some(a));
        assert_eq!(m.find(&str_key(42, "c")), None);
        assert_eq!(m.remove(a), Some(1));
        assert_eq!(m.find(&str_key(42, "a")), None);
        assert_eq!(m.find(&str_key(42, "b")), Some(b));
        assert_eq!(m.get(b), Some(&2));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn keys_read_from_records_round_trip() {
        let bytes = Record::from(vec![Value::Str("k".into()), Value::I64(-3)]).to_archive();
        let rec = access(&bytes).unwrap();
        let mut m = KeyedState::new();
        let s = m.find_or_insert_with(&KeyRef::of(&rec.fields[0]), || ());
        let i = m.find_or_insert_with(&KeyRef::of(&rec.fields[1]), || ());
        let mut out = Value::Str(String::with_capacity(8));
        m.key(s).unwrap().write_into(&mut out);
        assert_eq!(out, Value::Str("k".into()));
        m.key(i).unwrap().write_into(&mut out);
        assert_eq!(out, Value::I64(-3));
    }

    /// `drain_where` and `insert_new` interleaved with inserts and removals keep the index, the
    /// slots and the free list consistent with a std map (colliding hashes included).
    #[test]
    fn drain_where_and_insert_new_match_a_std_map() {
        let mut rng = Rng(11);
        let mut m: KeyedState<u64> = KeyedState::new();
        let mut reference: std::collections::HashMap<String, u64> = Default::default();
        let hash = |text: &str| text.bytes().map(u64::from).sum::<u64>() % 8;
        for step in 0..5_000u64 {
            let text = format!("k{}", rng.below(100));
            let key = str_key(hash(&text), &text);
            match rng.below(20) {
                0 => {
                    let cut = rng.below(8);
                    let drained = m.drain_where(|h, _| h == cut);
                    let want: Vec<String> = reference.keys().filter(|k| hash(k) == cut).cloned().collect();
                    assert_eq!(drained.len(), want.len(), "step {step}");
                    for (key, h, state) in drained {
                        let OwnedKey::Str(s) = key else { panic!() };
                        assert_eq!((h, reference.remove(&*s)), (cut, Some(state)), "step {step}");
                    }
                }
                1 => {
                    let inserted = m.insert_new(&key, step).is_some();
                    assert_eq!(inserted, !reference.contains_key(&text), "step {step}");
                    reference.entry(text.clone()).or_insert(step);
                }
                2..=5 => {
                    let removed = m.find(&key).and_then(|s| m.remove(s));
                    assert_eq!(removed, reference.remove(&text), "step {step}");
                }
                _ => {
                    let slot = m.find_or_insert_with(&key, || 0);
                    *m.entry_mut(slot).unwrap().2 += step;
                    *reference.entry(text.clone()).or_default() += step;
                }
            }
            assert_eq!(m.len(), reference.len());
            assert_eq!(m.iter().count(), reference.len());
        }
        for (text, state) in &reference {
            let slot = m.find(&str_key(hash(text), text)).expect("every key is found");
            assert_eq!(m.get(slot), Some(state));
        }
    }

    #[test]
    fn random_operations_match_a_std_map() {
        let mut rng = Rng(7);
        let mut m: KeyedState<u64> = KeyedState::new();
        let mut reference: std::collections::HashMap<String, u64> = Default::default();
        for step in 0..20_000u64 {
            let text = format!("k{}", rng.below(300));
            // A deliberately weak hash (8 buckets) forces many collisions.
            let key = str_key(text.bytes().map(u64::from).sum::<u64>() % 8, &text);
            if rng.below(4) == 0 {
                let removed = m.find(&key).and_then(|s| m.remove(s));
                assert_eq!(removed, reference.remove(&text), "step {step}");
            } else {
                let slot = m.find_or_insert_with(&key, || 0);
                *m.entry_mut(slot).unwrap().2 += step;
                *reference.entry(text.clone()).or_default() += step;
            }
            assert_eq!(m.len(), reference.len());
        }
        for (_, key, state) in m.iter() {
            let OwnedKey::Str(s) = key else { panic!() };
            assert_eq!(reference.get(&**s), Some(state));
        }
    }

    /// The one-probe table against a std map: colliding hashes (strings over 8 buckets), exact
    /// keys beside them, `insert_new`, `drain_where` (its order: by hash, then key) and the
    /// copy of every entry, interleaved.
    #[test]
    fn keyed_table_matches_a_std_map() {
        let mut rng = Rng(23);
        let mut m: KeyedTable<u64> = KeyedTable::new();
        let mut reference: std::collections::BTreeMap<(u64, String), u64> = Default::default();
        let hash = |text: &str| text.bytes().map(u64::from).sum::<u64>() % 8;
        let owned = |k: &OwnedKey| match k {
            OwnedKey::Str(s) => s.to_string(),
            OwnedKey::Exact(ExactKey::U64(v)) => format!("#{v}"),
            other => panic!("{other:?}"),
        };
        for step in 0..20_000u64 {
            // One key in four is an exact u64 whose hash collides with the strings' (0..8).
            let (text, key_hash) = match rng.below(4) {
                0 => {
                    let v = rng.below(8);
                    (format!("#{v}"), v)
                }
                _ => {
                    let t = format!("k{}", rng.below(200));
                    let h = hash(&t);
                    (t, h)
                }
            };
            let key = match text.strip_prefix('#') {
                Some(v) => KeyRef::upstream(v.parse().unwrap()),
                None => str_key(key_hash, &text),
            };
            let r = (key_hash, text.clone());
            match rng.below(40) {
                0 => {
                    let cut = rng.below(8);
                    let drained = m.drain_where(|h, _| h == cut);
                    let want: Vec<_> = reference
                        .range((cut, String::new())..(cut + 1, String::new()))
                        .map(|(k, v)| (k.clone(), *v))
                        .collect();
                    let mut got: Vec<_> = drained.iter().map(|(k, h, s)| ((*h, owned(k)), *s)).collect();
                    for (k, _) in &want {
                        reference.remove(k);
                    }
                    got.sort();
                    assert_eq!(got, want, "step {step}");
                }
                1 => {
                    let inserted = m.insert_new(&key, step);
                    assert_eq!(inserted, !reference.contains_key(&r), "step {step}");
                    reference.entry(r).or_insert(step);
                }
                2 => {
                    let copy: Vec<_> = m.entries().into_iter().map(|(h, k, s)| ((h, owned(k)), *s)).collect();
                    let mut sorted = copy.clone();
                    sorted.sort();
                    assert_eq!(sorted, reference.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>());
                    assert!(copy.windows(2).all(|w| w[0].0 .0 <= w[1].0 .0), "copied in hash order, step {step}");
                }
                _ => {
                    let (stored, state) = m.get_or_insert_with(&key, || 0);
                    assert_eq!(owned(stored), text, "step {step}");
                    *state += step;
                    *reference.entry(r).or_default() += step;
                }
            }
            assert_eq!(m.len(), reference.len());
            assert_eq!(m.get(&key), reference.get(&(key_hash, text)), "step {step}");
        }
    }

    /// One key of `kind`, its value drawn from a few (so that keys repeat), as a record field
    /// holds it, and its key hash.
    fn exact_key(kind: ExactKind, rng: &mut Rng) -> (Value, u64) {
        let n = rng.below(40);
        let v = match kind {
            ExactKind::Upstream => return (Value::U64(n), n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            ExactKind::Field(FieldType::U64) => Value::U64(n << 50 | n),
            ExactKind::Field(FieldType::I64) => Value::I64(n as i64 - 20),
            ExactKind::Field(FieldType::F64) => {
                Value::F64([-0.0, 0.0, f64::NAN, f64::INFINITY][n as usize % 4] + n as f64)
            }
            ExactKind::Field(_) => Value::Bool(!n.is_multiple_of(2)),
        };
        let hash = v.key_hash();
        (v, hash)
    }

    /// An exact table holds, finds, drains and copies what a `KeyedTable` does for the same
    /// operations on keys of every kind, its keys recovered from their hashes.
    #[test]
    fn exact_tables_hold_what_keyed_tables_hold() {
        let kinds = [FieldType::U64, FieldType::I64, FieldType::F64, FieldType::Bool]
            .map(ExactKind::Field)
            .into_iter()
            .chain([ExactKind::Upstream]);
        for (seed, kind) in kinds.enumerate() {
            let mut rng = Rng(seed as u64 + 900);
            let (mut exact, mut keyed) = (ExactTable::new(kind), KeyedTable::new());
            let mut most = 0;
            for step in 0..3000u64 {
                let (value, hash) = exact_key(kind, &mut rng);
                let key = match (kind, &value) {
                    (ExactKind::Upstream, _) => KeyRef::upstream(hash),
                    (_, Value::U64(v)) => KeyRef::Exact { hash, value: ExactKey::U64(*v) },
                    (_, Value::I64(v)) => KeyRef::Exact { hash, value: ExactKey::I64(*v) },
                    (_, Value::F64(v)) => KeyRef::Exact { hash, value: ExactKey::F64(*v) },
                    (_, Value::Bool(v)) => KeyRef::Exact { hash, value: ExactKey::Bool(*v) },
                    (_, Value::Str(_)) => unreachable!("no string keys here"),
                };
                match rng.below(20) {
                    0 => {
                        let cut = rng.next_u64();
                        let drain = |h: u64, _: &OwnedKey| h < cut;
                        let (a, b) = (exact.drain_where(drain), keyed.drain_where(drain));
                        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{kind:?}, step {step}");
                    }
                    1 => assert_eq!(exact.insert_new(&key, step), keyed.insert_new(&key, step), "step {step}"),
                    2 => {
                        let a: Vec<_> = exact.entries().into_iter().map(|(h, k, s)| (h, k, *s)).collect();
                        let b: Vec<_> = keyed.entries().into_iter().map(|(h, k, s)| (h, k.clone(), *s)).collect();
                        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{kind:?}, step {step}");
                        assert!(a.iter().all(|(h, k, _)| kind.holds(k, *h)));
                    }
                    _ => {
                        *exact.get_or_insert_with(hash, || 0) += step;
                        *keyed.get_or_insert_with(&key, || 0).1 += step;
                    }
                }
                assert_eq!(exact.len(), keyed.len(), "{kind:?}, step {step}");
                most = most.max(exact.len());
                assert_eq!(exact.get(&key), keyed.get(&key), "{kind:?}, step {step}");
            }
            let keys = if kind == ExactKind::Field(FieldType::Bool) { 2 } else { 20 };
            assert!(most >= keys, "{kind:?}: at most {most} keys held at once");
        }
    }

    /// The addresses `ExactTable::prefetch` computes are those of the buckets hashbrown holds
    /// the entries in, at every size the table grows through (were hashbrown's layout to
    /// change, the hint would load the wrong lines: this says so).
    #[test]
    fn prefetched_lines_are_the_buckets_a_lookup_reads() {
        let mut t = ExactTable::new(ExactKind::Upstream);
        for i in 0..5000u64 {
            *t.get_or_insert_with(mix64(i), || 0) += 1;
            if i.is_power_of_two() || i % 997 == 0 {
                assert_eq!(t.mask + 1, t.table.num_buckets(), "after {i} keys");
                for (index, _) in t.table.iter_buckets().zip(0..) {
                    let e = t.table.get_bucket(index).expect("a full bucket");
                    assert_eq!(t.bucket_address(index), e as *const _ as usize, "bucket {index} after {i} keys");
                }
            }
        }
        // The probe starts at `hash & mask`: an entry with no collision sits there.
        let alone = (0..5000u64).map(mix64).filter_map(|h| t.table.find_bucket_index(h, |e| e.0 == h).map(|i| (h, i)));
        let at_home = alone.filter(|(h, i)| *h as usize & t.mask == *i).count();
        assert!(at_home > 2500, "{at_home} of 5000 entries in their first bucket");
    }
}
