//! The outgoing side of a shard: one open batch per destination, batches waiting for ring space,
//! and the pool of recycled batches. Nothing here blocks: a full ring keeps batches staged, and
//! sources pause (backpressure) while the shard has too much staged.

use std::collections::VecDeque;

use dirigo_actors::envelope::{Header, MessageKind};
use dirigo_actors::ids::ShardId;
use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

use dirigo_net::mailbox::{Batch, Entry, Outbox};

/// Keep at most this many empty batches in the pool.
const POOL_MAX: usize = 256;
/// A saturated shard's batch for another shard with fewer envelopes than this, and at least a
/// quarter as many, may wait at a flush to fill (`Outputs::flush`): the records a turn's poll
/// sends each shard it reaches. A sparser stream (pre-aggregated partials, watermarks) would
/// take many turns to fill: it goes at once. NEXMark Q5 and Q7 (partial counts crossing), held
/// whatever their fill: 0.9x the events/s and twice the p50.
const HOLD_FILL: usize = 64;
/// Close a batch once its payload bytes pass this size.
const BATCH_BYTES: usize = 64 * 1024;

/// Outgoing batches of one shard.
pub struct Outputs {
    pub me: ShardId,
    batch_size: usize,
    open: Vec<Batch>,
    waiting: Vec<VecDeque<Batch>>,
    pool: Vec<Batch>,
    outboxes: Vec<Option<Outbox>>,
    /// Batches addressed to this shard itself, ready to be drained.
    pub local: VecDeque<Batch>,
    seq: Vec<u32>,
    staged: usize,
    /// Staged envelopes per app (sources pause on their own app's backlog only).
    staged_by_app: Vec<usize>,
    /// Scratch space of the serializer, reused for every record.
    arena: Arena,
    /// Per destination: something staged for it must wake it if it is parked (all but
    /// [`Outputs::push_lazy`]'s envelopes).
    urgent: Vec<bool>,
    /// Per destination: the earliest deadline among the urgent envelopes staged since its last
    /// ring (0: one has none, ring at once; see `ShardSignal::notify_by`).
    deadline: Vec<u64>,
    /// Per destination: the shard was given up (see `Shard::let_go`); what is staged for it
    /// is dropped, not sent.
    gone: Vec<bool>,
    /// Per function: envelopes for it staged for this shard itself or waiting in `local`, not
    /// yet drained (a record may skip the queues only when nothing of its function waits: see
    /// `shard::chain`).
    here: Vec<u32>,
    /// Where a record archived in place is written when it goes along several edges
    /// (`Router::emit_archived`), reused.
    scratch: AlignedVec,
    /// Batches handed to other shards' rings, and the envelopes they carried, since the last
    /// report (`take_sent`): how full the batches crossing cores are.
    batches_out: u64,
    envelopes_out: u64,
    /// Per destination: since when (ns) its open batch has waited at flushes to fill (0: it
    /// has not; see `flush`).
    held_since: Vec<u64>,
}

impl Outputs {
    /// Outputs of shard `me` over `outboxes` (None at `me`).
    pub fn new(me: ShardId, outboxes: Vec<Option<Outbox>>, batch_size: usize, apps: usize, functions: usize) -> Self {
        let n = outboxes.len();
        Outputs {
            me,
            batch_size,
            open: (0..n).map(|_| Batch::with_capacity(batch_size)).collect(),
            waiting: (0..n).map(|_| VecDeque::new()).collect(),
            pool: Vec::new(),
            outboxes,
            local: VecDeque::new(),
            seq: vec![0; n],
            staged: 0,
            staged_by_app: vec![0; apps],
            arena: Arena::new(),
            urgent: vec![false; n],
            deadline: vec![u64::MAX; n],
            gone: vec![false; n],
            here: vec![0; functions],
            scratch: AlignedVec::new(),
            batches_out: 0,
            envelopes_out: 0,
            held_since: vec![0; n],
        }
    }

    /// Batches handed to other shards' rings since the last call, and the envelopes they
    /// carried.
    pub fn take_sent(&mut self) -> (u64, u64) {
        (std::mem::take(&mut self.batches_out), std::mem::take(&mut self.envelopes_out))
    }

    /// Make room for apps up to `apps` and functions up to `functions` (a deployed app's, at
    /// run time).
    pub fn grow(&mut self, apps: usize, functions: usize) {
        if self.staged_by_app.len() < apps {
            self.staged_by_app.resize(apps, 0);
        }
        if self.here.len() < functions {
            self.here.resize(functions, 0);
        }
    }

    /// Whether an envelope for function `f` is staged for this shard or waits in `local`.
    #[inline]
    pub fn pending_here(&self, f: usize) -> bool {
        self.here[f] > 0
    }

    /// A local batch is being drained: its envelopes no longer wait here.
    #[inline]
    pub fn drained_here(&mut self, b: &Batch) {
        for e in &b.entries {
            self.here[e.header.function as usize] -= 1;
        }
    }

    /// Envelopes staged and not yet handed to a ring (or to the local queue).
    #[inline]
    pub fn staged(&self) -> usize {
        self.staged
    }

    /// Envelopes of `app` staged and not yet handed to a ring.
    #[inline]
    pub fn staged_of(&self, app: usize) -> usize {
        self.staged_by_app[app]
    }

    /// True when nothing is staged or waiting locally.
    pub fn is_drained(&self) -> bool {
        self.staged == 0 && self.local.is_empty()
    }

    /// The scratch buffer (empty), to write an archive into; give it back with `put_scratch`.
    #[inline]
    pub fn take_scratch(&mut self) -> AlignedVec {
        std::mem::take(&mut self.scratch)
    }

    #[inline]
    pub fn put_scratch(&mut self, mut scratch: AlignedVec) {
        scratch.clear();
        self.scratch = scratch;
    }

    /// Stage an envelope whose payload is `payload` (copied, not deserialised). Hot path.
    #[inline]
    pub fn push_bytes(&mut self, dest: usize, h: Header, payload: &[u8]) {
        self.claim_ahead(dest);
        self.open[dest].push_bytes(h, payload);
        self.stamp_last(dest, false);
        self.close_if_full(dest);
    }

    /// Stage for `dest` a record made from `parent` (see `Batch::push_child`): its header
    /// `child` makes in its entry, then it is stamped there; its payload `write` appends. Hot
    /// path.
    #[inline(always)]
    pub fn stage_child(
        &mut self,
        dest: usize,
        parent: &Header,
        child: impl FnOnce(&mut Header),
        write: impl FnOnce(&mut AlignedVec, &mut Arena) -> std::ops::Range<usize>,
    ) {
        self.claim_ahead(dest);
        let arena = &mut self.arena;
        self.open[dest].push_child(parent, child, |b| write(b, arena));
        self.stamp_last(dest, false);
        self.close_if_full(dest);
    }

    /// Before a write into the open batch for another shard: claim the lines the next
    /// envelopes go to (see `Batch::prefetch_next_for_write`). A batch for this shard itself stays
    /// in this core's cache.
    #[inline(always)]
    fn claim_ahead(&self, dest: usize) {
        if dest != self.me as usize {
            self.open[dest].prefetch_next_for_write();
        }
    }

    /// Number the envelope just pushed into the open batch for `dest` on its channel, in its
    /// entry, and count it staged; unless it is `lazy`, it wakes `dest` when sent (every
    /// envelope but [`Outputs::push_lazy`]'s).
    #[inline(always)]
    fn stamp_last(&mut self, dest: usize, lazy: bool) {
        let Some(e) = self.open[dest].entries.last_mut() else { return };
        let h = &mut e.header;
        if !lazy {
            self.urgent[dest] = true;
            // Records and watermarks carry their event's deadline; everything else wants the
            // receiver now.
            let d = match h.kind {
                MessageKind::Data | MessageKind::Watermark => h.deadline_ns,
                _ => 0,
            };
            self.deadline[dest] = self.deadline[dest].min(d);
        }
        if dest == self.me as usize {
            self.here[h.function as usize] += 1;
        }
        h.from_shard = self.me;
        h.seq = self.seq[dest];
        self.seq[dest] = self.seq[dest].wrapping_add(1);
        self.staged += 1;
        self.staged_by_app[h.app as usize] += 1;
    }

    /// The header of the envelope staged last for `dest`, as it was stamped: in the open batch,
    /// or, if that push filled it, in the batch it closed.
    #[inline]
    pub fn last_staged(&self, dest: usize) -> &Header {
        let last = self.open[dest].entries.last().or_else(|| self.waiting[dest].back().and_then(|b| b.entries.last()));
        &last.expect("an envelope was staged").header
    }

    /// Stage an envelope with no payload (a header alone). Hot path.
    #[inline]
    pub fn push_header(&mut self, dest: usize, h: Header) {
        self.claim_ahead(dest);
        self.open[dest].push_header(h);
        self.stamp_last(dest, false);
        self.close_if_full(dest);
    }

    /// Stage an envelope with no payload that need not wake `dest` if it is parked: it is read,
    /// in order, when something else wakes it (a watermark for state it does not hold).
    pub fn push_lazy(&mut self, dest: usize, h: Header) {
        self.open[dest].push_header(h);
        self.stamp_last(dest, true);
        self.close_if_full(dest);
    }

    /// Stage an envelope whose payload is the archive `bytes`, moved rather than copied when it
    /// is large (a partial state): it travels as a batch of its own whose buffer is `bytes`, so
    /// a 100 MB partial is not copied into a batch and, at the receiver, not copied out again
    /// (`Held::take_sole_payload`).
    pub fn push_archive(&mut self, dest: usize, h: Header, bytes: AlignedVec) {
        if bytes.len() < BATCH_BYTES {
            return self.push_bytes(dest, h, &bytes);
        }
        if !self.open[dest].entries.is_empty() {
            self.close(dest); // what was staged before goes first
        }
        // A batch of its own, open just long enough to stamp its one entry in place.
        let len = bytes.len() as u32;
        let entries = vec![Entry { header: h, off: 0, len }];
        let empty = std::mem::replace(&mut self.open[dest], Batch { entries, bytes });
        self.stamp_last(dest, false);
        let sole = std::mem::replace(&mut self.open[dest], empty);
        self.waiting[dest].push_back(sole);
    }

    #[inline]
    fn close_if_full(&mut self, dest: usize) {
        let b = &self.open[dest];
        if b.entries.len() >= self.batch_size || b.bytes.len() >= BATCH_BYTES {
            self.close(dest);
        }
    }

    fn close(&mut self, dest: usize) {
        let fresh = self.pool.pop().unwrap_or_else(|| Batch::with_capacity(self.batch_size));
        if dest != self.me as usize {
            fresh.prefetch_start_for_write();
        }
        let full = std::mem::replace(&mut self.open[dest], fresh);
        self.waiting[dest].push_back(full);
        self.held_since[dest] = 0;
    }

    /// Hand what is staged for `dest` to its ring now, mid-turn (a latency-critical message:
    /// a new lessee's lease and first forward).
    pub fn flush_to(&mut self, dest: usize) {
        if !self.open[dest].entries.is_empty() {
            self.close(dest);
        }
        self.send_waiting(dest);
    }

    /// Hand every staged batch to its ring (or the local queue); ring the doorbell of parked
    /// receivers. Returns true if anything moved. With `hold_ns` > 0 (a saturated shard: its
    /// sources had more events due than a poll takes), a batch for another shard holding fewer
    /// than `HOLD_FILL` envelopes (and at least a quarter of that) stays open to fill at the
    /// next turns, for at most `hold_ns` from the first flush that held it: at full load each
    /// batch then carries about as many records whatever the number of shards the turn's
    /// records spread over, and none waits longer than that (the shard does not park while
    /// anything is staged).
    pub fn flush(&mut self, now: u64, hold_ns: u64) -> bool {
        let mut moved = false;
        for dest in 0..self.open.len() {
            let n = self.open[dest].entries.len();
            if n > 0 {
                let filling = (HOLD_FILL / 4..HOLD_FILL).contains(&n);
                let held = hold_ns > 0 && filling && dest != self.me as usize && !self.gone[dest];
                let since = &mut self.held_since[dest];
                if held && *since == 0 {
                    *since = now;
                }
                if !held || now.saturating_sub(*since) >= hold_ns {
                    self.close(dest);
                }
            }
            moved |= self.send_waiting(dest);
        }
        moved
    }

    /// Shard `dest` was given up: drop what is staged for it, now and from now on.
    #[cold]
    pub fn abandon(&mut self, dest: usize) {
        self.gone[dest] = true;
        if !self.open[dest].entries.is_empty() {
            self.close(dest);
        }
        self.send_waiting(dest);
    }

    fn send_waiting(&mut self, dest: usize) -> bool {
        if self.gone[dest] {
            for b in std::mem::take(&mut self.waiting[dest]) {
                for e in &b.entries {
                    self.staged_by_app[e.header.app as usize] -= 1;
                }
                self.staged -= b.entries.len();
            }
            return false;
        }
        let mut sent = false;
        // A full ring takes nothing: stop before a batch is taken out (and its entries counted
        // out of the staged figures, then back in), as happens on every turn while a receiver
        // is behind.
        while !self.waiting[dest].is_empty() && (dest == self.me as usize || !self.ring_full(dest)) {
            let b = self.waiting[dest].pop_front().expect("a waiting batch");
            let (n, batch) = (b.entries.len(), &b);
            for e in &batch.entries {
                self.staged_by_app[e.header.app as usize] -= 1;
            }
            if dest == self.me as usize {
                self.local.push_back(b);
            } else {
                let ob = self.outboxes[dest].as_mut().expect("mailbox to every other shard");
                if let Err(b) = ob.try_send(b) {
                    for e in &b.entries {
                        self.staged_by_app[e.header.app as usize] += 1;
                    }
                    self.waiting[dest].push_front(b);
                    break;
                }
                self.batches_out += 1;
                self.envelopes_out += n as u64;
            }
            self.staged -= n;
            sent = true;
        }
        if sent && dest != self.me as usize && std::mem::take(&mut self.urgent[dest]) {
            let deadline = std::mem::replace(&mut self.deadline[dest], u64::MAX);
            self.outboxes[dest].as_ref().expect("mailbox").peer.notify_by(deadline);
        }
        sent
    }

    /// The most envelopes sent to one other shard that it has not taken out of its ring yet
    /// (a shard given up takes nothing more, and is not waited for).
    #[inline]
    pub fn in_ring_max(&self) -> u64 {
        self.outboxes.iter().flatten().filter(|o| !o.peer.is_gone()).map(Outbox::in_ring).max().unwrap_or(0)
    }

    /// Whether the mailbox to shard `dest` (another) is full.
    #[inline]
    fn ring_full(&self, dest: usize) -> bool {
        self.outboxes[dest].as_ref().expect("mailbox to every other shard").is_full()
    }

    /// Take back batches receivers have emptied.
    pub fn reclaim(&mut self) {
        for ob in self.outboxes.iter_mut().flatten() {
            while let Some(b) = ob.reclaim() {
                // A batch that carried a large archive is not kept at that size.
                if self.pool.len() < POOL_MAX && b.bytes.capacity() <= 4 * BATCH_BYTES {
                    self.pool.push(b);
                }
            }
        }
    }

    /// Return a local batch to the pool once drained.
    pub fn recycle(&mut self, mut b: Batch) {
        if self.pool.len() < POOL_MAX {
            b.clear();
            self.pool.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dirigo_net::mailbox::{mailbox, Inbox};
    use dirigo_net::signal::ShardSignal;

    use super::*;

    /// Outputs of shard 0 of two, and shard 1's end of the ring between them.
    fn two_shards() -> (Outputs, Inbox) {
        let (signal, _doorbell) = ShardSignal::new(1);
        let (outbox, inbox) = mailbox(8, Arc::new(signal));
        (Outputs::new(0, vec![None, Some(outbox)], 256, 1, 1), inbox)
    }

    /// Envelopes of the batches waiting in `inbox`, in order (by key hash).
    fn received(inbox: &mut Inbox) -> Vec<u64> {
        std::iter::from_fn(|| inbox.recv())
            .flat_map(|b| b.entries.iter().map(|e| e.header.key_hash).collect::<Vec<_>>())
            .collect()
    }

    #[test]
    fn a_saturated_shards_small_batch_waits_to_fill_for_at_most_the_hold() {
        let (mut out, mut inbox) = two_shards();
        let quarter = HOLD_FILL as u64 / 4;
        (0..quarter).for_each(|k| out.push_header(1, Header::data(0, 0, k)));
        assert!(!out.flush(1_000, 500), "held: nothing moves");
        assert_eq!((received(&mut inbox), out.staged()), (Vec::<u64>::new(), quarter as usize));
        (quarter..quarter + 10).for_each(|k| out.push_header(1, Header::data(0, 0, k)));
        out.flush(1_499, 500);
        assert_eq!((received(&mut inbox), out.staged()), (Vec::<u64>::new(), quarter as usize + 10), "within the hold");
        assert!(out.flush(1_500, 500), "the hold is over: the batch goes");
        assert_eq!((received(&mut inbox), out.staged()), ((0..quarter + 10).collect::<Vec<u64>>(), 0));
        // A batch that filled to `HOLD_FILL` goes at once; so does a sparse one (under a
        // quarter: it would take many turns to fill), and any without a hold.
        (0..HOLD_FILL as u64).for_each(|k| out.push_header(1, Header::data(0, 0, k)));
        out.flush(2_000, 500);
        assert_eq!(received(&mut inbox), (0..HOLD_FILL as u64).collect::<Vec<_>>());
        (0..quarter - 1).for_each(|k| out.push_header(1, Header::data(0, 0, k)));
        out.flush(2_001, 500);
        assert_eq!(received(&mut inbox), (0..quarter - 1).collect::<Vec<_>>());
        (0..quarter).for_each(|k| out.push_header(1, Header::data(0, 0, k)));
        out.flush(2_002, 0);
        assert_eq!(received(&mut inbox), (0..quarter).collect::<Vec<_>>());
        // The hold starts again with the next batch held, not at the last one's.
        (0..quarter).for_each(|k| out.push_header(1, Header::data(0, 0, k)));
        out.flush(3_000, 500);
        out.flush(3_400, 500);
        assert_eq!(received(&mut inbox), Vec::<u64>::new());
        out.flush(3_500, 500);
        assert_eq!(received(&mut inbox), (0..quarter).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_for_the_shard_itself_is_never_held() {
        let (mut out, _inbox) = two_shards();
        (0..HOLD_FILL as u64 / 2).for_each(|k| out.push_header(0, Header::data(0, 0, k)));
        out.flush(1_000, 500);
        assert_eq!((out.local.len(), out.staged()), (1, 0));
    }
}
