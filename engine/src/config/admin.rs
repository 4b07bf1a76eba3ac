//! Resolves `[admin]` (the admin HTTP endpoint of `dirigo serve`) into [`AdminConfig`], and
//! reads its token when the server starts.
//!
//! The endpoint listens on loopback by default; a non-loopback `listen` must name where its
//! bearer token is (`token_file` or `token_env`, exactly one): the token itself is never in the
//! config.

use std::net::ToSocketAddrs;

use super::defaults::DEFAULT_TOML_NAME;
use super::doc::AdminLayer;
use super::error::{ConfigError, Problem, Source};
use super::path::KeyPath;

pub use super::model::{AdminConfig, TokenSource};

fn at(key: &str) -> KeyPath {
    KeyPath::table("admin").key(key)
}

/// `[admin]` resolved from the merged layers (`listen` and `max_body` have defaults).
pub(crate) fn settings(src: &Source, layer: AdminLayer) -> Result<AdminConfig, ConfigError> {
    let missing = |key: &'static str| {
        let reason = format!("every `[admin]` key but the token's needs a default in {DEFAULT_TOML_NAME}");
        ConfigError::problem(src, 0..0, KeyPath::table("admin"), Problem::MissingKey { key, reason })
    };
    let listen = layer.listen.ok_or_else(|| missing("listen"))?;
    let max_body: u64 = layer.max_body.ok_or_else(|| missing("max_body"))?.into_inner().into();
    let text = listen.get_ref();
    let socket = match text.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Err(ConfigError::at(src, listen.span(), at("listen"), format!("`{text}` resolves to no address")))
        }
        Err(e) => {
            let what = format!("`{text}` is not a host:port address: {e}");
            return Err(ConfigError::at(src, listen.span(), at("listen"), what));
        }
    };
    let token = match (layer.token_file, layer.token_env) {
        (Some(_), Some(env)) => {
            let what = "set one of `token_file` and `token_env`, not both";
            return Err(ConfigError::at(src, env.span(), at("token_env"), what));
        }
        (Some(f), None) => Some(TokenSource::File(f)),
        (None, Some(e)) => Some(TokenSource::Env(e)),
        (None, None) => None,
    };
    if let Some(t) = &token {
        let (key, name) = t.key_and_name();
        if name.get_ref().is_empty() {
            return Err(ConfigError::at(src, name.span(), at(key), format!("`{key}` must not be empty")));
        }
    }
    if !socket.ip().is_loopback() && token.is_none() {
        let what = format!(
            "`{text}` is not a loopback address: the admin endpoint then requires a bearer token; \
             set `token_file` or `token_env` in [admin]"
        );
        return Err(ConfigError::at(src, listen.span(), at("listen"), what));
    }
    if max_body == 0 {
        return Err(ConfigError::at(src, 0..0, at("max_body"), "must be > 0"));
    }
    Ok(AdminConfig { listen, socket, max_body, token })
}
