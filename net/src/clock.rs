//! The engine's clock: nanoseconds since a process-wide epoch, comparable across shards. Read
//! through `quanta`, which uses the invariant TSC where the CPU has one (a few ns per read instead
//! of a vDSO `clock_gettime`) and falls back to the monotonic clock otherwise.

use std::sync::OnceLock;

struct Epoch {
    clock: quanta::Clock,
    start: u64,
    /// Wall-clock time of the epoch, ns since the Unix epoch.
    unix_ns: u64,
}

static EPOCH: OnceLock<Epoch> = OnceLock::new();

#[inline]
fn epoch() -> &'static Epoch {
    EPOCH.get_or_init(|| {
        let clock = quanta::Clock::new();
        let start = clock.raw();
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Epoch { clock, start, unix_ns: unix.as_nanos() as u64 }
    })
}

/// Nanoseconds since the engine's epoch (the first call in the process).
#[inline]
pub fn now_ns() -> u64 {
    let e = epoch();
    e.clock.delta_as_nanos(e.start, e.clock.raw())
}

/// The epoch as wall-clock time (ns since the Unix epoch). Nodes of a cluster exchange it so
/// that times crossing a link are shifted into the receiver's epoch (as exact as the nodes'
/// wall clocks agree: exactly on one machine, NTP's accuracy across machines).
pub fn epoch_unix_ns() -> u64 {
    epoch().unix_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_monotonic_and_tracks_wall_time() {
        let (t0, w0) = (now_ns(), std::time::Instant::now());
        let mut last = t0;
        while w0.elapsed() < std::time::Duration::from_millis(20) {
            let t = now_ns();
            assert!(t >= last, "clock went backwards");
            last = t;
        }
        let (dt, dw) = (now_ns() - t0, w0.elapsed().as_nanos() as u64);
        assert!(dt.abs_diff(dw) < dw / 10 + 1_000_000, "engine clock {dt} ns vs wall {dw} ns");
    }
}
