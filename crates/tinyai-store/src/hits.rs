//! Hit bookkeeping off the hit path: striped, lossy read buffers.
//!
//! A hit of a resident layer must not take the model lock, but the cache
//! engine still needs to hear about it (its recency and reuse history). As in
//! Caffeine and moka, each thread appends the layer id to one of a few striped
//! ring buffers (plain loads and stores, no read-modify-write, on a cache line
//! that thread has to itself while there are no more threads than stripes),
//! and whoever next holds the model lock — a miss, a prefetch, or a hitting
//! thread whose buffer is half full and that wins a `try_lock` — drains every
//! buffer into the engine in order.
//!
//! **Lossy**: a hit appended while its ring is full (more than [`RING`] hits
//! on one stripe since the last drain, e.g. while a long load holds the lock)
//! overwrites an older, undrained one; a slot being written while a drain
//! passes it is picked up by a later drain or lost; and two threads that share
//! a stripe (more threads than [`STRIPES`]) may overwrite each other's
//! appends. A lost hit only makes the engine's history of that layer slightly
//! older; it never affects correctness (pins, budget, bytes), nor the hit
//! count in [`crate::Stats`], which the slots count exactly. The
//! `tinyai-cache` example `hit_ratios` (its `lossy` rows) shows by simulation
//! that dropping hits this way does not move hit ratios.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Entries per stripe.
pub(crate) const RING: usize = 64;
/// Stripes (threads are spread over them round-robin).
pub(crate) const STRIPES: usize = 8;

#[derive(Debug)]
#[repr(align(128))]
struct Stripe {
    /// Hits appended to this stripe since open.
    head: AtomicU64,
    /// Hits drained from this stripe (written under the model lock).
    tail: AtomicU64,
    /// Layer id + 1 of each buffered hit, 0 when empty.
    entries: [AtomicU32; RING],
}

impl Default for Stripe {
    fn default() -> Self {
        Stripe {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            entries: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// The striped read buffers of one model.
#[derive(Debug, Default)]
pub(crate) struct ReadBuffers {
    stripes: [Stripe; STRIPES],
}

/// Whether the appending thread should try to drain now.
pub(crate) type DrainHint = bool;

/// The calling thread's stripe (of read buffers and pin counters): threads are
/// spread over [`STRIPES`] round-robin, in the order they first ask.
#[inline]
pub(crate) fn my_stripe() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|stripe| {
        let mut value = stripe.get();
        if value == usize::MAX {
            value = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % STRIPES;
            stripe.set(value);
        }
        value
    })
}

impl ReadBuffers {
    /// Appends a hit of layer `index` (lock-free). Returns true when this stripe
    /// has half a ring or more waiting, so the caller should try to drain.
    #[inline]
    pub(crate) fn record(&self, index: u32) -> DrainHint {
        let stripe = &self.stripes[my_stripe()];
        // Not a read-modify-write: with one thread per stripe this is exact;
        // threads sharing a stripe may lose appends (see the module docs).
        let position = stripe.head.load(Ordering::Relaxed);
        stripe.head.store(position + 1, Ordering::Relaxed);
        stripe.entries[position as usize % RING].store(index.wrapping_add(1), Ordering::Release);
        let waiting = position + 1 - stripe.tail.load(Ordering::Relaxed).min(position + 1);
        waiting >= (RING / 2) as u64
    }

    /// Drains every stripe, oldest first within a stripe, calling `hit` for each
    /// buffered layer index. Must be called with the model lock held (one drainer).
    pub(crate) fn drain(&self, mut hit: impl FnMut(u32)) {
        for stripe in &self.stripes {
            let head = stripe.head.load(Ordering::Acquire);
            let tail = stripe.tail.load(Ordering::Relaxed);
            if head == tail {
                continue;
            }
            // Only the newest RING positions can still be in the ring.
            let start = tail.max(head.saturating_sub(RING as u64));
            for position in start..head {
                let value = stripe.entries[position as usize % RING].swap(0, Ordering::Acquire);
                if value != 0 {
                    hit(value - 1);
                }
            }
            stripe.tail.store(head, Ordering::Relaxed);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn drains_in_order_and_counts_exactly() {
        let buffers = ReadBuffers::default();
        for i in 0..10 {
            buffers.record(i);
        }
        let mut seen = Vec::new();
        buffers.drain(|i| seen.push(i));
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        let mut again = Vec::new();
        buffers.drain(|i| again.push(i));
        assert!(again.is_empty(), "a drained hit is not replayed");
    }

    #[test]
    fn overflow_loses_the_oldest_hits() {
        let buffers = ReadBuffers::default();
        let mut asked_to_drain = false;
        for i in 0..(RING as u32 * 3) {
            asked_to_drain |= buffers.record(i);
        }
        assert!(asked_to_drain);
        let mut seen = Vec::new();
        buffers.drain(|i| seen.push(i));
        assert_eq!(seen.len(), RING, "only the newest ring survives");
        assert_eq!(seen.first().copied(), Some(RING as u32 * 2));
    }
}
