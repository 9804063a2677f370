//! Hit bookkeeping off the hit path: striped, lossy read buffers.
//!
//! A hit of a resident layer must not take the model lock, but the cache
//! engine still needs to hear about it (its recency and reuse history). As in
//! Caffeine and moka, each thread appends the layer id to one of a few striped
//! ring buffers (one atomic add and one store, on a cache line that thread has
//! to itself while there are no more threads than stripes), and whoever next
//! holds the model lock — a miss, a prefetch, or a hitting thread whose buffer
//! is half full and that wins a `try_lock` — drains every buffer into the
//! engine in order. When the whole model fits the budget no eviction can ever
//! happen, so hits are not recorded at all.
//!
//! **Lossy**: a hit appended while its ring is full (more than [`RING`] hits
//! on one stripe since the last drain, e.g. while other threads keep the lock
//! busy) overwrites an older, undrained one, and a slot being written while a
//! drain passes it is picked up by a later drain or lost. A lost hit only
//! makes the engine's history of that layer slightly older; it never affects
//! correctness (pins, budget, bytes), nor the hit count in [`crate::Stats`],
//! which the slots count exactly. The `tinyai-cache` example `hit_ratios`
//! (its `adaptive_lossy` rows: the lock busy for 90% of drain attempts) shows
//! by simulation that this moves no hit ratio by more than 0.002.

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
    STRIPE
        .try_with(|stripe| {
            let mut value = stripe.get();
            if value == usize::MAX {
                value = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % STRIPES;
                stripe.set(value);
            }
            value
        })
        // During thread teardown: any stripe is correct, only less private.
        .unwrap_or(0)
}

impl ReadBuffers {
    /// Appends a hit of layer `index` (lock-free). Returns true when this stripe
    /// has half a ring or more waiting, so the caller should try to drain.
    #[inline]
    pub(crate) fn record(&self, index: u32) -> DrainHint {
        let stripe = &self.stripes[my_stripe()];
        // A read-modify-write even though a stripe usually has one thread: with
        // more threads than stripes, plain stores would lose appends (by
        // simulation that moves hit ratios by up to 0.09). This path only runs
        // when the policy needs hits (the model does not fit the budget).
        let position = stripe.head.fetch_add(1, Ordering::Relaxed);
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
