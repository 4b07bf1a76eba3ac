//! The modules of each library crate form a DAG: no two sibling modules import each other,
//! directly or through others. Reads the sources, collects every `crate::` and `super::` path,
//! lifts each to the two siblings it joins (under their nearest common parent) and looks for a
//! cycle among the siblings of each parent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path within its crate (`[]` for the crate root).
type ModPath = Vec<String>;

/// Every `.rs` file under `src` (but `bin/`), with its module path and text.
fn modules(src: &Path) -> Vec<(ModPath, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("source dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel: Vec<String> = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            let module = match rel.last().map(String::as_str) {
                Some("lib" | "mod") => rel[..rel.len() - 1].to_vec(),
                _ => rel,
            };
            out.push((module, std::fs::read_to_string(&path).expect("readable source")));
        }
    }
    out
}

/// The paths a file names through `crate::` and `super::`, resolved to module-relative segments
/// (`use super::{a, b::c}` gives `a` and `b::c`).
fn references(module: &ModPath, text: &str) -> Vec<ModPath> {
    let mut out = Vec::new();
    // `a/b.rs` is module [a, b] and `a/mod.rs` is [a]: either way `super` drops the last segment.
    let parent: ModPath = module[..module.len().saturating_sub(1)].to_vec();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
        for (anchor, base) in [("crate::", Vec::new()), ("super::", parent.clone())] {
            let mut rest = line;
            while let Some(i) = rest.find(anchor) {
                let preceded = rest[..i].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_');
                rest = &rest[i + anchor.len()..];
                if preceded {
                    continue;
                }
                let mut paths = Vec::new();
                expand(rest, &base, &mut paths);
                out.extend(paths);
            }
        }
    }
    out
}

/// Expand one path (or brace group) starting at `text` onto `base`.
fn expand(text: &str, base: &ModPath, out: &mut Vec<ModPath>) {
    let mut path = base.clone();
    let mut rest = text;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            for part in split_group(group) {
                expand(part.trim(), &path, out);
            }
            return;
        }
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        path.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    out.push(path);
}

/// The top-level comma-separated parts of a brace group's body (up to its closing brace).
fn split_group(body: &str) -> Vec<&str> {
    let (mut depth, mut start, mut parts) = (0usize, 0usize, Vec::new());
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                parts.push(&body[start..i]);
                return parts;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    parts
}

/// Sibling edges `(parent, from, to)`: module `from` under `parent` names something in `to`.
fn sibling_edges(src: &Path) -> BTreeSet<(ModPath, String, String)> {
    let mods = modules(src);
    let known: BTreeSet<ModPath> = mods.iter().map(|(m, _)| m.clone()).collect();
    let mut edges = BTreeSet::new();
    for (module, text) in &mods {
        for target in references(module, text) {
            let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common >= module.len() || common >= target.len() {
                continue; // an ancestor's item, or a descendant of this module
            }
            let parent = module[..common].to_vec();
            let to = [parent.clone(), vec![target[common].clone()]].concat();
            if known.contains(&to) && module[common] != target[common] {
                edges.insert((parent, module[common].clone(), target[common].clone()));
            }
        }
    }
    edges
}

/// A cycle among the siblings of one parent, if there is one.
fn find_cycle(edges: &BTreeSet<(ModPath, String, String)>) -> Option<String> {
    let mut graphs: BTreeMap<&ModPath, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    for (parent, from, to) in edges {
        graphs.entry(parent).or_default().entry(from).or_default().push(to);
    }
    for (parent, graph) in &graphs {
        // Depth-first search with the current path on a stack.
        fn visit<'a>(
            n: &'a str,
            g: &BTreeMap<&'a str, Vec<&'a str>>,
            state: &mut BTreeMap<&'a str, u8>,
            stack: &mut Vec<&'a str>,
        ) -> Option<Vec<&'a str>> {
            match state.get(n) {
                Some(2) => return None,
                Some(1) => {
                    let at = stack.iter().position(|s| *s == n).expect("on the stack");
                    return Some([&stack[at..], &[n]].concat());
                }
                _ => {}
            }
            state.insert(n, 1);
            stack.push(n);
            for &m in g.get(n).into_iter().flatten() {
                if let Some(c) = visit(m, g, state, stack) {
                    return Some(c);
                }
            }
            stack.pop();
            state.insert(n, 2);
            None
        }
        let mut state = BTreeMap::new();
        for &n in graph.keys() {
            if let Some(cycle) = visit(n, graph, &mut state, &mut Vec::new()) {
                return Some(format!("under `{}`: {}", parent.join("::"), cycle.join(" -> ")));
            }
        }
    }
    None
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name).join("src")
}

#[test]
fn no_crate_has_an_import_cycle_between_modules() {
    for name in ["actors", "net", "engine"] {
        let edges = sibling_edges(&crate_src(name));
        assert!(!edges.is_empty(), "{name}: no module edges found: the scan is broken");
        if let Some(cycle) = find_cycle(&edges) {
            panic!("{name}: modules import each other in a cycle, {cycle}");
        }
    }
}

#[test]
fn the_scan_sees_a_cycle() {
    let edges: BTreeSet<(ModPath, String, String)> = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(f, t)| (vec!["m".to_owned()], f.to_owned(), t.to_owned()))
        .collect();
    assert_eq!(find_cycle(&edges).as_deref(), Some("under `m`: a -> b -> c -> a"));
    let module = vec!["cfg".to_owned(), "x".to_owned()];
    let refs = references(&module, "use super::{check::{Ctx, positive}, model::Config};\nuse crate::clock::now;");
    let names: Vec<String> = refs.iter().map(|r| r.join("::")).collect();
    assert_eq!(names, ["cfg::check::Ctx", "cfg::check::positive", "cfg::model::Config", "clock::now"]);
}
