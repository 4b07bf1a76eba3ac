//! Helpers shared by unit tests across the crate: a seeded generator and record archiving.

use crate::operator::{Msg, Operator, VecEmitter};
use crate::record::{access, Record, Value};

/// SplitMix64: a tiny seeded generator, so tests need no extra dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Apply one record (archived here) to `op`.
pub fn feed<O: Operator>(op: &mut O, msg: Msg, values: Vec<Value>, out: &mut VecEmitter) {
    let bytes = Record::from(values).to_archive();
    let rec = access(&bytes).expect("test archive is valid");
    op.on_record(msg, rec, &bytes, out);
}

/// A message on port 0 with this key hash and event time.
pub fn msg(key_hash: u64, event_time: u64) -> Msg {
    Msg { key_hash, event_time, port: 0 }
}
