//! `ConfigError` and the file positions it reports (`Source`, `Location`).
//!
//! Every problem reads `file:line:col: key path: what is wrong`.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use super::outline;
use super::path::KeyPath;

/// The text of one config file and the name it is reported under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// File name as shown in messages (`configs/bids.toml`).
    pub name: String,
    /// The whole file.
    pub text: String,
}

impl Source {
    /// A named config text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source { name: name.into(), text: text.into() }
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    /// The location of a span's start.
    pub fn locate(&self, span: &Range<usize>) -> Location {
        let (line, column) = self.line_col(span.start);
        Location { file: self.name.clone(), line, column }
    }
}

/// A position in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// What is wrong, with the facts a caller may act on.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    /// TOML syntax, unknown keys, wrong types, unknown names of kinds and enums (from the parser).
    #[error("{0}")]
    Toml(String),
    #[error("a `{kind}` {role} takes no key `{key}`; its keys: {}", .allowed.join(", "))]
    KeyNotForKind { role: &'static str, kind: &'static str, key: &'static str, allowed: Vec<&'static str> },
    #[error("missing key `{key}`{}", note(.reason))]
    MissingKey { key: &'static str, reason: String },
    #[error("unknown {what} `{name}`; valid: {}", .valid.join(", "))]
    UnknownName { what: &'static str, name: String, valid: Vec<String> },
    #[error("duplicate {what} name `{name}` (first at line {first_line})")]
    Duplicate { what: &'static str, name: String, first_line: usize },
    #[error("no function or source named `{name}`; known: {}", .known.join(", "))]
    NoSuchInput { name: String, known: Vec<String> },
    #[error("cycle: {}", .cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
    #[error("must be greater than zero")]
    NotPositive,
    /// The cluster secret is not configured, or cannot be read.
    #[error("{0}")]
    Secret(SecretProblem),
    #[error("must be at most {max} ({why})")]
    TooLarge { max: String, why: &'static str },
    #[error("a map needs at least one output field")]
    NoOutputFields,
    #[error("a schema needs at least one field")]
    EmptySchema,
    #[error("a tumbling window takes no `slide`")]
    SlideOnTumbling,
    #[error("`count` takes no `field`")]
    CountTakesNoField,
    #[error("`{name}` is a sink; an input names a source or function")]
    SinkAsInput { name: String },
    #[error("must be a share between 0 and 1")]
    NotAShare,
    #[error(
        "a `{kind}` function keeps state that does not merge, so it cannot have lessees \
         (windows can; key-group migration is how other functions will scale); remove it"
    )]
    CannotLease { kind: &'static str },
    #[error("`{id}` is not a stream id: `<ms>-<seq>`, `0-0` (the whole stream) or `$` (new entries only)")]
    NotAStreamId { id: String },
    #[error("`{url}` is not a redis URL (`redis://host:port/db`): {reason}")]
    NotARedisUrl { url: String, reason: String },
    #[error("must not be empty")]
    Empty,
    /// What the compiler found building the plan (a built-in's, a source's or a socket's own
    /// error, in its words).
    #[error("{0}")]
    Invalid(String),
}

/// What is wrong with the cluster secret: its keys (found when the config is read), or what
/// they name (found when a node starts and reads it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    #[error(
        "a cluster of {nodes} nodes needs `secret_file` or `secret_env`: the secret its nodes \
         prove to each other before their links carry anything"
    )]
    Missing { nodes: usize },
    #[error("set `secret_file` or `secret_env`, not both")]
    Both,
    #[error("must name {}, not be empty", match *.key { "secret_file" => "a file", _ => "an environment variable" })]
    EmptyName { key: &'static str },
    #[error("environment variable `{var}` is not set")]
    Unset { var: String },
    #[error("environment variable `{var}` is empty")]
    EmptyVariable { var: String },
    #[error("cannot read the secret file {}: {kind}", .path.display())]
    Unreadable { path: PathBuf, kind: std::io::ErrorKind },
    #[error("the secret file {} is empty", .path.display())]
    EmptyFile { path: PathBuf },
}

fn note(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

/// A config that cannot be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Box<Invalid>),
}

/// A config that was read but is not valid: where, at which key, and what is wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{location}: {}", with_path(.key, .problem))]
pub struct Invalid {
    pub location: Location,
    pub key: KeyPath,
    pub problem: Problem,
}

fn with_path(key: &KeyPath, problem: &Problem) -> String {
    if key.is_empty() {
        problem.to_string()
    } else {
        format!("{key}: {problem}")
    }
}

impl ConfigError {
    /// A semantic error at a span of `source`, for later stages such as the planner:
    /// `ConfigError::at(config.source(), field.span(), path.key("field"), "no field `x`")`.
    pub fn at(source: &Source, span: Range<usize>, key: KeyPath, message: impl Into<String>) -> Self {
        Self::problem(source, span, key, Problem::Invalid(message.into()))
    }

    /// An error of a given kind at a span of `source`.
    pub fn problem(source: &Source, span: Range<usize>, key: KeyPath, problem: Problem) -> Self {
        ConfigError::Invalid(Box::new(Invalid { location: source.locate(&span), key, problem }))
    }

    /// A parser error, placed in the config tree through the file's outline.
    pub(crate) fn from_toml(source: &Source, err: &toml::de::Error) -> Self {
        let span = err.span().unwrap_or(0..0);
        let key = outline::key_path_at(&source.text, span.start);
        let message = err.message().trim_end().replace('\n', "; ");
        Self::problem(source, span, key, Problem::Toml(message))
    }

    /// Where and what, when the config could be read.
    pub fn invalid(&self) -> Option<&Invalid> {
        match self {
            ConfigError::Invalid(invalid) => Some(invalid),
            ConfigError::Read { .. } => None,
        }
    }
}
