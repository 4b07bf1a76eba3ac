//! From the config as written to the public types: app-level checks, the schema, defaults
//! filled in.

use dirigo_actors::record::FieldType;
use toml::Spanned;

use super::check::{duplicate, field_in_schema, positive, Ctx};
use super::defaults::Defaults;
use super::doc::AppDoc;
use super::error::{ConfigError, Problem, Source};
use super::graph;
use super::model::{AppConfig, SchemaConfig, SchemaField};
use super::path::KeyPath;
use super::values::OrderedTable;
use super::{functions, sinks, sources};

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
        sources: sources::all(&ctx, doc.source, &schema)?,
        functions: functions::all(&ctx, doc.function)?,
        sinks: sinks::all(&ctx, doc.sink)?,
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
