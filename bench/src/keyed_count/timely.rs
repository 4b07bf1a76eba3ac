//! W1 on timely-dataflow (crate `timely`), the peer system: `timely::execute` with
//! `Config::process(2)`, each worker pinned to its CPU (worker i on CPU i) and running the same
//! dataflow:
//!
//! ```text
//! input (this worker's share of the events) -> map (value + 1) -> exchange by key
//!   -> keyed count (`unary`, a HashMap per worker) -> probe -> latency sink (`sink`)
//! ```
//!
//! The worker thread is both the source and the processor, as timely programs are: it feeds its
//! input, then `step`s the worker. Global event `i` (generated exactly as the baseline does: a
//! pure function of seed and index) belongs to worker `i % workers`.
//!
//! - `max` (closed loop): each worker sends its events in epochs of [`EPOCH_EVENTS`], advances the
//!   input, steps, and lets at most [`WINDOW`] epochs be in flight (the probe's frontier, after the
//!   count, paces it: timely has no input backpressure of its own). Latency is from generation.
//! - `rate` (open loop): events are fed when due by the wall clock (global event `i` is due
//!   `i / rate` after a start both workers share), whatever the dataflow's state: there is no
//!   backpressure, so overload shows as growing latency. Latency is from the scheduled time. The
//!   epoch is the scheduled millisecond; data is flushed into the dataflow before every step.
//!
//! `wall_seconds` runs from the shared start (dataflow built, workers past a barrier) to the last
//! worker's end; `cpu_seconds` is the process CPU of the whole `execute`, set-up included.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ::timely::dataflow::channels::pact::{Exchange, Pipeline};
use ::timely::dataflow::operators::vec::Map;
use ::timely::dataflow::operators::{Input, Operator, Probe};
use ::timely::dataflow::{InputHandleVec, ProbeHandle};
use ::timely::synchronization::Barrier;
use ::timely::worker::Worker;
use ::timely::Config;
use anyhow::anyhow;
use dirigo_actors::record::mix64;
use dirigo_net::clock::now_ns;
use hdrhistogram::Histogram;

use super::{Load, Measurement, Workload};
use crate::report::{histogram, latency_of};
use crate::sys::{cpu_seconds, pin_to};

/// `max`: events a worker sends per epoch before it advances its input and steps.
const EPOCH_EVENTS: u64 = 1_000;
/// `max`: epochs a worker may have in flight (not yet past the count) before it waits.
const WINDOW: u64 = 16;
/// `rate`: length of an epoch of scheduled time, in ns.
const RATE_EPOCH_NS: u64 = 1_000_000;

/// One event: key, value, and its scheduled (open loop) or generation (closed loop) time on the
/// `clock::now_ns` base.
type Event = (u64, u64, u64);

/// What one worker hands back.
struct WorkerOut {
    events_in: u64,
    events_out: u64,
    hist: Histogram<u64>,
    start_ns: u64,
    end_ns: u64,
}

/// Run W1 under `load` on timely-dataflow with `w.shards` workers.
pub fn run(load: Load, w: &Workload) -> anyhow::Result<Measurement> {
    let w = *w;
    let start_at = Arc::new(AtomicU64::new(0));
    now_ns();
    let cpu0 = cpu_seconds();
    let guards = ::timely::execute(Config::process(w.shards), move |worker| worker_main(worker, load, &w, &start_at))
        .map_err(|e| anyhow!("timely::execute: {e}"))?;
    let mut hist = histogram();
    let (mut events_in, mut events_out, mut start_ns, mut end_ns) = (0, 0, u64::MAX, 0);
    for result in guards.join() {
        let out = result.map_err(|e| anyhow!("timely worker: {e}"))?.map_err(|e| anyhow!("timely worker: {e}"))?;
        events_in += out.events_in;
        events_out += out.events_out;
        hist.add(&out.hist).map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        start_ns = start_ns.min(out.start_ns);
        end_ns = end_ns.max(out.end_ns);
    }
    let cpu_seconds = cpu_seconds() - cpu0;
    anyhow::ensure!(events_in == load.events(), "timely took {events_in} events of {}", load.events());
    Ok(Measurement {
        events_in,
        events_out,
        wall_seconds: end_ns.saturating_sub(start_ns) as f64 / 1e9,
        cpu_seconds,
        latency_us: latency_of(&hist),
        stalled: false,
        envelopes_per_batch: None,
    })
}

/// Global event `i` of W1 after the map: (key, value + 1).
#[inline]
fn event(w: &Workload, i: u64) -> (u64, u64) {
    let h = mix64(w.seed ^ mix64(i));
    let key = ((h as u128 * w.keys as u128) >> 64) as u64;
    (key, h >> 24)
}

/// One worker: pin, build the dataflow, agree on a start, feed and step until done.
fn worker_main(worker: &mut Worker, load: Load, w: &Workload, start_at: &AtomicU64) -> Result<WorkerOut, String> {
    let index = worker.index();
    let peers = worker.peers() as u64;
    pin_to(index).map_err(|e| e.to_string())?;

    let mut input = InputHandleVec::<u64, Event>::new();
    let probe = ProbeHandle::new();
    // The sink's histogram and output count, read back once the dataflow is done.
    let sink = Rc::new(RefCell::new((histogram(), 0u64)));
    let sink_in = Rc::clone(&sink);
    let keys = w.keys as usize;
    let hops = w.hops;
    worker.dataflow::<u64, _, _>(|scope| {
        let mut stream = scope.input_from(&mut input).map(|(key, value, t): Event| (key, value.wrapping_add(1), t));
        // The `hops` scenario's identity maps (none in W1), as Dirigo's config adds them.
        for _ in 0..hops {
            stream = stream.map(|e: Event| e);
        }
        stream
            .unary(Exchange::new(|e: &Event| e.0), "KeyedCount", move |_cap, _info| {
                let mut counts: HashMap<u64, u64> = HashMap::with_capacity(keys);
                move |input, output| {
                    input.for_each(|time, data| {
                        let mut session = output.session(&time);
                        // Hot path: count per key, emit the running count.
                        for (key, value, t) in data.drain(..) {
                            let c = counts.entry(key).or_insert(0);
                            *c += 1;
                            std::hint::black_box(value);
                            session.give((key, *c, t));
                        }
                    });
                }
            })
            .probe_with(&probe)
            .sink(Pipeline, "LatencySink", move |(input, _frontier)| {
                let mut sink = sink_in.borrow_mut();
                let (hist, out) = &mut *sink;
                input.for_each(|_time, data: &mut Vec<Event>| {
                    for &(key, count, t) in data.iter() {
                        std::hint::black_box((key, count));
                        hist.saturating_record(now_ns().saturating_sub(t).max(1));
                        *out += 1;
                    }
                });
            });
    });

    // A start both workers share: each offers its clock, the barrier makes both offers visible.
    let mut barrier = Barrier::new(worker);
    start_at.fetch_max(now_ns(), Ordering::SeqCst);
    barrier.wait();
    drop(barrier);
    let start_ns = start_at.load(Ordering::SeqCst);

    let mut events_in = 0u64;
    match load {
        Load::Max { events } => {
            let mut i = index as u64;
            let mut epoch = 0u64;
            while i < events {
                for _ in 0..EPOCH_EVENTS {
                    if i >= events {
                        break;
                    }
                    let (key, value) = event(w, i);
                    input.send((key, value, now_ns()));
                    events_in += 1;
                    i += peers;
                }
                epoch += 1;
                input.advance_to(epoch);
                worker.step();
                // Closed loop: wait while more than WINDOW epochs are past the input but not
                // past the count.
                while probe.less_than(&epoch.saturating_sub(WINDOW)) {
                    worker.step();
                }
            }
        }
        Load::Rate { eps, events } => {
            let due = |i: u64| start_ns + (i as u128 * 1_000_000_000 / eps as u128) as u64;
            let mut i = index as u64;
            while i < events {
                let now = now_ns();
                let mut sent = false;
                while i < events && due(i) <= now {
                    let scheduled = due(i);
                    let epoch = (scheduled - start_ns) / RATE_EPOCH_NS;
                    if epoch > *input.time() {
                        input.advance_to(epoch);
                    }
                    let (key, value) = event(w, i);
                    input.send((key, value, scheduled));
                    events_in += 1;
                    i += peers;
                    sent = true;
                }
                if sent {
                    input.flush();
                }
                worker.step();
            }
        }
    }
    // Close the input and run until every dataflow (the sink's included) is complete.
    drop(input);
    while worker.step() {}
    let end_ns = now_ns();
    let (hist, events_out) = sink.replace((histogram(), 0));
    Ok(WorkerOut { events_in, events_out, hist, start_ns, end_ns })
}
