//! Operator chaining. A record for an operator instance on the same shard (sent on a forward
//! edge, or on a keyed edge whose key this shard is home to; never a dual-mode actor's, nor a
//! function taking a key group in: see `migrate`) runs at once, right after the message that
//! made it, instead of going through a batch, the local mailbox, `on_enqueue`, the run queue and `pick_next` — when the policy
//! allows it (`Policy::chains`), no snapshot aligns on the shard, nothing of the target function
//! is staged for this shard itself, and nothing but records and watermarks is queued for it.
//! Before a chained record runs, its function runs what it has queued (older records and
//! watermarks of its channels, ahead of the policy's order). So every earlier envelope of the
//! record's channel has run when it runs, and every later one (a watermark, an end, a barrier)
//! is staged behind it: exactly its channel's order.
//!
//! The router writes chained records into `next`; the shard runs them after the message (or the
//! source event) that made them, generation by generation: `next` becomes `cur`, and what those
//! records chain goes into the fresh `next`. Records of one function run in the order they were
//! made. Nothing here allocates in steady state.
//!
//! A watermark for an instance here chains under the same conditions (`broadcast_watermark`)
//! and runs in its place among the records, alone: staged here, it would make its function's
//! later records take the queue until it had run (`pending_here`).
//!
//! A built-in window is a dual-mode actor. Under a policy that never leases, its records chain
//! too: each runs as its machine's plain path would run it (`Shard::run_chained_window`) while
//! the machine is idle when the record's turn comes; from the first record that finds it busy,
//! the rest reach the machine in order, as mail would. Its watermarks never chain: they go
//! through its machine.

use dirigo_actors::envelope::Header;
use dirigo_net::mailbox::Batch;
use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

use crate::runqueue::RunQueue;

use super::outputs::Outputs;

/// Records chained, and the buffers they are made in.
#[derive(Default)]
pub(super) struct Chain {
    /// Per function (global id): an instance here records may chain to: an operator instance,
    /// or a built-in window (a dual-mode actor) when the policy never leases (its records run
    /// as its machine's plain path runs them, `Shard::run_chained_window`); not a function
    /// holding its messages back for a key group on its way here.
    pub chainable: Vec<bool>,
    /// The same for watermarks: operator instances only (an actor's go through its machine).
    pub wm_chainable: Vec<bool>,
    /// Records made by what runs now.
    pub next: ChainBuf,
    /// Records running now.
    pub cur: ChainBuf,
    /// The maps records may be fused into (`shard::fuse`), refreshed with `chainable`.
    pub fusion: super::fuse::Fusion,
    /// The shard is running chained records now (what runs meanwhile chains into `next`, which
    /// the same loop runs next).
    pub running: bool,
}

/// Chained records: headers and payloads, as in a batch.
#[derive(Default)]
pub(super) struct ChainBuf {
    pub batch: Batch,
    arena: Arena,
}

impl ChainBuf {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.batch.entries.is_empty()
    }

    /// Chain a record made from `parent` (see `Batch::push_child`): its header `child` makes in
    /// its entry, its payload `write` appends (with the serializer's arena).
    #[inline(always)]
    pub fn push_child(
        &mut self,
        parent: &Header,
        child: impl FnOnce(&mut Header),
        write: impl FnOnce(&mut AlignedVec, &mut Arena) -> std::ops::Range<usize>,
    ) {
        let arena = &mut self.arena;
        self.batch.push_child(parent, child, |b| write(b, arena));
    }

    /// The serializer's scratch arena.
    #[inline]
    pub fn arena(&mut self) -> &mut Arena {
        &mut self.arena
    }

    /// The header of the record chained last.
    #[inline(always)]
    pub fn last_header(&self) -> &Header {
        &self.batch.entries.last().expect("a record was chained").header
    }

    /// Chain a header alone (a watermark; a record for a sink that reads headers alone).
    #[inline(always)]
    pub fn push_header(&mut self, h: Header) {
        self.batch.push_header(h);
    }
}

/// What a router needs to chain: where chained records go, which functions may take them, and
/// what waits in the run queue.
pub(super) struct ChainTo<'a> {
    pub buf: &'a mut ChainBuf,
    pub chainable: &'a [bool],
    pub runq: &'a RunQueue,
    /// The maps it may fuse (`shard::fuse`), if the policy lets it.
    pub fusing: Option<super::fuse::Fusing<'a>>,
}

impl ChainTo<'_> {
    /// Chain watermark `h` for function `f`, if a record for it could chain now; false: stage
    /// it. Run in its place among the chained records (`Shard::run_chain`).
    #[inline]
    pub fn watermark(&mut self, out: &Outputs, f: usize, h: Header) -> bool {
        let ok = self.may_run(out, f);
        if ok {
            self.buf.push_header(h);
        }
        ok
    }

    /// A record may chain to `f` when nothing of `f` is staged for this shard and nothing
    /// but records and watermarks is queued for it: those the shard runs first, as it runs the
    /// record (`Shard::run_chain`).
    #[inline]
    pub fn may_run(&self, out: &Outputs, f: usize) -> bool {
        self.chainable[f] && !out.pending_here(f) && !self.runq.holds_control(f as u16)
    }
}
