//! Protocol violations an activation detects in its inputs: each means a bug in the engine or a
//! peer (lost, duplicated or reordered control messages, barriers out of order).

use super::{BarrierId, ChannelId, ControlKind, LesseeMode, Mode, Seq};
use crate::ids::ShardId;

/// An input the protocol does not allow in the activation's current state. Each one means the
/// engine or a peer broke the protocol (a lost, duplicated or reordered message): the engine
/// reports it as a bug. Checks come before effects, so the offending input itself had none.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A message named an input channel the actor does not have.
    #[error("input channel {channel} out of range (the actor has {channels})")]
    ChannelOutOfRange { channel: ChannelId, channels: u16 },
    /// A barrier arrived out of order on a channel: `expected` is the barrier the channel owes.
    #[error("barrier {got} on channel {channel} out of order (expected {expected})")]
    BarrierOutOfOrder { channel: ChannelId, expected: BarrierId, got: BarrierId },
    /// A barrier at or below the last completed one.
    #[error("barrier {got} is not after the last completed barrier {last}")]
    BarrierRegressed { got: BarrierId, last: BarrierId },
    /// No lessee slot on this shard (or it is not in a phase that allows the request).
    #[error("no lessee on shard {shard} for this request")]
    UnknownLessee { shard: ShardId },
    /// A lessee answered a forward other than its oldest unanswered one.
    #[error("lessee on shard {from} answered forward {got}, expected {expected:?}")]
    UnexpectedSeq { from: ShardId, expected: Option<Seq>, got: Seq },
    /// A control message the lessor cannot take in its mode.
    #[error("lessor in mode {mode:?} cannot take {control:?} from shard {from}")]
    UnexpectedAtLessor { from: ShardId, control: ControlKind, mode: Mode },
    /// A control message the lessee cannot take in its mode.
    #[error("lessee in mode {mode:?} cannot take {control:?}")]
    UnexpectedAtLessee { control: ControlKind, mode: LesseeMode },
    /// A lessee retired while forwards to it were still unanswered.
    #[error("lessee on shard {shard} retired with {count} unanswered forwards")]
    UnresolvedForwards { shard: ShardId, count: usize },
    /// Retirement is only started while the actor is Runnable; retry after it unblocks.
    #[error("cannot retire a lessee while the actor is {mode:?}")]
    NotRunnable { mode: Mode },
}
