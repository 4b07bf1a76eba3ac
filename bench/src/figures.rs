//! One figure per scenario, drawn from the `results` object of its JSON document (so a figure can
//! be redrawn from a saved file with `--plot-only`). Field names are those of `bench/README.md`.

use serde_json::Value;

use crate::plot::{Panel, Series};

/// The panels of `scenario`'s figure, from its `results`.
pub fn panels(scenario: &str, r: &Value) -> Vec<Panel> {
    match scenario {
        "keyed-count" => keyed_count(r),
        "mailbox" => mailbox(r),
        "idle" => idle(r),
        "hooks" => hooks(r),
        "tenants" => tenants(r),
        "nexmark" => nexmark(r),
        "slo" => crate::slo::figure(r),
        "scaling" => crate::scaling::figure(r),
        "scale" => crate::scale::figure(r),
        "hops" => crate::hops::figure(r),
        "reaction" => crate::reaction::figure(r),
        "barrier" => crate::barrier::figure(r),
        "skew" => skew(r),
        "tcp-ingress" => tcp_ingress(r),
        "snapshots" => crate::snapshots::figure(r),
        "redis" => crate::redis_streams::figure(r),
        _ => Vec::new(),
    }
}

/// The rows of an array field (empty when absent).
pub fn rows<'a>(r: &'a Value, key: &str) -> &'a [Value] {
    r[key].as_array().map_or(&[], Vec::as_slice)
}

/// A number (NaN when absent or null).
pub fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The distinct values of a string field over `rows`, in first-seen order.
pub fn distinct(rows: &[Value], key: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for s in rows.iter().filter_map(|r| r[key].as_str()) {
        if !v.iter().any(|x| x == s) {
            v.push(s.to_owned());
        }
    }
    v
}

fn keyed_count(r: &Value) -> Vec<Panel> {
    let medians = rows(r, "medians");
    let systems = distinct(medians, "system");
    let max: Vec<Series<f64>> = systems
        .iter()
        .map(|s| {
            let row = medians.iter().find(|m| m["system"] == s.as_str() && m["load"] == "max");
            Series::new(s.clone(), vec![row.map_or(f64::NAN, |m| num(&m["throughput_eps"]))])
        })
        .collect();
    let throughput = Panel::bars("max throughput (closed loop)", "events/s", vec!["W1, 2 shards".into()], max);
    let rates: Vec<u64> = {
        let mut v: Vec<u64> =
            medians.iter().filter(|m| m["load"] == "rate").filter_map(|m| m["offered_eps"].as_u64()).collect();
        v.dedup();
        v
    };
    let categories: Vec<String> =
        rates.iter().flat_map(|e| ["p50", "p99"].map(|p| format!("{p} @ {}k/s", e / 1000))).collect();
    let latency = systems
        .iter()
        .map(|s| {
            let values = rates.iter().flat_map(|&e| {
                let row = medians.iter().find(|m| m["system"] == s.as_str() && m["offered_eps"] == e);
                ["p50", "p99"].map(|p| row.map_or(f64::NAN, |m| num(&m["latency_us"][p])))
            });
            Series::new(s.clone(), values.collect())
        })
        .collect();
    let latency = Panel::bars("latency at fixed rates (open loop)", "µs", categories, latency).log();
    vec![throughput, latency]
}

fn mailbox(r: &Value) -> Vec<Panel> {
    let medians = rows(r, "medians");
    let modes = distinct(medians, "mode");
    let paths = distinct(medians, "path");
    let series = |p: &str| -> Vec<Series<f64>> {
        paths
            .iter()
            .map(|path| {
                let v = modes.iter().map(|m| {
                    let row = medians.iter().find(|x| x["path"] == path.as_str() && x["mode"] == m.as_str());
                    row.map_or(f64::NAN, |x| num(&x["rtt_us"][p]))
                });
                Series::new(path.clone(), v.collect())
            })
            .collect()
    };
    vec![
        Panel::bars("round trip p50", "µs", modes.clone(), series("p50")).log(),
        Panel::bars("round trip p99", "µs", modes.clone(), series("p99")).log(),
    ]
}

fn idle(r: &Value) -> Vec<Panel> {
    let medians = rows(r, "medians");
    let label = |m: &Value| {
        let spin = format!("spin {}", m["spin"].as_str().unwrap_or(""));
        m["variant"].as_str().map_or(spin.clone(), |v| format!("{v}, {spin}"))
    };
    let cpu = Series::new("cpu % of a core", medians.iter().map(|m| num(&m["cpu_percent"])).collect());
    let target = Series::new("target", vec![num(&r["target_cpu_percent"]); medians.len()]);
    vec![Panel::bars("idle engine", "% of one core", medians.iter().map(label).collect(), vec![cpu, target])]
}

fn hooks(r: &Value) -> Vec<Panel> {
    let policies = rows(r, "policies");
    let names = distinct(policies, "policy");
    let per_msg = Series::new("ns per message", policies.iter().map(|p| num(&p["ns_per_message"])).collect());
    let added = Series::new("ns added vs bare", policies.iter().map(|p| num(&p["added_ns"]).max(0.0)).collect());
    vec![
        Panel::bars("CPU per message", "ns", names.clone(), vec![per_msg]),
        Panel::bars("added by the policy's hooks", "ns", names, vec![added]),
    ]
}

fn tenants(r: &Value) -> Vec<Panel> {
    let results = rows(r, "results");
    let policies = distinct(results, "policy");
    let apps = distinct(results, "app");
    let series = |key: &str, scale: f64| -> Vec<Series<f64>> {
        apps.iter()
            .map(|a| {
                let v = policies.iter().map(|p| {
                    let row = results.iter().find(|x| x["app"] == a.as_str() && x["policy"] == p.as_str());
                    row.map_or(f64::NAN, |x| num(&x[key]) * scale)
                });
                Series::new(a.clone(), v.collect())
            })
            .collect()
    };
    vec![
        Panel::bars("outputs within SLO", "%", policies.clone(), series("satisfaction", 100.0)),
        Panel::bars("p99 latency", "µs", policies.clone(), series("p99_us", 1.0)).log(),
    ]
}

fn nexmark(r: &Value) -> Vec<Panel> {
    let queries = rows(r, "queries");
    let names = distinct(queries, "query");
    let dirigo = Series::new("dirigo (2 shards)", queries.iter().map(|q| num(&q["events_per_s"])).collect());
    let mut series = vec![dirigo];
    if queries.iter().any(|q| q["reference_events_per_s"].is_number()) {
        let v = queries.iter().map(|q| num(&q["reference_events_per_s"])).collect();
        series.push(Series::new("sequential reference (1 thread)", v));
    }
    if queries.iter().any(|q| q["parallel_reference_events_per_s"].is_number()) {
        let v = queries.iter().map(|q| num(&q["parallel_reference_events_per_s"])).collect();
        series.push(Series::new("reference on 2 threads at once", v));
    }
    let p50 = Series::new("p50", queries.iter().map(|q| num(&q["latency_us"]["p50"])).collect());
    let p99 = Series::new("p99", queries.iter().map(|q| num(&q["latency_us"]["p99"])).collect());
    vec![
        Panel::bars("throughput per query", "events/s", names.clone(), series),
        Panel::bars("dirigo latency per query", "µs", names, vec![p50, p99]).log(),
    ]
}

fn skew(r: &Value) -> Vec<Panel> {
    let results = rows(r, "results");
    let per_mode = |keys: &[&str], scale: f64| -> Vec<Series<f64>> {
        let name = |m: &Value| m["mode"].as_str().unwrap_or("").to_owned();
        results.iter().map(|m| Series::new(name(m), keys.iter().map(|k| num(&m[*k]) * scale).collect())).collect()
    };
    let throughput = ["closed loop", "open loop at 1.3x"].map(String::from).to_vec();
    let latency = ["p50", "p99"].map(String::from).to_vec();
    vec![
        Panel::bars("throughput", "events/s", throughput, per_mode(&["closed_loop_eps", "throughput_eps"], 1.0)),
        Panel::bars("latency at 1.3x lessor-alone capacity", "µs", latency, per_mode(&["p50_us", "p99_us"], 1.0)).log(),
        Panel::bars("outputs within SLO", "%", vec!["open loop".into()], per_mode(&["satisfaction"], 100.0)),
    ]
}

fn tcp_ingress(r: &Value) -> Vec<Panel> {
    let medians = rows(r, "medians");
    let paths = distinct(medians, "io");
    let one = |name: &str, f: &dyn Fn(&Value) -> f64| vec![Series::new(name, medians.iter().map(f).collect())];
    let latency = ["p50", "p90"]
        .map(|p| Series::new(p, medians.iter().map(|m| num(&m["lone_latency_us"][p])).collect()))
        .to_vec();
    vec![
        Panel::bars(
            "tcp source -> null sink",
            "events/s",
            paths.clone(),
            one("events/s", &|m| num(&m["events_per_s"])),
        ),
        Panel::bars(
            "engine CPU per event",
            "ns",
            paths.clone(),
            one("ns/event", &|m| num(&m["engine_cpu_ns_per_event"])),
        ),
        Panel::bars("a lone event's latency", "µs", paths, latency),
    ]
}
