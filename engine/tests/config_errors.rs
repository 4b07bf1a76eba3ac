//! Config errors: each kind of problem is reported at its exact `file:line:col` and key path;
//! plus round trips, schema order and defaults on two valid example configs.

use std::time::Duration;

use dirigo_engine::config::{Config, FileFormat, FunctionKind, Node, Policy, Role, SinkKind, SourceKind, WindowType};

/// A windowed max over generated bids, with a map and a filter in front.
const BIDS: &str = r#"
[engine]
shards = 2
policy = "laxity"

[[app]]
name = "bids"
slo = "2ms"
schema = { auction = "u64", bidder = "u64", price = "u64", date_time = "u64" }
event_time = "date_time"

[[app.source]]
name = "in"
kind = "generator"
rate = 100000
events = 1000000
distribution = "zipf"
bursts = [{ at = "2s", duration = "500ms", rate = 500000 }]

[[app.sink]]
name = "out"
kind = "stdout"
input = "max_price"

[[app.function]]
name = "max_price"
kind = "window"
input = "expensive"
key = "auction"
window = { type = "sliding", size = "10s", slide = "5s" }
aggregate = { op = "max", field = "price" }
max_lessees = 2

[[app.function]]
name = "expensive"
kind = "filter"
input = "doubled"
predicate = "total > 100 && bidder % 2 == 0"

[[app.function]]
name = "doubled"
kind = "map"
input = "in"
fields = { total = "price * 2", auction = "auction", bidder = "bidder" }
"#;

/// Two apps: a file-fed join, and a TCP-fed count.
const TWO_APPS: &str = r#"
[defaults.app]
weight = 3

[[app]]
name = "join"
slo = "10ms"
weight = 2
schema = { zeta = "string", id = "i64", alpha = "f64", ok = "bool" }

[[app.source]]
name = "a"
kind = "file"
path = "data/a.csv"
header = false

[[app.source]]
name = "b"
kind = "tcp"
listen = "127.0.0.1:7000"
format = "binary"

[[app.function]]
name = "j"
kind = "join"
left = "a"
right = "b"
left_key = "id"
right_key = "id"
window = { type = "tumbling", size = "1s" }

[[app.sink]]
name = "file"
kind = "file"
path = "out.csv"
input = "j"

[[app]]
name = "counts"
slo = "5ms"
schema = { k = "u64" }
source = [{ name = "in", kind = "tcp", listen = "0.0.0.0:7001" }]
function = [{ name = "n", kind = "count", input = "in", key = "k" }]
sink = [{ name = "lat", kind = "latency", input = "n" }]
"#;

/// A one-function app; `function` is spliced in at line 9.
fn app_with(function: &str) -> String {
    format!(
        "[[app]]\nname = \"bids\"\nslo = \"2ms\"\nschema = {{ auction = \"u64\", price = \"u64\" }}\n\
         [[app.source]]\nname = \"in\"\nkind = \"generator\"\n\
         [[app.function]]\n{function}\n\
         [[app.sink]]\nname = \"out\"\nkind = \"null\"\ninput = \"f\"\n"
    )
}

fn error(text: &str) -> String {
    match Config::parse(text, "bad.toml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn assert_error(text: &str, expected: &str) {
    assert_eq!(error(text), expected);
}

#[test]
fn syntax_error_names_line_and_column() {
    assert_error("[engine]\nshards = = 2\n", "bad.toml:2:10: invalid string; expected `\"`, `'`");
}

#[test]
fn unknown_key_is_named() {
    assert_error(
        "[engine]\nshards = 1\nspinn = \"5ms\"\n",
        "bad.toml:3:1: engine key `spinn`: unknown field `spinn`, expected one of `shards`, \
         `pin`, `policy`, `spin`, `spin_slo`, `gather`, `standby`, `key_groups`, `rebalance`, `migrate_every`, `stall_budget`, `stall_stop`, `shard_capacity`, \
         `mailbox_batches`, `batch_size`, \
         `max_in_flight`, `queue_budget`, `tick`, `lessee_idle`, `stats_interval`, `preempt_timer`, `tcp_io`, `max_apps`",
    );
    let text = app_with("name = \"f\"\nkind = \"filter\"\ninput = \"in\"\npredicate = \"price > 1\"\nbogus = 1");
    let e = error(&text);
    assert!(e.starts_with("bad.toml:13:1: app[0] \"bids\" function \"f\" key `bogus`: unknown field `bogus`"), "{e}");
}

#[test]
fn wrong_type_and_bad_duration() {
    assert_error(
        "[engine]\nspin = 5\n",
        "bad.toml:2:8: engine key `spin`: invalid type: integer `5`, expected a string",
    );
    let e = error("[engine]\ntick = \"5 parsecs\"\n");
    assert!(e.starts_with("bad.toml:2:8: engine key `tick`: invalid duration `5 parsecs`"), "{e}");
    let text = app_with("name = \"f\"\nkind = \"count\"\ninput = \"in\"\nmax_lessees = -1");
    assert_error(
        &text,
        "bad.toml:12:15: app[0] \"bids\" function \"f\" key `max_lessees`: invalid value: \
         integer `-1`, expected u32",
    );
}

#[test]
fn unknown_names_list_the_valid_ones() {
    assert_error(
        "[engine]\npolicy = \"lifo\"\n",
        "bad.toml:2:10: engine key `policy`: unknown variant `lifo`, expected one of `fifo`, \
         `edf`, `laxity`, `fair`",
    );
    let text = app_with("name = \"f\"\nkind = \"reduce\"\ninput = \"in\"");
    assert_error(
        &text,
        "bad.toml:10:8: app[0] \"bids\" function \"f\" key `kind`: unknown variant `reduce`, \
         expected one of `map`, `filter`, `key_by`, `count`, `sum`, `min`, `max`, `avg`, \
         `window`, `join`",
    );
    let text = app_with(
        "name = \"f\"\nkind = \"window\"\ninput = \"in\"\n\
         window = { type = \"hopping\", size = \"1s\" }\naggregate = { op = \"max\", field = \"price\" }",
    );
    assert_error(
        &text,
        "bad.toml:12:19: app[0] \"bids\" function \"f\" key `window.type`: unknown variant \
         `hopping`, expected `tumbling` or `sliding`",
    );
}

#[test]
fn key_of_another_kind_is_named() {
    let text = app_with("name = \"f\"\nkind = \"count\"\ninput = \"in\"\npredicate = \"price > 1\"");
    assert_error(
        &text,
        "bad.toml:12:13: app[0] \"bids\" function \"f\" key `predicate`: a `count` function \
         takes no key `predicate`; its keys: name, kind, max_lessees, input, key",
    );
}

#[test]
fn duplicate_app_names() {
    let app = app_with("name = \"f\"\nkind = \"count\"\ninput = \"in\"");
    let text = format!("{app}{app}");
    assert_error(&text, "bad.toml:17:8: app[1] \"bids\" key `name`: duplicate app name `bids` (first at line 2)");
}

#[test]
fn duplicate_node_names() {
    let text = app_with("name = \"in\"\nkind = \"count\"\ninput = \"in\"");
    assert_error(
        &text,
        "bad.toml:9:8: app[0] \"bids\" function \"in\" key `name`: duplicate node name `in` \
         (first at line 6)",
    );
}

#[test]
fn input_naming_nothing() {
    let text = "[[app]]\nname = \"bids\"\nslo = \"2ms\"\nschema = { price = \"u64\" }\n\n\
                [[app.source]]\nname = \"in\"\nkind = \"generator\"\n\n\
                [[app.function]]\nname = \"max\"\n        input = \"mx\"\nkind = \"max\"\nfield = \"price\"\n\n\
                [[app.function]]\nname = \"max_price\"\nkind = \"count\"\ninput = \"in\"\n\n\
                [[app.sink]]\nname = \"out\"\nkind = \"stdout\"\ninput = \"max\"\n";
    let e = Config::parse(text, "configs/bad.toml").unwrap_err().to_string();
    assert_eq!(
        e,
        "configs/bad.toml:12:17: app[0] \"bids\" function \"max\" key `input`: no function or \
         source named `mx`; known: in, max_price"
    );
    let join = app_with(
        "name = \"f\"\nkind = \"join\"\nleft = \"in\"\nright = \"nope\"\nleft_key = \"a\"\n\
         right_key = \"a\"\nwindow = { type = \"tumbling\", size = \"1s\" }",
    );
    assert_error(
        &join,
        "bad.toml:12:9: app[0] \"bids\" function \"f\" key `right`: no function or source named \
         `nope`; known: in",
    );
}

#[test]
fn sink_input_missing_or_naming_nothing() {
    let text = app_with("name = \"g\"\nkind = \"count\"\ninput = \"in\"");
    assert_error(
        &text,
        "bad.toml:15:9: app[0] \"bids\" sink \"out\" key `input`: no function or source named \
         `f`; known: in, g",
    );
    let text = text.replace("input = \"f\"\n", "");
    assert_error(&text, "bad.toml:12:1: app[0] \"bids\" sink \"out\": missing field `input`");
}

#[test]
fn cycle_is_named() {
    let text = app_with(
        "name = \"f\"\nkind = \"count\"\ninput = \"h\"\n\
         [[app.function]]\nname = \"g\"\nkind = \"filter\"\ninput = \"f\"\npredicate = \"true\"\n\
         [[app.function]]\nname = \"h\"\nkind = \"key_by\"\ninput = \"g\"\nkey = \"price\"",
    );
    assert_error(&text, "bad.toml:11:9: app[0] \"bids\" function \"f\" key `input`: cycle: f -> g -> h -> f");
}

#[test]
fn errors_carry_facts_a_caller_can_act_on() {
    let text = app_with("name = \"f\"\nkind = \"count\"\ninput = \"f\"");
    let e = Config::parse(&text, "bad.toml").unwrap_err();
    let invalid = e.invalid().expect("an invalid config");
    assert_eq!((invalid.location.line, invalid.location.column), (11, 9));
    let cycle = vec!["f".to_owned(), "f".to_owned()];
    assert_eq!(invalid.problem, dirigo_engine::config::Problem::Cycle { cycle });
}

#[test]
fn unknown_schema_type_lists_the_valid_ones() {
    let text = "[[app]]\nname = \"a\"\nslo = \"2ms\"\nschema = { x = \"u64\", y = \"float\" }\n";
    assert_error(
        text,
        "bad.toml:4:27: app[0] \"a\" key `schema.y`: unknown type `float`; valid: u64, i64, f64, \
         bool, string",
    );
}

#[test]
fn fields_checked_against_the_source_schema() {
    let text = app_with("name = \"f\"\nkind = \"count\"\ninput = \"in\"")
        .replace("slo = \"2ms\"\n", "slo = \"2ms\"\nevent_time = \"when\"\n");
    assert_error(
        &text,
        "bad.toml:4:14: app[0] \"bids\" key `event_time`: unknown schema field `when`; valid: \
         auction, price",
    );
    let text = app_with("name = \"f\"\nkind = \"count\"\ninput = \"in\"")
        .replace("kind = \"generator\"\n", "kind = \"generator\"\nkey_field = \"bidder\"\n");
    assert_error(
        &text,
        "bad.toml:8:13: app[0] \"bids\" source \"in\" key `key_field`: unknown schema field \
         `bidder`; valid: auction, price",
    );
}

#[test]
fn zero_values_are_rejected() {
    assert_error("[engine]\nbatch_size = 0\n", "bad.toml:2:14: engine key `batch_size`: must be greater than zero");
    let text = app_with("name = \"f\"\nkind = \"count\"\ninput = \"in\"")
        .replace("kind = \"generator\"\n", "kind = \"generator\"\nparallelism = 0\n");
    assert_error(&text, "bad.toml:8:15: app[0] \"bids\" source \"in\" key `parallelism`: must be greater than zero");
    let text = app_with(
        "name = \"f\"\nkind = \"window\"\ninput = \"in\"\n\
         window = { type = \"tumbling\", size = \"0s\" }\naggregate = { op = \"count\" }",
    );
    assert_error(&text, "bad.toml:12:38: app[0] \"bids\" function \"f\" key `window.size`: must be greater than zero");
    assert_error("[defaults.app]\nweight = 0\n", "bad.toml:2:10: defaults.app key `weight`: must be greater than zero");
    // shards = 0 means "one per CPU" and rate = 0 "unbounded": both fine.
    assert!(Config::parse("[engine]\nshards = 0\n", "ok.toml").is_ok());
}

#[test]
fn file_source_needs_a_path() {
    let text = app_with("name = \"f\"\nkind = \"count\"\ninput = \"in\"")
        .replace("kind = \"generator\"\n", "kind = \"file\"\n");
    assert_error(
        &text,
        "bad.toml:5:1: app[0] \"bids\" source \"in\": missing key `path` (a file source reads \
         this file)",
    );
}

#[test]
fn example_configs_resolve_with_defaults() {
    let config = Config::parse(BIDS, "bids.toml").unwrap();
    assert_eq!(config.engine.shards, 2);
    assert_eq!(config.engine.policy, Policy::Laxity);
    assert_eq!(config.engine.spin, Duration::from_micros(200));
    let app = &config.apps[0];
    assert_eq!((app.weight, app.watermark_every), (1, 1000));
    let SourceKind::Generator(generator) = &app.sources[0].kind else { panic!("a generator") };
    assert_eq!(generator.key_field.get_ref(), "auction");
    assert_eq!((generator.keys, generator.seed, generator.parallelism), (1000, 42, 1));
    assert_eq!(generator.bursts[0].at, Duration::from_secs(2));
    let FunctionKind::Window(window) = &app.functions[0].kind else { panic!("a window") };
    assert_eq!(window.window.get_ref().window_type, WindowType::Sliding);
    assert_eq!(window.window.get_ref().lateness, Duration::ZERO);
    assert_eq!(app.functions[1].max_lessees, 0, "the default applies to windows only: a filter cannot lease");

    let two = Config::parse(TWO_APPS, "two.toml").unwrap();
    assert_eq!((two.apps[0].weight, two.apps[1].weight), (2, 3));
    let SourceKind::File(file) = &two.apps[0].sources[0].kind else { panic!("a file source") };
    assert_eq!((file.format, file.header, file.rate), (FileFormat::Csv, false, 0));
    let SinkKind::File { format, .. } = &two.apps[0].sinks[0].kind else { panic!("a file sink") };
    assert_eq!(*format, FileFormat::Ndjson);
}

#[test]
fn schema_and_map_fields_keep_their_order() {
    let config = Config::parse(BIDS, "bids.toml").unwrap();
    let names: Vec<&str> = config.apps[0].schema.fields.iter().map(|f| f.name.get_ref().as_str()).collect();
    assert_eq!(names, ["auction", "bidder", "price", "date_time"]);
    let schema = config.apps[0].schema.to_schema();
    assert_eq!(schema.position("date_time"), Some(3));
    let FunctionKind::Map { fields, .. } = &config.apps[0].functions[2].kind else { panic!("a map") };
    let outputs: Vec<&str> = fields.iter().map(|(n, _)| n.get_ref().as_str()).collect();
    assert_eq!(outputs, ["total", "auction", "bidder"]);
    let two = Config::parse(TWO_APPS, "two.toml").unwrap();
    let names: Vec<&str> = two.apps[0].schema.fields.iter().map(|f| f.name.get_ref().as_str()).collect();
    assert_eq!(names, ["zeta", "id", "alpha", "ok"]);
}

#[test]
fn configs_round_trip() {
    let cluster = two_nodes("secret_env = \"DIRIGO_CLUSTER_SECRET\"\n");
    for text in [BIDS, TWO_APPS, "", &cluster] {
        let config = Config::parse(text, "a.toml").unwrap();
        let written = config.to_toml().unwrap();
        let again = Config::parse(&written, "b.toml").unwrap_or_else(|e| panic!("{e}\n{written}"));
        assert_eq!(config.engine, again.engine);
        assert_eq!(config.apps, again.apps, "{written}");
        assert_eq!(config.cluster.secret.map(|s| s.key()), again.cluster.secret.map(|s| s.key()), "{written}");
    }
}

/// Two nodes (lines 1-8), then `[cluster]` (line 9) with `lines` from line 10.
fn two_nodes(lines: &str) -> String {
    "[[node]]\nid = \"a\"\naddress = \"127.0.0.1:7101\"\nshards = 1\n\
     [[node]]\nid = \"b\"\naddress = \"127.0.0.1:7102\"\nshards = 1\n\
     [cluster]\n"
        .to_owned()
        + lines
}

#[test]
fn a_cluster_names_exactly_one_secret() {
    assert_error(
        &two_nodes(""),
        "bad.toml:6:6: cluster: a cluster of 2 nodes needs `secret_file` or `secret_env`: the secret its \
         nodes prove to each other before their links carry anything",
    );
    assert_error(
        &two_nodes("secret_file = \"k\"\nsecret_env = \"K\"\n"),
        "bad.toml:11:14: cluster key `secret_env`: set `secret_file` or `secret_env`, not both",
    );
    assert_error(
        &two_nodes("secret_env = \"\"\n"),
        "bad.toml:10:14: cluster key `secret_env`: must name an environment variable, not be empty",
    );
    assert_error(
        &two_nodes("secret_file = \"\"\n"),
        "bad.toml:10:15: cluster key `secret_file`: must name a file, not be empty",
    );
    assert!(
        error(&two_nodes("secret = \"hunter2\"\n")).contains("unknown field `secret`"),
        "the secret itself is no key"
    );
}

#[test]
fn a_secret_that_cannot_be_read_is_named_at_its_key() {
    let read = |text: &str, env: Option<&str>| {
        let config = Config::parse(text, "bad.toml").unwrap();
        let value = env.map(std::ffi::OsString::from);
        config.cluster_secret_from(|_| value.clone()).map(|_| ()).unwrap_err().to_string()
    };
    let by_env = two_nodes("secret_env = \"DIRIGO_CLUSTER_SECRET\"\n");
    assert_eq!(
        read(&by_env, None),
        "bad.toml:10:14: cluster key `secret_env`: environment variable `DIRIGO_CLUSTER_SECRET` is not set"
    );
    assert_eq!(
        read(&by_env, Some(" \n")),
        "bad.toml:10:14: cluster key `secret_env`: environment variable `DIRIGO_CLUSTER_SECRET` is empty"
    );
    let dir = std::env::temp_dir().join(format!("dirigo-config-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (empty, absent) = (dir.join("empty.key"), dir.join("absent.key"));
    std::fs::write(&empty, "").unwrap();
    let by_file = |p: &std::path::Path| two_nodes(&format!("secret_file = \"{}\"\n", p.display()));
    let e = read(&by_file(&empty), None);
    assert_eq!(e, format!("bad.toml:10:15: cluster key `secret_file`: the secret file {} is empty", empty.display()));
    let e = read(&by_file(&absent), None);
    let want = format!("bad.toml:10:15: cluster key `secret_file`: cannot read the secret file {}: ", absent.display());
    assert!(e.starts_with(&want), "{e}");
    let e = read(&by_file(&dir), None);
    assert!(e.contains("cannot read the secret file"), "a directory: {e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nodes_come_in_topological_order() {
    let config = Config::parse(BIDS, "bids.toml").unwrap();
    let (_, nodes) = config.apps_in_topological_order().next().unwrap();
    let names: Vec<&str> = nodes
        .iter()
        .map(|(_, node)| match node {
            Node::Source(s) => s.name.get_ref().as_str(),
            Node::Function(f) => f.name.get_ref().as_str(),
            Node::Sink(s) => s.name.get_ref().as_str(),
        })
        .collect();
    assert_eq!(names, ["in", "doubled", "expensive", "max_price", "out"]);
    assert_eq!(nodes[4].0.role, Role::Sink);
}

#[test]
fn planner_errors_use_the_same_format() {
    let config = Config::parse(BIDS, "bids.toml").unwrap();
    let app = &config.apps[0];
    let FunctionKind::Filter { predicate, .. } = &app.functions[1].kind else { panic!("a filter") };
    let path = dirigo_engine::config::KeyPath::app(0, app.name.get_ref())
        .node(Role::Function, 1, app.functions[1].name.get_ref())
        .key("predicate");
    let e = config.error_at(predicate.span(), path, "no field `total` in the input");
    assert_eq!(
        e.to_string(),
        "bids.toml:38:13: app[0] \"bids\" function \"expensive\" key `predicate`: no field \
         `total` in the input"
    );
}

/// A tcp-fed app; `keys` are spliced into its source at line 9.
fn tcp_app(keys: &str) -> String {
    format!(
        "[[app]]\nname = \"t\"\nslo = \"1s\"\nschema = {{ k = \"u64\" }}\n\
         [[app.source]]\nname = \"in\"\nkind = \"tcp\"\nlisten = \"127.0.0.1:0\"\n{keys}\n\
         [[app.sink]]\nname = \"out\"\nkind = \"null\"\ninput = \"in\"\n"
    )
}

fn tcp_source(config: &Config) -> &dirigo_engine::config::TcpSource {
    match &config.apps[0].sources[0].kind {
        SourceKind::Tcp(t) => t,
        other => panic!("a tcp source, not {other:?}"),
    }
}

#[test]
fn tcp_source_limits_parse_and_default_from_default_toml() {
    let keys = "max_connections = 10\nidle_timeout = \"200ms\"\nmax_line = \"64KiB\"\nmax_frame = 1048576";
    let config = Config::parse(&tcp_app(keys), "limits.toml").unwrap();
    let t = tcp_source(&config);
    assert_eq!((t.max_connections, t.idle_timeout), (10, Duration::from_millis(200)));
    assert_eq!((t.max_line, t.max_frame), (64 << 10, 1 << 20));
    let config = Config::parse(&tcp_app("max_frame = \"1.5 MiB\"\nmax_line = \"2KB\""), "limits.toml").unwrap();
    assert_eq!((tcp_source(&config).max_frame, tcp_source(&config).max_line), (3 << 19, 2000));

    // Left out: the values of configs/default.toml, as written there.
    let config = Config::parse(&tcp_app(""), "limits.toml").unwrap();
    let t = tcp_source(&config);
    let table: toml::Table = toml::from_str(dirigo_engine::config::DEFAULT_TOML).unwrap();
    let written = &table["defaults"]["source"]["tcp"];
    assert_eq!(t.max_connections as i64, written["max_connections"].as_integer().unwrap());
    assert_eq!(t.idle_timeout, humantime::parse_duration(written["idle_timeout"].as_str().unwrap()).unwrap());
    assert_eq!(written["max_line"].as_str(), Some("1MiB"));
    assert_eq!(written["max_frame"].as_str(), Some("4MiB"));
    assert_eq!((t.max_line, t.max_frame), (1 << 20, 4 << 20));
    let d = &config.defaults.source.tcp;
    assert_eq!(
        (d.max_connections, d.idle_timeout, d.max_line, d.max_frame),
        (t.max_connections, t.idle_timeout, t.max_line, t.max_frame)
    );

    // A user's [defaults.source.tcp] applies to the sources that leave a key out.
    let text = format!(
        "[defaults.source.tcp]\nmax_connections = 7\nidle_timeout = \"1m\"\n{}",
        tcp_app("max_connections = 3")
    );
    let config = Config::parse(&text, "limits.toml").unwrap();
    assert_eq!((tcp_source(&config).max_connections, tcp_source(&config).idle_timeout), (3, Duration::from_secs(60)));
    assert_eq!(tcp_source(&config).max_line, 1 << 20);
}

#[test]
fn bad_tcp_limits_name_file_line_and_key() {
    let at = "bad.toml:9";
    let node = "app[0] \"t\" source \"in\" key";
    assert_error(
        &tcp_app("max_connections = 0"),
        &format!("{at}:19: {node} `max_connections`: must be greater than zero"),
    );
    assert_error(
        &tcp_app("idle_timeout = \"0s\""),
        &format!("{at}:16: {node} `idle_timeout`: must be greater than zero"),
    );
    assert_error(&tcp_app("max_line = \"0MiB\""), &format!("{at}:12: {node} `max_line`: must be greater than zero"));
    assert_error(&tcp_app("max_frame = 0"), &format!("{at}:13: {node} `max_frame`: must be greater than zero"));
    assert_error(
        &tcp_app("max_frame = \"2GiB\""),
        &format!("{at}:13: {node} `max_frame`: must be at most 1GiB (the wire format's largest payload)"),
    );
    assert_error(
        &tcp_app("max_connections = -1"),
        &format!("{at}:19: {node} `max_connections`: invalid value: integer `-1`, expected usize"),
    );
    let e = error(&tcp_app("max_frame = -1"));
    assert!(
        e.starts_with(&format!("{at}:13: {node} `max_frame`: invalid size `-1`: a size cannot be negative")),
        "{e}"
    );
    let e = error(&tcp_app("max_line = \"-4MiB\""));
    assert!(
        e.starts_with(&format!("{at}:12: {node} `max_line`: invalid size `-4MiB`: a size cannot be negative")),
        "{e}"
    );
    let e = error(&tcp_app("max_line = \"4 parsecs\""));
    assert!(e.starts_with(&format!("{at}:12: {node} `max_line`: invalid size `4 parsecs`: unknown unit")), "{e}");
    let e = error(&tcp_app("idle_timeout = \"soon\""));
    assert!(e.starts_with(&format!("{at}:16: {node} `idle_timeout`: invalid duration `soon`")), "{e}");
    let e = error(&tcp_app("idle_timeout = 5"));
    assert!(e.starts_with(&format!("{at}:16: {node} `idle_timeout`: invalid type: integer `5`")), "{e}");
    // In [defaults.source.tcp] too.
    assert_error(
        "[defaults.source.tcp]\nmax_line = 0\n",
        "bad.toml:2:12: defaults.source.tcp key `max_line`: must be greater than zero",
    );
    let e = error("[defaults.source.tcp]\nmax_frame = \"4 MiBs\"\n");
    assert!(
        e.starts_with("bad.toml:2:13: defaults.source.tcp key `max_frame`: invalid size `4 MiBs`: unknown unit"),
        "{e}"
    );
    assert_error(
        "[defaults.source.tcp]\nmax_frame = \"1TiB\"\n",
        "bad.toml:2:13: defaults.source.tcp key `max_frame`: must be at most 1GiB (the wire format's largest payload)",
    );
    // Only a tcp source takes them.
    let text = app_with("name = \"f\"\nkind = \"count\"\ninput = \"in\"")
        .replace("kind = \"generator\"\n", "kind = \"generator\"\nmax_line = \"1KiB\"\n");
    let e = error(&text);
    assert!(
        e.starts_with(
            "bad.toml:8:12: app[0] \"bids\" source \"in\" key `max_line`: a `generator` source takes no key `max_line`"
        ),
        "{e}"
    );
}

#[test]
fn lessees_on_state_that_cannot_merge_are_an_error_at_the_key() {
    for (name, keys) in [("count", "input = \"in\""), ("map", "input = \"in\"\nfields = { a = \"price\" }")] {
        let e = error(&app_with(&format!("name = \"f\"\nkind = \"{name}\"\n{keys}\nmax_lessees = 2")));
        assert!(
            e.contains(&format!(
                "function \"f\" key `max_lessees`: a `{name}` function keeps state that does not merge"
            )),
            "{e}"
        );
        assert!(e.starts_with("bad.toml:"), "{e}");
    }
    let window = "name = \"f\"\nkind = \"window\"\ninput = \"in\"\nkey = \"auction\"\n\
                  window = { type = \"tumbling\", size = \"1s\" }\naggregate = { op = \"max\", field = \"price\" }";
    let config =
        Config::parse(&app_with(&format!("{window}\nmax_lessees = 2")), "ok.toml").expect("a window may lease");
    assert_eq!(config.apps[0].functions[0].max_lessees, 2);
    let config = Config::parse(&app_with("name = \"f\"\nkind = \"count\"\ninput = \"in\""), "ok.toml").expect("parses");
    assert_eq!(config.apps[0].functions[0].max_lessees, 0, "the default applies to windows only");
}

#[test]
fn gather_is_a_share_between_0_and_1() {
    assert_error("[engine]\ngather = 1.5\n", "bad.toml:2:10: engine key `gather`: must be a share between 0 and 1");
    assert!(Config::parse("[engine]\ngather = 0\n", "ok.toml").is_ok());
}

/// A generator read in splits must be closed loop (`rate = 0`): at a rate its events are due at
/// fixed times and its instances would take turns. Named at the key, with the reason; a
/// closed-loop one is accepted, and a split of no events is refused like any zero.
#[test]
fn a_generator_in_splits_must_be_closed_loop() {
    let with = |keys: &str| {
        app_with("name = \"f\"\nkind = \"count\"\ninput = \"in\"\nkey = \"auction\"")
            .replace("kind = \"generator\"\n", &format!("kind = \"generator\"\n{keys}\n"))
    };
    let e = error(&with("rate = 1000\nsplit_events = 64"));
    assert!(e.starts_with("bad.toml:9:16: app[0] \"bids\" source \"in\" key `split_events`: "), "{e}");
    assert!(e.contains("closed-loop generator (`rate = 0`)") && e.contains("rate = 1000"), "{e}");
    assert!(Config::parse(&with("rate = 0\nsplit_events = 64"), "ok.toml").is_ok());
    let e = error(&with("split_events = 0"));
    assert!(e.contains("key `split_events`: must be greater than zero"), "{e}");
}
