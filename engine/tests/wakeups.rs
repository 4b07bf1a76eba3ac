//! Every message wakes a parked receiver: records built by a built-in (a `map`'s output is
//! archived from values, not copied) ring the doorbell of the shard they go to like any other,
//! so no parked shard sits on mail until its park timeout (`missed_wakeups` counts each time
//! one did).

use dirigo_engine::compile::run_config;
use dirigo_engine::config::Config;
use dirigo_engine::engine::StopHandle;
use dirigo_engine::policy::Builtin;

const CONFIG: &str = r#"
[engine]
shards = 2
# Unpinned: an idle shard parks at once, so nearly every message finds its receiver parked.
pin = false
[[app]]
name = "w1"
slo = "50ms"
cores = 2
schema = { key = "u64", value = "u64" }
[[app.source]]
name = "events"
kind = "generator"
rate = 20000
events = 20000
keys = 1000
[[app.function]]
name = "mapped"
kind = "map"
input = "events"
fields = { key = "key", value = "value + 1" }
[[app.function]]
name = "counts"
kind = "count"
input = "mapped"
key = "key"
[[app.sink]]
name = "latency"
kind = "latency"
input = "counts"
"#;

#[test]
fn records_a_map_builds_wake_the_parked_shard_they_go_to() {
    let config = Config::parse(CONFIG, "wakeups.toml").expect("config");
    let summary = run_config(&config, 0, Builtin::by_name("fifo").expect("fifo"), StopHandle::default()).expect("runs");
    assert_eq!(summary.apps[0].events_out, 20_000, "every event came out");
    assert_eq!(summary.missed_wakeups, 0, "a parked shard woke on its timeout with mail waiting");
}
