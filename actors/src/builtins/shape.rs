//! The shape of event-time windows: tumbling or sliding, with allowed lateness ([`WindowSpec`]),
//! and which windows an event time falls in ([`WindowSpec::starts`]).

use super::BuildError;

/// Shape of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Back-to-back windows `[k*size, (k+1)*size)`.
    Tumbling { size_ms: u64 },
    /// Windows `[k*slide, k*slide + size)`: each record is in about `size / slide` of them.
    Sliding { size_ms: u64, slide_ms: u64 },
}

/// A window shape plus how long fired windows keep accepting late records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    pub lateness_ms: u64,
}

impl WindowSpec {
    /// Tumbling windows of `size_ms`, no lateness.
    pub fn tumbling(size_ms: u64) -> Self {
        WindowSpec { kind: WindowKind::Tumbling { size_ms }, lateness_ms: 0 }
    }

    /// Sliding windows of `size_ms` every `slide_ms`, no lateness.
    pub fn sliding(size_ms: u64, slide_ms: u64) -> Self {
        WindowSpec { kind: WindowKind::Sliding { size_ms, slide_ms }, lateness_ms: 0 }
    }

    /// The same windows with `lateness_ms` of allowed lateness.
    pub fn with_lateness(self, lateness_ms: u64) -> Self {
        WindowSpec { lateness_ms, ..self }
    }

    /// Window length in ms.
    pub fn size_ms(&self) -> u64 {
        match self.kind {
            WindowKind::Tumbling { size_ms } | WindowKind::Sliding { size_ms, .. } => size_ms,
        }
    }

    pub(crate) fn slide_ms(&self) -> u64 {
        match self.kind {
            WindowKind::Tumbling { size_ms } => size_ms,
            WindowKind::Sliding { slide_ms, .. } => slide_ms,
        }
    }

    /// Whether a window end, or an end plus the allowed lateness, lies in `(from, to]`: only
    /// then does moving the watermark from `from` to `to` fire or expire a pane, or change
    /// whether a record is late. Otherwise the move is invisible.
    pub fn has_boundary_in(&self, from: u64, to: u64) -> bool {
        let (size, slide) = (self.size_ms().max(1), self.slide_ms().max(1));
        // The first end `k * slide + size` strictly after `x`.
        let next_end = |x: u64| match x.checked_sub(size) {
            Some(over) => (over / slide).saturating_add(1).saturating_mul(slide).saturating_add(size),
            None => size,
        };
        let lateness = self.lateness_ms;
        next_end(from) <= to || next_end(from.saturating_sub(lateness)).saturating_add(lateness) <= to
    }

    /// Reject zero sizes and slides.
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.size_ms() == 0 {
            return Err(BuildError::InvalidWindow { reason: "size must be at least 1 ms" });
        }
        if self.slide_ms() == 0 {
            return Err(BuildError::InvalidWindow { reason: "slide must be at least 1 ms" });
        }
        Ok(())
    }

    /// Start of every window containing `t`, ascending: each `s = k * slide` with
    /// `s <= t < s + size`. Hot path: no allocation.
    #[inline]
    pub fn starts(&self, t: u64) -> Starts {
        let (size, slide) = (self.size_ms().max(1), self.slide_ms().max(1));
        let first = match t.checked_sub(size) {
            // Smallest multiple of `slide` strictly greater than `t - size`.
            Some(before) => (before / slide).saturating_add(1).saturating_mul(slide),
            None => 0,
        };
        Starts { next: Some(first), last: t - t % slide, slide }
    }
}

/// Iterator over the window starts of one event time (see [`WindowSpec::starts`]).
#[derive(Clone, Debug)]
pub struct Starts {
    next: Option<u64>,
    last: u64,
    slide: u64,
}

impl Iterator for Starts {
    type Item = u64;
    #[inline]
    fn next(&mut self) -> Option<u64> {
        let s = self.next.filter(|s| *s <= self.last)?;
        self.next = s.checked_add(self.slide);
        Some(s)
    }
}

/// A window shape as archived: `[size, slide, lateness]` in ms (a tumbling window's slide is
/// its size).
pub(crate) type ShapeTag = [u64; 3];
