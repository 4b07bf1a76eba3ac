//! Control state of one function instance on a shard: its input channels, the watermark of each
//! (the instance's watermark is their minimum), which have ended, and the snapshot barrier each
//! has delivered (the instance is aligned on a barrier once every open channel delivered it).

use dirigo_actors::ids::ShardId;

/// Input channels of one instance.
#[derive(Debug)]
pub struct InputChannels {
    channels: Vec<(u8, ShardId)>,
    watermarks: Vec<u64>,
    ended: Vec<bool>,
    /// Per channel: the last snapshot barrier (epoch) it delivered.
    barriers: Vec<u64>,
    open: usize,
    /// The instance's current watermark (min over open channels).
    pub watermark: u64,
    /// The last snapshot barrier the instance aligned on (every open channel delivered it).
    pub aligned: u64,
    /// Some channel delivered a barrier the instance has not aligned on: what comes after it
    /// on that channel waits ([`Self::blocks`]).
    pub aligning: bool,
}

impl InputChannels {
    /// An instance receiving on `channels` (port, sending shard).
    pub fn new(channels: Vec<(u8, ShardId)>) -> Self {
        let n = channels.len();
        InputChannels {
            channels,
            watermarks: vec![0; n],
            ended: vec![false; n],
            barriers: vec![0; n],
            open: n,
            watermark: 0,
            aligned: 0,
            aligning: false,
        }
    }

    /// Start counting barriers from `epoch` (a run resumed from snapshot `epoch`).
    pub fn resume_at(&mut self, epoch: u64) {
        self.aligned = epoch;
        self.barriers.iter_mut().for_each(|b| *b = epoch);
    }

    /// Channel (`port`, `from`) delivered snapshot barrier `epoch`. Returns whether the
    /// instance is now aligned on it (every open channel delivered it).
    pub fn on_barrier(&mut self, port: u8, from: ShardId, epoch: u64) -> bool {
        let c = self.channel(port, from);
        debug_assert!(epoch > self.barriers[c], "barrier {epoch} twice or out of order on (port {port}, shard {from})");
        self.barriers[c] = epoch;
        self.aligning = true;
        self.check_aligned()
    }

    /// Whether every open channel delivered the barrier after the last aligned one (then that
    /// barrier is the aligned one).
    fn check_aligned(&mut self) -> bool {
        if !self.aligning {
            return false;
        }
        let next = self.aligned + 1;
        let all = (self.barriers.iter().zip(&self.ended)).all(|(&b, &e)| e || b >= next);
        if all {
            self.aligned = next;
            self.aligning = self.barriers.iter().zip(&self.ended).any(|(&b, &e)| !e && b > next);
        }
        all
    }

    /// Whether a message on channel (`port`, `from`) must wait: the channel delivered a
    /// barrier the instance has not aligned on yet.
    #[inline]
    pub fn blocks(&self, port: u8, from: ShardId) -> bool {
        self.aligning && self.barriers[self.channel(port, from)] > self.aligned
    }

    /// Channels that have not ended (0: the instance ended).
    pub fn open(&self) -> usize {
        self.open
    }

    fn channel(&self, port: u8, from: ShardId) -> usize {
        self.channels
            .iter()
            .position(|&c| c == (port, from))
            .unwrap_or_else(|| panic!("message on unknown channel (port {port}, shard {from})"))
    }

    /// A channel's watermark advanced; returns the instance's new watermark if it advanced.
    pub fn on_watermark(&mut self, port: u8, from: ShardId, wm: u64) -> Option<u64> {
        let c = self.channel(port, from);
        self.watermarks[c] = self.watermarks[c].max(wm);
        self.advance()
    }

    fn advance(&mut self) -> Option<u64> {
        let min = self.watermarks.iter().copied().min().unwrap_or(u64::MAX);
        (min > self.watermark).then(|| {
            self.watermark = min;
            min
        })
    }

    /// The ports on which shard `from` sends to this instance and has not ended.
    pub fn open_from(&self, from: ShardId) -> Vec<u8> {
        (self.channels.iter().zip(&self.ended)).filter(|&(&(_, s), &e)| s == from && !e).map(|(&(p, _), _)| p).collect()
    }

    /// Whether channel (`port`, `from`) has not ended.
    pub fn is_open(&self, port: u8, from: ShardId) -> bool {
        self.channels.iter().zip(&self.ended).any(|(&c, &e)| c == (port, from) && !e)
    }

    /// A channel ended. Returns whether it was the last open one, and the instance's new
    /// watermark if the end let it advance (the ended channel no longer holds it back).
    pub fn on_end(&mut self, port: u8, from: ShardId) -> (bool, Option<u64>) {
        let c = self.channel(port, from);
        assert!(!self.ended[c], "channel (port {port}, shard {from}) ended twice");
        self.ended[c] = true;
        self.watermarks[c] = u64::MAX;
        self.open -= 1;
        if self.open == 0 {
            return (true, None);
        }
        (false, self.advance())
    }

    /// After a channel ended: whether the instance is now aligned on a barrier that only the
    /// ended channel still owed.
    pub fn aligned_by_end(&mut self) -> bool {
        self.check_aligned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_is_the_minimum_over_channels_and_ends_count() {
        let mut s = InputChannels::new(vec![(0, 0), (0, 1), (1, 0)]);
        assert_eq!(s.on_watermark(0, 0, 10), None);
        assert_eq!(s.on_watermark(0, 1, 5), None);
        assert_eq!(s.on_watermark(1, 0, 7), Some(5));
        assert_eq!(s.on_watermark(0, 1, 20), Some(7));
        assert_eq!(s.on_end(1, 0), (false, Some(10)));
        assert_eq!(s.on_end(0, 0), (false, Some(20)));
        assert_eq!(s.on_end(0, 1), (true, None));
    }

    #[test]
    fn a_barrier_aligns_once_every_open_channel_delivered_it_and_blocks_the_early_ones() {
        let mut s = InputChannels::new(vec![(0, 0), (0, 1), (1, 0)]);
        assert!(!s.blocks(0, 0));
        assert!(!s.on_barrier(0, 0, 1));
        assert!(s.blocks(0, 0) && !s.blocks(0, 1) && !s.blocks(1, 0));
        assert!(!s.on_barrier(0, 0, 2), "a second barrier on the same channel does not align the first");
        assert!(!s.on_barrier(1, 0, 1));
        assert!(s.on_barrier(0, 1, 1));
        assert_eq!(s.aligned, 1);
        assert!(s.blocks(0, 0), "channel 0 is already at barrier 2");
        assert!(!s.blocks(0, 1) && !s.blocks(1, 0));
        // The channels that owe barrier 2 end: the instance aligns on it without them.
        assert!(!s.on_end(0, 1).0);
        assert!(!s.aligned_by_end());
        assert!(!s.on_end(1, 0).0);
        assert!(s.aligned_by_end());
        assert_eq!(s.aligned, 2);
        assert!(!s.blocks(0, 0));
    }
}
