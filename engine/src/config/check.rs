//! The rules every part resolves by: the app's [`Ctx`], the shared checks, and defaulting.
//!
//! Values that must be positive or below a bound, keys a kind requires or does not take, known
//! format names, unique names, schema fields, and a default for a key left out.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::defaults::Defaults;
use super::error::{ConfigError, Problem, Source};
use super::model::SchemaConfig;
use super::path::{KeyPath, Role};
use super::values::{HumanDuration, HumanSize};

/// What resolving one app needs: the file, the merged defaults and the app's key path.
pub(crate) struct Ctx<'a> {
    pub src: &'a Source,
    pub defaults: &'a Defaults,
    pub app: KeyPath,
}

impl Ctx<'_> {
    /// An error at `span`, `path` below the app.
    pub fn error(&self, span: Range<usize>, path: KeyPath, problem: Problem) -> ConfigError {
        ConfigError::problem(self.src, span, path, problem)
    }

    /// The path of a node of this app.
    pub fn node(&self, role: Role, index: usize, name: &Spanned<String>) -> KeyPath {
        self.app.clone().node(role, index, name.get_ref())
    }
}

/// Values for which zero (or less) makes no sense where [`positive`] is asked.
pub(crate) trait Zero {
    fn is_zero(&self) -> bool;
}

macro_rules! zero_int {
    ($($ty:ty),*) => { $(impl Zero for $ty { fn is_zero(&self) -> bool { *self == 0 } })* };
}
zero_int!(u16, u32, u64, usize);

impl Zero for f64 {
    fn is_zero(&self) -> bool {
        self.is_nan() || *self <= 0.0
    }
}

impl Zero for HumanDuration {
    fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl Zero for HumanSize {
    fn is_zero(&self) -> bool {
        self.0 == 0
    }
}

/// Fails when `value` is present and zero; `path` is the key's path.
pub(crate) fn positive<T: Zero>(
    src: &Source,
    value: &Option<Spanned<T>>,
    path: impl FnOnce() -> KeyPath,
) -> Result<(), ConfigError> {
    match value {
        Some(v) if v.get_ref().is_zero() => Err(ConfigError::problem(src, v.span(), path(), Problem::NotPositive)),
        _ => Ok(()),
    }
}

/// The largest `max_frame` of a tcp source: the wire format's payload limit.
pub(crate) const MAX_FRAME_LIMIT: u64 = dirigo_net::frame::PAYLOAD_LIMIT as u64;
pub(crate) const FRAME_LIMIT_WHY: &str = "the wire format's largest payload";

/// Fails when a size is present and over `max` (`why` says whose limit that is).
pub(crate) fn size_at_most(
    src: &Source,
    value: &Option<Spanned<HumanSize>>,
    max: u64,
    why: &'static str,
    path: impl FnOnce() -> KeyPath,
) -> Result<(), ConfigError> {
    match value {
        Some(v) if v.get_ref().0 > max => {
            let max = dirigo_net::tcp::human_size(max);
            Err(ConfigError::problem(src, v.span(), path(), Problem::TooLarge { max, why }))
        }
        _ => Ok(()),
    }
}

/// The value of a key the node's kind requires.
pub(crate) fn require<T>(
    ctx: &Ctx<'_>,
    value: Option<Spanned<T>>,
    node: (&KeyPath, Range<usize>),
    key: &'static str,
    reason: &str,
) -> Result<Spanned<T>, ConfigError> {
    value.ok_or_else(|| {
        let reason = reason.to_owned();
        ctx.error(node.1, node.0.clone(), Problem::MissingKey { key, reason })
    })
}

/// A "duplicate name" error at `again`, quoting the line of the first occurrence.
pub(crate) fn duplicate(
    ctx: &Ctx<'_>,
    what: &'static str,
    first: Range<usize>,
    again: &Spanned<String>,
    path: KeyPath,
) -> ConfigError {
    let first_line = ctx.src.line_col(first.start).0;
    let name = again.get_ref().clone();
    ctx.error(again.span(), path, Problem::Duplicate { what, name, first_line })
}

/// Fails unless `field` names a field of the app's schema.
pub(crate) fn field_in_schema(
    ctx: &Ctx<'_>,
    schema: &SchemaConfig,
    field: &Spanned<String>,
    path: KeyPath,
) -> Result<(), ConfigError> {
    if schema.field(field.get_ref()).is_some() {
        return Ok(());
    }
    let valid = schema.fields.iter().map(|f| f.name.get_ref().clone()).collect();
    let name = field.get_ref().clone();
    let problem = Problem::UnknownName { what: "schema field", name, valid };
    Err(ctx.error(field.span(), path, problem))
}

/// Fails when a node sets a key its kind does not take.
pub(crate) fn kind_keys(
    ctx: &Ctx<'_>,
    path: &KeyPath,
    (role, kind): (Role, &'static str),
    present: Vec<(&'static str, Range<usize>)>,
    allowed: &[&'static str],
) -> Result<(), ConfigError> {
    for (key, span) in present {
        if !allowed.contains(&key) {
            let mut all = vec!["name", "kind"];
            all.extend_from_slice(match role {
                Role::Source => &[],
                Role::Function => &["max_lessees"],
                Role::Sink => &["input"],
            });
            all.extend_from_slice(allowed);
            let problem = Problem::KeyNotForKind { role: role.name(), kind, key, allowed: all };
            return Err(ctx.error(span, path.clone().key(key), problem));
        }
    }
    Ok(())
}

/// A `format` written as a string, checked against the names valid for this kind.
pub(crate) fn known_format<T>(
    ctx: &Ctx<'_>,
    node: &KeyPath,
    written: Option<Spanned<String>>,
    parse: fn(&str) -> Option<T>,
    names: &[&str],
) -> Result<Option<T>, ConfigError> {
    let Some(written) = written else {
        return Ok(None);
    };
    match parse(written.get_ref()) {
        Some(value) => Ok(Some(value)),
        None => {
            let valid = names.iter().map(|n| n.to_string()).collect();
            let name = written.get_ref().clone();
            let problem = Problem::UnknownName { what: "format", name, valid };
            Err(ctx.error(written.span(), node.clone().key("format"), problem))
        }
    }
}

/// The value written, else the default.
pub(crate) fn or<T>(value: Option<Spanned<T>>, default: T) -> T {
    value.map_or(default, Spanned::into_inner)
}

/// The duration written, else the default.
pub(crate) fn or_duration(value: Option<Spanned<HumanDuration>>, default: Duration) -> Duration {
    value.map_or(default, |v| v.into_inner().0)
}
