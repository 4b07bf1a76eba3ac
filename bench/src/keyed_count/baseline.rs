//! W1 by hand: the "hardware-ish" reference. Two pinned threads — CPU 0 generates, maps and
//! routes by key; CPU 1 counts per key and records latency — joined by an rtrb ring of batches,
//! with emptied batches returned to the producer on a second ring, so nothing is allocated or
//! freed across threads in steady state. Both threads busy-poll, as Dirigo's shards do.

use std::collections::HashMap;
use std::hint::spin_loop;
use std::thread;

use dirigo_actors::record::mix64;
use dirigo_net::clock::now_ns;
use hdrhistogram::Histogram;

use super::{Load, Measurement, Workload};
use crate::report::{histogram, latency_of};
use crate::sys::{cpu_seconds, pin_to};

/// Events per batch (Dirigo's default `batch_size`).
const BATCH: usize = 256;
/// Batches per ring (Dirigo's default `mailbox_batches`).
const RING: usize = 64;

/// One event after the map: what crosses the ring.
#[derive(Clone, Copy, Debug)]
struct Event {
    key: u64,
    value: u64,
    /// Scheduled time (open loop) or generation time (unbounded), `clock::now_ns` base.
    ingress_ns: u64,
}

/// A batch; an empty one marks the end of the stream.
type Batch = Vec<Event>;

/// Run W1 under `load` on the two-thread pipeline.
pub fn run(load: Load, w: &Workload) -> anyhow::Result<Measurement> {
    let (tx, rx) = rtrb::RingBuffer::<Batch>::new(RING);
    let (ret_tx, ret_rx) = rtrb::RingBuffer::<Batch>::new(RING + 2);
    let w = *w;
    now_ns();
    let (cpu0, t0) = (cpu_seconds(), now_ns());
    let producer = thread::Builder::new().name("baseline-gen".into()).spawn(move || -> anyhow::Result<u64> {
        pin_to(0)?;
        Ok(Producer { tx, returns: ret_rx, pool: Vec::new() }.generate(load, &w))
    })?;
    let consumer = thread::Builder::new().name("baseline-count".into()).spawn(
        move || -> anyhow::Result<(u64, Histogram<u64>)> {
            pin_to(1)?;
            Ok(count(rx, ret_tx, w.keys))
        },
    )?;
    let events_in = producer.join().map_err(|_| anyhow::anyhow!("generator panicked"))??;
    let (events_out, hist) = consumer.join().map_err(|_| anyhow::anyhow!("counter panicked"))??;
    let wall_seconds = (now_ns() - t0) as f64 / 1e9;
    Ok(Measurement {
        events_in,
        events_out,
        wall_seconds,
        cpu_seconds: cpu_seconds() - cpu0,
        latency_us: latency_of(&hist),
        stalled: false,
        envelopes_per_batch: None,
    })
}

/// The generating end: an open batch, the ring, and the pool of recycled batches.
struct Producer {
    tx: rtrb::Producer<Batch>,
    returns: rtrb::Consumer<Batch>,
    pool: Vec<Batch>,
}

impl Producer {
    /// Generate, map and route every event of `load`; returns how many were sent.
    fn generate(&mut self, load: Load, w: &Workload) -> u64 {
        self.pool = (0..RING + 2).map(|_| Vec::with_capacity(BATCH)).collect();
        let mut open = self.fresh();
        let (rate, events) = match load {
            Load::Max { events } => (0, events),
            Load::Rate { eps, events } => (eps, events),
        };
        let start = now_ns();
        let mut now = start;
        for i in 0..events {
            let ingress_ns = if rate == 0 {
                now_ns()
            } else {
                let due = start + (i as u128 * 1_000_000_000 / rate as u128) as u64;
                if due > now {
                    now = now_ns();
                }
                if due > now {
                    // Nothing is due: hand over what we have, then wait for the schedule.
                    open = self.send_nonempty(open);
                    now = wait_until(due);
                }
                due
            };
            // Hot path: generate (a pure function of seed and index, like Dirigo's generator),
            // map (`value + 1`), route by key (one counting thread: every key goes there).
            let h = mix64(w.seed ^ mix64(i));
            let key = ((h as u128 * w.keys as u128) >> 64) as u64;
            open.push(Event { key, value: (h >> 24).wrapping_add(1), ingress_ns });
            if open.len() == BATCH {
                open = self.send(open);
            }
        }
        let open = self.send_nonempty(open);
        self.send(Vec::new()); // end of stream
        drop(open);
        events
    }

    fn send_nonempty(&mut self, open: Batch) -> Batch {
        if open.is_empty() {
            open
        } else {
            self.send(open)
        }
    }

    /// Push `batch` (spinning while the ring is full: backpressure); returns an empty batch.
    fn send(&mut self, mut batch: Batch) -> Batch {
        loop {
            match self.tx.push(batch) {
                Ok(()) => return self.fresh(),
                Err(rtrb::PushError::Full(b)) => batch = b,
            }
            spin_loop();
        }
    }

    /// An empty batch from the pool or the return ring.
    fn fresh(&mut self) -> Batch {
        loop {
            while let Ok(b) = self.returns.pop() {
                self.pool.push(b);
            }
            if let Some(b) = self.pool.pop() {
                return b;
            }
            spin_loop();
        }
    }
}

fn wait_until(due: u64) -> u64 {
    loop {
        let now = now_ns();
        if now >= due {
            return now;
        }
        spin_loop();
    }
}

/// The counting end: keyed count, then the latency record (the sink). Returns outputs and the
/// latency histogram.
fn count(mut rx: rtrb::Consumer<Batch>, mut returns: rtrb::Producer<Batch>, keys: u64) -> (u64, Histogram<u64>) {
    let mut counts: HashMap<u64, u64> = HashMap::with_capacity(keys as usize);
    let mut hist = histogram();
    let mut out = 0u64;
    loop {
        let Ok(mut batch) = rx.pop() else {
            spin_loop();
            continue;
        };
        if batch.is_empty() {
            return (out, hist);
        }
        // Hot path.
        for e in &batch {
            let c = counts.entry(e.key).or_insert(0);
            *c += 1;
            std::hint::black_box((e.value, *c));
            hist.saturating_record(now_ns().saturating_sub(e.ingress_ns).max(1));
            out += 1;
        }
        batch.clear();
        let _ = returns.push(batch);
    }
}
