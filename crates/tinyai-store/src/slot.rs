//! The per-layer residency state machine: one state word per layer, and pin
//! counts striped per thread.
//!
//! A layer's *state word* holds its residency state and is written only under
//! the model lock (plus one lock-free flag clear). Its *pins* (the number of
//! live guards) are counted per stripe: each thread pins and unpins on its own
//! stripe's counter for the layer, a cache line no other thread writes, so
//! threads hitting the same layers do not bounce lines between cores. The same
//! counter counts demand accesses (its high bits), so a hit costs one
//! read-modify-write on a line the thread owns plus a read of the shared word.
//!
//! | state | meaning | pins | leaves it (all under the lock) |
//! |---|---|---|---|
//! | `Absent` | not in memory | 0 | a loader → `Loading` |
//! | `Loading` | one thread reads it; others wait on the model's condition variable | 0 | the loader → `Cached` / `Transient` (with its own pin for a demand load), or `Absent` on failure |
//! | `Cached` | resident, charged to the cache engine | any; **pinned lock-free** | a claim (0 pins) → `Evicting`; a release while pinned → `Transient` |
//! | `Transient` | resident outside the engine (a bypassed miss, a read-ahead in the streaming window, a released layer still pinned) | any; pinned under the lock | a claim (0 pins) → `Evicting`; promotion when the engine admits it → `Cached` |
//! | `Evicting` | claimed by one thread that drops its memory (pages or buffer); loads wait | 0 | the reclaimer → `Absent`; a claim that found a pin → back |
//!
//! **Pin and claim** are a Dekker handshake. A pin increments its stripe's
//! counter, then reads the state; a claim moves the state to `Evicting`, then
//! sums every stripe's pins, and moves it back if any is non-zero. Both sides
//! order their write before their read with a sequentially consistent
//! operation, so at least one of them sees the other: either the pin sees
//! `Evicting` (and backs off to the lock) or the claim sees the pin (and
//! fails). An **unpin** decrements, then reads the state: a `Transient` layer
//! (or one being released) sends the unpinning thread to the lock to try a
//! claim; whichever unpin or release sees zero pins drops it.
//!
//! Invariants (checked by the loom model tests at the bottom of this file):
//! - a layer with pins is `Cached` or `Transient`, and its memory is never
//!   dropped: dropping starts only after a successful claim, which sees zero
//!   pins, and no pin can be taken from `Evicting`;
//! - a layer is never loaded while its old memory is being dropped (loads wait
//!   for `Evicting` to become `Absent`), so a reload's pages cannot be dropped
//!   by an earlier eviction;
//! - no pin is lost: every successful pin is matched by exactly one unpin.
//!
//! **Soft pins** (the C library's per-thread windows of returned layers) are
//! counted in their own field of the same stripe counters. They protect
//! nothing in memory (only the mapped backend uses them, whose bytes stay
//! addressable after eviction): they rank victims. Ordinary policy decisions
//! never claim a soft-pinned layer; a claim made to stay within the budget
//! may (see `crate::room`). A soft pin and a claim that refuses soft-pinned
//! layers form the same handshake as a pin and a claim.

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

const STATE_MASK: u64 = 0b111;
/// Set while a prefetched layer has not been used by a demand access yet.
const PREFETCHED_UNUSED: u64 = 1 << 3;

/// How firmly a layer is soft-pinned (see the module doc), weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kept {
    No,
    Weak,
    Strong,
}

// A stripe counter: bits 0..12 pins, 12..24 soft pins, 24..64 demand accesses.
const PIN_ONE: u64 = 1;
const PIN_MASK: u64 = (1 << 12) - 1;
const SOFT_SHIFT: u32 = 12;
const SOFT_ONE: u64 = 1 << SOFT_SHIFT;
const SOFT_MASK: u64 = PIN_MASK << SOFT_SHIFT;
const ACCESS_SHIFT: u32 = 24;
const ACCESS_ONE: u64 = 1 << ACCESS_SHIFT;
/// The most pins one stripe holds on one layer; a pin beyond it is refused.
/// Half the field: a refused pin is added then taken back, so the field must
/// have room for every thread that may be adding at once without carrying
/// into the next field.
pub(crate) const MAX_PINS: u64 = PIN_MASK >> 1;
/// The same limit for soft pins.
const MAX_SOFT: u64 = MAX_PINS;
/// Counters per padding line (128 bytes), so stripes never share a line.
const LINE: usize = 16;

/// A decoded state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Word(u64);

impl Word {
    fn new(state: SlotState, prefetched_unused: bool) -> Word {
        let flag = if prefetched_unused {
            PREFETCHED_UNUSED
        } else {
            0
        };
        Word(state as u64 | flag)
    }

    pub(crate) fn state(self) -> SlotState {
        match self.0 & STATE_MASK {
            0 => SlotState::Absent,
            1 => SlotState::Loading,
            2 => SlotState::Cached,
            3 => SlotState::Transient,
            _ => SlotState::Evicting,
        }
    }

    pub(crate) fn prefetched_unused(self) -> bool {
        self.0 & PREFETCHED_UNUSED != 0
    }
}

/// What a successful pin found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pinned {
    /// The layer had been prefetched and this is its first demand use.
    pub(crate) first_use_of_prefetch: bool,
}

/// Orders a write before a following read of another location (the Dekker
/// handshake between pins and claims). The accesses around it are `SeqCst`,
/// which already gives that order; loom treats `SeqCst` accesses as
/// acquire/release only, so under loom an explicit `SeqCst` fence states it.
#[inline(always)]
fn handshake() {
    #[cfg(loom)]
    crate::sync::fence(Ordering::SeqCst);
}

/// One layer's state word, owned buffer and last-access time.
#[derive(Debug)]
struct Slot<B> {
    word: AtomicU64,
    /// Owned backends: the layer's buffer (from `Box::into_raw`) while `Cached` or
    /// `Transient`; null otherwise and with the mapped backend.
    buffer: AtomicPtr<B>,
    /// Milliseconds since the Unix epoch of the last demand access (coarse).
    last_accessed_ms: AtomicU64,
}

/// Every layer's slot and the striped pin counters.
#[derive(Debug)]
pub(crate) struct Slots<B> {
    slots: Box<[Slot<B>]>,
    /// `stripes` rows of `stride` counters; row `s`, column `i`: stripe `s`'s
    /// pins and accesses of layer `i`. Rows are padded apart by a line.
    counters: Box<[AtomicU64]>,
    /// A power of two.
    stripes: usize,
    stride: usize,
}

/// One layer of [`Slots`].
#[derive(Debug)]
pub(crate) struct SlotRef<'a, B> {
    slots: &'a Slots<B>,
    index: usize,
}

impl<B> Clone for SlotRef<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B> Copy for SlotRef<'_, B> {}

impl<B> Slots<B> {
    /// `layers` absent slots, with pins counted on `stripes` stripes (rounded up
    /// to a power of two).
    pub(crate) fn new(layers: usize, stripes: usize) -> Slots<B> {
        let stripes = stripes.max(1).next_power_of_two();
        let stride = layers.next_multiple_of(LINE) + LINE;
        Slots {
            slots: (0..layers)
                .map(|_| Slot {
                    word: AtomicU64::new(Word::new(SlotState::Absent, false).0),
                    buffer: AtomicPtr::new(std::ptr::null_mut()),
                    last_accessed_ms: AtomicU64::new(0),
                })
                .collect(),
            counters: (0..stripes * stride).map(|_| AtomicU64::new(0)).collect(),
            stripes,
            stride,
        }
    }

    /// Layer `index`, if it exists.
    #[inline]
    pub(crate) fn get(&self, index: usize) -> Option<SlotRef<'_, B>> {
        (index < self.slots.len()).then_some(SlotRef { slots: self, index })
    }

    /// Layer `index` (panics if out of range: callers pass validated indices).
    #[inline]
    pub(crate) fn at(&self, index: usize) -> SlotRef<'_, B> {
        assert!(index < self.slots.len(), "slot index out of range");
        SlotRef { slots: self, index }
    }

    /// Demand accesses of every layer (for the hit count).
    pub(crate) fn total_accesses(&self) -> u64 {
        self.counters
            .iter()
            .map(|counter| counter.load(Ordering::Relaxed) >> ACCESS_SHIFT)
            .sum()
    }
}

impl<B> Drop for Slots<B> {
    fn drop(&mut self) {
        for index in 0..self.slots.len() {
            drop(self.at(index).take_buffer());
        }
    }
}

impl<'a, B> SlotRef<'a, B> {
    fn slot(self) -> &'a Slot<B> {
        &self.slots.slots[self.index]
    }

    fn counter(self, stripe: usize) -> &'a AtomicU64 {
        let row = stripe & (self.slots.stripes - 1);
        &self.slots.counters[row * self.slots.stride + self.index]
    }

    /// The current state word (a snapshot).
    #[inline]
    pub(crate) fn load(self) -> Word {
        Word(self.slot().word.load(Ordering::Acquire))
    }

    /// Pins over all stripes (a snapshot; exact while the lock keeps claims out
    /// and no other thread pins).
    pub(crate) fn pins(self) -> u64 {
        (0..self.slots.stripes)
            .map(|stripe| self.counter(stripe).load(Ordering::SeqCst) & PIN_MASK)
            .sum()
    }

    /// Soft pins over all stripes (a snapshot; `SeqCst`, the claim side of
    /// the handshake in [`try_keep_cached`](Self::try_keep_cached)).
    pub(crate) fn soft_pins(self) -> u64 {
        (0..self.slots.stripes)
            .map(|stripe| (self.counter(stripe).load(Ordering::SeqCst) & SOFT_MASK) >> SOFT_SHIFT)
            .sum()
    }

    /// Adds a soft pin on `stripe` (a layer this thread already pins hard);
    /// `false` at the limit.
    pub(crate) fn keep(self, stripe: usize) -> bool {
        let counter = self.counter(stripe);
        let previous = counter.fetch_add(SOFT_ONE, Ordering::SeqCst);
        if (previous & SOFT_MASK) >> SOFT_SHIFT >= MAX_SOFT {
            counter.fetch_sub(SOFT_ONE, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Drops a soft pin taken on `stripe`. Returns `true` if the layer is
    /// `Transient` (the caller then drops it if nothing holds it any more).
    #[inline]
    pub(crate) fn unkeep(self, stripe: usize) -> bool {
        let previous = self.counter(stripe).fetch_sub(SOFT_ONE, Ordering::SeqCst);
        debug_assert!(previous & SOFT_MASK != 0, "unkeep without a soft pin");
        Word(self.slot().word.load(Ordering::SeqCst)).state() == SlotState::Transient
    }

    /// [`claim`](Self::claim), refused also when `soft_ok` rejects the layer's
    /// soft-pin count, read after the claim: a soft pin taken while its getter
    /// held a hard pin is ordered before that pin's release, and a soft pin
    /// taken on the fast path before its state read (the handshake of
    /// [`try_keep_cached`](Self::try_keep_cached)), so a claim never misses one.
    pub(crate) fn claim_if(self, from: SlotState, soft_ok: impl FnOnce(u64) -> bool) -> bool {
        if !self.claim(from) {
            return false;
        }
        if !soft_ok(self.soft_pins()) {
            self.restore(from);
            return false;
        }
        true
    }

    /// Demand accesses of this layer.
    pub(crate) fn access_count(self) -> u64 {
        (0..self.slots.stripes)
            .map(|stripe| self.counter(stripe).load(Ordering::Relaxed) >> ACCESS_SHIFT)
            .sum()
    }

    /// Takes one pin on `stripe`, counting one access with it unless `counted`
    /// already (a miss counts its access before loading); `None` at the limit.
    #[inline]
    fn add_pin(self, stripe: usize, counted: bool) -> Option<()> {
        let counter = self.counter(stripe);
        let step = if counted {
            PIN_ONE
        } else {
            PIN_ONE + ACCESS_ONE
        };
        let previous = counter.fetch_add(step, Ordering::SeqCst);
        if previous & PIN_MASK >= MAX_PINS {
            counter.fetch_sub(step, Ordering::SeqCst);
            return None;
        }
        Some(())
    }

    /// Clears the prefetch flag if set (once per prefetched layer), reporting it.
    fn take_prefetch_flag(self, word: Word) -> Pinned {
        let first_use_of_prefetch = word.prefetched_unused()
            && self
                .slot()
                .word
                .fetch_and(!PREFETCHED_UNUSED, Ordering::Relaxed)
                & PREFETCHED_UNUSED
                != 0;
        Pinned {
            first_use_of_prefetch,
        }
    }

    /// The hit path: pins the layer on `stripe` if it is `Cached`, counting a
    /// demand access. Lock-free: one read-modify-write on the stripe's own
    /// counter and a read of the state word. Returns `None` (nothing pinned, no
    /// access counted) in any other state or at the pin limit; the caller then
    /// takes the slow path under the lock.
    #[inline(always)]
    pub(crate) fn try_pin_cached(self, stripe: usize) -> Option<Pinned> {
        self.add_pin(stripe, false)?;
        handshake();
        // SeqCst (so Acquire): pairs with the Release that published `Cached`
        // (and the buffer pointer) so the bytes are visible to this thread, and
        // with a claim's SeqCst state change (the handshake).
        let word = Word(self.slot().word.load(Ordering::SeqCst));
        if word.state() == SlotState::Cached {
            return Some(self.take_prefetch_flag(word));
        }
        self.counter(stripe)
            .fetch_sub(PIN_ONE + ACCESS_ONE, Ordering::SeqCst);
        None
    }

    /// The soft-pin fast path: adds a soft pin and a demand access on
    /// `stripe` (one read-modify-write) and keeps them if the layer is
    /// `Cached`; otherwise takes them back and returns `None`. No hard pin.
    ///
    /// The soft pin and a claim form the same handshake as a pin and a claim
    /// (write, then read the other side, both `SeqCst`): a claim that refuses
    /// soft-pinned layers either sees this one, or this read sees `Evicting`.
    /// A claim allowed to take soft-pinned layers (the budget needs them) may
    /// proceed: the layer's bytes stay addressable (mapped backend only).
    #[inline(always)]
    pub(crate) fn try_keep_cached(self, stripe: usize) -> Option<Pinned> {
        let counter = self.counter(stripe);
        let step = SOFT_ONE + ACCESS_ONE;
        let previous = counter.fetch_add(step, Ordering::SeqCst);
        handshake();
        let word = Word(self.slot().word.load(Ordering::SeqCst));
        if word.state() == SlotState::Cached && (previous & SOFT_MASK) >> SOFT_SHIFT < MAX_SOFT {
            return Some(self.take_prefetch_flag(word));
        }
        counter.fetch_sub(step, Ordering::SeqCst);
        None
    }

    /// Pins a `Cached` or `Transient` layer on `stripe` for a demand access.
    /// Called with the model lock held, so no claim runs meanwhile. Returns
    /// `None` in another state or at the pin limit.
    pub(crate) fn pin_locked(self, stripe: usize) -> Option<Pinned> {
        let word = self.load();
        if !matches!(word.state(), SlotState::Cached | SlotState::Transient) {
            return None;
        }
        self.add_pin(stripe, false)?;
        Some(self.take_prefetch_flag(word))
    }

    /// Counts a demand access that did not pin through the fast path (a miss:
    /// the loader publishes its pin separately).
    pub(crate) fn count_access(self, stripe: usize) {
        self.counter(stripe)
            .fetch_add(ACCESS_ONE, Ordering::Relaxed);
    }

    /// Drops one pin taken on `stripe` (lock-free). Returns `true` if the layer
    /// is `Transient` (or in the middle of a release): the caller must then
    /// take the lock and try to claim it.
    #[inline(always)]
    pub(crate) fn unpin(self, stripe: usize) -> bool {
        // SeqCst (so Release): every read of the layer's bytes through this pin
        // happens before the claim that lets another thread drop them; and the
        // handshake with a release that retags the layer `Transient`.
        let previous = self.counter(stripe).fetch_sub(PIN_ONE, Ordering::SeqCst);
        debug_assert!(previous & PIN_MASK > 0, "unpin without a pin");
        handshake();
        let state = Word(self.slot().word.load(Ordering::SeqCst)).state();
        matches!(state, SlotState::Transient | SlotState::Evicting)
    }

    /// Claims a layer in state `from` with no pins for eviction (→ `Evicting`,
    /// keeping the prefetch flag so that the eviction can count a wasted
    /// prefetch). Called with the lock held. Fails, changing nothing, if the
    /// state differs or a pin exists or arrives.
    pub(crate) fn claim(self, from: SlotState) -> bool {
        let slot = self.slot();
        let current = slot.word.load(Ordering::Relaxed);
        if Word(current).state() != from {
            return false;
        }
        let evicting = (current & !STATE_MASK) | SlotState::Evicting as u64;
        // Under the lock only this thread changes the state; the one lock-free
        // change (clearing the prefetch flag) makes the exchange retry.
        if slot
            .word
            .compare_exchange(current, evicting, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return self.claim(from);
        }
        handshake();
        // SeqCst (so Acquire): pairs with every unpin's Release, so all reads
        // through earlier pins happen before the memory is dropped.
        if self.pins() == 0 {
            return true;
        }
        self.restore(from);
        false
    }

    /// Moves an `Evicting` layer back to `to`, keeping its flag.
    fn restore(self, to: SlotState) {
        let slot = self.slot();
        let mut current = slot.word.load(Ordering::Relaxed);
        loop {
            debug_assert_eq!(Word(current).state(), SlotState::Evicting);
            let next = (current & !STATE_MASK) | to as u64;
            match slot.word.compare_exchange_weak(
                current,
                next,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Undoes a claim that was not carried out (the engine declined after all).
    /// Called with the lock held; the layer is `Evicting` and its memory intact.
    pub(crate) fn unclaim(self, to: SlotState) {
        self.restore(to);
    }

    /// Changes the state of a resident layer, keeping its pins (`Cached` ↔
    /// `Transient`). Called with the lock held. Returns false (and changes
    /// nothing) if the layer is not in state `from`.
    pub(crate) fn retag(self, from: SlotState, to: SlotState) -> bool {
        let slot = self.slot();
        let mut current = slot.word.load(Ordering::Relaxed);
        loop {
            if Word(current).state() != from {
                return false;
            }
            let next = (current & !STATE_MASK) | to as u64;
            match slot.word.compare_exchange_weak(
                current,
                next,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// `Absent` → `Loading`. Called with the lock held.
    pub(crate) fn start_loading(self) -> bool {
        self.slot()
            .word
            .compare_exchange(
                Word::new(SlotState::Absent, false).0,
                Word::new(SlotState::Loading, false).0,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// `Loading` → `to` (`Cached` or `Transient`), publishing `buffer`, with the
    /// loader's own pin on `pin` (a demand load, whose access was counted by
    /// [`count_access`](SlotRef::count_access)). Called with the lock held by
    /// the thread that started the load; no other pin can exist before this.
    pub(crate) fn publish(
        self,
        to: SlotState,
        pin: Option<usize>,
        buffer: Option<Box<B>>,
        prefetched_unused: bool,
    ) -> Option<()> {
        debug_assert_eq!(self.load().state(), SlotState::Loading);
        let pointer = buffer.map_or(std::ptr::null_mut(), Box::into_raw);
        let slot = self.slot();
        slot.buffer.store(pointer, Ordering::Relaxed);
        let pinned = match pin {
            Some(stripe) => self.add_pin(stripe, true),
            None => Some(()),
        };
        // Release: the buffer pointer and its contents, and the pages populated by
        // the loader, happen before any pin's Acquire that sees this state.
        slot.word
            .store(Word::new(to, prefetched_unused).0, Ordering::SeqCst);
        pinned
    }

    /// `Loading` (failed) or `Evicting` (memory dropped) → `Absent`. Called with
    /// the lock held by the thread that owns the layer in that state. Returns the
    /// buffer to free, if any (a failed load has none).
    pub(crate) fn set_absent(self) -> Option<Box<B>> {
        debug_assert!(matches!(
            self.load().state(),
            SlotState::Loading | SlotState::Evicting
        ));
        let buffer = self.take_buffer();
        self.slot()
            .word
            .store(Word::new(SlotState::Absent, false).0, Ordering::Release);
        buffer
    }

    /// For an `Evicting` layer with an owned buffer: takes the buffer and marks
    /// it `Absent`. With no buffer (mapped backend) leaves it `Evicting` and
    /// returns `None`. Called with the lock held by the claiming thread.
    pub(crate) fn set_absent_if_owned(self) -> Option<Box<B>> {
        debug_assert_eq!(self.load().state(), SlotState::Evicting);
        let buffer = self.take_buffer()?;
        self.slot()
            .word
            .store(Word::new(SlotState::Absent, false).0, Ordering::Release);
        Some(buffer)
    }

    /// Takes the buffer of a layer this thread owns exclusively (`Evicting` after
    /// a claim, or the slots being dropped).
    pub(crate) fn take_buffer(self) -> Option<Box<B>> {
        let pointer = self
            .slot()
            .buffer
            .swap(std::ptr::null_mut(), Ordering::Acquire);
        if pointer.is_null() {
            None
        } else {
            // SAFETY: a non-null pointer in `buffer` always comes from
            // `Box::into_raw` in `publish`, and the swap above removed it, so no
            // other `take_buffer` can return it. The caller owns the layer
            // exclusively (`Evicting` after a successful claim: zero pins, and
            // no pin can be taken from `Evicting`; or `Slots` is being dropped),
            // so no guard still borrows it.
            Some(unsafe { Box::from_raw(pointer) })
        }
    }

    /// The buffer of a pinned layer (null with the mapped backend).
    ///
    /// The returned pointer stays valid while the caller's pin lives: the buffer
    /// is only freed after a claim, which needs zero pins.
    #[inline]
    pub(crate) fn buffer(self) -> *const B {
        self.slot().buffer.load(Ordering::Acquire)
    }

    /// Notes the time of a demand access for the descriptor (a load and, at most
    /// once per millisecond, a store; no read-modify-write).
    #[inline]
    pub(crate) fn touch(self, now_ms: u64) {
        let last = &self.slot().last_accessed_ms;
        if last.load(Ordering::Relaxed) != now_ms {
            last.store(now_ms, Ordering::Relaxed);
        }
    }

    /// Milliseconds since the Unix epoch of the last demand access (coarse).
    pub(crate) fn last_accessed_ms(self) -> u64 {
        self.slot().last_accessed_ms.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn word_round_trips_state_and_flag() {
        for state in [
            SlotState::Absent,
            SlotState::Loading,
            SlotState::Cached,
            SlotState::Transient,
            SlotState::Evicting,
        ] {
            for flag in [false, true] {
                let word = Word::new(state, flag);
                assert_eq!(word.state(), state);
                assert_eq!(word.prefetched_unused(), flag);
            }
        }
    }

    #[test]
    fn only_cached_slots_pin_lock_free() {
        let slots: Slots<u8> = Slots::new(2, 3);
        let slot = slots.at(1);
        assert!(slot.try_pin_cached(0).is_none());
        assert_eq!(slot.access_count(), 0, "a failed fast pin counts nothing");
        assert!(slot.start_loading());
        assert!(slot.try_pin_cached(0).is_none());
        assert!(
            slot.publish(SlotState::Transient, None, Some(Box::new(7)), true)
                .is_some()
        );
        assert!(
            slot.try_pin_cached(1).is_none(),
            "transient pins go through the lock"
        );
        let pinned = slot.pin_locked(1).expect("transient pins under the lock");
        assert!(pinned.first_use_of_prefetch);
        assert!(slot.unpin(1), "an unpin of a transient slot is reported");
        assert!(slot.retag(SlotState::Transient, SlotState::Cached));
        let pinned = slot.try_pin_cached(2).expect("cached pins lock-free");
        assert!(
            !pinned.first_use_of_prefetch,
            "the flag was cleared by the first pin"
        );
        assert!(
            !slot.claim(SlotState::Cached),
            "a pinned slot cannot be claimed"
        );
        assert_eq!(
            slot.load().state(),
            SlotState::Cached,
            "a failed claim restores"
        );
        assert!(!slot.unpin(2), "an unpin of a cached slot needs nothing");
        assert!(slot.claim(SlotState::Cached));
        assert_eq!(slot.access_count(), 2, "two demand pins counted");
        assert!(slot.try_pin_cached(0).is_none());
        assert!(slot.pin_locked(0).is_none());
        assert!(!slot.start_loading(), "no load while evicting");
        assert_eq!(slot.set_absent().as_deref(), Some(&7));
        assert!(slot.start_loading());
        assert_eq!(slots.at(0).access_count(), 0, "layers count apart");
        assert_eq!(slots.total_accesses(), 2);
    }

    #[test]
    fn stripes_are_summed_and_wrap_around_the_stripe_count() {
        let slots: Slots<u8> = Slots::new(1, 2);
        let slot = slots.at(0);
        assert!(slot.start_loading());
        assert!(
            slot.publish(SlotState::Cached, Some(0), None, false)
                .is_some()
        );
        assert!(slot.try_pin_cached(1).is_some());
        assert!(
            slot.try_pin_cached(5).is_some(),
            "stripe 5 of 2 is stripe 1"
        );
        assert_eq!(slot.pins(), 3);
        assert!(!slot.claim(SlotState::Cached));
        for stripe in [0, 1, 5] {
            assert!(!slot.unpin(stripe));
        }
        assert_eq!(slot.pins(), 0);
        assert!(slot.claim(SlotState::Cached));
    }

    #[test]
    fn pin_limit_is_refused_not_wrapped() {
        let slots: Slots<u8> = Slots::new(1, 1);
        let slot = slots.at(0);
        assert!(slot.start_loading());
        assert!(slot.publish(SlotState::Cached, None, None, false).is_some());
        slot.counter(0).store(MAX_PINS, Ordering::Relaxed);
        assert!(slot.try_pin_cached(0).is_none());
        assert!(slot.pin_locked(0).is_none());
        assert_eq!(slot.pins(), MAX_PINS);
        assert_eq!(slot.access_count(), 0);
    }
}

/// loom model tests of the state machine: every interleaving of two or three
/// threads doing get / pin / unpin / evict / release / reclaim / reload on
/// layers that share a one-layer budget. Run by `cargo xtask loom`
/// (`RUSTFLAGS="--cfg loom" cargo test -p tinyai-store --lib --release loom`).
///
/// The model uses the real [`Slots`] and the same protocol as the store: the
/// lock-free pin of `Cached` and lock-free unpins, every other transition
/// under one mutex, claims before memory is dropped, loads that wait while a
/// layer is `Evicting`. Each thread pins on its own stripe. A layer's memory
/// is a set of `loom` cells ("pages"), written by the loader, read and marked
/// by pinned users, and zeroed by whoever drops it, so that loom reports any
/// drop that can race with a pinned access, and asserts check the bytes a
/// pinned user sees.
#[cfg(all(test, loom))]
mod loom_tests {
    use loom::cell::UnsafeCell;
    use loom::sync::{Arc, Condvar, Mutex};

    use super::*;

    const LAYERS: usize = 2;
    /// Cached layers that fit the budget.
    const BUDGET: usize = 1;
    const THREADS: usize = 3;

    /// The bytes of one layer: its content value plus one marker cell per
    /// thread (written while that thread holds a pin).
    struct Pages {
        content: UnsafeCell<u64>,
        markers: [UnsafeCell<u64>; THREADS],
    }

    struct Budget {
        cached: usize,
    }

    struct Store {
        slots: Slots<()>,
        pages: [Pages; LAYERS],
        lock: Mutex<Budget>,
        changed: Condvar,
    }

    // SAFETY (every `unsafe` on the cells below): loom's `UnsafeCell::with` /
    // `with_mut` hand out a raw pointer to the cell's value, valid for the
    // closure; the accesses are plain reads and writes of a `u64`. Whether two
    // of them can overlap (a data race, e.g. a drop racing a pinned user) is
    // exactly what loom checks and reports; that is the point of the model.
    fn value_of(layer: usize) -> u64 {
        0xA0 + layer as u64
    }

    impl Store {
        fn new() -> Store {
            Store {
                slots: Slots::new(LAYERS, THREADS),
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
            assert!(self.slots.at(layer).set_absent().is_none());
            self.changed.notify_all();
        }

        /// get(layer) on `stripe`: a pin, by the lock-free path if it can.
        fn pin(&self, layer: usize, stripe: usize) {
            let slot = self.slots.at(layer);
            if slot.try_pin_cached(stripe).is_some() {
                return;
            }
            let mut budget = self.lock.lock().unwrap();
            loop {
                match slot.load().state() {
                    SlotState::Cached | SlotState::Transient => {
                        slot.pin_locked(stripe).expect("pin under the lock");
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
                    .find(|&other| other != layer && self.slots.at(other).claim(SlotState::Cached));
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
            assert!(slot.publish(to, Some(stripe), None, false).is_some());
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

        fn unpin(&self, layer: usize, stripe: usize) {
            let slot = self.slots.at(layer);
            if slot.unpin(stripe) {
                let budget = self.lock.lock().unwrap();
                let claimed = slot.claim(SlotState::Transient);
                drop(budget);
                if claimed {
                    self.reclaim(layer);
                }
            }
        }

        /// release(layer): out of the cache now; memory dropped now if unpinned,
        /// else by the unpin that leaves it unpinned.
        fn release(&self, layer: usize) {
            let slot = self.slots.at(layer);
            let mut budget = self.lock.lock().unwrap();
            if slot.load().state() != SlotState::Cached {
                return;
            }
            budget.cached -= 1;
            let claimed = slot.claim(SlotState::Cached)
                || (slot.retag(SlotState::Cached, SlotState::Transient)
                    && slot.claim(SlotState::Transient));
            drop(budget);
            if claimed {
                self.reclaim(layer);
            }
        }

        fn get_use_drop(&self, layer: usize, thread: usize) {
            self.pin(layer, thread);
            self.use_pinned(layer, thread);
            self.unpin(layer, thread);
        }

        fn check_quiescent(&self) {
            for layer in 0..LAYERS {
                let slot = self.slots.at(layer);
                assert_eq!(slot.pins(), 0, "a pin was lost");
                assert!(
                    matches!(slot.load().state(), SlotState::Absent | SlotState::Cached),
                    "a layer left {:?}",
                    slot.load().state()
                );
            }
            assert!(self.lock.lock().unwrap().cached <= BUDGET);
        }
    }

    type Step = Box<dyn Fn(&Store) + Send + Sync>;

    fn model(threads: Vec<Step>) {
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
                s.pin(0, 0);
                s.use_pinned(0, 0);
                s.use_pinned(0, 0);
                s.unpin(0, 0);
            }),
            Box::new(|s: &Store| {
                s.release(0);
                s.get_use_drop(0, 1);
            }),
        ]);
    }

    /// A soft pin taken on the hit path (no hard pin) and a claim that
    /// refuses soft-pinned layers (an ordinary policy decision) never both
    /// succeed: either the soft getter sees `Evicting` and backs off, or the
    /// claim sees the soft pin and gives the layer back.
    #[test]
    fn loom_a_soft_pin_and_a_policy_claim_never_both_win() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let store = Arc::new(Store::new());
            store.get_use_drop(0, 0);
            let getter = {
                let store = Arc::clone(&store);
                loom::thread::spawn(move || store.slots.at(0).try_keep_cached(1).is_some())
            };
            let claimer = {
                let store = Arc::clone(&store);
                loom::thread::spawn(move || {
                    let _budget = store.lock.lock().unwrap();
                    store
                        .slots
                        .at(0)
                        .claim_if(SlotState::Cached, |soft| soft == 0)
                })
            };
            let kept = getter.join().unwrap();
            let claimed = claimer.join().unwrap();
            assert!(
                !(kept && claimed),
                "a soft-pinned layer was claimed by a claim that refuses soft pins"
            );
            let slot = store.slots.at(0);
            assert_eq!(slot.soft_pins(), u64::from(kept));
            assert_eq!(
                slot.load().state(),
                if claimed {
                    SlotState::Evicting
                } else {
                    SlotState::Cached
                }
            );
        });
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
