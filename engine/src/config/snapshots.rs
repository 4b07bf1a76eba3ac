//! The `[snapshots]` table: where snapshots go, how often, how many are kept.
//!
//! `dir` has no default: without it the engine takes no snapshots (and `every` and `keep`, which
//! default from `configs/default.toml`, do nothing).
//! `dirigo run` takes them ([`crate::snapshot`]), on one node or a cluster (each node in
//! `<dir>/<node id>`); `dirigo serve` refuses them.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::check::positive;
use super::error::{ConfigError, Problem, Source};
use super::model::SnapshotsConfig;
use super::path::KeyPath;
use super::values::HumanDuration;

/// `[snapshots]` as written in one file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnapshotsLayer {
    pub dir: Option<Spanned<String>>,
    pub every: Option<Spanned<HumanDuration>>,
    pub keep: Option<Spanned<usize>>,
}

impl SnapshotsLayer {
    /// `self`'s keys, then `base`'s.
    pub(crate) fn over(self, base: Self) -> Self {
        SnapshotsLayer { dir: self.dir.or(base.dir), every: self.every.or(base.every), keep: self.keep.or(base.keep) }
    }

    /// One file's keys checked: `every` and `keep` positive, `dir` not empty.
    pub(crate) fn check(&self, src: &Source) -> Result<(), ConfigError> {
        let at = |key: &'static str| move || KeyPath::table("snapshots").key(key);
        positive(src, &self.every, at("every"))?;
        positive(src, &self.keep, at("keep"))?;
        if let Some(dir) = self.dir.as_ref().filter(|d| d.get_ref().trim().is_empty()) {
            let reason = "the directory snapshots are written to; leave `dir` out to take none".to_owned();
            let problem = Problem::MissingKey { key: "dir", reason };
            return Err(ConfigError::problem(src, dir.span(), at("dir")(), problem));
        }
        Ok(())
    }
}

/// The resolved table: None without a `dir` in `user` (the user's own layer; `base` holds the
/// built-in defaults).
pub(crate) fn resolve(user: SnapshotsLayer, base: SnapshotsLayer) -> Result<Option<SnapshotsConfig>, ConfigError> {
    if user.dir.is_none() {
        return Ok(None);
    }
    let merged = user.over(base);
    let missing = |key: &'static str| {
        let builtin = Source::new(super::DEFAULT_TOML_NAME, super::DEFAULT_TOML);
        let reason = format!("every `[snapshots]` key but `dir` needs a default in {}", super::DEFAULT_TOML_NAME);
        ConfigError::problem(&builtin, 0..0, KeyPath::table("snapshots"), Problem::MissingKey { key, reason })
    };
    Ok(Some(SnapshotsConfig {
        dir: PathBuf::from(merged.dir.map(Spanned::into_inner).unwrap_or_default()),
        every: merged.every.ok_or_else(|| missing("every"))?.into_inner().0,
        keep: merged.keep.ok_or_else(|| missing("keep"))?.into_inner(),
    }))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const APP: &str =
        "[[app]]\nname = \"a\"\nslo = \"1s\"\nschema = { k = \"u64\" }\n\n[[app.source]]\nname = \"in\"\n\
                       kind = \"generator\"\n\n[[app.sink]]\nname = \"out\"\nkind = \"null\"\ninput = \"in\"\n";

    fn parse(snapshots: &str) -> Result<Config, String> {
        Config::parse(&format!("{snapshots}\n{APP}"), "s.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn snapshots_are_off_without_a_dir_and_defaulted_with_one() {
        assert_eq!(parse("").unwrap().snapshots, None);
        let s = parse("[snapshots]\ndir = \"snaps\"").unwrap().snapshots.expect("configured");
        assert_eq!((s.dir.to_str(), s.every, s.keep), (Some("snaps"), std::time::Duration::from_secs(10), 3));
        let s = parse("[snapshots]\ndir = \"/var/d\"\nevery = \"1s\"\nkeep = 5").unwrap().snapshots.unwrap();
        assert_eq!((s.every.as_secs(), s.keep), (1, 5));
        // The config round-trips through TOML with its snapshots.
        let config = parse("[snapshots]\ndir = \"d\"\nevery = \"2s\"").unwrap();
        let again = Config::parse(&config.to_toml().unwrap(), "again.toml").unwrap();
        assert_eq!(again.snapshots, config.snapshots);
    }

    #[test]
    fn bad_snapshot_keys_are_named_at_their_line() {
        let err = parse("[snapshots]\ndir = \"d\"\nkeep = 0").unwrap_err();
        assert!(err.starts_with("s.toml:3:8: ") && err.contains("snapshots key `keep`"), "{err}");
        let err = parse("[snapshots]\ndir = \"d\"\nevery = \"0s\"").unwrap_err();
        assert!(err.contains("s.toml:3:") && err.contains("snapshots key `every`"), "{err}");
        assert_eq!(parse("[snapshots]\nevery = \"1s\"").unwrap().snapshots, None);
        let err = parse("[snapshots]\ndir = \" \"").unwrap_err();
        assert!(err.contains("s.toml:2:") && err.contains("snapshots key `dir`"), "{err}");
        let err = parse("[snapshots]\ndir = \"d\"\nevry = \"1s\"").unwrap_err();
        assert!(err.contains("s.toml:3:") && err.contains("evry"), "{err}");
    }
}
