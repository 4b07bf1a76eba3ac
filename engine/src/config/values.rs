//! Value types of the config: human durations and sizes, ordered tables, and the closed sets of
//! names (policy, distribution, formats, window types, aggregate ops).

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

/// A size in bytes written for humans: `"4MiB"`, `"512KiB"`, `"1.5GiB"`, `"64KB"`, or a number
/// of bytes (`65536` or `"65536"`). KiB, MiB, GiB are powers of 1024; KB, MB, GB of 1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HumanSize(pub u64);

/// Why a size does not parse: the text, and what is wrong with it.
fn size_error(text: &str, what: &str) -> String {
    format!("invalid size `{text}`: {what}; write e.g. \"64KiB\", \"4MiB\" or a number of bytes")
}

impl HumanSize {
    /// Parses a size string (see the type).
    pub(crate) fn parse(text: &str) -> Result<HumanSize, String> {
        let trimmed = text.trim();
        if trimmed.starts_with('-') {
            return Err(size_error(text, "a size cannot be negative"));
        }
        match trimmed.parse::<bytesize::ByteSize>() {
            Ok(b) => Ok(HumanSize(b.as_u64())),
            Err(_) if trimmed.is_empty() || !trimmed.starts_with(|c: char| c.is_ascii_digit()) => {
                Err(size_error(text, "not a number"))
            }
            Err(_) => Err(size_error(text, "unknown unit (valid: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")),
        }
    }
}

impl<'de> Deserialize<'de> for HumanSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SizeVisitor)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = HumanSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as \"4MiB\" or a number of bytes")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<HumanSize, E> {
        HumanSize::parse(text).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<HumanSize, E> {
        Ok(HumanSize(bytes))
    }

    fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<HumanSize, E> {
        u64::try_from(bytes)
            .map(HumanSize)
            .map_err(|_| E::custom(size_error(&bytes.to_string(), "a size cannot be negative")))
    }
}

impl From<HumanSize> for u64 {
    fn from(s: HumanSize) -> u64 {
        s.0
    }
}

/// Serializes a size the way it is written in a config (`"4MiB"`, exact).
pub(crate) fn ser_size<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&dirigo_net::tcp::human_size(*bytes))
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

pub use dirigo_net::tcp::{Delivery, TcpIo, WireFormat};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        let ok = |t: &str| HumanSize::parse(t).unwrap().0;
        assert_eq!(ok("4MiB"), 4 << 20);
        assert_eq!(ok("4 MiB"), 4 << 20);
        assert_eq!(ok("512KiB"), 512 << 10);
        assert_eq!(ok("1.5GiB"), 3 << 29);
        assert_eq!(ok("64KB"), 64_000);
        assert_eq!(ok("65536"), 65536);
        assert_eq!(ok("10B"), 10);
        assert_eq!(ok("0"), 0, "zero parses; the keys that must be positive say so");
    }

    #[test]
    fn bad_sizes_say_why() {
        let err = |t: &str| HumanSize::parse(t).unwrap_err();
        assert!(err("4 parsecs").starts_with("invalid size `4 parsecs`: unknown unit"), "{}", err("4 parsecs"));
        assert!(err("-1MiB").contains("cannot be negative"));
        assert!(err("MiB").contains("not a number"));
        assert!(err("").contains("not a number"));
    }

    #[test]
    fn sizes_serialize_as_written() {
        #[derive(serde::Serialize)]
        struct T {
            #[serde(serialize_with = "ser_size")]
            a: u64,
            #[serde(serialize_with = "ser_size")]
            b: u64,
        }
        let text = toml::to_string(&T { a: 4 << 20, b: 1000 }).unwrap();
        assert_eq!(text, "a = \"4MiB\"\nb = \"1000B\"\n");
        #[derive(serde::Deserialize)]
        struct U {
            a: HumanSize,
            b: HumanSize,
        }
        let back: U = toml::from_str(&text).unwrap();
        assert_eq!((back.a.0, back.b.0), (4 << 20, 1000));
        let bytes: U = toml::from_str("a = 7\nb = \"7\"").unwrap();
        assert_eq!((bytes.a.0, bytes.b.0), (7, 7));
        assert!(toml::from_str::<U>("a = -7\nb = 1").is_err());
    }
}
