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
