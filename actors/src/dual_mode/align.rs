//! Barrier alignment across an actor's input channels: which channels delivered the current
//! barrier, and the critical message each brought.

use super::{BarrierId, ChannelId, ProtocolError};

/// Alignment of one barrier. Preallocated for the actor's channels and reused for every barrier.
#[derive(Debug)]
pub(crate) struct Alignment<M> {
    /// Per channel: `Some(critical)` once the channel delivered the barrier.
    arrived: Vec<Option<Option<M>>>,
    /// Channels that have not delivered the barrier yet.
    missing: usize,
}

impl<M> Alignment<M> {
    /// Alignment for `channels` input channels (at least one).
    pub(crate) fn new(channels: u16) -> Self {
        let channels = usize::from(channels.max(1));
        Alignment { arrived: (0..channels).map(|_| None).collect(), missing: channels }
    }

    /// Number of input channels.
    pub(crate) fn channels(&self) -> u16 {
        self.arrived.len() as u16
    }

    /// Rejects a channel id the actor does not have.
    pub(crate) fn check(&self, channel: ChannelId) -> Result<(), ProtocolError> {
        if usize::from(channel) < self.arrived.len() {
            Ok(())
        } else {
            Err(ProtocolError::ChannelOutOfRange { channel, channels: self.channels() })
        }
    }

    /// Whether `channel` delivered the current barrier: its later messages wait.
    pub(crate) fn has_arrived(&self, channel: ChannelId) -> bool {
        self.arrived[usize::from(channel)].is_some()
    }

    /// Channel `channel` delivered `barrier`, with its critical message if any.
    pub(crate) fn arrive(
        &mut self,
        channel: ChannelId,
        barrier: BarrierId,
        critical: Option<M>,
    ) -> Result<(), ProtocolError> {
        self.check(channel)?;
        let slot = &mut self.arrived[usize::from(channel)];
        if slot.is_some() {
            return Err(ProtocolError::BarrierOutOfOrder { channel, expected: barrier + 1, got: barrier });
        }
        *slot = Some(critical);
        self.missing -= 1;
        Ok(())
    }

    /// Whether every channel delivered the barrier.
    pub(crate) fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// Channels still owing the barrier (all of them between barriers).
    pub(crate) fn missing(&self) -> usize {
        self.missing
    }

    /// Ends the barrier: hands its critical messages to `each` in channel order and resets for
    /// the next barrier.
    pub(crate) fn finish(&mut self, mut each: impl FnMut(M)) {
        self.missing = self.arrived.len();
        for slot in &mut self.arrived {
            if let Some(Some(critical)) = slot.take() {
                each(critical);
            }
        }
    }
}
