//! The hardware reference of the ping-pong: two threads pinned to CPU 0 and 1 bouncing a counter
//! through one cache-padded atomic per direction. No batches, no rings, no executors: the least a
//! cross-core round trip costs on this machine (busy mode only).

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use crossbeam_utils::CachePadded;
use dirigo_net::clock::now_ns;
use hdrhistogram::Histogram;

use super::Sample;
use crate::report::histogram;
use crate::sys::{cpu_seconds, pin_to};

/// One slot per direction; a value > the last seen is a new message. `u64::MAX` stops.
type Slots = Arc<[CachePadded<AtomicU64>; 2]>;

/// Run `round_trips` pings (after `warmup` unrecorded ones), both sides spinning.
pub fn run(warmup: usize, round_trips: usize) -> anyhow::Result<Sample> {
    let slots: Slots = Arc::new([CachePadded::new(AtomicU64::new(0)), CachePadded::new(AtomicU64::new(0))]);
    let (cpu0, t0) = (cpu_seconds(), now_ns());
    let s = slots.clone();
    let echo = thread::Builder::new().name("atomic-echo".into()).spawn(move || -> anyhow::Result<()> {
        pin_to(1)?;
        echo(&s);
        Ok(())
    })?;
    let s = slots.clone();
    let ping = thread::Builder::new().name("atomic-ping".into()).spawn(move || -> anyhow::Result<Histogram<u64>> {
        pin_to(0)?;
        Ok(ping(&s, warmup, round_trips))
    })?;
    let hist = ping.join().map_err(|_| anyhow::anyhow!("pinger panicked"))??;
    echo.join().map_err(|_| anyhow::anyhow!("echo panicked"))??;
    Ok(Sample::new(&hist, (now_ns() - t0) as f64 / 1e9, cpu_seconds() - cpu0))
}

fn ping(s: &Slots, warmup: usize, n: usize) -> Histogram<u64> {
    let mut hist = histogram();
    for k in 1..=(warmup + n) as u64 {
        let t0 = now_ns();
        s[0].store(k, Ordering::Release);
        while s[1].load(Ordering::Acquire) != k {
            spin_loop();
        }
        if k > warmup as u64 {
            hist.saturating_record((now_ns() - t0).max(1));
        }
    }
    s[0].store(u64::MAX, Ordering::Release);
    hist
}

fn echo(s: &Slots) {
    let mut seen = 0;
    loop {
        let v = s[0].load(Ordering::Acquire);
        if v == u64::MAX {
            return;
        }
        if v != seen {
            seen = v;
            s[1].store(v, Ordering::Release);
        }
        spin_loop();
    }
}
