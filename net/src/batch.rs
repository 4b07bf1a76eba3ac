//! A batch of records in one [`FrameType::Data`] frame: written in place, validated once, then
//! read in place.
//!
//! The payload is a sequence of record archives, each 16-aligned, so a record archived once at
//! the source (by [`dirigo_actors::record::archive_values_into`]) crosses the link by `memcpy`
//! and is forwarded the same way ([`BatchWriter::push_archive`]), never re-serialised.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | record count, `u32` LE |
//! | 4 | 12 | reserved, zero |
//! | 16 | | `count` entries, each: |
//! | +0 | 4 | archive length `len`, `u32` LE |
//! | +4 | 4 | reserved, zero |
//! | +8 | 8 | tag, `u64` LE: the sender's routing word, e.g. the key hash |
//! | +16 | len | the record archive, zero-padded to a multiple of 16 |

use std::ops::Range;

use dirigo_actors::record::{self, archive_values_into, ArchivedRecord, RecordsOnly, Value};
use rkyv::util::AlignedVec;

use crate::error::{BatchFault, EncodeError, ValidateError};
use crate::frame::{begin_frame, end_frame, padded, FrameType, HEADER_LEN};
use crate::validate::check_aligned;

/// Length of the batch header and of each entry header.
const SUB_HEADER: usize = 16;

/// Appends one Data frame to an output buffer, record by record. Dropping it without
/// [`BatchWriter::finish`] removes the partial frame.
#[derive(Debug)]
pub struct BatchWriter<'a> {
    out: &'a mut AlignedVec,
    start: usize,
    count: u32,
    finished: bool,
}

impl<'a> BatchWriter<'a> {
    /// Start a Data frame at the end of `out`.
    pub fn begin(out: &'a mut AlignedVec) -> Result<Self, EncodeError> {
        let start = begin_frame(out)?;
        out.resize(out.len() + SUB_HEADER, 0);
        Ok(BatchWriter { out, start, count: 0, finished: false })
    }

    /// Records written so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of payload written so far (a caller's cue to cut the batch).
    pub fn payload_len(&self) -> usize {
        self.out.len() - self.start - HEADER_LEN
    }

    /// Archive `values` as a record straight into the frame.
    pub fn push_values(&mut self, tag: u64, values: &[Value]) {
        let at = self.open_entry();
        let archive = archive_values_into(values, self.out);
        self.close_entry(at, tag, archive.len());
    }

    /// Copy an already archived record (one that was validated or written by this process) in.
    pub fn push_archive(&mut self, tag: u64, archive: &[u8]) {
        let at = self.open_entry();
        self.out.extend_from_slice(archive);
        self.close_entry(at, tag, archive.len());
    }

    /// Write the counts and the frame header; returns the payload's range in the output.
    pub fn finish(mut self) -> Result<Range<usize>, EncodeError> {
        let at = self.start + HEADER_LEN;
        self.out[at..at + 4].copy_from_slice(&self.count.to_le_bytes());
        self.finished = true;
        end_frame(FrameType::Data, self.start, self.out)
    }

    fn open_entry(&mut self) -> usize {
        let at = self.out.len();
        self.out.resize(at + SUB_HEADER, 0);
        at
    }

    fn close_entry(&mut self, at: usize, tag: u64, len: usize) {
        let len = u32::try_from(len).unwrap_or(u32::MAX); // end_frame refuses such a payload
        self.out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.out[at + 8..at + 16].copy_from_slice(&tag.to_le_bytes());
        let end = padded(self.out.len());
        self.out.resize(end, 0);
        self.count = self.count.saturating_add(1);
    }
}

impl Drop for BatchWriter<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.out.resize(self.start, 0);
        }
    }
}

/// A batch whose every record has been validated; reading it is free of further checks.
#[derive(Clone, Copy, Debug)]
pub struct ValidBatch<'a> {
    payload: &'a [u8],
    count: u32,
    /// Every entry's archive was validated.
    records: RecordsOnly,
}

/// One record of a [`ValidBatch`].
#[derive(Clone, Copy)]
pub struct BatchEntry<'a> {
    /// The sender's routing word.
    pub tag: u64,
    /// The record, read in place.
    pub record: &'a ArchivedRecord,
    /// The record's archive bytes, to forward with [`BatchWriter::push_archive`].
    pub archive: &'a [u8],
}

impl std::fmt::Debug for BatchEntry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEntry").field("tag", &self.tag).field("archive_len", &self.archive.len()).finish()
    }
}

/// Check a Data frame's payload once: layout, zero padding and every record archive.
pub fn validate_batch(payload: &[u8]) -> Result<ValidBatch<'_>, ValidateError> {
    check_aligned(payload)?;
    let count = batch_count(payload)?;
    let mut at = SUB_HEADER;
    for index in 0..count {
        let (_, archive, next) = entry_at(payload, at)?;
        record::access(archive).map_err(|source| ValidateError::BatchRecord { index, source })?;
        at = next;
    }
    // SAFETY: `record::access` accepted the archive of each of the `count` entries above, and
    // the batch's iterator reads exactly those slices again (`entry_at` is a pure function of the
    // same immutably borrowed bytes), 16-aligned (payload aligned, entries padded).
    let records = unsafe { RecordsOnly::assert() };
    match payload.len() - at {
        0 => Ok(ValidBatch { payload, count, records }),
        extra => Err(fault(at, BatchFault::TrailingBytes { extra })),
    }
}

impl<'a> ValidBatch<'a> {
    /// Number of records.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True for a batch of no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records in order, read in place.
    pub fn iter(&self) -> BatchIter<'a> {
        BatchIter { payload: self.payload, at: SUB_HEADER, left: self.count, records: self.records }
    }
}

impl<'a> IntoIterator for ValidBatch<'a> {
    type Item = BatchEntry<'a>;
    type IntoIter = BatchIter<'a>;
    fn into_iter(self) -> BatchIter<'a> {
        self.iter()
    }
}

/// Iterator over a [`ValidBatch`].
#[derive(Clone, Debug)]
pub struct BatchIter<'a> {
    payload: &'a [u8],
    at: usize,
    left: u32,
    records: RecordsOnly,
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = BatchEntry<'a>;

    #[inline]
    fn next(&mut self) -> Option<BatchEntry<'a>> {
        self.left = self.left.checked_sub(1)?;
        let (tag, archive, next) = entry_at(self.payload, self.at).ok()?;
        self.at = next;
        let record = self.records.read(archive).get();
        Some(BatchEntry { tag, record, archive })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

fn batch_count(payload: &[u8]) -> Result<u32, ValidateError> {
    let header = payload.get(..SUB_HEADER).ok_or(fault(0, BatchFault::MissingHeader))?;
    if header[4..].iter().any(|&b| b != 0) {
        return Err(fault(4, BatchFault::ReservedNonzero));
    }
    Ok(le_u32(header, 0))
}

/// The entry at `at`: its tag, its archive and where the next entry starts. Checks bounds,
/// the reserved word and the padding.
fn entry_at(payload: &[u8], at: usize) -> Result<(u64, &[u8], usize), ValidateError> {
    let header = payload.get(at..at + SUB_HEADER).ok_or(fault(at, BatchFault::EntryHeaderTruncated))?;
    let len = le_u32(header, 0);
    if le_u32(header, 4) != 0 {
        return Err(fault(at + 4, BatchFault::ReservedNonzero));
    }
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&header[8..16]);
    let body = at + SUB_HEADER;
    if len as usize > payload.len() - body {
        return Err(fault(body, BatchFault::RecordTruncated { len }));
    }
    let next = body + padded(len as usize); // no overflow: at most payload.len() + 15
    let Some(entry) = payload.get(body..next) else {
        return Err(fault(body, BatchFault::RecordTruncated { len }));
    };
    let (archive, padding) = entry.split_at(len as usize);
    if padding.iter().any(|&b| b != 0) {
        return Err(fault(body + len as usize, BatchFault::NonzeroPadding));
    }
    Ok((u64::from_le_bytes(tag), archive, next))
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn fault(offset: usize, what: BatchFault) -> ValidateError {
    ValidateError::Batch { offset, what }
}
