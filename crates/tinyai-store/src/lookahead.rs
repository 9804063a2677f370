//! Prefetch: explicit requests, automatic lookahead per stream, and the
//! streaming window.
//!
//! Every decision is the cache crate's: the engine decides whether a prefetch
//! enters the cache; when it declines, [`StreamingWindow`] decides whether it
//! is read ahead outside the cache (and which stale read-aheads make room);
//! [`PatternDetector`](tinyai_cache::stream::PatternDetector) (one per stream,
//! see [`crate::streams`]) decides what to read ahead and when a stream's
//! queued read-aheads went stale. This module only carries them out.

use std::sync::atomic::Ordering;

use tinyai_cache::stream::{AccessOrder, StreamId, StreamingWindow};
use tinyai_cache::{AccessKind, Decision, LayerId};

use crate::error::StoreError;
use crate::reclaim::Evictions;
use crate::shared::{Shared, State};
use crate::slot::SlotState;
use crate::streams;

/// A prefetch to run: the layer, whether to verify it, and the stream whose
/// lookahead asked for it (with that stream's epoch then).
#[derive(Debug)]
pub(crate) struct PrefetchTask {
    index: u64,
    verify: bool,
    origin: Option<(StreamId, u64)>,
}

/// What asking for a prefetch came to.
#[derive(Debug)]
pub(crate) enum Prefetch {
    /// Already resident, loading, or being evicted: nothing to do.
    Present,
    /// The cache and the window both declined.
    Declined,
    /// Charged and marked `Loading`: run the task.
    Started(PrefetchTask),
}

/// The window's size for a model: see [`StreamingWindow::size_for`].
pub(crate) fn window_budget(config: &crate::StoreConfig, charges: &[u64]) -> u64 {
    let active = config.prefetch_enabled && config.prefetch_threads > 0 && config.lookahead > 0;
    let largest = charges.iter().copied().max().unwrap_or(0);
    let total = charges.iter().copied().fold(0u64, u64::saturating_add);
    StreamingWindow::size_for(
        config.max_cache_size,
        largest,
        total,
        active,
        config.streaming_window,
    )
}

impl Shared {
    /// Asks for layer `index` to be loaded in the background. Called with the lock.
    pub(crate) fn request_prefetch(
        &self,
        state: &mut State,
        index: u64,
        origin: Option<(StreamId, u64)>,
        owner: (StreamId, u64),
        evictions: &mut Evictions,
    ) -> Result<Prefetch, StoreError> {
        let id = LayerId(index as u32);
        let slot = self.slots.at(index as usize);
        if slot.load().state() != SlotState::Absent {
            return Ok(Prefetch::Present);
        }
        let transient = match self.decide(state, id, AccessKind::Prefetch)? {
            Decision::Admit { victims } => {
                self.evict_victims(state, &victims, evictions);
                false
            }
            Decision::Hit => false,
            Decision::Bypass => {
                let charge = self.charge(state, index);
                let decision = state.window.admit(id, charge, owner.0, owner.1);
                self.drop_window_layers(state, &decision.evicted, evictions);
                if !decision.admitted {
                    return Ok(Prefetch::Declined);
                }
                if state.window.used() + state.orphaned_charge > state.window.budget() {
                    // Read-aheads the window let go are still loading: their
                    // charge goes when their loaders cancel. Until then there is
                    // no room, or the window would hold more than its share.
                    state.window.remove(id);
                    return Ok(Prefetch::Declined);
                }
                state.transient_charge += charge;
                true
            }
        };
        // Pages the kernel reads ahead land without a load waiting for room
        // (`Shared::wait_for_room`): where it reads ahead, pages of evicted
        // layers not yet dropped count against the budget here too.
        let pending = match state.read_ahead_charge {
            0 => 0,
            _ => state.reclaim_pending,
        };
        if state.charged() + pending > self.config.max_cache_size {
            // Layers served outside the cache for demands fill the rest of the
            // budget: a read-ahead must not push the total over it.
            if transient {
                state.window.remove(id);
                state.transient_charge -= self.charge(state, index);
            } else {
                self.engine_remove(state, id);
            }
            return Ok(Prefetch::Declined);
        }
        let verify = self.begin_load(state, index, true, transient);
        state.in_flight += 1;
        if self.pool.is_some() {
            state.queued_reads.push_back(index);
        }
        self.counters
            .prefetch_issued
            .fetch_add(1, Ordering::Relaxed);
        tracing::trace!(layer = index, transient, "prefetch issued");
        Ok(Prefetch::Started(PrefetchTask {
            index,
            verify,
            origin,
        }))
    }

    /// Runs a started prefetch on the pool (or here, without one).
    pub(crate) fn spawn_prefetch(&self, task: PrefetchTask) {
        match (&self.pool, self.this.upgrade()) {
            (Some(pool), Some(shared)) => pool.spawn(move || shared.run_prefetch(task)),
            _ => self.run_prefetch(task),
        }
    }

    /// Drops window layers the window let go (stale, or their stream broke or
    /// ended). A layer still loading is left to its loader, which sees that the
    /// window no longer holds it and cancels; until then its charge counts in
    /// `State::orphaned_charge`, against the window's share.
    pub(crate) fn drop_window_layers(
        &self,
        state: &mut State,
        layers: &[LayerId],
        evictions: &mut Evictions,
    ) {
        for &id in layers {
            let index = u64::from(id.0);
            let slot = self.slots.at(index as usize);
            if slot.claim(SlotState::Transient) {
                state.transient_charge -= self.charge(state, index);
                self.take_eviction(state, index, evictions);
            } else if slot.load().state() == SlotState::Loading
                && !std::mem::replace(&mut state.meta[index as usize].orphaned, true)
            {
                state.orphaned_charge += self.charge(state, index);
            }
        }
    }

    fn run_prefetch(&self, task: PrefetchTask) {
        let PrefetchTask {
            index,
            verify,
            origin,
        } = task;
        let id = LayerId(index as u32);
        let slot = self.slots.at(index as usize);
        let (stale, ahead, sequential, left_behind) = {
            let mut state = self.lock();
            state.queued_reads.retain(|&queued| queued != index);
            let stale = self.closed.load(Ordering::Acquire)
                || origin.is_some_and(|(stream, epoch)| {
                    state.stream_epochs.get(&stream).copied().unwrap_or(0) != epoch
                })
                || (state.meta[index as usize].transient_load && !state.window.contains(id));
            let stale = stale && state.meta[index as usize].prefetch_only;
            if stale {
                // It will not read: no buffer to wait for.
                self.got_buffer(&mut state, index);
            }
            let ahead = if stale {
                Vec::new()
            } else {
                self.reads_to_start(&mut state)
            };
            let sequential = !stale && self.lets_kernel_read_ahead(&state, index);
            let left_behind = if sequential {
                self.move_read_ahead_front(&mut state, index)
            } else {
                None
            };
            (stale, ahead, sequential, left_behind)
        };
        // A remote fetch started ahead for a prefetch gone stale: its buffer goes.
        #[cfg(feature = "remote")]
        if stale {
            self.source.discard_ahead(self.span(index).0);
        }
        // The kernel's read-ahead past a stream's old front, if it jumped.
        if let Some((start, length)) = left_behind {
            self.source.drop_cached(start, length);
        }
        // Keep the device busy: start the reads of the queued prefetches
        // (already charged, so this stays in budget) before waiting for this
        // one's pages.
        for (offset, length) in ahead {
            self.source.start_read(offset, length);
        }
        let loaded = if stale {
            None
        } else {
            self.wait_for_room();
            let loaded = self.load(index, verify, sequential);
            // A load that failed before adopting its fetch ahead leaves none behind.
            #[cfg(feature = "remote")]
            if loaded.is_err() {
                self.source.discard_ahead(self.span(index).0);
            }
            Some(loaded)
        };
        let mut evictions = Evictions::default();
        {
            let mut state = self.lock();
            let transient = state.meta[index as usize].transient_load;
            let unused = std::mem::take(&mut state.meta[index as usize].prefetch_only);
            let advised = std::mem::take(&mut state.meta[index as usize].advised);
            if std::mem::take(&mut state.meta[index as usize].orphaned) {
                state.orphaned_charge -= self.charge(&state, index);
            }
            match loaded {
                Some(Ok(buffer)) => {
                    state.meta[index as usize].verified |= verify;
                    if transient {
                        let _ = slot.publish(SlotState::Transient, None, buffer, unused);
                        // The window let it go while it loaded, and nobody waits for it.
                        if unused && !state.window.contains(id) {
                            self.drop_window_layers(&mut state, &[id], &mut evictions);
                        }
                    } else {
                        let _ = slot.publish(SlotState::Cached, None, buffer, unused);
                        self.maybe_lock_memory(&mut state, index);
                    }
                    tracing::trace!(layer = index, "prefetch completed");
                }
                failed => {
                    match &failed {
                        Some(Err(error)) => {
                            tracing::debug!(layer = index, %error, "prefetch failed");
                        }
                        _ => {
                            self.counters
                                .prefetch_cancelled
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::trace!(layer = index, "stale prefetch cancelled");
                        }
                    }
                    if advised && failed.is_none() {
                        // Its read was started ahead and nobody will use it:
                        // the pages must not stay resident uncharged.
                        self.drop_layer_pages(index);
                    }
                    drop(slot.set_absent());
                    if transient {
                        state.window.remove(id);
                        state.transient_charge -= self.charge(&state, index);
                    } else {
                        self.engine_remove(&mut state, id);
                    }
                }
            }
            state.in_flight -= 1;
        }
        self.finish_evictions(evictions);
        self.changed.notify_all();
        if self.over_budget.load(Ordering::Relaxed) {
            self.back_within_budget();
        }
    }

    /// The reads to start ahead of the queued prefetches: every queued
    /// layer not started yet (they are charged already, so this stays within
    /// the budget, and there are at most `lookahead` per stream), adjacent
    /// layers merged into one request, issued in file order. Marks them
    /// advised, so each is started once. (Capping this at the device's
    /// measured bandwidth × latency starved the pipeline: a shallow pipeline
    /// measures a low bandwidth, which kept it shallow.)
    fn reads_to_start(&self, state: &mut State) -> Vec<(u64, u64)> {
        #[cfg(feature = "remote")]
        if self.source.is_remote() {
            self.fetch_queued_ahead(state);
            return Vec::new();
        }
        let mut spans = Vec::new();
        for &queued in &state.queued_reads {
            // The kernel reads those ahead itself (and exact advice would
            // read them in small folios).
            if self.lets_kernel_read_ahead(state, queued) {
                continue;
            }
            if !std::mem::replace(&mut state.meta[queued as usize].advised, true) {
                spans.push(self.span(queued));
            }
        }
        merge_adjacent(spans)
    }

    /// Remote models: starts fetching every queued layer not started yet,
    /// each into a buffer of its own that its load adopts, so that several
    /// layers' GETs are in flight however few prefetch threads wait on them
    /// (no kernel reads ahead of a network). The layers are charged already:
    /// the buffers are their memory, and the pool is trimmed to fit beside
    /// them first. Done under the lock, so that no queued layer's load can
    /// begin before its fetch is registered (it would fetch the layer a
    /// second time into another buffer). None starts while evicted buffers
    /// are still held by their evicting thread (their charges are gone, their
    /// memory not yet): the next prefetch to run starts them.
    #[cfg(feature = "remote")]
    fn fetch_queued_ahead(&self, state: &mut State) {
        if state.buffers_in_eviction > 0 {
            return;
        }
        let queued: Vec<u64> = state.queued_reads.iter().copied().collect();
        for index in queued {
            let meta = &state.meta[index as usize];
            // Started already, or a read-ahead the window let go (its task
            // will cancel it).
            if meta.advised
                || (meta.transient_load && !state.window.contains(LayerId(index as u32)))
            {
                continue;
            }
            let (offset, length) = self.span(index);
            // Asked once (the disk tier holds it, or it is fetched already).
            state.meta[index as usize].advised = true;
            if !self.source.would_fetch(offset, length) {
                continue;
            }
            // Its load no longer waits for a pooled buffer.
            self.got_buffer(state, index);
            state.meta[index as usize].buffer_ahead = true;
            let room = self.pool_room_in(state);
            if !self.source.fetch_ahead(offset, length, room) {
                state.meta[index as usize].buffer_ahead = false;
                state.awaiting_buffers += self.buffer_capacity(index);
            }
        }
    }

    /// Whether the load of layer `index` lets the kernel read ahead past it
    /// (see `crate::readahead`): a read-ahead of the streaming window, when
    /// the window pays for the reach.
    fn lets_kernel_read_ahead(&self, state: &State, index: u64) -> bool {
        self.read_ahead_reach > 0
            && !self.config.keep_page_cache
            && state.meta[index as usize].transient_load
            && state.meta[index as usize].prefetch_only
    }

    /// Moves the read-ahead front to the end of layer `index`; when the
    /// stream jumped (the layer does not start within the reach of the old
    /// front), returns the range past the old front whose pages the kernel
    /// may have read ahead and nothing in use holds: to be dropped.
    fn move_read_ahead_front(&self, state: &mut State, index: u64) -> Option<(u64, u64)> {
        let (offset, length) = self.span(index);
        let reach = self.read_ahead_reach;
        state.read_ahead_charge = reach;
        let end = offset + length;
        let front = match state.read_ahead_front {
            Some(front) if offset + reach >= front && offset <= front + reach => {
                state.read_ahead_front = Some(front.max(end));
                return None;
            }
            previous => {
                state.read_ahead_front = Some(end);
                previous?
            }
        };
        let page = crate::source::page_size();
        let start = front.next_multiple_of(page);
        let end = self.free_until(start, start + reach, u64::MAX);
        (end > start).then_some((start, end - start))
    }

    /// Automatic prefetch after a demand access of `index` by this thread's stream.
    /// Takes no lock unless the stream's pattern changed or a layer to read
    /// ahead is absent.
    #[inline(always)]
    pub(crate) fn lookahead(&self, index: u64) {
        if self.pool.is_none()
            || self.config.lookahead == 0
            || self.all_resident.load(Ordering::Relaxed)
        {
            return;
        }
        self.lookahead_slow(index);
    }

    #[inline(never)]
    fn lookahead_slow(&self, index: u64) {
        let seen = streams::observe(self, index);
        let observation = &seen.observation;
        let in_state = |id: &LayerId, wanted: SlotState| {
            self.slots
                .get(id.index())
                .is_some_and(|slot| slot.load().state() == wanted)
        };
        let wanted = observation
            .lookahead
            .iter()
            .any(|id| in_state(id, SlotState::Absent));
        let skipped_read_ahead = observation
            .skipped
            .iter()
            .any(|id| in_state(id, SlotState::Transient) || in_state(id, SlotState::Loading));
        if !(wanted
            || skipped_read_ahead
            || seen.stale_reads
            || observation.declare_cyclic
            || observation.undeclare_cyclic)
        {
            return;
        }
        let mut evictions = Evictions::default();
        let mut tasks = Vec::new();
        {
            let mut state = self.lock();
            self.drain_hits(&mut state);
            state.window.observe(seen.stream, seen.clock);
            // Prefetches carry the epoch they were issued in; a newer epoch makes
            // them stale (`run_prefetch` cancels them before reading).
            state.stream_epochs.insert(seen.stream, seen.epoch);
            if seen.stale_reads {
                let unused = state.window.drop_unused(seen.stream);
                self.drop_window_layers(&mut state, &unused, &mut evictions);
            }
            if skipped_read_ahead {
                // Read ahead for this stream, then skipped by it: not used this pass.
                let skipped: Vec<LayerId> = observation
                    .skipped
                    .iter()
                    .copied()
                    .filter(|&id| {
                        state
                            .window
                            .entries()
                            .any(|entry| entry.id == id && entry.owner == seen.stream)
                    })
                    .collect();
                for &id in &skipped {
                    state.window.remove(id);
                }
                self.drop_window_layers(&mut state, &skipped, &mut evictions);
            }
            if observation.declare_cyclic {
                state.cyclic_streams += 1;
                if state.order.is_none() {
                    let count = self.spans.len();
                    self.declare_order(&mut state, Some(AccessOrder::cyclic(count)), true);
                }
            }
            if observation.undeclare_cyclic {
                state.cyclic_streams = state.cyclic_streams.saturating_sub(1);
                if state.cyclic_streams == 0 && state.auto_order {
                    self.declare_order(&mut state, None, false);
                }
            }
            let origin = Some((seen.stream, seen.epoch));
            for &id in observation.lookahead.iter() {
                let owner = (seen.stream, seen.clock);
                match self.request_prefetch(
                    &mut state,
                    u64::from(id.0),
                    origin,
                    owner,
                    &mut evictions,
                ) {
                    Ok(Prefetch::Present) => {}
                    Ok(Prefetch::Started(task)) => tasks.push(task),
                    Ok(Prefetch::Declined) | Err(_) => break,
                }
            }
        }
        self.finish_evictions(evictions);
        if !tasks.is_empty() {
            streams::mark_issued(self);
        }
        for task in tasks {
            self.spawn_prefetch(task);
        }
    }

    /// Sets (or clears) the declared order, telling the engine and the streams.
    pub(crate) fn declare_order(&self, state: &mut State, order: Option<AccessOrder>, auto: bool) {
        state
            .engine
            .set_access_order(order.as_ref().map(|order| order.as_slice().to_vec()));
        state.order = order.map(std::sync::Arc::new);
        state.auto_order = auto && state.order.is_some();
        self.order_version.fetch_add(1, Ordering::Release);
    }

    /// Drops every stream's unused read-aheads (the declared order changed).
    pub(crate) fn drop_all_unused(&self, state: &mut State, evictions: &mut Evictions) {
        let mut owners: Vec<StreamId> = state.window.entries().map(|e| e.owner).collect();
        owners.sort_by_key(|owner| owner.0);
        owners.dedup();
        for owner in owners {
            let unused = state.window.drop_unused(owner);
            self.drop_window_layers(state, &unused, evictions);
        }
    }

    /// A stream ended (its thread exited): drop its unused read-aheads.
    pub(crate) fn forget_stream(&self, stream: StreamId) {
        let mut evictions = Evictions::default();
        {
            let mut state = self.lock();
            state.stream_epochs.remove(&stream);
            let unused = state.window.forget_stream(stream);
            self.drop_window_layers(&mut state, &unused, &mut evictions);
        }
        self.finish_evictions(evictions);
    }
}

/// Sorts byte ranges by offset and merges those that touch or overlap.
fn merge_adjacent(mut spans: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
    for (offset, length) in spans {
        match merged.last_mut() {
            Some((start, len)) if offset <= *start + *len => {
                *len = (*len).max(offset + length - *start);
            }
            _ => merged.push((offset, length)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::merge_adjacent;

    #[test]
    fn adjacent_reads_merge_into_one_request_in_file_order() {
        assert_eq!(merge_adjacent(vec![]), vec![]);
        assert_eq!(
            merge_adjacent(vec![(200, 100), (0, 100), (100, 100), (500, 10)]),
            vec![(0, 300), (500, 10)]
        );
        assert_eq!(merge_adjacent(vec![(0, 100), (50, 10)]), vec![(0, 100)]);
    }
}
