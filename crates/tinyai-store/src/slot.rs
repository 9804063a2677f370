//! The per-layer residency state machine: one atomic word per layer.
//!
//! A slot's word packs its state and its pin count (the number of live guards).
//! Only two transitions happen without the model lock: pinning a `Cached` slot
//! (the hit path: one compare-and-swap) and unpinning (one decrement). Every
//! other transition happens while the model's state lock is held, so the
//! lock-free ones only ever race with a transition that expects zero pins, and
//! that transition is a compare-and-swap that fails if a pin arrived.
//!
//! | state | meaning | pins | leaves it (all under the lock unless marked) |
//! |---|---|---|---|
//! | `Absent` | not in memory | 0 | a loader → `Loading` |
//! | `Loading` | one thread reads it; others wait on the model's condition variable | 0 | the loader → `Cached` / `Transient` (publishing its own pin), or `Absent` on failure |
//! | `Cached` | resident, charged to the cache engine | any; **pinned lock-free** | evictor: CAS (`Cached`, 0 pins) → `Evicting`; release while pinned: → `Transient` (pins kept) |
//! | `Transient` | resident outside the engine (a bypassed miss, a read-ahead in the streaming window, a released layer still pinned) | pinned under the lock | CAS (`Transient`, 0 pins) → `Evicting`; promotion when the engine admits it → `Cached` |
//! | `Evicting` | claimed by one thread that drops its memory (pages or buffer); loads wait | 0 | the reclaimer → `Absent` |
//!
//! Unpinning is always lock-free (`fetch_sub`); the unpin that takes a
//! `Transient` slot to zero pins reports it, and its caller takes the lock to
//! drop the layer (unless it is still wanted in the streaming window).
//!
//! Invariants (checked by the loom model tests at the bottom of this file):
//! - a slot with pins is `Cached` or `Transient`, and its memory is never
//!   dropped: dropping starts only after a successful claim, which needs zero
//!   pins, and no pin can be taken from `Evicting`;
//! - a layer is never loaded while its old memory is being dropped (loads wait
//!   for `Evicting` to become `Absent`), so a reload's pages cannot be dropped
//!   by an earlier eviction;
//! - no pin is lost: every successful pin is matched by exactly one unpin.

use crate::sync::{AtomicPtr, AtomicU64, Ordering};

/// A slot's residency state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum SlotState {
    Absent = 0,
    Loading = 1,
    Cached = 2,
    Transient = 3,
    Evicting = 4,
}

const PIN_BITS: u32 = 32;
const PIN_MASK: u64 = (1 << PIN_BITS) - 1;
const STATE_SHIFT: u32 = PIN_BITS;
const STATE_MASK: u64 = 0b111 << STATE_SHIFT;
/// Set while a prefetched layer has not been used by a demand access yet.
const PREFETCHED_UNUSED: u64 = 1 << 40;
/// The most pins a slot holds; a pin beyond it is refused.
pub(crate) const MAX_PINS: u32 = u32::MAX - 1;

/// A decoded slot word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Word(u64);

impl Word {
    fn new(state: SlotState, pins: u32) -> Word {
        Word(((state as u64) << STATE_SHIFT) | u64::from(pins))
    }

    pub(crate) fn state(self) -> SlotState {
        match (self.0 & STATE_MASK) >> STATE_SHIFT {
            0 => SlotState::Absent,
            1 => SlotState::Loading,
            2 => SlotState::Cached,
            3 => SlotState::Transient,
            _ => SlotState::Evicting,
        }
    }

    pub(crate) fn pins(self) -> u32 {
        (self.0 & PIN_MASK) as u32
    }

    pub(crate) fn prefetched_unused(self) -> bool {
        self.0 & PREFETCHED_UNUSED != 0
    }

    fn with_state(self, state: SlotState) -> Word {
        Word((self.0 & !STATE_MASK) | ((state as u64) << STATE_SHIFT))
    }
}

/// What a successful pin found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pinned {
    /// The layer had been prefetched and this is its first demand use.
    pub(crate) first_use_of_prefetch: bool,
}

/// One layer's residency: the state word, the owned buffer (owned backends) and
/// the access facts reported in descriptors. Aligned to a cache line so that
/// threads hitting different layers do not share one.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Slot<B> {
    word: AtomicU64,
    /// Owned backends: the layer's buffer (from `Box::into_raw`) while `Cached` or
    /// `Transient`; null otherwise and with the mapped backend.
    buffer: AtomicPtr<B>,
    access_count: AtomicU64,
    last_accessed_ms: AtomicU64,
}

impl<B> Default for Slot<B> {
    fn default() -> Self {
        Slot {
            word: AtomicU64::new(Word::new(SlotState::Absent, 0).0),
            buffer: AtomicPtr::new(std::ptr::null_mut()),
            access_count: AtomicU64::new(0),
            last_accessed_ms: AtomicU64::new(0),
        }
    }
}

impl<B> Slot<B> {
    /// The current word (a snapshot: pins may change at any time).
    pub(crate) fn load(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    /// The hit path: pins the slot if it is `Cached`. Lock-free; one successful
    /// compare-and-swap. Returns `None` (nothing pinned) in any other state or
    /// at the pin limit; the caller then takes the slow path under the lock.
    #[inline]
    pub(crate) fn try_pin_cached(&self) -> Option<Pinned> {
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let word = Word(current);
            if word.state() != SlotState::Cached || word.pins() >= MAX_PINS {
                return None;
            }
            let next = (current + 1) & !PREFETCHED_UNUSED;
            // Acquire: pairs with the Release that published `Cached` (and the
            // buffer pointer) so the bytes are visible to this thread.
            match self.word.compare_exchange_weak(
                current,
                next,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Pinned {
                        first_use_of_prefetch: word.prefetched_unused(),
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Pins a `Cached` or `Transient` slot. Called with the model lock held (so
    /// the state cannot change except by lock-free pins and unpins). Returns
    /// `None` if the slot is in another state or at the pin limit.
    pub(crate) fn pin_locked(&self) -> Option<Pinned> {
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let word = Word(current);
            let resident = matches!(word.state(), SlotState::Cached | SlotState::Transient);
            if !resident || word.pins() >= MAX_PINS {
                return None;
            }
            let next = (current + 1) & !PREFETCHED_UNUSED;
            match self.word.compare_exchange_weak(
                current,
                next,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Pinned {
                        first_use_of_prefetch: word.prefetched_unused(),
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Drops one pin (lock-free). Returns `true` if this was the last pin of a
    /// `Transient` slot: the caller must then take the lock and decide whether
    /// to drop it.
    #[inline]
    pub(crate) fn unpin(&self) -> bool {
        // Release: every read of the layer's bytes through this pin happens
        // before the Acquire claim that lets another thread drop them.
        let previous = Word(self.word.fetch_sub(1, Ordering::Release));
        debug_assert!(previous.pins() > 0, "unpin without a pin");
        previous.pins() == 1 && previous.state() == SlotState::Transient
    }

    /// Claims a slot in state `from` with zero pins for eviction (→ `Evicting`).
    /// Called with the lock held. Fails if a pin arrived or the state differs.
    pub(crate) fn claim(&self, from: SlotState) -> bool {
        let current = self.word.load(Ordering::Relaxed);
        let word = Word(current);
        if word.state() != from || word.pins() != 0 {
            return false;
        }
        // Acquire: pairs with the Release of every earlier unpin, so all reads
        // through earlier pins happen before the memory is dropped.
        self.word
            .compare_exchange(
                current,
                Word::new(SlotState::Evicting, 0).0,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Undoes a claim that was not carried out (the engine declined after all).
    /// Called with the lock held; the slot is `Evicting` and its memory intact.
    pub(crate) fn unclaim(&self, to: SlotState, prefetched_unused: bool) {
        let flag = if prefetched_unused {
            PREFETCHED_UNUSED
        } else {
            0
        };
        self.word
            .store(Word::new(to, 0).0 | flag, Ordering::Release);
    }

    /// Changes the state of a resident slot, keeping its pins (`Cached` ↔
    /// `Transient`). Called with the lock held. Returns false (and changes
    /// nothing) if the slot is not in state `from`.
    pub(crate) fn retag(&self, from: SlotState, to: SlotState) -> bool {
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let word = Word(current);
            if word.state() != from {
                return false;
            }
            match self.word.compare_exchange_weak(
                current,
                word.with_state(to).0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// `Absent` → `Loading`. Called with the lock held.
    pub(crate) fn start_loading(&self) -> bool {
        self.word
            .compare_exchange(
                Word::new(SlotState::Absent, 0).0,
                Word::new(SlotState::Loading, 0).0,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// `Loading` → `to` (`Cached` or `Transient`) with `pins` pins (the loader's own
    /// pin if it was a demand load), publishing `buffer`. Called with the lock held
    /// by the thread that started the load; no pin can exist before this.
    pub(crate) fn publish(
        &self,
        to: SlotState,
        pins: u32,
        buffer: Option<Box<B>>,
        prefetched_unused: bool,
    ) {
        debug_assert_eq!(self.load().state(), SlotState::Loading);
        let pointer = buffer.map_or(std::ptr::null_mut(), Box::into_raw);
        self.buffer.store(pointer, Ordering::Relaxed);
        let flag = if prefetched_unused {
            PREFETCHED_UNUSED
        } else {
            0
        };
        // Release: the buffer pointer and its contents, and the pages populated by
        // the loader, happen before any pin's Acquire that sees this state.
        self.word
            .store(Word::new(to, pins).0 | flag, Ordering::Release);
    }

    /// `Loading` (failed) or `Evicting` (memory dropped) → `Absent`. Called with
    /// the lock held by the thread that owns the slot in that state. Returns the
    /// buffer to free, if any (a failed load has none).
    pub(crate) fn set_absent(&self) -> Option<Box<B>> {
        let state = self.load().state();
        debug_assert!(matches!(state, SlotState::Loading | SlotState::Evicting));
        let buffer = self.take_buffer();
        self.word
            .store(Word::new(SlotState::Absent, 0).0, Ordering::Release);
        buffer
    }

    /// For an `Evicting` slot with an owned buffer: takes the buffer and marks the
    /// slot `Absent`. With no buffer (mapped backend) leaves it `Evicting` and
    /// returns `None`. Called with the lock held by the claiming thread.
    pub(crate) fn set_absent_if_owned(&self) -> Option<Box<B>> {
        debug_assert_eq!(self.load().state(), SlotState::Evicting);
        let buffer = self.take_buffer()?;
        self.word
            .store(Word::new(SlotState::Absent, 0).0, Ordering::Release);
        Some(buffer)
    }

    /// Takes the buffer of a slot this thread owns exclusively (`Evicting`, or
    /// `Loading` before publishing).
    pub(crate) fn take_buffer(&self) -> Option<Box<B>> {
        let pointer = self.buffer.swap(std::ptr::null_mut(), Ordering::Acquire);
        if pointer.is_null() {
            None
        } else {
            // SAFETY: a non-null pointer in `buffer` always comes from
            // `Box::into_raw` in `publish`, and the swap above removed it, so no
            // other `take_buffer` can return it. The caller owns the slot
            // exclusively (`Evicting` after a successful claim: zero pins, and
            // no pin can be taken from `Evicting`), so no guard still borrows it.
            Some(unsafe { Box::from_raw(pointer) })
        }
    }

    /// The buffer of a pinned slot (null with the mapped backend).
    ///
    /// The returned pointer stays valid while the caller's pin lives: the buffer
    /// is only freed after a claim, which needs zero pins.
    pub(crate) fn buffer(&self) -> *const B {
        self.buffer.load(Ordering::Acquire)
    }

    /// Records a demand access for the descriptor (lock-free).
    #[inline]
    pub(crate) fn record_access(&self, now_ms: u64) {
        self.access_count.fetch_add(1, Ordering::Relaxed);
        if self.last_accessed_ms.load(Ordering::Relaxed) != now_ms {
            self.last_accessed_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    /// Demand accesses recorded so far.
    pub(crate) fn access_count(&self) -> u64 {
        self.access_count.load(Ordering::Relaxed)
    }

    /// Milliseconds since the Unix epoch of the last demand access (coarse).
    pub(crate) fn last_accessed_ms(&self) -> u64 {
        self.last_accessed_ms.load(Ordering::Relaxed)
    }
}

impl<B> Drop for Slot<B> {
    fn drop(&mut self) {
        drop(self.take_buffer());
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn word_round_trips_state_and_pins() {
        for state in [
            SlotState::Absent,
            SlotState::Loading,
            SlotState::Cached,
            SlotState::Transient,
            SlotState::Evicting,
        ] {
            for pins in [0, 1, 7, MAX_PINS] {
                let word = Word::new(state, pins);
                assert_eq!(word.state(), state);
                assert_eq!(word.pins(), pins);
                assert!(!word.prefetched_unused());
            }
        }
    }

    #[test]
    fn only_cached_slots_pin_lock_free() {
        let slot: Slot<u8> = Slot::default();
        assert!(slot.try_pin_cached().is_none());
        assert!(slot.start_loading());
        assert!(slot.try_pin_cached().is_none());
        slot.publish(SlotState::Transient, 0, Some(Box::new(7)), true);
        assert!(
            slot.try_pin_cached().is_none(),
            "transient pins go through the lock"
        );
        let pinned = slot.pin_locked().expect("transient pins under the lock");
        assert!(pinned.first_use_of_prefetch);
        assert!(slot.unpin(), "last unpin of a transient slot is reported");
        assert!(slot.retag(SlotState::Transient, SlotState::Cached));
        let pinned = slot.try_pin_cached().expect("cached pins lock-free");
        assert!(
            !pinned.first_use_of_prefetch,
            "the flag was cleared by the first pin"
        );
        assert!(
            !slot.claim(SlotState::Cached),
            "a pinned slot cannot be claimed"
        );
        assert!(!slot.unpin(), "last unpin of a cached slot needs nothing");
        assert!(slot.claim(SlotState::Cached));
        assert!(slot.try_pin_cached().is_none());
        assert!(slot.pin_locked().is_none());
        assert!(!slot.start_loading(), "no load while evicting");
        assert_eq!(slot.set_absent().as_deref(), Some(&7));
        assert!(slot.start_loading());
    }

    #[test]
    fn pin_limit_is_refused_not_wrapped() {
        let slot: Slot<u8> = Slot::default();
        assert!(slot.start_loading());
        slot.publish(SlotState::Cached, MAX_PINS, None, false);
        assert!(slot.try_pin_cached().is_none());
        assert!(slot.pin_locked().is_none());
        assert_eq!(slot.load().pins(), MAX_PINS);
    }
}

/// loom model tests of the state machine: every interleaving of two or three
/// threads doing get / pin / unpin / evict / release / reclaim / reload on
/// slots that share a one-layer budget. Run by `cargo xtask loom`
/// (`RUSTFLAGS="--cfg loom" cargo test -p tinyai-store --lib --release loom`).
///
/// The model uses the real [`Slot`] and the same protocol as the store: the
/// lock-free pin of `Cached`, pins of `Transient` and every other transition
/// under one mutex, claims before memory is dropped, loads that wait while a
/// slot is `Evicting`. A layer's memory is a pair of `loom` cells per slot
/// ("pages"), written by the loader, read and marked by pinned users, and
/// zeroed by whoever drops it, so that loom reports any drop that can race
/// with a pinned access, and asserts check the bytes a pinned user sees.
#[cfg(all(test, loom))]
mod loom_tests {
    use loom::cell::UnsafeCell;
    use loom::sync::{Arc, Condvar, Mutex};

    use super::*;

    const LAYERS: usize = 2;
    /// Cached layers that fit the budget.
    const BUDGET: usize = 1;

    /// The bytes of one layer: one cell per thread (a marker it writes while it
    /// holds a pin) plus the layer's content value.
    struct Pages {
        content: UnsafeCell<u64>,
        markers: [UnsafeCell<u64>; 3],
    }

    struct Budget {
        cached: usize,
    }

    struct Store {
        slots: [Slot<()>; LAYERS],
        pages: [Pages; LAYERS],
        lock: Mutex<Budget>,
        changed: Condvar,
    }

    fn value_of(layer: usize) -> u64 {
        0xA0 + layer as u64
    }

    impl Store {
        fn new() -> Store {
            Store {
                slots: std::array::from_fn(|_| Slot::default()),
                pages: std::array::from_fn(|_| Pages {
                    content: UnsafeCell::new(0),
                    markers: std::array::from_fn(|_| UnsafeCell::new(0)),
                }),
                lock: Mutex::new(Budget { cached: 0 }),
                changed: Condvar::new(),
            }
        }

        /// Drops a claimed (`Evicting`) layer's pages, then marks it `Absent`.
        /// Called without the lock, like the reclaim thread.
        fn reclaim(&self, layer: usize) {
            self.pages[layer].content.with_mut(|p| unsafe { *p = 0 });
            for marker in &self.pages[layer].markers {
                marker.with_mut(|p| unsafe { *p = 0 });
            }
            let _budget = self.lock.lock().unwrap();
            assert!(self.slots[layer].set_absent().is_none());
            self.changed.notify_all();
        }

        /// get(layer): a pin, by the lock-free path if it can.
        fn pin(&self, layer: usize) {
            let slot = &self.slots[layer];
            if slot.try_pin_cached().is_some() {
                return;
            }
            let mut budget = self.lock.lock().unwrap();
            loop {
                match slot.load().state() {
                    SlotState::Cached | SlotState::Transient => {
                        slot.pin_locked().expect("pin under the lock");
                        return;
                    }
                    SlotState::Loading | SlotState::Evicting => {
                        budget = self.changed.wait(budget).unwrap();
                    }
                    SlotState::Absent => break,
                }
            }
            // Miss: make room by claiming an unpinned cached layer, or bypass.
            let mut victim = None;
            let mut to = SlotState::Cached;
            if budget.cached >= BUDGET {
                victim = (0..LAYERS)
                    .find(|&other| other != layer && self.slots[other].claim(SlotState::Cached));
                match victim {
                    Some(_) => budget.cached -= 1,
                    None => to = SlotState::Transient,
                }
            }
            if to == SlotState::Cached {
                budget.cached += 1;
            }
            assert!(budget.cached <= BUDGET, "charged above the budget");
            assert!(slot.start_loading());
            drop(budget);
            if let Some(victim) = victim {
                self.reclaim(victim);
            }
            self.pages[layer]
                .content
                .with_mut(|p| unsafe { *p = value_of(layer) });
            let _budget = self.lock.lock().unwrap();
            slot.publish(to, 1, None, false);
            self.changed.notify_all();
        }

        /// Uses a pinned layer: checks its bytes, writes and re-reads a marker.
        fn use_pinned(&self, layer: usize, thread: usize) {
            let pages = &self.pages[layer];
            assert_eq!(pages.content.with(|p| unsafe { *p }), value_of(layer));
            pages.markers[thread].with_mut(|p| unsafe { *p = 1 + thread as u64 });
            assert_eq!(
                pages.markers[thread].with(|p| unsafe { *p }),
                1 + thread as u64,
                "a pinned layer's pages were dropped"
            );
            pages.markers[thread].with_mut(|p| unsafe { *p = 0 });
        }

        fn unpin(&self, layer: usize) {
            let slot = &self.slots[layer];
            if slot.unpin() {
                let budget = self.lock.lock().unwrap();
                let claimed = slot.claim(SlotState::Transient);
                drop(budget);
                if claimed {
                    self.reclaim(layer);
                }
            }
        }

        /// release(layer): out of the cache now; memory dropped now if unpinned,
        /// else when the last pin goes.
        fn release(&self, layer: usize) {
            let slot = &self.slots[layer];
            let mut budget = self.lock.lock().unwrap();
            if slot.load().state() != SlotState::Cached {
                return;
            }
            budget.cached -= 1;
            if slot.claim(SlotState::Cached) {
                drop(budget);
                self.reclaim(layer);
            } else {
                assert!(slot.retag(SlotState::Cached, SlotState::Transient));
                let claimed = slot.claim(SlotState::Transient);
                drop(budget);
                if claimed {
                    self.reclaim(layer);
                }
            }
        }

        fn get_use_drop(&self, layer: usize, thread: usize) {
            self.pin(layer);
            self.use_pinned(layer, thread);
            self.unpin(layer);
        }

        fn check_quiescent(&self) {
            for slot in &self.slots {
                assert_eq!(slot.load().pins(), 0, "a pin was lost");
                assert!(matches!(
                    slot.load().state(),
                    SlotState::Absent | SlotState::Cached
                ));
            }
            assert!(self.lock.lock().unwrap().cached <= BUDGET);
        }
    }

    fn model(threads: Vec<Box<dyn Fn(&Store) + Send + Sync>>) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        let threads = std::sync::Arc::new(threads);
        builder.check(move || {
            let store = Arc::new(Store::new());
            let handles: Vec<_> = (0..threads.len())
                .map(|t| {
                    let store = Arc::clone(&store);
                    let threads = std::sync::Arc::clone(&threads);
                    loom::thread::spawn(move || threads[t](&store))
                })
                .collect();
            for handle in handles {
                handle.join().unwrap();
            }
            store.check_quiescent();
        });
    }

    #[test]
    fn loom_two_getters_of_one_layer_share_its_pages() {
        model(vec![
            Box::new(|s: &Store| s.get_use_drop(0, 0)),
            Box::new(|s: &Store| s.get_use_drop(0, 1)),
        ]);
    }

    #[test]
    fn loom_eviction_never_drops_a_pinned_layer() {
        // Thread 0 uses layer 0 twice (a hit the second time); thread 1's miss of
        // layer 1 needs layer 0's place in the one-layer budget.
        model(vec![
            Box::new(|s: &Store| {
                s.get_use_drop(0, 0);
                s.get_use_drop(0, 0);
            }),
            Box::new(|s: &Store| s.get_use_drop(1, 1)),
        ]);
    }

    #[test]
    fn loom_release_while_pinned_and_reload_after_reclaim() {
        model(vec![
            Box::new(|s: &Store| {
                s.pin(0);
                s.use_pinned(0, 0);
                s.use_pinned(0, 0);
                s.unpin(0);
            }),
            Box::new(|s: &Store| {
                s.release(0);
                s.get_use_drop(0, 1);
            }),
        ]);
    }

    #[test]
    fn loom_three_threads_contend_for_a_one_layer_budget() {
        model(vec![
            Box::new(|s: &Store| s.get_use_drop(0, 0)),
            Box::new(|s: &Store| s.get_use_drop(1, 1)),
            Box::new(|s: &Store| {
                s.release(0);
                s.get_use_drop(0, 2);
            }),
        ]);
    }
}
