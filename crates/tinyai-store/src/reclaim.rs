//! Evictions: dropping the memory of claimed layers, and `mlock`.
//!
//! A victim is first *claimed* under the state lock (its slot goes from
//! `Cached`, 0 pins, to `Evicting`; see [`crate::slot`]). An owned buffer is
//! taken out of the slot at once (the slot becomes `Absent`) and freed after the
//! lock is dropped. A mapped layer's pages are dropped by the reclaim thread
//! (`MADV_DONTNEED`, `POSIX_FADV_DONTNEED`), which costs milliseconds per
//! 16 MiB; until that is done the slot stays `Evicting` (loads of it wait) and
//! its charge stays in `State::reclaim_pending`, which loads wait on when it
//! would push memory over the budget.

use std::sync::atomic::Ordering;

use tinyai_cache::LayerId;

use crate::buffer::AlignedBuf;
use crate::shared::{Shared, State};
use crate::slot::SlotState;

/// Memory to drop once the state lock is released.
#[derive(Debug, Default)]
pub(crate) struct Evictions {
    /// Owned buffers already taken out of their (now `Absent`) slots, and
    /// whether they were `mlock`ed.
    buffers: Vec<(u64, Box<AlignedBuf>, bool)>,
    /// Mapped layers left `Evicting`: index, charge, `mlock`ed.
    mapped: Vec<(u64, u64, bool)>,
}

impl Evictions {
    /// Whether there is nothing to drop.
    pub(crate) fn is_empty(&self) -> bool {
        self.buffers.is_empty() && self.mapped.is_empty()
    }
}

impl Shared {
    /// Takes the memory of claimed victims (already removed from the engine).
    pub(crate) fn evict_victims(
        &self,
        state: &mut State,
        victims: &[LayerId],
        evictions: &mut Evictions,
    ) {
        for victim in victims {
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            self.take_eviction(state, u64::from(victim.0), evictions);
        }
    }

    /// Takes the memory of one claimed (`Evicting`) slot whose charge has
    /// already left the engine or the transient total.
    pub(crate) fn take_eviction(&self, state: &mut State, index: u64, evictions: &mut Evictions) {
        let slot = self.slots.at(index as usize);
        debug_assert_eq!(slot.load().state(), SlotState::Evicting);
        if slot.load().prefetched_unused() {
            self.counters
                .prefetch_wasted
                .fetch_add(1, Ordering::Relaxed);
        }
        let unlock = std::mem::take(&mut state.meta[index as usize].locked);
        match slot.set_absent_if_owned() {
            Some(buffer) => {
                state.buffers_in_eviction += buffer.capacity() as u64;
                evictions.buffers.push((index, buffer, unlock));
            }
            None => {
                let charge = self.charge(state, index);
                state.reclaim_pending += charge;
                evictions.mapped.push((index, charge, unlock));
            }
        }
    }

    /// Drops the memory of `evictions` (outside the state lock).
    pub(crate) fn finish_evictions(&self, evictions: Evictions) {
        let Evictions { buffers, mapped } = evictions;
        let freed_buffers = !buffers.is_empty();
        let room = if freed_buffers { self.pool_room() } else { 0 };
        let mut released = 0u64;
        for (index, buffer, unlock) in buffers {
            released += buffer.capacity() as u64;
            tracing::debug!(
                layer = index,
                bytes = buffer.as_slice().len(),
                "evicted layer"
            );
            if unlock {
                crate::source::lock_slice(buffer.as_slice(), false, true);
            }
            // Kept for the next load of the same size while pooled plus
            // charged memory stays within the budget; freed otherwise.
            self.source.buffers.give(*buffer, room);
        }
        if freed_buffers {
            self.lock().buffers_in_eviction -= released;
            // Loads waiting for an `Evicting` slot to become `Absent`.
            self.changed.notify_all();
        }
        if mapped.is_empty() {
            return;
        }
        match (&self.reclaim, self.this.upgrade()) {
            (Some(pool), Some(shared)) => {
                self.lock().in_flight += 1;
                pool.spawn(move || {
                    shared.drop_mapped_pages(&mapped);
                    shared.lock().in_flight -= 1;
                    shared.changed.notify_all();
                });
            }
            _ => self.drop_mapped_pages(&mapped),
        }
    }

    /// Drops the pages of `Evicting` mapped layers, then marks them `Absent`.
    /// No load of these layers can start meanwhile (they are not `Absent`), so
    /// the pages dropped are never those of a reload.
    fn drop_mapped_pages(&self, evicted: &[(u64, u64, bool)]) {
        for &(index, _, unlock) in evicted {
            let (offset, length) = self.span(index);
            tracing::debug!(layer = index, bytes = length, "evicted layer");
            if unlock {
                self.source.lock(offset, length, false);
            }
            self.drop_layer_pages(index);
        }
        {
            let mut state = self.lock();
            for &(index, charge, _) in evicted {
                drop(self.slots.at(index as usize).set_absent());
                state.reclaim_pending -= charge;
            }
        }
        self.changed.notify_all();
    }

    /// `mlock`s a cached layer when configured to.
    pub(crate) fn maybe_lock_memory(&self, state: &mut State, index: u64) {
        if !self.config.lock_in_memory || state.meta[index as usize].locked {
            return;
        }
        let (offset, length) = self.span(index);
        let buffer = self.slots.at(index as usize).buffer();
        let locked = if buffer.is_null() {
            self.source.lock(offset, length, true)
        } else {
            // SAFETY: called under the state lock for a `Cached` slot that this
            // thread just published or promoted; the buffer is only freed after
            // a claim, which also happens under the lock, so it is alive here.
            // mlock only reads the address range.
            crate::source::lock_slice(unsafe { (*buffer).as_slice() }, true, true)
        };
        if locked {
            state.meta[index as usize].locked = true;
        } else if !self.mlock_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                layer = index,
                "mlock refused (RLIMIT_MEMLOCK, or no mlock2 on this kernel); continuing without locking layers in memory"
            );
        }
    }
}
