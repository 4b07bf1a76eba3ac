//! Shared harness of the end-to-end oracle tests: runs a config on real shards under every
//! (shards, policy) setup, decodes what its sinks collected, replays its generator sources for
//! the sequential references, and compares outputs per key.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use dirigo_actors::record::{access, Value};
use dirigo_engine::compile::{collect_sinks, compile, settings};
use dirigo_engine::config::{Config, Distribution, SourceKind};
use dirigo_engine::policy::POLICY_NAMES;
use dirigo_engine::policy::{Admission, Builtin, LesseeCx, OfferCx, Placement, Policy, RouteCx, SchedCx};
use dirigo_engine::report::Summary;
use dirigo_engine::source::{Generator, GeneratorSpec, KeyDistribution};

/// Shard counts every oracle runs at (4 is more than this machine's CPUs: unpinned).
pub const SHARDS: [usize; 3] = [1, 2, 4];

/// A run that takes longer than this is reported as hung instead of blocking the suite (a
/// healthy run here takes well under 2 s in debug).
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// One collected output: the header fields a test checks and the decoded record.
#[derive(Clone, Debug, PartialEq)]
pub struct Out {
    pub key_hash: u64,
    pub event_time: u64,
    pub values: Vec<Value>,
}

/// Outputs grouped by key hash; each key's `(event_time, values)` in emission order.
pub type Keyed = BTreeMap<u64, Vec<(u64, Vec<Value>)>>;

/// What one engine run produced: its summary and every sink's outputs, in arrival order.
pub struct Run {
    pub summary: Summary,
    pub sinks: BTreeMap<String, Vec<Out>>,
}

impl Run {
    /// The outputs of sink `name` (none if it emitted nothing).
    pub fn sink(&self, name: &str) -> &[Out] {
        self.sinks.get(name).map_or(&[], Vec::as_slice)
    }

    /// The outputs of sink `name`, per key.
    pub fn keyed(&self, name: &str) -> Keyed {
        by_key(self.sink(name))
    }

    /// Outputs collected over every sink.
    pub fn total(&self) -> usize {
        self.sinks.values().map(Vec::len).sum()
    }
}

/// Group outputs by key hash, keeping each key's order.
pub fn by_key(outs: &[Out]) -> Keyed {
    let mut keyed = Keyed::new();
    for o in outs {
        keyed.entry(o.key_hash).or_default().push((o.event_time, o.values.clone()));
    }
    keyed
}

/// Parse a config written by a test.
pub fn parse(text: &str) -> Result<Config> {
    Config::parse(text, "test.toml").map_err(|e| anyhow!("{e}"))
}

/// Run every app of `config` to completion on `shards` shards under `policy`, every sink
/// replaced by a collector, each app spread over every shard (so keys cross shards).
pub fn run(config: &Config, shards: usize, policy: &str) -> Result<Run> {
    let policy = Builtin::by_name(policy).ok_or_else(|| anyhow!("no policy `{policy}`"))?;
    run_with(config, shards, policy)
}

/// [`run`] under any policy.
pub fn run_with<P: Policy + Clone + Send>(config: &Config, shards: usize, policy: P) -> Result<Run> {
    run_placed(config, shards, policy, Apps::Spread)
}

/// Where a run places its apps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Apps {
    /// Each app on every shard.
    Spread,
    /// As the config says (by default each app on one shard, packed beside the others).
    AsConfigured,
    /// Spread, with key groups forced to move all the time: every shard moves a random group
    /// to a random shard every [`MIGRATE_EVERY`] messages it runs.
    Migrating,
}

/// Messages between two forced key-group moves per shard in [`Apps::Migrating`] runs.
pub const MIGRATE_EVERY: u64 = 40;

/// [`run_with`], with the apps placed as `apps` says.
pub fn run_placed<P: Policy + Clone + Send>(config: &Config, shards: usize, policy: P, apps: Apps) -> Result<Run> {
    let mut config = config.clone();
    if apps == Apps::Migrating {
        config.engine.migrate_every = MIGRATE_EVERY;
        // Moves go only where the app may spread: everywhere here.
        config.apps.iter_mut().for_each(|a| a.max_cores = 0);
    }
    if apps != Apps::AsConfigured {
        config.apps.iter_mut().for_each(|a| a.cores = shards as u32);
    }
    let mut plan = compile(&config, shards).map_err(|e| anyhow!("{e}"))?;
    let outputs = collect_sinks(&mut plan);
    let settings = settings(&config);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = dirigo_engine::engine::run(plan, &settings, policy, Default::default(), |_| {});
        let _ = done_tx.send(result);
    });
    let summary = done_rx
        .recv_timeout(RUN_TIMEOUT)
        .map_err(|e| anyhow!("the engine did not finish within {RUN_TIMEOUT:?} ({e})"))??;
    let mut sinks: BTreeMap<String, Vec<Out>> = BTreeMap::new();
    for o in outputs.drain() {
        let values = access(&o.archive).context("a collected record")?.to_values();
        let out = Out { key_hash: o.key_hash, event_time: o.event_time, values };
        sinks.entry(o.sink.to_string()).or_default().push(out);
    }
    Ok(Run { summary, sinks })
}

/// A policy that forces dual-mode scaling: FIFO order, every other message routed to a lessee
/// (a new one where the limit allows), a quarter of the forwards refused and a quarter of the
/// lessees retired at each tick, from a seeded generator (each shard has its own copy).
#[derive(Clone, Debug)]
pub struct Forced {
    routed: u64,
    rng: u64,
}

impl Forced {
    pub fn new(seed: u64) -> Self {
        Forced { routed: 0, rng: seed | 1 }
    }

    /// xorshift64: one in `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng.is_multiple_of(n)
    }
}

impl Policy for Forced {
    fn on_enqueue(&mut self, _h: &dirigo_actors::envelope::Header, arrival: u64, _cx: &SchedCx<'_>) -> u64 {
        arrival
    }
    fn on_route(&mut self, _h: &dirigo_actors::envelope::Header, _route: &RouteCx) -> Placement {
        self.routed += 1;
        if self.routed.is_multiple_of(2) {
            Placement::Lessee
        } else {
            Placement::Lessor
        }
    }
    fn on_offer(&mut self, _h: &dirigo_actors::envelope::Header, _cx: &OfferCx) -> Admission {
        if self.one_in(4) {
            Admission::Refuse
        } else {
            Admission::Accept
        }
    }
    fn retire_lessee(&mut self, _cx: &LesseeCx) -> bool {
        self.one_in(4)
    }
}

/// Run `config` at every shard count of [`SHARDS`] under every policy with its apps spread over
/// every shard, and as configured (packed) under FIFO, and `check` each run. Every run must
/// also report exactly as many outputs as its sinks collected.
pub fn for_each_setup(config: &Config, mut check: impl FnMut(&Run) -> Result<()>) -> Result<()> {
    let spread = POLICY_NAMES.iter().map(|&p| (p, Apps::Spread));
    for shards in SHARDS {
        let packed = (shards > 1).then_some(("fifo", Apps::AsConfigured));
        // Forced migrations: under FIFO and under the policy that forces lessees (below), so
        // moves meet barriers, forwards and retirements.
        let migrating = (shards > 1).then_some(("fifo", Apps::Migrating));
        for (policy, apps) in spread.clone().chain(packed).chain(migrating) {
            let setup = format!("{shards} shard(s), policy {policy}, apps {apps:?}");
            let builtin = Builtin::by_name(policy).ok_or_else(|| anyhow!("no policy `{policy}`"))?;
            let run = run_placed(config, shards, builtin, apps).with_context(|| setup.clone())?;
            let reported: u64 = run.summary.apps.iter().map(|a| a.events_out).sum();
            ensure!(
                reported == run.total() as u64,
                "{setup}: summary events_out {reported}, collected {}",
                run.total()
            );
            check(&run).with_context(|| setup.clone())?;
        }
    }
    Ok(())
}

/// Check that `got` holds exactly the keys of `want`, each with the same sequence of outputs.
pub fn assert_keyed_eq(what: &str, got: &Keyed, want: &Keyed) -> Result<()> {
    for (key, w) in want {
        let g = got.get(key).map_or(&[][..], Vec::as_slice);
        if let Some(i) = (0..g.len().max(w.len())).find(|&i| g.get(i) != w.get(i)) {
            bail!(
                "{what}: key {key:#018x}: output {i} is {:?}, the reference has {:?} ({} outputs, reference {})",
                g.get(i),
                w.get(i),
                g.len(),
                w.len()
            );
        }
    }
    if let Some((key, g)) = got.iter().find(|(k, _)| !want.contains_key(k)) {
        bail!("{what}: key {key:#018x} is not in the reference; its first output is {:?}", g[0]);
    }
    Ok(())
}

/// Every `(event_time, values)` the generator source `name` of `config` produces, in order:
/// the same generator, spec and schema the engine builds (event `i` depends only on the seed
/// and `i`). Only single-instance generators with a fixed event count are replayed.
pub fn generated(config: &Config, name: &str) -> Result<Vec<(u64, Vec<Value>)>> {
    let (app, g) = config
        .apps
        .iter()
        .flat_map(|a| a.sources.iter().map(move |s| (a, s)))
        .find_map(|(a, s)| match &s.kind {
            SourceKind::Generator(g) if s.name.get_ref() == name => Some((a, g)),
            _ => None,
        })
        .ok_or_else(|| anyhow!("no generator source `{name}`"))?;
    ensure!(g.parallelism == 1 && g.events.is_some(), "`{name}`: replay needs parallelism 1 and `events`");
    let schema = app.schema.to_schema();
    let position = |field: &str| schema.position(field).ok_or_else(|| anyhow!("no field `{field}`"));
    let spec = GeneratorSpec {
        rate: g.rate,
        events: g.events,
        duration: g.duration,
        keys: g.keys,
        key_field: position(g.key_field.get_ref())?,
        distribution: match g.distribution {
            Distribution::Uniform => KeyDistribution::Uniform,
            Distribution::Zipf => KeyDistribution::Zipf { s: g.zipf_s },
        },
        seed: g.seed,
        bursts: Vec::new(),
        event_time_field: app.event_time.as_ref().map(|f| position(f.get_ref())).transpose()?,
        instance: 0,
        parallelism: 1,
    };
    let mut generator = Generator::new(spec, &schema)?;
    let mut events = Vec::new();
    let mut values = Vec::new();
    while let Some(t) = generator.next_event(&mut values) {
        events.push((t, values.clone()));
    }
    Ok(events)
}

/// A file under the temp dir, unique to this process and call, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// Create `<tmp>/dirigo-<tag>-<pid>-<n>.<ext>` holding `text`.
    pub fn with_text(tag: &str, ext: &str, text: &str) -> Result<TempFile> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("dirigo-{tag}-{}-{n}.{ext}", std::process::id()));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(TempFile(path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Field accessors for references: a value of the wrong type is a test bug, so they panic.
pub fn u(v: &Value) -> u64 {
    match v {
        Value::U64(x) => *x,
        other => panic!("expected u64, got {other:?}"),
    }
}

/// See [`u`].
pub fn i(v: &Value) -> i64 {
    match v {
        Value::I64(x) => *x,
        other => panic!("expected i64, got {other:?}"),
    }
}

/// See [`u`].
pub fn f(v: &Value) -> f64 {
    match v {
        Value::F64(x) => *x,
        other => panic!("expected f64, got {other:?}"),
    }
}

/// See [`u`].
pub fn b(v: &Value) -> bool {
    match v {
        Value::Bool(x) => *x,
        other => panic!("expected bool, got {other:?}"),
    }
}

/// See [`u`].
pub fn s(v: &Value) -> &str {
    match v {
        Value::Str(x) => x,
        other => panic!("expected string, got {other:?}"),
    }
}

/// The aggregate `op` (count, sum, min, max, avg) of `xs`, computed directly from the list:
/// integer sums wrap, an integer average divides the exact sum, floats add left to right.
pub fn aggregate(op: &str, xs: &[Value]) -> Value {
    assert!(!xs.is_empty(), "no aggregate of nothing");
    if op == "count" {
        return Value::U64(xs.len() as u64);
    }
    let (ints, floats): (Vec<i128>, Vec<f64>) = match &xs[0] {
        Value::F64(_) => (Vec::new(), xs.iter().map(f).collect()),
        Value::U64(_) => (xs.iter().map(|v| u(v) as i128).collect(), Vec::new()),
        _ => (xs.iter().map(|v| i(v) as i128).collect(), Vec::new()),
    };
    let int = |x: i128| match &xs[0] {
        Value::U64(_) => Value::U64(x as u64),
        _ => Value::I64(x as i64),
    };
    let float_sum = || floats.iter().fold(0.0, |acc, x| acc + x);
    let is_float = !floats.is_empty();
    match op {
        "sum" if is_float => Value::F64(float_sum()),
        "sum" => int(ints.iter().sum::<i128>()), // `as` truncation = wrapping
        "min" if is_float => Value::F64(floats.iter().copied().fold(f64::INFINITY, f64::min)),
        "min" => int(*ints.iter().min().expect("non-empty")),
        "max" if is_float => Value::F64(floats.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        "max" => int(*ints.iter().max().expect("non-empty")),
        "avg" if is_float => Value::F64(float_sum() / xs.len() as f64),
        "avg" => Value::F64(ints.iter().sum::<i128>() as f64 / xs.len() as f64),
        other => panic!("no aggregate `{other}`"),
    }
}

/// Start of every window of `size` every `slide` (ms) that contains `t`, ascending.
pub fn window_starts(t: u64, size: u64, slide: u64) -> impl Iterator<Item = u64> {
    (0..=t / slide).map(move |j| j * slide).filter(move |s| s + size > t)
}
