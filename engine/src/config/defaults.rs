//! The `[engine]` and `[defaults.*]` tables: their layers as written, merged, and resolved.
//!
//! Every value comes from the embedded `configs/default.toml`; a user's tables are merged over it
//! key by key.

use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, Problem, Source};
use super::path::KeyPath;
use super::values::{
    ser_duration, ser_size, Delivery, Distribution, FileFormat, HumanDuration, HumanSize, Policy, TcpIo, WireFormat,
};

/// The embedded `configs/default.toml`: the single source of every default.
pub const DEFAULT_TOML: &str = include_str!("../../../configs/default.toml");

/// The name `DEFAULT_TOML` is reported under.
pub const DEFAULT_TOML_NAME: &str = "configs/default.toml";

/// Declares a resolved section (`$name`, every field set) and its layer (`$layer`, every field
/// optional and spanned) as written in one file; layers merge key by key, the user's on top.
macro_rules! layered {
    ($(#[$meta:meta])* $name:ident / $layer:ident {
        $($(#[$fmeta:meta])* $field:ident : $ty:ty = $raw:ty),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)+
        }

        #[derive(Clone, Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $layer {
            $(pub(crate) $field: Option<Spanned<$raw>>,)+
        }

        impl $layer {
            /// `self`'s keys, then `base`'s for those `self` lacks.
            pub(crate) fn over(self, base: Self) -> Self {
                Self { $($field: self.$field.or(base.$field),)+ }
            }

            /// The resolved section; a key missing from every layer is a gap in default.toml.
            pub(crate) fn resolve(self, table: &str) -> Result<$name, ConfigError> {
                Ok($name {
                    $($field: match self.$field {
                        Some(v) => <$ty>::from(v.into_inner()),
                        None => return Err(missing_default(table, stringify!($field))),
                    },)+
                })
            }
        }
    };
}

fn missing_default(table: &str, key: &'static str) -> ConfigError {
    let source = Source::new(DEFAULT_TOML_NAME, DEFAULT_TOML);
    let reason = format!("every `[{table}]` key needs a default in {DEFAULT_TOML_NAME}");
    ConfigError::problem(&source, 0..0, KeyPath::table(table), Problem::MissingKey { key, reason })
}

layered! {
    /// The `[engine]` table: shards, scheduling and runtime knobs.
    EngineConfig / EngineLayer {
        /// Number of shards; 0 = one per online CPU.
        shards: usize = usize,
        /// Pin shard `i` to CPU `i` (ignored when there are more shards than CPUs).
        pin: bool = bool,
        /// Scheduling policy of every shard.
        policy: Policy = Policy,
        /// How long an idle shard spins before it parks.
        #[serde(serialize_with = "ser_duration")]
        spin: Duration = HumanDuration,
        /// A shard spins when idle only while it hosts an app whose SLO is at most this.
        #[serde(serialize_with = "ser_duration")]
        spin_slo: Duration = HumanDuration,
        /// Share of its tightest SLO a parked shard lets due source events gather.
        gather: f64 = f64,
        /// Shards per node that never park while the engine runs (they spin when idle), so a
        /// lease lands on an awake shard: the scale-up reaction without an OS wake-up, for a core.
        standby: usize = usize,
        /// Key groups per keyed function.
        key_groups: u16 = u16,
        /// Move key groups between shards as load changes (spread when a shard cannot meet
        /// its apps' SLOs, consolidate when load falls).
        rebalance: bool = bool,
        /// Test setting: move a random key group every this many messages a shard runs; 0 = off.
        migrate_every: u64 = u64,
        /// A function holding its shard longer than this is reported.
        #[serde(serialize_with = "ser_duration")]
        stall_budget: Duration = HumanDuration,
        /// A function holding its shard longer than this stops its app and the shard is given
        /// up; 0 = never.
        #[serde(serialize_with = "ser_duration")]
        stall_stop: Duration = HumanDuration,
        /// Events per second of declared load a shard takes at start before apps go to another.
        shard_capacity: u64 = u64,
        /// Batches per cross-shard mailbox ring.
        mailbox_batches: usize = usize,
        /// Envelopes per batch at most.
        batch_size: usize = usize,
        /// Messages queued on a shard before its sources pause (backpressure).
        max_in_flight: usize = usize,
        /// Share of an app's SLO of queued work per shard its sources may add to (0: off).
        queue_budget: f64 = f64,
        /// Policy tick period.
        #[serde(serialize_with = "ser_duration")]
        tick: Duration = HumanDuration,
        /// Retire a lessee that was sent nothing for this long.
        #[serde(serialize_with = "ser_duration")]
        lessee_idle: Duration = HumanDuration,
        /// Progress line period.
        #[serde(serialize_with = "ser_duration")]
        stats_interval: Duration = HumanDuration,
        /// Glommio preemption timer.
        #[serde(serialize_with = "ser_duration")]
        preempt_timer: Duration = HumanDuration,
        /// How tcp sources receive: `recv` or `uring`.
        tcp_io: TcpIo = TcpIo,
        /// Apps a served engine may deploy over its lifetime (`dirigo serve`; ids are not reused):
        /// per-app slots are sized for this many when it starts.
        max_apps: usize = usize,
    }
}

layered! {
    /// `[defaults.app]`: per-app keys an `[[app]]` may omit.
    AppDefaults / AppDefaultsLayer {
        /// Share under the `fair` policy.
        weight: u32 = u32,
        /// Shards the app starts on; 0 = its widest source's parallelism.
        cores: u32 = u32,
        /// Most shards the app's key groups may spread to under load; 0 = every shard of the
        /// node. Equal to `cores` pins the app.
        max_cores: u32 = u32,
        /// Bounded out-of-orderness subtracted from the max event time seen.
        #[serde(serialize_with = "ser_duration")]
        watermark_delay: Duration = HumanDuration,
        /// A source emits a watermark every this many events.
        watermark_every: u64 = u64,
    }
}

layered! {
    /// `[defaults.function]`: per-function keys.
    FunctionDefaults / FunctionDefaultsLayer {
        /// Lessees per actor (dual-mode scaling); 0 = off.
        max_lessees: u32 = u32,
    }
}

layered! {
    /// `[defaults.window]`: keys a `window = { ... }` may omit.
    WindowDefaults / WindowDefaultsLayer {
        /// How long after its end a window still accepts late events.
        #[serde(serialize_with = "ser_duration")]
        lateness: Duration = HumanDuration,
    }
}

layered! {
    /// `[defaults.source.generator]`.
    GeneratorDefaults / GeneratorDefaultsLayer {
        /// Events per second; 0 = as fast as possible.
        rate: u64 = u64,
        /// Number of distinct keys.
        keys: u64 = u64,
        /// How keys are drawn.
        distribution: Distribution = Distribution,
        /// Zipf exponent.
        zipf_s: f64 = f64,
        /// Random seed.
        seed: u64 = u64,
        /// Generator instances.
        parallelism: u32 = u32,
    }
}

layered! {
    /// `[defaults.source.file]`.
    FileSourceDefaults / FileSourceDefaultsLayer {
        /// CSV files start with a header line.
        header: bool = bool,
        /// Events per second; 0 = as fast as possible.
        rate: u64 = u64,
    }
}

layered! {
    /// `[defaults.source.tcp]`.
    TcpSourceDefaults / TcpSourceDefaultsLayer {
        /// Record encoding on the connection.
        format: WireFormat = WireFormat,
        /// Open connections at most; one more is answered with an error and closed.
        max_connections: usize = usize,
        /// A connection that sends nothing for this long is answered with an error and closed.
        #[serde(serialize_with = "ser_duration")]
        idle_timeout: Duration = HumanDuration,
        /// Longest NDJSON line, in bytes.
        #[serde(serialize_with = "ser_size")]
        max_line: u64 = HumanSize,
        /// Largest binary frame payload, in bytes (at most 1GiB, the wire format's limit).
        #[serde(serialize_with = "ser_size")]
        max_frame: u64 = HumanSize,
    }
}

layered! {
    /// `[defaults.sink.file]`.
    FileSinkDefaults / FileSinkDefaultsLayer {
        /// Record encoding of the file.
        format: FileFormat = FileFormat,
    }
}

layered! {
    /// `[defaults.sink.tcp]`.
    TcpSinkDefaults / TcpSinkDefaultsLayer {
        /// Record encoding on the connection.
        format: WireFormat = WireFormat,
        /// What happens when subscribers do not keep up: block (backpressure) or lossy.
        delivery: Delivery = Delivery,
    }
}

/// `[defaults.source]` as written.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceDefaultsLayer {
    #[serde(default)]
    pub(crate) generator: GeneratorDefaultsLayer,
    #[serde(default)]
    pub(crate) file: FileSourceDefaultsLayer,
    #[serde(default)]
    pub(crate) tcp: TcpSourceDefaultsLayer,
}

/// `[defaults.sink]` as written.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SinkDefaultsLayer {
    #[serde(default)]
    pub(crate) file: FileSinkDefaultsLayer,
    #[serde(default)]
    pub(crate) tcp: TcpSinkDefaultsLayer,
}

/// The `[defaults]` table as written in one file.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DefaultsLayer {
    #[serde(default)]
    pub(crate) app: AppDefaultsLayer,
    #[serde(default)]
    pub(crate) function: FunctionDefaultsLayer,
    #[serde(default)]
    pub(crate) window: WindowDefaultsLayer,
    #[serde(default)]
    pub(crate) source: SourceDefaultsLayer,
    #[serde(default)]
    pub(crate) sink: SinkDefaultsLayer,
}

/// Every per-app, per-node default after merging (`[defaults.*]`), shaped like the file.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Defaults {
    pub app: AppDefaults,
    pub function: FunctionDefaults,
    pub window: WindowDefaults,
    pub source: SourceDefaults,
    pub sink: SinkDefaults,
}

/// `[defaults.source.*]`, by source kind.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SourceDefaults {
    pub generator: GeneratorDefaults,
    pub file: FileSourceDefaults,
    pub tcp: TcpSourceDefaults,
}

/// `[defaults.sink.*]`, by sink kind.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SinkDefaults {
    pub file: FileSinkDefaults,
    pub tcp: TcpSinkDefaults,
}

impl DefaultsLayer {
    /// `self` merged over `base`, key by key.
    pub(crate) fn over(self, base: Self) -> Self {
        DefaultsLayer {
            app: self.app.over(base.app),
            function: self.function.over(base.function),
            window: self.window.over(base.window),
            source: SourceDefaultsLayer {
                generator: self.source.generator.over(base.source.generator),
                file: self.source.file.over(base.source.file),
                tcp: self.source.tcp.over(base.source.tcp),
            },
            sink: SinkDefaultsLayer {
                file: self.sink.file.over(base.sink.file),
                tcp: self.sink.tcp.over(base.sink.tcp),
            },
        }
    }

    /// Every section resolved.
    pub(crate) fn resolve(self) -> Result<Defaults, ConfigError> {
        Ok(Defaults {
            app: self.app.resolve("defaults.app")?,
            function: self.function.resolve("defaults.function")?,
            window: self.window.resolve("defaults.window")?,
            source: SourceDefaults {
                generator: self.source.generator.resolve("defaults.source.generator")?,
                file: self.source.file.resolve("defaults.source.file")?,
                tcp: self.source.tcp.resolve("defaults.source.tcp")?,
            },
            sink: SinkDefaults {
                file: self.sink.file.resolve("defaults.sink.file")?,
                tcp: self.sink.tcp.resolve("defaults.sink.tcp")?,
            },
        })
    }
}
