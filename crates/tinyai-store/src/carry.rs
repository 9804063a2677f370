//! The bytes a drop-behind read brought in past the end of a layer (owned
//! backend, buffered reads with `RWF_DONTCACHE`), kept for the next layer of
//! a stream.
//!
//! A drop-behind read drops every page-cache folio it touched, also the one a
//! layer's end falls inside; the next layer's first read then reads that folio
//! again, synchronously, and the kernel's read-ahead loses its stride. Over
//! the 1 GiB cold-load model (310 layers, most ends inside a folio) a C loop
//! reading each layer into its own buffer in 4 MiB drop-behind reads took
//! 0.94–4.6 s, median ~2.2 s, against 0.54–2.0 s, median ~0.68 s, for the same
//! bytes read in one chain of 4 MiB reads spanning the layers' buffers (8
//! interleaved rounds; `preadv2` with one `iovec` per buffer). So a stream's
//! last read of a layer runs on to the file's next 4 MiB boundary, into this
//! carry, and the next layer starts with a copy from it.
//!
//! The carry is one buffer of at most [`SEQUENTIAL_CHUNK`](crate::source)
//! bytes per file, outside the budget's charges like the kernel's own
//! read-ahead pages, and only filled by a load that continues the file's
//! previous load (a stream): a random access never reads past its layer.

use std::sync::Mutex;

use crate::buffer::{AlignedBuf, ReadTarget};

/// Largest gap between one load's end and the next one's start that still
/// counts as a stream (the padding `.tmai` puts between layers, page
/// rounding of directly opened files).
const STREAM_GAP: u64 = 64 << 10;

/// See the module's doc.
#[derive(Debug, Default)]
pub(crate) struct Carry {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `None` while a read fills it (or before the first carry).
    buffer: Option<AlignedBuf>,
    /// A read has the buffer (see [`Carry::lend`]).
    lent: bool,
    /// File offset of the buffer's first byte, and how many bytes it holds.
    start: u64,
    len: usize,
    /// Where the file's last buffered load ended (file offset).
    last_end: Option<u64>,
}

impl Carry {
    /// Copies into the start of `target` the bytes from file offset `offset`
    /// on that the carry holds (at most `target.len`); returns how many
    /// (0 when it holds none there).
    pub(crate) fn take_into(&self, offset: u64, target: ReadTarget) -> usize {
        let Ok(mut state) = self.state.lock() else {
            return 0;
        };
        let end = state.start + state.len as u64;
        let Some(buffer) = state.buffer.as_ref() else {
            return 0;
        };
        if state.len == 0 || offset < state.start || offset >= end {
            return 0;
        }
        let skip = (offset - state.start) as usize;
        let n = (state.len - skip).min(target.len);
        // SAFETY: the source range lies inside the carry's buffer (`skip + n
        // <= len <= capacity`), which only this lock's holder reads or writes
        // (a read filling it took it out of the state first); the
        // destination is the start of a target the calling load owns
        // exclusively (see `ReadTarget`), another allocation, so the ranges
        // do not overlap. No reference to either range exists.
        unsafe { std::ptr::copy_nonoverlapping(buffer.as_ptr().add(skip), target.ptr, n) };
        if skip + n == state.len {
            state.len = 0;
        }
        n
    }

    /// Whether the carry holds the byte at file offset `offset`.
    pub(crate) fn holds(&self, offset: u64) -> bool {
        self.state.lock().is_ok_and(|state| {
            state.buffer.is_some()
                && state.len > 0
                && offset >= state.start
                && offset < state.start + state.len as u64
        })
    }

    /// Whether a load starting at file offset `offset` continues the file's
    /// previous load (a stream), so that bytes read past its end will be
    /// wanted next.
    pub(crate) fn continues(&self, offset: u64) -> bool {
        self.state
            .lock()
            .ok()
            .and_then(|state| state.last_end)
            .is_some_and(|end| offset >= end && offset - end <= STREAM_GAP)
    }

    /// Notes that a buffered load ended at file offset `end`.
    pub(crate) fn note_end(&self, end: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.last_end = Some(end);
        }
    }

    /// The carry's buffer, for a read to fill (allocated on first use, `len`
    /// bytes); `None` when another read has it or it cannot be allocated.
    /// Its old bytes are forgotten.
    pub(crate) fn lend(&self, len: usize) -> Option<AlignedBuf> {
        let mut state = self.state.lock().ok()?;
        if state.lent {
            return None;
        }
        state.len = 0;
        let buffer = match state.buffer.take() {
            Some(buffer) if buffer.capacity() >= len => buffer,
            _ => AlignedBuf::for_reading(len, len, 4096)?,
        };
        state.lent = true;
        Some(buffer)
    }

    /// Gives back a lent buffer whose first `len` bytes are the file's from
    /// offset `start`.
    pub(crate) fn give(&self, buffer: AlignedBuf, start: u64, len: usize) {
        if let Ok(mut state) = self.state.lock() {
            state.len = len.min(buffer.capacity());
            state.start = start;
            state.buffer = Some(buffer);
            state.lent = false;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn target(bytes: &mut [u8]) -> ReadTarget {
        ReadTarget {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
        }
    }

    /// Filled through a lent buffer, the carry serves the bytes from any
    /// offset inside it, once each, and nothing outside it.
    #[test]
    fn the_carry_serves_the_bytes_it_holds_and_nothing_else() {
        let carry = Carry::default();
        let mut into = [0u8; 8];
        assert_eq!(carry.take_into(0, target(&mut into)), 0);
        let mut buffer = carry.lend(16).unwrap();
        let fill = buffer.read_target(16);
        for i in 0..10 {
            // SAFETY: inside the lent buffer, which this test owns.
            unsafe { fill.ptr.add(i).write(100 + i as u8) };
        }
        carry.give(buffer, 1000, 10);
        assert!(carry.holds(1000) && carry.holds(1009));
        assert!(!carry.holds(999) && !carry.holds(1010));
        assert_eq!(carry.take_into(999, target(&mut into)), 0);
        assert_eq!(carry.take_into(1010, target(&mut into)), 0);
        assert_eq!(carry.take_into(1002, target(&mut into[..3])), 3);
        assert_eq!(&into[..3], &[102, 103, 104]);
        // The rest from a later offset; the carry is then used up.
        assert_eq!(carry.take_into(1005, target(&mut into)), 5);
        assert_eq!(&into[..5], &[105, 106, 107, 108, 109]);
        assert_eq!(carry.take_into(1005, target(&mut into)), 0);
        // A buffer on loan holds nothing, and is lent to one read at a time.
        let lent = carry.lend(16).unwrap();
        assert_eq!(carry.take_into(1000, target(&mut into)), 0);
        assert!(carry.lend(16).is_none());
        carry.give(lent, 0, 0);
    }

    #[test]
    fn a_load_continues_a_stream_only_right_after_the_last_one() {
        let carry = Carry::default();
        assert!(!carry.continues(0), "no load yet");
        carry.note_end(4096);
        assert!(carry.continues(4096));
        assert!(carry.continues(4096 + STREAM_GAP));
        assert!(!carry.continues(4096 + STREAM_GAP + 1));
        assert!(!carry.continues(0), "backwards is not a stream");
    }
}
