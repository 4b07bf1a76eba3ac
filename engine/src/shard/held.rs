//! Batches a shard has received and not yet fully processed. A run-queue entry points into a
//! held batch; when its last entry has run, the batch goes back to its sender (or the pool).

use dirigo_actors::ids::ShardId;

use dirigo_net::mailbox::Batch;

struct Slot {
    batch: Batch,
    remaining: u32,
    from: ShardId,
}

/// Received batches, indexed by slot.
#[derive(Default)]
pub struct Held {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
}

impl Held {
    /// Hold `batch` from shard `from`; returns its slot.
    pub fn hold(&mut self, batch: Batch, from: ShardId) -> u32 {
        let slot = Slot { remaining: batch.entries.len() as u32, batch, from };
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Hold `batch`, letting `f` see its entries and the slot they will live in; returns the
    /// slot (`None` for an empty batch, which is not held).
    pub fn hold_with(
        &mut self,
        batch: Batch,
        from: ShardId,
        f: impl FnOnce(&[dirigo_net::mailbox::Entry], u32),
    ) -> Option<u32> {
        if batch.entries.is_empty() {
            return None;
        }
        let slot = self.hold(batch, from);
        let s = self.slots[slot as usize].as_ref().expect("just held");
        f(&s.batch.entries, slot);
        Some(slot)
    }

    /// The batch in `slot`.
    #[inline]
    pub fn batch(&self, slot: u32) -> &Batch {
        &self.slots[slot as usize].as_ref().expect("held slot").batch
    }

    /// The payload buffer of `slot` if it holds that one payload alone, from offset 0 (a large
    /// archive moved as a batch of its own: `Outputs::push_archive`): taken, not copied. The
    /// entry stays until released.
    pub fn take_sole_payload(&mut self, slot: u32, off: u32, len: u32) -> Option<rkyv::util::AlignedVec> {
        let b = &mut self.slots[slot as usize].as_mut().expect("held slot").batch;
        (b.entries.len() == 1 && off == 0 && len as usize == b.bytes.len()).then(|| std::mem::take(&mut b.bytes))
    }

    /// `n` entries of `slot` are done (one, or a run of them); returns the batch and its sender
    /// when they were the last.
    #[inline]
    pub fn release_n(&mut self, slot: u32, n: u32) -> Option<(Batch, ShardId)> {
        let s = self.slots[slot as usize].as_mut().expect("held slot");
        s.remaining -= n;
        if s.remaining > 0 {
            return None;
        }
        let s = self.slots[slot as usize].take().expect("held slot");
        self.free.push(slot);
        Some((s.batch, s.from))
    }
}
