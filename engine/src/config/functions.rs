//! Resolves an app's `[[app.function]]` list: each kind's keys, windows and aggregates.
//!
//! Field names and expressions stay spanned strings; the planner type-checks them against the
//! schema.

use std::ops::Range;

use toml::Spanned;

use super::check::{kind_keys, or_duration, positive, require, Ctx};
use super::doc::{function_keys, AggregateDoc, FunctionDoc, FunctionKindName, WindowDoc};
use super::error::{ConfigError, Problem};
use super::model::{Aggregate, AggregateSpec, FunctionConfig, FunctionKind, JoinFunction, WindowFunction, WindowSpec};
use super::path::{KeyPath, Role};
use super::values::{AggregateOp, WindowType};

/// Every function of an app.
pub(crate) fn all(ctx: &Ctx<'_>, docs: Vec<Spanned<FunctionDoc>>) -> Result<Vec<FunctionConfig>, ConfigError> {
    let docs = docs.into_iter().enumerate();
    docs.map(|(i, doc)| function(ctx, i, doc)).collect()
}

/// Resolves the `index`-th function of an app.
pub(crate) fn function(ctx: &Ctx<'_>, index: usize, doc: Spanned<FunctionDoc>) -> Result<FunctionConfig, ConfigError> {
    let span = doc.span();
    let doc = doc.into_inner();
    let path = ctx.node(Role::Function, index, &doc.name);
    let kind = *doc.kind.get_ref();
    let present = doc.present();
    kind_keys(ctx, &path, (Role::Function, kind.name()), present, function_keys(kind))?;
    let name = doc.name.clone();
    let max_lessees = lessees(ctx, &path, kind, doc.max_lessees.clone())?;
    let kind = function_kind(ctx, (&path, span), kind, doc)?;
    Ok(FunctionConfig { name, max_lessees, kind })
}

/// `max_lessees` of a function: only a window's state can merge (a user actor's too, but
/// those are not in configs), so on any other kind a positive value is an error at the key, and
/// the `[defaults.function]` value applies to windows alone.
fn lessees(
    ctx: &Ctx<'_>,
    path: &KeyPath,
    kind: FunctionKindName,
    written: Option<Spanned<u32>>,
) -> Result<u32, ConfigError> {
    match written {
        Some(n) if *n.get_ref() > 0 && kind != FunctionKindName::Window => {
            let problem = Problem::CannotLease { kind: kind.name() };
            Err(ctx.error(n.span(), path.clone().key("max_lessees"), problem))
        }
        Some(n) => Ok(n.into_inner()),
        None if kind == FunctionKindName::Window => Ok(ctx.defaults.function.max_lessees),
        None => Ok(0),
    }
}

/// Takes a required key of the node, or returns a "missing key" error.
macro_rules! req {
    ($ctx:expr, $node:expr, $value:expr, $key:literal) => {
        require($ctx, $value, ($node.0, $node.1.clone()), $key, "")?
    };
}

fn function_kind(
    ctx: &Ctx<'_>,
    node: (&KeyPath, Range<usize>),
    kind: FunctionKindName,
    doc: FunctionDoc,
) -> Result<FunctionKind, ConfigError> {
    use FunctionKindName as K;
    Ok(match kind {
        K::Map => {
            let input = req!(ctx, node, doc.input, "input");
            let fields = req!(ctx, node, doc.fields, "fields");
            if fields.get_ref().0.is_empty() {
                let problem = Problem::NoOutputFields;
                return Err(ctx.error(fields.span(), node.0.clone().key("fields"), problem));
            }
            FunctionKind::Map { input, fields: fields.into_inner().0 }
        }
        K::Filter => FunctionKind::Filter {
            input: req!(ctx, node, doc.input, "input"),
            predicate: req!(ctx, node, doc.predicate, "predicate"),
        },
        K::KeyBy => {
            FunctionKind::KeyBy { input: req!(ctx, node, doc.input, "input"), key: req!(ctx, node, doc.key, "key") }
        }
        K::Count => FunctionKind::Count { input: req!(ctx, node, doc.input, "input"), key: doc.key },
        K::Sum | K::Min | K::Max | K::Avg => keyed_aggregate(ctx, node, kind, doc)?,
        K::Window => FunctionKind::Window(WindowFunction {
            input: req!(ctx, node, doc.input, "input"),
            key: doc.key,
            window: window(ctx, node.0, req!(ctx, node, doc.window, "window"))?,
            aggregate: aggregate(ctx, node.0, req!(ctx, node, doc.aggregate, "aggregate"))?,
        }),
        K::Join => FunctionKind::Join(JoinFunction {
            left: req!(ctx, node, doc.left, "left"),
            right: req!(ctx, node, doc.right, "right"),
            left_key: req!(ctx, node, doc.left_key, "left_key"),
            right_key: req!(ctx, node, doc.right_key, "right_key"),
            window: window(ctx, node.0, req!(ctx, node, doc.window, "window"))?,
        }),
    })
}

fn keyed_aggregate(
    ctx: &Ctx<'_>,
    node: (&KeyPath, Range<usize>),
    kind: FunctionKindName,
    doc: FunctionDoc,
) -> Result<FunctionKind, ConfigError> {
    let aggregate = Aggregate {
        input: req!(ctx, node, doc.input, "input"),
        key: doc.key,
        field: req!(ctx, node, doc.field, "field"),
    };
    Ok(match kind {
        FunctionKindName::Sum => FunctionKind::Sum(aggregate),
        FunctionKindName::Min => FunctionKind::Min(aggregate),
        FunctionKindName::Max => FunctionKind::Max(aggregate),
        _ => FunctionKind::Avg(aggregate),
    })
}

/// A window: positive size; a positive `slide` for sliding windows only.
fn window(ctx: &Ctx<'_>, node: &KeyPath, doc: Spanned<WindowDoc>) -> Result<Spanned<WindowSpec>, ConfigError> {
    let span = doc.span();
    let doc = doc.into_inner();
    let at = |key: &str| node.clone().key("window").key(key);
    positive(ctx.src, &Some(doc.size.clone()), || at("size"))?;
    positive(ctx.src, &doc.slide, || at("slide"))?;
    let window_type = *doc.kind.get_ref();
    let size = doc.size.into_inner().0;
    let slide = match (window_type, doc.slide) {
        (WindowType::Tumbling, Some(slide)) => {
            let problem = Problem::SlideOnTumbling;
            return Err(ctx.error(slide.span(), at("slide"), problem));
        }
        (WindowType::Sliding, None) => {
            let reason = "a sliding window needs it".to_owned();
            let problem = Problem::MissingKey { key: "slide", reason };
            return Err(ctx.error(span, node.clone().key("window"), problem));
        }
        (_, slide) => slide.map(|s| s.into_inner().0),
    };
    let lateness = or_duration(doc.lateness, ctx.defaults.window.lateness);
    let spec = WindowSpec { window_type, size, slide, lateness };
    Ok(Spanned::new(span, spec))
}

/// `aggregate = { op, field }`: `count` takes no field, every other op needs one.
fn aggregate(ctx: &Ctx<'_>, node: &KeyPath, doc: Spanned<AggregateDoc>) -> Result<Spanned<AggregateSpec>, ConfigError> {
    let span = doc.span();
    let doc = doc.into_inner();
    let op = *doc.op.get_ref();
    match (op, &doc.field) {
        (AggregateOp::Count, Some(field)) => {
            let problem = Problem::CountTakesNoField;
            let path = node.clone().key("aggregate").key("field");
            Err(ctx.error(field.span(), path, problem))
        }
        (op, None) if op != AggregateOp::Count => {
            let reason = format!("`{op}` aggregates a field");
            let problem = Problem::MissingKey { key: "field", reason };
            Err(ctx.error(span, node.clone().key("aggregate"), problem))
        }
        _ => Ok(Spanned::new(span, AggregateSpec { op, field: doc.field })),
    }
}
