//! The key path of a parser error's byte offset, found in a loosely typed outline of the file.
//!
//! For example `app[0] "bids" function "max" key `kind`` for an offset in that function's `kind`.

use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use super::path::{KeyPath, Role, Segment};

/// One value of the outline; scalars keep only their text when they are strings.
enum Tree {
    Table(Vec<(Spanned<String>, Spanned<Tree>)>),
    Array(Vec<Spanned<Tree>>),
    Scalar(Option<String>),
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

macro_rules! scalar {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method<E>(self, _: $ty) -> Result<Tree, E> { Ok(Tree::Scalar(None)) })*
    };
}

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }
    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64);

    fn visit_str<E>(self, v: &str) -> Result<Tree, E> {
        Ok(Tree::Scalar(Some(v.to_owned())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Tree::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Tree::Table(entries))
    }
}

/// The key path of the innermost value or key at `offset`; empty when the text does not parse.
pub(crate) fn key_path_at(text: &str, offset: usize) -> KeyPath {
    let mut path = KeyPath::default();
    match toml::from_str::<Spanned<Tree>>(text) {
        Ok(root) => {
            if let Tree::Table(entries) = root.get_ref() {
                find(entries, offset, &mut path.0, false);
            }
        }
        Err(_) if toml::from_str::<toml::Table>(text).is_ok() => return by_lines(text, offset),
        Err(_) => {}
    }
    path
}

/// When the text parses but its outline cannot be read (the parser has no span for a table
/// opened by a dotted header such as `[defaults.source.tcp]`): the key written at the start of `offset`'s line, in
/// the `[table]` whose header is the nearest above it. Empty under an `[[array]]` header (the
/// element could not be named), or when the line does not start with a key.
fn by_lines(text: &str, offset: usize) -> KeyPath {
    let mut path = KeyPath::default();
    let Some(before) = text.get(..offset) else { return path };
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let header = text[..line_start].lines().rev().map(str::trim).find(|l| l.starts_with('['));
    let table = header.and_then(|h| h.strip_prefix('[')).filter(|h| !h.starts_with('['));
    let Some(table) = table.and_then(|h| h.split(']').next()).map(str::trim) else { return path };
    path.0.push(Segment::Table(table.to_owned()));
    let line = text[line_start..].lines().next().unwrap_or("");
    if let Some((key, _)) = line.split_once('=') {
        let key = key.trim();
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            path.0.push(Segment::Key(key.to_owned()));
        }
    }
    path
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

/// Walks down the tables that claim `offset`, pushing one segment per step.
fn find(entries: &[(Spanned<String>, Spanned<Tree>)], offset: usize, path: &mut Vec<Segment>, in_app: bool) -> bool {
    for (key, value) in entries {
        if contains(&key.span(), offset) {
            path.push(Segment::Key(key.get_ref().clone()));
            return true;
        }
        let depth = path.len();
        if find_in_value(key.get_ref(), value, offset, path, in_app) {
            return true;
        }
        path.truncate(depth);
    }
    false
}

fn find_in_value(key: &str, value: &Spanned<Tree>, offset: usize, path: &mut Vec<Segment>, in_app: bool) -> bool {
    match value.get_ref() {
        Tree::Table(entries) => {
            let top_level = path.iter().all(|s| matches!(s, Segment::Table(_)));
            path.push(match top_level {
                true => Segment::Table(key.to_owned()),
                false => Segment::Key(key.to_owned()),
            });
            find(entries, offset, path, false) || contains(&value.span(), offset)
        }
        Tree::Array(items) => items.iter().enumerate().any(|(index, item)| {
            let depth = path.len();
            path.push(element(key, index, item.get_ref(), in_app, path.is_empty()));
            let nested_app = path.len() == 1 && key == "app";
            let found = match item.get_ref() {
                Tree::Table(entries) => find(entries, offset, path, nested_app),
                _ => false,
            };
            if found || contains(&item.span(), offset) {
                return true;
            }
            path.truncate(depth);
            false
        }),
        Tree::Scalar(_) => {
            let found = contains(&value.span(), offset);
            if found {
                path.push(Segment::Key(key.to_owned()));
            }
            found
        }
    }
}

/// The segment naming the `index`-th element of array `key`.
fn element(key: &str, index: usize, item: &Tree, in_app: bool, at_root: bool) -> Segment {
    let name = match item {
        Tree::Table(entries) => {
            entries.iter().find(|(k, _)| k.get_ref() == "name").and_then(|(_, v)| match v.get_ref() {
                Tree::Scalar(s) => s.clone(),
                _ => None,
            })
        }
        _ => None,
    };
    let role = match key {
        "source" => Some(Role::Source),
        "function" => Some(Role::Function),
        "sink" => Some(Role::Sink),
        _ => None,
    };
    match role {
        _ if at_root && key == "app" => Segment::App { index, name },
        Some(role) if in_app => Segment::Node { role, index, name },
        _ => Segment::Key(format!("{key}[{index}]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_at(text: &str, needle: &str) -> String {
        key_path_at(text, text.find(needle).expect("needle")).to_string()
    }

    #[test]
    fn a_value_under_a_dotted_table_header_is_named_by_its_line() {
        let text = "[engine]\nshards = 1\n\n[defaults.source.tcp]\nformat = \"binary\"\nmax_line = \"4 parsecs\"\n";
        assert_eq!(path_at(text, "\"4 parsecs"), "defaults.source.tcp key `max_line`");
        assert_eq!(path_at(text, "1\n"), "engine key `shards`");
        let text = "[defaults.app]\nweight = 1\n[[app]]\nname = \"a\"\nslo = 5\n";
        assert_eq!(path_at(text, "5\n"), "", "an array's element cannot be named by lines");
        assert_eq!(path_at("[engine]\nspin = 5\n", "5"), "engine key `spin`", "the outline, when it reads");
        assert_eq!(path_at("[defaults.app]\nweight = = 1\n", "= 1"), "", "not when the text does not parse");
    }
}
