//! Schema-typed records. A record is a row of [`Value`]s whose positions are fixed by the app's
//! [`Schema`] when the app loads; it is archived once with rkyv and read in place everywhere else.

use std::fmt;

use rkyv::rancor;
use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

/// Type of a schema field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldType {
    U64,
    I64,
    F64,
    Bool,
    Str,
}

impl FieldType {
    /// Parse a type name as written in a config (`u64`, `i64`, `f64`, `bool`, `string`).
    pub fn parse(name: &str) -> Option<FieldType> {
        Some(match name {
            "u64" => FieldType::U64,
            "i64" => FieldType::I64,
            "f64" => FieldType::F64,
            "bool" => FieldType::Bool,
            "string" | "str" => FieldType::Str,
            _ => return None,
        })
    }

    /// The config name of this type.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::U64 => "u64",
            FieldType::I64 => "i64",
            FieldType::F64 => "f64",
            FieldType::Bool => "bool",
            FieldType::Str => "string",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One field value.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Value {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
}

impl Value {
    /// The type of this value.
    pub fn field_type(&self) -> FieldType {
        match self {
            Value::U64(_) => FieldType::U64,
            Value::I64(_) => FieldType::I64,
            Value::F64(_) => FieldType::F64,
            Value::Bool(_) => FieldType::Bool,
            Value::Str(_) => FieldType::Str,
        }
    }

    /// The value as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::U64(v) => (*v).into(),
            Value::I64(v) => (*v).into(),
            Value::F64(v) => {
                serde_json::Number::from_f64(*v).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
            }
            Value::Bool(v) => (*v).into(),
            Value::Str(v) => v.clone().into(),
        }
    }
}

impl ArchivedValue {
    /// The value if it is a `u64`.
    #[inline]
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            ArchivedValue::U64(v) => Some(v.to_native()),
            _ => None,
        }
    }
    /// The value if it is an `i64`.
    #[inline]
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ArchivedValue::I64(v) => Some(v.to_native()),
            _ => None,
        }
    }
    /// The value if it is an `f64`.
    #[inline]
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ArchivedValue::F64(v) => Some(v.to_native()),
            _ => None,
        }
    }
    /// The value if it is a `bool`.
    #[inline]
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ArchivedValue::Bool(v) => Some(*v),
            _ => None,
        }
    }
    /// The value if it is a string.
    #[inline]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ArchivedValue::Str(v) => Some(v.as_str()),
            _ => None,
        }
    }
    /// An owned copy (allocates for strings).
    pub fn to_value(&self) -> Value {
        match self {
            ArchivedValue::U64(v) => Value::U64(v.to_native()),
            ArchivedValue::I64(v) => Value::I64(v.to_native()),
            ArchivedValue::F64(v) => Value::F64(v.to_native()),
            ArchivedValue::Bool(v) => Value::Bool(*v),
            ArchivedValue::Str(v) => Value::Str(v.as_str().to_owned()),
        }
    }
    /// Stable 64-bit hash of the value, used to partition by key. Integers map bijectively, so
    /// distinct integer keys never collide.
    #[inline]
    pub fn key_hash(&self) -> u64 {
        match self {
            ArchivedValue::U64(v) => mix64(v.to_native()),
            ArchivedValue::I64(v) => mix64(v.to_native() as u64),
            ArchivedValue::F64(v) => mix64(v.to_native().to_bits()),
            ArchivedValue::Bool(v) => mix64(*v as u64),
            ArchivedValue::Str(v) => hash_bytes(v.as_bytes()),
        }
    }
}

impl Value {
    /// The value if it is a `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::U64(v) => Some(*v),
            _ => None,
        }
    }

    /// Same as [`ArchivedValue::key_hash`] on the owned value.
    pub fn key_hash(&self) -> u64 {
        match self {
            Value::U64(v) => mix64(*v),
            Value::I64(v) => mix64(*v as u64),
            Value::F64(v) => mix64(v.to_bits()),
            Value::Bool(v) => mix64(*v as u64),
            Value::Str(v) => hash_bytes(v.as_bytes()),
        }
    }
}

/// A bijective 64-bit mixer (the murmur3 finaliser).
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The inverse of [`mix64`]: `unmix64(mix64(x)) == x` for every `x` (each step of the
/// finaliser is invertible: a shift-xor by 33 or more is its own inverse, and the odd
/// multipliers have inverses modulo 2^64). A key whose hash is a bijection of its value is
/// recovered from the hash alone.
#[inline]
pub fn unmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0x9cb4_b2f8_1293_37db);
    x ^= x >> 33;
    x = x.wrapping_mul(0x4f74_430c_22a5_4005);
    x ^ (x >> 33)
}

/// FNV-1a over bytes, finished with [`mix64`]: stable across processes and nodes.
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// A row of values; positions follow the app's schema.
#[derive(Clone, Debug, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Record {
    pub fields: Vec<Value>,
}

impl From<Vec<Value>> for Record {
    fn from(fields: Vec<Value>) -> Self {
        Record { fields }
    }
}

impl Record {
    /// Archive into a fresh buffer (tests, setup; the engine archives into reused batches).
    pub fn to_archive(&self) -> AlignedVec {
        rkyv::to_bytes::<rancor::Error>(self).expect("records always serialise")
    }
}

impl ArchivedRecord {
    /// Owned copies of every field (allocates: not for the hot path).
    pub fn to_values(&self) -> Vec<Value> {
        self.fields.iter().map(|v| v.to_value()).collect()
    }
}

/// Serialize `values` as an archived [`Record`], appended to `buf` at a 16-byte aligned offset.
/// Returns the archive's byte range in `buf`. `buf` must start 16-byte aligned (an `AlignedVec`).
pub fn archive_values_into(values: &[Value], buf: &mut AlignedVec) -> std::ops::Range<usize> {
    rkyv::util::with_arena(|arena| archive_values_with(values, buf, arena))
}

/// [`archive_values_into`] with a caller-owned scratch arena: the hot path keeps one per shard
/// and reuses it, instead of a thread-local look-up per record.
#[inline]
pub fn archive_values_with(values: &[Value], buf: &mut AlignedVec, arena: &mut Arena) -> std::ops::Range<usize> {
    if let Some(r) = archive_scalars(values, buf) {
        return r;
    }
    // A `Record` borrows nothing, so archive a view with the same archived layout: `Vec<Value>`
    // and `[Value]` both archive to `ArchivedVec<ArchivedValue>`.
    let start = buf.len().next_multiple_of(16);
    buf.resize(start, 0);
    let view = RecordView { fields: values };
    let taken = std::mem::take(buf);
    let out = rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Panic>(&view, taken, arena.acquire());
    *buf = out.unwrap_or_else(|never| match never {});
    start..buf.len()
}

/// A scalar value (u64, i64, f64 or bool) in its archived form: rkyv lays `ArchivedValue` out
/// as a `repr(u8)` enum of 16 bytes, its tag (the variant's index) in the first byte, a bool's
/// byte right after it, an 8-byte payload in the second word; a `Cell` is those 16 bytes as two
/// little-endian words. Operators whose outputs are scalars build their rows of cells
/// ([`Emitter::emit_cells`](crate::operator::Emitter::emit_cells)) and the row is archived by
/// copying them ([`archive_cells`]): no [`Value`] is made and none is matched on (a `Value`'s
/// tag sits in a niche of its string, which takes several instructions to read back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct Cell([u64; 2]);

const _: () = assert!(std::mem::size_of::<Cell>() == std::mem::size_of::<ArchivedValue>());

impl Cell {
    const U64: u64 = 0;
    const I64: u64 = 1;
    const F64: u64 = 2;
    const BOOL: u64 = 3;

    #[inline(always)]
    pub fn u64(x: u64) -> Cell {
        Cell([Self::U64, x])
    }
    #[inline(always)]
    pub fn i64(x: i64) -> Cell {
        Cell([Self::I64, x as u64])
    }
    #[inline(always)]
    pub fn f64(x: f64) -> Cell {
        Cell([Self::F64, x.to_bits()])
    }
    #[inline(always)]
    pub fn bool(b: bool) -> Cell {
        Cell([Self::BOOL | (b as u64) << 8, 0])
    }

    /// The cell, read a word at a time. A row of cells is mostly made just before it is
    /// archived, each cell written as its two words (`Cell::u64` and the rest are two stores);
    /// a cell copied whole is one 16-byte load, which cannot take its bytes from those two
    /// stores while they are still queued: it waits for both to reach the cache (a
    /// store-forwarding stall: in W1 on 2 shards, the copy of a fused map's row into its
    /// archive held 3-6% of the samples). Two word loads take them from the queue at once; the
    /// volatile reads keep the compiler from merging them back into one.
    #[inline(always)]
    pub fn by_words(&self) -> Cell {
        // SAFETY: both words are valid, aligned `u64`s of `self`.
        unsafe { Cell([std::ptr::read_volatile(&self.0[0]), std::ptr::read_volatile(&self.0[1])]) }
    }

    /// The cell of a scalar value; `None` for a string.
    #[inline(always)]
    pub fn of_value(v: &Value) -> Option<Cell> {
        Some(match *v {
            Value::U64(x) => Cell::u64(x),
            Value::I64(x) => Cell::i64(x),
            Value::F64(x) => Cell::f64(x),
            Value::Bool(b) => Cell::bool(b),
            Value::Str(_) => return None,
        })
    }

    /// The cell of an archived scalar value; `None` for a string.
    #[inline(always)]
    pub fn of(v: &ArchivedValue) -> Option<Cell> {
        Some(match v {
            ArchivedValue::U64(x) => Cell::u64(x.to_native()),
            ArchivedValue::I64(x) => Cell::i64(x.to_native()),
            ArchivedValue::F64(x) => Cell::f64(x.to_native()),
            ArchivedValue::Bool(b) => Cell::bool(*b),
            ArchivedValue::Str(_) => return None,
        })
    }

    /// A row of cells seen as the archived values it is made of (what [`archive_cells`] writes
    /// them as): a record's fields, for expressions to read in place, with nothing written.
    #[cfg(target_endian = "little")]
    #[inline(always)]
    pub fn as_archived(cells: &[Cell]) -> &[ArchivedValue] {
        const _: () = assert!(std::mem::align_of::<ArchivedValue>() <= std::mem::align_of::<Cell>());
        // SAFETY: a cell is the 16 bytes of an archived scalar value (see the type), sizes are
        // equal and the cell's alignment is at least the value's; cells are made only by the
        // constructors above, so each holds a valid tag (and a bool's byte is 0 or 1).
        unsafe { std::slice::from_raw_parts(cells.as_ptr().cast::<ArchivedValue>(), cells.len()) }
    }

    /// The value it holds.
    pub fn to_value(self) -> Value {
        match self.0[0] & 0xff {
            Self::U64 => Value::U64(self.0[1]),
            Self::I64 => Value::I64(self.0[1] as i64),
            Self::F64 => Value::F64(f64::from_bits(self.0[1])),
            _ => Value::Bool(self.0[0] >> 8 & 1 == 1),
        }
    }

    /// The value if it is a `u64`.
    #[inline]
    pub fn as_u64(self) -> Option<u64> {
        (self.0[0] == Self::U64).then_some(self.0[1])
    }

    /// Same as [`Value::key_hash`] of the value it holds.
    #[inline]
    pub fn key_hash(self) -> u64 {
        match self.0[0] & 0xff {
            Self::BOOL => mix64(self.0[0] >> 8 & 1),
            _ => mix64(self.0[1]),
        }
    }
}

/// Append the archive of a record of `cells` to `buf` at a 16-byte aligned offset (as
/// [`archive_values_into`] would of their values); returns its byte range. `buf` must start
/// 16-byte aligned (an `AlignedVec`). Hot path: a store per cell and the root.
#[cfg(target_endian = "little")]
#[inline(always)]
pub fn archive_cells(cells: &[Cell], buf: &mut AlignedVec) -> std::ops::Range<usize> {
    write_cells(cells.len(), buf, |i| Some(cells[i].by_words())).expect("every cell is written")
}

/// The fixed layout of a record of `n` scalars, written in place: cell `cell(i)` for each, one
/// after the other, then the root (relative pointer and length). The bytes are exactly rkyv's
/// (`scalar_records_archive_exactly_as_rkyv_does`, `cells_archive_as_their_values_do`), without
/// a serializer per record: a third of the cost of a hop's output in W1 went to setting one up.
/// Each cell is one 16-byte store. `None`, with `buf`'s length as it was, when `cell` gives none
/// for a field (a string: rkyv's serializer writes that record).
#[cfg(target_endian = "little")]
#[inline(always)]
fn write_cells(n: usize, buf: &mut AlignedVec, cell: impl Fn(usize) -> Option<Cell>) -> Option<std::ops::Range<usize>> {
    const ELEM: usize = std::mem::size_of::<ArchivedValue>();
    const _: () = assert!(
        ELEM == 16
            && std::mem::align_of::<ArchivedValue>() <= 16
            && std::mem::size_of::<ArchivedRecord>() == 8
            && std::mem::align_of::<ArchivedRecord>() <= 8
    );
    let old = buf.len();
    let start = old.next_multiple_of(16);
    let root = start + n * ELEM;
    let end = root + std::mem::size_of::<ArchivedRecord>();
    buf.reserve(end - old + 16);
    let base = buf.as_mut_ptr();
    // Zero the alignment gap (rkyv's writer pads with zeros): one 16-byte store from `old`,
    // which the cells then overwrite where it runs past `start` (a variable-length fill would
    // be a call to memset).
    // SAFETY: `old + 16 <= start + 16 <= end + 16`, inside the reserved bytes.
    unsafe { base.add(old).cast::<[u8; 16]>().write_unaligned([0; 16]) };
    for i in 0..n {
        let c = cell(i)?;
        // SAFETY: `reserve` made `end` bytes available; `start + i * ELEM` is 16-aligned in a
        // 16-aligned buffer, and its 16 bytes end before `root`. Written a word at a time, as
        // it was read (`Cell::by_words`).
        unsafe {
            let to = base.add(start + i * ELEM).cast::<u64>();
            to.write(c.0[0]);
            to.add(1).write(c.0[1]);
        }
    }
    // The root: the vector's relative pointer (from the root to the first value) and length.
    let rel = (start as i64 - root as i64) as i32 as u32 as u64;
    // SAFETY: the 8-byte root at `root` (8-aligned) lies inside the reserved `end` bytes; every
    // byte up to `end` is now written.
    unsafe {
        base.add(root).cast::<u64>().write(rel | (n as u64) << 32);
        buf.set_len(end);
    }
    Some(start..end)
}

/// Elsewhere rkyv's serializer writes every record.
#[cfg(not(target_endian = "little"))]
pub fn archive_cells(cells: &[Cell], buf: &mut AlignedVec) -> std::ops::Range<usize> {
    let values: Vec<Value> = cells.iter().map(|c| c.to_value()).collect();
    archive_values_into(&values, buf)
}

/// A record of `values` without strings written in place (`write_cells`); `None`, with `buf` as
/// it was, when a value is a string or there is none: rkyv's serializer writes that record.
#[cfg(target_endian = "little")]
#[inline]
fn archive_scalars(values: &[Value], buf: &mut AlignedVec) -> Option<std::ops::Range<usize>> {
    if values.is_empty() {
        return None;
    }
    write_cells(values.len(), buf, |i| Cell::of_value(&values[i]))
}

/// Elsewhere rkyv's serializer writes every record.
#[cfg(not(target_endian = "little"))]
#[inline]
fn archive_scalars(_: &[Value], _: &mut AlignedVec) -> Option<std::ops::Range<usize>> {
    None
}

/// Borrowed form of [`Record`] with the same archived type.
struct RecordView<'a> {
    fields: &'a [Value],
}

impl rkyv::Archive for RecordView<'_> {
    type Archived = ArchivedRecord;
    type Resolver = rkyv::vec::VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<ArchivedRecord>) {
        rkyv::munge::munge!(let ArchivedRecord { fields } = out);
        rkyv::vec::ArchivedVec::resolve_from_slice(self.fields, resolver, fields);
    }
}

impl<S> rkyv::Serialize<S> for RecordView<'_>
where
    S: rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
    Value: rkyv::Serialize<S>,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        rkyv::vec::ArchivedVec::serialize_from_slice(self.fields, serializer)
    }
}

/// Read an archive from untrusted bytes: validated.
pub fn access(bytes: &[u8]) -> Result<&ArchivedRecord, RecordError> {
    rkyv::access::<ArchivedRecord, rancor::Error>(bytes).map_err(|e| RecordError::Invalid(e.to_string()))
}

/// A record archive known to be well formed, read in place without a check: the one way Dirigo
/// reads a record payload. Only two things make one: validation ([`TrustedRecord::validate`], at
/// a trust boundary) and a [`RecordsOnly`] proof that the bytes come from a stream of records
/// this process archived or validated ([`RecordsOnly::read`]).
#[derive(Clone, Copy, Debug)]
pub struct TrustedRecord<'a> {
    bytes: &'a [u8],
}

impl<'a> TrustedRecord<'a> {
    /// Check that `bytes` hold a well-formed archived [`Record`] (about 10 ns for a small one).
    pub fn validate(bytes: &'a [u8]) -> Result<Self, RecordError> {
        access(bytes)?;
        Ok(TrustedRecord { bytes })
    }

    /// The record, read in place. Hot path.
    #[inline]
    pub fn get(self) -> &'a ArchivedRecord {
        // SAFETY: a `TrustedRecord` is only made by `validate` (checked above) or by
        // `RecordsOnly::read`, whose proof says the bytes are a record archive this process wrote
        // or validated; rkyv archives from `AlignedVec`s and frames start 16-byte aligned.
        unsafe { rkyv::access_unchecked::<ArchivedRecord>(self.bytes) }
    }

    /// The archive's bytes (to pass the record on without re-archiving it).
    #[inline]
    pub fn bytes(self) -> &'a [u8] {
        self.bytes
    }
}

/// Proof, zero-sized, that every payload of a stream (a function's inputs, a batch) is a
/// [`Record`] archive made by [`archive_values_into`] or [`Record::to_archive`] in this process,
/// or checked by [`TrustedRecord::validate`]. Holding one makes reading those payloads safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordsOnly(());

impl RecordsOnly {
    /// Assert the proof.
    ///
    /// # Safety
    /// Every payload later passed to [`RecordsOnly::read`] on this proof must be exactly a
    /// record archive as described on the type, starting 16-byte aligned.
    pub unsafe fn assert() -> RecordsOnly {
        RecordsOnly(())
    }

    /// A payload of the stream this proof covers, as a record. Hot path.
    #[inline]
    pub fn read(self, payload: &[u8]) -> TrustedRecord<'_> {
        TrustedRecord { bytes: payload }
    }
}

/// Errors about records and their schema.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("invalid record archive: {0}")]
    Invalid(String),
    #[error("line is not a JSON object: {0}")]
    NotJson(String),
    #[error("field `{field}` is missing")]
    MissingField { field: String },
    #[error("field `{field}` is not in the schema")]
    UnknownField { field: String },
    #[error("field `{field}` should be {expected}, found `{found}`")]
    WrongType { field: String, expected: FieldType, found: String },
    #[error("record has {found} fields, the schema has {expected}")]
    WrongArity { expected: usize, found: usize },
}

/// Named, typed fields of an app's records. Names resolve to positions at load time.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Schema {
    fields: Vec<(String, FieldType)>,
}

impl Schema {
    /// A schema from (name, type) pairs, in position order.
    pub fn new(fields: Vec<(String, FieldType)>) -> Self {
        Schema { fields }
    }
    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }
    /// True when the schema has no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
    /// Position of a field by name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|(n, _)| n == name)
    }
    /// Name and type at a position.
    pub fn field(&self, pos: usize) -> (&str, FieldType) {
        let (n, t) = &self.fields[pos];
        (n, *t)
    }
    /// Every (name, type), in position order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, FieldType)> {
        self.fields.iter().map(|(n, t)| (n.as_str(), *t))
    }

    /// Parse one NDJSON object into values in schema order. Integers are accepted for `f64`
    /// fields; every schema field must be present and no other field may be.
    pub fn parse_json(&self, line: &str) -> Result<Vec<Value>, RecordError> {
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| RecordError::NotJson(e.to_string()))?;
        let mut out = Vec::with_capacity(self.fields.len());
        for (name, ty) in &self.fields {
            let v = obj.get(name).ok_or_else(|| RecordError::MissingField { field: name.clone() })?;
            out.push(json_to_value(name, *ty, v)?);
        }
        if obj.len() != self.fields.len() {
            if let Some(k) = obj.keys().find(|k| self.position(k).is_none()) {
                return Err(RecordError::UnknownField { field: k.clone() });
            }
        }
        Ok(out)
    }

    /// Parse one CSV row (fields in schema order) into values.
    pub fn parse_csv_row<'a>(&self, cells: impl IntoIterator<Item = &'a str>) -> Result<Vec<Value>, RecordError> {
        let mut out = Vec::with_capacity(self.fields.len());
        for (i, cell) in cells.into_iter().enumerate() {
            let Some((name, ty)) = self.fields.get(i) else {
                return Err(RecordError::WrongArity { expected: self.fields.len(), found: i + 1 });
            };
            out.push(parse_cell(name, *ty, cell.trim())?);
        }
        if out.len() != self.fields.len() {
            return Err(RecordError::WrongArity { expected: self.fields.len(), found: out.len() });
        }
        Ok(out)
    }

    /// Format an archived record as one NDJSON object (no trailing newline) into `out`.
    pub fn write_json(&self, rec: &ArchivedRecord, out: &mut String) {
        use std::fmt::Write;
        out.push('{');
        for (i, v) in rec.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let name = self.fields.get(i).map(|(n, _)| n.as_str()).unwrap_or("_");
            write_json_str(name, out);
            out.push(':');
            match v {
                ArchivedValue::U64(x) => write!(out, "{}", x.to_native()).unwrap(),
                ArchivedValue::I64(x) => write!(out, "{}", x.to_native()).unwrap(),
                ArchivedValue::F64(x) => {
                    let x = x.to_native();
                    if x.is_finite() {
                        write!(out, "{x:?}").unwrap()
                    } else {
                        out.push_str("null")
                    }
                }
                ArchivedValue::Bool(x) => write!(out, "{x}").unwrap(),
                ArchivedValue::Str(s) => write_json_str(s.as_str(), out),
            }
        }
        out.push('}');
    }
}

fn write_json_str(s: &str, out: &mut String) {
    // serde_json escapes exactly as JSON requires.
    out.push_str(&serde_json::to_string(s).expect("strings serialise"));
}

fn json_to_value(name: &str, ty: FieldType, v: &serde_json::Value) -> Result<Value, RecordError> {
    let wrong = || RecordError::WrongType { field: name.to_owned(), expected: ty, found: v.to_string() };
    Ok(match ty {
        FieldType::U64 => Value::U64(v.as_u64().ok_or_else(wrong)?),
        FieldType::I64 => Value::I64(v.as_i64().ok_or_else(wrong)?),
        FieldType::F64 => Value::F64(v.as_f64().ok_or_else(wrong)?),
        FieldType::Bool => Value::Bool(v.as_bool().ok_or_else(wrong)?),
        FieldType::Str => Value::Str(v.as_str().ok_or_else(wrong)?.to_owned()),
    })
}

fn parse_cell(name: &str, ty: FieldType, cell: &str) -> Result<Value, RecordError> {
    let wrong = || RecordError::WrongType { field: name.to_owned(), expected: ty, found: cell.to_owned() };
    Ok(match ty {
        FieldType::U64 => Value::U64(cell.parse().map_err(|_| wrong())?),
        FieldType::I64 => Value::I64(cell.parse().map_err(|_| wrong())?),
        FieldType::F64 => Value::F64(cell.parse().map_err(|_| wrong())?),
        FieldType::Bool => Value::Bool(cell.parse().map_err(|_| wrong())?),
        FieldType::Str => Value::Str(cell.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            ("a".into(), FieldType::U64),
            ("b".into(), FieldType::I64),
            ("c".into(), FieldType::F64),
            ("d".into(), FieldType::Bool),
            ("e".into(), FieldType::Str),
        ])
    }

    /// The hand-written layout of string-free records is byte for byte rkyv's, at every offset
    /// of a shared buffer, for every scalar type and arity.
    #[test]
    fn scalar_records_archive_exactly_as_rkyv_does() {
        let pick = |i: u64| match i % 4 {
            0 => Value::U64(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            1 => Value::I64(-(i as i64) * 1_000_003),
            2 => Value::F64(i as f64 / 3.0),
            _ => Value::Bool(i % 8 == 3),
        };
        let (mut fast, mut slow): (AlignedVec, AlignedVec) = (AlignedVec::new(), AlignedVec::new());
        for n in 1..=9u64 {
            for shift in 0..4 {
                let values: Vec<Value> = (0..n).map(|i| pick(i + shift)).collect();
                let a = archive_scalars(&values, &mut fast).expect("scalars");
                let mut arena = Arena::new();
                let start = slow.len().next_multiple_of(16);
                slow.resize(start, 0);
                let taken = std::mem::take(&mut slow);
                slow = rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Panic>(
                    &RecordView { fields: &values },
                    taken,
                    arena.acquire(),
                )
                .unwrap_or_else(|never| match never {});
                assert_eq!(a, start..slow.len(), "{n} values");
                assert_eq!(&fast[..], &slow[..], "{n} values");
                assert_eq!(access(&fast[a]).unwrap().to_values(), values);
                fast.push(1); // the next record starts at another offset
                slow.push(1);
            }
        }
    }

    /// A row of cells archives to the bytes its values do, at every offset of a shared buffer;
    /// a cell read from an archive is the cell of its value, and a cell's key hash is its
    /// value's.
    #[test]
    fn cells_archive_as_their_values_do() {
        let pick = |i: u64| match i % 5 {
            0 => Value::U64(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            1 => Value::I64(-(i as i64) * 1_000_003),
            2 => Value::F64(i as f64 / -3.0),
            3 => Value::Bool(i % 10 == 3),
            _ => Value::Bool(false),
        };
        let (mut by_cells, mut by_values) = (AlignedVec::new(), AlignedVec::new());
        for n in 0..=9u64 {
            for shift in 0..5 {
                let values: Vec<Value> = (0..n).map(|i| pick(i + shift)).collect();
                let cells: Vec<Cell> = values.iter().map(|v| Cell::of_value(v).expect("a scalar")).collect();
                let a = archive_cells(&cells, &mut by_cells);
                let b = archive_values_into(&values, &mut by_values);
                assert_eq!(a, b, "{n} values");
                assert_eq!(&by_cells[..], &by_values[..], "{n} values");
                let rec = access(&by_cells[a]).unwrap();
                let seen = Cell::as_archived(&cells);
                assert_eq!(seen.len(), cells.len());
                for (((v, c), archived), in_place) in values.iter().zip(&cells).zip(rec.fields.iter()).zip(seen) {
                    assert_eq!(Cell::of(archived), Some(*c));
                    assert_eq!(Cell::of(in_place), Some(*c), "a cell read in place as its archived value");
                    assert_eq!(c.to_value(), *v);
                    assert_eq!(c.key_hash(), v.key_hash());
                    assert_eq!(c.as_u64(), v.as_u64());
                }
                by_cells.push(1); // the next record starts at another offset
                by_values.push(1);
            }
        }
        assert_eq!(Cell::of_value(&Value::Str("s".into())), None);
        let s = Record::from(vec![Value::Str("s".into())]).to_archive();
        assert_eq!(Cell::of(&access(&s).unwrap().fields[0]), None);
    }

    #[test]
    fn archive_into_shared_buffer_reads_back_in_place() {
        let mut buf = AlignedVec::new();
        let r1 = archive_values_into(&[Value::U64(1), Value::Str("x".into())], &mut buf);
        let r2 = archive_values_into(&[Value::I64(-5), Value::F64(2.5)], &mut buf);
        assert_eq!(r1.start % 16, 0);
        assert_eq!(r2.start % 16, 0);
        let a = access(&buf[r1]).unwrap();
        let b = access(&buf[r2]).unwrap();
        assert_eq!(a.to_values(), vec![Value::U64(1), Value::Str("x".into())]);
        assert_eq!(b.to_values(), vec![Value::I64(-5), Value::F64(2.5)]);
    }

    #[test]
    fn json_round_trip_and_errors() {
        let s = schema();
        let v = s.parse_json(r#"{"a":1,"b":-2,"c":3,"d":true,"e":"hi \"x\""}"#).unwrap();
        let bytes = Record::from(v.clone()).to_archive();
        let mut out = String::new();
        s.write_json(access(&bytes).unwrap(), &mut out);
        assert_eq!(s.parse_json(&out).unwrap(), v);
        assert_eq!(
            s.parse_json(r#"{"a":1,"b":-2,"c":3,"d":true}"#),
            Err(RecordError::MissingField { field: "e".into() })
        );
        assert!(matches!(s.parse_json(r#"{"a":-1,"b":-2,"c":3,"d":true,"e":""}"#), Err(RecordError::WrongType { .. })));
        assert_eq!(
            s.parse_json(r#"{"a":1,"b":-2,"c":3,"d":true,"e":"","z":0}"#),
            Err(RecordError::UnknownField { field: "z".into() })
        );
        assert!(matches!(s.parse_json("{"), Err(RecordError::NotJson(_))));
    }

    #[test]
    fn csv_rows_follow_the_schema() {
        let s = schema();
        let v = s.parse_csv_row(["1", "-2", "3.5", "false", "x"]).unwrap();
        assert_eq!(v[2], Value::F64(3.5));
        assert!(matches!(s.parse_csv_row(["1", "2"]), Err(RecordError::WrongArity { .. })));
    }

    #[test]
    fn unmix64_inverts_mix64() {
        let edges = [0, 1, u64::MAX, 1 << 63, (1 << 33) - 1];
        // Spread over the whole range (a Weyl sequence), and small numbers.
        let spread = (0..100_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i >> 3);
        for x in edges.into_iter().chain(spread).chain(0..1000) {
            assert_eq!(unmix64(mix64(x)), x, "{x:#x}");
            assert_eq!(mix64(unmix64(x)), x, "{x:#x}");
        }
    }

    #[test]
    fn integer_keys_never_collide() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..100_000u64 {
            assert!(seen.insert(mix64(i)));
        }
    }
}
