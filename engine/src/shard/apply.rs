//! Receiving and running messages: mailboxes drained into the run queue through `on_enqueue`,
//! then messages picked by the policy and applied to their function instance, watermarks and
//! ends handled in order with data.

use dirigo_actors::envelope::{Header, MessageKind};
use dirigo_actors::ids::{FunctionId, ShardId};

use super::dual_mode::TOKEN;
use super::fuse::Fusing;
use super::router::Router;
use super::router::{broadcast, broadcast_watermark};
use super::stretch::{StretchRun, Timing};
use super::{Shard, COST_SAMPLE, TURN_TIME_NS};
use crate::instance::OperatorInstance;
use crate::policy::Policy;
use crate::runqueue::QEntry;
use dirigo_net::clock::now_ns;
use dirigo_net::mailbox::{Batch, Entry};

/// Messages between two looks at the clock within a turn.
const TIME_CHECK_EVERY: usize = 8;
/// At most this many records run as their batches arrive in one drain of the mail (two full
/// batches): what arrives beyond is queued and runs in the turns after, in the same order.
const ARRIVALS_AT_ONCE: usize = 512;
/// At most this many queued records of one function run as one stretch (`run_queued`).
const QUEUED_RUN: usize = 64;

impl<P: Policy> Shard<P> {
    /// Move every waiting batch (from other shards and from this one) into the run queue.
    pub(super) fn drain_mail(&mut self) -> bool {
        let mut any = false;
        let mut at_once = 0;
        while let Some(b) = self.out.local.pop_front() {
            self.out.drained_here(&b);
            self.receive(b, self.id, &mut at_once);
            any = true;
        }
        for from in 0..self.mail.inboxes.len() {
            while let Some(b) = self.mail.recv(from) {
                self.receive(b, from as ShardId, &mut at_once);
                any = true;
            }
        }
        any
    }

    /// Take in a batch: run it at once where the policy's order allows (`runs_at_once`) and
    /// this drain has run fewer than `ARRIVALS_AT_ONCE` records so (a backlog of batches runs
    /// in later turns, as queued work does); queue it otherwise.
    #[inline]
    fn receive(&mut self, batch: Batch, from: ShardId, at_once: &mut usize) {
        if *at_once + batch.entries.len() > ARRIVALS_AT_ONCE || !self.runs_at_once(&batch) {
            return self.enqueue_batch(batch, from);
        }
        *at_once += batch.entries.len();
        self.mail.check_sequence(self.id, &batch, from);
        if let Some(slot) = self.mail.held.hold_with(batch, from, |_, _| {}) {
            self.run_arrivals(slot);
        }
    }

    /// Whether `batch` runs as it arrives: the policy runs messages in arrival order, nothing
    /// waits on the shard (queued, chained or running) for it to overtake, and the batch holds
    /// only records of plain operator instances here that records may chain to (none of a
    /// dual-mode actor, of a function a key group is on its way to, or while a snapshot
    /// aligns). The queue would run exactly these records next, in this order.
    #[inline]
    fn runs_at_once(&self, batch: &Batch) -> bool {
        self.sched.policy.runs_in_arrival_order()
            && self.sched.runq.is_empty()
            && !self.chain.running
            && self.chain.next.is_empty()
            && self.chain_on()
            && batch.entries.iter().all(|e| {
                let f = e.header.function as usize;
                e.header.kind == MessageKind::Data
                    && self.chain.chainable.get(f).copied().unwrap_or(false)
                    && self.slots.actors[f].is_none()
            })
    }

    /// Run the records of held batch `slot` in order, each run of one function's records as a
    /// stretch (as `run_chain` runs chained ones), then what they chained.
    fn run_arrivals(&mut self, slot: u32) {
        let me = self.id as usize;
        let n = self.mail.held.batch(slot).entries.len();
        self.chain.running = true;
        let mut i = 0;
        while i < n {
            let entries = &self.mail.held.batch(slot).entries;
            let function = entries[i].header.function;
            let end = (i..n).find(|&j| entries[j].header.function != function).unwrap_or(n);
            let f = function as usize;
            let app = self.sched.cost.fn_app[f] as usize;
            if !self.app_failed(app) && !self.torn_down(f) {
                let stats = &mut self.tele.stats[app];
                stats.service_ns += self.sched.cost.ns[f] * (end - i) as u64;
                stats.on_arrival += (end - i) as u64;
                self.touch(app);
                self.signals[me].begin_run(function, self.sched.now);
                let chain = self.chain_on();
                #[cfg(debug_assertions)]
                for e in &self.mail.held.batch(slot).entries[i..end] {
                    self.debug_assert_group_here(f, e.header.key_hash);
                }
                let (mut parts, mail) = self.parts();
                let batch = mail.held.batch(slot);
                // What runs after this stretch: the rest of the batch (nothing is chained yet).
                parts.rest = Some(&batch.entries[end..]);
                let failed = parts.run_stretch(f, &batch.entries[i..end], batch, chain, Timing::Counted);
                self.time_outputs(app);
                if failed {
                    self.check_user_code(f);
                }
            }
            self.mail.release_n(slot, (end - i) as u32, self.id, &mut self.out);
            i = end;
        }
        self.signals[me].end_run();
        self.chain.running = false;
        self.finish_chain();
    }

    fn enqueue_batch(&mut self, batch: Batch, from: ShardId) {
        self.mail.check_sequence(self.id, &batch, from);
        let now = now_ns();
        let mut diverted = false;
        // Records of an idle built-in window need not pass its machine when nothing could
        // send them elsewhere (the policy never leases) or hold them (no snapshot aligns).
        // Diverted entries are handled after this loop (`divert`), so once one is met, nothing
        // later in the batch may overtake it on the plain path (a barrier, a watermark).
        let mut plain_actors = !self.sched.policy.may_lease() && self.snap.aligning == 0;
        let (actors, fn_count, mig, faults) = (&self.slots.actors, self.slots.actors.len(), &self.mig, &self.faults);
        let (apps, sched) = (&self.plan.apps, &mut self.sched);
        let rb = &mut self.rb;
        let mask = &mut self.mail.diverted;
        mask.clear();
        let slot = self.mail.held.hold_with(batch, from, |entries, slot| {
            for e in entries {
                let f = e.header.function as usize;
                let gone = faults.torn_down(&sched.cost.fn_app, f);
                let actor = if f < fn_count { actors[f].as_deref() } else { None };
                let plain_actor = plain_actors
                    && e.header.kind == MessageKind::Data
                    && actor.is_some_and(|a| a.takes_plain_records())
                    && !mig.holds_back(f)
                    && !gone;
                if plain_actor {
                    rb.count(f, e.header.key_hash); // as `actor_arrival` does
                }
                // Protocol messages and the messages of actors go through the actor machines;
                // messages of a function a key group is on its way to are held back.
                let divert = !plain_actor
                    && (e.header.kind.is_protocol() || f < fn_count && (actor.is_some() || mig.holds_back(f)) || gone);
                mask.push(divert);
                if divert {
                    diverted = true;
                    plain_actors = false;
                    continue;
                }
                sched.enqueue(apps, now, e.header, slot, e.off, e.len);
            }
        });
        if let (Some(slot), true) = (slot, diverted) {
            self.divert(slot, from);
        }
    }

    /// The entries of held batch `slot` that were not queued (`self.mail.diverted`), in order:
    /// protocol messages, actor messages, and messages held back for an incoming key group.
    /// Entries are copied out one at a time: a machine may release entries (never this batch's
    /// last one before its turn), and the queued ones stay where they are.
    fn divert(&mut self, slot: u32, from: ShardId) {
        let n = self.mail.held.batch(slot).entries.len();
        let mask = std::mem::take(&mut self.mail.diverted);
        for i in (0..n).filter(|&i| mask[i]) {
            let e = self.mail.held.batch(slot).entries[i];
            let f = e.header.function as usize;
            let kind = e.header.kind;
            if self.torn_down(f) {
                self.release(slot);
                continue;
            }
            if kind.is_migration() && !kind.is_queued_control() {
                self.on_migration(e, slot, from);
            } else if kind.is_protocol() {
                self.on_protocol(e, slot, from);
            } else if kind.is_queued_control() && self.slots.actors[f].is_some() && !self.mig.holds_back(f) {
                // An actor's: every message before it on its channel has reached the machine.
                self.on_queued_control(&e.header);
                self.release(slot);
            } else if self.mig.holds_back(f) {
                self.mig.hold_back(f, e, slot);
            } else {
                // An actor's message, or one held back when the batch came whose group has
                // arrived since (earlier in this batch).
                self.readmit(e, slot);
            }
            self.check_user_code(f);
        }
        self.mail.diverted = mask;
    }

    /// A message that was held back while a key group of its function was on its way here
    /// runs now, in the order it arrived.
    pub(super) fn readmit(&mut self, e: Entry, slot: u32) {
        let f = e.header.function as usize;
        if self.slots.actors[f].is_some() {
            self.actor_arrival(e, slot);
            self.check_user_code(f);
            return;
        }
        self.sched.enqueue(&self.plan.apps, self.sched.now, e.header, slot, e.off, e.len);
    }

    /// Run up to `budget` messages in the policy's order; returns how many ran.
    #[inline(never)]
    pub(super) fn run_budget(&mut self, budget: usize, now: u64) -> usize {
        let mut ran = 0;
        let mut check_at = TIME_CHECK_EVERY;
        let runs = self.sched.policy.picks_min_head();
        while ran < budget {
            let Some(e) = self.sched.pick(&self.plan.apps, now) else { break };
            let function = e.header.function as usize;
            let signal = &self.signals[self.id as usize];
            signal.begin_run(e.header.function, now);
            ran += match runs {
                true => self.run_queued(e, budget - ran, true),
                false => {
                    self.apply(e);
                    1
                }
            };
            self.signals[self.id as usize].end_run();
            self.check_user_code(function);
            // Expensive messages end the turn early: mail (a lease, a barrier's block), sources
            // and the policy's view of new arrivals wait at most about a turn's time, not 64
            // messages' worth. Cheap ones never reach it (one clock read per 8 messages).
            if ran >= check_at {
                check_at = ran + TIME_CHECK_EVERY;
                if now_ns().saturating_sub(now) > TURN_TIME_NS {
                    break;
                }
            }
        }
        ran
    }

    #[inline(always)]
    fn apply(&mut self, e: QEntry) {
        if self.torn_down(e.header.function as usize) {
            if e.slot != TOKEN {
                self.release(e.slot);
            }
            return;
        }
        if e.slot == TOKEN {
            return self.run_token(&e);
        }
        if self.slots.actors[e.header.function as usize].is_some() {
            // An actor's message that bypassed its idle machine: it passed the snapshot
            // barrier's check when it arrived.
            return self.run_direct(&e);
        }
        if self.held_by_barrier(&e) {
            return; // behind a snapshot barrier on its channel: it runs once the others align
        }
        match e.header.kind {
            MessageKind::Data => self.apply_data(&e),
            MessageKind::Watermark => self.apply_watermark(&e.header),
            MessageKind::End => self.apply_end(&e.header),
            MessageKind::Snapshot => {
                if self.on_barrier(&e.header) {
                    self.instance_aligned(&e.header);
                }
            }
            MessageKind::FenceAck | MessageKind::Drain => self.on_queued_control(&e.header),
            kind => unreachable!("protocol message {kind:?} in the run queue"),
        }
        self.release(e.slot);
    }

    /// One entry of held batch `slot` is done: the last one sends the batch back.
    #[inline]
    pub(super) fn release(&mut self, slot: u32) {
        self.mail.release(slot, self.id, &mut self.out);
    }

    /// Run queued message `e`, just taken from the queue, and, if it is a data record, the
    /// records of its function queued behind it in the same held batch in one stretch with it,
    /// at most `room` and `QUEUED_RUN`. A catch-up (`picked` false) takes them all: it runs the
    /// function's queue in order. A pick (`picked` true, under a policy that `picks_min_head`)
    /// takes each while it comes before the next other function's head by priority and arrival
    /// (which does not change while the stretch runs), and none when a function downstream
    /// holds queued records (what the stretch chains would catch those up, which picking each
    /// would run before the function's next record): the records picking each would run. What
    /// they chain runs after the stretch, as after a stretch run on arrival. A message `apply`
    /// treats otherwise (control, an actor's, a torn-down function's, one while a snapshot
    /// aligns) runs alone, as `apply` runs it. Returns the messages run.
    fn run_queued(&mut self, e: QEntry, room: usize, picked: bool) -> usize {
        let f = e.header.function as usize;
        let plain = e.header.kind == MessageKind::Data && e.slot != TOKEN;
        if !plain || self.torn_down(f) || self.slots.actors[f].is_some() || self.snap.aligning > 0 {
            self.apply(e);
            return 1;
        }
        let app = self.sched.cost.fn_app[f] as usize;
        if self.app_failed(app) {
            self.release(e.slot);
            return 1;
        }
        let (room, before) = match picked {
            true if self.queued_downstream(f) => (1, (0, 0)),
            true => {
                let (q, id) = (&self.sched.runq, e.header.function);
                let next = q.min_head_by(|g| g != id).and_then(|g| q.head(g)).map(|h| (h.priority, h.arrival));
                (room, next.unwrap_or((u64::MAX, u64::MAX)))
            }
            false => (room, (u64::MAX, u64::MAX)),
        };
        let mut run = std::mem::take(&mut self.mail.queued_run);
        run.clear();
        run.push(Entry { header: e.header, off: e.off, len: e.len });
        let mut sampled = u64::from(e.arrival.is_multiple_of(COST_SAMPLE));
        let (q, id) = (&mut self.sched.runq, e.header.function);
        while run.len() < room.min(QUEUED_RUN) {
            let Some(h) = q.head(id) else { break };
            if h.slot != e.slot || h.header.kind != MessageKind::Data || (h.priority, h.arrival) >= before {
                break;
            }
            let h = q.pop(id).expect("a head");
            sampled += u64::from(h.arrival.is_multiple_of(COST_SAMPLE));
            run.push(Entry { header: h.header, off: h.off, len: h.len });
        }
        let n = run.len();
        self.run_records(f, &run, e.slot, sampled);
        self.finish_chain();
        self.mail.queued_run = run;
        self.mail.release_n(e.slot, n as u32, self.id, &mut self.out);
        n
    }

    /// Whether a function downstream of `f` (along its edges, transitively) holds queued
    /// records: what `f`'s records chain could then catch them up (`catch_up`).
    fn queued_downstream(&mut self, f: usize) -> bool {
        let mut stack = std::mem::take(&mut self.mail.downstream);
        stack.clear();
        stack.extend(self.plan.functions[f].outputs.iter().map(|e| e.target));
        let mut found = false;
        while let Some(g) = stack.pop() {
            if self.sched.runq.len_of(g) > 0 {
                found = true;
                break;
            }
            stack.extend(self.plan.functions[g as usize].outputs.iter().map(|e| e.target));
        }
        self.mail.downstream = stack;
        found
    }

    /// Apply a data message to its function, then what it chained. Hot path.
    fn apply_data(&mut self, e: &QEntry) {
        let f = e.header.function as usize;
        if self.app_failed(self.sched.cost.fn_app[f] as usize) {
            return;
        }
        let sampled = u64::from(e.arrival.is_multiple_of(COST_SAMPLE));
        self.run_record(f, &e.header, (e.slot, e.off, e.len), sampled);
        self.finish_chain();
    }

    /// Run what the last message chained, unless a chain is running already (its loop runs
    /// them next).
    #[inline]
    pub(super) fn finish_chain(&mut self) {
        if !self.chain.next.is_empty() && !self.chain.running {
            self.run_chain();
        }
    }

    /// Whether records may chain now (see `shard::chain`).
    #[inline]
    pub(super) fn chain_on(&self) -> bool {
        self.sched.policy.chains() && self.snap.aligning == 0
    }

    /// Run data record `h` of operator `f`, whose payload is in held batch `slot`; time it if
    /// `sampled` (1: its arrival picked it).
    #[inline(always)]
    fn run_record(&mut self, f: usize, h: &Header, (slot, off, len): (u32, u32, u32), sampled: u64) {
        self.run_records(f, &[Entry { header: *h, off, len }], slot, sampled)
    }

    /// Run queued data records `run` of operator `f`, whose payloads are in held batch `slot`,
    /// as one stretch; time it if `sampled` of them (their arrivals picked them) is not 0, each
    /// of those counting at the stretch's mean.
    #[inline(always)]
    fn run_records(&mut self, f: usize, run: &[Entry], slot: u32, sampled: u64) {
        let app = self.sched.cost.fn_app[f] as usize;
        self.tele.stats[app].service_ns += self.sched.cost.ns[f] * run.len() as u64;
        self.touch(app);
        for r in run {
            self.debug_assert_group_here(f, r.header.key_hash);
        }
        let chain = self.chain_on();
        let running = self.chain.running;
        let (mut parts, mail) = self.parts();
        // Outside a chain's run nothing chained waits; within one (a queued record run to
        // catch up), what does is not known here.
        parts.rest = (!running).then_some(&[][..]);
        parts.run_stretch(f, run, mail.held.batch(slot), chain, Timing::Once(sampled));
        self.time_outputs(app);
    }

    /// Time the outputs the sink records just run made (`outputs_due`), with one clock read: a
    /// sink's outputs are out when its run (one record, or a stretch of chained ones) ends,
    /// which errs towards more latency by at most that run's microseconds.
    #[inline]
    pub(super) fn time_outputs(&mut self, app: usize) {
        if !self.tele.outputs_due.is_empty() {
            self.record_outputs(app);
        }
    }

    /// `time_outputs`' work, out of line: most records run are not a sink's. Outputs of one
    /// ingress time in a row (the events of one poll of an unscheduled source are stamped with
    /// the poll's time) have one latency: recorded with one histogram update.
    #[inline(never)]
    fn record_outputs(&mut self, app: usize) {
        let (end, slo) = (now_ns(), self.plan.apps[app].slo_ns);
        let stats = &mut self.tele.stats[app];
        let mut due = self.tele.outputs_due.drain(..);
        let Some(mut ingress) = due.next() else { return };
        let mut n = 1;
        for next in due {
            if next == ingress {
                n += 1;
            } else {
                stats.record_outputs(end.saturating_sub(ingress), n, slo);
                (ingress, n) = (next, 1);
            }
        }
        stats.record_outputs(end.saturating_sub(ingress), n, slo);
    }

    /// The parts running a record borrows, and the mail its payload may be in.
    #[inline(always)]
    fn parts(&mut self) -> (RecordParts<'_, P>, &super::mail::Mail) {
        let parts = RecordParts {
            plan: &self.plan,
            tele: &mut self.tele,
            rb: &mut self.rb,
            slots: &mut self.slots,
            sched: &mut self.sched,
            out: &mut self.out,
            placement: &self.placement,
            chain_next: &mut self.chain.next,
            chainable: &self.chain.chainable,
            fusion: &mut self.chain.fusion,
            rest: None,
        };
        (parts, &self.mail)
    }

    /// Run the records chained by what just ran, and what they chain, in order. Consecutive
    /// records of one function (a source poll's, what a message fired) run as one stretch: the
    /// checks and figures that hold for all of them are made once.
    pub(super) fn run_chain(&mut self) {
        let me = self.id as usize;
        self.chain.running = true;
        while !self.chain.next.is_empty() {
            std::mem::swap(&mut self.chain.cur, &mut self.chain.next);
            // Out of `self` while it runs: what runs chains into `next`, never into `cur`.
            let batch = std::mem::take(&mut self.chain.cur.batch);
            let mut rest = &batch.entries[..];
            while let Some(first) = rest.first() {
                let function = first.header.function;
                let f = function as usize;
                let app = self.sched.cost.fn_app[f] as usize;
                if first.header.kind == MessageKind::Watermark {
                    // A chained watermark runs alone, in its place (`broadcast_watermark`).
                    rest = &rest[1..];
                    if !self.app_failed(app) && !self.torn_down(f) {
                        if self.sched.runq.len_of(function) > 0 {
                            self.catch_up(function);
                        }
                        self.apply_watermark(&first.header);
                    }
                    continue;
                }
                let n = rest
                    .iter()
                    .position(|e| e.header.function != function || e.header.kind != MessageKind::Data)
                    .unwrap_or(rest.len());
                let (stretch, after) = rest.split_at(n);
                rest = after;
                if self.app_failed(app) || self.torn_down(f) {
                    continue;
                }
                if self.sched.runq.len_of(function) > 0 {
                    self.catch_up(function);
                }
                if self.slots.actors[f].is_some() {
                    self.run_chained_window(f, stretch, &batch);
                    continue;
                }
                self.tele.stats[app].chained += n as u64;
                self.tele.stats[app].service_ns += self.sched.cost.ns[f] * n as u64;
                self.touch(app);
                self.signals[me].begin_run(function, self.sched.now);
                // Running records of `f` queues nothing for `f` (a record never goes back to its
                // own function) and applies no barrier: what `catch_up` and `chain_on` found
                // holds for the whole stretch.
                let chain = self.chain_on();
                #[cfg(debug_assertions)]
                for e in stretch {
                    self.debug_assert_group_here(f, e.header.key_hash);
                }
                let mut parts = self.parts().0;
                parts.rest = Some(rest);
                let failed = parts.run_stretch(f, stretch, &batch, chain, Timing::Counted);
                self.time_outputs(app);
                if failed {
                    self.check_user_code(f);
                }
            }
            let mut batch = batch;
            batch.clear();
            self.chain.cur.batch = batch;
        }
        self.signals[me].end_run();
        self.chain.running = false;
    }

    /// Run what is queued for `f` (records and watermarks: see `ChainTo::may_run`) before a
    /// record chained to it.
    fn catch_up(&mut self, f: FunctionId) {
        debug_assert!(!self.sched.runq.holds_control(f), "a record chained past an end or barrier");
        while let Some(e) = self.sched.runq.pop(f) {
            self.run_queued(e, QUEUED_RUN, false);
            self.check_user_code(f as usize);
        }
    }

    /// Which functions records may chain to: operator instances here that are not dual-mode
    /// actors, and, for a keyed function, take no key group in now (its messages are held back
    /// until the group is here; see `migrate`). A keyed function takes records chained from
    /// this shard for the keys homed here. Recomputed when instances come and go, and when a
    /// function starts and stops holding back.
    pub(super) fn refresh_chainable(&mut self) {
        let slots = &self.slots;
        let plain_windows = !self.sched.policy.may_lease();
        let operator = |f: usize| slots.ops[f].is_some() && slots.actors[f].is_none() && !self.mig.holds_back(f);
        let window = |f: usize| {
            plain_windows && slots.actors[f].as_deref().is_some_and(|a| a.is_window()) && !self.mig.holds_back(f)
        };
        self.chain.chainable = (0..slots.ops.len()).map(|f| operator(f) || window(f)).collect();
        self.chain.wm_chainable = (0..slots.ops.len()).map(operator).collect();
        let rb = &self.rb;
        self.chain.fusion.refresh(&self.plan, &slots.ops, &self.chain.chainable, |f| rb.counts(f));
        // Edges into a sink that reads headers alone carry no payload: its instances here must
        // be such sinks (a factory replaced without `Plan::replace_factory` would get records
        // it cannot read).
        for (f, op) in slots.ops.iter().enumerate() {
            let Some(op) = op else { continue };
            let fp = &self.plan.functions[f];
            let ignores = matches!(op, OperatorInstance::Sink(s) if s.ignores_records());
            assert!(
                !fp.ignores_records || ignores,
                "function `{}` is planned as a sink that reads headers alone (latency, null), \
                 but its instance reads records: replace a sink's factory with Plan::replace_factory",
                fp.name
            );
        }
    }

    /// Debug builds: a data message of keyed function `f` runs only where its key group is.
    #[inline]
    pub(super) fn debug_assert_group_here(&self, f: usize, key_hash: u64) {
        debug_assert!(
            !self.mig.tracks(f) || self.mig.holds(f, self.placement.group_of(key_hash)),
            "shard {}: a message of group {} of `{}`, which is not here",
            self.id,
            self.placement.group_of(key_hash),
            self.plan.functions[f].name
        );
    }

    fn apply_watermark(&mut self, h: &Header) {
        let f = h.function as usize;
        let inst = self.slots.insts[f].as_mut().expect("instance");
        if let Some(wm) = inst.on_watermark(h.port, h.from_shard, h.event_time) {
            self.advance(h, wm);
        }
    }

    /// Fire the instance's new watermark. While a group of it is moving out, the watermark
    /// fires for every key but the group's: records of the group that came before this
    /// watermark may have gone to the new owner, which applies them, then this watermark, in
    /// their order (see `migrate`).
    fn advance(&mut self, h: &Header, wm: u64) {
        let f = h.function as usize;
        match self.mig.outgoing_group(f) {
            Some(g) => {
                let stash = self.export_group(f, g);
                self.fire_watermark(h, wm);
                let op = self.slots.ops[f].as_mut().expect("instance");
                if let Err(e) = op.import_keys(&stash) {
                    panic!("shard {}: a moving group did not go back after a watermark: {e}", self.id);
                }
            }
            None => self.fire_watermark(h, wm),
        }
    }

    pub(super) fn fire_watermark(&mut self, h: &Header, wm: u64) {
        let f = h.function as usize;
        let fp = &self.plan.functions[f];
        let chain = self.chain_on().then_some((&mut self.chain.next, &self.chain.chainable[..]));
        let op = self.slots.ops[f].as_mut().expect("instance");
        let mut router = Router::chaining(&mut self.out, &mut self.sched, &self.placement, &fp.outputs, *h, chain);
        op.on_watermark(wm, &mut router);
        // What the watermark fired is chained ahead of the watermark itself, chained or staged
        // here.
        let chain = self.chain_on().then_some((&mut self.chain.next, &self.chain.wm_chainable[..], &self.sched.runq));
        broadcast_watermark(&mut self.out, &self.plan, &self.placement, &fp.outputs, *h, wm, chain);
        self.finish_chain();
    }

    pub(super) fn apply_end(&mut self, h: &Header) {
        let f = h.function as usize;
        if self.faults.any_gone && self.end_already_taken(h) {
            return;
        }
        let inst = self.slots.insts[f].as_mut().expect("instance");
        let (last, advanced) = inst.on_end(h.port, h.from_shard);
        if let Some(wm) = advanced {
            self.advance(h, wm);
        }
        if last {
            if self.mig.moving_out(f) || self.mig.holds_back(f) {
                // A group of it is leaving, or arriving (the end was queued before the group
                // was announced): the end waits for the move to finish (see `migrate`).
                self.mig.defer_end(f, *h);
            } else {
                self.end_instance(h.function, h);
            }
        } else if self.aligned_by_end(f) {
            self.instance_aligned(h);
        }
    }

    pub(super) fn end_instance(&mut self, f: FunctionId, h: &Header) {
        let fp = &self.plan.functions[f as usize];
        let chain = self.chain_on().then_some((&mut self.chain.next, &self.chain.chainable[..]));
        let op = self.slots.ops[f as usize].as_mut().expect("instance");
        let mut router = Router::chaining(&mut self.out, &mut self.sched, &self.placement, &fp.outputs, *h, chain);
        op.on_end(&mut router);
        broadcast(&mut self.out, &self.plan, &self.placement, &fp.outputs, *h, MessageKind::End, u64::MAX);
        let app = fp.app as usize;
        // What the end fired is chained ahead of the end itself, staged here.
        self.finish_chain();
        self.slots.live -= 1;
        let counted = std::mem::take(&mut self.hosting.counted[f as usize]);
        self.host(app, -(counted as i32));
        self.snapshot_instance_ended(f as usize);
    }
}

/// What running a data record borrows of the shard, each part on its own: the payload may be
/// in another (a held batch, or the chained records taken out of the shard while they run).
struct RecordParts<'a, P: Policy> {
    plan: &'a crate::plan::Plan,
    tele: &'a mut super::telemetry::Telemetry,
    rb: &'a mut super::rebalance::Rebalance,
    slots: &'a mut super::slots::Slots,
    sched: &'a mut super::sched::Sched<P>,
    out: &'a mut super::outputs::Outputs,
    placement: &'a crate::placement::PlacementTable,
    chain_next: &'a mut super::chain::ChainBuf,
    chainable: &'a [bool],
    fusion: &'a mut super::fuse::Fusion,
    /// The chained records that run after these, if known (`shard::fuse`): None, nothing is
    /// fused.
    rest: Option<&'a [Entry]>,
}

impl<P: Policy> RecordParts<'_, P> {
    /// Run `stretch`, data records of operator `f` whose payloads are in `batch`, in order (the
    /// records `run_chain` chained, a batch that runs as it arrives, or one queued record),
    /// chaining what they emit where it may run at once if `chain` (see `shard::stretch`). A
    /// sink's outputs wait in `outputs_due` for the caller to time them
    /// (`Shard::time_outputs`). True if user code failed on one: the rest of the stretch is
    /// dropped with its app. Hot path.
    #[inline(always)]
    fn run_stretch(&mut self, f: usize, stretch: &[Entry], batch: &Batch, chain: bool, timing: Timing) -> bool {
        let Some(first) = stretch.first() else { return false };
        // A stretch of records that chained or arrived runs with nothing of `f` queued (what
        // was queued ran first); a queued record may have others of `f` behind it.
        debug_assert!(matches!(timing, Timing::Once(_)) || self.sched.runq.len_of(f as FunctionId) == 0);
        let fp = &self.plan.functions[f];
        if fp.is_sink {
            self.slots.sink_ran = true;
            self.tele.outputs_due.extend(stretch.iter().map(|e| e.header.ingress_ns));
        }
        // The records the shard times here: every `COST_SAMPLE`-th message run, or a queued
        // record its arrival picked. A stretch holding any is timed as a whole and each of them
        // counts at the stretch's mean: two clock reads per timed stretch, not per timed record.
        let n = stretch.len() as u64;
        let timed = match timing {
            Timing::Counted => {
                let before = self.sched.msgs_run;
                self.sched.msgs_run += n;
                (before + n) / COST_SAMPLE - before / COST_SAMPLE
            }
            Timing::Once(sampled) => sampled,
        };
        let t0 = if timed > 0 { now_ns() } else { 0 };
        let op = self.slots.ops[f].as_mut().expect("message for a function instance on this shard");
        let functions = &self.plan.functions[..];
        let outputs_due = &mut self.tele.outputs_due;
        let fusing = self.rest.filter(|_| chain).map(|rest| Fusing {
            fusion: &mut *self.fusion,
            rest,
            functions,
            outputs_due,
            ops: None,
            signal: None,
        });
        let chain = chain.then_some((&mut *self.chain_next, self.chainable));
        let parts = self.sched.split();
        let cost = parts.cost;
        let router = Router::of_parts(self.out, parts, self.placement, &fp.outputs, first.header, chain, fusing);
        let mut run = StretchRun::new(router, &self.plan.apps, cost, self.rb, f, t0);
        let failed = op.on_stretch(stretch, batch, &mut run);
        if timed > 0 {
            let mean = now_ns().saturating_sub(t0) / n;
            self.sched.cost.fold(f, mean, timed);
        }
        failed
    }
}
