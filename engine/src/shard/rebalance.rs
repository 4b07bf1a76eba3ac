//! Spread and consolidate from the data plane: every rebalancing period a shard looks at its
//! own load (its busy share, and its queueing delay against the tightest SLO it hosts) and at
//! what the others published, and moves key groups (`migrate`).
//!
//! - **Spread.** A shard that stayed hot for `HOT_PERIODS` periods (busy above `HOT`, or a
//!   queueing delay above half its tightest SLO) moves its hottest groups of apps whose SLO
//!   affords a move (looser than `TIGHT_SLO_NS`, 1 ms) out, each to the
//!   coolest shard of the function's reach that has room (busy below `ROOM`), until the load it
//!   sheds brings it down to `TARGET`; a shard's room also excludes what the other apps that
//!   started on it declare at their peak (`AppPlan::peak_permille`: their sources cannot leave
//!   it when they burst). A group carrying more than half the shard's load stays
//!   (moving it moves the hotspot; lessees split a mergeable one per message). No group is
//!   spread to a shard this one took a group from within `SETTLE`, unless that shard is the
//!   group's home (both hot in one burst, or one just consolidated, they would otherwise hand
//!   an app back and forth; a group that came to spread load may always go home).
//! - **Consolidate.** A shard that stayed cold for `COLD_PERIODS` periods (busy below `COLD`),
//!   and took nothing in to spread load for `SETTLE`, gives the groups it holds of apps that did
//!   not start on it back to their start shards, when they have room for its load (below
//!   `ROOM`). Then it hosts nothing and parks.
//!
//! The gaps between `COLD`, `ROOM`, `TARGET` and `HOT`, the periods a state must last, and a
//! cooldown after each round of moves are the hysteresis: a load between them moves nothing.

use std::collections::VecDeque;

use dirigo_actors::ids::{key_group, FunctionId, KeyGroup, ShardId};

use super::Shard;
use crate::metrics::MoveReason;
use crate::policy::{MoveVerdict, Policy};

/// An app whose SLO is at most this (ns) never has its groups spread: a move holds its messages
/// back for a round trip behind the backlog it would escape, which its SLO cannot afford.
const TIGHT_SLO_NS: u64 = 1_000_000;
/// Rebalancing period.
const PERIOD_NS: u64 = 100_000_000;
/// Busy share (per mille) above which a shard is hot, and below which it is cold.
const HOT: u64 = 850;
const COLD: u64 = 200;
/// A shard with a busy share below this has room for a group.
const ROOM: u64 = 600;
/// What a hot shard sheds load down to.
const TARGET: u64 = 700;
/// Periods a state must last before groups move.
const HOT_PERIODS: u32 = 3;
const COLD_PERIODS: u32 = 10;
/// A shard that took groups in to spread load keeps them at least this long.
const SETTLE_NS: u64 = 2_000_000_000;
/// Periods without a new round of moves after one.
const COOLDOWN_PERIODS: u64 = 3;

/// One shard's rebalancing state.
pub(super) struct Rebalance {
    next_ns: u64,
    last_ns: u64,
    last_busy_ns: u64,
    hot_periods: u32,
    cold_periods: u32,
    cooldown_until: u64,
    /// When a group last arrived here to spread load (consolidation waits `SETTLE_NS`).
    pub(super) spread_in_ns: u64,
    /// Per shard: when a group last came from it (spread or given back). A hot shard spreads
    /// nothing to a shard it took load from within `SETTLE_NS` (no ping-pong while both are
    /// busy with one burst, or just after a consolidation).
    came_from: Vec<u64>,
    /// Moves decided and not yet started (one group of a function moves at a time).
    planned: VecDeque<(usize, KeyGroup, ShardId, MoveReason)>,
    /// Per keyed function: messages per group in this period.
    heat: Vec<Vec<u32>>,
}

impl Rebalance {
    pub(super) fn new(functions: usize, now: u64) -> Self {
        Rebalance {
            next_ns: now + PERIOD_NS,
            last_ns: now,
            last_busy_ns: 0,
            hot_periods: 0,
            cold_periods: 0,
            cooldown_until: 0,
            spread_in_ns: 0,
            came_from: Vec::new(),
            planned: VecDeque::new(),
            heat: vec![Vec::new(); functions],
        }
    }

    /// Room for `functions` functions (an app was deployed).
    pub(super) fn grow(&mut self, functions: usize) {
        self.heat.resize(functions, Vec::new());
    }

    /// A group came from shard `from` at `now`.
    pub(super) fn took_load_from(&mut self, from: ShardId, now: u64) {
        let i = from as usize;
        if self.came_from.len() <= i {
            self.came_from.resize(i + 1, 0);
        }
        self.came_from[i] = now;
    }

    /// Whether a group came from shard `s` within `SETTLE_NS` of `now`.
    fn took_from(&self, s: ShardId, now: u64) -> bool {
        self.came_from.get(s as usize).is_some_and(|&t| t > 0 && now.saturating_sub(t) < SETTLE_NS)
    }

    /// Function `f` is keyed with `groups` groups: count its messages per group.
    pub(super) fn track(&mut self, f: usize, groups: u16) {
        self.heat[f] = vec![0; groups as usize];
    }

    /// Whether `f`'s messages are counted by key group (`count` does nothing for the others).
    #[inline]
    pub(super) fn counts(&self, f: usize) -> bool {
        !self.heat[f].is_empty()
    }

    /// A message of keyed function `f` with `key_hash` ran here. Hot path: a multiply-shift
    /// and an increment.
    #[inline]
    pub(super) fn count(&mut self, f: usize, key_hash: u64) {
        let heat = &mut self.heat[f];
        if !heat.is_empty() {
            let g = key_group(key_hash, heat.len() as u16) as usize;
            heat[g] = heat[g].saturating_add(1);
        }
    }
}

impl<P: Policy> Shard<P> {
    /// Every tick: start planned moves; every period, measure and plan.
    pub(super) fn rebalance(&mut self, now: u64) {
        self.start_planned();
        if !self.settings.rebalance || now < self.rb.next_ns {
            return;
        }
        let period = now.saturating_sub(self.rb.last_ns).max(1);
        // Busy time counts when its turn ends: a long turn (a window firing thousands of keys)
        // that began in the last period would put more than a period's worth in this one and
        // leave the next one short. What exceeds the period counts in the next, so that a shard
        // busy all along reads busy in every period (hot needs `HOT_PERIODS` in a row).
        let busy = (self.tele.busy_total_ns - self.rb.last_busy_ns).min(period);
        let util = busy.saturating_mul(1000) / period;
        (self.rb.last_ns, self.rb.next_ns) = (now, now + PERIOD_NS);
        self.rb.last_busy_ns += busy;
        self.signals[self.id as usize].publish_utilization(util);
        let slo = self.tightest_slo_ns();
        let queueing = slo != u64::MAX && self.signals[self.id as usize].delay_ns() > slo / 2;
        let hot = util >= HOT || queueing;
        let cold = !hot && util <= COLD;
        self.rb.hot_periods = if hot { self.rb.hot_periods + 1 } else { 0 };
        self.rb.cold_periods = if cold { self.rb.cold_periods + 1 } else { 0 };
        if now >= self.rb.cooldown_until && self.rb.planned.is_empty() {
            if self.rb.hot_periods >= HOT_PERIODS {
                self.plan_spread(util);
            } else if self.rb.cold_periods >= COLD_PERIODS && now.saturating_sub(self.rb.spread_in_ns) >= SETTLE_NS {
                self.plan_consolidation(util);
            }
            if !self.rb.planned.is_empty() {
                self.rb.cooldown_until = now + COOLDOWN_PERIODS * PERIOD_NS;
                self.rb.hot_periods = 0;
                self.rb.cold_periods = 0;
            }
        }
        self.rb.heat.iter_mut().for_each(|h| h.iter_mut().for_each(|n| *n = 0));
    }

    /// When a parked shard should wake to rebalance: at the next tick while moves are planned
    /// (one starts per function as the last one ends), at the next period while it holds groups
    /// of an app that did not start here (to give them back).
    pub(super) fn rebalance_due(&self) -> u64 {
        if !self.rb.planned.is_empty() {
            return self.sched.now.saturating_add(self.settings.tick.as_nanos() as u64);
        }
        if !self.settings.rebalance {
            return u64::MAX;
        }
        let overflow = (0..self.rb.heat.len()).any(|f| {
            let app = &self.plan.apps[self.sched.cost.fn_app[f] as usize];
            !app.shards.contains(&self.id) && self.mig.groups_held(f) > 0
        });
        if overflow {
            self.rb.next_ns
        } else {
            u64::MAX
        }
    }

    /// Start the planned moves whose function has no move under way; drop the ones that can no
    /// longer start (the group left, the target filled up).
    fn start_planned(&mut self) {
        let mut waiting = VecDeque::new();
        while let Some((f, g, to, reason)) = self.rb.planned.pop_front() {
            if !self.mig.holds(f, g) {
                continue;
            }
            if self.mig.busy(f) {
                waiting.push_back((f, g, to, reason));
                continue;
            }
            self.start_move(f, g, to, reason);
        }
        self.rb.planned = waiting;
    }

    /// Shed load down to `TARGET`: the hottest groups, coolest shards with room first.
    fn plan_spread(&mut self, util: u64) {
        // Load of each movable group here, as a share of the period (per mille).
        let mut groups: Vec<(u64, usize, KeyGroup)> = Vec::new();
        let period = PERIOD_NS as f64;
        for f in 0..self.rb.heat.len() {
            // A tight app's groups stay: a move holds its messages back for a round trip behind
            // the backlog it is escaping, which its SLO cannot afford; the loose apps beside it
            // move away instead.
            if !self.mig.movable(f) || self.plan.apps[self.sched.cost.fn_app[f] as usize].slo_ns <= TIGHT_SLO_NS {
                continue;
            }
            for (g, &n) in self.rb.heat[f].iter().enumerate() {
                if n > 0 && self.mig.holds(f, g as KeyGroup) {
                    // A message costs the shard more than its function's own time (the loop's
                    // share, routing, batching): at least the shard's busy time per message, or
                    // shedding every group would not reach the target and the whole app would
                    // move over, and back.
                    let cost = self.sched.cost.ns[f].max(self.sched.msg_ns);
                    let load = (n as f64 * cost as f64 / period * 1000.0) as u64;
                    groups.push((load, f, g as KeyGroup));
                }
            }
        }
        let total: u64 = groups.iter().map(|g| g.0).sum::<u64>().max(1);
        groups.sort_unstable_by_key(|g| std::cmp::Reverse(g.0));
        let mut shed = util.saturating_sub(TARGET).max(1);
        // What each shard will carry once the planned moves land (per mille).
        let now = self.sched.now;
        let mut room: Vec<(ShardId, u64)> =
            self.local.clone().filter(|&s| s != self.id).map(|s| (s, self.signals[s as usize].utilization())).collect();
        let took: Vec<bool> = room.iter().map(|&(s, _)| self.rb.took_from(s, now)).collect();
        for (load, f, g) in groups {
            if shed == 0 {
                break;
            }
            if load * 2 > total {
                continue; // it would take the hotspot with it
            }
            // Only where the policy would take it (FIFO keeps loose load off a tighter app's
            // shard): asked of each candidate, the move itself asks again when it starts.
            let allowed: Vec<bool> = room
                .iter()
                .map(|&(s, _)| {
                    let cx = self.move_cx(f, g, s, MoveReason::Spread);
                    self.sched.policy.on_move(&cx) != MoveVerdict::Veto
                })
                .collect();
            let reach = &self.plan.functions[f].shards;
            let app = self.sched.cost.fn_app[f] as usize;
            let home = &self.plan.apps[app].shards;
            // What the other apps started on a shard declare at their peak stays theirs.
            let reserved = |s: ShardId| -> u64 {
                let others = self.plan.apps.iter().enumerate().filter(|&(a, p)| a != app && p.shards.contains(&s));
                others.map(|(_, p)| p.peak_permille).sum()
            };
            let placement = &self.placement;
            // Not back to a shard this one took load from lately, unless it is the group's home.
            let target = (room.iter_mut().zip(&allowed).zip(&took))
                .filter(|(((s, u), &ok), &took)| {
                    ok && (!took || home.contains(s)) && reach.contains(s) && (*u).max(reserved(*s)) + load < ROOM
                })
                .map(|((r, _), _)| r)
                .min_by_key(|(s, u)| {
                    // Coolest first; among equals, a shard that already hosts the function.
                    (*u, placement.groups_on(f as FunctionId, *s) == 0, *s)
                });
            let Some(target) = target else { continue };
            target.1 += load;
            shed = shed.saturating_sub(load);
            self.rb.planned.push_back((f, g, target.0, MoveReason::Spread));
        }
    }

    /// Give the groups of apps that did not start here back to their start shards, if those
    /// have room for this shard's load.
    fn plan_consolidation(&mut self, util: u64) {
        for f in 0..self.rb.heat.len() {
            if !self.mig.movable(f) || self.mig.groups_held(f) == 0 {
                continue;
            }
            let app = &self.plan.apps[self.sched.cost.fn_app[f] as usize];
            if app.shards.contains(&self.id) {
                continue;
            }
            let reach = &self.plan.functions[f].shards;
            let home = (app.shards.iter().copied())
                .filter(|s| reach.contains(s) && self.local.contains(s))
                .map(|s| (self.signals[s as usize].utilization(), s))
                .filter(|&(u, _)| u + util < ROOM)
                .min();
            let Some((_, to)) = home else { continue };
            for g in self.mig.held_groups(f) {
                self.rb.planned.push_back((f, g, to, MoveReason::Consolidate));
            }
        }
    }
}
