//! `dirigo serve` end to end, through its admin HTTP endpoint and CLI clients: apps deployed and
//! undeployed beside a running app (whose output stays exactly that of its run alone), `/metrics`
//! read by a Prometheus text parser, each bad request answered with its 4xx while the service
//! keeps serving, an idle server's CPU, and the dashboard in headless Chromium.
//!
//! Nothing waits on a sleep: every wait polls a condition up to a deadline.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{dirigo, output, stderr, temp_dir};

const WAIT: Duration = Duration::from_secs(60);

/// A running `dirigo serve`; stopped with SIGINT (drain) when dropped.
struct Server {
    child: Option<Child>,
    addr: String,
    dir: PathBuf,
}

impl Server {
    /// Serve `config` (its text) from a fresh directory; `env` is added to the environment.
    fn start(tag: &str, config: &str, env: &[(&str, &str)]) -> Server {
        let dir = temp_dir(tag);
        let path = dir.join("server.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = dirigo();
        cmd.args(["serve", path.to_str().expect("utf-8"), "--json"]).current_dir(&dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("server.err")).expect("stderr file"))
            .spawn()
            .expect("dirigo serve starts");
        // Its stdout is one JSON document, written once it listens.
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).expect("the server prints its address");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            let err = std::fs::read_to_string(dir.join("server.err")).unwrap_or_default();
            panic!("`{line}` is not JSON ({e}); stderr: {err}")
        });
        let addr = v["admin"].as_str().expect("admin address").to_owned();
        Server { child: Some(child), addr, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Stop it (SIGINT: sources end, everything drains) and wait for its exit.
    fn stop(&mut self) -> std::process::Output {
        let child = self.child.take().expect("running");
        // SAFETY: kill(2) on a child this test started and has not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        common::wait_all(vec![child], WAIT).remove(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP answer: status and body (an error status is an answer too).
fn http(req: ureq::Request, body: Option<&str>) -> (u16, String) {
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    match res {
        Ok(r) => (r.status(), r.into_string().expect("body")),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().expect("body")),
        Err(e) => panic!("transport error: {e}"),
    }
}

fn get(s: &Server, path: &str) -> (u16, String) {
    http(ureq::get(&s.url(path)), None)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Poll `f` until it returns Some, up to [`WAIT`].
fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The view of app `name` once `pred` holds for it.
fn app_when(s: &Server, name: &str, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    until(what, || {
        let (code, body) = get(s, &format!("/apps/{name}"));
        let v = (code == 200).then(|| json(&body))?;
        pred(&v).then_some(v)
    })
}

const SERVER: &str = "[engine]\nshards = 2\n[admin]\nlisten = \"127.0.0.1:0\"\n";

/// An app: a generator of `events` events (0: for an hour) at `rate`, counted per key, into a
/// file sink at `out`.
fn counting_app(name: &str, rate: u64, events: u64, out: &Path) -> String {
    let end = if events == 0 { "duration = \"1h\"".to_owned() } else { format!("events = {events}") };
    format!(
        r#"[[app]]
name = "{name}"
slo = "50ms"
schema = {{ k = "u64", v = "u64" }}

[[app.source]]
name = "gen"
kind = "generator"
rate = {rate}
{end}
keys = 16

[[app.function]]
name = "cnt"
kind = "count"
input = "gen"
key = "k"

[[app.sink]]
name = "out"
kind = "file"
input = "cnt"
path = "{}"
"#,
        out.display()
    )
}

fn sorted_lines(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(p).expect("sink file").lines().map(str::to_owned).collect();
    v.sort();
    v
}

#[test]
fn apps_deploy_and_undeploy_beside_a_running_app_whose_output_stays_whole() {
    // The running app alone, under `dirigo run`.
    let dir = temp_dir("service-alone");
    let alone_out = dir.join("alone.ndjson");
    let cfg = dir.join("alone.toml");
    std::fs::write(&cfg, format!("[engine]\nshards = 2\n{}", counting_app("steady", 4000, 12_000, &alone_out)))
        .unwrap();
    let out = output(dirigo().args(["run", cfg.to_str().unwrap(), "--quiet"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let alone = sorted_lines(&alone_out);
    assert_eq!(alone.len(), 12_000);

    // The same app served, with others deployed and undeployed while it runs, and key groups
    // moving between the shards all the while (every 200 messages a shard runs).
    let moving = SERVER.replace("shards = 2\n", "shards = 2\nmigrate_every = 200\n");
    let mut s = Server::start("service-deploy", &moving, &[]);
    let steady_out = s.dir.join("steady.ndjson");
    let (code, body) = http(ureq::post(&s.url("/apps")), Some(&counting_app("steady", 4000, 12_000, &steady_out)));
    assert_eq!(code, 201, "{body}");
    assert_eq!(json(&body)["state"], "running");
    let mut undeployed = Vec::new();
    for round in 0..2 {
        let name = format!("burst{round}");
        let path = s.dir.join(format!("{name}.ndjson"));
        let app = s.dir.join(format!("{name}.toml"));
        std::fs::write(&app, counting_app(&name, 20_000, 0, &path)).unwrap();
        // Through the CLI client, human output.
        let out = output(dirigo().args(["deploy", &s.addr, app.to_str().unwrap()]));
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("deployed {name}")));
        app_when(&s, &name, "output of the deployed app", |v| v["events_out"].as_u64() > Some(1_000));
        let steady = app_when(&s, "steady", "steady listed", |_| true);
        assert_eq!(steady["state"], "running", "the steady app still runs while {name} is deployed");
        // Undeploy waits until it drained: every event its source produced reached its sink.
        let out = output(dirigo().args(["undeploy", &s.addr, &name, "--json"]));
        assert!(out.status.success(), "{}", stderr(&out));
        let v = json(String::from_utf8_lossy(&out.stdout).trim());
        assert_eq!(v["state"], "undeployed");
        let (ins, outs) = (v["events_in"].as_u64().unwrap(), v["events_out"].as_u64().unwrap());
        assert!(ins > 1_000);
        assert_eq!(ins, outs, "{name}: an undeployed app's accepted events are all processed");
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count() as u64, outs, "{name}'s sink file");
        undeployed.push(name);
    }
    let out = output(dirigo().args(["apps", &s.addr, "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = json(String::from_utf8_lossy(&out.stdout).trim());
    let states: Vec<(String, String)> = listed["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap().to_owned(), a["state"].as_str().unwrap().to_owned()))
        .collect();
    for name in &undeployed {
        assert!(states.contains(&(name.clone(), "undeployed".to_owned())), "{states:?}");
    }
    // Groups of the served apps moved (the metrics count them per function).
    let (code, text) = get(&s, "/metrics");
    assert_eq!(code, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("metrics");
    let forced: f64 = scrape
        .samples
        .iter()
        .filter(|x| x.metric == "dirigo_function_migrations_total" && x.labels.get("reason") == Some("forced"))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(n) => n,
            _ => 0.0,
        })
        .sum();
    assert!(forced > 0.0, "key groups of served apps moved");
    // The steady app ends by itself; its output equals its run alone.
    let v = app_when(&s, "steady", "the steady app to finish", |v| v["state"] == "finished");
    assert_eq!(v["events_out"].as_u64(), Some(12_000));
    assert_eq!(sorted_lines(&steady_out), alone, "the running app's output equals its run alone");
    let out = s.stop();
    assert!(out.status.success(), "the server stops cleanly on SIGINT");
}

#[test]
fn metrics_are_prometheus_text_with_every_family() {
    let s = Server::start("service-metrics", SERVER, &[]);
    let out = s.dir.join("m.ndjson");
    let (code, body) = http(ureq::post(&s.url("/apps")), Some(&counting_app("m", 5000, 0, &out)));
    assert_eq!(code, 201, "{body}");
    let families = [
        ("dirigo_app_events_in_total", "app"),
        ("dirigo_app_events_out_total", "app"),
        ("dirigo_app_latency_seconds", "app"),
        ("dirigo_app_slo_satisfaction", "app"),
        ("dirigo_app_slo_seconds", "app"),
        ("dirigo_app_cpu_seconds_total", "app"),
        ("dirigo_app_hosted_shard_seconds_total", "app"),
        ("dirigo_app_lessor_blocked_seconds_total", "app"),
        ("dirigo_app_lessor_critical_seconds_total", "app"),
        ("dirigo_shard_busy_seconds_total", "shard"),
        ("dirigo_shard_parked_seconds_total", "shard"),
        ("dirigo_shard_spinning_seconds", "shard"),
        ("dirigo_shard_batches_out_total", "shard"),
        ("dirigo_shard_envelopes_out_total", "shard"),
        ("dirigo_shard_queue_length", "shard"),
        ("dirigo_shard_key_groups", "shard"),
        ("dirigo_function_lessees", "function"),
        ("dirigo_function_migrations_total", "function"),
        ("dirigo_function_stalls_total", "function"),
        ("dirigo_function_lessor_blocked_seconds_total", "function"),
        ("dirigo_function_lessor_critical_seconds_total", "function"),
    ];
    let scrape = until("every metric family", || {
        let (code, text) = get(&s, "/metrics");
        assert_eq!(code, 200);
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
        let has = |name: &str, label: &str| {
            scrape.samples.iter().any(|x| x.metric.starts_with(name) && x.labels.get(label).is_some())
        };
        families.iter().all(|(n, l)| has(n, l)).then_some(scrape)
    });
    let value = |name: &str| {
        scrape.samples.iter().find(|x| x.metric == name && x.labels.get("app") == Some("m")).map(|x| x.value.clone())
    };
    match value("dirigo_app_events_out_total") {
        Some(prometheus_parse::Value::Counter(n)) => assert!(n > 0.0),
        other => panic!("events out: {other:?}"),
    }
    let hist = scrape.samples.iter().find(|x| x.metric == "dirigo_app_latency_seconds");
    assert!(matches!(hist.map(|h| &h.value), Some(prometheus_parse::Value::Histogram(_))), "{hist:?}");
    match value("dirigo_app_slo_satisfaction") {
        Some(prometheus_parse::Value::Gauge(x)) => assert!((0.0..=1.0).contains(&x)),
        other => panic!("satisfaction: {other:?}"),
    }
    // The keyed count holds the app's key groups on the shard it was placed on.
    let groups: f64 = scrape
        .samples
        .iter()
        .filter(|x| x.metric == "dirigo_shard_key_groups")
        .map(|x| match x.value {
            prometheus_parse::Value::Gauge(g) => g,
            _ => 0.0,
        })
        .sum();
    assert!(groups > 0.0, "key groups hosted");
}

#[test]
fn each_bad_request_gets_its_4xx_and_the_service_keeps_serving() {
    let token_dir = temp_dir("service-token");
    let token_file = token_dir.join("admin.token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let config = format!(
        "[engine]\nshards = 2\n[admin]\nlisten = \"127.0.0.1:0\"\nmax_body = \"4KiB\"\ntoken_file = \"{}\"\n",
        token_file.display()
    );
    let s = Server::start("service-bad", &config, &[]);
    let auth = |r: ureq::Request| r.set("Authorization", "Bearer s3cret-token");
    let good = || {
        let (code, body) = http(auth(ureq::get(&s.url("/apps"))), None);
        assert_eq!(code, 200, "a good request is still served: {body}");
        json(&body)
    };
    let out = s.dir.join("ok.ndjson");
    let (code, body) = http(auth(ureq::post(&s.url("/apps"))), Some(&counting_app("ok", 2000, 0, &out)));
    assert_eq!(code, 201, "{body}");
    let error = |code_want: u16, (code, body): (u16, String), what: &str| -> serde_json::Value {
        assert_eq!(code, code_want, "{what}: {body}");
        let v = json(&body);
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: a JSON error: {body}");
        good();
        v
    };
    error(401, http(ureq::get(&s.url("/apps")), None), "no token");
    error(401, http(ureq::get(&s.url("/apps")).set("Authorization", "Bearer s3cret-tokeX"), None), "wrong token");
    error(401, http(ureq::get(&s.url("/metrics")).set("Authorization", "Bearer s3cret"), None), "short token");
    let v = error(400, http(auth(ureq::post(&s.url("/apps"))), Some("[[app]]\nname = \"x\nslo = 1\n")), "bad TOML");
    assert_eq!((v["line"].as_u64(), v["column"].is_u64()), (Some(2), true), "{v}");
    let bad_input =
        counting_app("y", 10, 10, &s.dir.join("y.ndjson")).replace("input = \"cnt\"", "input = \"nowhere\"");
    let v = error(400, http(auth(ureq::post(&s.url("/apps"))), Some(&bad_input)), "unknown input");
    assert_eq!((v["line"].as_u64(), v["column"].as_u64()), (Some(22), Some(9)), "{v}");
    assert!(v["error"].as_str().unwrap().contains("nowhere"), "{v}");
    let engine = format!("[engine]\nshards = 1\n{}", counting_app("z", 10, 10, &s.dir.join("z.ndjson")));
    error(400, http(auth(ureq::post(&s.url("/apps"))), Some(&engine)), "a server section in a deploy");
    error(400, http(auth(ureq::post(&s.url("/apps"))), Some("")), "no app");
    error(409, http(auth(ureq::post(&s.url("/apps"))), Some(&counting_app("ok", 10, 10, &out))), "duplicate name");
    let big = format!("{}\n# {}\n", counting_app("big", 10, 10, &s.dir.join("b.ndjson")), "x".repeat(8 * 1024));
    error(413, http(auth(ureq::post(&s.url("/apps"))), Some(&big)), "oversized body");
    error(404, http(auth(ureq::delete(&s.url("/apps/nope"))), None), "undeploy an unknown app");
    error(404, http(auth(ureq::get(&s.url("/apps/nope"))), None), "an unknown app");
    error(404, http(auth(ureq::get(&s.url("/nope"))), None), "an unknown endpoint");
    error(405, http(auth(ureq::put(&s.url("/apps"))), Some("")), "a wrong method");
    // Failed deploys left the running app untouched: it runs and its output grows.
    let (code, body) = http(auth(ureq::get(&s.url("/apps/ok"))), None);
    assert_eq!(code, 200);
    let before = json(&body);
    assert_eq!(before["state"], "running");
    let before = before["events_out"].as_u64().unwrap();
    until("the running app to keep producing", || {
        let (_, body) = http(auth(ureq::get(&s.url("/apps/ok"))), None);
        (json(&body)["events_out"].as_u64().unwrap() > before).then_some(())
    });
    let apps = good();
    assert_eq!(apps["apps"].as_array().unwrap().len(), 1, "only the good app was deployed: {apps}");
    // And a good deploy after all that.
    let (code, body) =
        http(auth(ureq::post(&s.url("/apps"))), Some(&counting_app("ok2", 10, 10, &s.dir.join("o.ndjson"))));
    assert_eq!(code, 201, "{body}");
}

#[test]
fn a_non_loopback_admin_address_requires_a_token() {
    let dir = temp_dir("service-open");
    let cfg = dir.join("open.toml");
    std::fs::write(&cfg, "[admin]\nlisten = \"0.0.0.0:0\"\n").unwrap();
    let out = output(dirigo().args(["serve", cfg.to_str().unwrap()]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("open.toml:2:10") && err.contains("`token_file` or `token_env`"), "{err}");
}

/// CPU time (user + system) of process `pid` so far, in seconds, from /proc.
fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the state (field 3).
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

#[test]
fn an_idle_server_uses_under_one_percent_of_a_core() {
    let s = Server::start("service-idle", SERVER, &[]);
    // Measure the server at rest: once every shard is up (its start-up is not idling).
    until("every shard to be up", || (get(&s, "/healthz").0 == 200).then_some(()));
    let (code, _) = get(&s, "/apps");
    assert_eq!(code, 200);
    let (cpu0, t0) = (proc_cpu_seconds(s.pid()), Instant::now());
    // A measurement window, not a synchronisation.
    std::thread::sleep(Duration::from_secs(5));
    let (cpu, wall) = (proc_cpu_seconds(s.pid()) - cpu0, t0.elapsed().as_secs_f64());
    let share = cpu / wall;
    eprintln!("idle server: {cpu:.3} CPU-seconds over {wall:.2} s = {:.3}% of a core", share * 100.0);
    assert!(share < 0.01, "an idle server used {:.2}% of a core", share * 100.0);
    // And the metrics say so: each shard spent more of its life parked than spinning.
    let (_, text) = get(&s, "/metrics");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("metrics");
    let per_shard = |name: &str, shard: &str| {
        scrape
            .samples
            .iter()
            .find(|x| x.metric == name && x.labels.get("shard") == Some(shard))
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(n) | prometheus_parse::Value::Gauge(n) => n,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} of shard {shard} in {text}"))
    };
    for shard in ["0", "1"] {
        let (parked, spinning) =
            (per_shard("dirigo_shard_parked_seconds_total", shard), per_shard("dirigo_shard_spinning_seconds", shard));
        assert!(parked > spinning, "shard {shard}: parked {parked} s, spinning {spinning} s");
    }
}

#[test]
fn the_dashboard_shows_the_apps_and_updates_in_headless_chromium() {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| std::process::Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .unwrap_or_else(|| {
            panic!(
                "this test needs Chromium: run ./test.sh (it installs Debian's `chromium` when missing), \
                 or `apt-get install -y chromium` as root"
            )
        });
    let s = Server::start("service-dashboard", SERVER, &[]);
    for name in ["alpha", "beta"] {
        let path = s.dir.join(format!("{name}.ndjson"));
        let (code, body) = http(ureq::post(&s.url("/apps")), Some(&counting_app(name, 3000, 0, &path)));
        assert_eq!(code, 201, "{body}");
    }
    app_when(&s, "beta", "output", |v| v["events_out"].as_u64() > Some(0));
    let profile = s.dir.join("chromium-profile");
    let browse = |extra: &[String]| {
        let mut cmd = std::process::Command::new(chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(s.url("/"));
        let out = output(&mut cmd);
        assert!(out.status.success(), "chromium: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status = |dom: &str| -> String {
        let i = dom.find("id=\"status\">").expect("status line") + "id=\"status\">".len();
        dom[i..i + dom[i..].find('<').expect("end")].to_owned()
    };
    let first = browse(&["--dump-dom".into()]);
    for name in ["alpha", "beta"] {
        assert!(first.contains(&format!("<tr data-app=\"{name}\" data-state=\"running\">")), "{name} in: {first}");
    }
    assert!(status(&first).contains("2 app(s) on 2 shard(s)"), "{}", status(&first));
    let shot = s.dir.join("dashboard.png");
    browse(&["--window-size=1200,900".into(), format!("--screenshot={}", shot.display())]);
    assert!(std::fs::metadata(&shot).expect("screenshot").len() > 1000);
    eprintln!("dashboard screenshot: {}", shot.display());
    // It updates: a later load shows other figures.
    let second = until("the dashboard's figures to change", || {
        let dom = browse(&["--dump-dom".into()]);
        (status(&dom) != status(&first)).then_some(dom)
    });
    assert!(second.contains("data-app=\"alpha\""));
}
