//! The synthetic event generator: a deterministic, counter-based producer on an open-loop schedule.
//!
//! Event `i` is a pure function of `(seed, i)`: every field is drawn from a hash of the seed and
//! the event index (the key) or of that hash and the field position (the other fields), so
//! instance `k` of `p` can produce exactly the events with `i % p == k` without generating the
//! others, and the union over instances does not depend on `p`. The hashes are SplitMix64's
//! stream (the seed plus `i` times the golden ratio, mixed once): an event of a key and a value
//! costs two mixes, as a hand-written generator's would.
//!
//! Event `i` is due at the time `t_i` at which the integral of the rate schedule (the base rate,
//! replaced by a burst's rate while the burst lasts) reaches `i`. The schedule is a list of
//! constant-rate segments; `t_i` is computed exactly in integer nanoseconds from the segment that
//! holds `i`, found by a cursor that only moves forward (O(1) amortised per event).

use std::fmt;
use std::time::Duration;

use dirigo_actors::record::{mix64, Cell, FieldType, Schema, Value};

const NS_PER_S: u128 = 1_000_000_000;
const NS_PER_MS: u64 = 1_000_000;
/// The logical clock of an unbounded generator: 1M events per second.
const UNBOUNDED_NS_PER_EVENT: u64 = 1_000;
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// How keys are drawn from `[0, keys)`.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyDistribution {
    Uniform,
    /// Key `k` has probability proportional to `1 / (k + 1)^s`.
    Zipf {
        s: f64,
    },
}

/// A window of the schedule during which `rate` replaces the base rate (`rate` 0 pauses).
#[derive(Clone, Debug, PartialEq)]
pub struct Burst {
    pub at: Duration,
    pub duration: Duration,
    pub rate: u64,
}

/// What a generator produces and when.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorSpec {
    /// Events per second; 0 = unbounded (as fast as the engine takes them, on a logical clock of
    /// 1M events/s for event times and `duration`).
    pub rate: u64,
    /// Stop after this many events, over all instances.
    pub events: Option<u64>,
    /// Stop when the schedule passes this time.
    pub duration: Option<Duration>,
    /// Key space `[0, keys)`.
    pub keys: u64,
    /// Position of the key field (u64, i64, or string `k{n}`).
    pub key_field: usize,
    pub distribution: KeyDistribution,
    pub seed: u64,
    /// While active, the rate is the burst's rate. Bursts must not overlap.
    pub bursts: Vec<Burst>,
    /// Position of a u64 field that gets the event time (ms).
    pub event_time_field: Option<usize>,
    /// This instance produces the events `i` with `i % parallelism == instance`, unless the
    /// instances read in splits ([`Generator::with_splits`]).
    pub instance: u32,
    pub parallelism: u32,
}

/// Which field of the spec an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldRole {
    Key,
    EventTime,
}

impl fmt::Display for FieldRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldRole::Key => "key",
            FieldRole::EventTime => "event-time",
        })
    }
}

/// A generator spec that does not fit its schema or makes no sense.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GeneratorError {
    #[error("{role} field position {position} is out of range: the schema has {fields} fields")]
    NoSuchField { role: FieldRole, position: usize, fields: usize },
    #[error("key field `{name}` is {found}: a generator key must be u64, i64 or string")]
    KeyFieldType { name: String, found: FieldType },
    #[error("event-time field `{name}` is {found}: it must be u64 (milliseconds)")]
    EventTimeFieldType { name: String, found: FieldType },
    #[error("field `{name}` cannot be both the key and the event time")]
    KeyIsEventTime { name: String },
    #[error("parallelism must be at least 1")]
    ZeroParallelism,
    #[error("instance {instance} is out of range for parallelism {parallelism}")]
    InstanceOutOfRange { instance: u32, parallelism: u32 },
    #[error("zipf exponent must be a finite number above 0, got {s}")]
    ZipfExponent { s: f64 },
    #[error("the key space is empty: keys must be at least 1")]
    NoKeys,
    #[error("bursts {first} and {second} overlap: bursts must not overlap")]
    OverlappingBursts { first: usize, second: usize },
    #[error("bursts need a base rate: with rate 0 (unbounded) there is no schedule to change")]
    BurstsWithUnboundedRate,
}

/// A stretch of the schedule at a constant rate.
#[derive(Clone, Debug)]
struct Segment {
    start_ns: u64,
    /// Events per second.
    rate: u64,
    /// Events scheduled before `start_ns`, times 10^9 (exact: rates and times are integers).
    cum: u128,
}

/// When events are due.
#[derive(Clone, Debug)]
enum Schedule {
    /// Every event is due now; logical time advances 1 µs per event.
    Unbounded,
    /// Constant-rate segments; the last one lasts forever and has a rate above 0.
    Paced { segments: Vec<Segment>, cursor: usize },
}

impl Schedule {
    fn new(rate: u64, bursts: &[Burst]) -> Result<Schedule, GeneratorError> {
        if rate == 0 {
            return match bursts.is_empty() {
                true => Ok(Schedule::Unbounded),
                false => Err(GeneratorError::BurstsWithUnboundedRate),
            };
        }
        let mut order: Vec<usize> = (0..bursts.len()).collect();
        order.sort_by_key(|&b| bursts[b].at);
        let mut segments = Vec::with_capacity(2 * bursts.len() + 1);
        let (mut t, mut prev) = (0u64, None::<usize>);
        for b in order.into_iter().filter(|&b| !bursts[b].duration.is_zero()) {
            let end = bursts[b].at.saturating_add(bursts[b].duration);
            let (at, end) = (nanos(bursts[b].at), nanos(end));
            if let Some(p) = prev.filter(|_| at < t) {
                let (first, second) = (p.min(b), p.max(b));
                return Err(GeneratorError::OverlappingBursts { first, second });
            }
            if at > t {
                segments.push(Segment::at(t, rate));
            }
            segments.push(Segment::at(at, bursts[b].rate));
            (t, prev) = (end, Some(b));
        }
        segments.push(Segment::at(t, rate));
        accumulate(&mut segments);
        Ok(Schedule::Paced { segments, cursor: 0 })
    }

    /// Due time and logical time (ns) of event `i`; `i` never decreases between calls.
    /// Inlined, as [`Generator::schedule_event`] is.
    #[inline(always)]
    fn due(&mut self, i: u64) -> Option<(u64, u64)> {
        let Schedule::Paced { segments, cursor } = self else {
            let logical = i.checked_mul(UNBOUNDED_NS_PER_EVENT)?;
            return Some((0, logical));
        };
        let x = i as u128 * NS_PER_S;
        // The first segment with a positive rate whose end reaches `x`; the last one never ends.
        while *cursor + 1 < segments.len() && (segments[*cursor].rate == 0 || segments[*cursor + 1].cum < x) {
            *cursor += 1;
        }
        let seg = &segments[*cursor];
        let ahead = x.saturating_sub(seg.cum);
        let offset = match u64::try_from(ahead) {
            Ok(ahead) => ahead.div_ceil(seg.rate) as u128, // common case: no 128-bit division
            Err(_) => ahead.div_ceil(seg.rate as u128),
        };
        let t = u64::try_from(seg.start_ns as u128 + offset).ok()?;
        Some((t, t))
    }
}

impl Schedule {
    /// Back to the first segment, so that `due` may be asked for an earlier event again.
    fn rewind(&mut self) {
        if let Schedule::Paced { cursor, .. } = self {
            *cursor = 0;
        }
    }
}

impl Segment {
    fn at(start_ns: u64, rate: u64) -> Segment {
        Segment { start_ns, rate, cum: 0 }
    }
}

fn accumulate(segments: &mut [Segment]) {
    for k in 1..segments.len() {
        let prev = &segments[k - 1];
        let span = (segments[k].start_ns - prev.start_ns) as u128;
        segments[k].cum = prev.cum.saturating_add(prev.rate as u128 * span);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What goes into one field, decided once at construction.
#[derive(Clone, Copy, Debug)]
enum FieldPlan {
    KeyU64,
    KeyI64,
    /// `k{n}`.
    KeyStr,
    EventTime,
    Random(FieldType),
}

/// The key sampler.
#[derive(Clone, Debug)]
enum KeySampler {
    Uniform { keys: u64 },
    Zipf(Zipf),
}

impl KeySampler {
    /// Key of an event from its key-field hash.
    #[inline]
    fn sample(&self, h: u64) -> u64 {
        match self {
            KeySampler::Uniform { keys } => below(h, *keys),
            KeySampler::Zipf(z) => z.sample(h),
        }
    }
}

/// Zipf over `[0, n)` by rejection-inversion (Hörmann & Derflinger, 1996), as in Apache Commons
/// RNG: O(1) expected per sample, no table. Uniforms come from a counter-based hash stream.
#[derive(Clone, Debug)]
struct Zipf {
    n: f64,
    s: f64,
    h_x1: f64,
    h_n: f64,
    squeeze: f64,
}

impl Zipf {
    fn new(keys: u64, s: f64) -> Zipf {
        let n = keys as f64;
        let mut z = Zipf { n, s, h_x1: 0.0, h_n: 0.0, squeeze: 0.0 };
        z.h_x1 = z.h_integral(1.5) - 1.0;
        z.h_n = z.h_integral(n + 0.5);
        z.squeeze = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// Hot path: a key in `[0, n)`, a pure function of `h`.
    #[inline]
    fn sample(&self, h: u64) -> u64 {
        let mut attempt = h;
        loop {
            let u = self.h_n + unit(attempt) * (self.h_x1 - self.h_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.squeeze || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64 - 1;
            }
            attempt = mix64(attempt.wrapping_add(GOLDEN));
        }
    }

    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    fn h_integral(&self, x: f64) -> f64 {
        let ln_x = x.ln();
        helper2((1.0 - self.s) * ln_x) * ln_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// `ln(1 + x) / x`, accurate near 0. Away from 0, `ln` is much cheaper than `ln_1p` and
/// loses at most ~1e-13 relative precision.
#[inline]
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-3 {
        (1.0 + x).ln() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - x * (0.25 - x * (0.2 - x / 6.0))))
    }
}

/// `(e^x - 1) / x`, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

/// `h` mapped onto `[0, n)` by multiply-shift (bias below 2^-40 for the ranges used here).
#[inline]
fn below(h: u64, n: u64) -> u64 {
    ((h as u128 * n as u128) >> 64) as u64
}

/// `h` mapped onto `[0, 1)` with 53 random bits.
#[inline]
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Which stream of events a seed gives (`event_hash`, `field_hash`), for a snapshot's
/// fingerprint: a generator resumed from a position of another stream would go on with other
/// events.
pub const STREAM: &str = "splitmix-key-base";

/// Hash of event `i` under `seed`: the key's, and the root of every other field's.
#[inline]
fn event_hash(seed: u64, i: u64) -> u64 {
    mix64(seed.wrapping_add(i.wrapping_mul(GOLDEN)))
}

/// Hash of field `pos` (not the key) of the event with hash `base`.
#[inline]
fn field_hash(base: u64, pos: usize) -> u64 {
    mix64(base.wrapping_add((pos as u64 + 1).wrapping_mul(GOLDEN)))
}

/// The next event of an instance: its index and its due and logical times.
#[derive(Clone, Copy, Debug)]
struct Next {
    index: u64,
    due_ns: u64,
    logical_ns: u64,
}

/// One instance of a generator source: produces the events `i` with
/// `i % parallelism == instance`, each due at its place in the open-loop schedule.
#[derive(Clone, Debug)]
pub struct Generator {
    plan: Vec<FieldPlan>,
    /// The plan of a generator of scalars (no string field), as `next_cells` follows it.
    cells: Option<CellPlan>,
    seed: u64,
    keys: KeySampler,
    stride: u64,
    events: Option<u64>,
    duration_ns: Option<u64>,
    schedule: Schedule,
    next: Option<Next>,
    produced: u64,
    /// This instance's number (its first event's index).
    instance: u64,
    /// Read in splits: the counter of splits taken, which every instance of the source shares,
    /// and the events per split.
    splits: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    split_events: u64,
    /// The index past the end of the split being read (`u64::MAX` when not reading in splits).
    split_end: u64,
}

impl Generator {
    /// A generator for `schema`; checks the spec against it.
    pub fn new(spec: GeneratorSpec, schema: &Schema) -> Result<Generator, GeneratorError> {
        check_instance(&spec)?;
        let plan = plan(&spec, schema)?;
        let mut generator = Generator {
            cells: CellPlan::of(&plan),
            plan,
            seed: spec.seed,
            keys: key_sampler(&spec)?,
            stride: spec.parallelism as u64,
            events: spec.events,
            duration_ns: spec.duration.map(nanos),
            schedule: Schedule::new(spec.rate, &spec.bursts)?,
            next: None,
            produced: 0,
            instance: spec.instance as u64,
            splits: None,
            split_events: 0,
            split_end: u64::MAX,
        };
        generator.next = generator.schedule_event(spec.instance as u64);
        Ok(generator)
    }

    /// Read the stream in splits of `split_events` consecutive events rather than every
    /// `parallelism`-th event: each instance takes the next split no instance has taken from
    /// `taken` (one counter for all the source's instances, starting at 0) when it has read the
    /// one it holds, so a faster shard reads more. Splits are taken in order, so each instance's
    /// events stay in index (and event-time) order. Such an instance has no replay position.
    pub fn with_splits(mut self, split_events: u64, taken: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        assert!(split_events > 0, "a split holds at least one event");
        self.stride = 1;
        self.splits = Some(taken);
        self.split_events = split_events;
        // `new` scheduled the instance's first event of fixed shares: its first split may lie
        // before it, and the schedule's cursor only moves forward.
        self.schedule.rewind();
        self.next = self.take_split();
        self
    }

    /// The first event of the next split not taken (None when it lies past the end).
    #[cold]
    fn take_split(&mut self) -> Option<Next> {
        let taken = self.splits.as_ref()?;
        let s = taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let first = s.checked_mul(self.split_events)?;
        self.split_end = first.saturating_add(self.split_events);
        self.schedule_event(first)
    }

    /// Nanoseconds since the source started at which the next event of this instance is due
    /// (open-loop schedule); `None` when finished.
    #[inline]
    pub fn next_due_ns(&self) -> Option<u64> {
        self.next.map(|n| n.due_ns)
    }

    /// Hot path: produce the next event of this instance into `values` (refilled in place; string
    /// buffers already there are reused), return its event time in ms. `None` when finished.
    pub fn next_event(&mut self, values: &mut Vec<Value>) -> Option<u64> {
        let next = self.next?;
        let event_ms = next.logical_ns / NS_PER_MS;
        self.fill(values, next.index, event_ms);
        self.advance(next);
        Some(event_ms)
    }

    /// Whether every field is a scalar (no string): [`Generator::next_cells`] makes its events.
    #[inline]
    pub fn is_scalar(&self) -> bool {
        self.cells.is_some()
    }

    /// [`Generator::next_event`] for a generator of scalars (`is_scalar`): the event's fields
    /// as archived cells, the same values `next_event` makes. Hot path.
    #[inline(always)]
    pub fn next_cells(&mut self, cells: &mut Vec<Cell>) -> Option<u64> {
        if cells.len() != self.width() {
            cells.clear(); // cold: first use, or a buffer of another shape
            cells.resize(self.width(), Cell::u64(0));
        }
        self.next_cells_into(cells)
    }

    /// How many fields its events have (the cells [`Generator::next_cells_into`] writes).
    #[inline]
    pub fn width(&self) -> usize {
        self.plan.len()
    }

    /// [`Generator::next_cells`] into `cells`, a row of [`Generator::width`] cells (one row
    /// of a batch of events made at once). Hot path.
    #[inline(always)]
    pub fn next_cells_into(&mut self, cells: &mut [Cell]) -> Option<u64> {
        let plan = self.cells.as_ref().expect("a generator of scalars");
        let next = self.next?;
        let event_ms = next.logical_ns / NS_PER_MS;
        debug_assert_eq!(cells.len(), self.width());
        let base = event_hash(self.seed, next.index);
        let key = self.keys.sample(base);
        cells[plan.key] = if plan.signed_key { Cell::i64(key as i64) } else { Cell::u64(key) };
        if let Some(t) = plan.time {
            cells[t] = Cell::u64(event_ms);
        }
        for &(pos, ty) in plan.random.iter() {
            cells[pos] = random_cell(ty, field_hash(base, pos));
        }
        self.advance(next);
        Some(event_ms)
    }

    /// `next` was produced: schedule the one after it (in splits: the next split's first when
    /// this one is read).
    ///
    /// The next event is written into `self.next` field by field where it is one (every
    /// event's case): assigned whole from the arms of a match, it was assembled on the stack
    /// with word stores and copied with 16-byte loads that straddled them, a store-forwarding
    /// stall on every event (two fifths of the generator's time in W1's profile on 2 shards).
    #[inline(always)]
    fn advance(&mut self, next: Next) {
        self.produced += 1;
        let i = match next.index.checked_add(self.stride) {
            Some(i) if i < self.split_end => i,
            Some(_) if self.splits.is_some() => return self.next = self.take_split(),
            _ => return self.next = None,
        };
        match (self.schedule_event(i), &mut self.next) {
            (Some(n), Some(slot)) => {
                slot.index = n.index;
                slot.due_ns = n.due_ns;
                slot.logical_ns = n.logical_ns;
            }
            (n, slot) => *slot = n,
        }
    }

    /// Events this instance has produced.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// Where this instance is: its seed, its next event's index and its count so far.
    pub fn position(&self) -> super::SourcePosition {
        if self.splits.is_some() {
            // Which splits the other instances took is not this instance's to record.
            return super::SourcePosition::Unreplayable;
        }
        super::SourcePosition::Generator { seed: self.seed, next: self.next.map(|n| n.index), produced: self.produced }
    }

    /// Go on from `position` (taken from an instance with the same spec): the next event is the
    /// one the position names, due at its place in the schedule (an instance resumed late
    /// finds its events overdue and catches up, as an open-loop source does).
    pub fn seek(&mut self, position: &super::SourcePosition) -> Result<(), super::PositionError> {
        if self.splits.is_some() {
            return Err(super::PositionError::Unreplayable);
        }
        let super::SourcePosition::Generator { seed, next, produced } = *position else {
            return Err(super::PositionError::WrongKind { found: position.kind(), source_kind: "generator" });
        };
        if seed != self.seed {
            return Err(super::PositionError::Seed { expected: self.seed, found: seed });
        }
        let first = self.instance;
        if let Some(i) = next.filter(|&i| i < first || !(i - first).is_multiple_of(self.stride)) {
            let (instance, parallelism) = (first, self.stride);
            return Err(super::PositionError::Instance { next: i, instance, parallelism });
        }
        self.schedule.rewind();
        self.produced = produced;
        self.next = next.and_then(|i| self.schedule_event(i));
        Ok(())
    }

    /// Event `index` with its times, or `None` when it falls past `events` or `duration`.
    /// Inlined, with the schedule's `due`: returned through memory, the times were written as
    /// words and read back as one wider load, a store-forwarding stall on every event (a third
    /// of the generator's time in W1's profile).
    #[inline(always)]
    fn schedule_event(&mut self, index: u64) -> Option<Next> {
        if self.events.is_some_and(|n| index >= n) {
            return None;
        }
        let (due_ns, logical_ns) = self.schedule.due(index)?;
        if self.duration_ns.is_some_and(|d| logical_ns >= d) {
            return None;
        }
        Some(Next { index, due_ns, logical_ns })
    }

    /// Hot path: the fields of event `i`, a pure function of `(seed, i)` and the event time.
    fn fill(&self, values: &mut Vec<Value>, i: u64, event_ms: u64) {
        if values.len() != self.plan.len() {
            values.clear(); // cold: first use, or a buffer of another shape
            values.resize(self.plan.len(), Value::Bool(false));
        }
        let base = event_hash(self.seed, i);
        for (pos, (plan, slot)) in self.plan.iter().zip(values.iter_mut()).enumerate() {
            match *plan {
                FieldPlan::KeyU64 => *slot = Value::U64(self.keys.sample(base)),
                FieldPlan::KeyI64 => *slot = Value::I64(self.keys.sample(base) as i64),
                FieldPlan::KeyStr => set_str(slot, 'k', self.keys.sample(base)),
                FieldPlan::EventTime => *slot = Value::U64(event_ms),
                FieldPlan::Random(ty) => set_random(slot, ty, field_hash(base, pos)),
            }
        }
    }
}

/// Where a generator of scalars puts what (`FieldPlan` by kind of field): the key, the event
/// time, then the random fields, each written with no match on the field's plan.
#[derive(Clone, Debug)]
struct CellPlan {
    key: usize,
    /// An i64 key (else u64).
    signed_key: bool,
    time: Option<usize>,
    random: Box<[(usize, FieldType)]>,
}

impl CellPlan {
    /// The cell plan of `plan`; `None` if a field is a string.
    fn of(plan: &[FieldPlan]) -> Option<CellPlan> {
        let (mut key, mut signed_key, mut time, mut random) = (None, false, None, Vec::new());
        for (pos, p) in plan.iter().enumerate() {
            match *p {
                FieldPlan::KeyU64 => key = Some(pos),
                FieldPlan::KeyI64 => (key, signed_key) = (Some(pos), true),
                FieldPlan::EventTime => time = Some(pos),
                FieldPlan::Random(FieldType::Str) | FieldPlan::KeyStr => return None,
                FieldPlan::Random(ty) => random.push((pos, ty)),
            }
        }
        Some(CellPlan { key: key?, signed_key, time, random: random.into() })
    }
}

/// The cell of a random scalar field (`set_random` makes its value from it).
#[inline]
fn random_cell(ty: FieldType, h: u64) -> Cell {
    match ty {
        FieldType::U64 => Cell::u64(below(h, 1000)),
        FieldType::I64 => Cell::i64(below(h, 2000) as i64 - 1000),
        FieldType::F64 => Cell::f64(unit(h)),
        FieldType::Bool => Cell::bool(h >> 63 == 1),
        FieldType::Str => unreachable!("a string in a generator of scalars"),
    }
}

/// A field that is neither key nor event time: u64 in [0, 1000), i64 in [-1000, 1000),
/// f64 in [0, 1), a fair bool, or a string `s0`..`s99`.
#[inline]
fn set_random(slot: &mut Value, ty: FieldType, h: u64) {
    match ty {
        FieldType::Str => set_str(slot, 's', below(h, 100)),
        _ => *slot = random_cell(ty, h).to_value(),
    }
}

/// Set `slot` to `{prefix}{n}`, reusing the string already there if any.
#[inline]
fn set_str(slot: &mut Value, prefix: char, n: u64) {
    if let Value::Str(s) = slot {
        s.clear();
        s.push(prefix);
        push_decimal(s, n);
    } else {
        let mut s = String::with_capacity(8);
        s.push(prefix);
        push_decimal(&mut s, n);
        *slot = Value::Str(s);
    }
}

/// Append `n` in decimal (cheaper than `fmt` on the hot path).
#[inline]
fn push_decimal(s: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
}

fn check_instance(spec: &GeneratorSpec) -> Result<(), GeneratorError> {
    if spec.parallelism == 0 {
        return Err(GeneratorError::ZeroParallelism);
    }
    if spec.instance >= spec.parallelism {
        return Err(GeneratorError::InstanceOutOfRange { instance: spec.instance, parallelism: spec.parallelism });
    }
    Ok(())
}

/// The plan of every field: key, event time, or random by type.
fn plan(spec: &GeneratorSpec, schema: &Schema) -> Result<Vec<FieldPlan>, GeneratorError> {
    let key = key_plan(spec, schema)?;
    check_event_time(spec, schema)?;
    let mut plan: Vec<FieldPlan> = schema.fields().map(|(_, t)| FieldPlan::Random(t)).collect();
    plan[spec.key_field] = key;
    if let Some(pos) = spec.event_time_field {
        plan[pos] = FieldPlan::EventTime;
    }
    Ok(plan)
}

fn key_plan(spec: &GeneratorSpec, schema: &Schema) -> Result<FieldPlan, GeneratorError> {
    let (name, ty) = field(schema, spec.key_field, FieldRole::Key)?;
    match ty {
        FieldType::U64 => Ok(FieldPlan::KeyU64),
        FieldType::I64 => Ok(FieldPlan::KeyI64),
        FieldType::Str => Ok(FieldPlan::KeyStr),
        found => Err(GeneratorError::KeyFieldType { name: name.to_owned(), found }),
    }
}

fn check_event_time(spec: &GeneratorSpec, schema: &Schema) -> Result<(), GeneratorError> {
    let Some(pos) = spec.event_time_field else {
        return Ok(());
    };
    let (name, found) = field(schema, pos, FieldRole::EventTime)?;
    let name = name.to_owned();
    match (found, pos == spec.key_field) {
        (_, true) => Err(GeneratorError::KeyIsEventTime { name }),
        (FieldType::U64, false) => Ok(()),
        (found, false) => Err(GeneratorError::EventTimeFieldType { name, found }),
    }
}

fn field(schema: &Schema, position: usize, role: FieldRole) -> Result<(&str, FieldType), GeneratorError> {
    match position < schema.len() {
        true => Ok(schema.field(position)),
        false => Err(GeneratorError::NoSuchField { role, position, fields: schema.len() }),
    }
}

fn key_sampler(spec: &GeneratorSpec) -> Result<KeySampler, GeneratorError> {
    if spec.keys == 0 {
        return Err(GeneratorError::NoKeys);
    }
    match spec.distribution {
        KeyDistribution::Uniform => Ok(KeySampler::Uniform { keys: spec.keys }),
        KeyDistribution::Zipf { s } if s.is_finite() && s > 0.0 => Ok(KeySampler::Zipf(Zipf::new(spec.keys, s))),
        KeyDistribution::Zipf { s } => Err(GeneratorError::ZipfExponent { s }),
    }
}
