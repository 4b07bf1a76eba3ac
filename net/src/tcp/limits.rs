//! What a tcp source lets its clients hold, and what it refuses: [`Limits`] (from the source's
//! config), [`Refusal`] (why a client was turned away or cut off), the source's
//! [`IngressCounts`], and a rate-limited warning per refusal.
//!
//! A client costs the source a connection slot, the time it may stay silent, and memory: its
//! receive buffer holds what it sent and not yet produced (a partial line or frame), bounded by
//! `max_line` or `max_frame`, plus a bounded slack (see `decoder.rs`). An idle connection
//! buffers nothing.

use std::time::Duration;

/// A source's limits (`max_connections`, `idle_timeout`, `max_line`, `max_frame` of a tcp
/// source; their defaults are in `configs/default.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most; one more is answered with an error and closed.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is answered with an error and closed.
    pub idle_timeout: Duration,
    /// Longest NDJSON line, in bytes (without its newline).
    pub max_line: usize,
    /// Largest binary frame payload a client may declare (a frame over it is refused unread).
    pub max_frame: u32,
}

impl Limits {
    /// `idle_timeout` in ns (saturating).
    pub fn idle_ns(&self) -> u64 {
        u64::try_from(self.idle_timeout.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Why a client was refused or cut off by a limit (each is counted and logged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A connection over `max_connections`.
    OverCapacity,
    /// Silent for `idle_timeout`.
    Idle,
    /// A line over `max_line` or a frame over `max_frame`.
    Oversized,
}

/// A tcp source's figures over its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngressCounts {
    /// Connections accepted (served until they closed or failed).
    pub connections: u64,
    /// Records produced into the engine.
    pub records: u64,
    /// Connections refused because `max_connections` were open.
    pub connections_refused: u64,
    /// Connections closed after `idle_timeout` without input.
    pub idle_closed: u64,
    /// Connections closed for a line over `max_line` or a frame over `max_frame`.
    pub oversized: u64,
}

impl IngressCounts {
    /// Count one refusal.
    pub fn refused(&mut self, r: Refusal) {
        match r {
            Refusal::OverCapacity => self.connections_refused += 1,
            Refusal::Idle => self.idle_closed += 1,
            Refusal::Oversized => self.oversized += 1,
        }
    }

    /// Refusals of every kind.
    pub fn refusals(&self) -> u64 {
        self.connections_refused + self.idle_closed + self.oversized
    }
}

/// Refusals logged per source per window; the rest of a flood is counted, and summed up in one
/// line when the next window opens.
const LOG_PER_WINDOW: u32 = 10;
const LOG_WINDOW_NS: u64 = 1_000_000_000;

/// Rate limit of a source's refusal warnings: each refusal is logged once, at warn, up to
/// [`LOG_PER_WINDOW`] a second; a flood beyond that is summed up in one line.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    window_start: u64,
    logged: u32,
    suppressed: u64,
}

impl RefusalLog {
    /// Whether to log a refusal at `now` (engine clock); opens a new window when it is due.
    pub(crate) fn admit(&mut self, source: &str, now: u64) -> bool {
        self.roll(source, now);
        if self.logged < LOG_PER_WINDOW {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Close a window that is over, summing up what it did not log.
    pub(crate) fn roll(&mut self, source: &str, now: u64) {
        if now.saturating_sub(self.window_start) < LOG_WINDOW_NS {
            return;
        }
        if self.suppressed > 0 {
            tracing::warn!(
                source,
                suppressed = self.suppressed,
                "more refusals not logged (see the source's counters)"
            );
        }
        (self.window_start, self.logged, self.suppressed) = (now, 0, 0);
    }

    /// Refusals not logged in the current window.
    pub(crate) fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

/// A byte count as a config would write it: `4MiB`, `64KiB`, else bytes (`1000B`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{name}", bytes / unit);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_written() {
        assert_eq!(human_size(4 << 20), "4MiB");
        assert_eq!(human_size(1536), "1536B");
        assert_eq!(human_size(64 << 10), "64KiB");
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(3 << 30), "3GiB");
    }

    #[test]
    fn a_flood_of_refusals_is_logged_ten_a_second() {
        let mut log = RefusalLog::default();
        let t0 = LOG_WINDOW_NS; // a window opens at the first refusal
        let logged = (0..100).filter(|i| log.admit("a/s", t0 + i)).count();
        assert_eq!((logged, log.suppressed()), (10, 90));
        assert!(log.admit("a/s", t0 + LOG_WINDOW_NS), "the next window logs again");
        assert_eq!(log.suppressed(), 0);
    }
}
