//! Value types of the config: human durations, ordered tables, and the closed sets of names
//! (policy, distribution, formats, window types, aggregate ops).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use toml::Spanned;

/// A duration written for humans (`"200us"`, `"2ms"`, `"10s"`, `"1m 30s"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(HumanDuration).map_err(|e| {
            de::Error::custom(format!("invalid duration `{text}`: {e}; write e.g. \"200us\", \"2ms\", \"10s\""))
        })
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
}

/// Serializes a `Duration` the way it is written in a config.
pub(crate) fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Serializes an optional `Duration` (only called when present).
pub(crate) fn ser_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

/// A TOML table whose entry order matters (schemas, map expressions), with every span kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct OrderedTable(pub Vec<(Spanned<String>, Spanned<String>)>);

impl<'de> Deserialize<'de> for OrderedTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(OrderedVisitor)
    }
}

struct OrderedVisitor;

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = OrderedTable;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedTable, A::Error> {
        let mut entries: Vec<(Spanned<String>, Spanned<String>)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            entries.push((key, map.next_value()?));
        }
        Ok(OrderedTable(entries))
    }
}

/// Serializes (name, text) pairs as an ordered TOML table.
pub(crate) fn ser_pairs<'a, S: Serializer>(
    pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

/// Declares a closed set of lowercase names with serde support and the list of valid names.
macro_rules! names {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        #[allow(dead_code)] // the kind-name sets use only part of it
        impl $name {
            /// Every valid name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The config name.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// Parses a config name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
pub(crate) use names;

pub use dirigo_net::tcp::{TcpIo, WireFormat};

names! {
    /// The shards' scheduling policy.
    Policy {
        /// Arrival order.
        Fifo = "fifo",
        /// Earliest deadline first.
        Edf = "edf",
        /// Least laxity first (Cameo's rule).
        Laxity = "laxity",
        /// Weighted fair shares across apps.
        Fair = "fair",
    }
}

names! {
    /// How a generator picks keys.
    Distribution { Uniform = "uniform", Zipf = "zipf" }
}

names! {
    /// Record encoding of a file source or sink.
    FileFormat { Ndjson = "ndjson", Csv = "csv" }
}

names! {
    /// Shape of a window.
    WindowType { Tumbling = "tumbling", Sliding = "sliding" }
}

names! {
    /// Aggregate computed per window.
    AggregateOp { Count = "count", Sum = "sum", Min = "min", Max = "max", Avg = "avg" }
}
