//! Unit tests: `configs/default.toml` is complete, documented, and what an empty config gives.

use super::defaults::EngineLayer;
use super::*;

/// Durations compare by value ("0ms" == "0s"); everything else as written.
fn normalize(value: toml::Value) -> toml::Value {
    match value {
        toml::Value::String(s) => match humantime::parse_duration(&s) {
            Ok(d) => toml::Value::String(format!("{d:?}")),
            Err(_) => toml::Value::String(s),
        },
        toml::Value::Table(t) => toml::Value::Table(t.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

fn default_table(key: &str) -> toml::Value {
    let table: toml::Table = toml::from_str(DEFAULT_TOML).unwrap();
    normalize(table[key].clone())
}

#[test]
fn empty_config_is_exactly_default_toml() {
    let config = Config::parse("", "empty.toml").unwrap();
    let engine = toml::Value::try_from(&config.engine).unwrap();
    assert_eq!(normalize(engine), default_table("engine"));
    let defaults = toml::Value::try_from(&config.defaults).unwrap();
    assert_eq!(normalize(defaults), default_table("defaults"));
    assert!(config.apps.is_empty());
    assert_eq!(Config::default_engine().unwrap(), config.engine);
}

#[test]
fn user_tables_merge_over_the_defaults_key_by_key() {
    let text = "[engine]\npolicy = \"fair\"\n[defaults.source.generator]\nseed = 7\n";
    let config = Config::parse(text, "user.toml").unwrap();
    assert_eq!(config.engine.policy, Policy::Fair);
    assert_eq!(config.engine.batch_size, 256);
    assert_eq!(config.defaults.source.generator.seed, 7);
    assert_eq!(config.defaults.source.generator.keys, 1000);
}

#[test]
fn every_default_key_is_documented() {
    let lines: Vec<&str> = DEFAULT_TOML.lines().map(str::trim).collect();
    for (i, line) in lines.iter().enumerate() {
        let is_key = !line.is_empty() && !line.starts_with('#') && !line.starts_with('[');
        let documented = line.contains(" # ") || i > 0 && lines[i - 1].starts_with('#');
        assert!(!is_key || documented, "default.toml:{}: `{line}` has no comment", i + 1);
    }
}

#[test]
fn a_gap_in_the_defaults_is_reported() {
    let layer = EngineLayer::default();
    let e = layer.resolve("engine").unwrap_err().to_string();
    assert!(e.starts_with("configs/default.toml:1:1: engine: missing key `shards`"), "{e}");
}

#[test]
fn positions_are_lines_and_character_columns() {
    let source = Source::new("x.toml", "a = 1\nnamé = \"ü\"\n");
    assert_eq!(source.line_col(0), (1, 1));
    assert_eq!(source.line_col(6), (2, 1));
    assert_eq!(source.line_col(15), (2, 9));
}

/// Two nodes and a `[cluster]` table with these lines.
fn cluster_with(lines: &str) -> String {
    "[[node]]\nid = \"a\"\naddress = \"127.0.0.1:7101\"\nshards = 1\n\
     [[node]]\nid = \"b\"\naddress = \"127.0.0.1:7102\"\nshards = 1\n\
     [cluster]\n"
        .to_owned()
        + lines
}

#[test]
fn the_secret_keys_are_documented_in_default_toml_and_valid_as_written() {
    for key in ["secret_file", "secret_env"] {
        let prefix = format!("#   {key} = ");
        let line = DEFAULT_TOML.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{key}"));
        let example = line.trim_start_matches('#').split(" # ").next().unwrap().trim();
        let config = Config::parse(&cluster_with(example), "example.toml").unwrap();
        assert_eq!(config.cluster.secret.map(|s| s.key()), Some(key));
    }
    let defaults: toml::Table = toml::from_str(DEFAULT_TOML).unwrap();
    let cluster = defaults["cluster"].as_table().unwrap();
    assert!(!cluster.contains_key("secret_file") && !cluster.contains_key("secret_env"), "no default");
}

#[test]
fn a_secret_reads_the_same_from_a_variable_or_a_file_whitespace_aside() {
    use dirigo_net::link::auth::{nonce, Role, Transcript};
    let file = std::env::temp_dir().join(format!("dirigo-secret-{}.key", std::process::id()));
    std::fs::write(&file, "s3cret \r\n").unwrap();
    let by_file = Config::parse(&cluster_with(&format!("secret_file = \"{}\"\n", file.display())), "f.toml");
    let by_file = by_file.unwrap().cluster_secret_from(|_| None).unwrap().unwrap();
    let _ = std::fs::remove_file(&file);
    let by_env = Config::parse(&cluster_with("secret_env = \"S\"\n"), "e.toml").unwrap();
    let env = |var: &str| (var == "S").then(|| "s3cret\n".into());
    let by_env = by_env.cluster_secret_from(env).unwrap().unwrap();
    let t = Transcript { fingerprint: 1, dialer: 0, acceptor: 1, dialer_nonce: nonce(), acceptor_nonce: nonce() };
    assert_eq!(t.verify(&by_env, Role::Dialer, &t.prove(&by_file, Role::Dialer)), Ok(()));
    assert!(format!("{by_env:?}").contains("redacted"));
    // A single node needs no secret, and has none.
    let one = Config::parse("[[node]]\nid = \"a\"\naddress = \"127.0.0.1:7101\"\nshards = 1\n", "one.toml").unwrap();
    assert!(one.cluster_secret_from(|_| panic!("no variable is read")).unwrap().is_none());
}
