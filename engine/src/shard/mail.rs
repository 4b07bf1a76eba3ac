//! The shard's ingress from other shards (and from itself): the mailboxes, the batches received
//! and not yet fully run, and the scratch of the batch being received.

use dirigo_actors::ids::ShardId;
use dirigo_net::mailbox::{Batch, Inbox};

use super::dual_mode::{DIRECT_NO_PAYLOAD, NO_PAYLOAD};
use super::held::Held;
use super::outputs::Outputs;

pub(super) struct Mail {
    /// Per sending shard (global id): its mailbox here (`None` for this shard, whose own
    /// batches come through `Outputs::local`, and for shards of other nodes).
    pub inboxes: Vec<Option<Inbox>>,
    /// Batches received whose entries have not all run.
    pub held: Held,
    /// Debug builds: the sequence number expected next on each channel.
    pub expected_seq: Vec<u32>,
    /// Scratch: which entries of the batch being received were not queued (see `divert`).
    pub diverted: Vec<bool>,
    /// Scratch: the queued records run as one stretch (see `Shard::run_queued`).
    pub queued_run: Vec<dirigo_net::mailbox::Entry>,
    /// Scratch: the functions left to look at in `Shard::queued_downstream`.
    pub downstream: Vec<dirigo_actors::ids::FunctionId>,
}

impl Mail {
    pub fn new(inboxes: Vec<Option<Inbox>>, shards: usize) -> Self {
        Mail {
            inboxes,
            held: Held::default(),
            expected_seq: vec![0; shards],
            diverted: Vec::new(),
            queued_run: Vec::new(),
            downstream: Vec::new(),
        }
    }

    /// The next batch waiting from shard `from`.
    #[inline]
    pub fn recv(&mut self, from: usize) -> Option<Batch> {
        self.inboxes[from].as_mut().and_then(|i| i.recv())
    }

    /// Mail is waiting in some mailbox.
    pub fn has_mail(&self) -> bool {
        self.inboxes.iter().flatten().any(|i| i.has_mail())
    }

    /// One entry of held batch `slot` is done: the last one sends the batch back to its sender
    /// (this shard's own go back to `out`'s pool).
    #[inline(always)]
    pub fn release(&mut self, slot: u32, me: ShardId, out: &mut Outputs) {
        self.release_n(slot, 1, me, out)
    }

    /// [`Mail::release`] of `n` entries of `slot` at once.
    #[inline]
    pub fn release_n(&mut self, slot: u32, n: u32, me: ShardId, out: &mut Outputs) {
        if slot == NO_PAYLOAD || slot == DIRECT_NO_PAYLOAD {
            return; // an envelope made here (an end for a shard given up)
        }
        if let Some((batch, from)) = self.held.release_n(slot, n) {
            if from == me {
                out.recycle(batch);
            } else if let Some(inbox) = self.inboxes[from as usize].as_mut() {
                inbox.give_back(batch);
            }
        }
    }

    /// Protocol invariant (debug builds): every channel delivers its envelopes exactly once, in
    /// the order they were sent.
    #[inline]
    pub fn check_sequence(&mut self, me: ShardId, batch: &Batch, from: ShardId) {
        if cfg!(debug_assertions) {
            for e in &batch.entries {
                let want = self.expected_seq[from as usize];
                assert_eq!(e.header.seq, want, "shard {me}: channel from shard {from} skipped or repeated");
                self.expected_seq[from as usize] = want.wrapping_add(1);
            }
        }
    }
}
