//! Per-shard signal slot: the load a shard publishes for others to read, its sleep flag and its
//! doorbell. Besides mailboxes, this is the only memory shards share.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// The longest a sender lets mail wait for a parked receiver's own wake-up instead of ringing
/// (ns), whatever its deadline.
pub const LAZY_WAIT_MAX_NS: u64 = 10_000_000;

/// Read-mostly slot of one shard, padded so that writes by its owner don't false-share.
#[derive(Debug)]
pub struct ShardSignal {
    /// Messages queued on the shard (run queue plus staged output), published once per turn.
    queued: CachePadded<AtomicU64>,
    /// Expected delay (ns) before a newly queued message would start.
    delay_ns: CachePadded<AtomicU64>,
    /// Messages of each app queued on the shard, published once per turn (per-app backpressure).
    queued_by_app: Box<[CachePadded<AtomicU64>]>,
    /// Expected time (ns) to run the messages of each app queued on the shard, published with
    /// them (sources admit work against it: bounded latency at full load).
    queued_ns_by_app: Box<[CachePadded<AtomicU64>]>,
    /// Set by the owner just before it parks.
    sleeping: CachePadded<AtomicBool>,
    /// While it is parked: the time (engine clock, ns) by which the owner wakes on its own.
    /// Written before `sleeping`, so a sender that sees the flag sees this park's value.
    wake_by: CachePadded<AtomicU64>,
    /// Rings senders skipped because the owner's own wake-up came soon enough for what they
    /// sent (see `notify_by`): the owner's lost-wake-up check discounts them.
    skipped: CachePadded<AtomicU64>,
    /// Rings senders chose to make (counted before the ring): a ring that comes just after the
    /// owner's park timed out is late, not lost.
    rung: CachePadded<AtomicU64>,
    /// Flushes of the owner's output completed (every ring or skip they made is counted): a
    /// receiver judging a wake-up waits until each sender has passed one (`flushes`).
    flushes: CachePadded<AtomicU64>,
    /// What the owner is running: `(function + 1) << 48 | since (µs)`, 0 between messages. Its
    /// own line: written twice per message, read only by the controller's stall detector.
    running: CachePadded<AtomicU64>,
    /// Share of its time the shard spent busy over its last rebalancing period (per mille),
    /// for other shards deciding where key groups go.
    utilization: AtomicU64,
    /// Set by the owner once it is built and running its loop: sources wait until every shard
    /// of their node is (records for a shard still starting would wait for it).
    up: AtomicBool,
    /// Set by the owner once everything it runs has ended (it stays to host lessees until every
    /// shard has set it).
    closing: AtomicBool,
    /// Set by the controller when it gave the shard up (a function held it past `stall_stop`):
    /// the others stop sending to it and stop waiting for it.
    gone: AtomicBool,
    doorbell: flume::Sender<()>,
}

/// The owner's end of the doorbell.
pub type Doorbell = flume::Receiver<()>;

impl ShardSignal {
    /// A slot for a shard running `apps` apps, and the doorbell its owner waits on.
    pub fn new(apps: usize) -> (ShardSignal, Doorbell) {
        let (tx, rx) = flume::bounded(1);
        let sig = ShardSignal {
            queued: CachePadded::new(AtomicU64::new(0)),
            queued_by_app: (0..apps).map(|_| CachePadded::new(AtomicU64::new(0))).collect(),
            queued_ns_by_app: (0..apps).map(|_| CachePadded::new(AtomicU64::new(0))).collect(),
            delay_ns: CachePadded::new(AtomicU64::new(0)),
            sleeping: CachePadded::new(AtomicBool::new(false)),
            wake_by: CachePadded::new(AtomicU64::new(u64::MAX)),
            skipped: CachePadded::new(AtomicU64::new(0)),
            rung: CachePadded::new(AtomicU64::new(0)),
            flushes: CachePadded::new(AtomicU64::new(0)),
            running: CachePadded::new(AtomicU64::new(0)),
            utilization: AtomicU64::new(0),
            up: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            doorbell: tx,
        };
        (sig, rx)
    }

    /// Owner: its busy share over the last rebalancing period, per mille.
    #[inline]
    pub fn publish_utilization(&self, permille: u64) {
        if self.is_gone() {
            return;
        }
        self.utilization.store(permille, Ordering::Relaxed);
    }

    /// The busy share the shard last published, per mille.
    #[inline]
    pub fn utilization(&self) -> u64 {
        self.utilization.load(Ordering::Relaxed)
    }

    /// Owner: it starts running a message of `function` (at `since_ns`, at most its turn's start).
    #[inline]
    pub fn begin_run(&self, function: u16, since_ns: u64) {
        let word = ((function as u64 + 1) << 48) | ((since_ns / 1_000) & ((1 << 48) - 1));
        self.running.store(word, Ordering::Relaxed);
    }

    /// Owner: the message is done.
    #[inline]
    pub fn end_run(&self) {
        self.running.store(0, Ordering::Relaxed);
    }

    /// The function the owner is running and since when (µs since the clock's epoch), if any.
    pub fn running(&self) -> Option<(u16, u64)> {
        match self.running.load(Ordering::Relaxed) {
            0 => None,
            word => Some(((word >> 48) as u16 - 1, word & ((1 << 48) - 1))),
        }
    }

    /// Owner: publish the load (a shard given up keeps looking full, so nothing is placed or
    /// leased on it).
    #[inline]
    pub fn publish(&self, queued: u64, delay_ns: u64) {
        if self.is_gone() {
            return;
        }
        self.queued.store(queued, Ordering::Relaxed);
        self.delay_ns.store(delay_ns, Ordering::Relaxed);
    }

    /// Owner: publish how many messages of `app` are queued, and the time they take to run.
    #[inline]
    pub fn publish_app(&self, app: usize, queued: u64, queued_ns: u64) {
        self.queued_by_app[app].store(queued, Ordering::Relaxed);
        self.queued_ns_by_app[app].store(queued_ns, Ordering::Relaxed);
    }

    /// Expected time to run the messages of `app` queued on the shard, as last published.
    #[inline]
    pub fn queued_ns_of(&self, app: usize) -> u64 {
        self.queued_ns_by_app[app].load(Ordering::Relaxed)
    }

    /// Messages of `app` queued on the shard, as last published.
    #[inline]
    pub fn queued_of(&self, app: usize) -> u64 {
        self.queued_by_app[app].load(Ordering::Relaxed)
    }

    /// Messages queued on the shard, as last published.
    #[inline]
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Expected delay on the shard, as last published.
    #[inline]
    pub fn delay_ns(&self) -> u64 {
        self.delay_ns.load(Ordering::Relaxed)
    }

    /// Owner, before parking: raise the flag. The owner must re-check its mailboxes afterwards.
    #[inline]
    pub fn going_to_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
    }

    /// The owner flagged itself asleep (it is parked, or about to park).
    #[inline]
    pub fn is_sleeping(&self) -> bool {
        self.sleeping.load(Ordering::SeqCst)
    }

    /// Owner: awake again.
    #[inline]
    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// Owner, before `going_to_sleep`: it wakes by `at_ns` on its own (its park's timeout).
    #[inline]
    pub fn will_wake_by(&self, at_ns: u64) {
        self.wake_by.store(at_ns, Ordering::Relaxed);
    }

    /// Rings skipped so far (see `notify_by`).
    #[inline]
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Rings senders chose to make so far (see `notify_by`).
    #[inline]
    pub fn rung(&self) -> u64 {
        self.rung.load(Ordering::Relaxed)
    }

    /// Owner: a flush of its output is done, and with it every `notify_by` it made (single
    /// writer: a plain store).
    #[inline]
    pub fn flushed(&self) {
        self.flushes.store(self.flushes.load(Ordering::Relaxed) + 1, Ordering::Release);
    }

    /// Flushes the owner completed so far (see `flushed`).
    #[inline]
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Acquire)
    }

    /// Sender, after publishing mail whose earliest deadline is `deadline_ns`: wake the owner if
    /// it is (going) asleep, unless it wakes on its own within the first half of the time left
    /// to that deadline (and within `LAZY_WAIT_MAX_NS`). A batch of loose-SLO records sent to a
    /// shard that parks for a few milliseconds at a time then costs no system call on either
    /// side; anything without a deadline (protocol, control: `deadline_ns` 0) always rings.
    #[inline]
    pub fn notify_by(&self, deadline_ns: u64) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if !self.sleeping.load(Ordering::SeqCst) {
            return;
        }
        if deadline_ns > 0 {
            let now = crate::clock::now_ns();
            let wait = (deadline_ns.saturating_sub(now) / 2).min(LAZY_WAIT_MAX_NS);
            if self.wake_by.load(Ordering::Relaxed) <= now + wait {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.rung.fetch_add(1, Ordering::Relaxed);
        let _ = self.doorbell.try_send(());
    }

    /// Sender, after publishing mail: wake the owner if it is (going) asleep.
    ///
    /// Pairs with `going_to_sleep`: either the owner's re-check sees the mail, or this sees the
    /// flag (both sides use SeqCst), so mail is never left behind a parked shard.
    #[inline]
    pub fn notify(&self) {
        self.notify_by(0);
    }

    /// Controller: give the shard up (its thread is stuck in a function). It looks full from
    /// now on (no lease, move or placement picks it) and every shard is woken to let it go.
    pub fn abandon(&self) {
        self.gone.store(true, Ordering::SeqCst);
        self.queued.store(u64::MAX / 2, Ordering::Relaxed);
        self.delay_ns.store(u64::MAX / 2, Ordering::Relaxed);
        self.utilization.store(u64::MAX / 2, Ordering::Relaxed);
    }

    /// Whether the shard was given up.
    #[inline]
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// Owner: it is built and running.
    pub fn set_up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Whether the shard is running (or was given up: nothing waits for it then).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst) || self.is_gone()
    }

    /// Owner: everything it runs has ended.
    pub fn set_closing(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Whether the shard has ended everything it runs.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Wake the owner unconditionally (control plane: stop, shutdown).
    pub fn wake(&self) {
        let _ = self.doorbell.try_send(());
    }
}
