//! The admin HTTP endpoint of `dirigo serve` (docs/why-admin-http.md): a `tiny_http` server on a
//! few plain threads of its own, never on a shard. It answers from the service's view (app
//! states and series, under a lock the controller holds for microseconds each interval) and
//! the Prometheus registry, and forwards deploys and undeploys to the controller.
//!
//! | request | answer |
//! |---|---|
//! | `POST /apps` (body: one `[[app]]` as TOML) | 201 and the app, or 400 with file, line, column and key; 409 for a duplicate name |
//! | `GET /apps`, `GET /apps/NAME` | the apps (state, SLO, satisfaction, throughput, shards) / one app; 404 |
//! | `DELETE /apps/NAME` | 200 and its final figures once it has drained (`?wait=false`: at once) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /api/live` | every app with its series (the dashboard polls it) |
//! | `GET /healthz` | 200 `{"ready":true}` once every shard is up, else 503 (for a readiness probe) |
//! | `GET /` | the dashboard (one static page embedded in the binary) |
//!
//! Every error is a JSON object `{"error": ...}`. With a token configured every request needs
//! `Authorization: Bearer TOKEN` (compared in constant time), else 401.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::serve::{ApiError, Command, ServiceHandle};

/// The dashboard page.
pub const DASHBOARD: &str = include_str!("admin/dashboard.html");
/// Threads answering requests (a deploy or an undeploy waits for the controller; the others
/// keep answering meanwhile).
const THREADS: usize = 4;
/// How long a request waits for the controller (an undeploy waits for its app to drain).
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running admin endpoint.
pub struct Admin {
    pub addr: SocketAddr,
    server: Arc<Server>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("addr", &self.addr).finish()
    }
}

struct Ctx {
    handle: ServiceHandle,
    token: Option<Vec<u8>>,
    max_body: u64,
}

/// Bind `addr` and answer admin requests on their own threads.
pub fn start(addr: SocketAddr, token: Option<Vec<u8>>, max_body: u64, handle: ServiceHandle) -> std::io::Result<Admin> {
    let server = Arc::new(Server::http(addr).map_err(std::io::Error::other)?);
    let addr = server.server_addr().to_ip().ok_or_else(|| std::io::Error::other("not an IP listener"))?;
    let ctx = Arc::new(Ctx { handle, token, max_body });
    let threads = (0..THREADS)
        .map(|i| {
            let (server, ctx) = (server.clone(), ctx.clone());
            std::thread::Builder::new()
                .name(format!("dirigo-admin-{i}"))
                .spawn(move || {
                    while let Ok(req) = server.recv() {
                        answer(&ctx, req);
                    }
                })
                .expect("spawn admin thread")
        })
        .collect();
    Ok(Admin { addr, server, threads })
}

impl Admin {
    /// Stop answering and join the threads.
    pub fn shutdown(self) {
        for _ in &self.threads {
            self.server.unblock();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn json(status: u16, body: String) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body).with_status_code(status).with_header(header("Content-Type", "application/json"))
}

fn error(e: &ApiError) -> Response<std::io::Cursor<Vec<u8>>> {
    json(e.status, e.to_json())
}

fn answer(ctx: &Ctx, mut req: Request) {
    let method = req.method().clone();
    let url = req.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let resp = match authorize(ctx, &req) {
        Err(e) => error(&e),
        Ok(()) => route(ctx, &mut req, &method, path, query).unwrap_or_else(|e| error(&e)),
    };
    if let Err(e) = req.respond(resp) {
        tracing::debug!("admin: could not answer {method} {path}: {e}");
    }
}

fn authorize(ctx: &Ctx, req: &Request) -> Result<(), ApiError> {
    let Some(token) = &ctx.token else { return Ok(()) };
    let given = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| h.value.as_str().strip_prefix("Bearer "))
        .map(|t| t.trim().as_bytes().to_vec());
    match given {
        // Constant time in the token's content (a length mismatch fails at once: the length is
        // not the secret).
        Some(g) if bool::from(g.ct_eq(token)) => Ok(()),
        Some(_) => Err(ApiError::new(401, "wrong bearer token")),
        None => Err(ApiError::new(401, "this endpoint requires `Authorization: Bearer TOKEN`")),
    }
}

type Resp = Response<std::io::Cursor<Vec<u8>>>;

fn route(ctx: &Ctx, req: &mut Request, method: &Method, path: &str, query: &str) -> Result<Resp, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let view = &ctx.handle.view;
    match (method, segments.as_slice()) {
        (Method::Get, []) => {
            Ok(Response::from_string(DASHBOARD).with_header(header("Content-Type", "text/html; charset=utf-8")))
        }
        (Method::Get, ["metrics"]) => Ok(Response::from_string(ctx.handle.metrics.encode())
            .with_header(header("Content-Type", "text/plain; version=0.0.4; charset=utf-8"))),
        (Method::Get, ["api", "live"]) => {
            let v = view.lock().expect("view");
            Ok(json(200, serde_json::to_string(&*v).expect("serializable")))
        }
        (Method::Get, ["healthz"]) => {
            let v = view.lock().expect("view");
            let body = serde_json::json!({ "ready": v.ready, "shards": v.shards }).to_string();
            Ok(json(if v.ready { 200 } else { 503 }, body))
        }
        (Method::Get, ["apps"]) => {
            let apps = view.lock().expect("view").list();
            Ok(json(200, serde_json::json!({ "apps": apps }).to_string()))
        }
        (Method::Get, ["apps", name]) => match view.lock().expect("view").app(name) {
            Some(e) => Ok(json(200, serde_json::to_string(&e.view).expect("serializable"))),
            None => Err(ApiError::new(404, format!("no app named `{name}`"))),
        },
        (Method::Post, ["apps"]) => {
            let text = body(ctx, req)?;
            let file = req
                .headers()
                .iter()
                .find(|h| h.field.equiv("X-Dirigo-File"))
                .map_or_else(|| "request".to_owned(), |h| h.value.as_str().to_owned());
            let (tx, rx) = flume::bounded(1);
            ask(ctx, Command::Deploy { text, file, reply: tx }, &rx)
                .map(|v| json(201, serde_json::to_string(&v).expect("serializable")))
        }
        (Method::Delete, ["apps", name]) => {
            let wait = !query.split('&').any(|kv| kv == "wait=false");
            let (tx, rx) = flume::bounded(1);
            ask(ctx, Command::Undeploy { name: (*name).to_owned(), wait, reply: tx }, &rx)
                .map(|v| json(200, serde_json::to_string(&v).expect("serializable")))
        }
        (_, [] | ["metrics"] | ["healthz"] | ["api", "live"] | ["apps"] | ["apps", _]) => {
            Err(ApiError::new(405, format!("{method} is not allowed on {path}")))
        }
        _ => Err(ApiError::new(404, format!("no such endpoint: {path}"))),
    }
}

fn ask<T>(ctx: &Ctx, c: Command, rx: &flume::Receiver<Result<T, ApiError>>) -> Result<T, ApiError> {
    ctx.handle.commands.send(c).map_err(|_| ApiError::new(503, "the server is stopping"))?;
    rx.recv_timeout(REPLY_TIMEOUT).map_err(|_| ApiError::new(504, "the engine did not answer in time"))?
}

/// The request's body as text, at most `max_body` bytes (413 beyond).
fn body(ctx: &Ctx, req: &mut Request) -> Result<String, ApiError> {
    let too_big = || ApiError::new(413, format!("the body is larger than [admin] max_body ({} bytes)", ctx.max_body));
    if req.body_length().is_some_and(|n| n as u64 > ctx.max_body) {
        return Err(too_big());
    }
    let mut buf = Vec::new();
    req.as_reader()
        .take(ctx.max_body + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ApiError::new(400, format!("cannot read the body: {e}")))?;
    if buf.len() as u64 > ctx.max_body {
        return Err(too_big());
    }
    String::from_utf8(buf).map_err(|_| ApiError::new(400, "the body is not UTF-8 text"))
}
