//! Key paths: where in the config tree a value is (`app[0] "bids" function "max" key `input``).

use std::fmt;

/// The role of a node in an app's DAG.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Source,
    Function,
    Sink,
}

impl Role {
    /// The config table name of this role (`source`, `function`, `sink`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Function => "function",
            Role::Sink => "sink",
        }
    }
}

/// One step of a [`KeyPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A plain table (`engine`, `defaults`).
    Table(String),
    /// The `index`-th `[[app]]`.
    App { index: usize, name: Option<String> },
    /// A source, function or sink of the enclosing app.
    Node { role: Role, index: usize, name: Option<String> },
    /// A key (consecutive keys print dotted: `window.size`).
    Key(String),
}

/// Where in the config tree a problem is: `app[0] "bids" function "max" key `input``.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    /// The path of the `index`-th app.
    pub fn app(index: usize, name: &str) -> Self {
        KeyPath(vec![Segment::App { index, name: Some(name.to_owned()) }])
    }
    /// A top-level table (`engine`).
    pub fn table(name: &str) -> Self {
        KeyPath(vec![Segment::Table(name.to_owned())])
    }
    /// This path extended by a named node of the app.
    pub fn node(mut self, role: Role, index: usize, name: &str) -> Self {
        let name = Some(name.to_owned());
        self.0.push(Segment::Node { role, index, name });
        self
    }
    /// This path extended by a key (`"window.size"` is fine).
    pub fn key(mut self, key: &str) -> Self {
        self.0.push(Segment::Key(key.to_owned()));
        self
    }
    /// True when the path names nothing (a problem with the whole file).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let mut keys: Vec<&str> = Vec::new();
        let mut tables: Vec<&str> = Vec::new();
        for segment in &self.0 {
            if let Segment::Key(k) = segment {
                keys.push(k);
                continue;
            }
            if let Segment::Table(t) = segment {
                tables.push(t);
                continue;
            }
            if !tables.is_empty() {
                parts.push(tables.join("."));
                tables.clear();
            }
            if !keys.is_empty() {
                parts.push(format!("key `{}`", keys.join(".")));
                keys.clear();
            }
            parts.push(label(segment));
        }
        if !tables.is_empty() {
            parts.push(tables.join("."));
        }
        if !keys.is_empty() {
            parts.push(format!("key `{}`", keys.join(".")));
        }
        f.write_str(&parts.join(" "))
    }
}

fn label(segment: &Segment) -> String {
    match segment {
        Segment::Table(t) => t.clone(),
        Segment::App { index, name: Some(n) } => format!("app[{index}] \"{n}\""),
        Segment::App { index, name: None } => format!("app[{index}]"),
        Segment::Node { role, name: Some(n), .. } => format!("{} \"{n}\"", role.name()),
        Segment::Node { role, index, .. } => format!("{}[{index}]", role.name()),
        Segment::Key(k) => format!("key `{k}`"),
    }
}
