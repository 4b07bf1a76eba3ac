//! Wakes a parked shard when its tcp source has input: a readiness thread per tcp source, blocked
//! in `epoll_wait`, rings the shard's doorbell. The data path is untouched (the shard still reads
//! its sockets itself); this only replaces the timer a parked shard used to poll them with.
//!
//! Two epoll sets. The *inner* one holds the source's fds (listener, connections, and in `uring`
//! mode the ring's eventfd), level-triggered, and is never waited on directly. The *outer* one
//! holds the inner set, one-shot, and a stop eventfd; the thread waits on it. Before parking, the
//! shard re-arms the inner set in the outer one ([`Readiness::arm`], one `epoll_ctl`, whatever the
//! number of connections). So:
//! - a busy shard never wakes the thread (the inner set is disarmed after each event);
//! - no wake-up is lost: arming checks the inner set's current readiness, and the inner set is
//!   level-triggered, so bytes that arrived before the arm, or after it, both fire;
//! - a fired arm rings the doorbell once; a stale ring only costs the shard one empty turn.
//!
//! The thread is spawned on the shard's thread, so it inherits the shard's CPU pinning: it only
//! runs while that shard is parked, and the wake-up stays on the shard's core.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::signal::ShardSignal;

/// `epoll_event.u64` of the inner set in the outer one, and of the stop eventfd.
const INNER: u64 = 1;
const STOP: u64 = 2;

/// The readiness waker of one tcp source (see the module docs).
pub struct Readiness {
    inner: OwnedFd,
    outer: Arc<OwnedFd>,
    stop: Arc<OwnedFd>,
    /// Doorbell rings the thread delivered (each one woke, or would have woken, a parked shard).
    wakes: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Readiness {
    /// A waker ringing `signal`'s doorbell; `name` names its thread (`app/source`).
    pub fn new(signal: Arc<ShardSignal>, name: &str) -> io::Result<Readiness> {
        let inner = epoll_create()?;
        let outer = Arc::new(epoll_create()?);
        // SAFETY: eventfd has no memory arguments; the result is checked before use.
        let stop = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: `stop` is a fresh fd owned by nobody else.
        let stop = Arc::new(unsafe { OwnedFd::from_raw_fd(stop) });
        ctl(&outer, libc::EPOLL_CTL_ADD, inner.as_raw_fd(), 0, INNER)?; // disarmed until `arm`
        ctl(&outer, libc::EPOLL_CTL_ADD, stop.as_raw_fd(), libc::EPOLLIN as u32, STOP)?;
        let wakes = Arc::new(AtomicU64::new(0));
        let thread = {
            let (outer, wakes) = (outer.clone(), wakes.clone());
            std::thread::Builder::new()
                .name(format!("dirigo-ready {name}"))
                .spawn(move || watch(&outer, &signal, &wakes))?
        };
        Ok(Readiness { inner, outer, stop, wakes, thread: Some(thread) })
    }

    /// Watch `fd` for input (EPOLLIN, hang-ups and errors). A closed fd leaves the set by itself.
    pub fn add(&self, fd: RawFd) -> io::Result<()> {
        ctl(&self.inner, libc::EPOLL_CTL_ADD, fd, (libc::EPOLLIN | libc::EPOLLRDHUP) as u32, fd as u64)
    }

    /// Before parking: ring the doorbell once as soon as any watched fd is readable (at once if
    /// one already is).
    pub fn arm(&self) -> io::Result<()> {
        let events = (libc::EPOLLIN | libc::EPOLLONESHOT) as u32;
        ctl(&self.outer, libc::EPOLL_CTL_MOD, self.inner.as_raw_fd(), events, INNER)
    }

    /// Doorbell rings delivered since the last call.
    pub fn take_wakes(&self) -> u64 {
        self.wakes.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to an eventfd we own.
        let _ = unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), 8) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The readiness thread: wait for the armed inner set (or stop), ring, repeat.
fn watch(outer: &OwnedFd, signal: &ShardSignal, wakes: &AtomicU64) {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
    loop {
        // SAFETY: `events` is a live array of the length passed.
        let n = unsafe { libc::epoll_wait(outer.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!("tcp readiness thread stops: epoll_wait failed: {e}; the shard falls back to its park cap");
            return;
        }
        for ev in &events[..n as usize] {
            if ev.u64 == STOP {
                return;
            }
            wakes.fetch_add(1, Ordering::Relaxed);
            signal.wake();
        }
    }
}

fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: no memory arguments; the result is checked before use.
    let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: `fd` is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ctl(epoll: &OwnedFd, op: i32, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` lives across the call; the kernel copies it.
    cvt(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut ev) }).map(drop)
}

fn cvt(r: i32) -> io::Result<i32> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    #[test]
    fn an_armed_set_rings_once_for_bytes_sent_before_or_after_the_arm() {
        let (signal, bell) = ShardSignal::new(1);
        let r = Readiness::new(Arc::new(signal), "test").unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        r.add(server.as_raw_fd()).unwrap();
        // Not armed: bytes do not ring.
        client.write_all(b"x").unwrap();
        assert!(bell.recv_timeout(Duration::from_millis(50)).is_err());
        // Armed with bytes already waiting: rings at once.
        r.arm().unwrap();
        bell.recv_timeout(Duration::from_secs(5)).expect("a ring for bytes sent before the arm");
        assert_eq!(r.take_wakes(), 1);
        // Bytes still unread, but one-shot: no second ring until re-armed.
        assert!(bell.recv_timeout(Duration::from_millis(50)).is_err());
        // Read them, arm, then send: rings.
        let mut buf = [0u8; 8];
        std::io::Read::read(&mut &server, &mut buf).unwrap();
        r.arm().unwrap();
        client.write_all(b"y").unwrap();
        bell.recv_timeout(Duration::from_secs(5)).expect("a ring for bytes sent after the arm");
        assert_eq!(r.take_wakes(), 1);
    }
}
