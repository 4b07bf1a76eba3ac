//! Sinks that read headers alone: a `latency` or `null` sink does nothing with what its records
//! hold, so the edges into it carry no payload (`Edge::headers_only`) and nothing is archived for
//! them. Their outputs are still counted and timed; a sink put in their place through
//! `Plan::replace_factory` gets every record whole; one put there behind the plan's back fails
//! the run (its shard panics naming the function and `Plan::replace_factory`).

mod common;

use std::sync::Arc;

use dirigo_actors::record::{access, Value};
use dirigo_engine::compile::{collect_sinks, compile, settings};
use dirigo_engine::config::Config;
use dirigo_engine::engine::run;
use dirigo_engine::instance::OperatorInstance;
use dirigo_engine::plan::Plan;
use dirigo_engine::policy::Builtin;
use dirigo_engine::sink::{Sink, SinkTarget};

const EVENTS: u64 = 20_000;

/// A map feeding three sinks: latency, null and a file (which reads its records).
fn config(file: &std::path::Path) -> Config {
    let text = format!(
        r#"
[engine]
shards = 2
[[app]]
name = "a"
slo = "50ms"
cores = 2
schema = {{ key = "u64", value = "u64" }}
[[app.source]]
name = "events"
kind = "generator"
rate = 0
events = {EVENTS}
keys = 100
parallelism = 2
[[app.function]]
name = "mapped"
kind = "map"
input = "events"
fields = {{ key = "key", value = "value * 3" }}
[[app.sink]]
name = "lat"
kind = "latency"
input = "mapped"
[[app.sink]]
name = "nul"
kind = "null"
input = "mapped"
[[app.sink]]
name = "file"
kind = "file"
input = "mapped"
path = "{}"
format = "ndjson"
"#,
        file.display()
    );
    Config::parse(&text, "sinks.toml").expect("a valid config")
}

/// Whether each edge out of `mapped` carries headers alone, by target name.
fn headers_only(plan: &Plan) -> Vec<(String, bool)> {
    let mapped = plan.functions.iter().find(|f| f.name == "mapped").expect("the map");
    let mut edges: Vec<(String, bool)> =
        mapped.outputs.iter().map(|e| (plan.functions[e.target as usize].name.clone(), e.headers_only)).collect();
    edges.sort();
    edges
}

#[test]
fn latency_and_null_sinks_take_headers_alone_and_their_outputs_still_count() {
    let file = common::temp_dir("sinks-headers").join("out.ndjson");
    let config = config(&file);
    let plan = compile(&config, 2).expect("compiles");
    let want = vec![("file".to_string(), false), ("lat".to_string(), true), ("nul".to_string(), true)];
    assert_eq!(headers_only(&plan), want);
    let summary =
        run(plan, &settings(&config), Builtin::by_name("fifo").unwrap(), Default::default(), |_| {}).expect("runs");
    let app = &summary.apps[0];
    assert_eq!(app.events_in, EVENTS);
    // Every record reached all three sinks, and each output was timed.
    assert_eq!(app.events_out, 3 * EVENTS);
    assert_eq!(app.latency_us.count, 3 * EVENTS);
    // The file sink, on the same map's edges, read every record whole.
    let text = std::fs::read_to_string(&file).expect("the file sink's output");
    let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("a json row")).collect();
    assert_eq!(rows.len() as u64, EVENTS);
    assert!(rows.iter().all(|r| r["value"].as_u64().is_some_and(|v| v % 3 == 0)), "every value went through the map");
}

#[test]
fn sinks_put_in_their_place_with_replace_factory_get_every_record_whole() {
    let config = config(&common::temp_dir("sinks-replaced").join("out.ndjson"));
    let mut plan = compile(&config, 2).expect("compiles");
    let outputs = collect_sinks(&mut plan);
    assert!(headers_only(&plan).iter().all(|(_, h)| !h), "collected sinks read their records");
    run(plan, &settings(&config), Builtin::by_name("fifo").unwrap(), Default::default(), |_| {}).expect("runs");
    let mut per_sink = std::collections::BTreeMap::<String, u64>::new();
    for o in outputs.drain() {
        let values = access(&o.archive).expect("a whole record").to_values();
        let [Value::U64(_), Value::U64(v)] = values[..] else { panic!("a (key, value) row: {values:?}") };
        assert_eq!(v % 3, 0, "the map's output");
        *per_sink.entry(o.sink.to_string()).or_default() += 1;
    }
    let want: std::collections::BTreeMap<String, u64> =
        ["file", "lat", "nul"].iter().map(|s| (s.to_string(), EVENTS)).collect();
    assert_eq!(per_sink, want);
}

#[test]
fn a_sink_replaced_behind_the_plans_back_fails_the_run() {
    let config = config(&common::temp_dir("sinks-refused").join("out.ndjson"));
    let mut plan = compile(&config, 2).expect("compiles");
    let (tx, _rx) = dirigo_engine::sink::Collector::new();
    let lat = plan.functions.iter_mut().find(|f| f.name == "lat").expect("the latency sink");
    let schema = lat.input_schema.clone();
    lat.factory =
        Arc::new(move |_| OperatorInstance::Sink(Sink::new(SinkTarget::collect("lat", tx.clone()), schema.clone())));
    let err = run(plan, &settings(&config), Builtin::by_name("fifo").unwrap(), Default::default(), |_| {})
        .expect_err("a collecting instance where the plan has a latency sink");
    let text = err.to_string();
    // The shard's panic names the function and `Plan::replace_factory` (on stderr); the run
    // fails rather than feed records without payloads to a sink that reads them.
    assert!(text.contains("shard") && text.contains("panicked"), "{text}");
}
