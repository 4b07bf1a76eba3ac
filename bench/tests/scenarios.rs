//! Every benchmark scenario runs in its short mode (`--quick`) and writes a JSON document with
//! the fields `bench/README.md` documents, and an SVG figure beside it whose legends name the
//! expected series. They run one at a time (each pins CPUs 0 and 1), each killed if it hangs.
//! Figures from these runs are not for comparison (debug build, seconds of work): this checks
//! that the scenarios work and keep their format.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use wait_timeout::ChildExt;

/// Held while a scenario runs.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
/// A quick run that takes longer than this has hung (they take seconds; debug builds, minutes).
const TIME_LIMIT: Duration = Duration::from_secs(300);

/// Run `dirigo-bench SCENARIO --quick` into a fresh directory, check its SVG figure names every
/// one of `series`, and return its JSON document's `results`.
fn quick(scenario: &str, series: &[&str]) -> Value {
    // Every scenario pins its threads to CPUs 0 and 1: run them one at a time.
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out: PathBuf = std::env::temp_dir().join(format!("dirigo-bench-{}-{scenario}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_dirigo-bench"))
        .args([scenario, "--quick", "--out"])
        .arg(&out)
        .spawn()
        .expect("dirigo-bench runs");
    let Some(status) = child.wait_timeout(TIME_LIMIT).expect("waiting for dirigo-bench") else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{scenario} --quick still running after {TIME_LIMIT:?}: killed (an engine hang?)");
    };
    assert!(status.success(), "{scenario} failed");
    let text = std::fs::read_to_string(out.join(format!("{scenario}.json"))).expect("the JSON file");
    let doc: Value = serde_json::from_str(&text).expect("valid JSON");
    let svg = std::fs::read_to_string(out.join(format!("{scenario}.svg"))).expect("the SVG file");
    let _ = std::fs::remove_dir_all(&out);
    assert_svg(scenario, &svg, series);
    assert_eq!(doc["scenario"], scenario);
    assert_eq!(doc["quick"], true);
    assert!(doc["elapsed_seconds"].as_f64().is_some() && doc["unix_time"].as_u64().is_some());
    assert!(doc["machine"]["cpus"].as_u64().is_some_and(|c| c >= 1));
    for k in ["load_avg_1m_before", "load_avg_1m_after"] {
        assert!(doc["machine"][k].as_f64().is_some(), "machine.{k}");
    }
    doc["results"].clone()
}

/// A well-formed SVG document (one `<svg>` root, every element closed) that contains each name.
fn assert_svg(scenario: &str, svg: &str, names: &[&str]) {
    let svg = svg.trim();
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{scenario}: not an SVG document");
    let mut open: Vec<&str> = Vec::new();
    for tag in svg.split('<').skip(1).map(|t| &t[..t.find('>').expect("a closed tag")]) {
        let name = |t: &str| t.split_whitespace().next().unwrap_or("").trim_end_matches('/').to_owned();
        if let Some(closing) = tag.strip_prefix('/') {
            assert_eq!(open.pop().map(name), Some(closing.to_owned()), "{scenario}: unbalanced </{closing}>");
        } else if !tag.ends_with('/') && !tag.starts_with('?') && !tag.starts_with('!') {
            open.push(tag);
        }
    }
    assert!(open.is_empty(), "{scenario}: unclosed elements {open:?}");
    for n in names {
        assert!(svg.contains(n), "{scenario}: series {n:?} missing from the SVG");
    }
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
    let r = quick("keyed-count", &["dirigo", "baseline", "timely", "p99 @ 200k/s"]);
    assert_fields(
        "keyed-count",
        &r,
        &["plan.max_events", "plan.rates_eps", "workload.keys", "runs", "medians", "ratios"],
    );
    assert!(r["runs"].as_array().is_some_and(|a| !a.is_empty()));
    // Dirigo in splits runs the closed loop only (a generator at a rate refuses splits), and
    // is compared with timely there.
    let runs = r["runs"].as_array().expect("runs");
    let splits: Vec<&str> =
        runs.iter().filter(|x| x["system"] == "dirigo-splits").filter_map(|x| x["load"].as_str()).collect();
    assert!(!splits.is_empty() && splits.iter().all(|&l| l == "max"), "{splits:?}");
    let ratios = r["ratios"].as_array().expect("ratios");
    assert!(
        ratios.iter().any(|x| x["system"] == "dirigo-splits" && x["reference"] == "timely" && x["load"] == "max"),
        "{ratios:?}"
    );
}

#[test]
fn mailbox_quick() {
    let r = quick("mailbox", &["dirigo-mailbox", "glommio-channel", "atomic"]);
    assert_fields("mailbox", &r, &["busy_spin_us", "medians", "ratios", "target.busy_p50_us", "target.met"]);
}

#[test]
fn idle_quick() {
    let r = quick("idle", &["spin default", "spin 0s", "target"]);
    assert_fields("idle", &r, &["rate_eps", "seconds", "shards", "target_cpu_percent", "runs", "medians"]);
    let variants: Vec<&str> =
        r["medians"].as_array().expect("medians").iter().filter_map(|m| m["variant"].as_str()).collect();
    assert_eq!(variants, ["w1", "w1", "tcp"]);
}

#[test]
fn hooks_quick() {
    let r = quick("hooks", &["bare", "laxity", "ns added vs bare"]);
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
    let r = quick("tenants", &["critical", "heavy", "fifo", "fair"]);
    assert_fields("tenants", &r, &["capacity_eps", "seconds", "rounds", "results", "flood"]);
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
    let r = quick(
        "nexmark",
        &["q1", "q8", "dirigo (2 shards)", "sequential reference (1 thread)", "reference on 2 threads at once"],
    );
    assert!(r["events"].as_u64().is_some_and(|n| n > 0));
    let queries = r["queries"].as_array().expect("queries");
    let names: Vec<&str> = queries.iter().filter_map(|q| q["query"].as_str()).collect();
    assert_eq!(names, ["q1", "q2", "q5", "q7", "q8"]);
    for q in queries {
        assert_eq!(q["matches_reference"], true, "{q}");
        assert!(q["events_per_s"].as_f64().is_some_and(|x| x > 0.0) && q["outputs"].as_u64().is_some(), "{q}");
        assert!(q["latency_us"]["p50"].as_f64().is_some() && q["latency_us"]["p99"].as_f64().is_some(), "{q}");
        let positive = |v: &Value| v.as_f64().is_some_and(|x| x > 0.0);
        assert!(positive(&q["parallel_reference_events_per_s"]) && positive(&q["paired_ratio"]), "{q}");
        let pairs = q["pairs"].as_array().expect("pairs");
        assert_eq!(pairs.len(), 5, "five timed pairs: {q}");
        assert!(pairs.iter().all(|p| p.as_array().is_some_and(|p| p.len() == 3 && p.iter().all(positive))), "{q}");
    }
}

#[test]
fn slo_quick() {
    let r = quick("slo", &["serverful", "dirigo", "dirigo critical", "shards hosting each app"]);
    assert_fields(
        "slo",
        &r,
        &[
            "shards",
            "serverful_shards",
            "heavy_apps",
            "capacity_eps",
            "seconds",
            "rounds",
            "setups",
            "results",
            "ratios",
        ],
    );
    let (n, b) = (r["shards"].as_u64().expect("shards"), r["serverful_shards"].as_u64().expect("serverful shards"));
    assert!(n as f64 <= 0.7 * b as f64, "dirigo's pool ({n}) is at most 0.7x the serverful shards ({b})");
    let apps = 1 + r["heavy_apps"].as_u64().expect("heavy apps") as usize;
    let rows = r["results"].as_array().expect("results");
    assert_eq!(rows.len(), 4 * apps, "4 setups x every app");
    for row in rows {
        for k in ["satisfaction", "p50_us", "p99_us", "events_out", "cpu_seconds"] {
            assert!(row[k].as_f64().is_some(), "{k} in {row}");
        }
        assert!(row["events_out"].as_f64().is_some_and(|x| x > 0.0), "every app's output: {row}");
    }
    for s in r["setups"].as_array().expect("setups") {
        assert!(s["cpu_seconds"].as_f64().is_some_and(|x| x > 0.0), "{s}");
    }
    assert!(r["ratios"]["cpu_dirigo_over_serverful"].as_f64().is_some_and(|x| x > 0.0));
    assert!(r["placement"].as_array().is_some_and(|p| p.len() == apps));
}

#[test]
fn scaling_quick() {
    let r = quick("scaling", &["events/s", "p99"]);
    assert_fields("scaling", &r, &["lessee_sweep.shards", "lessee_sweep.rows", "scale_up.target_p99_us"]);
    assert!(r.get("state_sweep").is_none(), "barrier time against state size lives in `barrier`");
    let sweep = r["lessee_sweep"]["rows"].as_array().expect("rows");
    assert_eq!(
        sweep.iter().map(|x| x["max_lessees"].as_u64()).collect::<Vec<_>>(),
        [Some(0), Some(1), Some(2), Some(3)]
    );
    for row in sweep {
        for k in ["throughput_eps", "p50_us", "p99_us", "offered_eps", "satisfaction", "lessees_peak"] {
            assert!(row[k].as_f64().is_some(), "{k} in {row}");
        }
    }
}

#[test]
fn scale_quick_compares_each_shard_count_with_timely() {
    let r = quick("scale", &["dirigo", "timely", "M events/s"]);
    assert_fields("scale", &r, &["plan.shards", "runs", "medians", "summary.rows", "summary.dirigo_never_falls"]);
    let shards: Vec<u64> = r["plan"]["shards"].as_array().expect("shards").iter().filter_map(|s| s.as_u64()).collect();
    assert_eq!(&shards[..2], [1, 2], "1 and 2 shards at least: {shards:?}");
    let runs = r["runs"].as_array().expect("runs");
    // Dirigo and timely at every shard count under both loads, Dirigo in splits under the
    // closed loop, and every event through.
    assert_eq!(runs.len(), shards.len() * (2 * 2 + 1));
    for run in runs {
        assert_eq!(run["events"], run["events_out"], "{run}");
        assert!(run["events_per_s"].as_f64().is_some_and(|x| x > 0.0), "{run}");
        assert!(run["system"] != "dirigo-splits" || run["load"] == "max", "{run}");
    }
    for row in r["summary"]["rows"].as_array().expect("rows") {
        assert!(row["throughput_ratio"].as_f64().is_some_and(|x| x > 0.0), "{row}");
        assert!(row["splits_throughput_ratio"].as_f64().is_some_and(|x| x > 0.0), "{row}");
    }
}

#[test]
fn hops_quick_compares_the_cost_of_added_maps_with_timely() {
    let r = quick("hops", &["dirigo", "timely", "identity maps added"]);
    assert_fields("hops", &r, &["plan.hops", "runs", "medians", "per_hop"]);
    let hops: Vec<u64> = r["plan"]["hops"].as_array().expect("hops").iter().filter_map(|h| h.as_u64()).collect();
    assert_eq!(hops.first(), Some(&0), "W1 itself is the first point: {hops:?}");
    assert!(hops.len() >= 2, "{hops:?}");
    // Every system at every map count, every event through, on one shard.
    let runs = r["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), hops.len() * 2);
    for run in runs {
        assert_eq!(run["events_in"], run["events_out"], "{run}");
        assert!(run["cpu_ns_per_event"].as_f64().is_some_and(|x| x > 0.0), "{run}");
    }
    assert_eq!(r["workload"]["shards"], 1);
    let per_hop = r["per_hop"].as_array().expect("per_hop");
    assert_eq!(per_hop.iter().map(|p| p["system"].as_str().unwrap_or("")).collect::<Vec<_>>(), ["dirigo", "timely"]);
    for p in per_hop {
        assert!(p["base_ns"].as_f64().is_some_and(|x| x > 0.0) && p["ns_per_hop"].as_f64().is_some(), "{p}");
    }
}

#[test]
fn barrier_quick_ships_every_lessees_partial() {
    let r = quick("barrier", &["barrier p50", "2 shards, L=1", "L=3", "partial merged"]);
    assert_fields("barrier", &r, &["cpus", "rounds", "messages_per_barrier", "max_in_flight", "setups", "rows"]);
    let rows = r["rows"].as_array().expect("rows");
    let setups: Vec<(u64, u64)> =
        rows.iter().map(|x| (x["shards"].as_u64().unwrap(), x["lessees"].as_u64().unwrap())).collect();
    assert_eq!(setups, [(2, 1), (4, 1), (4, 2), (4, 3)].repeat(2), "(shards, lessees) per state size");
    let sizes: Vec<u64> = rows.iter().filter_map(|x| x["state_bytes"].as_u64()).collect();
    assert_eq!(sizes, [[1024; 4], [256 * 1024; 4]].concat());
    for row in rows {
        let (l, queries) = (row["lessees"].as_f64().unwrap(), row["queries"].as_f64().unwrap());
        // Each barrier shipped one partial of the whole state (and rkyv's 8-byte root) per lessee.
        let partial = row["partial_archive_bytes"].as_f64().unwrap();
        assert_eq!(partial, row["state_bytes"].as_f64().unwrap() + 8.0, "{row}");
        assert_eq!(row["partial_bytes_per_barrier"].as_f64(), Some(l * partial), "{row}");
        assert_eq!(row["lessees_peak"].as_f64(), Some(l), "{row}");
        assert_eq!(row["barriers"].as_f64(), Some(queries + 1.0), "{row}: the queries and the end");
        assert_eq!(row["pinned"].as_bool(), Some(row["shards"].as_u64().unwrap() <= r["cpus"].as_u64().unwrap()));
        for p in ["p50", "p99", "max"] {
            assert!(row["barrier_us"][p].as_f64().is_some_and(|x| x > 0.0), "barrier_us.{p} in {row}");
        }
        for k in ["mean_barrier_us", "merged_mb_per_s", "throughput_eps", "warmup_messages", "drain_messages"] {
            assert!(row[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {row}");
        }
        let runs = row["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 1, "--quick: one round");
        assert!(runs.iter().all(|x| x["engine_barriers"].as_f64().is_some()), "{row}");
    }
}

#[test]
fn reaction_quick_leases_with_an_idle_lender() {
    let r = quick("reaction", &["idle lender", "idle lender, standby", "busy lender"]);
    assert_fields("reaction", &r, &["shards", "period_ms", "burst", "target_p99_us", "os_wake_up_us.p99", "results"]);
    let rows = r["results"].as_array().expect("results");
    assert_eq!(rows.len(), 3);
    for row in rows {
        // 100 bursts a quick run, each leasing anew once the last lessee retired (most do in a
        // release build on a quiet machine). A burst always overloads the home shard, so with
        // an idle lender the actor must scale out. A busy lender may rightly be refused: in a
        // debug build its background work can leave it no sooner than the home shard.
        let leases = row["leases"].as_f64().expect("leases");
        assert!(leases >= 1.0 || row["busy"] == true, "no lease in {row}");
        for k in ["scale_up_us.p50", "scale_up_us.p99", "lease_delivery_us.p99", "hot_latency_us.p99", "leases_unused"]
        {
            assert!(has(row, k), "{k} in {row}");
        }
    }
}

#[test]
fn skew_quick() {
    let r = quick("skew", &["lessor alone", "lessees allowed", "open loop at 1.3x"]);
    assert_fields("skew", &r, &["shards", "events", "open_loop_events", "rounds", "hot_keys", "keys", "results"]);
    let rows = r["results"].as_array().expect("results");
    assert_eq!(rows.iter().map(|m| m["max_lessees"].as_u64()).collect::<Vec<_>>(), [Some(0), Some(1)]);
    for row in rows {
        for k in ["closed_loop_eps", "offered_eps", "throughput_eps", "p50_us", "p99_us", "satisfaction", "forwarded"] {
            assert!(row[k].as_f64().is_some(), "{k} in {row}");
        }
    }
}

#[test]
fn tcp_ingress_quick_compares_both_receive_paths() {
    let r = quick("tcp-ingress", &["recv", "uring"]);
    assert_fields("tcp-ingress", &r, &["events", "batch", "repeats", "runs", "medians", "ratios.events_per_s"]);
    let paths: Vec<&str> = r["medians"].as_array().expect("medians").iter().filter_map(|m| m["io"].as_str()).collect();
    assert_eq!(paths, ["recv", "uring"]);
    for m in r["medians"].as_array().expect("medians") {
        assert!(m["events_per_s"].as_f64().is_some_and(|x| x > 0.0), "{m}");
        assert!(m["engine_cpu_ns_per_event"].as_f64().is_some_and(|x| x > 0.0), "{m}");
        assert!(m["lone_latency_us"]["p50"].as_f64().is_some_and(|x| x > 0.0), "{m}");
    }
}

#[test]
fn redis_quick_measures_sink_and_source_against_redis_benchmark() {
    let r = quick("redis", &["redis-benchmark xadd", "sink write-through", "sink staged", "source", "ratio to xadd"]);
    assert_fields("redis", &r, &["entries", "rounds", "staged_epoch_records", "xadd_benchmark", "runs", "medians"]);
    let measures: Vec<&str> =
        r["medians"].as_array().expect("medians").iter().filter_map(|m| m["measure"].as_str()).collect();
    assert_eq!(
        measures,
        [
            "redis-benchmark xadd",
            "redis-benchmark xadd, 1 connection",
            "sink write-through",
            "sink staged",
            "commit_staged alone",
            "source"
        ]
    );
    for m in r["medians"].as_array().expect("medians") {
        assert!(m["entries_per_s"].as_f64().is_some_and(|x| x > 0.0), "{m}");
        assert!(m["ratio_to_xadd"].as_f64().is_some_and(|x| x > 0.0), "{m}");
    }
    assert_eq!(r["medians"][0]["ratio_to_xadd"], 1.0);
}

#[test]
fn snapshots_quick_measures_size_duration_recovery_and_w1() {
    let r = quick("snapshots", &["snapshot", "recovery start", "fresh start", "bytes"]);
    assert_fields("snapshots", &r, &["state", "w1_runs", "w1_medians"]);
    let state = r["state"].as_array().expect("state");
    assert_eq!(state.len(), 2);
    for s in state {
        assert!(s["bytes"].as_u64().is_some_and(|b| b > 0), "a snapshot held the state: {s}");
        assert!(s["resumed_from"].as_u64().is_some_and(|e| e > 0), "the second run resumed: {s}");
        assert!(s["recovery_start_ms"].as_f64().is_some_and(|x| x > 0.0), "{s}");
        assert!(s["peak_rss_mb"].as_f64().is_some_and(|x| x > 0.0), "{s}");
    }
    assert!(state[1]["bytes"].as_u64() > state[0]["bytes"].as_u64(), "more keys, larger snapshots");
    let loads: Vec<&str> =
        r["w1_medians"].as_array().expect("medians").iter().filter_map(|m| m["load"].as_str()).collect();
    assert_eq!(loads, ["max", "200k/s", "200k/s, app on 1 core"]);
    for m in r["w1_medians"].as_array().expect("medians") {
        assert!(m["throughput_ratio"].as_f64().is_some_and(|x| x > 0.0), "{m}");
    }
}
