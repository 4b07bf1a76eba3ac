//! Bounded single-producer/single-consumer mailboxes between shards. A mailbox carries batches
//! of envelopes; emptied batches travel back to their sender on a return ring, so steady state
//! allocates nothing and no buffer is freed on a foreign thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
pub use dirigo_actors::envelope::Entry;
use dirigo_actors::envelope::Header;
use rkyv::util::AlignedVec;

use crate::signal::ShardSignal;

/// How far ahead of the next entry [`Batch::prefetch_next_for_write`] asks for its line (an entry
/// is 56 bytes: about six lines).
const ENTRIES_AHEAD: usize = 6;
/// How far past the payload's end it asks (a two-field record's archive is 48 bytes).
const BYTES_AHEAD: usize = 320;
/// How many lines of an emptied batch's entries and bytes it asks for before the first write:
/// what the look-ahead of the first envelopes skips.
const PREFETCH_LINES: usize = 6;

/// Envelopes travelling together; payloads are rkyv archives packed 16-byte aligned in `bytes`.
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<Entry>,
    pub bytes: AlignedVec,
}

impl Batch {
    /// An empty batch with room for `entries` envelopes.
    pub fn with_capacity(entries: usize) -> Self {
        Batch { entries: Vec::with_capacity(entries), bytes: AlignedVec::with_capacity(entries * 64) }
    }

    /// Ask for the cache lines the next envelopes will be written to, for writing, ahead of
    /// the writes: the entries `ENTRIES_AHEAD` past the last one and the payload bytes
    /// `BYTES_AHEAD` past the end. For a batch that goes to another shard: it comes back from
    /// that shard emptied, and its lines are still in that core's cache, so each store into it
    /// must first claim its line there. Without a hint each claim is made when a store reaches
    /// it, and the stores queue behind it. Between cores that share a cache the claim is quick
    /// and the hint changes nothing; between distant cores (a line taking 200-250 ns one way)
    /// W1 on 2 shards spent twice the time writing its staged batches, and the hint took its
    /// CPU per event from ~232 to ~173 ns (near cores: ~150 either way). Past the capacity it
    /// only warms a line that is not used.
    #[inline(always)]
    pub fn prefetch_next_for_write(&self) {
        prefetch_for_write(self.entries.as_ptr().wrapping_add(self.entries.len() + ENTRIES_AHEAD).cast());
        prefetch_for_write(self.bytes.as_ptr().wrapping_add(self.bytes.len() + BYTES_AHEAD));
    }

    /// [`Batch::prefetch_next_for_write`] for an emptied batch about to be filled: the first
    /// `PREFETCH_LINES` lines of its entries and bytes, which the look-ahead of its first
    /// envelopes skips.
    #[inline]
    pub fn prefetch_start_for_write(&self) {
        let (e, b) = (self.entries.as_ptr().cast::<u8>(), self.bytes.as_ptr());
        for line in 0..PREFETCH_LINES {
            prefetch_for_write(e.wrapping_add(line * 64));
            prefetch_for_write(b.wrapping_add(line * 64));
        }
    }

    /// Empty it for reuse, keeping its capacity.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes.clear();
    }

    /// The payload of entry `i`.
    #[inline]
    pub fn payload(&self, off: u32, len: u32) -> &[u8] {
        &self.bytes[off as usize..(off + len) as usize]
    }

    /// Append an envelope whose payload `write` appends to `bytes`, returning its range there
    /// (16-byte aligned: `archive_values_with`, `archive_cells`, `append_aligned`).
    #[inline(always)]
    pub fn push_written(&mut self, header: Header, write: impl FnOnce(&mut AlignedVec) -> std::ops::Range<usize>) {
        let r = write(&mut self.bytes);
        self.entries.push(Entry { header, off: r.start as u32, len: r.len() as u32 });
    }

    /// Append an envelope made from `parent`: its header is `parent`'s, changed in place by
    /// `child` once it is in its entry; its payload is what `write` appends to `bytes` (16-byte
    /// aligned), whose range it returns. The header is written once, where it stays: one made
    /// aside (on the stack, field by field) and then copied in would be read back with wide
    /// loads that wait for those narrow stores (a store-forwarding stall, per record).
    #[inline(always)]
    pub fn push_child(
        &mut self,
        parent: &Header,
        child: impl FnOnce(&mut Header),
        write: impl FnOnce(&mut AlignedVec) -> std::ops::Range<usize>,
    ) {
        self.push_written(*parent, write);
        if let Some(e) = self.entries.last_mut() {
            child(&mut e.header);
        }
    }

    /// Append an envelope with no payload: a header alone (a watermark, a record for a sink that
    /// reads headers alone). Its empty range sits at the end of `bytes`; nothing is written there.
    #[inline(always)]
    pub fn push_header(&mut self, header: Header) {
        self.entries.push(Entry { header, off: self.bytes.len() as u32, len: 0 });
    }

    /// Append a control or pass-through envelope whose payload is `payload` (copied).
    pub fn push_bytes(&mut self, header: Header, payload: &[u8]) {
        self.push_written(header, |b| append_copy(b, payload));
    }
}

/// Ask for the cache line of `p` for writing (`prefetchw`): a hint that reads and writes
/// nothing visible and never faults, whatever the address (a no-op where the processor lacks it,
/// and off x86-64).
#[inline(always)]
fn prefetch_for_write(p: *const u8) {
    // SAFETY: a prefetch has no effect the program can see and cannot fault.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("prefetchw [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Append a copy of `payload` to `bytes`, 16-byte aligned; returns its range in `bytes`.
#[inline]
pub fn append_copy(bytes: &mut AlignedVec, payload: &[u8]) -> std::ops::Range<usize> {
    let off = bytes.len().next_multiple_of(16);
    bytes.resize(off, 0);
    bytes.extend_from_slice(payload);
    off..bytes.len()
}

/// Append to `bytes`, 16-byte aligned, what `write` appends (an archive written in place: see
/// `Emitter::emit_archived`); returns its range in `bytes`.
#[inline]
pub fn append_aligned(bytes: &mut AlignedVec, write: &mut dyn FnMut(&mut AlignedVec)) -> std::ops::Range<usize> {
    let off = bytes.len().next_multiple_of(16);
    bytes.resize(off, 0);
    write(bytes);
    off..bytes.len()
}

/// The sending end of a mailbox, held by the sender shard.
pub struct Outbox {
    ring: rtrb::Producer<Batch>,
    returns: rtrb::Consumer<Batch>,
    /// Envelopes sent into the ring, and those the receiver has taken out (its count).
    sent: u64,
    taken: Arc<CachePadded<AtomicU64>>,
    /// The receiver's signal slot: read its sleep flag, ring its doorbell.
    pub peer: Arc<ShardSignal>,
}

/// The receiving end of a mailbox, held by the receiver shard.
pub struct Inbox {
    ring: rtrb::Consumer<Batch>,
    returns: rtrb::Producer<Batch>,
    /// Envelopes taken out of the ring, published for the sender (`Outbox::in_ring`); this
    /// end is its only writer.
    taken: Arc<CachePadded<AtomicU64>>,
}

/// A mailbox of `capacity` batches from one shard to another.
pub fn mailbox(capacity: usize, receiver: Arc<ShardSignal>) -> (Outbox, Inbox) {
    let (tx, rx) = rtrb::RingBuffer::new(capacity);
    let (ret_tx, ret_rx) = rtrb::RingBuffer::new(capacity);
    let taken = Arc::new(CachePadded::new(AtomicU64::new(0)));
    (
        Outbox { ring: tx, returns: ret_rx, sent: 0, taken: taken.clone(), peer: receiver },
        Inbox { ring: rx, returns: ret_tx, taken },
    )
}

impl Outbox {
    /// Offer a batch; gives it back when the ring is full (the caller keeps it staged).
    #[inline]
    pub fn try_send(&mut self, batch: Batch) -> Result<(), Batch> {
        let n = batch.entries.len() as u64;
        self.ring.push(batch).map_err(|rtrb::PushError::Full(b)| b)?;
        self.sent += n;
        Ok(())
    }

    /// Envelopes sent that the receiver has not taken out of the ring yet: work queued for it
    /// that its published queue does not count.
    #[inline]
    pub fn in_ring(&self) -> u64 {
        self.sent.saturating_sub(self.taken.load(Ordering::Acquire))
    }

    /// Whether the ring is full: a batch offered now would come back.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.ring.is_full()
    }

    /// Take back a batch the receiver has emptied.
    #[inline]
    pub fn reclaim(&mut self) -> Option<Batch> {
        self.returns.pop().ok()
    }
}

impl Inbox {
    /// Next batch, if any.
    #[inline]
    pub fn recv(&mut self) -> Option<Batch> {
        let batch = self.ring.pop().ok()?;
        let taken = self.taken.load(Ordering::Relaxed) + batch.entries.len() as u64;
        self.taken.store(taken, Ordering::Release);
        Some(batch)
    }

    /// True when a batch is waiting.
    #[inline]
    pub fn has_mail(&self) -> bool {
        !self.ring.is_empty()
    }

    /// Hand an emptied batch back to its sender (dropped if the return ring is full).
    #[inline]
    pub fn give_back(&mut self, mut batch: Batch) {
        batch.clear();
        let _ = self.returns.push(batch);
    }
}

/// The full mesh of one node: `outboxes[from][to]` and `inboxes[to][from]` (None on the diagonal).
pub struct Mesh {
    pub outboxes: Vec<Vec<Option<Outbox>>>,
    pub inboxes: Vec<Vec<Option<Inbox>>>,
}

impl Mesh {
    /// Build mailboxes between every ordered pair of `signals.len()` shards.
    pub fn new(signals: &[Arc<ShardSignal>], capacity: usize) -> Mesh {
        let n = signals.len();
        let mut outboxes: Vec<Vec<Option<Outbox>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut inboxes: Vec<Vec<Option<Inbox>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        for from in 0..n {
            for to in (0..n).filter(|&to| to != from) {
                let (o, i) = mailbox(capacity, signals[to].clone());
                outboxes[from][to] = Some(o);
                inboxes[to][from] = Some(i);
            }
        }
        Mesh { outboxes, inboxes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_sees_what_its_ring_still_holds() {
        let sig = Arc::new(ShardSignal::new(1).0);
        let (mut out, mut inb) = mailbox(4, sig);
        let batch = |n: u64| {
            let mut b = Batch::with_capacity(4);
            (0..n).for_each(|_| b.push_bytes(Header::data(0, 0, 1), &[1]));
            b
        };
        assert!(out.try_send(batch(3)).is_ok());
        assert!(out.try_send(batch(2)).is_ok());
        assert_eq!(out.in_ring(), 5);
        let first = inb.recv().unwrap();
        assert_eq!((first.entries.len(), out.in_ring()), (3, 2), "taken out: no longer in the ring");
        inb.give_back(first);
        assert_eq!(out.in_ring(), 2, "giving a batch back changes nothing");
        let refused = (0..4).map(|_| out.try_send(batch(1))).filter(Result::is_err).count();
        assert_eq!((refused, out.in_ring()), (1, 5), "a batch the full ring refused is not counted");
        while inb.recv().is_some() {}
        assert_eq!(out.in_ring(), 0);
    }

    #[test]
    fn batches_flow_and_come_back() {
        let sig = Arc::new(ShardSignal::new(1).0);
        let (mut out, mut inb) = mailbox(2, sig);
        let mut b = Batch::with_capacity(4);
        b.push_bytes(Header::data(0, 0, 1), &[1, 2, 3]);
        assert!(out.try_send(b).is_ok());
        assert!(out.try_send(Batch::default()).is_ok());
        assert!(out.try_send(Batch::default()).is_err(), "ring of 2 is full");
        let got = inb.recv().unwrap();
        assert_eq!(got.payload(got.entries[0].off, got.entries[0].len), &[1, 2, 3]);
        inb.give_back(got);
        let back = out.reclaim().unwrap();
        assert!(back.entries.is_empty() && back.entries.capacity() >= 4);
    }
}
