//! Resolves an app's `[[app.sink]]` list: per-kind keys, required keys, formats (else defaults).

use toml::Spanned;

use super::check::{kind_keys, known_format, require, Ctx};
use super::doc::{sink_keys, SinkDoc, SinkKindName};
use super::error::{ConfigError, Problem};
use super::model::{SinkConfig, SinkKind};
use super::path::Role;
use super::values::{Delivery, FileFormat, WireFormat};

/// Every sink of an app.
pub(crate) fn all(ctx: &Ctx<'_>, docs: Vec<Spanned<SinkDoc>>) -> Result<Vec<SinkConfig>, ConfigError> {
    let docs = docs.into_iter().enumerate();
    docs.map(|(i, doc)| sink(ctx, i, doc)).collect()
}

fn sink(ctx: &Ctx<'_>, index: usize, doc: Spanned<SinkDoc>) -> Result<SinkConfig, ConfigError> {
    let span = doc.span();
    let doc = doc.into_inner();
    let path = ctx.node(Role::Sink, index, &doc.name);
    let kind = *doc.kind.get_ref();
    kind_keys(ctx, &path, (Role::Sink, kind.name()), doc.present(), sink_keys(kind))?;
    let kind = match kind {
        SinkKindName::Stdout => SinkKind::Stdout,
        SinkKindName::Latency => SinkKind::Latency,
        SinkKindName::Null => SinkKind::Null,
        SinkKindName::File => {
            let reason = "a file sink writes this file";
            let file = require(ctx, doc.path, (&path, span), "path", reason)?;
            let format = known_format(ctx, &path, doc.format, FileFormat::parse, FileFormat::NAMES)?;
            let format = format.unwrap_or(ctx.defaults.sink.file.format);
            SinkKind::File { path: file, format }
        }
        SinkKindName::Tcp => {
            let reason = "the address to listen on";
            let listen = require(ctx, doc.listen, (&path, span), "listen", reason)?;
            let format = known_format(ctx, &path, doc.format, WireFormat::parse, WireFormat::NAMES)?;
            let format = format.unwrap_or(ctx.defaults.sink.tcp.format);
            let delivery = match doc.delivery {
                None => ctx.defaults.sink.tcp.delivery,
                Some(d) => match Delivery::parse(d.get_ref()) {
                    Some(delivery) => delivery,
                    None => {
                        let valid = Delivery::NAMES.iter().map(|n| n.to_string()).collect();
                        let problem = Problem::UnknownName { what: "delivery", name: d.get_ref().clone(), valid };
                        return Err(ctx.error(d.span(), path.clone().key("delivery"), problem));
                    }
                },
            };
            SinkKind::Tcp { listen, format, delivery }
        }
        SinkKindName::Redis => {
            let url =
                require(ctx, doc.url, (&path, span.clone()), "url", "the server to write to, `redis://host:port`")?;
            super::sources::redis_url(ctx, &path, &url)?;
            let stream = require(ctx, doc.stream, (&path, span), "stream", "the stream to append to")?;
            super::sources::not_empty(ctx, &path, &stream, "stream")?;
            SinkKind::Redis { url, stream }
        }
    };
    Ok(SinkConfig { name: doc.name, input: doc.input, kind })
}
