//! Resolves an app's `[[app.source]]` list: per-kind keys, required keys, formats, defaults.
//!
//! The generator's `key_field` is checked against the app's schema.

use std::ops::Range;

use dirigo_actors::record::FieldType;
use toml::Spanned;

use super::check::{
    field_in_schema, kind_keys, known_format, or, or_duration, positive, require, size_at_most, Ctx, FRAME_LIMIT_WHY,
    MAX_FRAME_LIMIT,
};
use super::doc::{source_keys, BurstDoc, SourceDoc, SourceKindName};
use super::error::{ConfigError, Problem};
use super::model::{
    Burst, FileSource, GeneratorSource, RedisSource, SchemaConfig, SourceConfig, SourceKind, TcpSource,
};
use super::path::{KeyPath, Role};
use super::values::{FileFormat, HumanSize, WireFormat};

/// Every source of an app.
pub(crate) fn all(
    ctx: &Ctx<'_>,
    docs: Vec<Spanned<SourceDoc>>,
    schema: &SchemaConfig,
) -> Result<Vec<SourceConfig>, ConfigError> {
    let docs = docs.into_iter().enumerate();
    docs.map(|(i, doc)| source(ctx, i, doc, schema)).collect()
}

fn source(
    ctx: &Ctx<'_>,
    index: usize,
    doc: Spanned<SourceDoc>,
    schema: &SchemaConfig,
) -> Result<SourceConfig, ConfigError> {
    let span = doc.span();
    let doc = doc.into_inner();
    let path = ctx.node(Role::Source, index, &doc.name);
    let kind = *doc.kind.get_ref();
    let present = doc.present();
    kind_keys(ctx, &path, (Role::Source, kind.name()), present, source_keys(kind))?;
    let name = doc.name.clone();
    let kind = match kind {
        SourceKindName::Generator => SourceKind::Generator(generator(ctx, &path, doc, schema)?),
        SourceKindName::File => SourceKind::File(file_source(ctx, (&path, span), doc)?),
        SourceKindName::Tcp => SourceKind::Tcp(tcp_source(ctx, (&path, span), doc)?),
        SourceKindName::Redis => SourceKind::Redis(redis_source(ctx, (&path, span), doc)?),
    };
    Ok(SourceConfig { name, kind })
}

fn generator(
    ctx: &Ctx<'_>,
    path: &KeyPath,
    doc: SourceDoc,
    schema: &SchemaConfig,
) -> Result<GeneratorSource, ConfigError> {
    let at = |key: &str| path.clone().key(key);
    positive(ctx.src, &doc.events, || at("events"))?;
    positive(ctx.src, &doc.duration, || at("duration"))?;
    positive(ctx.src, &doc.keys, || at("keys"))?;
    positive(ctx.src, &doc.zipf_s, || at("zipf_s"))?;
    positive(ctx.src, &doc.parallelism, || at("parallelism"))?;
    positive(ctx.src, &doc.split_events, || at("split_events"))?;
    let key_field = key_field(ctx, path, doc.key_field, &doc.name, schema)?;
    let d = &ctx.defaults.source.generator;
    let rate = or(doc.rate.clone(), d.rate);
    if let Some(split) = doc.split_events.as_ref().filter(|_| rate > 0) {
        // Open loop: every event is due at its fixed time, so instances reading in splits
        // would only take turns (a split's events due one after the other on one shard).
        let why = format!(
            "reading in splits needs a closed-loop generator (`rate = 0`); at `rate = {rate}` every event \
             is due at a fixed time, so the instances would take turns, one split each: leave \
             `split_events` out"
        );
        return Err(ConfigError::problem(ctx.src, split.span(), at("split_events"), Problem::Invalid(why)));
    }
    Ok(GeneratorSource {
        rate,
        events: doc.events.map(Spanned::into_inner),
        duration: doc.duration.map(|v| v.into_inner().0),
        keys: or(doc.keys, d.keys),
        key_field,
        distribution: or(doc.distribution, d.distribution),
        zipf_s: or(doc.zipf_s, d.zipf_s),
        seed: or(doc.seed, d.seed),
        parallelism: or(doc.parallelism, d.parallelism),
        split_events: doc.split_events.map(Spanned::into_inner),
        bursts: bursts(ctx, path, doc.bursts)?,
    })
}

/// The generator's key field: as written (it must be in the schema), else the first `u64` field.
fn key_field(
    ctx: &Ctx<'_>,
    path: &KeyPath,
    written: Option<Spanned<String>>,
    name: &Spanned<String>,
    schema: &SchemaConfig,
) -> Result<Spanned<String>, ConfigError> {
    if let Some(field) = written {
        field_in_schema(ctx, schema, &field, path.clone().key("key_field"))?;
        return Ok(field);
    }
    let first_u64 = schema.fields.iter().find(|f| *f.ty.get_ref() == FieldType::U64);
    match first_u64 {
        Some(f) => Ok(Spanned::new(name.span(), f.name.get_ref().clone())),
        None => {
            let reason = "the schema has no u64 field to default to".to_owned();
            let problem = Problem::MissingKey { key: "key_field", reason };
            Err(ctx.error(name.span(), path.clone(), problem))
        }
    }
}

fn bursts(
    ctx: &Ctx<'_>,
    path: &KeyPath,
    written: Option<Spanned<Vec<Spanned<BurstDoc>>>>,
) -> Result<Vec<Burst>, ConfigError> {
    let written = written.map(Spanned::into_inner).unwrap_or_default();
    let mut bursts = Vec::with_capacity(written.len());
    for (i, burst) in written.into_iter().enumerate() {
        let burst = burst.into_inner();
        let at = || path.clone().key(&format!("bursts[{i}]")).key("duration");
        positive(ctx.src, &Some(burst.duration.clone()), at)?;
        bursts.push(Burst {
            at: burst.at.into_inner().0,
            duration: burst.duration.into_inner().0,
            rate: burst.rate.into_inner(),
        });
    }
    Ok(bursts)
}

fn file_source(ctx: &Ctx<'_>, node: (&KeyPath, Range<usize>), doc: SourceDoc) -> Result<FileSource, ConfigError> {
    let reason = "a file source reads this file";
    let path = require(ctx, doc.path, (node.0, node.1.clone()), "path", reason)?;
    let written = known_format(ctx, node.0, doc.format, FileFormat::parse, FileFormat::NAMES)?;
    let format = match written {
        Some(format) => format,
        None => format_from_extension(ctx, node.0, &path)?,
    };
    let d = &ctx.defaults.source.file;
    Ok(FileSource { path, format, header: or(doc.header, d.header), rate: or(doc.rate, d.rate) })
}

fn format_from_extension(ctx: &Ctx<'_>, node: &KeyPath, path: &Spanned<String>) -> Result<FileFormat, ConfigError> {
    let extension = std::path::Path::new(path.get_ref()).extension();
    match extension.and_then(|e| e.to_str()) {
        Some("csv") => Ok(FileFormat::Csv),
        Some("ndjson" | "jsonl" | "json") => Ok(FileFormat::Ndjson),
        _ => {
            let reason = format!("cannot tell it from the extension of `{}`; valid: ndjson, csv", path.get_ref());
            let problem = Problem::MissingKey { key: "format", reason };
            Err(ctx.error(path.span(), node.clone().key("path"), problem))
        }
    }
}

fn tcp_source(ctx: &Ctx<'_>, node: (&KeyPath, Range<usize>), doc: SourceDoc) -> Result<TcpSource, ConfigError> {
    let reason = "the address to listen on";
    let listen = require(ctx, doc.listen, (node.0, node.1), "listen", reason)?;
    let format = known_format(ctx, node.0, doc.format, WireFormat::parse, WireFormat::NAMES)?;
    let at = |key: &str| node.0.clone().key(key);
    positive(ctx.src, &doc.max_connections, || at("max_connections"))?;
    positive(ctx.src, &doc.idle_timeout, || at("idle_timeout"))?;
    positive(ctx.src, &doc.max_line, || at("max_line"))?;
    positive(ctx.src, &doc.max_frame, || at("max_frame"))?;
    size_at_most(ctx.src, &doc.max_frame, MAX_FRAME_LIMIT, FRAME_LIMIT_WHY, || at("max_frame"))?;
    let d = &ctx.defaults.source.tcp;
    let size = |v: Option<Spanned<HumanSize>>, default: u64| v.map_or(default, |v| v.into_inner().0);
    Ok(TcpSource {
        listen,
        format: format.unwrap_or(d.format),
        max_connections: or(doc.max_connections, d.max_connections),
        idle_timeout: or_duration(doc.idle_timeout, d.idle_timeout),
        max_line: size(doc.max_line, d.max_line),
        max_frame: size(doc.max_frame, d.max_frame),
    })
}

fn redis_source(ctx: &Ctx<'_>, node: (&KeyPath, Range<usize>), doc: SourceDoc) -> Result<RedisSource, ConfigError> {
    let url = require(ctx, doc.url, (node.0, node.1.clone()), "url", "the server to read from, `redis://host:port`")?;
    redis_url(ctx, node.0, &url)?;
    let stream = require(ctx, doc.stream, (node.0, node.1.clone()), "stream", "the stream to read")?;
    not_empty(ctx, node.0, &stream, "stream")?;
    match (&doc.group, &doc.consumer) {
        (Some(_), None) => {
            let reason = "a consumer group is read by a named consumer".to_owned();
            return Err(ctx.error(node.1, node.0.clone(), Problem::MissingKey { key: "consumer", reason }));
        }
        (None, Some(_)) => {
            let reason = "`consumer` names a consumer of a group".to_owned();
            return Err(ctx.error(node.1, node.0.clone(), Problem::MissingKey { key: "group", reason }));
        }
        (Some(g), Some(c)) => {
            not_empty(ctx, node.0, g, "group")?;
            not_empty(ctx, node.0, c, "consumer")?;
        }
        (None, None) => {}
    }
    let start = match doc.start {
        None => "0-0".to_owned(),
        Some(s) if s.get_ref() == "$" || stream_id(s.get_ref()) => s.into_inner(),
        Some(s) => {
            let problem = Problem::NotAStreamId { id: s.get_ref().clone() };
            return Err(ctx.error(s.span(), node.0.clone().key("start"), problem));
        }
    };
    Ok(RedisSource { url, stream, group: doc.group, consumer: doc.consumer, start, follow: or(doc.follow, true) })
}

/// `<ms>` or `<ms>-<seq>`, both decimal.
fn stream_id(id: &str) -> bool {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(ms) && digits(seq)
}

/// Fails unless `url` is a URL the redis client accepts (nothing is contacted).
pub(crate) fn redis_url(ctx: &Ctx<'_>, node: &KeyPath, url: &Spanned<String>) -> Result<(), ConfigError> {
    match redis::Client::open(url.get_ref().as_str()) {
        Ok(_) => Ok(()),
        Err(e) => {
            let problem = Problem::NotARedisUrl { url: url.get_ref().clone(), reason: e.to_string() };
            Err(ctx.error(url.span(), node.clone().key("url"), problem))
        }
    }
}

/// Fails when a name is empty.
pub(crate) fn not_empty(ctx: &Ctx<'_>, node: &KeyPath, value: &Spanned<String>, key: &str) -> Result<(), ConfigError> {
    match value.get_ref().trim().is_empty() {
        true => Err(ctx.error(value.span(), node.clone().key(key), Problem::Empty)),
        false => Ok(()),
    }
}
