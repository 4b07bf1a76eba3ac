//! Every benchmark scenario runs in its short mode (`--quick`) and writes a JSON document with
//! the fields `bench/README.md` documents. Figures from these runs are not for comparison (debug
//! build, seconds of work): this checks that the scenarios work and keep their format.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// Run `dirigo-bench SCENARIO --quick` into a fresh directory and return its JSON document.
fn quick(scenario: &str) -> Value {
    let out: PathBuf = std::env::temp_dir().join(format!("dirigo-bench-{}-{scenario}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_dirigo-bench"))
        .args([scenario, "--quick", "--out"])
        .arg(&out)
        .status()
        .expect("dirigo-bench runs");
    assert!(status.success(), "{scenario} failed");
    let text = std::fs::read_to_string(out.join(format!("{scenario}.json"))).expect("the JSON file");
    let doc: Value = serde_json::from_str(&text).expect("valid JSON");
    let _ = std::fs::remove_dir_all(&out);
    assert_eq!(doc["scenario"], scenario);
    assert_eq!(doc["quick"], true);
    assert!(doc["elapsed_seconds"].as_f64().is_some() && doc["unix_time"].as_u64().is_some());
    assert!(doc["machine"]["cpus"].as_u64().is_some_and(|c| c >= 1));
    for k in ["load_avg_1m_before", "load_avg_1m_after"] {
        assert!(doc["machine"][k].as_f64().is_some(), "machine.{k}");
    }
    doc["results"].clone()
}

fn has(v: &Value, path: &str) -> bool {
    path.split('.').try_fold(v, |v, k| v.get(k)).is_some_and(|x| !x.is_null())
}

fn assert_fields(scenario: &str, v: &Value, paths: &[&str]) {
    for p in paths {
        assert!(has(v, p), "{scenario}: results.{p} missing in {v}");
    }
}

#[test]
fn keyed_count_quick() {
    let r = quick("keyed-count");
    assert_fields(
        "keyed-count",
        &r,
        &["plan.max_events", "plan.rates_eps", "workload.keys", "runs", "medians", "ratios"],
    );
    assert!(r["runs"].as_array().is_some_and(|a| !a.is_empty()));
}

#[test]
fn mailbox_quick() {
    let r = quick("mailbox");
    assert_fields("mailbox", &r, &["busy_spin_us", "medians", "ratios", "target.busy_p50_us", "target.met"]);
}

#[test]
fn idle_quick() {
    let r = quick("idle");
    assert_fields("idle", &r, &["rate_eps", "seconds", "shards", "target_cpu_percent", "runs", "medians"]);
    let variants: Vec<&str> =
        r["medians"].as_array().expect("medians").iter().filter_map(|m| m["variant"].as_str()).collect();
    assert_eq!(variants, ["w1", "w1", "tcp"]);
}

#[test]
fn hooks_quick() {
    let r = quick("hooks");
    assert_fields("hooks", &r, &["events", "rounds", "messages_per_event", "policies"]);
    let names: Vec<&str> =
        r["policies"].as_array().expect("policies").iter().filter_map(|p| p["policy"].as_str()).collect();
    assert_eq!(names, ["bare", "fifo", "edf", "laxity", "fair"]);
    for p in r["policies"].as_array().expect("policies") {
        assert!(p["ns_per_message"].as_f64().is_some_and(|x| x > 0.0) && p["added_ns"].as_f64().is_some());
    }
}

#[test]
fn tenants_quick() {
    let r = quick("tenants");
    assert_fields("tenants", &r, &["capacity_eps", "seconds", "rounds", "results"]);
    let rows = r["results"].as_array().expect("results");
    assert_eq!(rows.len(), 8, "4 policies x 2 apps");
    for row in rows {
        for k in ["satisfaction", "p50_us", "p99_us", "events_out"] {
            assert!(row[k].as_f64().is_some(), "{k} in {row}");
        }
    }
}

#[test]
fn nexmark_quick_matches_its_references() {
    let r = quick("nexmark");
    assert!(r["events"].as_u64().is_some_and(|n| n > 0));
    let queries = r["queries"].as_array().expect("queries");
    let names: Vec<&str> = queries.iter().filter_map(|q| q["query"].as_str()).collect();
    assert_eq!(names, ["q1", "q2", "q5", "q7", "q8"]);
    for q in queries {
        assert_eq!(q["matches_reference"], true, "{q}");
        assert!(q["events_per_s"].as_f64().is_some_and(|x| x > 0.0) && q["outputs"].as_u64().is_some(), "{q}");
        assert!(q["latency_us"]["p50"].as_f64().is_some() && q["latency_us"]["p99"].as_f64().is_some(), "{q}");
    }
}

#[test]
fn tcp_ingress_quick_compares_both_receive_paths() {
    let r = quick("tcp-ingress");
    assert_fields("tcp-ingress", &r, &["events", "batch", "repeats", "runs", "medians", "ratios.events_per_s"]);
    let paths: Vec<&str> = r["medians"].as_array().expect("medians").iter().filter_map(|m| m["io"].as_str()).collect();
    assert_eq!(paths, ["recv", "uring"]);
    for m in r["medians"].as_array().expect("medians") {
        assert!(m["events_per_s"].as_f64().is_some_and(|x| x > 0.0), "{m}");
        assert!(m["engine_cpu_ns_per_event"].as_f64().is_some_and(|x| x > 0.0), "{m}");
        assert!(m["lone_latency_us"]["p50"].as_f64().is_some_and(|x| x > 0.0), "{m}");
    }
}
