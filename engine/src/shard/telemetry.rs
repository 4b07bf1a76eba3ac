//! What a shard measures and reports: per app its events, latencies and service time, per
//! function its lessees and time Blocked or Critical, the shard's busy and parked time, and what
//! it hosts (activations per app, shard-seconds).

use dirigo_net::clock::now_ns;

use crate::metrics::{AppFailure, AppStats};
use crate::plan::Plan;

pub(super) struct Telemetry {
    pub stats: Vec<AppStats>,
    /// Busy and parked time since the last report (ns).
    pub busy_ns: u64,
    pub parked_ns: u64,
    /// Busy time since the start (ns), for the rebalancing period's busy share.
    pub busy_total_ns: u64,
    /// Parks that ended on their timeout with work already pending (a lost wake-up).
    pub missed_wakeups: u64,
    /// Parks that ended on their own timeout with mail whose sender chose not to ring.
    pub lazy_wakeups: u64,
    /// A park that ended on its timeout with mail and no ring, judged once every sender has
    /// finished what it was sending then (see `Shard::park`).
    pub unjudged_wakeup: Option<Unjudged>,
    /// Per function: lessee slots open here, and the most since the last report.
    pub lessees_here: Vec<u64>,
    pub lessees_max: Vec<u64>,
    /// Per function: time its lessor spent Blocked and Critical since the last report (ns).
    pub fn_blocked_ns: Vec<u64>,
    pub fn_critical_ns: Vec<u64>,
    /// Failures seen here since the last report.
    pub failures: Vec<AppFailure>,
    /// Late drops of each function already reported.
    pub late_seen: Vec<u64>,
    /// Scratch: messages queued per app on this shard.
    pub app_queued: Vec<u64>,
    /// Per app: the time its queued messages here take to run (ns), as published.
    pub app_queued_ns: Vec<u64>,
    /// Scratch: ingress times of the outputs the sink records just run made, recorded with the
    /// time their run ended (`Shard::time_outputs`).
    pub outputs_due: Vec<u64>,
}

/// What a shard knew of its senders when a park ended on its timeout with mail and no ring.
pub(super) struct Unjudged {
    /// Skips and rings counted for it when the park began.
    pub skipped: u64,
    pub rung: u64,
    /// Each shard's completed flushes when the park ended.
    pub flushes: Vec<u64>,
}

impl Telemetry {
    pub fn new(plan: &Plan) -> Self {
        let (na, nf) = (plan.apps.len(), plan.functions.len());
        Telemetry {
            stats: (0..na).map(|_| AppStats::new()).collect(),
            busy_ns: 0,
            parked_ns: 0,
            busy_total_ns: 0,
            missed_wakeups: 0,
            lazy_wakeups: 0,
            unjudged_wakeup: None,
            lessees_here: vec![0; nf],
            lessees_max: vec![0; nf],
            fn_blocked_ns: vec![0; nf],
            fn_critical_ns: vec![0; nf],
            failures: Vec::new(),
            late_seen: vec![0; nf],
            app_queued: vec![0; na],
            app_queued_ns: vec![0; na],
            outputs_due: Vec::new(),
        }
    }

    /// Make room for the apps and functions of `plan` (deployed at run time).
    pub fn grow(&mut self, plan: &Plan) {
        let (na, nf) = (plan.apps.len(), plan.functions.len());
        self.stats.resize_with(na, AppStats::new);
        self.app_queued.resize(na, 0);
        self.app_queued_ns.resize(na, 0);
        for v in [
            &mut self.lessees_here,
            &mut self.lessees_max,
            &mut self.late_seen,
            &mut self.fn_blocked_ns,
            &mut self.fn_critical_ns,
        ] {
            v.resize(nf, 0);
        }
    }

    /// `busy_ns` of work just ran.
    #[inline]
    pub fn busy(&mut self, busy_ns: u64) {
        self.busy_ns += busy_ns;
        self.busy_total_ns += busy_ns;
    }
}

/// What the shard hosts: per app, its activations here (key groups held, instances of its start
/// shards, source instances and lessee slots), and since when the count last changed.
pub(super) struct Hosting {
    pub apps: Vec<u32>,
    pub since: Vec<u64>,
    /// Per function: what its instance here counts in `apps` (its groups held, or 1).
    pub counted: Vec<u32>,
    /// An app started or stopped being hosted: the idle behaviour (spin, gather) is recomputed.
    pub changed: bool,
    /// `apps` changed since the last report (the controller tracks where apps run).
    pub unreported: bool,
}

impl Hosting {
    pub fn new(apps: Vec<u32>, counted: Vec<u32>) -> Self {
        let since = vec![now_ns(); apps.len()];
        Hosting { apps, since, counted, changed: false, unreported: false }
    }

    /// Make room for the apps and functions of `plan` (deployed at run time).
    pub fn grow(&mut self, plan: &Plan) {
        self.apps.resize(plan.apps.len(), 0);
        self.since.resize(plan.apps.len(), now_ns());
        self.counted.resize(plan.functions.len(), 0);
    }

    /// Whether this shard hosts nothing at all.
    pub fn nothing(&self) -> bool {
        self.apps.iter().all(|&h| h == 0)
    }

    /// `delta` activations of `app` opened (1) or closed (-1) here: the time it hosted at least
    /// one goes to `hosted_ns` (shard-seconds).
    pub fn change(&mut self, app: usize, delta: i32, hosted_ns: &mut u64) {
        let now = now_ns();
        if self.apps[app] > 0 {
            *hosted_ns += now.saturating_sub(self.since[app]);
        }
        self.since[app] = now;
        let before = self.apps[app];
        self.unreported |= delta != 0;
        self.apps[app] = before.checked_add_signed(delta).expect("hosting count");
        if (before == 0) != (self.apps[app] == 0) {
            self.changed = true;
        }
    }
}
