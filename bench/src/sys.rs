//! The machine side of benchmarking: pinning threads to CPUs, process CPU time, load average,
//! and a calibrated unit of CPU work.

use std::sync::OnceLock;
use std::time::Instant;

use anyhow::bail;

/// Pin the calling thread to `cpu` (`sched_setaffinity`).
pub fn pin_to(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET only writes inside the set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is checked against the set's capacity first.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            bail!("cpu {cpu} is out of range");
        }
        libc::CPU_SET(cpu, &mut set);
    }
    // SAFETY: pid 0 is the calling thread; the pointer and size describe `set`.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        bail!("sched_setaffinity({cpu}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Online CPUs.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// CPU time (user + system) of the whole process so far, in seconds.
pub fn cpu_seconds() -> f64 {
    dirigo_engine::engine::cpu_seconds()
}

/// The 1-minute load average (0 if unknown).
pub fn load_avg() -> f64 {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0.0)
}

static LOAD_BEFORE: OnceLock<f64> = OnceLock::new();

/// The load average when this was first called (the scenarios call it as they start).
pub fn load_before() -> f64 {
    *LOAD_BEFORE.get_or_init(load_avg)
}

/// Iterations of [`burn`] per microsecond on this machine, measured once.
fn burn_per_us() -> u64 {
    static PER_US: OnceLock<u64> = OnceLock::new();
    *PER_US.get_or_init(|| {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            std::hint::black_box(burn(1_000_000));
            best = best.min(t.elapsed().as_secs_f64());
        }
        ((1_000_000.0 / (best * 1e6)) as u64).max(1)
    })
}

/// Roughly `micros` µs of CPU work that touches no memory (calibrated on first use).
#[inline]
pub fn work_us(micros: f64) -> u64 {
    burn((burn_per_us() as f64 * micros) as u64)
}

/// `n` rounds of a dependent multiply-xor chain: pure CPU, no memory traffic.
#[inline]
fn burn(n: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..n {
        x = (x ^ i).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(17);
    }
    std::hint::black_box(x)
}

/// Call [`work_us`] once so its calibration does not land inside a measurement.
pub fn calibrate() {
    let _ = burn_per_us();
}

/// The one-way time (ns) of a cache line between CPUs `a` and `b`: two threads pinned there
/// pass a counter back and forth 20,000 times. `None` when either CPU cannot be pinned.
///
/// On a virtual machine the host may move the virtual CPUs: a 2-vCPU VM measured 25-50 ns in
/// some minutes and 160-180 ns in others, and any run whose records cross cores (a keyed
/// exchange, for Dirigo and timely alike) costs more in the slow placement. The scenarios
/// record it before and after each run so their figures can be read against it.
pub fn line_transfer_ns(a: usize, b: usize) -> Option<u64> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    const ROUNDS: u64 = 20_000;
    // A partner descheduled on a busy machine makes each round a time slice: the pinger stops
    // after this long with the rounds it has.
    const LIMIT: std::time::Duration = std::time::Duration::from_millis(100);
    let cpus = cpus();
    if a >= cpus || b >= cpus || a == b {
        return None;
    }
    // The counter on a line of its own; `stop` ends both threads early (a CPU that cannot be
    // pinned, or the time limit).
    type Shared = (crossbeam_utils::CachePadded<AtomicU64>, AtomicBool);
    let shared: Arc<Shared> = Arc::new((crossbeam_utils::CachePadded::new(AtomicU64::new(0)), AtomicBool::new(false)));
    let wait = |shared: &Shared, want: u64| {
        while shared.0.load(Ordering::Acquire) != want {
            if shared.1.load(Ordering::Acquire) {
                return false;
            }
            std::hint::spin_loop();
        }
        true
    };
    let echo = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            if pin_to(b).is_err() {
                shared.1.store(true, Ordering::Release);
                return false;
            }
            for i in 0..ROUNDS {
                if !wait(&shared, 2 * i + 1) {
                    break;
                }
                shared.0.store(2 * i + 2, Ordering::Release);
            }
            true
        })
    };
    let ping = std::thread::spawn(move || {
        if pin_to(a).is_err() {
            shared.1.store(true, Ordering::Release);
            return None;
        }
        let start = Instant::now();
        let mut rounds = 0;
        while rounds < ROUNDS && (rounds % 256 != 255 || start.elapsed() < LIMIT) {
            shared.0.store(2 * rounds + 1, Ordering::Release);
            if !wait(&shared, 2 * rounds + 2) {
                return None;
            }
            rounds += 1;
        }
        shared.1.store(true, Ordering::Release);
        Some(start.elapsed().as_nanos() as u64 / (2 * rounds))
    });
    let ns = ping.join().ok().flatten();
    let echo_pinned = echo.join().unwrap_or(false);
    ns.filter(|_| echo_pinned)
}

/// [`line_transfer_ns`] between CPUs 0 and 1 just before and just after a run.
pub type LineNs = [Option<u64>; 2];

/// Run `run` between two [`line_transfer_ns`] probes of CPUs 0 and 1.
pub fn line_ns_around<T>(run: impl FnOnce() -> T) -> (T, LineNs) {
    let before = line_transfer_ns(0, 1);
    let out = run();
    (out, [before, line_transfer_ns(0, 1)])
}

/// `before/after` for a run's printed line (`-` where a probe could not pin).
pub fn show_line_ns(l: LineNs) -> String {
    let one = |ns: Option<u64>| ns.map_or("-".to_owned(), |ns| ns.to_string());
    format!("{}/{}", one(l[0]), one(l[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_transfer_needs_two_cpus_that_exist() {
        assert_eq!(line_transfer_ns(0, 0), None, "one CPU");
        assert_eq!(line_transfer_ns(0, cpus()), None, "a CPU past the last");
    }
}
