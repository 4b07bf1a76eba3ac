//! io_uring receive for a tcp source (`[engine] tcp_io = "uring"`): one small ring per source
//! instance (so per shard), beside glommio's own, with one multishot receive per connection into
//! a provided buffer ring of [`BUFFERS`] x [`BUFFER_SIZE`] bytes.
//!
//! The kernel picks a buffer per arrival and posts a completion; the shard reaps completions
//! (no syscall) into per-connection queues of buffer ids, and a connection's `read` copies
//! queued buffers into its decoder and hands them back to the kernel. Nothing is received beyond
//! the buffer ring: while a paused source holds its buffers the kernel runs out (`ENOBUFS` ends
//! the multishot receive), bytes stay in the socket and TCP flow control slows the client; the
//! receive is re-armed once its queue is empty.
//!
//! The ring is set up with `COOP_TASKRUN | TASKRUN_FLAG`: a busy shard is not interrupted when
//! data arrives; the kernel flags pending work in the submission ring and the next reap runs it
//! with one `io_uring_enter`. The ring's eventfd and the sockets both go to the readiness waker
//! (`readiness.rs`), so a parked shard is woken whether the bytes are still in a socket or
//! already in a completion.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, types, IoUring};

/// Buffers in the provided buffer ring (a power of two).
pub const BUFFERS: u16 = 64;
/// Bytes per provided buffer: the ring holds `BUFFERS * BUFFER_SIZE` = 1 MiB per tcp source
/// (plain memory: provided buffers are not registered, so `ulimit -l` does not bound them).
pub const BUFFER_SIZE: usize = 16 * 1024;
/// Submission queue entries (re-arms and cancels only; completions get 8x as many slots, and the
/// kernel keeps overflowing completions rather than drop them).
const ENTRIES: u32 = 64;
/// The buffer group id of the ring.
const BGID: u16 = 0;
/// `user_data` of cancel requests (their completions are ignored).
const CANCEL: u64 = u64::MAX;

/// Why the io_uring receive path could not start (the source then falls back to `recv`).
#[derive(Debug, thiserror::Error)]
pub enum UringError {
    #[error("the kernel is {release}: multishot receive needs Linux 6.0 or later")]
    OldKernel { release: String },
    #[error("{what} failed: {source}")]
    Setup { what: &'static str, source: io::Error },
}

/// A connection's place in the ring: slot index and generation (a completion for an earlier
/// connection of the slot is recognised and its buffer returned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxToken {
    slot: u32,
    generation: u32,
}

impl RxToken {
    fn user_data(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.slot)
    }
}

#[derive(Default)]
struct Slot {
    generation: u32,
    live: bool,
    fd: RawFd,
    /// Received buffers not yet copied out: (buffer id, length); `offset` bytes of the front one
    /// are consumed.
    held: VecDeque<(u16, u32)>,
    offset: u32,
    /// A multishot receive is in flight.
    armed: bool,
    eof: bool,
    error: Option<i32>,
}

/// The ring of one tcp source.
pub struct UringRx {
    // Dropped first: the ring goes before the buffers it writes into (see Drop).
    ring: IoUring,
    bufs: BufRing,
    slots: Vec<Slot>,
    free: Vec<u32>,
    eventfd: OwnedFd,
}

impl UringRx {
    /// A ring with its provided buffers, or why the kernel cannot have one.
    pub fn new() -> Result<UringRx, UringError> {
        check_kernel()?;
        let setup = |what| move |source| UringError::Setup { what, source };
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_single_issuer()
            .setup_cqsize(ENTRIES * 8)
            .build(ENTRIES)
            .map_err(setup("io_uring_setup"))?;
        let bufs = BufRing::new().map_err(setup("allocating the buffer ring"))?;
        // SAFETY: the ring memory lives in `bufs` until Drop unregisters it.
        unsafe { ring.submitter().register_buf_ring_with_flags(bufs.ring_addr(), BUFFERS, BGID, 0) }
            .map_err(setup("registering the provided buffer ring"))?;
        // SAFETY: eventfd has no memory arguments; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(UringError::Setup { what: "eventfd", source: io::Error::last_os_error() });
        }
        // SAFETY: `fd` is a fresh fd owned by nobody else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        ring.submitter().register_eventfd(eventfd.as_raw_fd()).map_err(setup("registering the eventfd"))?;
        Ok(UringRx { ring, bufs, slots: Vec::new(), free: Vec::new(), eventfd })
    }

    /// The eventfd the kernel signals for every completion (for the readiness waker).
    pub fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Start receiving on `fd` (a connected, non-blocking socket).
    pub fn open(&mut self, fd: RawFd) -> io::Result<RxToken> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        (s.live, s.fd, s.offset, s.eof, s.error) = (true, fd, 0, false, None);
        let token = RxToken { slot, generation: s.generation };
        if let Err(e) = self.arm(token) {
            self.close(token); // the connection falls back to recv; free the slot
            return Err(e);
        }
        Ok(token)
    }

    /// Stop receiving for `token`'s connection (before its socket closes) and free its buffers.
    pub fn close(&mut self, token: RxToken) {
        let s = &mut self.slots[token.slot as usize];
        if !s.live || s.generation != token.generation {
            return;
        }
        while let Some((bid, _)) = s.held.pop_front() {
            self.bufs.give_back(bid);
        }
        if s.armed {
            let cancel = opcode::AsyncCancel::new(token.user_data()).build().user_data(CANCEL);
            // SAFETY: a cancel holds no buffer of ours.
            if unsafe { self.ring.submission().push(&cancel) }.is_ok() {
                let _ = self.ring.submit();
            }
        }
        (s.live, s.armed) = (false, false);
        s.generation = s.generation.wrapping_add(1);
        self.free.push(token.slot);
    }

    /// Collect what the kernel received (hot path: two loads when nothing happened; one
    /// `io_uring_enter` when the kernel flagged pending work).
    pub fn reap(&mut self) {
        if self.ring.submission().taskrun() {
            let _ = self.ring.submit();
        }
        let UringRx { ring, bufs, slots, .. } = self;
        for cqe in ring.completion() {
            let (ud, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            let bid = cqueue::buffer_select(flags);
            let slot = if ud == CANCEL { None } else { slots.get_mut((ud & 0xffff_ffff) as usize) };
            let Some(s) = slot.filter(|s| s.live && u64::from(s.generation) == ud >> 32) else {
                if let Some(b) = bid {
                    bufs.give_back(b); // a closed connection's late completion
                }
                continue;
            };
            if !cqueue::more(flags) {
                s.armed = false;
            }
            match (res, bid) {
                (n, Some(b)) if n > 0 => s.held.push_back((b, n as u32)),
                (n, None) if n > 0 => s.error = Some(libc::EIO), // bytes without a buffer: not ours to read
                (0, _) => s.eof = true,
                (e, _) if e == -libc::ENOBUFS => {} // out of buffers: re-armed once drained
                (e, b) => {
                    if let Some(b) = b {
                        bufs.give_back(b);
                    }
                    s.error = Some(-e);
                }
            }
        }
    }

    /// Copy `token`'s received bytes into `dst` (as many queued buffers as fit) and hand the
    /// buffers back, with the semantics of a non-blocking `recv`: `Ok(0)` is the end of the
    /// stream, `WouldBlock` means nothing is queued now.
    pub fn read(&mut self, token: RxToken, dst: &mut [u8]) -> io::Result<usize> {
        let s = &mut self.slots[token.slot as usize];
        let mut copied = 0;
        while let Some(&(bid, len)) = s.held.front() {
            let n = (len - s.offset).min((dst.len() - copied) as u32) as usize;
            if n == 0 {
                break;
            }
            let src = self.bufs.bytes(bid, s.offset as usize, n);
            dst[copied..copied + n].copy_from_slice(src);
            copied += n;
            s.offset += n as u32;
            if s.offset == len {
                s.held.pop_front();
                s.offset = 0;
                self.bufs.give_back(bid);
            }
        }
        if copied > 0 {
            return Ok(copied);
        }
        if let Some(e) = s.error.take() {
            return Err(io::Error::from_raw_os_error(e));
        }
        if s.eof {
            return Ok(0);
        }
        if !s.armed {
            self.arm(token)?;
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Input waits that a parked shard would not be woken for: unreaped completions, work the
    /// kernel flagged, or received bytes not yet read.
    pub fn has_input(&mut self) -> bool {
        self.ring.submission().taskrun()
            || !self.ring.completion().is_empty()
            || self.slots.iter().any(|s| s.live && (!s.held.is_empty() || s.eof || s.error.is_some()))
    }

    /// Before the shard parks: reset the eventfd (completions from here on signal it again).
    pub fn clear_eventfd(&self) {
        let mut n = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer of 8.
        let _ = unsafe { libc::read(self.eventfd.as_raw_fd(), n.as_mut_ptr().cast(), 8) };
    }

    fn arm(&mut self, token: RxToken) -> io::Result<()> {
        let s = &mut self.slots[token.slot as usize];
        let recv = opcode::RecvMulti::new(types::Fd(s.fd), BGID).build().user_data(token.user_data());
        // SAFETY: the receive writes only into provided buffers, which live as long as the ring.
        unsafe { self.ring.submission().push(&recv) }.map_err(|_| io::Error::other("submission queue full"))?;
        s.armed = true;
        self.ring.submit().map(drop)
    }
}

impl Drop for UringRx {
    fn drop(&mut self) {
        // No buffer can be selected after this; the ring (and its requests) go with `ring`.
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
    }
}

/// The provided buffer ring: `BUFFERS` entries (page-aligned, shared with the kernel) and the
/// buffers they point into.
struct BufRing {
    entries: *mut types::BufRingEntry,
    memory: *mut u8,
    /// Our producer index (published through the ring's tail).
    tail: u16,
}

impl BufRing {
    const ENTRIES_LAYOUT: std::alloc::Layout = match std::alloc::Layout::from_size_align(BUFFERS as usize * 16, 4096) {
        Ok(l) => l,
        Err(_) => panic!("bad layout"),
    };
    const MEMORY_LAYOUT: std::alloc::Layout =
        match std::alloc::Layout::from_size_align(BUFFERS as usize * BUFFER_SIZE, 4096) {
            Ok(l) => l,
            Err(_) => panic!("bad layout"),
        };

    fn new() -> io::Result<BufRing> {
        // SAFETY: both layouts have non-zero sizes; null results are checked.
        let entries = unsafe { std::alloc::alloc_zeroed(Self::ENTRIES_LAYOUT) }.cast::<types::BufRingEntry>();
        // SAFETY: as above.
        let memory = unsafe { std::alloc::alloc(Self::MEMORY_LAYOUT) };
        if entries.is_null() || memory.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let mut ring = BufRing { entries, memory, tail: 0 };
        (0..BUFFERS).for_each(|bid| ring.give_back(bid));
        Ok(ring)
    }

    fn ring_addr(&self) -> u64 {
        self.entries as u64
    }

    /// Hand buffer `bid` (back) to the kernel.
    fn give_back(&mut self, bid: u16) {
        let i = (self.tail & (BUFFERS - 1)) as usize;
        // SAFETY: `i` < BUFFERS entries; the kernel reads entries only below the published tail,
        // and entry `i` is past it.
        let e = unsafe { &mut *self.entries.add(i) };
        // SAFETY: `bid` < BUFFERS, so the buffer lies inside `memory`.
        e.set_addr(unsafe { self.memory.add(bid as usize * BUFFER_SIZE) } as u64);
        e.set_len(BUFFER_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field of entry 0, a u16 the kernel reads; publish with Release so the
        // entry written above is visible first.
        let tail = unsafe { AtomicU16::from_ptr(types::BufRingEntry::tail(self.entries).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Bytes `[offset, offset + len)` of buffer `bid`, which the kernel filled and handed to us.
    fn bytes(&self, bid: u16, offset: usize, len: usize) -> &[u8] {
        assert!(bid < BUFFERS && offset + len <= BUFFER_SIZE);
        // SAFETY: in bounds (asserted); the kernel does not write a buffer it handed over until
        // it is given back, and `give_back` takes `&mut self`.
        unsafe { std::slice::from_raw_parts(self.memory.add(bid as usize * BUFFER_SIZE + offset), len) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the ring was unregistered and closed.
        unsafe {
            std::alloc::dealloc(self.entries.cast(), Self::ENTRIES_LAYOUT);
            std::alloc::dealloc(self.memory, Self::MEMORY_LAYOUT);
        }
    }
}

/// Multishot receive (and the provided buffer rings it draws from) need Linux 6.0.
fn check_kernel() -> Result<(), UringError> {
    // SAFETY: uname writes only into the struct we pass.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::uname(&mut u) };
    let release: String = u.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect();
    let major: u32 = release.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if major >= 6 {
        Ok(())
    } else {
        Err(UringError::OldKernel { release })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    /// Reap until `token` yields bytes (or the end); the kernel posts completions asynchronously.
    fn read_some(rx: &mut UringRx, token: RxToken, dst: &mut [u8]) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            rx.reap();
            match rx.read(token, dst) {
                Ok(n) => return n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "nothing received");
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn receives_more_than_the_buffer_ring_holds_in_order_then_the_end() {
        let mut rx = UringRx::new().expect("io_uring on this kernel");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let token = rx.open(server.as_raw_fd()).unwrap();
        // 4 MiB: four times the buffer ring, so receives run out of buffers and are re-armed.
        let sent: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            std::thread::spawn(move || {
                client.write_all(&sent).unwrap();
                drop(client);
            })
        };
        let (mut got, mut buf) = (Vec::new(), vec![0u8; 64 * 1024]);
        loop {
            let n = read_some(&mut rx, token, &mut buf);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        writer.join().unwrap();
        assert!(got == sent, "received {} bytes of {}, in order: {}", got.len(), sent.len(), got == sent[..got.len()]);
        rx.close(token);
        assert!(!rx.has_input());
    }
}
