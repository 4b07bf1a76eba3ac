//! The `dirigo` binary end to end: the quickstart's `--json` summary has every documented field,
//! and each kind of bad config is refused with its file, line and key.

mod common;

use std::path::{Path, PathBuf};

use common::{dirigo, output, stderr};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

fn temp_config(name: &str, text: &str) -> PathBuf {
    let p = common::temp_dir("cli").join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

#[test]
fn quickstart_json_summary_has_every_field() {
    let args = ["run", "configs/quickstart.toml", "--json", "--quiet", "--duration", "1500ms"];
    let out = output(dirigo().current_dir(repo()).args(args));
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf-8");
    // With --json, stdout is one JSON document whatever the sinks print (they go to stderr).
    assert_eq!(stdout.lines().count(), 1, "stdout: {stdout}");
    let last = stdout.trim_end();
    let v: serde_json::Value = serde_json::from_str(last).expect("stdout is one JSON object");
    assert!(v["cpu_seconds"].as_f64().expect("cpu_seconds") > 0.0);
    let app = &v["apps"][0];
    assert_eq!(app["name"], "bids");
    for k in ["events_in", "events_out"] {
        assert!(app[k].as_u64().expect(k) > 0, "{k}");
    }
    for k in ["throughput_eps", "slo_us", "satisfaction"] {
        assert!(app[k].as_f64().is_some(), "{k}");
    }
    for k in ["p50", "p90", "p99", "p999", "max"] {
        assert!(app["latency_us"][k].as_f64().expect(k) > 0.0, "latency_us.{k}");
    }
    assert_eq!(app["slo_us"].as_f64(), Some(5000.0));
    // The window is a dual-mode actor: its shards are occupied, and watermarks crossing window
    // ends are barriers.
    assert!(app["shard_seconds"].as_f64().expect("shard_seconds") > 0.0);
    let actors = &app["actors"];
    assert!(actors["barriers"].as_u64().expect("actors.barriers") > 0);
    for k in ["lessees_peak", "lessees_created", "lessees_retired", "forwarded", "refused", "partial_bytes"] {
        assert!(actors[k].as_u64().is_some(), "actors.{k}");
    }
    for k in ["blocked_ms", "critical_ms"] {
        assert!(actors[k].as_f64().is_some(), "actors.{k}");
    }
    for k in ["barrier_us", "scale_up_us", "lease_delivery_us"] {
        assert!(actors[k]["p99"].as_f64().is_some(), "actors.{k}.p99");
    }
    assert!(actors["lessees_over_time"].as_array().is_some() && actors["functions"].as_array().is_some());
    // The stdout sink's NDJSON result lines went to stderr, each one the window's schema.
    let err = stderr(&out);
    let results: Vec<&str> = err.lines().filter(|l| l.starts_with('{')).collect();
    assert!(!results.is_empty(), "the stdout sink's records are on stderr: {err}");
    for line in results {
        let r: serde_json::Value = serde_json::from_str(line).expect("ndjson");
        assert!(r["window_end"].as_u64().is_some() && r["max"].as_u64().is_some(), "{line}");
    }
}

#[test]
fn every_shipped_config_checks() {
    for entry in std::fs::read_dir(repo().join("configs")).expect("configs/") {
        let p = entry.expect("entry").path();
        let out = output(dirigo().current_dir(repo()).arg("check").arg(&p));
        assert!(out.status.success(), "{}: {}", p.display(), stderr(&out));
    }
}

const GOOD: &str = r#"
[[app]]
name = "a"
slo = "1ms"
schema = { k = "u64", v = "u64" }

[[app.source]]
name = "in"
kind = "generator"
events = 10

[[app.function]]
name = "f"
kind = "filter"
input = "in"
predicate = "v > 1"

[[app.sink]]
name = "out"
kind = "null"
input = "f"
"#;

/// `dirigo check` on `GOOD` with `from` replaced by `to` fails, naming the line and saying `what`.
fn refuses(from: &str, to: &str, line: usize, what: &[&str]) {
    assert!(GOOD.contains(from), "{from}");
    let p = temp_config("bad.toml", &GOOD.replacen(from, to, 1));
    let out = output(dirigo().arg("check").arg(&p));
    assert!(!out.status.success(), "{to} was accepted");
    let err = stderr(&out);
    let at = format!("{}:{line}:", p.display());
    assert!(err.contains(&at), "expected {at} in: {err}");
    for w in what {
        assert!(err.contains(w), "expected `{w}` in: {err}");
    }
}

#[test]
fn bad_configs_name_file_line_and_key() {
    assert!(output(dirigo().arg("check").arg(temp_config("good.toml", GOOD))).status.success());
    refuses("slo = \"1ms\"", "slo = \"1ms\"\nsurprise = 1", 5, &["surprise"]);
    refuses("events = 10", "events = \"ten\"", 10, &["events"]);
    refuses("input = \"in\"", "input = \"nowhere\"", 15, &["nowhere", "input"]);
    refuses("predicate = \"v > 1\"", "predicate = \"w > 1\"", 16, &["predicate", "w"]);
    refuses("kind = \"filter\"", "kind = \"teleport\"", 14, &["teleport", "filter"]);
    refuses("v = \"u64\"", "v = \"u65\"", 5, &["u65"]);
    refuses("input = \"f\"", "input = \"out\"", 21, &["out"]);
}

#[test]
fn a_cycle_is_named() {
    let cyclic = GOOD.replacen("input = \"in\"", "input = \"g\"", 1)
        + "\n[[app.function]]\nname = \"g\"\nkind = \"filter\"\ninput = \"f\"\npredicate = \"v > 2\"\n";
    let p = temp_config("cycle.toml", &cyclic);
    let out = output(dirigo().arg("check").arg(&p));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("f -> g -> f") || err.contains("g -> f -> g"), "{err}");
}

#[test]
fn a_bad_tcp_limit_names_file_line_and_key() {
    let text = "[[app]]\nname = \"t\"\nslo = \"1s\"\nschema = { k = \"u64\" }\n\n[[app.source]]\nname = \"in\"\n\
                kind = \"tcp\"\nlisten = \"127.0.0.1:0\"\nmax_frame = \"9 parsecs\"\n\n[[app.sink]]\nname = \"out\"\n\
                kind = \"null\"\ninput = \"in\"\n";
    let p = temp_config("limits.toml", text);
    let out = output(dirigo().arg("check").arg(&p));
    assert!(!out.status.success(), "accepted");
    let err = stderr(&out);
    let at = format!("{}:10:13: app[0] \"t\" source \"in\" key `max_frame`: invalid size `9 parsecs`", p.display());
    assert!(err.contains(&at), "expected {at} in: {err}");
    let p = temp_config("limits-ok.toml", &text.replace("9 parsecs", "512KiB"));
    assert!(output(dirigo().arg("check").arg(&p)).status.success());
}

/// `dirigo check` binds nothing: it passes on a config whose tcp source and sink ports are in use
/// (by the engine it is checked for), and `run` still reports the busy port at its `listen` key.
#[test]
fn check_binds_no_port() {
    let source = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let sink = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let (a, b) = (source.local_addr().unwrap(), sink.local_addr().unwrap());
    let text = format!(
        "[[app]]\nname = \"t\"\nslo = \"1s\"\nschema = {{ k = \"u64\" }}\n\n[[app.source]]\nname = \"in\"\n\
         kind = \"tcp\"\nlisten = \"{a}\"\n\n[[app.sink]]\nname = \"out\"\nkind = \"tcp\"\ninput = \"in\"\n\
         listen = \"{b}\"\n"
    );
    let p = temp_config("busy-ports.toml", &text);
    let out = output(dirigo().arg("check").arg(&p));
    assert!(out.status.success(), "check failed beside bound ports: {}", stderr(&out));
    let out = output(dirigo().arg("run").arg(&p).args(["--duration", "1s"]));
    assert!(!out.status.success(), "run bound a busy port");
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:9:", p.display())) && err.contains("`listen`"), "{err}");
    // An address that cannot resolve is still an error of check.
    let p = temp_config("bad-addr.toml", &text.replace(&a.to_string(), "no-such-host.invalid:1"));
    assert!(!output(dirigo().arg("check").arg(&p)).status.success());
}

/// A tcp sink's `delivery` is block or lossy; anything else is named at its line.
#[test]
fn tcp_sink_delivery_is_checked() {
    let text = "[[app]]\nname = \"t\"\nslo = \"1s\"\nschema = { k = \"u64\" }\n\n[[app.source]]\nname = \"in\"\n\
                kind = \"generator\"\n\n[[app.sink]]\nname = \"out\"\nkind = \"tcp\"\ninput = \"in\"\n\
                listen = \"127.0.0.1:0\"\ndelivery = \"lossy\"\n";
    let p = temp_config("delivery.toml", text);
    let out = output(dirigo().arg("check").arg(&p));
    assert!(out.status.success(), "{}", stderr(&out));
    let p = temp_config("delivery-bad.toml", &text.replace("lossy", "sometimes"));
    let out = output(dirigo().arg("check").arg(&p));
    assert!(!out.status.success(), "accepted");
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:15:", p.display())) && err.contains("block, lossy"), "{err}");
}

/// A lossy tcp sink with no subscriber drops every output, and the run's summary counts them; a
/// block one (the default) drops nothing while the run lasts.
#[test]
fn a_lossy_tcp_sink_counts_its_drops_in_the_summary() {
    let text = "[[app]]\nname = \"t\"\nslo = \"1s\"\nschema = { k = \"u64\" }\n\n[[app.source]]\nname = \"in\"\n\
                kind = \"generator\"\nevents = 500\nrate = 0\n\n[[app.sink]]\nname = \"out\"\nkind = \"tcp\"\n\
                input = \"in\"\nlisten = \"127.0.0.1:0\"\ndelivery = \"lossy\"\n";
    let p = temp_config("lossy.toml", text);
    let out = output(dirigo().arg("run").arg(&p).args(["--json", "--quiet"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    let sink = &summary["apps"][0]["tcp_sinks"][0];
    assert_eq!(sink["name"], "out");
    assert_eq!(sink["delivery"], "lossy");
    assert_eq!(sink["dropped"], 500, "{summary}");
    assert!(stderr(&out).contains("records dropped"), "the drops are logged at warn");
}
