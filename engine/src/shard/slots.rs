//! The shard's function slots: per function (global id), the operator instance, the dual-mode
//! actor's lessor or the input channels this shard runs of it, and the lessee slots it lends.

use crate::instance::OperatorInstance;

use super::dual_mode::{Commands, LesseeSlot, LessorActor, Pending};
use super::inputs::InputChannels;

pub(super) struct Slots {
    /// Operator instances of the functions that are not dual-mode actors here.
    pub ops: Vec<Option<OperatorInstance>>,
    /// Lessors of the dual-mode actors homed here, by function (their operator lives inside).
    pub actors: Vec<Option<Box<LessorActor>>>,
    /// Lessee slots this shard lends to other shards' lessors.
    pub lessees: Vec<Option<LesseeSlot>>,
    /// Input channels (watermarks, ends, barriers) of each function instance here.
    pub insts: Vec<Option<InputChannels>>,
    /// Function instances here that have not ended.
    pub live: usize,
    /// Scratch outbox of the actor machines.
    pub cmds: Commands,
    /// Scratch: an actor's queued messages handed back to the run queue.
    pub taken: Vec<Pending>,
    /// A sink ran this turn: collecting sinks send what they hold at its end.
    pub sink_ran: bool,
}

impl Slots {
    pub fn new(
        ops: Vec<Option<OperatorInstance>>,
        actors: Vec<Option<Box<LessorActor>>>,
        insts: Vec<Option<InputChannels>>,
    ) -> Self {
        let live = insts.iter().flatten().count();
        Slots { ops, actors, lessees: Vec::new(), insts, live, cmds: Vec::new(), taken: Vec::new(), sink_ran: false }
    }

    /// Collecting sinks send what they made since the last time (the end of a turn that ran a
    /// sink: a program reading a collector gets its outputs within a turn).
    pub fn send_collected(&mut self) {
        for op in self.ops.iter_mut().flatten() {
            if let OperatorInstance::Sink(s) = op {
                s.send_collected();
            }
        }
    }

    /// Flush every operator's buffered output (sinks).
    pub fn flush(&mut self) {
        for op in self.ops.iter_mut().flatten() {
            op.flush();
        }
    }

    /// Whether a lessor here has a lessee anywhere.
    pub fn lends_out(&self) -> bool {
        self.actors.iter().flatten().any(|a| a.lends())
    }

    /// Whether every actor here is done and no lessee slot is open.
    pub fn actors_done(&self) -> bool {
        self.actors.iter().flatten().all(|a| a.is_done()) && self.lessees.iter().all(Option::is_none)
    }

    /// Records function `f` dropped as late so far.
    pub fn late_dropped(&self, f: usize) -> Option<u64> {
        match (&self.ops[f], &self.actors[f]) {
            (Some(op), _) => Some(op.late_dropped()),
            (_, Some(actor)) => Some(actor.late_dropped()),
            _ => None,
        }
    }
}
