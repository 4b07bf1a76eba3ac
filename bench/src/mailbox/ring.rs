//! The mailbox ping-pong on Dirigo's own cross-shard path: `mailbox::mailbox` rings of batches
//! in both directions, `ShardSignal` for parking, each end owned by a glommio executor pinned to
//! its CPU. The idle wait is a copy of `engine/src/shard/mod.rs`'s spin-then-`park` protocol.

use std::sync::Arc;
use std::time::Duration;

use dirigo_actors::envelope::Header;
use dirigo_net::clock::now_ns;
use dirigo_net::mailbox::{mailbox, Batch, Inbox, Outbox};
use dirigo_net::signal::{Doorbell, ShardSignal};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use super::{Mode, Sample};
use crate::report::histogram;
use crate::sys::{cpu_seconds, work_us};

/// Batches per ring (Dirigo's default `mailbox_batches`).
const RING: usize = 64;
/// The payload of the one envelope of a ping.
const PAYLOAD: [u8; 8] = [7; 8];
/// A parked end wakes at least this often (the engine wakes for its stats interval).
const MAX_PARK: Duration = Duration::from_millis(100);

/// One shard's end of the pair: its outbox to the peer, its inbox from the peer, its own
/// signal slot and doorbell.
struct End {
    out: Outbox,
    inbox: Inbox,
    me: Arc<ShardSignal>,
    doorbell: Doorbell,
    mode: Mode,
    /// Emptied batches back from the peer, as the engine's `Outputs` pool.
    pool: Vec<Batch>,
}

/// Run `round_trips` pings (after `warmup` unrecorded ones) in `mode`.
pub fn run(mode: Mode, warmup: usize, round_trips: usize) -> anyhow::Result<Sample> {
    let (a, b) = pair(mode);
    let (cpu0, t0) = (cpu_seconds(), now_ns());
    let echo = LocalExecutorBuilder::new(Placement::Fixed(1))
        .name("mailbox-echo")
        .spawn(move || async move { b.echo().await })
        .map_err(|e| anyhow::anyhow!("spawning an executor: {e}"))?;
    let ping = LocalExecutorBuilder::new(Placement::Fixed(0))
        .name("mailbox-ping")
        .spawn(move || async move { a.ping(warmup, round_trips).await })
        .map_err(|e| anyhow::anyhow!("spawning an executor: {e}"))?;
    let hist = ping.join().map_err(|e| anyhow::anyhow!("pinger: {e}"))?;
    echo.join().map_err(|e| anyhow::anyhow!("echo: {e}"))?;
    Ok(Sample::new(&hist, (now_ns() - t0) as f64 / 1e9, cpu_seconds() - cpu0))
}

/// Two ends wired to each other: A (CPU 0) pings, B (CPU 1) echoes.
fn pair(mode: Mode) -> (End, End) {
    // One app: the slot's per-app load is not used here.
    let (sa, da) = ShardSignal::new(1);
    let (sb, db) = ShardSignal::new(1);
    let (sa, sb) = (Arc::new(sa), Arc::new(sb));
    let (out_ab, in_ab) = mailbox(RING, sb.clone());
    let (out_ba, in_ba) = mailbox(RING, sa.clone());
    let a = End { out: out_ab, inbox: in_ba, me: sa, doorbell: da, mode, pool: Vec::new() };
    let b = End { out: out_ba, inbox: in_ab, me: sb, doorbell: db, mode, pool: Vec::new() };
    (a, b)
}

impl End {
    /// The pinger: ping, wait for the pong, record the round trip; in idle mode one ping per
    /// period, parking in between. Ends with an empty batch (stop).
    async fn ping(mut self, warmup: usize, round_trips: usize) -> Histogram<u64> {
        let mut hist = histogram();
        let period = match self.mode {
            Mode::Idle { period, .. } => period.as_nanos() as u64,
            _ => 0,
        };
        let mut next = now_ns();
        for k in 0..warmup + round_trips {
            if period > 0 {
                next += period;
                while self.wait(Some(next)).await.is_some() {}
            }
            let t0 = now_ns();
            self.send(true);
            let pong = self.wait(None).await.expect("no deadline: only mail ends the wait");
            let rtt = now_ns() - t0;
            self.inbox.give_back(pong);
            if k >= warmup {
                hist.saturating_record(rtt.max(1));
            }
        }
        self.send(false);
        hist
    }

    /// The echo: answer every ping with a pong until the stop batch.
    async fn echo(mut self) {
        loop {
            let ping = self.wait(None).await.expect("no deadline: only mail ends the wait");
            let stop = ping.entries.is_empty();
            self.inbox.give_back(ping);
            if stop {
                return;
            }
            self.send(true);
        }
    }

    /// Send a one-envelope batch (or, `!envelope`, an empty one) and notify the peer, as the
    /// engine's `Outputs::flush` does. Hot path: batches come from the pool the wait loop refills
    /// from the return ring.
    fn send(&mut self, envelope: bool) {
        let mut b = self.pool.pop().unwrap_or_else(|| Batch::with_capacity(1));
        if envelope {
            b.push_bytes(Header::data(0, 0, 0), &PAYLOAD);
        }
        self.out.try_send(b).expect("one batch in flight at a time");
        self.out.peer.notify();
    }

    /// Wait for mail (Some) or until `deadline` (None), the way the mode says.
    async fn wait(&mut self, deadline: Option<u64>) -> Option<Batch> {
        let mut idle_since = now_ns();
        loop {
            // A turn of the engine's loop: reclaim emptied batches, then drain the inbox.
            while let Some(b) = self.out.reclaim() {
                self.pool.push(b);
            }
            if let Some(b) = self.inbox.recv() {
                return Some(b);
            }
            let now = now_ns();
            if deadline.is_some_and(|d| now >= d) {
                return None;
            }
            let spin = match self.mode {
                Mode::Busy => u64::MAX,
                Mode::Loaded { work_us: w } => {
                    work_us(w);
                    u64::MAX
                }
                Mode::Idle { spin, .. } => spin.as_nanos() as u64,
            };
            if now - idle_since < spin {
                std::hint::spin_loop();
                glommio::yield_if_needed().await;
                continue;
            }
            let timeout = deadline.map_or(MAX_PARK, |d| Duration::from_nanos(d - now)).min(MAX_PARK);
            self.park(timeout);
            idle_since = now_ns();
        }
    }

    /// Park until the peer rings the doorbell or `timeout` passes: `Shard::park`'s protocol
    /// (raise the flag, re-check the inbox, then block the thread on the doorbell with a timeout).
    fn park(&mut self, timeout: Duration) {
        self.me.going_to_sleep();
        if self.inbox.has_mail() {
            self.me.awake();
            return;
        }
        let _ = self.doorbell.recv_timeout(timeout);
        self.me.awake();
    }
}
