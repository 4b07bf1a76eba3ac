//! Scenario `nexmark`: NEXMark queries 1, 2, 5, 7 and 8 over a deterministic NEXMark stream
//! ([`gen`]), each built from Dirigo user functions ([`queries`]) on 2 shards (a source instance
//! on each, reading the stream in splits handed to whichever asks) and checked against a
//! sequential reference over the same events: a different output multiset (or, for Q1 and Q2,
//! a different order of the outputs of one key from one split) fails the scenario.
//!
//! ```text
//! cargo run --release -p dirigo-bench -- nexmark [--quick]
//! ```
//! Each query runs once checked, on the engine and in the reference, then five times timed,
//! alternating the two (medians reported). The checked pair keeps every output (the engine's
//! through a collecting sink) and compares them. The timed runs discard their outputs as they
//! are made, as NEXMark runs do (a blackhole sink): Q1 makes a row for every bid, and holding
//! 920,000 rows in memory measures the page faults of that memory more than the query (in a
//! profile of a collecting run, a quarter of the shards' time was the kernel clearing pages).
//!
//! Reported per query: events/s (all NEXMark events the source produced, closed loop), the
//! sequential reference's events/s (the same events generated and queried by plain loops on one
//! thread: what the query costs without an engine), the reference on two threads at once over
//! half the events each (what the machine's two CPUs give together; for the stateless Q1 and Q2
//! the ceiling of any engine here), all with outputs discarded, and the first two again
//! with every output kept; end-to-end latency from the engine's summaries of the timed runs (each percentile's median), the
//! number of outputs and whether they match the reference.

pub mod gen;
pub mod queries;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use self::queries::{reference, reference_discarding, run_engine, Outputs, Query, Row};
use crate::report::{median, median_latency, meps, us, Table};
use crate::Opts;

/// Seed of the stream.
const SEED: u64 = 0x5eed_2002;
/// Shards every query runs on.
const SHARDS: usize = 2;
/// Timed (discarding) runs of each query, each followed by a timed run of its reference and
/// one of the reference on two threads.
const TIMED_PAIRS: usize = 5;

/// One query's result.
struct Outcome {
    query: Query,
    /// Events per second with the outputs discarded (a latency sink), as NEXMark runs measure.
    events_per_s: f64,
    /// Events per second of the sequential reference (generation + plain loops, one thread),
    /// its outputs discarded as they come.
    reference_events_per_s: f64,
    /// The reference on `SHARDS` threads at once, each over as many events as the engine's
    /// shards get (pinned to CPUs 0.., one each): what this machine's cores do together with no
    /// engine, the ceiling of the engine's events/s here (on two hyperthreads of one core it is
    /// well under twice one thread).
    parallel_reference_events_per_s: f64,
    /// Median over the timed pairs of each engine run's events/s over the reference run right
    /// after it: a VM whose speed shifts between runs shifts both of a pair alike more often
    /// than it does the medians of all runs.
    paired_ratio: f64,
    /// Per timed pair: the engine's, the reference's and the two-thread reference's events/s.
    pairs: Vec<[f64; 3]>,
    /// The same two with every output kept in memory (the checked runs).
    collected_events_per_s: f64,
    reference_collected_events_per_s: f64,
    /// Latency of the timed (discarding) runs, each percentile's median.
    latency_us: dirigo_engine::report::LatencyUs,
    outputs: usize,
    /// Per timed engine run: the one-way cache-line time between the first two CPUs (ns) just
    /// before and after it (`sys::line_transfer_ns`).
    line_ns: Vec<crate::sys::LineNs>,
}

/// Check `got` (in arrival order) against `want` (the reference, in its order): the same
/// multiset, and for queries ordered per key the same sequence per key. Errors with the first
/// difference.
fn compare(q: Query, got: &[Row], want: &[Row]) -> anyhow::Result<()> {
    let mut g: Vec<&Row> = got.iter().collect();
    let mut w: Vec<&Row> = want.iter().collect();
    g.sort();
    w.sort();
    if let Some(i) = (0..g.len().min(w.len())).find(|&i| g[i] != w[i]) {
        anyhow::bail!(
            "{}: output differs from the reference at sorted row {i}: engine {:?}, reference {:?} ({} vs {} rows)",
            q.name(),
            g[i],
            w[i],
            g.len(),
            w.len()
        );
    }
    if g.len() != w.len() {
        let (more, extra) = if g.len() > w.len() { ("engine", g[w.len()]) } else { ("reference", w[g.len()]) };
        anyhow::bail!(
            "{}: {} rows from the engine, {} in the reference; first extra in the {more}: {extra:?}",
            q.name(),
            g.len(),
            w.len()
        );
    }
    if q.ordered_per_key() {
        let per_key = |rows: &[Row]| {
            let mut m: BTreeMap<(u64, u64), Vec<Row>> = BTreeMap::new();
            for r in rows {
                m.entry(r.order_key().expect("ordered rows have a key")).or_default().push(r.clone());
            }
            m
        };
        let (pg, pw) = (per_key(got), per_key(want));
        for (k, rows) in &pw {
            let mine = &pg[k];
            if let Some(i) = (0..rows.len()).find(|&i| mine[i] != rows[i]) {
                anyhow::bail!(
                    "{}: key and split {k:?}: output {i} out of order: engine {:?}, reference {:?}",
                    q.name(),
                    mine[i],
                    rows[i]
                );
            }
        }
    }
    Ok(())
}

/// Events/s of [`reference_discarding`] run on `threads` threads at once, each over
/// `events / threads` events, each pinned to a CPU of its own where it can be: how much the
/// machine's CPUs give together to the query's own work.
fn parallel_reference(q: Query, events: u64, threads: usize) -> f64 {
    let share = events / threads as u64;
    let start = std::sync::Barrier::new(threads + 1);
    // The clock starts when every thread is ready; the scope ends when the last is done.
    let t = std::thread::scope(|s| {
        for cpu in 0..threads {
            let start = &start;
            s.spawn(move || {
                // An unpinned thread still measures the machine, only less exactly.
                let _ = crate::sys::pin_to(cpu);
                start.wait();
                std::hint::black_box(reference_discarding(q, SEED, share));
            });
        }
        start.wait();
        std::time::Instant::now()
    });
    (share * threads as u64) as f64 / t.elapsed().as_secs_f64().max(1e-9)
}

/// Run `q` over `events` events on the engine and check it against the reference (both keep
/// every output), then time both again with their outputs discarded.
fn run_checked(q: Query, events: u64) -> anyhow::Result<Outcome> {
    let run = run_engine(q, SEED, events, SHARDS, Outputs::Collect)?;
    let app = &run.summary.apps[0];
    anyhow::ensure!(app.events_in == events, "{}: the source produced {} of {events} events", q.name(), app.events_in);
    let per_s = |t: std::time::Instant| events as f64 / t.elapsed().as_secs_f64().max(1e-9);
    let t = std::time::Instant::now();
    let want = reference(q, SEED, events);
    let reference_collected_events_per_s = per_s(t);
    compare(q, &run.rows, &want)?;
    // The timed pairs, alternated: a noisy machine moves a single run of either by 30%.
    let (mut pairs, mut latencies, mut line_ns) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..TIMED_PAIRS {
        let (timed, line) = crate::sys::line_ns_around(|| run_engine(q, SEED, events, SHARDS, Outputs::Discard));
        let timed = timed?;
        line_ns.push(line);
        let timed_app = &timed.summary.apps[0];
        anyhow::ensure!(
            timed_app.events_out == app.events_out,
            "{}: the discarding run made {} outputs, the collecting run {}",
            q.name(),
            timed_app.events_out,
            app.events_out
        );
        latencies.push(timed_app.latency_us.clone());
        let t = std::time::Instant::now();
        let made = reference_discarding(q, SEED, events);
        let reference_eps = per_s(t);
        pairs.push([timed_app.throughput_eps, reference_eps, parallel_reference(q, events, SHARDS)]);
        anyhow::ensure!(
            made == want.len(),
            "{}: the discarding reference made {made} rows, the collecting one {}",
            q.name(),
            want.len()
        );
    }
    let median_of = |f: fn(&[f64; 3]) -> f64| median(&pairs.iter().map(f).collect::<Vec<_>>());
    Ok(Outcome {
        query: q,
        events_per_s: median_of(|p| p[0]),
        reference_events_per_s: median_of(|p| p[1]),
        parallel_reference_events_per_s: median_of(|p| p[2]),
        paired_ratio: median_of(|p| p[0] / p[1]),
        pairs,
        collected_events_per_s: app.throughput_eps,
        reference_collected_events_per_s,
        latency_us: median_latency(&latencies.iter().collect::<Vec<_>>()),
        outputs: run.rows.len(),
        line_ns,
    })
}

/// Run the scenario.
pub fn run_scenario(opts: Opts) -> anyhow::Result<Value> {
    let events: u64 = if opts.quick { 20_000 } else { 1_000_000 };
    let mut table = Table::new(&[
        "query",
        "events/s",
        "reference ev/s",
        "ratio",
        "ref. x2 ev/s",
        "of x2",
        "collected ev/s",
        "ref. collected",
        "p50 µs",
        "p99 µs",
        "outputs",
        "matches",
    ]);
    let mut queries = Vec::new();
    let events = opts.events.unwrap_or(events);
    anyhow::ensure!(events > 0, "--events: at least 1");
    let chosen = opts.query.map_or(Query::ALL.to_vec(), |q| vec![q]);
    for q in chosen {
        let o = run_checked(q, events)?;
        table.row(vec![
            o.query.name().to_owned(),
            meps(o.events_per_s),
            meps(o.reference_events_per_s),
            format!("{:.2}x", o.paired_ratio),
            meps(o.parallel_reference_events_per_s),
            format!("{:.2}x", o.events_per_s / o.parallel_reference_events_per_s),
            meps(o.collected_events_per_s),
            meps(o.reference_collected_events_per_s),
            us(o.latency_us.p50),
            us(o.latency_us.p99),
            o.outputs.to_string(),
            "yes".to_owned(),
        ]);
        queries.push(json!({
            "query": o.query.name(),
            "events_per_s": o.events_per_s,
            "reference_events_per_s": o.reference_events_per_s,
            "parallel_reference_events_per_s": o.parallel_reference_events_per_s,
            "paired_ratio": o.paired_ratio,
            "pairs": o.pairs,
            "collected_events_per_s": o.collected_events_per_s,
            "reference_collected_events_per_s": o.reference_collected_events_per_s,
            "latency_us": o.latency_us,
            "outputs": o.outputs,
            "matches_reference": true,
            "line_ns": o.line_ns,
        }));
    }
    println!("nexmark: {events} events, {SHARDS} shards, seed {SEED:#x}\n");
    print!("{}", table.render());
    Ok(json!({ "events": events, "shards": SHARDS, "seed": SEED, "queries": queries }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_matches_its_reference_on_2_shards() {
        for q in Query::ALL {
            let o = run_checked(q, 5_000).unwrap_or_else(|e| panic!("{e:#}"));
            // 4,600 bids; a handful of Q2 matches and Q8 joins; one row or more per window.
            assert!(o.outputs > 0, "{}: no output", q.name());
        }
    }

    #[test]
    fn compare_reports_differences() {
        // A bid of `auction`, the `i`th event.
        let r = |auction, i| Row::Q2 { auction, price: 1, date_time: gen::time_of(i) };
        assert!(compare(Query::Q2, &[r(1, 2), r(2, 1), r(1, 3)], &[r(2, 1), r(1, 2), r(1, 3)]).is_ok());
        assert!(compare(Query::Q2, &[r(1, 3), r(1, 2)], &[r(1, 2), r(1, 3)]).is_err(), "per-key order");
        assert!(compare(Query::Q2, &[r(1, 2)], &[r(1, 2), r(1, 3)]).is_err(), "missing row");
        assert!(compare(Query::Q2, &[r(1, 2), r(1, 4)], &[r(1, 2), r(1, 3)]).is_err(), "different row");
        // Events of two splits may come in either order (two instances read them); of one, not.
        let next = queries::SPLIT_EVENTS;
        assert!(compare(Query::Q2, &[r(1, next), r(1, 2)], &[r(1, 2), r(1, next)]).is_ok(), "two splits");
        assert!(compare(Query::Q2, &[r(1, next + 1), r(1, next)], &[r(1, next), r(1, next + 1)]).is_err(), "one split");
    }
}
