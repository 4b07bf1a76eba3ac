//! The engine as a service (`dirigo serve`): shards that stay up with no app, a controller loop
//! that deploys and undeploys apps at run time (through [`crate::control`]), and the figures the
//! admin endpoint shows: each app's state and live series ([`ServiceView`]) and the Prometheus
//! metrics ([`crate::prom::Metrics`]).
//!
//! The controller is the thread that calls [`serve`]; the admin HTTP threads talk to it through
//! [`Command`]s and read the view under its lock. Single node only.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::compile::{app_demand, compile_app, RunError};
use crate::config::{Config, ConfigError};
use crate::control::{Ack, ControlPlane, RUNNING, STOPPING};
use crate::engine::{cpu_seconds, resolve_shards, EngineError, EngineSettings, StopHandle};
use crate::metrics::{AppStats, ShardReport, ShardTotals};
use crate::placement::{AppShards, PlacementTable};
use crate::plan::Plan;
use crate::policy::Policy;
use crate::prom::Metrics;
use crate::report::LatencyUs;
use crate::shard::{Shard, ShardInit};
use dirigo_net::mailbox::Mesh;
use dirigo_net::signal::ShardSignal;

/// Points kept per app for the dashboard (one per stats interval: 5 minutes at 1 s).
const HISTORY: usize = 300;
/// How long a deploy waits for every shard to build the app.
const ADOPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The controller rings every doorbell this often (see `engine::WATCHDOG`) while an app is
/// live, and wakes this often otherwise (an idle server).
const WATCHDOG: Duration = Duration::from_millis(200);
const REST_WATCHDOG: Duration = Duration::from_secs(1);

/// A request to the controller, with where to send its answer.
#[derive(Debug)]
pub enum Command {
    /// Deploy the one `[[app]]` of this TOML text (named `file` in errors).
    Deploy { text: String, file: String, reply: flume::Sender<Result<AppView, ApiError>> },
    /// Undeploy the app of this name; answered once it has drained (or at once with its state
    /// when `wait` is false).
    Undeploy { name: String, wait: bool, reply: flume::Sender<Result<AppView, ApiError>> },
}

/// An error answered to an admin request: an HTTP status and a JSON body.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, error: impl Into<String>) -> Self {
        ApiError { status, error: error.into(), file: None, line: None, column: None, key: None }
    }

    /// A config error (400), with its file, line, column and key when it has them.
    pub fn config(e: &ConfigError) -> Self {
        let mut a = ApiError::new(400, e.to_string());
        if let Some(i) = e.invalid() {
            a.file = Some(i.location.file.clone());
            (a.line, a.column) = (Some(i.location.line), Some(i.location.column));
            a.key = Some(i.key.to_string()).filter(|k| !k.is_empty());
        }
        a
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("serializable")
    }
}

/// One app as the admin endpoint shows it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct AppView {
    pub name: String,
    pub id: u16,
    /// pending | running | stopping | finished | undeployed | failed
    pub state: String,
    pub slo_us: f64,
    /// Share of its outputs within the SLO so far (1 when it had none).
    pub satisfaction: f64,
    /// Events out per second over the last interval.
    pub throughput_eps: f64,
    pub events_in: u64,
    pub events_out: u64,
    /// Latency over the last interval, and over its life.
    pub p99_us: f64,
    pub latency_us: LatencyUs,
    /// The shards it was placed on (its cores), and those that hosted it in the last interval.
    pub placed_on: Vec<u16>,
    pub shards_used: Vec<u16>,
    /// CPU-seconds attributed to it (each shard's busy time split by the app's share of the
    /// events the shard handled).
    pub cpu_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// One point of an app's live series.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Point {
    /// Seconds since the server started.
    pub t: f64,
    pub eps: f64,
    pub p99_us: f64,
    /// Over the interval (None: no output in it).
    pub satisfaction: Option<f64>,
    pub shards: Vec<u16>,
}

/// What the admin endpoint reads: every app and its series, and the shards.
#[derive(Debug, Default, Serialize)]
pub struct ServiceView {
    pub shards: usize,
    /// Every shard is up (each sent its first report): `GET /healthz` answers 200.
    pub ready: bool,
    pub uptime_seconds: f64,
    pub apps: Vec<AppEntry>,
}

/// An app and its live series.
#[derive(Debug, Serialize)]
pub struct AppEntry {
    #[serde(flatten)]
    pub view: AppView,
    pub series: VecDeque<Point>,
}

impl ServiceView {
    /// The apps without their series (GET /apps).
    pub fn list(&self) -> Vec<AppView> {
        self.apps.iter().map(|a| a.view.clone()).collect()
    }

    /// The app of this name (the latest, if redeployed).
    pub fn app(&self, name: &str) -> Option<&AppEntry> {
        self.apps.iter().rev().find(|a| a.view.name == name)
    }
}

/// The handle the admin endpoint keeps: commands to the controller, the view, the metrics.
#[derive(Clone, Debug)]
pub struct ServiceHandle {
    pub commands: flume::Sender<Command>,
    pub view: Arc<Mutex<ServiceView>>,
    pub metrics: Arc<Metrics>,
}

impl ServiceHandle {
    /// A handle and the receiver [`serve`] takes.
    pub fn new() -> (ServiceHandle, flume::Receiver<Command>) {
        let (tx, rx) = flume::unbounded();
        let h = ServiceHandle { commands: tx, view: Default::default(), metrics: Arc::new(Metrics::new()) };
        (h, rx)
    }
}

/// Per app, what the controller keeps.
struct AppRun {
    id: usize,
    name: String,
    /// The config it came from (to give its load back to the placer).
    demand: Option<u64>,
    totals: AppStats,
    interval: AppStats,
    /// Shards that reported activity of it in the interval, and in the last complete one.
    active: Vec<bool>,
    used: Vec<u16>,
    cpu_ns: f64,
    state: &'static str,
    /// Shards that acked that nothing of it is left; and whether that is all of them.
    ended: Vec<bool>,
    complete: bool,
    waiting: Vec<flume::Sender<Result<AppView, ApiError>>>,
    failure: Option<String>,
}

/// Run a served engine: the config's apps (possibly none) on `shards` shards (0: the config's),
/// deploying and undeploying on `commands`, until `stop` is asked; then the apps' sources end,
/// everything drains, and it returns.
pub fn serve<P: Policy + Clone + Send>(
    config: &Config,
    shards: usize,
    policy: P,
    stop: StopHandle,
    commands: flume::Receiver<Command>,
    handle: &ServiceHandle,
) -> Result<(), RunError> {
    if config.snapshots.is_some() {
        return Err(crate::engine::EngineError::SnapshotsInService.into());
    }
    let settings = crate::compile::settings(config);
    let n = resolve_shards(if shards == 0 { config.engine.shards } else { shards });
    let mut plan = Plan { shards: n, ..Plan::default() };
    let mut placer = AppShards::new(n, config.engine.shard_capacity);
    for i in 0..config.apps.len() {
        compile_app(config, i, &mut plan, &mut placer)?;
    }
    let max_apps = config.engine.max_apps.max(plan.apps.len());
    write_files(&plan.files).map_err(EngineError::from)?;
    let mut c = Controller::start(plan, &settings, policy, &stop, max_apps, handle.clone(), placer)?;
    for (i, app) in config.apps.iter().enumerate() {
        c.add_app(i, app.name.get_ref().clone(), app_demand(app).1, "running");
    }
    c.run(&commands)?;
    Ok(())
}

fn write_files(files: &[(std::path::PathBuf, String)]) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    for (path, first) in files {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| (path.clone(), e))?;
        }
        std::fs::write(path, first).map_err(|e| (path.clone(), e))?;
    }
    Ok(())
}

impl From<(std::path::PathBuf, std::io::Error)> for EngineError {
    fn from((path, source): (std::path::PathBuf, std::io::Error)) -> Self {
        EngineError::SinkFile { path, source }
    }
}

struct Controller {
    plan: Arc<Plan>,
    control: Arc<ControlPlane>,
    acks: flume::Receiver<Ack>,
    reports: flume::Receiver<ShardReport>,
    signals: Arc<Vec<Arc<ShardSignal>>>,
    stop: StopHandle,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    dead: flume::Receiver<usize>,
    apps: Vec<AppRun>,
    placer: AppShards,
    handle: ServiceHandle,
    started: Instant,
    period: Duration,
    /// Per shard: busy and parked ns in the interval, and in total.
    shard_busy: Vec<u64>,
    shard_ns: Vec<ShardTotals>,
    /// Shards that sent their first report.
    up: Vec<bool>,
    /// Per app: it failed (shared with the shards).
    failed_apps: Arc<Vec<AtomicBool>>,
    /// Watches what each shard runs (`[engine] stall_budget`, `stall_stop`).
    stalls: crate::engine::StallDetector,
    /// Shards given up, and per shard the apps it last reported hosting.
    given_up: Vec<usize>,
    hosting: Vec<Vec<u32>>,
    /// Per function: the latest lessee gauge per shard.
    lessees: Vec<Vec<u64>>,
    cpu0: f64,
}

impl Controller {
    fn start<P: Policy + Clone + Send>(
        plan: Plan,
        settings: &EngineSettings,
        policy: P,
        stop: &StopHandle,
        max_apps: usize,
        handle: ServiceHandle,
        placer: AppShards,
    ) -> Result<Controller, EngineError> {
        plan.validate()?;
        let n = plan.shards;
        let plan = Arc::new(plan);
        let (signals, doorbells): (Vec<_>, Vec<_>) = (0..n)
            .map(|_| {
                let (s, d) = ShardSignal::new(max_apps);
                (Arc::new(s), d)
            })
            .unzip();
        stop.set_signals(signals.clone());
        // Calibrate the clock here, not on the first shard's first turn (see `engine::run`).
        dirigo_net::clock::now_ns();
        let mesh = Mesh::new(&signals, settings.mailbox_batches);
        let signals = Arc::new(signals);
        let (tx, rx) = flume::unbounded();
        let placement = Arc::new(PlacementTable::new(&plan, settings.key_groups));
        let (control, acks) = ControlPlane::new(plan.clone(), placement.clone(), max_apps);
        let failed_apps: Arc<Vec<AtomicBool>> = Arc::new((0..max_apps).map(|_| AtomicBool::new(false)).collect());
        let cpus = crate::engine::ShardCpus::for_node(settings.pin, n, 0)?;
        let shard_settings = cpus.shard_settings(settings.shard);
        let (dead_tx, dead) = flume::unbounded();
        let mut handles = Vec::with_capacity(n);
        let parts = mesh.outboxes.into_iter().zip(mesh.inboxes).zip(doorbells);
        for (i, ((outboxes, inboxes), doorbell)) in parts.enumerate() {
            let init = ShardInit {
                id: i as u16,
                local: 0..n as u16,
                plan: plan.clone(),
                outboxes,
                inboxes,
                signals: signals.clone(),
                placement: placement.clone(),
                failed_apps: failed_apps.clone(),
                doorbell,
                policy: policy.clone(),
                settings: shard_settings,
                stop: stop.flag(),
                reports: tx.clone(),
                control: Some(control.clone()),
                snapshots: None,
                restore: None,
            };
            let dead_tx = dead_tx.clone();
            let h = crate::engine::shard_executor(cpus.placement(i, i)?, i, settings.preempt_timer)
                .spawn(move || async move {
                    let _notice = crate::engine::DeathNotice::new(i, dead_tx);
                    Shard::new(init).run().await
                })
                .map_err(|e| EngineError::Spawn { shard: i, reason: e.to_string() })?;
            handles.push(h);
        }
        handle.view.lock().expect("view").shards = n;
        Ok(Controller {
            lessees: vec![vec![0; n]; plan.functions.len()],
            plan,
            control,
            acks,
            reports: rx,
            signals,
            stop: stop.clone(),
            handles,
            dead,
            apps: Vec::new(),
            placer,
            handle,
            started: Instant::now(),
            period: settings.shard.stats_interval,
            shard_busy: vec![0; n],
            shard_ns: vec![ShardTotals::default(); n],
            up: vec![false; n],
            failed_apps,
            stalls: crate::engine::StallDetector::new(settings.stall_budget, settings.stall_stop),
            given_up: Vec::new(),
            hosting: vec![Vec::new(); n],
            cpu0: cpu_seconds(),
        })
    }

    fn add_app(&mut self, id: usize, name: String, demand: Option<u64>, state: &'static str) {
        let n = self.plan.shards;
        self.apps.push(AppRun {
            id,
            name,
            demand,
            totals: AppStats::new(),
            interval: AppStats::new(),
            active: vec![false; n],
            used: Vec::new(),
            cpu_ns: 0.0,
            state,
            ended: vec![false; n],
            complete: false,
            waiting: Vec::new(),
            failure: None,
        });
        self.lessees.resize(self.plan.functions.len(), vec![0; n]);
        self.publish_view();
    }

    fn run(&mut self, commands: &flume::Receiver<Command>) -> Result<(), EngineError> {
        let mut remaining = self.plan.shards;
        let mut next = self.started + self.period;
        let mut last_ring = Instant::now();
        while remaining > 0 {
            if let Ok(shard) = self.dead.try_recv() {
                self.stop.stop();
                return Err(EngineError::ShardFailed { shard, reason: "panicked".into() });
            }
            let live = self.apps.iter().any(|a| self.is_live(a));
            let watchdog = if live { WATCHDOG } else { REST_WATCHDOG };
            let mut wait = next.saturating_duration_since(Instant::now()).min(watchdog);
            if live {
                wait = wait.min(self.stalls.every()); // an idle server does not watch
            }
            enum Ev {
                Report(Box<ShardReport>),
                Command(Command),
                Ack(Ack),
                Idle,
            }
            let ev = flume::Selector::new()
                .recv(&self.reports, |r| r.map_or(Ev::Idle, |r| Ev::Report(Box::new(r))))
                .recv(&self.acks, |a| a.map_or(Ev::Idle, Ev::Ack))
                .recv(commands, |c| c.map_or(Ev::Idle, Ev::Command))
                .wait_timeout(wait)
                .unwrap_or(Ev::Idle);
            match ev {
                // A shard given up says nothing more that counts (should its function return).
                Ev::Report(r) if self.given_up.contains(&(r.shard as usize)) => {}
                Ev::Report(r) => {
                    remaining -= r.last as usize;
                    self.fold(*r);
                }
                Ev::Ack(a) => self.on_ack(a),
                Ev::Command(c) => self.on_command(c),
                Ev::Idle => {}
            }
            if live {
                let signals = self.signals.clone();
                let plan = self.plan.clone();
                let (found, stop) = self.stalls.check(&plan, 0, &signals);
                for stall in found {
                    self.handle.metrics.stall(&stall.app, &stall.function);
                }
                self.stalls.forget_found();
                for (shard, f, held_ms) in stop {
                    remaining -= 1;
                    self.give_up(shard, f, held_ms);
                }
            }
            if last_ring.elapsed() >= watchdog {
                self.stop.ring_all();
                last_ring = Instant::now();
            }
            if Instant::now() >= next {
                self.interval_done();
                next += self.period;
                if next < Instant::now() {
                    next = Instant::now() + self.period;
                }
            }
        }
        for a in &mut self.apps {
            for w in a.waiting.drain(..) {
                let _ = w.send(Err(ApiError::new(503, "the server stopped")));
            }
        }
        for (i, h) in std::mem::take(&mut self.handles).into_iter().enumerate() {
            if self.given_up.contains(&i) {
                continue; // its thread is stuck in user code: left to end with the process
            }
            h.join().map_err(|e| EngineError::ShardFailed { shard: i, reason: e.to_string() })?;
        }
        Ok(())
    }

    fn fold(&mut self, r: ShardReport) {
        let s = r.shard as usize;
        self.hosting[s].clone_from(&r.hosting);
        if !self.up[s] {
            self.up[s] = true;
            if self.up.iter().all(|&u| u) {
                self.handle.view.lock().expect("view").ready = true;
                tracing::info!(shards = self.up.len(), "every shard is up");
            }
        }
        let mut events = 0u64;
        for (a, st) in r.apps.iter().enumerate() {
            events += st.events_in + st.events_out;
            if let Some(app) = self.apps.iter_mut().find(|x| x.id == a) {
                app.totals.add(st);
                app.interval.add(st);
                if st.events_in + st.events_out > 0 || st.actors.hosted_ns > 0 {
                    app.active[s] = true;
                }
            }
        }
        // Busy time split over the apps by their share of the shard's events.
        if events > 0 {
            for (a, st) in r.apps.iter().enumerate() {
                let share = (st.events_in + st.events_out) as f64 / events as f64;
                if let Some(app) = self.apps.iter_mut().find(|x| x.id == a) {
                    let ns = r.busy_ns as f64 * share;
                    app.cpu_ns += ns;
                    self.handle.metrics.app_cpu(&app.name, ns / 1e9);
                }
            }
        }
        for (f, &n) in r.lessees.iter().enumerate() {
            if let Some(v) = self.lessees.get_mut(f) {
                v[s] = n;
            }
        }
        for (f, (&b, &c)) in r.fn_blocked_ns.iter().zip(&r.fn_critical_ns).enumerate() {
            if let Some(fp) = self.plan.functions.get(f) {
                // Every function has its series (at 0 until its lessors block), so scrapers see it.
                self.handle.metrics.function_actor(&self.plan.apps[fp.app as usize].name, &fp.name, b, c);
            }
        }
        for m in &r.moves {
            if let Some(fp) = self.plan.functions.get(m.function as usize) {
                let reason = match m.reason {
                    crate::metrics::MoveReason::Spread => "spread",
                    crate::metrics::MoveReason::Consolidate => "consolidate",
                    crate::metrics::MoveReason::Forced => "forced",
                };
                self.handle.metrics.migration(&self.plan.apps[fp.app as usize].name, &fp.name, reason);
            }
        }
        for f in &r.failures {
            if let Some(app) = self.apps.iter_mut().find(|x| x.id == f.app as usize) {
                app.failure.get_or_insert_with(|| f.to_string());
                app.state = "failed";
            }
        }
        self.shard_busy[s] += r.busy_ns;
        self.shard_ns[s].add(&r);
        self.handle.metrics.shard_time(s, &r);
        let m = &self.handle.metrics;
        for (a, st) in r.apps.iter().enumerate() {
            if let Some(app) = self.apps.iter().find(|x| x.id == a) {
                m.app_report(&app.name, st);
            }
        }
        crate::metrics::recycle(r.apps);
    }

    fn on_ack(&mut self, a: Ack) {
        let Ack::Ended { shard, app } = a else { return };
        let Some(i) = self.apps.iter().position(|x| x.id == app as usize) else { return };
        self.apps[i].ended[shard as usize] = true;
        self.try_complete(i);
    }

    /// A function held `shard` past `stall_stop`: fail its app and the apps the shard hosted,
    /// and give the shard up (see `shard::gone`); the server runs on without it.
    fn give_up(&mut self, shard: usize, f: u16, held_ms: f64) {
        let mut failures = Vec::new();
        let hosting = self.hosting[shard].clone();
        crate::engine::give_up(&self.plan, shard, f, held_ms, &hosting, &self.failed_apps, &mut failures);
        for fl in failures {
            if let Some(app) = self.apps.iter_mut().find(|x| x.id == fl.app as usize) {
                app.failure = Some(fl.to_string());
                app.state = "failed";
            }
        }
        self.signals[shard].abandon();
        self.stop.ring_all();
        self.given_up.push(shard);
        self.placer.give_up(shard);
        // No app waits for the shard's word any more.
        for i in 0..self.apps.len() {
            self.try_complete(i);
        }
        self.publish_view();
    }

    /// App `i` is complete once every shard not given up said nothing of it is left.
    fn try_complete(&mut self, i: usize) {
        let given_up = &self.given_up;
        let a = &self.apps[i];
        if a.complete || !a.ended.iter().enumerate().all(|(s, &e)| e || given_up.contains(&s)) {
            return;
        }
        self.apps[i].complete = true;
        let app = self.apps[i].id;
        // Every shard reported its last figures of the app before its ack.
        while let Ok(r) = self.reports.try_recv() {
            if self.given_up.contains(&(r.shard as usize)) {
                continue;
            }
            let last = r.last;
            self.fold(r);
            debug_assert!(!last, "a shard exits only once the engine stops");
        }
        let plan = self.plan.clone();
        let run = &mut self.apps[i];
        let undeployed = self.control.state(app) == STOPPING;
        if run.state != "failed" {
            run.state = if undeployed { "undeployed" } else { "finished" };
        }
        let _span = tracing::info_span!("app", app = %run.name).entered();
        tracing::info!(events_in = run.totals.events_in, events_out = run.totals.events_out, "app {}", run.state);
        self.placer.release(&plan.apps[app].shards, run.demand);
        // Published before the waiters hear of it: a client that lists the apps as soon as its
        // undeploy returned sees the app undeployed (CI saw `stopping` listed after the reply).
        self.publish_view();
        let view = self.view_of(i, &plan);
        for w in self.apps[i].waiting.drain(..) {
            let _ = w.send(Ok(view.clone()));
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Deploy { text, file, reply } => {
                let r = self.deploy(&text, &file);
                let _ = reply.send(r);
            }
            Command::Undeploy { name, wait, reply } => {
                let Some(i) = self.apps.iter().rposition(|a| a.name == name && self.is_live(a)) else {
                    let _ = reply.send(Err(ApiError::new(404, format!("no running app named `{name}`"))));
                    return;
                };
                let id = self.apps[i].id;
                let _span = tracing::info_span!("undeploy", app = %name).entered();
                tracing::info!("undeploying: its sources stop, its pipeline drains");
                self.control.set_state(id, STOPPING);
                self.apps[i].state = "stopping";
                self.stop.ring_all();
                self.publish_view();
                let plan = self.plan.clone();
                if wait {
                    self.apps[i].waiting.push(reply);
                } else {
                    let _ = reply.send(Ok(self.view_of(i, &plan)));
                }
            }
        }
    }

    fn is_live(&self, a: &AppRun) -> bool {
        matches!(a.state, "pending" | "running" | "stopping")
    }

    fn deploy(&mut self, text: &str, file: &str) -> Result<AppView, ApiError> {
        if self.stop.is_stopped() {
            return Err(ApiError::new(503, "the server is stopping"));
        }
        // Checked exactly as `dirigo check` checks a config; then it must be one app alone.
        let config = Config::parse(text, file).map_err(|e| ApiError::config(&e))?;
        let table: toml::Table = toml::from_str(text).map_err(|e| ApiError::new(400, e.to_string()))?;
        if let Some(k) = table.keys().find(|k| k.as_str() != "app") {
            let msg = format!("a deploy carries one [[app]] and nothing else; `{k}` belongs to the server's config");
            return Err(ApiError::new(400, msg));
        }
        if config.apps.len() != 1 {
            return Err(ApiError::new(
                400,
                format!("a deploy carries exactly one [[app]]; this has {}", config.apps.len()),
            ));
        }
        let name = config.apps[0].name.get_ref().clone();
        let _span = tracing::info_span!("deploy", app = %name).entered();
        if self.apps.iter().any(|a| a.name == name && self.is_live(a)) {
            return Err(ApiError::new(409, format!("an app named `{name}` is already deployed")));
        }
        if self.plan.apps.len() >= self.control.max_apps() {
            let msg = format!(
                "this server has deployed its [engine] max_apps = {} apps (ids are not reused); restart it to deploy more",
                self.control.max_apps()
            );
            return Err(ApiError::new(409, msg));
        }
        // Compiled against a copy: a failed deploy leaves the running plan untouched.
        if self.placer.available() == 0 {
            return Err(ApiError::new(503, "no shard is left to place an app on: every shard was given up"));
        }
        let mut plan = (*self.plan).clone();
        let mut placer = self.placer.clone();
        let files0 = plan.files.len();
        let functions0 = plan.functions.len();
        compile_app(&config, 0, &mut plan, &mut placer).map_err(|e| ApiError::config(&e))?;
        if let Err((path, e)) = write_files(&plan.files[files0..]) {
            return Err(ApiError::new(400, format!("cannot prepare sink file {}: {e}", path.display())));
        }
        let id = plan.apps.len() - 1;
        let plan = Arc::new(plan);
        // The new functions join the running table in place: groups of the other apps may be
        // moving, and their moves write this same table.
        let placement = self.control.current().placement;
        placement.add_functions(&plan, functions0);
        let version = self.control.publish(plan.clone(), placement);
        self.plan = plan.clone();
        self.placer = placer;
        self.stop.ring_all();
        // Its sources wait until every shard has built its instances.
        let mut adopted: Vec<bool> = (0..plan.shards).map(|s| self.given_up.contains(&s)).collect();
        let deadline = Instant::now() + ADOPT_TIMEOUT;
        while !adopted.iter().all(|&a| a) {
            match self.acks.recv_deadline(deadline) {
                Ok(Ack::Adopted { shard, version: v }) if v >= version => adopted[shard as usize] = true,
                Ok(other) => self.on_ack(other),
                Err(_) => {
                    tracing::error!("shards did not adopt plan version {version} in time");
                    return Err(ApiError::new(500, "the shards did not take the app in time"));
                }
            }
        }
        self.control.set_state(id, RUNNING);
        self.stop.ring_all();
        tracing::info!(app_id = id, shards = ?plan.apps[id].shards, "deployed");
        self.add_app(id, name, app_demand(&config.apps[0]).1, "running");
        let i = self.apps.len() - 1;
        Ok(self.view_of(i, &plan))
    }

    fn view_of(&self, i: usize, plan: &Plan) -> AppView {
        let a = &self.apps[i];
        let ap = &plan.apps[a.id];
        let t = &a.totals;
        let satisfaction = if t.events_out == 0 { 1.0 } else { t.within_slo as f64 / t.events_out as f64 };
        let secs = self.period.as_secs_f64();
        let (p99_us, eps) = self
            .handle
            .view
            .lock()
            .expect("view")
            .app(&a.name)
            .and_then(|e| e.series.back())
            .map_or((0.0, 0.0), |p| (p.p99_us, p.eps));
        let _ = secs;
        AppView {
            name: a.name.clone(),
            id: a.id as u16,
            state: a.state.to_owned(),
            slo_us: ap.slo_ns as f64 / 1e3,
            satisfaction,
            throughput_eps: if matches!(a.state, "running" | "stopping" | "pending") { eps } else { 0.0 },
            events_in: t.events_in,
            events_out: t.events_out,
            p99_us,
            latency_us: LatencyUs::of(&t.latency_ns),
            placed_on: ap.shards.clone(),
            shards_used: a.used.clone(),
            cpu_seconds: a.cpu_ns / 1e9,
            failure: a.failure.clone(),
        }
    }

    /// Refresh every app's view (keeping the series).
    fn publish_view(&mut self) {
        let plan = self.plan.clone();
        let views: Vec<AppView> = (0..self.apps.len()).map(|i| self.view_of(i, &plan)).collect();
        let mut v = self.handle.view.lock().expect("view");
        v.uptime_seconds = self.started.elapsed().as_secs_f64();
        // Keep the series of apps still known; drop entries of apps replaced by a redeploy.
        let mut old: Vec<AppEntry> = std::mem::take(&mut v.apps);
        for view in views {
            let series = old
                .iter_mut()
                .find(|e| e.view.id == view.id)
                .map(|e| std::mem::take(&mut e.series))
                .unwrap_or_default();
            v.apps.push(AppEntry { view, series });
        }
        // A finished app whose name was deployed again: show the newest only.
        let names: Vec<(usize, String)> = v.apps.iter().enumerate().map(|(i, e)| (i, e.view.name.clone())).collect();
        let keep: Vec<bool> = names.iter().map(|(i, n)| !names.iter().any(|(j, m)| j > i && m == n)).collect();
        let mut k = keep.into_iter();
        v.apps.retain(|_| k.next().unwrap_or(true));
    }

    /// An interval ended: a point of every live app's series, gauges refreshed.
    fn interval_done(&mut self) {
        let t = self.started.elapsed().as_secs_f64();
        let secs = self.period.as_secs_f64();
        let plan = self.plan.clone();
        let mut points = Vec::new();
        for a in &mut self.apps {
            let iv = &a.interval;
            let live = matches!(a.state, "running" | "stopping" | "pending");
            let shards: Vec<u16> = a.active.iter().enumerate().filter(|(_, &x)| x).map(|(s, _)| s as u16).collect();
            if live || !shards.is_empty() {
                a.used.clone_from(&shards);
            }
            let point = Point {
                t,
                eps: iv.events_out as f64 / secs,
                p99_us: if iv.events_out > 0 { iv.latency_ns.value_at_quantile(0.99) as f64 / 1e3 } else { 0.0 },
                satisfaction: (iv.events_out > 0).then(|| iv.within_slo as f64 / iv.events_out as f64),
                shards,
            };
            let ap = &plan.apps[a.id];
            let sat =
                if a.totals.events_out == 0 { 1.0 } else { a.totals.within_slo as f64 / a.totals.events_out as f64 };
            self.handle.metrics.app_gauges(&a.name, sat, ap.slo_ns as f64 / 1e9);
            points.push((a.id, live.then_some(point)));
            a.interval.reset();
            if live {
                a.active.iter_mut().for_each(|x| *x = false);
            }
        }
        {
            let mut v = self.handle.view.lock().expect("view");
            for (id, p) in points {
                if let (Some(e), Some(p)) = (v.apps.iter_mut().find(|e| e.view.id == id as u16), p) {
                    e.series.push_back(p);
                    if e.series.len() > HISTORY {
                        e.series.pop_front();
                    }
                }
            }
        }
        // Gauges: queues, key groups hosted, lessees, spinning time.
        let m = &self.handle.metrics;
        let table = self.control.current().placement;
        for (s, sig) in self.signals.iter().enumerate() {
            let groups: usize = (0..plan.functions.len() as u16)
                .filter(|&f| {
                    plan.functions[f as usize].inputs.iter().any(|i| i.partition != crate::plan::Partition::Forward)
                })
                .filter(|&f| {
                    self.apps.iter().any(|a| {
                        a.id == plan.functions[f as usize].app as usize && matches!(a.state, "running" | "stopping")
                    })
                })
                .map(|f| table.groups_on(f, s as u16))
                .sum();
            m.shard_gauges(s, sig.queued(), groups, self.started.elapsed().as_nanos() as u64, &self.shard_ns[s]);
        }
        for (f, per_shard) in self.lessees.iter().enumerate() {
            let fp = &plan.functions[f];
            m.lessees(&plan.apps[fp.app as usize].name, &fp.name, per_shard.iter().sum());
        }
        m.process_cpu(cpu_seconds() - self.cpu0);
        self.publish_view();
    }
}
