//! The reference ping-pong: glommio's own `shared_channel` (bounded, one per direction) between
//! two executors pinned to CPU 0 and 1, which notice messages through glommio's scheduler and
//! wake each other through its eventfd path. `spin_before_park` is the executors' spin window.

use std::time::Duration;

use dirigo_net::clock::now_ns;
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::timer::sleep;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use super::{Mode, Sample};
use crate::report::histogram;
use crate::sys::cpu_seconds;

/// Capacity of each channel (one message is in flight at a time).
const CAPACITY: usize = 16;

/// Run `round_trips` pings (after `warmup` unrecorded ones) in `mode` (busy or idle).
pub fn run(mode: Mode, warmup: usize, round_trips: usize) -> anyhow::Result<Sample> {
    let (spin, period) = match mode {
        Mode::Idle { period, spin } => (spin, Some(period)),
        Mode::Busy | Mode::Loaded { .. } => (super::BUSY_SPIN, None),
    };
    let (ab_tx, ab_rx) = shared_channel::new_bounded::<u64>(CAPACITY);
    let (ba_tx, ba_rx) = shared_channel::new_bounded::<u64>(CAPACITY);
    let (cpu0, t0) = (cpu_seconds(), now_ns());
    let echo = LocalExecutorBuilder::new(Placement::Fixed(1))
        .name("channel-echo")
        .spin_before_park(spin)
        .spawn(move || async move { echo(ab_rx, ba_tx).await })
        .map_err(|e| anyhow::anyhow!("spawning an executor: {e}"))?;
    let ping = LocalExecutorBuilder::new(Placement::Fixed(0))
        .name("channel-ping")
        .spin_before_park(spin)
        .spawn(move || async move { ping(ab_tx, ba_rx, period, warmup, round_trips).await })
        .map_err(|e| anyhow::anyhow!("spawning an executor: {e}"))?;
    let hist = ping.join().map_err(|e| anyhow::anyhow!("pinger: {e}"))?;
    echo.join().map_err(|e| anyhow::anyhow!("echo: {e}"))?;
    Ok(Sample::new(&hist, (now_ns() - t0) as f64 / 1e9, cpu_seconds() - cpu0))
}

/// Both sides connect the A->B channel first, then B->A: opposite orders deadlock (FACTS.md).
async fn ping(
    tx: SharedSender<u64>,
    rx: SharedReceiver<u64>,
    period: Option<Duration>,
    warmup: usize,
    n: usize,
) -> Histogram<u64> {
    let tx = tx.connect().await;
    let rx = rx.connect().await;
    let mut hist = histogram();
    let mut next = now_ns();
    for k in 0..warmup + n {
        if let Some(p) = period {
            next += p.as_nanos() as u64;
            sleep(Duration::from_nanos(next.saturating_sub(now_ns()))).await;
        }
        let t0 = now_ns();
        tx.send(t0).await.expect("echo is alive");
        rx.recv().await.expect("echo answers");
        if k >= warmup {
            hist.saturating_record((now_ns() - t0).max(1));
        }
    }
    hist
}

async fn echo(rx: SharedReceiver<u64>, tx: SharedSender<u64>) {
    let rx = rx.connect().await;
    let tx = tx.connect().await;
    while let Some(x) = rx.recv().await {
        if tx.send(x).await.is_err() {
            return;
        }
    }
}
