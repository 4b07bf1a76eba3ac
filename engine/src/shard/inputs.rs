//! Control state of one function instance on a shard: its input channels, the watermark of each
//! (the instance's watermark is their minimum), and which have ended.

use dirigo_actors::ids::ShardId;

/// Input channels of one instance.
#[derive(Debug)]
pub struct InputChannels {
    channels: Vec<(u8, ShardId)>,
    watermarks: Vec<u64>,
    ended: Vec<bool>,
    open: usize,
    /// The instance's current watermark (min over open channels).
    pub watermark: u64,
}

impl InputChannels {
    /// An instance receiving on `channels` (port, sending shard).
    pub fn new(channels: Vec<(u8, ShardId)>) -> Self {
        let n = channels.len();
        InputChannels { channels, watermarks: vec![0; n], ended: vec![false; n], open: n, watermark: 0 }
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
}
