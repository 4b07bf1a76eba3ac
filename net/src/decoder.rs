//! The sans-I/O frame decoder: bytes in, frames out, borrowed in place from one reused,
//! 16-aligned receive buffer.
//!
//! The buffer's bytes `[start, end)` are received and not yet yielded. Frames start at `start`,
//! always a multiple of 16, so every payload is 16-aligned. `scan` is where the first header not
//! yet checked begins: a header is checked as soon as its 16 bytes arrive, before any of its
//! payload is buffered, so an oversized or garbage header fails without buffering its body.
//! The buffer grows with what arrives, never with what a header declares: to the largest partial
//! frame plus one read, with at most [`MAX_GROWTH`] of slack beyond that, and is then reused.
//! When every frame has been yielded it rewinds for free, and a partial frame is moved to the
//! front only when the space behind it runs out. So a peer that announces a large frame and
//! trickles its body holds what it sent plus a bounded slack: a reader without room in the
//! buffer ([`FrameDecoder::spare_window`] says so) reads into a scratch buffer of its own and
//! [`feed`](FrameDecoder::feed)s what came; a decoder that was never fed holds nothing.

use rkyv::util::AlignedVec;

use crate::error::DecodeError;
use crate::frame::{FrameHeader, FrameType, HEADER_LEN, PAYLOAD_LIMIT};

/// Default largest payload a decoder accepts: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 16 << 20;
/// Smallest receive buffer a decoder allocates.
const MIN_BUFFER: usize = 4096;
/// Most a buffer grows beyond what it must hold: it doubles while small, then grows by this
/// much at a time (a partial frame of n bytes holds at most n + one read + this).
pub const MAX_GROWTH: usize = 256 * 1024;

/// One decoded frame, borrowed from the decoder's buffer. `payload` starts 16-byte aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub ty: FrameType,
    pub payload: &'a [u8],
}

/// Turns a byte stream, in chunks of any size, into frames. See the module docs.
///
/// The first error closes the decoder: every later call returns that error, and frames still
/// buffered are not yielded (the connection is to be closed).
///
/// ```
/// use dirigo_net::{DecodeError, FrameDecoder};
/// let mut decoder = FrameDecoder::new(1 << 20);
/// let err = decoder.feed(b"GET / HTTP/1.1\r\n\r\n").unwrap_err();
/// assert_eq!(err, DecodeError::BadMagic { found: *b"GE" });
/// assert_eq!(decoder.next_frame(), Err(err));
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    /// Fully initialised; only `[start, end)` holds live bytes.
    buf: AlignedVec,
    start: usize,
    end: usize,
    scan: usize,
    max_payload: u32,
    /// Set by the first error; every later call returns it.
    failed: Option<DecodeError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl FrameDecoder {
    /// A decoder refusing payloads over `max_payload` bytes (capped at [`PAYLOAD_LIMIT`]).
    /// Allocates nothing until the first bytes arrive.
    pub fn new(max_payload: u32) -> Self {
        FrameDecoder {
            buf: AlignedVec::new(),
            start: 0,
            end: 0,
            scan: 0,
            max_payload: max_payload.min(PAYLOAD_LIMIT),
            failed: None,
        }
    }

    /// The configured maximum payload length.
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// Bytes received and not yet yielded as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Bytes the receive buffer holds (allocated and initialised), live or not.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The error that closed this decoder, if any.
    pub fn error(&self) -> Option<DecodeError> {
        self.failed
    }

    /// Copy a chunk of the stream in (hot path). Each header is checked as soon as it is
    /// complete, before any of its payload is copied. Yield frames with [`Self::next_frame`]
    /// between calls, or the buffer keeps every unyielded frame.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), DecodeError> {
        self.check_open()?;
        self.rewind_if_drained();
        while !bytes.is_empty() {
            let n = bytes.len().min(self.until_boundary());
            self.make_room(n);
            self.buf[self.end..self.end + n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.advance(n)?;
        }
        Ok(())
    }

    /// A writable window of at least `min_len` bytes at the end of the buffer, to read a socket
    /// into directly (saves the copy of [`Self::feed`]); then call [`Self::commit`]. Headers are
    /// checked on commit, so up to one window of an oversized frame's body may be buffered.
    pub fn recv_window(&mut self, min_len: usize) -> Result<&mut [u8], DecodeError> {
        self.check_open()?;
        self.rewind_if_drained();
        self.make_room(min_len.clamp(1, 2 * PAYLOAD_LIMIT as usize));
        Ok(&mut self.buf[self.end..])
    }

    /// The free room of the buffer as it is, to read a socket into directly, if it holds at
    /// least `min_len` bytes (after moving a partial frame to the front); then call
    /// [`Self::commit`]. None: the buffer would have to grow: read into a scratch buffer and
    /// [`Self::feed`] what arrived instead, so it grows only by what the peer sent.
    pub fn spare_window(&mut self, min_len: usize) -> Result<Option<&mut [u8]>, DecodeError> {
        self.check_open()?;
        self.rewind_if_drained();
        let min_len = min_len.max(1);
        if self.buf.len() - self.end < min_len && self.start > 0 {
            self.compact();
        }
        if self.buf.len() - self.end < min_len {
            return Ok(None);
        }
        Ok(Some(&mut self.buf[self.end..]))
    }

    /// Account for `n` bytes written into the window from [`Self::recv_window`] or
    /// [`Self::spare_window`].
    pub fn commit(&mut self, n: usize) -> Result<(), DecodeError> {
        self.check_open()?;
        let window = self.buf.len() - self.end;
        if n > window {
            return Err(self.fail(DecodeError::WindowOverrun { committed: n, window }));
        }
        self.advance(n)
    }

    /// The next complete frame, if one is buffered (hot path). Its payload is borrowed from the
    /// buffer until the next call on the decoder.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, DecodeError> {
        self.check_open()?;
        if self.scan <= self.start {
            return Ok(None); // the header at `start` is not complete yet
        }
        let header = self.checked_header_at(self.start)?;
        let frame_end = self.start + header.frame_len();
        if frame_end > self.end {
            return Ok(None);
        }
        let body = self.start + HEADER_LEN;
        let payload_end = body + header.len as usize;
        if self.buf[payload_end..frame_end].iter().any(|&b| b != 0) {
            let (ty, len) = (header.ty, header.len);
            return Err(self.fail(DecodeError::NonzeroPadding { ty, len }));
        }
        self.start = frame_end;
        Ok(Some(Frame { ty: header.ty, payload: &self.buf[body..payload_end] }))
    }

    /// The peer closed the stream: succeeds only at a frame boundary with nothing buffered.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        self.check_open()?;
        if self.start == self.end {
            return Ok(());
        }
        let needed = match self.scan > self.start {
            true => self.checked_header_at(self.start)?.frame_len(),
            false => HEADER_LEN,
        };
        let buffered = self.buffered();
        Err(self.fail(DecodeError::Truncated { buffered, needed }))
    }

    fn check_open(&self) -> Result<(), DecodeError> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    #[cold]
    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.failed = Some(e);
        e
    }

    /// Bytes to copy before the next header is complete or the current body ends.
    fn until_boundary(&self) -> usize {
        match self.end < self.scan {
            true => self.scan - self.end,
            false => self.scan + HEADER_LEN - self.end,
        }
    }

    /// `n` more bytes were written at `end`: check every header they complete.
    fn advance(&mut self, n: usize) -> Result<(), DecodeError> {
        self.end += n;
        while self.scan + HEADER_LEN <= self.end {
            let header = self.header_at(self.scan)?;
            self.scan += header.frame_len();
        }
        Ok(())
    }

    fn header_at(&mut self, at: usize) -> Result<FrameHeader, DecodeError> {
        let mut bytes = [0u8; HEADER_LEN];
        bytes.copy_from_slice(&self.buf[at..at + HEADER_LEN]);
        FrameHeader::parse(&bytes, self.max_payload).map_err(|e| self.fail(e))
    }

    /// The header at `at`, which [`Self::advance`] already checked: read its type and length only.
    fn checked_header_at(&mut self, at: usize) -> Result<FrameHeader, DecodeError> {
        let b = &self.buf[at..at + HEADER_LEN];
        let len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        match FrameType::try_from(b[3]) {
            Ok(ty) => Ok(FrameHeader { ty, len }),
            Err(e) => Err(self.fail(e)), // not reached: the full check accepted this byte
        }
    }

    /// Every byte was yielded: start over at the front of the buffer (no copy).
    fn rewind_if_drained(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.scan = 0;
        }
    }

    /// Make `n` bytes of room after `end`: move the live bytes to the front if that suffices,
    /// else grow (cold: only until the buffer reaches its working size): double while small,
    /// by [`MAX_GROWTH`] at most, so it never holds more than `end + n + MAX_GROWTH`.
    fn make_room(&mut self, n: usize) {
        if self.end + n <= self.buf.len() {
            return;
        }
        if self.start > 0 {
            self.compact();
        }
        if self.end + n > self.buf.len() {
            let len = self.buf.len();
            let want = (self.end + n).max(len + len.min(MAX_GROWTH)).max(MIN_BUFFER);
            self.buf.resize(want, 0);
        }
    }

    /// Move the live bytes to the front of the buffer (frames start 16-aligned there too).
    fn compact(&mut self) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.scan -= self.start;
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;

    fn two_frames() -> AlignedVec {
        let mut out: AlignedVec = AlignedVec::new();
        encode_frame(FrameType::Ping, b"abc", &mut out).unwrap();
        encode_frame(FrameType::Pong, &[7; 40], &mut out).unwrap();
        out
    }

    #[test]
    fn steady_state_reuses_the_buffer() {
        let wire = two_frames();
        let mut dec = FrameDecoder::default();
        for _ in 0..1000 {
            dec.feed(&wire).unwrap();
            while dec.next_frame().unwrap().is_some() {}
        }
        assert_eq!(dec.buf.len(), MIN_BUFFER);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn partial_frame_is_moved_to_the_front_keeping_alignment() {
        let wire = two_frames();
        let mut dec = FrameDecoder::default();
        let mut seen = 0;
        for _ in 0..500 {
            for chunk in wire.chunks(13) {
                dec.feed(chunk).unwrap();
                while let Some(f) = dec.next_frame().unwrap() {
                    assert_eq!(f.payload.as_ptr() as usize % 16, 0);
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 1000);
        assert_eq!(dec.buf.len(), MIN_BUFFER);
    }

    /// A peer that announces the largest frame allowed and trickles its body: the buffer holds
    /// what arrived plus a bounded slack, never the declared size up front.
    #[test]
    fn a_trickled_large_frame_holds_only_what_arrived() {
        const MAX: u32 = 4 << 20;
        let mut dec = FrameDecoder::new(MAX);
        assert_eq!(dec.capacity(), 0, "nothing allocated before the first byte");
        assert!(dec.spare_window(1).unwrap().is_none(), "no room without growing");
        let header = FrameHeader { ty: FrameType::Record, len: MAX }.to_bytes();
        dec.feed(&header).unwrap();
        assert!(dec.capacity() <= MIN_BUFFER, "a header alone: {} bytes held", dec.capacity());
        let mut sent = HEADER_LEN;
        let mut worst = 0;
        for step in 0..3000 {
            let chunk = if step % 2 == 0 { 1 } else { 1000 }; // bytes, then a larger trickle
            dec.feed(&vec![0u8; chunk]).unwrap();
            sent += chunk;
            assert_eq!(dec.buffered(), sent);
            worst = worst.max(dec.capacity() - sent);
            assert!(dec.capacity() <= sent + MAX_GROWTH, "{} held for {sent} sent", dec.capacity());
        }
        assert!(dec.next_frame().unwrap().is_none(), "the frame is not whole yet");
        // The rest arrives: the frame decodes, and the buffer is its size plus the bounded slack.
        let rest = HEADER_LEN + MAX as usize - sent;
        dec.feed(&vec![0u8; rest]).unwrap();
        assert!(dec.capacity() <= HEADER_LEN + MAX as usize + MAX_GROWTH);
        assert_eq!(dec.next_frame().unwrap().map(|f| f.payload.len()), Some(MAX as usize));
        assert!(worst > 0);
    }

    #[test]
    fn spare_window_reads_in_place_only_without_growing() {
        let wire = two_frames();
        let mut dec = FrameDecoder::default();
        dec.feed(&wire).unwrap();
        while dec.next_frame().unwrap().is_some() {}
        let cap = dec.capacity();
        let w = dec.spare_window(wire.len()).unwrap().expect("room: the buffer rewound");
        assert_eq!(w.len(), cap);
        w[..wire.len()].copy_from_slice(&wire);
        dec.commit(wire.len()).unwrap();
        assert_eq!(dec.next_frame().unwrap().unwrap().payload, b"abc");
        assert!(dec.spare_window(cap).unwrap().is_none(), "a live frame leaves less than the whole buffer");
        assert_eq!(dec.capacity(), cap, "asking never grows the buffer");
    }

    #[test]
    fn recv_window_then_commit_decodes_in_place() {
        let wire = two_frames();
        let mut dec = FrameDecoder::default();
        let window = dec.recv_window(wire.len()).unwrap();
        window[..wire.len()].copy_from_slice(&wire);
        dec.commit(wire.len()).unwrap();
        assert_eq!(dec.next_frame().unwrap().unwrap().payload, b"abc");
        assert_eq!(dec.next_frame().unwrap().unwrap().ty, FrameType::Pong);
        assert_eq!(dec.next_frame().unwrap(), None);
        let window = dec.recv_window(1).unwrap().len();
        let err = dec.commit(window + 1).unwrap_err();
        assert!(matches!(err, DecodeError::WindowOverrun { .. }));
    }
}
