//! Multi-node clusters end to end: two and three `dirigo` processes on loopback, linked over
//! TCP, produce exactly the outputs of one node running the same plan (the same number of
//! shards), for the built-in functions; a dropped link is reported, re-established, and loses
//! or duplicates nothing; bad cluster configs and a missing peer are refused with clear errors.
//! Nodes prove they hold the cluster secret (each test node is given it either way: by
//! `secret_env` or by `secret_file`); a node with another secret is refused both ways, and the
//! nodes that share the secret run on without it.
//!
//! Every node writes its own sink files (`{node}` in the path); a cluster's output is the union
//! of its nodes' files, compared with the one-node run's as a sorted multiset of lines. Each key
//! lives on one shard, so a key's lines are also in the same order in exactly one file.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{dirigo, free_address, stderr, DEADLINE};

/// The environment variable test clusters name in `secret_env`.
const SECRET_ENV: &str = "DIRIGO_TEST_CLUSTER_SECRET";
/// The secret the test clusters share.
const SECRET: &str = "a secret only the test's nodes know";

/// Every sink's output lines, sorted, by sink name.
type Sinks = BTreeMap<String, Vec<String>>;

/// Input fields: `k` is the generator's key, `ts` its event time in ms (1000 events per ms).
const SCHEMA: &str = r#"{ k = "u64", a = "u64", b = "i64", x = "f64", flag = "bool", s = "string", ts = "u64" }"#;

/// The sinks of [`apps`], each written to `<dir>/<sink>-{node}.ndjson`.
const SINKS: [&str; 7] = ["counts", "sums", "keyed", "tumbling", "sliding", "pairs", "mapped"];

/// Two apps covering the built-ins: map, filter, key_by, keyed count, sum and avg, tumbling and
/// sliding windows, and a windowed join of two generators.
fn apps(dir: &Path) -> String {
    let sink = |name: &str, input: &str| {
        let path = dir.join(format!("{name}-{{node}}.ndjson"));
        format!(
            "[[app.sink]]\nname = \"{name}\"\nkind = \"file\"\ninput = \"{input}\"\npath = \"{}\"\n",
            path.display()
        )
    };
    let generator = |name: &str, events: u64, seed: u64| {
        format!(
            "[[app.source]]\nname = \"{name}\"\nkind = \"generator\"\nrate = 0\nevents = {events}\nkeys = 50\nseed = {seed}\n"
        )
    };
    let function = |name: &str, kind: &str, keys: &str| {
        format!("[[app.function]]\nname = \"{name}\"\nkind = \"{kind}\"\n{keys}\n")
    };
    // Each app on every shard of the cluster (cores above the shard count take them all), so
    // keys cross nodes: the links are what these tests are about.
    let mut t = format!(
        "[[app]]\nname = \"agg\"\nslo = \"50ms\"\ncores = 64\nschema = {SCHEMA}\nevent_time = \"ts\"\nwatermark_every = 250\n"
    );
    t += &generator("in", 3000, 7);
    t += &function(
        "m",
        "map",
        "input = \"in\"\nfields = { k = \"k\", a = \"a\", twice = \"a * 2 + k\", x = \"x\", ts = \"ts\" }",
    );
    t += &function("f", "filter", "input = \"m\"\npredicate = \"a % 3 != 0\"");
    t += &function("c", "count", "input = \"f\"\nkey = \"k\"");
    t += &function("s", "sum", "input = \"f\"\nkey = \"k\"\nfield = \"twice\"");
    t += &function("kb", "key_by", "input = \"in\"\nkey = \"s\"");
    t += &function("ka", "avg", "input = \"kb\"\nfield = \"x\"");
    t += &function(
        "tw",
        "window",
        "input = \"in\"\nkey = \"k\"\nwindow = { type = \"tumbling\", size = \"1ms\" }\naggregate = { op = \"max\", field = \"a\" }",
    );
    t += &function(
        "sw",
        "window",
        "input = \"in\"\nkey = \"k\"\nwindow = { type = \"sliding\", size = \"2ms\", slide = \"1ms\" }\naggregate = { op = \"count\" }",
    );
    t += &sink("mapped", "f");
    t += &sink("counts", "c");
    t += &sink("sums", "s");
    t += &sink("keyed", "ka");
    t += &sink("tumbling", "tw");
    t += &sink("sliding", "sw");
    t += &format!(
        "[[app]]\nname = \"join\"\nslo = \"50ms\"\ncores = 64\nschema = {SCHEMA}\nevent_time = \"ts\"\nwatermark_every = 100\n"
    );
    t += &generator("left", 1000, 1);
    t += &generator("right", 1000, 2);
    t += &function(
        "j",
        "join",
        "left = \"left\"\nright = \"right\"\nleft_key = \"k\"\nright_key = \"k\"\nwindow = { type = \"tumbling\", size = \"1ms\" }",
    );
    t += &sink("pairs", "j");
    t
}

/// A fresh directory for one run's config and outputs.
fn run_dir(tag: &str) -> PathBuf {
    common::temp_dir(&format!("cluster-{tag}"))
}

/// `[[node]]` tables for nodes `a`, `b`, ... with these shard counts, on free loopback ports.
fn nodes(shards: &[usize]) -> String {
    let mut t = String::new();
    for (i, s) in shards.iter().enumerate() {
        let id = (b'a' + i as u8) as char;
        t += &format!("[[node]]\nid = \"{id}\"\naddress = \"{}\"\nshards = {s}\n", free_address());
    }
    t
}

/// The `[cluster]` key by which node `i` reads the secret, each way in turn: the even nodes by
/// [`SECRET_ENV`], the odd ones by a file under `dir` (written here, newline-terminated).
fn secret_key(i: usize, dir: &Path) -> String {
    match i % 2 {
        0 => format!("secret_env = \"{SECRET_ENV}\"\n"),
        _ => {
            let file = dir.join("secret.key");
            std::fs::write(&file, format!("{SECRET}\n")).expect("secret file");
            format!("secret_file = \"{}\"\n", file.display())
        }
    }
}

/// `dirigo run --json --quiet --node ID CONFIG`, with `secret` in [`SECRET_ENV`] (None: unset).
fn node(id: &str, config: &Path, secret: Option<&str>) -> Command {
    let mut c = dirigo();
    c.args(["run", "--json", "--quiet", "--node", id]).arg(config);
    match secret {
        Some(s) => c.env(SECRET_ENV, s),
        None => c.env_remove(SECRET_ENV),
    };
    c
}

/// Shards share the CPUs with each other and with other nodes: unpinned.
fn engine(shards: usize) -> String {
    engine_with(shards, "")
}

/// [`engine`] with more `[engine]` keys.
fn engine_with(shards: usize, extra: &str) -> String {
    format!(
        "[engine]\nshards = {shards}\npin = false\n{extra}\n[cluster]\nconnect_timeout = \"20s\"\nreconnect_timeout = \"20s\"\n"
    )
}

/// The tests run their processes one test at a time: every node is a process with its own
/// shards and link threads, and several clusters at once on a small machine oversubscribe its
/// CPUs many times over (see "Fragile" in `docs/why-cluster-links.md`).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// [`common::run_all`] within [`DEADLINE`], one cluster at a time.
fn run_all(commands: Vec<Command>) -> Vec<Output> {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::run_all(commands, DEADLINE)
}

/// Every sink's lines over every file of `dir` (one per node), sorted.
fn outputs(dir: &Path) -> Sinks {
    let mut sinks: Sinks = SINKS.iter().map(|s| (s.to_string(), Vec::new())).collect();
    for entry in std::fs::read_dir(dir).expect("run dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let Some((sink, _node)) = name.strip_suffix(".ndjson").and_then(|n| n.split_once('-')) else { continue };
        let text = std::fs::read_to_string(&path).expect("sink file");
        sinks.get_mut(sink).expect("a known sink").extend(text.lines().map(str::to_owned));
    }
    sinks.values_mut().for_each(|v| v.sort_unstable());
    sinks
}

/// Events in and out over the `--json` summaries of every node.
fn totals(outs: &[Output]) -> (u64, u64) {
    let mut t = (0, 0);
    for o in outs {
        let text = String::from_utf8_lossy(&o.stdout);
        let v: serde_json::Value = serde_json::from_str(text.lines().last().expect("a summary")).expect("json summary");
        for app in v["apps"].as_array().expect("apps") {
            t.0 += app["events_in"].as_u64().expect("events_in");
            t.1 += app["events_out"].as_u64().expect("events_out");
        }
    }
    t
}

/// Run the apps on one node of `total` shards; its outputs and (events in, events out).
fn one_node(total: usize) -> (Sinks, (u64, u64)) {
    let dir = run_dir("one");
    let config = dir.join("one.toml");
    std::fs::write(&config, engine(total) + &apps(&dir)).expect("config");
    let outs = run_all(vec![{
        let mut c = dirigo();
        c.args(["run", "--json", "--quiet"]).arg(&config);
        c
    }]);
    assert!(outs[0].status.success(), "one node failed: {}", stderr(&outs[0]));
    let result = (outputs(&dir), totals(&outs));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Run the apps on a cluster of nodes with these shard counts (each node with `env` set, and
/// `engine` keys added to `[engine]`; each with its own config file, which differ only in how
/// they name the secret); the outputs, (events in, events out), and each node's stderr.
fn cluster(shards: &[usize], env: &[(&str, &str)], engine: &str) -> (Sinks, (u64, u64), Vec<String>) {
    let dir = run_dir("cluster");
    let (nodes, apps) = (nodes(shards), apps(&dir));
    let commands = (0..shards.len())
        .map(|i| {
            let id = ((b'a' + i as u8) as char).to_string();
            let config = dir.join(format!("cluster-{id}.toml"));
            std::fs::write(&config, engine_with(0, engine) + &secret_key(i, &dir) + &nodes + &apps).expect("config");
            let secret = (i % 2 == 0).then_some(SECRET);
            let mut c = node(&id, &config, secret);
            c.envs(env.iter().copied());
            c
        })
        .collect();
    let outs = run_all(commands);
    for (i, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "node {i} failed: {}", stderr(o));
        let text = String::from_utf8_lossy(&o.stdout);
        let summary: serde_json::Value = serde_json::from_str(text.lines().last().expect("summary")).expect("json");
        assert_eq!(summary["shards"].as_u64(), Some(shards[i] as u64), "node {i} reports its own shards");
    }
    let result = (outputs(&dir), totals(&outs), outs.iter().map(stderr).collect());
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The cluster's outputs are exactly the one-node run's, sink by sink.
fn assert_same(cluster: &Sinks, one: &Sinks) {
    for (sink, want) in one {
        assert!(!want.is_empty(), "sink {sink} produced nothing: the test would prove nothing");
        let got = &cluster[sink];
        if got != want {
            let first = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)).expect("a difference");
            panic!(
                "sink {sink}: {} lines on the cluster, {} on one node; first difference at sorted line {first}: {:?} vs {:?}",
                got.len(),
                want.len(),
                got.get(first),
                want.get(first)
            );
        }
    }
}

#[test]
fn two_nodes_give_the_outputs_of_one_node() {
    let (want, want_totals) = one_node(2);
    let (got, got_totals, _) = cluster(&[1, 1], &[], "");
    assert_same(&got, &want);
    assert_eq!(got_totals, want_totals, "(events in, events out) summed over the nodes");
}

#[test]
fn three_nodes_give_the_outputs_of_one_node() {
    let (want, want_totals) = one_node(4);
    let (got, got_totals, _) = cluster(&[1, 2, 1], &[], "");
    assert_same(&got, &want);
    assert_eq!(got_totals, want_totals, "(events in, events out) summed over the nodes");
}

#[test]
fn a_credit_window_of_two_small_batches_still_gives_the_outputs_of_one_node() {
    let (want, want_totals) = one_node(3);
    // Two batches of at most 8 envelopes in flight per channel: links stall on credit all along.
    let (got, got_totals, _) = cluster(&[2, 1], &[], "mailbox_batches = 2\nbatch_size = 8");
    assert_same(&got, &want);
    assert_eq!(got_totals, want_totals);
}

#[test]
fn a_dropped_link_is_reported_and_reestablished_without_loss() {
    let (want, want_totals) = one_node(3);
    // Every outbound link drops its connection once, after its third frame (kept, not written).
    let (got, got_totals, logs) = cluster(&[1, 1, 1], &[("DIRIGO_TEST_DROP_LINK", "3")], "");
    assert_same(&got, &want);
    assert_eq!(got_totals, want_totals);
    let all = logs.join("\n");
    assert!(all.contains("lost: dropped by the test hook DIRIGO_TEST_DROP_LINK; reconnecting"), "{all}");
    assert!(all.contains("re-established"), "{all}");
    assert!(all.contains("link to node "), "the log names the node and its address: {all}");
}

#[test]
fn a_missing_peer_is_named_when_the_cluster_does_not_come_up() {
    let dir = run_dir("missing");
    let config = dir.join("c.toml");
    let text = "[engine]\npin = false\n[cluster]\nconnect_timeout = \"500ms\"\n".to_owned()
        + &secret_key(0, &dir)
        + &nodes(&[1, 1])
        + &apps(&dir);
    std::fs::write(&config, text).expect("config");
    let out = run_all(vec![node("a", &config, Some(SECRET))]).remove(0);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("did not come up within 500ms") && err.contains("no link to node b (127.0.0.1:"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nodes_started_from_different_cluster_configs_refuse_to_link() {
    let dir = run_dir("mismatch");
    let nodes = nodes(&[1, 1]);
    let mut commands = Vec::new();
    for (id, batches) in [("a", 64), ("b", 32)] {
        let config = dir.join(format!("{id}.toml"));
        let engine =
            format!("[engine]\npin = false\nmailbox_batches = {batches}\n[cluster]\nconnect_timeout = \"3s\"\n");
        std::fs::write(&config, engine + &secret_key(0, &dir) + &nodes + &apps(&dir)).expect("config");
        commands.push(node(id, &config, Some(SECRET)));
    }
    let outs = run_all(commands);
    assert!(outs.iter().all(|o| !o.status.success()), "a node ran with a peer of another config");
    let all: String = outs.iter().map(stderr).collect();
    assert!(all.contains("runs a different cluster config"), "{all}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `dirigo` with `args` on a config of `text` fails and its stderr contains each of `what`
/// ([`SECRET_ENV`] unset).
fn refuses(args: &[&str], text: &str, what: &[&str]) {
    let dir = run_dir("bad");
    let config = dir.join("bad.toml");
    std::fs::write(&config, text).expect("config");
    let out = common::output(dirigo().args(args).arg(&config).env_remove(SECRET_ENV));
    assert!(!out.status.success(), "{args:?} accepted {text}");
    let err = stderr(&out);
    for w in what {
        assert!(err.contains(w), "expected `{w}` in: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_cluster_configs_are_refused_with_what_is_wrong() {
    let two = "[[node]]\nid = \"a\"\naddress = \"127.0.0.1:7101\"\nshards = 1\n\
               [[node]]\nid = \"b\"\naddress = \"127.0.0.1:7102\"\nshards = 1\n\
               [cluster]\nsecret_env = \"DIRIGO_TEST_CLUSTER_SECRET\"\n";
    refuses(&["run", "--node", "zz"], two, &["--node zz: no such node; known: a, b"]);
    refuses(&["check", "--node", "zz"], two, &["no such node; known: a, b"]);
    refuses(&["run"], two, &["the config lists nodes a, b; pick one with --node"]);
    refuses(&["run", "--node", "a", "--shards", "4"], two, &["--shards"]);
    refuses(&["run", "--node", "a"], "", &["lists no [[node]]"]);
    let dup_id = two.replace("id = \"b\"", "id = \"a\"");
    refuses(&["check"], &dup_id, &["bad.toml:6:", "node[1] key `id`", "duplicate node name `a` (first at line 2)"]);
    let dup_address = two.replace("7102", "7101");
    refuses(&["check"], &dup_address, &["bad.toml:7:", "node[1] key `address`", "also node `a`'s"]);
    let no_shards = two.replace("shards = 1\n[[node]]", "shards = 0\n[[node]]");
    refuses(&["check"], &no_shards, &["bad.toml:4:", "node[0] key `shards`", "greater than zero"]);
    let bad_address = two.replace("127.0.0.1:7102", "nowhere");
    refuses(&["check"], &bad_address, &["node[1] key `address`", "`nowhere` is not a host:port address"]);
    refuses(&["check"], &(two.to_owned() + "colour = \"red\"\n"), &["colour"]);
}

#[test]
fn a_missing_or_empty_secret_stops_the_node_naming_the_key_and_where_it_looked() {
    let two = "[[node]]\nid = \"a\"\naddress = \"127.0.0.1:7101\"\nshards = 1\n\
               [[node]]\nid = \"b\"\naddress = \"127.0.0.1:7102\"\nshards = 1\n";
    refuses(&["check"], two, &["bad.toml:6:6: cluster: a cluster of 2 nodes needs `secret_file` or `secret_env`"]);
    let by_env = two.to_owned() + "[cluster]\nsecret_env = \"DIRIGO_TEST_CLUSTER_SECRET\"\n";
    let unset =
        ["bad.toml:10:14: cluster key `secret_env`: environment variable `DIRIGO_TEST_CLUSTER_SECRET` is not set"];
    refuses(&["run", "--node", "a"], &by_env, &unset);
    refuses(&["check", "--node", "b"], &by_env, &unset);
    let dir = run_dir("secrets");
    let empty = dir.join("empty.key");
    std::fs::write(&empty, "\n").expect("secret file");
    let by_file = |path: &Path| two.to_owned() + &format!("[cluster]\nsecret_file = \"{}\"\n", path.display());
    let what = format!("bad.toml:10:15: cluster key `secret_file`: the secret file {} is empty", empty.display());
    refuses(&["run", "--node", "a"], &by_file(&empty), &[&what]);
    let absent = dir.join("absent.key");
    let what = format!("cluster key `secret_file`: cannot read the secret file {}", absent.display());
    refuses(&["run", "--node", "a"], &by_file(&absent), &[&what]);
    let _ = std::fs::remove_dir_all(&dir);
    // Without --node, `check` does not read the secret: it may run where the secret is not.
    let dir = run_dir("unset");
    let config = dir.join("c.toml");
    std::fs::write(&config, &by_env).expect("config");
    let out = common::output(dirigo().arg("check").arg(&config).env_remove(SECRET_ENV));
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Start `command`, stdout and stderr captured.
fn spawn(mut command: Command) -> Child {
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("dirigo starts")
}

#[test]
fn a_node_with_the_wrong_secret_is_refused_both_ways_and_the_others_run_on() {
    let (want, want_totals) = one_node(3);
    let dir = run_dir("impostor");
    let nodes = nodes(&[1, 1, 1]);
    let cluster = |timeout: &str| {
        format!("[engine]\npin = false\n[cluster]\nconnect_timeout = \"{timeout}\"\nsecret_env = \"{SECRET_ENV}\"\n")
    };
    let good = dir.join("good.toml");
    std::fs::write(&good, cluster("40s") + &nodes + &apps(&dir)).expect("config");
    // The impostor runs the same cluster config (the same fingerprint) as node c, with another
    // secret, its own output directory, and a shorter wait for its links.
    let elsewhere = dir.join("impostor");
    std::fs::create_dir_all(&elsewhere).expect("impostor dir");
    let impostor = dir.join("impostor.toml");
    std::fs::write(&impostor, cluster("5s") + &nodes + &apps(&elsewhere)).expect("config");

    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (a, b) = (spawn(node("a", &good, Some(SECRET))), spawn(node("b", &good, Some(SECRET))));
    let impostor = common::wait_all(vec![spawn(node("c", &impostor, Some("not the secret")))], DEADLINE).remove(0);
    // Nodes a and b are still waiting for c: the real one joins them now.
    let outs = common::wait_all(vec![a, b, spawn(node("c", &good, Some(SECRET)))], DEADLINE);

    assert!(!impostor.status.success(), "the impostor ran");
    let log = stderr(&impostor);
    let err = log.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error in: {log}"));
    assert!(err.contains("the cluster did not come up within 5s"), "{err}");
    // Refused both ways by both good nodes: its proof there, and theirs here.
    let there = "refused: it does not accept this node's proof: the two nodes hold different cluster secrets";
    let here = "has not connected to this node (its last attempt was refused: its proof does not verify: \
                it does not hold this node's cluster secret)";
    assert_eq!((err.matches(there).count(), err.matches(here).count()), (2, 2), "{err}");
    for (o, id) in outs.iter().zip(["a", "b"]) {
        assert!(o.status.success(), "node {id} failed: {}", stderr(o));
        let log = stderr(o);
        assert!(log.contains("refused a link from node c (") && log.contains("its proof does not verify"), "{log}");
        assert!(log.contains("link to node c (") && log.contains(there), "{log}");
    }
    assert!(outs[2].status.success(), "node c failed: {}", stderr(&outs[2]));
    assert_same(&outputs(&dir), &want);
    assert_eq!(totals(&outs), want_totals, "(events in, events out) summed over the nodes");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without snapshots, a node that comes back as a new process cannot pick up where its old one
/// was: its peer stops, naming it (and not after `reconnect_timeout`: it knows at once).
#[test]
fn a_node_restarted_without_snapshots_stops_its_peer_naming_it() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = run_dir("restarted");
    let config = dir.join("c.toml");
    let out = dir.join("counts-{node}.ndjson");
    let text = "[engine]\npin = false\n[cluster]\nconnect_timeout = \"2s\"\nreconnect_timeout = \"60s\"\n".to_owned()
        + &secret_key(0, &dir)
        + &nodes(&[1, 1])
        + &format!(
            "[[app]]\nname = \"a\"\nslo = \"50ms\"\ncores = 64\nschema = {{ k = \"u64\" }}\n\n\
             [[app.source]]\nname = \"in\"\nkind = \"generator\"\nrate = 2000\nevents = 1000000\nkeys = 50\n\n\
             [[app.function]]\nname = \"c\"\nkind = \"count\"\ninput = \"in\"\nkey = \"k\"\n\n\
             [[app.sink]]\nname = \"counts\"\nkind = \"file\"\ninput = \"c\"\npath = \"{}\"\n",
            out.display()
        );
    std::fs::write(&config, text).expect("config");
    let spawn = |id: &str| {
        node(id, &config, Some(SECRET)).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("dirigo starts")
    };
    let a = spawn("a");
    let mut b = spawn("b");
    // The cluster runs once both nodes' sinks have written.
    let started = std::time::Instant::now();
    let written = |id: &str| std::fs::metadata(dir.join(format!("counts-{id}.ndjson"))).is_ok_and(|m| m.len() > 0);
    while !(written("a") && written("b")) {
        assert!(started.elapsed() < DEADLINE, "the cluster never ran");
        std::thread::yield_now();
    }
    b.kill().expect("kill b");
    b.wait().expect("b reaped");
    let b = spawn("b");
    let outs = common::wait_all(vec![a, b], DEADLINE);
    let (a, b) = (stderr(&outs[0]), stderr(&outs[1]));
    assert!(!outs[0].status.success(), "node a ran on with b's new process:\n{a}");
    assert!(a.contains("node b (127.0.0.1:") && a.contains("restarted (a new process)"), "{a}");
    assert!(!a.contains("not re-established"), "a knew at once, not after reconnect_timeout:\n{a}");
    assert!(!outs[1].status.success() && b.contains("did not come up"), "b's new process finds no cluster:\n{b}");
    let _ = std::fs::remove_dir_all(&dir);
}
