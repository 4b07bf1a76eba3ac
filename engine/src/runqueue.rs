//! A shard's run queue: one FIFO queue per function instance, ordered among themselves by the
//! policy. Messages of one function never overtake each other, so per-key order (and the order
//! of watermarks and ends relative to data) holds under every policy.

use std::collections::VecDeque;

use dirigo_actors::envelope::{Header, MessageKind};
use dirigo_actors::ids::FunctionId;

/// A queued message: its header, the policy's priority (smaller runs first), its arrival number
/// on this shard, and where its payload is held.
#[derive(Clone, Copy, Debug)]
pub struct QEntry {
    pub header: Header,
    pub priority: u64,
    pub arrival: u64,
    pub slot: u32,
    pub off: u32,
    pub len: u32,
}

/// Per-function FIFO queues plus the set of non-empty ones.
#[derive(Debug, Default)]
pub struct RunQueue {
    queues: Vec<VecDeque<QEntry>>,
    active: Vec<FunctionId>,
    len: usize,
    /// Per function: queued entries that are neither records nor watermarks (ends, barriers,
    /// control messages).
    control: Vec<u32>,
}

/// Whether an entry of this kind counts in `RunQueue::control`.
#[inline]
fn is_control(kind: MessageKind) -> bool {
    !matches!(kind, MessageKind::Data | MessageKind::Watermark)
}

impl RunQueue {
    /// A run queue for `functions` functions (indexed by global function id).
    pub fn new(functions: usize) -> Self {
        RunQueue {
            queues: (0..functions).map(|_| VecDeque::with_capacity(256)).collect(),
            active: Vec::new(),
            len: 0,
            control: vec![0; functions],
        }
    }

    /// Make room for functions up to `functions` (a deployed app's, at run time).
    pub fn grow(&mut self, functions: usize) {
        while self.queues.len() < functions {
            self.queues.push(VecDeque::with_capacity(256));
        }
        self.control.resize(self.queues.len(), 0);
    }

    /// Messages queued in total.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Messages queued for `f`.
    #[inline]
    pub fn len_of(&self, f: FunctionId) -> usize {
        self.queues[f as usize].len()
    }

    /// Whether `f` has an entry queued that is neither a record nor a watermark.
    #[inline]
    pub fn holds_control(&self, f: FunctionId) -> bool {
        self.control[f as usize] > 0
    }

    /// Enqueue at the tail of `f`'s queue. Hot path.
    #[inline]
    pub fn push(&mut self, e: QEntry) {
        let f = e.header.function;
        self.control[f as usize] += is_control(e.header.kind) as u32;
        let q = &mut self.queues[f as usize];
        if q.is_empty() {
            self.active.push(f);
        }
        q.push_back(e);
        self.len += 1;
    }

    /// Put `e` back at the head of its function's queue (it was taken out to wait behind a
    /// snapshot barrier; it runs before what arrived after it).
    pub fn push_front(&mut self, e: QEntry) {
        let f = e.header.function;
        self.control[f as usize] += is_control(e.header.kind) as u32;
        let q = &mut self.queues[f as usize];
        if q.is_empty() {
            self.active.push(f);
        }
        q.push_front(e);
        self.len += 1;
    }

    /// Dequeue the head of `f`'s queue. Hot path.
    #[inline]
    pub fn pop(&mut self, f: FunctionId) -> Option<QEntry> {
        let q = &mut self.queues[f as usize];
        let e = q.pop_front()?;
        self.control[f as usize] -= is_control(e.header.kind) as u32;
        if q.is_empty() {
            let i = self.active.iter().position(|&a| a == f).expect("non-empty queue is active");
            self.active.swap_remove(i);
        }
        self.len -= 1;
        Some(e)
    }

    /// The head of `f`'s queue.
    #[inline]
    pub fn head(&self, f: FunctionId) -> Option<&QEntry> {
        self.queues[f as usize].front()
    }

    /// Functions with queued messages (unordered).
    #[inline]
    pub fn active(&self) -> &[FunctionId] {
        &self.active
    }

    /// The function whose head has the smallest `(priority, arrival)`.
    #[inline]
    pub fn min_head(&self) -> Option<FunctionId> {
        self.min_head_by(|_| true)
    }

    /// Like `min_head`, among functions accepted by `keep`.
    #[inline]
    pub fn min_head_by(&self, keep: impl Fn(FunctionId) -> bool) -> Option<FunctionId> {
        let mut best: Option<(u64, u64, FunctionId)> = None;
        for &f in &self.active {
            if !keep(f) {
                continue;
            }
            let h = self.queues[f as usize].front().expect("active queues are non-empty");
            let k = (h.priority, h.arrival, f);
            if best.is_none_or(|b| (k.0, k.1) < (b.0, b.1)) {
                best = Some(k);
            }
        }
        best.map(|b| b.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(f: FunctionId, priority: u64, arrival: u64) -> QEntry {
        QEntry { header: Header::data(0, f, 0), priority, arrival, slot: 0, off: 0, len: 0 }
    }

    #[test]
    fn per_function_fifo_and_min_head() {
        let mut q = RunQueue::new(3);
        q.push(entry(0, 50, 0));
        q.push(entry(0, 10, 1)); // lower priority behind a higher one: stays behind (FIFO per function)
        q.push(entry(2, 20, 2));
        assert_eq!(q.min_head(), Some(2));
        assert_eq!(q.pop(2).unwrap().arrival, 2);
        assert_eq!(q.min_head(), Some(0));
        assert_eq!(q.pop(0).unwrap().arrival, 0);
        assert_eq!(q.pop(0).unwrap().arrival, 1);
        assert!(q.is_empty() && q.active().is_empty() && q.min_head().is_none());
    }
}
