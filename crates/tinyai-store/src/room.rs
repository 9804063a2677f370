//! The hard budget: making room for a layer served outside the cache, and
//! soft pins.
//!
//! The cache engine keeps its own residents within its share of
//! `max_cache_size`, and the streaming window within the rest. Layers served
//! outside both (a demand miss the policy declined to admit, a released layer
//! still in use) come on top; so that the *total* — `State::charged` — stays
//! within `max_cache_size`, every demand miss that would push it over first
//! evicts, in this order:
//!
//! 1. read-aheads waiting in the streaming window, oldest first (the window's
//!    room is also where demands the policy did not admit are served: the
//!    engine's share of the budget leaves out the window, or one layer when
//!    there is no window, so that serving such a layer does not evict a
//!    cached one and undo the policy's choice);
//! 2. cached layers nobody keeps, in the policy's eviction order;
//! 3. layers held only by weak soft pins, then only by strong ones (cached
//!    layers in the policy's order, then layers outside the cache).
//!
//! If that is not enough, the miss withdraws its charge and waits for room:
//! for loads in flight (which become evictable when they land), for pages
//! being dropped, or for a soft pin that is replacing a hard one (a C call
//! about to return). When nothing it could wait for is left, only hard pins
//! (guards the caller holds) stand in the way, and the miss goes ahead: the
//! total then stays within max(budget, the charges of held layers). Read-aheads
//! never push the total over: a prefetch that would is declined.
//!
//! **Soft pins** ([`crate::SoftPin`]) are what the C library holds for each
//! thread's recently returned layers: they keep a layer in memory as long as
//! the budget allows (policy decisions never evict it), and give way, weak
//! before strong, only when a demand cannot otherwise fit. They never keep
//! memory alive that a caller reads through a reference: only the mapped
//! backend's bytes, which stay addressable after eviction, are soft-pinned.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tinyai_cache::{Claims, LayerId};

use crate::buffer::AlignedBuf;
use crate::reclaim::Evictions;
use crate::shared::{Shared, State};
use crate::slot::{Kept, SlotState, Slots};

/// The longest a waiting miss sleeps before looking again (a safety net: the
/// events it waits for all notify).
const RECHECK: Duration = Duration::from_millis(20);

thread_local! {
    /// Set while this thread is inside `Shared::pin_soft`.
    static SOFT_GET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The store's side of victim choice: a victim must be a `Cached` slot with no
/// pins, and soft-pinned no more firmly than `allow` (`strong[i]`: layer `i`
/// is some thread's newest), claimed (→ `Evicting`) before the engine drops it.
pub(crate) struct SlotClaims<'a> {
    pub(crate) slots: &'a Slots<AlignedBuf>,
    pub(crate) allow: Kept,
    /// Where to read which layers are some window's newest (only needed when
    /// `allow` is `Weak`).
    pub(crate) registers: Option<&'a Shared>,
}

impl SlotClaims<'_> {
    /// Whether a layer with `soft` soft pins may go at this level (read after
    /// the claim, so fresh: see `Shared::is_newest_soft_pin`).
    fn allows(&self, index: usize, soft: u64) -> bool {
        match (soft, self.allow) {
            (0, _) | (_, Kept::Strong) => true,
            (_, Kept::No) => false,
            (_, Kept::Weak) => !self
                .registers
                .is_some_and(|shared| shared.is_newest_soft_pin(index as u64)),
        }
    }
}

/// How firmly a layer with `soft` soft pins is kept.
fn kept_level(soft: u64, newest: bool) -> Kept {
    match (soft, newest) {
        (0, _) => Kept::No,
        (_, true) => Kept::Strong,
        (_, false) => Kept::Weak,
    }
}

impl Claims for SlotClaims<'_> {
    fn claim(&mut self, id: LayerId) -> bool {
        let index = id.index();
        self.slots
            .get(index)
            .is_some_and(|slot| slot.claim_if(SlotState::Cached, |soft| self.allows(index, soft)))
    }

    fn release(&mut self, id: LayerId) {
        if let Some(slot) = self.slots.get(id.index()) {
            slot.unclaim(SlotState::Cached);
        }
    }
}

/// One thread's window of soft pins on one model ([`crate::SoftWindow`]): the
/// layer it soft-pinned last, plus one (0: none), written only by its thread.
#[derive(Debug, Default)]
pub(crate) struct WindowRegister {
    pub(crate) newest: std::sync::atomic::AtomicU64,
}

impl State {
    /// Charged bytes held now: cached layers and layers served outside the
    /// cache (what `memory_usage` reports). Evicted pages still being dropped
    /// (`reclaim_pending`) are waited for before a load reads.
    pub(crate) fn charged(&self) -> u64 {
        self.engine.usage() + self.transient_charge + self.read_ahead_charge
    }
}

/// What a demand miss found when it asked for room.
pub(crate) enum Room {
    /// The layer is charged and fits (or only hard pins are in the way).
    Granted,
    /// The layer's charge was withdrawn; wait, then decide again.
    Wait,
}

impl Shared {
    /// Evicts until `State::charged` fits in `max_cache_size`, taking soft
    /// pins up to `firmest` (see the module doc for the order). Returns whether
    /// it fits.
    pub(crate) fn enforce_budget(
        &self,
        state: &mut State,
        evictions: &mut Evictions,
        firmest: Kept,
    ) -> bool {
        let budget = self.config.max_cache_size;
        let over = |state: &State| state.charged().saturating_sub(budget);
        if over(state) == 0 {
            return true;
        }
        let strong = self.newest_soft_pins();
        // Read-aheads waiting in the window share the room outside the cache
        // with demands the policy did not admit: they give way first.
        self.evict_outside_cache(state, evictions, &strong, |kept, in_window| {
            in_window && kept == Kept::No
        });
        for allow in [Kept::No, Kept::Weak, Kept::Strong] {
            if allow > firmest {
                break;
            }
            let needed = over(state);
            if needed == 0 {
                return true;
            }
            let mut claims = SlotClaims {
                slots: &self.slots,
                allow,
                registers: Some(self),
            };
            let held_out: Vec<LayerId> = (0..self.spans.len())
                .filter(|&i| {
                    let slot = self.slots.at(i);
                    slot.pins() > 0 || kept_level(slot.soft_pins(), strong[i]) > allow
                })
                .map(|i| LayerId(i as u32))
                .collect();
            let victims = state
                .engine
                .evict_claiming(needed, self.now(), &held_out, &mut claims);
            self.note_residency(state);
            self.evict_victims(state, &victims, evictions);
            if allow > Kept::No {
                self.evict_outside_cache(state, evictions, &strong, |kept, in_window| {
                    !in_window && kept == allow
                });
            }
        }
        over(state) == 0
    }

    /// Drops unpinned `Transient` layers that `eligible(kept, in the window)`
    /// accepts (the window's oldest first, then by index) until the total fits.
    fn evict_outside_cache(
        &self,
        state: &mut State,
        evictions: &mut Evictions,
        strong: &[bool],
        eligible: impl Fn(Kept, bool) -> bool,
    ) {
        let budget = self.config.max_cache_size;
        let window: Vec<u64> = state
            .window
            .entries()
            .map(|entry| u64::from(entry.id.0))
            .collect();
        let others = (0..self.spans.len() as u64).filter(|&index| {
            !state.window.contains(LayerId(index as u32))
                && self.slots.at(index as usize).load().state() == SlotState::Transient
        });
        let candidates: Vec<u64> = window.iter().copied().chain(others).collect();
        for index in candidates {
            if state.charged() <= budget {
                return;
            }
            let id = LayerId(index as u32);
            let slot = self.slots.at(index as usize);
            let newest = strong.get(index as usize).copied().unwrap_or(false);
            let kept = kept_level(slot.soft_pins(), newest);
            if eligible(kept, state.window.contains(id))
                && slot.claim_if(SlotState::Transient, |soft| {
                    kept_level(soft, self.is_newest_soft_pin(index)) <= kept
                })
            {
                state.window.remove(id);
                state.transient_charge -= self.charge(state, index);
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                self.take_eviction(state, index, evictions);
            }
        }
    }

    /// After a demand miss of `index` was charged (admitted or served outside
    /// the cache): makes room, or withdraws the charge when there is none yet
    /// but there will be (see the module doc).
    pub(crate) fn room_for_demand(
        &self,
        state: &mut State,
        index: u64,
        transient: bool,
        evictions: &mut Evictions,
    ) -> Room {
        // Soft-pinned layers go only when nothing else can make room, not even
        // waiting for loads in flight (weak ones first).
        if self.enforce_budget(state, evictions, Kept::No) {
            return Room::Granted;
        }
        let others_converting = self.transitional.load(Ordering::SeqCst)
            > usize::from(SOFT_GET.with(std::cell::Cell::get));
        // Layers that stay whatever happens: waiting cannot make room they hold.
        let pinned: u64 = (0..self.spans.len())
            .filter(|&i| self.slots.at(i).pins() > 0)
            .map(|i| self.charge(state, i as u64))
            .sum();
        let hopeless = pinned + self.charge(state, index) > self.config.max_cache_size;
        let waitable = others_converting
            || (!hopeless && (state.in_flight > 0 || state.reading > 0 || !evictions.is_empty()));
        if !waitable {
            if self.enforce_budget(state, evictions, Kept::Strong) {
                return Room::Granted;
            }
            // Whatever becomes evictable later (an unpin, a load landing) is
            // evicted then, until the total fits again.
            self.over_budget.store(true, Ordering::Relaxed);
            tracing::debug!(
                layer = index,
                charged = state.charged(),
                pinned,
                budget = self.config.max_cache_size,
                "pinned layers fill the budget: serving over it"
            );
            return Room::Granted;
        }
        if transient {
            state.transient_charge -= self.charge(state, index);
        } else {
            self.engine_remove(state, LayerId(index as u32));
        }
        Room::Wait
    }

    /// An unpin while a miss had gone over the budget: evict what no pin
    /// holds any more, until the total fits again.
    #[cold]
    #[inline(never)]
    pub(crate) fn back_within_budget(&self) {
        let mut evictions = Evictions::default();
        {
            let mut state = self.lock();
            let fits = self.enforce_budget(&mut state, &mut evictions, Kept::Strong);
            self.over_budget.store(!fits, Ordering::Relaxed);
        }
        self.finish_evictions(evictions);
    }

    /// Waits for room after [`Room::Wait`] (the caller's evictions already done).
    pub(crate) fn wait_for_demand_room<'a>(
        &'a self,
        state: std::sync::MutexGuard<'a, State>,
    ) -> std::sync::MutexGuard<'a, State> {
        // Not a converter while waiting: other waiters must not wait for us.
        let mine = SOFT_GET.with(std::cell::Cell::get);
        if mine {
            self.transitional.fetch_sub(1, Ordering::SeqCst);
        }
        self.room_waiters.fetch_add(1, Ordering::SeqCst);
        let state = self
            .changed
            .wait_timeout(state, RECHECK)
            .map_or_else(|poisoned| poisoned.into_inner().0, |(state, _)| state);
        self.room_waiters.fetch_sub(1, Ordering::SeqCst);
        if mine {
            self.transitional.fetch_add(1, Ordering::SeqCst);
        }
        state
    }

    /// Whether layer `index` is some live window's newest soft pin (a fresh
    /// read of every register: a getter stores its register before the
    /// read-modify-write that takes its soft pin, a release; a claim reads
    /// the soft pins with `SeqCst`, an acquire, before calling this, so once it
    /// has seen the soft pin it sees the register too).
    pub(crate) fn is_newest_soft_pin(&self, index: u64) -> bool {
        let windows = self
            .soft_windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        windows
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .any(|window| window.newest.load(Ordering::SeqCst) == index + 1)
    }

    /// Which layers are some live window's newest soft pin (for planning; the
    /// claim itself re-reads with [`is_newest_soft_pin`](Self::is_newest_soft_pin)).
    pub(crate) fn newest_soft_pins(&self) -> Vec<bool> {
        let mut strong = vec![false; self.spans.len()];
        let mut windows = self
            .soft_windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        windows.retain(|window| window.strong_count() > 0);
        for window in windows.iter().filter_map(std::sync::Weak::upgrade) {
            let newest = window.newest.load(Ordering::Relaxed);
            if let Some(flag) = newest
                .checked_sub(1)
                .and_then(|index| strong.get_mut(index as usize))
            {
                *flag = true;
            }
        }
        strong
    }

    /// Accesses layer `index` (loading it if needed) and holds it with a soft
    /// pin on this thread's stripe (returned). A hit takes the soft pin
    /// directly; otherwise the layer is pinned as for a guard and the pin then
    /// turned into a soft one (counted in `transitional` meanwhile, so that a
    /// miss waiting for room waits for it rather than going over the budget).
    #[inline]
    pub(crate) fn pin_soft(&self, index: u64) -> Result<usize, crate::StoreError> {
        if self.slots.get(index as usize).is_none() {
            return Err(crate::StoreError::LayerOutOfRange {
                index,
                count: self.spans.len() as u64,
            });
        }
        match self.keep_if_cached(index) {
            Some(stripe) => Ok(stripe),
            None => self.pin_soft_slow(index),
        }
    }

    /// The hit path of [`pin_soft`](Self::pin_soft): a soft pin and a demand
    /// access of a `Cached` layer, no hard pin to hand over; `None` otherwise.
    #[inline(always)]
    pub(crate) fn keep_if_cached(&self, index: u64) -> Option<usize> {
        let slot = self.slots.get(index as usize)?;
        let stripe = crate::hits::my_stripe();
        let pinned = slot.try_keep_cached(stripe)?;
        slot.touch(self.coarse_ms.load(Ordering::Relaxed));
        if pinned.first_use_of_prefetch {
            self.counters.prefetch_used.fetch_add(1, Ordering::Relaxed);
        }
        if self.record_hits {
            self.record_hit(index);
        }
        Some(stripe)
    }

    #[inline(never)]
    fn pin_soft_slow(&self, index: u64) -> Result<usize, crate::StoreError> {
        self.transitional.fetch_add(1, Ordering::SeqCst);
        SOFT_GET.with(|flag| flag.set(true));
        let pinned = self.pin(index).and_then(|stripe| {
            let kept = self.slots.at(index as usize).keep(stripe);
            self.unpin(index, stripe);
            if kept {
                Ok(stripe)
            } else {
                Err(crate::StoreError::TooManyPins { index })
            }
        });
        SOFT_GET.with(|flag| flag.set(false));
        self.transitional.fetch_sub(1, Ordering::SeqCst);
        // A miss may be waiting for this hard pin to become soft.
        if self.room_waiters.load(Ordering::SeqCst) > 0 {
            drop(self.lock());
            self.changed.notify_all();
        }
        pinned
    }

    /// Drops a soft pin taken on `stripe`; a layer outside the cache that
    /// nothing holds any more goes.
    #[inline]
    pub(crate) fn unpin_soft(&self, index: u64, stripe: usize) {
        let slot = self.slots.at(index as usize);
        if slot.unkeep(stripe) {
            self.last_transient_unpin(index);
        }
    }
}
