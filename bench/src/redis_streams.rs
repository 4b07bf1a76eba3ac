//! Scenario `redis`: the redis sink and source against what the same Redis server does for
//! `redis-benchmark`, side by side on one machine. Starts its own `redis-server` on a free
//! loopback port (no persistence) and stops it; needs `redis-server` and `redis-benchmark`
//! (Debian's `redis-server` package brings both).
//!
//! Each round (5 rounds of 500,000 entries, about 30 s in all; `--quick`: 1 of 20,000) measures,
//! in this order, as entries/s; the medians over rounds are also given as a ratio to the median
//! of `redis-benchmark`'s XADD rate:
//!
//! - `redis-benchmark xadd`: `redis-benchmark -t xadd -n N -P 64 -q` where the installed
//!   redis-benchmark has an `xadd` test, else the same command given as is
//!   (`XADD bench * k 1 v 2`, 7.0 has no `xadd` test); its default 50 connections. Also with
//!   one connection (`-c 1`), as the sink's writer thread has.
//! - `sink write-through`: N records `{k, v}` pushed into a `RedisSinkWriter` (hand-over in chunks
//!   of 1,024, one pipeline each), until the barrier after them is acknowledged.
//! - `sink staged`: the same into a staged writer, a barrier every 10,000 records; a controller
//!   thread waits for each barrier's receiver and calls `commit_staged` for that epoch, as the
//!   engine's controller will; until the last epoch is committed. `commit_staged` alone is
//!   reported too (entries over the time spent in its calls).
//! - `source`: a `RedisSource` (XREAD in batches of 512 on its own thread) read through
//!   `SourceInstance::produce`, as a shard polls it, from a stream pre-filled with N entries to
//!   its end.
//!
//! Nothing is pinned: redis-server needs a core too (with 2 cores, the measuring threads and the
//! server share them).
//!
//! ```text
//! cargo run --release -p dirigo-bench -- redis [--quick]
//! ```

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use dirigo_actors::record::{access, FieldType, Record, Schema, Value as Field};
use dirigo_engine::redis_sink::{commit_staged, BarrierAck, RedisSinkWriter};
use dirigo_engine::source::{RedisSource, RedisSpec, SourceInstance};
use dirigo_net::ingress::Produced;
use rkyv::util::AlignedVec;
use serde::Serialize;
use serde_json::{json, Value};

use crate::report::{median, ratio, Table};
use crate::{sys, Opts};

/// Records per staged epoch.
const EPOCH: u64 = 10_000;
/// Entries per pipeline when filling the source's stream.
const FILL_PIPELINE: u64 = 1_000;

/// What is measured, in the order run within a round.
const MEASURES: [&str; 6] = [
    "redis-benchmark xadd",
    "redis-benchmark xadd, 1 connection",
    "sink write-through",
    "sink staged",
    "commit_staged alone",
    "source",
];

/// One measurement.
#[derive(Debug, Serialize)]
struct Run {
    measure: &'static str,
    round: usize,
    entries: u64,
    seconds: f64,
    entries_per_s: f64,
}

/// A `redis-server` of this scenario: killed and its directory removed on drop.
struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
    url: String,
}

impl Server {
    fn start() -> anyhow::Result<Server> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("dirigo-bench-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow!(
                    "the redis scenario needs `redis-server` on PATH ({e}): install it with \
                     `apt-get install redis-server` (./test.sh does)"
                )
            })?;
        let server = Server { child, dir, port, url: format!("redis://127.0.0.1:{port}/") };
        // Wait until it answers (it listens within milliseconds).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ping = server.con().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return Ok(server);
            }
            ensure!(Instant::now() < deadline, "redis-server did not answer on port {port} within 10 s: {ping:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn con(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url.as_str())?.get_connection()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn schema() -> Schema {
    Schema::new(vec![("k".into(), FieldType::U64), ("v".into(), FieldType::U64)])
}

/// Run the scenario; returns its `results` JSON.
pub fn run_scenario(opts: Opts) -> anyhow::Result<Value> {
    sys::load_before();
    let (entries, rounds) = if opts.quick { (20_000u64, 1) } else { (500_000, 5) };
    let server = Server::start()?;
    let mut con = server.con().context("connecting to the scenario's redis-server")?;
    let xadd = XaddForm::detect(server.port)?;
    let records: Vec<AlignedVec> =
        (0..entries).map(|i| Record::from(vec![Field::U64(i % 1000), Field::U64(i)]).to_archive()).collect();
    let mut runs: Vec<Run> = Vec::new();
    for round in 0..rounds {
        for measure in MEASURES {
            redis::cmd("FLUSHALL").query::<()>(&mut con)?;
            let (n, seconds) = match measure {
                "redis-benchmark xadd" => xadd.run(server.port, entries, None)?,
                "redis-benchmark xadd, 1 connection" => xadd.run(server.port, entries, Some(1))?,
                "sink write-through" => write_through(&server.url, &records, &mut con)?,
                "sink staged" => {
                    let (staged, commit) = staged(&server.url, &records, &mut con)?;
                    runs.push(Run {
                        measure: "commit_staged alone",
                        round,
                        entries: commit.0,
                        seconds: commit.1,
                        entries_per_s: commit.0 as f64 / commit.1,
                    });
                    staged
                }
                "commit_staged alone" => continue, // measured with `sink staged`
                "source" => source(&server.url, entries, &mut con)?,
                _ => unreachable!(),
            };
            let run = Run { measure, round, entries: n, seconds, entries_per_s: n as f64 / seconds };
            println!("{measure:<36} #{round}: {:>10.0} entries/s ({n} in {seconds:.3} s)", run.entries_per_s);
            runs.push(run);
        }
    }
    let per_s = |measure: &str| -> f64 {
        median(&runs.iter().filter(|r| r.measure == measure).map(|r| r.entries_per_s).collect::<Vec<_>>())
    };
    let xadd_eps = per_s(MEASURES[0]);
    let mut table = Table::new(&["measure", "entries/s", "vs redis-benchmark xadd"]);
    let medians: Vec<Value> = MEASURES
        .iter()
        .map(|&m| {
            let eps = per_s(m);
            table.row(vec![m.to_owned(), format!("{eps:.0}"), format!("{:.3}", ratio(eps, xadd_eps))]);
            json!({ "measure": m, "rounds": rounds, "entries_per_s": eps, "ratio_to_xadd": ratio(eps, xadd_eps) })
        })
        .collect();
    println!("\nmedians over {rounds} round(s), {entries} entries each ({}):\n{}", xadd.label, table.render());
    Ok(json!({
        "entries": entries,
        "rounds": rounds,
        "staged_epoch_records": EPOCH,
        "redis_version": server_version(&mut con),
        "xadd_benchmark": xadd.label,
        "runs": runs,
        "medians": medians,
    }))
}

fn server_version(con: &mut redis::Connection) -> String {
    let info: String = redis::cmd("INFO").arg("server").query(con).unwrap_or_default();
    info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").trim().to_owned()
}

/// How `redis-benchmark` is asked for XADD: `-t xadd` where it has that test (7.0 has none and
/// prints nothing), else the command as is.
struct XaddForm {
    args: &'static [&'static str],
    label: &'static str,
}

impl XaddForm {
    fn detect(port: u16) -> anyhow::Result<XaddForm> {
        let test = XaddForm { args: &["-t", "xadd"], label: "redis-benchmark -t xadd -P 64" };
        if test.rate(port, 1_000, None)?.is_some() {
            return Ok(test);
        }
        Ok(XaddForm {
            args: &["XADD", "bench", "*", "k", "1", "v", "2"],
            label: "redis-benchmark -P 64 XADD bench * k 1 v 2 (it has no xadd test)",
        })
    }

    /// (requests, seconds) of `requests` XADDs, seconds = requests / the rate it reports.
    fn run(&self, port: u16, requests: u64, clients: Option<u32>) -> anyhow::Result<(u64, f64)> {
        let rate = self
            .rate(port, requests, clients)?
            .ok_or_else(|| anyhow!("`{}` printed no `requests per second`", self.label))?;
        ensure!(rate > 0.0, "redis-benchmark reported {rate} requests/s");
        Ok((requests, requests as f64 / rate))
    }

    fn rate(&self, port: u16, requests: u64, clients: Option<u32>) -> anyhow::Result<Option<f64>> {
        let mut cmd = Command::new("redis-benchmark");
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-n", &requests.to_string(), "-P", "64", "-q"]);
        if let Some(c) = clients {
            cmd.args(["-c", &c.to_string()]);
        }
        let out = cmd.args(self.args).stdin(Stdio::null()).output().map_err(|e| {
            anyhow!(
                "the redis scenario needs `redis-benchmark` on PATH ({e}): `apt-get install redis-server` brings it"
            )
        })?;
        ensure!(out.status.success(), "redis-benchmark failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(requests_per_second(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// The rate of the last `... requests per second` line of `redis-benchmark -q` (its progress
/// lines end with `\r`).
fn requests_per_second(out: &str) -> Option<f64> {
    out.split(['\r', '\n']).rfind(|l| l.contains("requests per second")).and_then(|l| {
        let before = &l[..l.find("requests per second")?];
        before.trim_end().rsplit([' ', ':']).next()?.parse().ok()
    })
}

fn push_all(w: &mut RedisSinkWriter, records: &[AlignedVec]) {
    for r in records {
        w.push(access(r).expect("a record archive"));
    }
}

fn xlen(con: &mut redis::Connection, key: &str) -> anyhow::Result<u64> {
    Ok(redis::cmd("XLEN").arg(key).query(con)?)
}

fn acked(rx: BarrierAck) -> anyhow::Result<()> {
    rx.recv().map_err(|_| anyhow!("the writer thread ended"))?.map_err(|e| anyhow!(e))
}

/// Write-through: every record, until the barrier after them is acknowledged.
fn write_through(url: &str, records: &[AlignedVec], con: &mut redis::Connection) -> anyhow::Result<(u64, f64)> {
    let mut w = RedisSinkWriter::new(url, "through", &schema(), "bench/through".into())?;
    let t = Instant::now();
    push_all(&mut w, records);
    acked(w.barrier(1))?;
    let seconds = t.elapsed().as_secs_f64();
    drop(w);
    let n = xlen(con, "through")?;
    ensure!(n == records.len() as u64, "write-through wrote {n} of {} entries", records.len());
    Ok((n, seconds))
}

/// Staged: a barrier every [`EPOCH`] records, each epoch committed by a controller thread once
/// its barrier is acknowledged. Returns (entries, seconds) to the last commit, and (entries,
/// seconds inside `commit_staged`).
fn staged(url: &str, records: &[AlignedVec], con: &mut redis::Connection) -> anyhow::Result<((u64, f64), (u64, f64))> {
    let (tx, rx) = flume::unbounded::<(u64, BarrierAck)>();
    let controller_url = url.to_owned();
    let controller = std::thread::spawn(move || -> anyhow::Result<(u64, f64)> {
        let (mut appended, mut in_commit) = (0, 0.0);
        for (epoch, ack) in rx.iter() {
            acked(ack)?;
            let t = Instant::now();
            appended += commit_staged(&controller_url, "staged", &[0], epoch)?;
            in_commit += t.elapsed().as_secs_f64();
        }
        Ok((appended, in_commit))
    });
    let mut w = RedisSinkWriter::new(url, "staged", &schema(), "bench/staged".into())?.staged(0);
    let t = Instant::now();
    for (i, chunk) in records.chunks(EPOCH as usize).enumerate() {
        push_all(&mut w, chunk);
        let epoch = i as u64 + 1;
        tx.send((epoch, w.barrier(epoch)))?;
    }
    drop(tx);
    let (appended, in_commit) = controller.join().map_err(|_| anyhow!("the controller thread panicked"))??;
    let seconds = t.elapsed().as_secs_f64();
    drop(w);
    let n = xlen(con, "staged")?;
    ensure!(n == records.len() as u64 && appended == n, "staged: {n} entries, {appended} appended");
    let left: Vec<String> = redis::cmd("KEYS").arg("dirigo:staged*").query(con)?;
    ensure!(left.is_empty(), "staging keys left after the last commit: {left:?}");
    Ok(((n, seconds), (appended, in_commit)))
}

/// The source: a stream of `entries` (filled by pipelines first) read to its end.
fn source(url: &str, entries: u64, con: &mut redis::Connection) -> anyhow::Result<(u64, f64)> {
    for start in (0..entries).step_by(FILL_PIPELINE as usize) {
        let mut pipe = redis::pipe();
        for i in start..(start + FILL_PIPELINE).min(entries) {
            pipe.cmd("XADD").arg("in").arg("*").arg("k").arg(i % 1000).arg("v").arg(i).ignore();
        }
        pipe.query::<()>(con)?;
    }
    let spec = RedisSpec {
        url: url.to_owned(),
        stream: "in".into(),
        group: None,
        start: "0-0".into(),
        follow: false,
        name: "bench/in".into(),
    };
    let mut s = SourceInstance::Redis(Box::new(RedisSource::new(spec, schema())?));
    let (mut values, mut bytes) = (Vec::new(), AlignedVec::new());
    let mut n = 0u64;
    let t = Instant::now();
    loop {
        match s.produce(&mut values, &mut bytes) {
            Some(Produced::Values { .. }) => n += 1,
            // Nothing read yet: let the reader thread (and the server) have the core.
            Some(Produced::Idle) => std::thread::yield_now(),
            Some(other) => bail!("the redis source produced {other:?}"),
            None => break,
        }
    }
    let seconds = t.elapsed().as_secs_f64();
    ensure!(n == entries, "the source read {n} of {entries} entries");
    Ok((n, seconds))
}

/// The figure: entries/s per measure, and each as a ratio to redis-benchmark's XADD.
pub fn figure(r: &Value) -> Vec<crate::plot::Panel> {
    use crate::figures::{num, rows};
    use crate::plot::{Panel, Series};
    let medians = rows(r, "medians");
    let names: Vec<String> = medians.iter().filter_map(|m| m["measure"].as_str().map(String::from)).collect();
    let series = |key: &str, name: &str| vec![Series::new(name, medians.iter().map(|m| num(&m[key])).collect())];
    vec![
        Panel::bars(
            "throughput (median over rounds)",
            "entries/s",
            names.clone(),
            series("entries_per_s", "entries/s"),
        ),
        Panel::bars("against redis-benchmark XADD", "ratio", names, series("ratio_to_xadd", "ratio to xadd")),
    ]
}

#[cfg(test)]
mod tests {
    use super::requests_per_second;

    #[test]
    fn reads_redis_benchmark_quiet_output() {
        let out = "XADD bench * k 1 v 2: rps=0.0 (overall: nan) avg_msec=nan\r\
                   XADD bench * k 1 v 2: 716846.00 requests per second, p50=3.479 msec\n\n";
        assert_eq!(requests_per_second(out), Some(716846.0));
        assert_eq!(requests_per_second("XADD: 1234.5 requests per second\n"), Some(1234.5));
        assert_eq!(requests_per_second(""), None);
    }
}
