//! The driver: reads both files, merges their layers, and resolves each piece into a `Config`.
//!
//! It resolves `[engine]`, `[defaults.*]` and each app's own keys (values, schema, unique names)
//! itself and hands every other piece to its part: sources, functions, sinks, graph, cluster.

use std::collections::HashMap;
use std::ops::Range;

use dirigo_actors::record::FieldType;
use toml::Spanned;

use super::check::{duplicate, field_in_schema, positive, size_at_most, Ctx, FRAME_LIMIT_WHY, MAX_FRAME_LIMIT};
use super::cluster;
use super::defaults::{Defaults, DefaultsLayer, EngineLayer, DEFAULT_TOML, DEFAULT_TOML_NAME};
use super::doc::{AppDoc, ConfigDoc};
use super::error::{ConfigError, Problem, Source};
use super::graph;
use super::model::{AppConfig, Config, SchemaConfig, SchemaField};
use super::path::KeyPath;
use super::values::OrderedTable;
use super::{functions, sinks, sources};

/// The whole config of `source`: the built-in file read first, the user's layers merged over it,
/// then every piece resolved.
pub(crate) fn config(source: Source) -> Result<Config, ConfigError> {
    let builtin = Source::new(DEFAULT_TOML_NAME, DEFAULT_TOML);
    let base = read_doc(&builtin)?;
    let user = read_doc(&source)?;
    let engine = user.engine.over(base.engine).resolve("engine")?;
    let defaults = user.defaults.over(base.defaults).resolve()?;
    let apps = apps(&source, &defaults, user.app)?;
    let cluster = cluster::settings(&source, user.cluster.over(base.cluster))?;
    let nodes = cluster::nodes(&source, user.node)?;
    cluster::secret_named(&source, &cluster, &nodes)?;
    let admin = super::admin::settings(&source, user.admin.over(base.admin))?;
    let snapshots = super::snapshots::resolve(user.snapshots, base.snapshots)?;
    Ok(Config { engine, defaults, apps, cluster, nodes, admin, snapshots, source })
}

/// One file parsed strictly, its `[engine]` and `[defaults.*]` values checked.
fn read_doc(source: &Source) -> Result<ConfigDoc, ConfigError> {
    let doc: ConfigDoc = toml::from_str(&source.text).map_err(|e| ConfigError::from_toml(source, &e))?;
    check_engine(source, &doc.engine)?;
    check_defaults(source, &doc.defaults)?;
    doc.snapshots.check(source)?;
    Ok(doc)
}

fn check_engine(src: &Source, e: &EngineLayer) -> Result<(), ConfigError> {
    let at = |key: &'static str| move || KeyPath::table("engine").key(key);
    for (key, share) in [("gather", &e.gather), ("queue_budget", &e.queue_budget)] {
        if let Some(g) = share.as_ref().filter(|g| !(0.0..=1.0).contains(g.get_ref())) {
            return Err(ConfigError::problem(src, g.span(), at(key)(), Problem::NotAShare));
        }
    }
    positive(src, &e.key_groups, at("key_groups"))?;
    positive(src, &e.max_apps, at("max_apps"))?;
    positive(src, &e.stall_budget, at("stall_budget"))?;
    positive(src, &e.shard_capacity, at("shard_capacity"))?;
    positive(src, &e.mailbox_batches, at("mailbox_batches"))?;
    positive(src, &e.batch_size, at("batch_size"))?;
    positive(src, &e.max_in_flight, at("max_in_flight"))?;
    positive(src, &e.tick, at("tick"))?;
    positive(src, &e.lessee_idle, at("lessee_idle"))?;
    positive(src, &e.stats_interval, at("stats_interval"))?;
    positive(src, &e.preempt_timer, at("preempt_timer"))
}

fn check_defaults(src: &Source, d: &DefaultsLayer) -> Result<(), ConfigError> {
    let at = |table: &str, key: &str| {
        let path = KeyPath::table(&format!("defaults.{table}")).key(key);
        move || path
    };
    positive(src, &d.app.weight, at("app", "weight"))?;
    positive(src, &d.app.watermark_every, at("app", "watermark_every"))?;
    let generator = &d.source.generator;
    positive(src, &generator.keys, at("source.generator", "keys"))?;
    positive(src, &generator.zipf_s, at("source.generator", "zipf_s"))?;
    positive(src, &generator.parallelism, at("source.generator", "parallelism"))?;
    let tcp = &d.source.tcp;
    positive(src, &tcp.max_connections, at("source.tcp", "max_connections"))?;
    positive(src, &tcp.idle_timeout, at("source.tcp", "idle_timeout"))?;
    positive(src, &tcp.max_line, at("source.tcp", "max_line"))?;
    positive(src, &tcp.max_frame, at("source.tcp", "max_frame"))?;
    size_at_most(src, &tcp.max_frame, MAX_FRAME_LIMIT, FRAME_LIMIT_WHY, at("source.tcp", "max_frame"))
}

/// Every app resolved; app names are unique.
fn apps(source: &Source, defaults: &Defaults, docs: Vec<Spanned<AppDoc>>) -> Result<Vec<AppConfig>, ConfigError> {
    let mut first: HashMap<String, Range<usize>> = HashMap::new();
    let mut apps = Vec::with_capacity(docs.len());
    for (index, doc) in docs.into_iter().enumerate() {
        let name = doc.get_ref().name.clone();
        if let Some(span) = first.get(name.get_ref()) {
            let first_line = source.line_col(span.start).0;
            let path = KeyPath::app(index, name.get_ref()).key("name");
            let problem = Problem::Duplicate { what: "app", name: name.get_ref().clone(), first_line };
            return Err(ConfigError::problem(source, name.span(), path, problem));
        }
        first.insert(name.get_ref().clone(), name.span());
        apps.push(app(source, defaults, index, doc)?);
    }
    Ok(apps)
}

/// Resolves the `index`-th app.
fn app(src: &Source, defaults: &Defaults, index: usize, doc: Spanned<AppDoc>) -> Result<AppConfig, ConfigError> {
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
        cores: doc.cores.map_or(d.cores, Spanned::into_inner),
        max_cores: doc.max_cores.map_or(d.max_cores, Spanned::into_inner),
        event_time: doc.event_time,
        watermark_delay: doc.watermark_delay.map_or(d.watermark_delay, |v| v.into_inner().0),
        watermark_every: doc.watermark_every.map_or(d.watermark_every, Spanned::into_inner),
        sources: sources::all(&ctx, doc.source, &schema)?,
        functions: functions::all(&ctx, doc.function)?,
        sinks: sinks::all(&ctx, doc.sink)?,
        schema,
        order: Vec::new(),
    };
    app.order = graph::order(&ctx, &app)?;
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
        let problem = Problem::EmptySchema;
        return Err(ctx.error(span, ctx.app.clone().key("schema"), problem));
    }
    Ok(SchemaConfig { fields })
}
