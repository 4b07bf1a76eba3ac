//! Shared harness of the engine's integration tests that run the `dirigo` binary or listen on
//! loopback: the binary's command, running it to completion within a deadline (killed past it)
//! with its output, fresh temporary directories and free loopback addresses.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A run of the binary that takes longer than this is a hang (a healthy one, even a cluster's,
/// takes about a second).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The `dirigo` binary of this build.
pub fn dirigo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dirigo"))
}

/// Run `command` to completion within [`DEADLINE`], its stdout and stderr captured (see
/// [`wait_all`]).
pub fn output(command: &mut Command) -> Output {
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("dirigo starts");
    wait_all(vec![child], DEADLINE).remove(0)
}

/// Start every command, stdout and stderr captured, then [`wait_all`] of them.
pub fn run_all(commands: Vec<Command>, deadline: Duration) -> Vec<Output> {
    let children = commands
        .into_iter()
        .map(|mut c| c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("dirigo starts"))
        .collect();
    wait_all(children, deadline)
}

/// Wait for each child to exit, each exit within `deadline` of the one before (a thread per
/// process waits on it; no polling), and return their outputs in order. At the deadline every
/// process still running is killed and the test fails.
pub fn wait_all(children: Vec<Child>, deadline: Duration) -> Vec<Output> {
    let (tx, rx) = std::sync::mpsc::channel();
    let n = children.len();
    let mut pids = Vec::with_capacity(n);
    for (i, child) in children.into_iter().enumerate() {
        pids.push(child.id());
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send((i, child.wait_with_output()));
        });
    }
    let mut outputs: Vec<Option<Output>> = (0..n).map(|_| None).collect();
    for _ in 0..n {
        match rx.recv_timeout(deadline) {
            Ok((i, out)) => outputs[i] = Some(out.expect("waited")),
            Err(_) => {
                let running: Vec<u32> = (0..n).filter(|&i| outputs[i].is_none()).map(|i| pids[i]).collect();
                for &pid in &running {
                    // SAFETY: kill(2) on a child this test started and has not reaped.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                }
                panic!("processes {running:?} did not exit within {deadline:?} (killed)");
            }
        }
    }
    outputs.into_iter().map(|o| o.expect("collected")).collect()
}

/// A process's stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh, empty directory `dirigo-<tag>-<pid>-<n>` under the system's temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("dirigo-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A loopback address nobody listens on now, for an engine to bind (a client's retry-connect
/// covers the time until it listens). Taken below the kernel's ephemeral range (32768 and up on
/// Linux), where the OS never puts a connecting socket or a `bind(0)`: a port the OS handed out
/// and this process released could be taken by a test client connecting meanwhile, and the
/// engine's bind then fails. Each port is handed out once per process (a counter walks the
/// range from a place that depends on the process id) and checked free by binding it.
pub fn free_address() -> SocketAddr {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let port = (FIRST + (start + n) % SPAN) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().expect("address");
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN)
}

/// A tiny seeded generator for the kill points.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Start `dirigo run` on `cfg` and kill it with SIGKILL after `after` unless it exits first;
/// returns whether it exited by itself (and its stderr).
pub fn run_and_kill(cfg: &std::path::Path, after: Duration) -> (bool, String) {
    let mut child = dirigo()
        .arg("run")
        .arg(cfg)
        .arg("--quiet")
        .env("RUST_LOG", "warn,dirigo_engine::snapshot=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dirigo starts");
    let pid = child.id();
    let stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait().expect("waited");
        let _ = tx.send(());
        status
    });
    let exited = rx.recv_timeout(after).is_ok();
    if !exited {
        // SAFETY: kill(2) on a child this test started and has not reaped (its waiter thread
        // reaps it after the signal).
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    let status = waiter.join().expect("waiter");
    let err = reader.join().expect("reader");
    if exited {
        assert!(status.success(), "dirigo run failed by itself:\n{err}");
    }
    (exited, err)
}
