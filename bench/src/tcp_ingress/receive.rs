//! The receive loop alone, without the engine: one glommio executor pinned to CPU 0 reads a
//! connection to its end and decodes it (frames, then each Data batch validated and its records
//! counted), through each receive path: non-blocking `recv` (yielding to glommio when the socket
//! is empty), the engine's io_uring ring (`UringRx`, reaped when empty), and glommio's own
//! `TcpStream` (`read().await`). This isolates what the path costs per event from the engine.

use std::io::{ErrorKind, Read};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};

use anyhow::{anyhow, bail, ensure};
use dirigo_net::tcp::UringRx;
use dirigo_net::{validate_batch, FrameDecoder, FrameType};
use futures_lite::AsyncReadExt;
use glommio::{LocalExecutorBuilder, Placement};

/// The receive paths of the loop-only comparison.
pub const PATHS: [&str; 3] = ["recv", "uring", "glommio"];
/// Bytes asked for per read (the engine's `READ_CHUNK`).
const CHUNK: usize = 64 * 1024;

/// Receive `bytes` over loopback through `path`; returns (records counted, receiver CPU ns).
pub fn run(path: &'static str, bytes: &'static [u8]) -> anyhow::Result<(u64, u64)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let receiver = LocalExecutorBuilder::new(Placement::Fixed(0))
        .name("rx-bench")
        .spawn(move || async move {
            let cpu0 = thread_cpu_ns();
            let n = match path {
                "recv" => by_recv(listener).await,
                "uring" => by_uring(listener).await,
                _ => by_glommio(listener).await,
            }?;
            Ok::<_, anyhow::Error>((n, thread_cpu_ns() - cpu0))
        })
        .map_err(|e| anyhow!("starting the receiver: {e}"))?;
    let mut s = std::net::TcpStream::connect(addr)?;
    std::io::Write::write_all(&mut s, bytes)?;
    drop(s);
    receiver.join().map_err(|e| anyhow!("receiver: {e}"))?
}

/// Decode what is buffered; true at the End frame.
fn decode(d: &mut FrameDecoder, records: &mut u64) -> anyhow::Result<bool> {
    while let Some(f) = d.next_frame()? {
        match f.ty {
            FrameType::Data => *records += validate_batch(f.payload)?.iter().count() as u64,
            FrameType::End => return Ok(true),
            ty => bail!("unexpected {ty:?} frame"),
        }
    }
    Ok(false)
}

async fn by_recv(listener: TcpListener) -> anyhow::Result<u64> {
    let (mut s, _) = listener.accept()?;
    s.set_nonblocking(true)?;
    let (mut d, mut records) = (FrameDecoder::new(4 << 20), 0);
    loop {
        match s.read(d.recv_window(CHUNK)?) {
            Ok(0) => bail!("the stream ended before its End frame"),
            Ok(n) => d.commit(n)?,
            Err(e) if e.kind() == ErrorKind::WouldBlock => glommio::yield_if_needed().await,
            Err(e) => return Err(e.into()),
        }
        if decode(&mut d, &mut records)? {
            return Ok(records);
        }
    }
}

async fn by_uring(listener: TcpListener) -> anyhow::Result<u64> {
    let (s, _) = listener.accept()?;
    s.set_nonblocking(true)?;
    let mut ring = UringRx::new()?;
    let token = ring.open(s.as_raw_fd())?;
    let (mut d, mut records) = (FrameDecoder::new(4 << 20), 0);
    loop {
        match ring.read(token, d.recv_window(CHUNK)?) {
            Ok(0) => bail!("the stream ended before its End frame"),
            Ok(n) => d.commit(n)?,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                ring.reap();
                glommio::yield_if_needed().await;
            }
            Err(e) => return Err(e.into()),
        }
        if decode(&mut d, &mut records)? {
            ring.close(token);
            return Ok(records);
        }
    }
}

async fn by_glommio(listener: TcpListener) -> anyhow::Result<u64> {
    // SAFETY: the fd is a bound, listening socket whose ownership moves to glommio's listener.
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) };
    let mut s = listener.accept().await.map_err(|e| anyhow!("accept: {e}"))?;
    let (mut d, mut records) = (FrameDecoder::new(4 << 20), 0);
    loop {
        let n = s.read(d.recv_window(CHUNK)?).await?;
        ensure!(n > 0, "the stream ended before its End frame");
        d.commit(n)?;
        if decode(&mut d, &mut records)? {
            return Ok(records);
        }
    }
}

/// CPU time of the calling thread, ns.
fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime writes only into the struct we pass.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
