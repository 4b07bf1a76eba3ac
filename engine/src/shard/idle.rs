//! Whether an idle shard spins or parks (park by SLO, adaptive spinning): it spins after work of
//! an app whose SLO cannot afford an OS wake-up, and only while such work usually comes back
//! within `spin`.

/// Spinning after tight work continues while at least this share (per mille) of recent idle
/// periods ended within `spin`.
const SPIN_PAYS: u64 = 500;

pub(super) struct Idle {
    /// When this shard last ran work of an app whose SLO makes it spin (`spin_slo`): it spins
    /// only within `spin` of that, and parks at once after other apps' work.
    pub last_tight_ns: u64,
    /// Per mille of recent idle periods after tight work in which more tight work came within
    /// `spin`: spinning pays only when it usually does; otherwise the shard parks at once, and a
    /// tight app that sends rarely pays an OS wake-up instead of a core (adaptive spinning). An
    /// exponential average, weight 1/8.
    spin_pays: u64,
    /// The start of an idle period that followed tight work, until the next tight work or
    /// `spin` has passed (one sample of `spin_pays`).
    tight_idle: Option<u64>,
    /// This shard told the others it is done (see `Shard::may_exit`).
    pub closing: bool,
}

impl Idle {
    pub fn new() -> Self {
        Idle { last_tight_ns: 0, spin_pays: 1000, tight_idle: None, closing: false }
    }

    /// Work of an app the shard spins for ran at `now`.
    #[inline]
    pub fn tight_work(&mut self, now: u64) {
        self.last_tight_ns = now;
    }

    /// After a turn, at `now`: did the tight work that followed an idle start come within
    /// `spin_ns` of it? (One sample of `spin_pays` once it did or `spin_ns` passed.)
    #[inline]
    pub fn after_turn(&mut self, now: u64, spin_ns: u64) {
        if let Some(start) = self.tight_idle {
            if self.last_tight_ns > start || now.saturating_sub(start) > spin_ns {
                let caught = self.last_tight_ns > start && self.last_tight_ns - start <= spin_ns;
                self.spin_pays = (self.spin_pays * 7 + if caught { 1000 } else { 0 }) / 8;
                self.tight_idle = None;
            }
        }
    }

    /// An idle period began at `now`: if it follows tight work, it is a sample.
    #[inline]
    pub fn idle_began(&mut self, now: u64, spin_ns: u64) {
        if spin_ns > 0 && self.tight_idle.is_none() && now.saturating_sub(self.last_tight_ns) < spin_ns {
            self.tight_idle = Some(now);
        }
    }

    /// Whether to spin now, idle since `since`: within `spin_ns` of both the idle start and the
    /// last tight work, and only while spinning pays.
    #[inline]
    pub fn spin_for_tight(&self, now: u64, since: u64, spin_ns: u64) -> bool {
        now - since < spin_ns && now.saturating_sub(self.last_tight_ns) < spin_ns && self.spin_pays >= SPIN_PAYS
    }
}
