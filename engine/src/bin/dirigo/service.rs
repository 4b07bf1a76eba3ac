//! `dirigo serve` and its clients: `dirigo deploy`, `dirigo apps`, `dirigo undeploy`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use dirigo_engine::config::Config;
use dirigo_engine::serve::{AppView, ServiceHandle};

/// `dirigo serve`: the engine with the config's apps, the admin endpoint, until Ctrl-C.
pub fn serve(
    path: &Path,
    json: bool,
    shards: Option<usize>,
    policy: Option<&str>,
    listen: Option<&str>,
) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    anyhow::ensure!(
        config.nodes.is_empty(),
        "{}: `dirigo serve` runs a single node; this config lists nodes",
        path.display()
    );
    let policy = super::policy_named(policy.unwrap_or(config.engine.policy.name()))?;
    let addr = match listen {
        None => config.admin.socket,
        Some(l) => {
            let a: std::net::SocketAddr = l.parse().map_err(|e| anyhow::anyhow!("--listen {l}: {e}"))?;
            anyhow::ensure!(
                a.ip().is_loopback() || config.admin.token.is_some(),
                "--listen {l}: a non-loopback admin address requires [admin] token_file or token_env"
            );
            a
        }
    };
    let token = match &config.admin.token {
        Some(t) => Some(t.read().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?),
        None => None,
    };
    if json {
        dirigo_engine::sink::STDOUT_SINKS_TO_STDERR.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let (handle, commands) = ServiceHandle::new();
    let admin = dirigo_engine::admin::start(addr, token, config.admin.max_body, handle.clone())
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ([admin] listen): {e}"))?;
    eprintln!("dirigo serve: admin endpoint on http://{} (dashboard at /, metrics at /metrics)", admin.addr);
    if json {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::json!({ "admin": admin.addr.to_string() }))?;
        out.flush()?;
    }
    let stop =
        super::stop_on_ctrl_c("stopping: the apps' sources end and in-flight messages drain (Ctrl-C again to abort)")?;
    let result = dirigo_engine::serve::serve(&config, shards.unwrap_or(0), policy, stop, commands, &handle);
    admin.shutdown();
    let apps = handle.view.lock().map(|v| v.list()).unwrap_or_default();
    for a in &apps {
        eprintln!("{}", human(a));
    }
    result?;
    Ok(())
}

/// The base URL of an admin address.
fn base(addr: &str) -> String {
    let a = addr.trim_end_matches('/');
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_owned()
    } else {
        format!("http://{a}")
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(5)).timeout(Duration::from_secs(180)).build()
}

/// Send a request; the token comes from DIRIGO_ADMIN_TOKEN when set. Returns the status and
/// the body (an error status is an answer, not a failure).
fn call(req: ureq::Request, body: Option<&str>) -> anyhow::Result<(u16, String)> {
    let req = match std::env::var("DIRIGO_ADMIN_TOKEN") {
        Ok(t) => req.set("Authorization", &format!("Bearer {}", t.trim())),
        Err(_) => req,
    };
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    match res {
        Ok(r) => Ok((r.status(), r.into_string()?)),
        Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap_or_default())),
        Err(e) => Err(anyhow::anyhow!("cannot reach the server: {e}")),
    }
}

/// An error answer as one line (the JSON error's text, with file:line:column when it has them).
fn fail(status: u16, body: &str, json: bool) -> anyhow::Error {
    if json {
        println!("{body}");
    }
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    let msg = v.get("error").and_then(|e| e.as_str()).unwrap_or(body);
    anyhow::anyhow!("the server answered {status}: {msg}")
}

fn human(a: &AppView) -> String {
    format!(
        "{:<16} {:<10} slo {:>8.1} ms  satisfaction {:>7.3}%  {:>9.0} ev/s  p99 {:>8.1} ms  in {} out {}  shards {:?}",
        a.name,
        a.state,
        a.slo_us / 1e3,
        a.satisfaction * 100.0,
        a.throughput_eps,
        a.p99_us / 1e3,
        a.events_in,
        a.events_out,
        a.placed_on
    )
}

/// `dirigo deploy ADDR APP.toml`.
pub fn deploy(addr: &str, app: &Path, json: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(app).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", app.display()))?;
    let req = agent().post(&format!("{}/apps", base(addr))).set("X-Dirigo-File", &app.display().to_string());
    let (status, body) = call(req, Some(&text))?;
    if status != 201 {
        return Err(fail(status, &body, json));
    }
    if json {
        println!("{body}");
    } else {
        let a: AppView = serde_json_view(&body)?;
        println!("deployed {} (app {}) on shards {:?}", a.name, a.id, a.placed_on);
    }
    Ok(())
}

/// `dirigo apps ADDR`.
pub fn apps(addr: &str, json: bool) -> anyhow::Result<()> {
    let (status, body) = call(agent().get(&format!("{}/apps", base(addr))), None)?;
    if status != 200 {
        return Err(fail(status, &body, json));
    }
    if json {
        println!("{body}");
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let list = v.get("apps").cloned().unwrap_or_default();
    let apps: Vec<AppView> = serde_json::from_value(list)?;
    if apps.is_empty() {
        println!("no apps");
    }
    for a in &apps {
        println!("{}", human(a));
    }
    Ok(())
}

/// `dirigo undeploy ADDR NAME`.
pub fn undeploy(addr: &str, name: &str, json: bool) -> anyhow::Result<()> {
    let (status, body) = call(agent().delete(&format!("{}/apps/{name}", base(addr))), None)?;
    if status != 200 {
        return Err(fail(status, &body, json));
    }
    if json {
        println!("{body}");
    } else {
        let a: AppView = serde_json_view(&body)?;
        println!("undeployed {}: {} events in, {} out", a.name, a.events_in, a.events_out);
    }
    Ok(())
}

fn serde_json_view(body: &str) -> anyhow::Result<AppView> {
    serde_json::from_str(body).map_err(|e| anyhow::anyhow!("unexpected answer from the server: {e}: {body}"))
}
