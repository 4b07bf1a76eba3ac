//! From the config as written to the public types: app-level checks, the schema, defaults
//! filled in, and the shared helpers (required keys, positive values, per-kind keys).

use std::ops::Range;

use dirigo_actors::record::FieldType;
use toml::Spanned;

use super::defaults::Defaults;
use super::doc::AppDoc;
use super::error::{ConfigError, Problem, Source};
use super::graph;
use super::model::{AppConfig, SchemaConfig, SchemaField};
use super::nodes;
use super::path::{KeyPath, Role};
use super::values::{HumanDuration, OrderedTable};

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
zero_int!(u32, u64, usize);

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

/// Resolves the `index`-th app.
pub(crate) fn app(
    src: &Source,
    defaults: &Defaults,
    index: usize,
    doc: Spanned<AppDoc>,
) -> Result<AppConfig, ConfigError> {
    let span = doc.span();
    let doc = doc.into_inner();
    let ctx = Ctx { src, defaults, app: KeyPath::app(index, doc.name.get_ref()) };
    check_app_values(&ctx, &doc)?;
    let schema = schema(&ctx, doc.schema)?;
    if let Some(field) = &doc.event_time {
        field_in_schema(&ctx, &schema, field, ctx.app.clone().key("event_time"))?;
    }
    for (list, key) in [(doc.source.is_empty(), "source"), (doc.sink.is_empty(), "sink")] {
        if list {
            let reason = format!("an app needs at least one [[app.{key}]]");
            let problem = Problem::MissingKey { key, reason };
            return Err(ctx.error(span, ctx.app.clone(), problem));
        }
    }
    let d = &defaults.app;
    let mut app = AppConfig {
        name: doc.name,
        slo: doc.slo.into_inner().0,
        weight: doc.weight.map_or(d.weight, Spanned::into_inner),
        event_time: doc.event_time,
        watermark_delay: doc.watermark_delay.map_or(d.watermark_delay, |v| v.into_inner().0),
        watermark_every: doc.watermark_every.map_or(d.watermark_every, Spanned::into_inner),
        sources: nodes::sources(&ctx, doc.source, &schema)?,
        functions: nodes::functions(&ctx, doc.function)?,
        sinks: nodes::sinks(&ctx, doc.sink)?,
        schema,
        order: Vec::new(),
    };
    app.order = graph::check(&ctx, &app)?;
    Ok(app)
}

fn check_app_values(ctx: &Ctx<'_>, doc: &AppDoc) -> Result<(), ConfigError> {
    let at = |key: &str| ctx.app.clone().key(key);
    positive(ctx.src, &Some(doc.slo.clone()), || at("slo"))?;
    positive(ctx.src, &doc.weight, || at("weight"))?;
    positive(ctx.src, &doc.watermark_every, || at("watermark_every"))
}

/// The schema in written order; each type must be a known one, each name unique.
fn schema(ctx: &Ctx<'_>, doc: Spanned<OrderedTable>) -> Result<SchemaConfig, ConfigError> {
    let span = doc.span();
    let mut fields: Vec<SchemaField> = Vec::new();
    for (name, ty) in doc.into_inner().0 {
        let path = ctx.app.clone().key("schema").key(name.get_ref());
        let Some(parsed) = FieldType::parse(ty.get_ref()) else {
            let valid = ["u64", "i64", "f64", "bool", "string"].map(String::from).to_vec();
            let name = ty.get_ref().clone();
            let problem = Problem::UnknownName { what: "type", name, valid };
            return Err(ctx.error(ty.span(), path, problem));
        };
        if let Some(first) = fields.iter().find(|f| f.name.get_ref() == name.get_ref()) {
            return Err(duplicate(ctx, "field", first.name.span(), &name, path));
        }
        let ty = Spanned::new(ty.span(), parsed);
        fields.push(SchemaField { name, ty });
    }
    if fields.is_empty() {
        let problem = Problem::Invalid("a schema needs at least one field".into());
        return Err(ctx.error(span, ctx.app.clone().key("schema"), problem));
    }
    Ok(SchemaConfig { fields })
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
