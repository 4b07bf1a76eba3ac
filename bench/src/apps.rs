//! App configs that more than one scenario runs, as TOML text to splice into a config.

/// The latency-critical app of `tenants` and `slo`: 1 ms SLO, weight 8, a keyed count of sensor
/// readings (100 keys) from a generator at `rate` events/s for `duration` (e.g. `"6000ms"`).
pub fn critical(rate: u64, duration: &str) -> String {
    format!(
        r#"
[[app]]
name = "critical"
slo = "1ms"
weight = 8
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
