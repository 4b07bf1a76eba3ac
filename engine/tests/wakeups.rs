//! Every message that cannot wait wakes a parked receiver: records built by a built-in (a
//! `map`'s output is archived from values, not copied) ring the doorbell of the shard they go
//! to like any other, so no parked shard sits on mail until its park timeout
//! (`missed_wakeups` counts each time one did). Records whose deadline leaves room wait for
//! the receiver's own wake-up instead (`lazy_wakeups`), and are not lost or late for it.

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
slo = "SLO"
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
    // 5 ms: a parked shard hosting it wakes on its own only for its sources (a share of 5 ms is
    // below the 1 ms floor of waking for mail), so every record must ring.
    let config = Config::parse(&CONFIG.replace("SLO", "5ms"), "wakeups.toml").expect("config");
    let summary = run_config(&config, 0, Builtin::by_name("fifo").expect("fifo"), StopHandle::default()).expect("runs");
    assert_eq!(summary.apps[0].events_out, 20_000, "every event came out");
    assert_eq!(summary.missed_wakeups, 0, "a parked shard woke on its timeout with mail waiting");
}

/// With a 50 ms SLO, a shard hosting the app wakes on its own every 5 ms (a tenth of the SLO),
/// so senders let records that can wait that long wait for it: parks end on their timeout with
/// that mail (counted as `lazy_wakeups`, not as lost), every event still comes out, and within
/// the SLO.
#[test]
fn records_that_can_wait_wait_for_the_receivers_own_wake_up() {
    let config = Config::parse(&CONFIG.replace("SLO", "50ms"), "wakeups.toml").expect("config");
    let summary = run_config(&config, 0, Builtin::by_name("fifo").expect("fifo"), StopHandle::default()).expect("runs");
    let app = &summary.apps[0];
    assert_eq!(app.events_out, 20_000, "every event came out");
    assert!(summary.lazy_wakeups > 0, "no sender let its records wait for a parked shard's own wake-up");
    assert_eq!(summary.missed_wakeups, 0, "a parked shard woke on its timeout with mail nobody chose to leave");
    assert!(app.satisfaction > 0.99, "records that waited still met the SLO: {:.2}%", app.satisfaction * 100.0);
}
