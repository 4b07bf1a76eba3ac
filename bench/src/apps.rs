//! App configs that more than one scenario runs, as TOML text to splice into a config.

/// The latency-critical app of `tenants` and `slo`: 1 ms SLO, weight 8, a keyed count of sensor
/// readings (100 keys) from a generator at `rate` events/s for `duration` (e.g. `"6000ms"`), on
/// `cores` shards (these scenarios share every shard between their apps).
pub fn critical(rate: u64, duration: &str, cores: usize) -> String {
    format!(
        r#"
[[app]]
name = "critical"
slo = "1ms"
weight = 8
cores = {cores}
schema = {{ sensor = "u64", value = "u64" }}
[[app.source]]
name = "readings"
kind = "generator"
rate = {rate}
duration = "{duration}"
keys = 100
[[app.function]]
name = "per_sensor"
kind = "count"
input = "readings"
key = "sensor"
[[app.sink]]
name = "latency"
kind = "latency"
input = "per_sensor"
"#
    )
}

/// The app of [`tcp_to_null`], a template shared with the engine's `ingress_bench` example.
const TCP_TO_NULL: &str = include_str!("../../engine/examples/tcp_to_null.toml");

/// A tcp source of `format` listening on `127.0.0.1:port`, straight into a null sink: app `name`
/// of `schema` (a TOML inline table). The caller writes the `[engine]` table before it.
pub fn tcp_to_null(name: &str, schema: &str, port: u16, format: &str) -> String {
    TCP_TO_NULL
        .replace("NAME", name)
        .replace("SCHEMA", schema)
        .replace("PORT", &port.to_string())
        .replace("FORMAT", format)
}
