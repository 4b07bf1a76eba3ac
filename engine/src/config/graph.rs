//! Checks an app's DAG (unique names, inputs that exist, no cycle) and gives its node order.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;

use super::check::{duplicate, Ctx};
use super::error::{ConfigError, Problem};
use super::model::{AppConfig, NodeId};
use super::path::{KeyPath, Role};

/// Checks the app's DAG and returns its nodes in topological order.
pub(crate) fn order(ctx: &Ctx<'_>, app: &AppConfig) -> Result<Vec<NodeId>, ConfigError> {
    let names = unique_names(ctx, app)?;
    let mut reads: Vec<Vec<usize>> = vec![Vec::new(); app.functions.len()];
    for (i, function) in app.functions.iter().enumerate() {
        let path = ctx.node(Role::Function, i, &function.name);
        for (key, input) in function.kind.inputs() {
            let reader = (function.name.get_ref().as_str(), input);
            let id = resolve_input(ctx, app, &names, reader, path.clone().key(key))?;
            if id.role == Role::Function {
                reads[i].push(id.index);
            }
        }
    }
    for (i, sink) in app.sinks.iter().enumerate() {
        let path = ctx.node(Role::Sink, i, &sink.name).key("input");
        let reader = (sink.name.get_ref().as_str(), &sink.input);
        resolve_input(ctx, app, &names, reader, path)?;
    }
    let functions = topological(ctx, app, &reads)?;
    let ids = |role: Role, indices: Vec<usize>| {
        let ids = indices.into_iter();
        ids.map(move |index| NodeId { role, index })
    };
    let mut order: Vec<NodeId> = ids(Role::Source, (0..app.sources.len()).collect()).collect();
    order.extend(ids(Role::Function, functions));
    order.extend(ids(Role::Sink, (0..app.sinks.len()).collect()));
    Ok(order)
}

/// Every node name of the app, which must be unique across sources, functions and sinks.
fn unique_names<'a>(
    ctx: &Ctx<'_>,
    app: &'a AppConfig,
) -> Result<HashMap<&'a str, (NodeId, Range<usize>)>, ConfigError> {
    let sources = app.sources.iter().map(|s| (Role::Source, &s.name));
    let functions = app.functions.iter().map(|f| (Role::Function, &f.name));
    let sinks = app.sinks.iter().map(|s| (Role::Sink, &s.name));
    let mut names: HashMap<&str, (NodeId, Range<usize>)> = HashMap::new();
    let mut counts: HashMap<Role, usize> = HashMap::new();
    for (role, name) in sources.chain(functions).chain(sinks) {
        let count = counts.entry(role).or_default();
        let id = NodeId { role, index: *count };
        *count += 1;
        if let Some((_, first)) = names.get(name.get_ref().as_str()) {
            let path = ctx.node(role, id.index, name).key("name");
            return Err(duplicate(ctx, "node", first.clone(), name, path));
        }
        names.insert(name.get_ref(), (id, name.span()));
    }
    Ok(names)
}

/// The source or function an input of node `reader` names.
fn resolve_input(
    ctx: &Ctx<'_>,
    app: &AppConfig,
    names: &HashMap<&str, (NodeId, Range<usize>)>,
    (reader, input): (&str, &Spanned<String>),
    path: KeyPath,
) -> Result<NodeId, ConfigError> {
    match names.get(input.get_ref().as_str()) {
        Some((id, _)) if id.role != Role::Sink => Ok(*id),
        found => {
            let sources = app.sources.iter().map(|s| s.name.get_ref());
            let functions = app.functions.iter().map(|f| f.name.get_ref());
            let others = sources.chain(functions).filter(|n| n.as_str() != reader);
            let known = others.cloned().collect();
            let name = input.get_ref().clone();
            let problem = match found {
                Some(_) => Problem::SinkAsInput { name },
                None => Problem::NoSuchInput { name, known },
            };
            Err(ctx.error(input.span(), path, problem))
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mark {
    New,
    Active,
    Done,
}

/// Depth-first search over "reads from" edges; finds a cycle or a dependencies-first order.
struct Dfs<'a> {
    reads: &'a [Vec<usize>],
    marks: Vec<Mark>,
    stack: Vec<usize>,
    order: Vec<usize>,
}

impl Dfs<'_> {
    /// Visits function `i`; on a cycle returns it in "reads from" order.
    fn visit(&mut self, i: usize) -> Result<(), Vec<usize>> {
        match self.marks[i] {
            Mark::Done => return Ok(()),
            Mark::Active => {
                let start = self.stack.iter().position(|&s| s == i).unwrap_or(0);
                return Err(self.stack[start..].to_vec());
            }
            Mark::New => {}
        }
        self.marks[i] = Mark::Active;
        self.stack.push(i);
        for &j in &self.reads[i] {
            self.visit(j)?;
        }
        self.stack.pop();
        self.marks[i] = Mark::Done;
        self.order.push(i);
        Ok(())
    }
}

/// Function indices with every function after those it reads from.
fn topological(ctx: &Ctx<'_>, app: &AppConfig, reads: &[Vec<usize>]) -> Result<Vec<usize>, ConfigError> {
    let mut dfs =
        Dfs { reads, marks: vec![Mark::New; reads.len()], stack: Vec::new(), order: Vec::with_capacity(reads.len()) };
    for i in 0..reads.len() {
        if let Err(cycle) = dfs.visit(i) {
            return Err(cycle_error(ctx, app, cycle));
        }
    }
    Ok(dfs.order)
}

/// A cycle, written in data-flow order from its first-declared function, reported at that
/// function's input that closes it.
fn cycle_error(ctx: &Ctx<'_>, app: &AppConfig, reads_order: Vec<usize>) -> ConfigError {
    let mut flow: Vec<usize> = reads_order.into_iter().rev().collect();
    let first = (0..flow.len()).min_by_key(|&k| flow[k]).unwrap_or(0);
    flow.rotate_left(first);
    let name = |i: usize| app.functions[i].name.get_ref().clone();
    let head = &app.functions[flow[0]];
    let previous = name(flow[flow.len() - 1]);
    let inputs = head.kind.inputs();
    let closing = inputs.iter().find(|(_, input)| *input.get_ref() == previous);
    let (key, span) = closing.map_or(("name", head.name.span()), |(k, i)| (*k, i.span()));
    let mut cycle: Vec<String> = flow.iter().map(|&i| name(i)).collect();
    cycle.push(name(flow[0]));
    let path = ctx.node(Role::Function, flow[0], &head.name).key(key);
    ctx.error(span, path, Problem::Cycle { cycle })
}
