//! The state every handle on one model shares: the slots, the state lock, and
//! the path of one `get` (the lock-free hit and the miss that loads).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tinyai_cache::stream::{AccessOrder, StreamId, StreamingWindow};
use tinyai_cache::{AccessKind, Decision, Engine, LayerId};
use tinyai_format::{FormatError, Model, TensorInfo};

use crate::buffer::AlignedBuf;
use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::hits::ReadBuffers;
use crate::reclaim::Evictions;
use crate::room::{Room, SlotClaims};
use crate::slot::{Kept, Pinned, SlotState, Slots};
use crate::source::Source;
use crate::stats::Counters;
use crate::tables::Tables;

/// The owner of read-aheads asked for explicitly (`MappedModel::prefetch`,
/// `tinyaiPrefetchLayerWeights`, a forward pass): they are for whoever uses
/// them next, so they age by every stream's demand accesses (the store's
/// demand clock), not by the asking thread's, which may never make one.
pub(crate) const EXPLICIT: StreamId = StreamId(u32::MAX);

/// Bytes read at a time when verifying a mapped layer from the file.
const VERIFY_CHUNK: u64 = 1 << 20;

/// Facts about a layer that only change under the state lock.
#[derive(Debug, Default)]
pub(crate) struct LayerMeta {
    /// Its checksum was verified on a load.
    pub(crate) verified: bool,
    /// Its memory is `mlock`ed.
    pub(crate) locked: bool,
    /// While `Loading`: a prefetch no demand request waits for yet (may be cancelled).
    pub(crate) prefetch_only: bool,
    /// While `Loading`: it will be served outside the cache (`Transient`).
    pub(crate) transient_load: bool,
    /// While `Loading` into the window: the window let it go meanwhile (its loader
    /// will drop it unless a demand waits), see `State::orphaned_charge`.
    pub(crate) orphaned: bool,
    /// While `Loading` by a queued prefetch: its read was started ahead
    /// (`MADV_WILLNEED` / `POSIX_FADV_WILLNEED`, or a remote fetch) by an
    /// earlier prefetch.
    pub(crate) advised: bool,
    /// While `Loading` by a queued prefetch of a remote layer: its fetch was
    /// started ahead into a buffer of its own, which its load adopts (so it
    /// no longer awaits a pooled one, see `State::awaiting_buffers`).
    pub(crate) buffer_ahead: bool,
}

/// Everything behind the state lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) engine: Engine,
    pub(crate) meta: Vec<LayerMeta>,
    /// Charges of `Transient` slots and of loads that will be (window read-aheads,
    /// bypassed misses, released layers still pinned).
    pub(crate) transient_charge: u64,
    /// Charges of read-aheads the window let go while they were still loading
    /// (part of `transient_charge` until their loaders finish).
    pub(crate) orphaned_charge: u64,
    /// Charges of evicted layers whose pages are not dropped yet (`Evicting`).
    pub(crate) reclaim_pending: u64,
    /// Read-aheads outside the cache (see [`tinyai_cache::stream`]).
    pub(crate) window: StreamingWindow,
    /// The declared access order, and whether the store declared it itself.
    pub(crate) order: Option<Arc<AccessOrder>>,
    pub(crate) auto_order: bool,
    /// Streams whose detector currently declares the cyclic order.
    pub(crate) cyclic_streams: usize,
    /// Each layer's priority as set, on TinyAI's scale (the engine holds its
    /// image under `engine_priority`).
    pub(crate) priorities: Vec<f32>,
    /// Demand accesses seen under the lock (slow paths, and hits as they are
    /// drained): the clock of [`EXPLICIT`] read-aheads.
    pub(crate) demand_clock: u64,
    /// Each stream's pattern epoch (bumped when its pattern breaks).
    pub(crate) stream_epochs: HashMap<StreamId, u64>,
    /// Background tasks issued and not finished (close waits for them).
    pub(crate) in_flight: usize,
    /// Demand loads reading now (past their wait for room).
    pub(crate) reading: usize,
    /// Layers whose prefetch task is queued on the pool, oldest first.
    pub(crate) queued_reads: VecDeque<u64>,
    /// End offset of the latest read-ahead that let the kernel read ahead
    /// (see `crate::readahead`): where its pages past the layer begin.
    pub(crate) read_ahead_front: Option<u64>,
    /// The kernel's read-ahead reach once a stream let it read ahead: pages
    /// it may hold past the front that no layer charges (see `crate::readahead`).
    pub(crate) read_ahead_charge: u64,
    /// Owned backend: buffer capacity of loads begun that hold no buffer yet.
    /// The pool may keep that much beyond the room beside the charges (each
    /// such load is charged already and takes a pooled buffer of its size), so
    /// that the load which evicted a layer gets the layer's buffer.
    pub(crate) awaiting_buffers: u64,
    /// Owned backend: capacity of evicted layers' buffers taken out of their
    /// slots (their charges gone) and not yet pooled or freed by
    /// `finish_evictions`. A remote fetch ahead starts none while any are
    /// (see `Shared::fetch_queued_ahead`).
    pub(crate) buffers_in_eviction: u64,
}

/// The shared core of a [`crate::MappedModel`].
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) source: Source,
    pub(crate) tables: Tables,
    /// (offset, length) of every layer.
    pub(crate) spans: Vec<(u64, u64)>,
    /// Per layer, the layers sharing a partly owned boundary page (see `crate::pages`).
    pub(crate) page_neighbours: Vec<Vec<u32>>,
    /// Layer indices by start offset, and the longest layer (see `crate::pages`).
    pub(crate) by_offset: Vec<u32>,
    pub(crate) longest: u64,
    /// How far past a stream's read-ahead the kernel's may run, taken out of
    /// the streaming window; 0 when streams read exactly their layers (see
    /// `crate::readahead`).
    pub(crate) read_ahead_reach: u64,
    pub(crate) slots: Slots<AlignedBuf>,
    pub(crate) config: StoreConfig,
    pub(crate) state: Mutex<State>,
    /// Signalled when a load finishes or an eviction's memory is dropped.
    pub(crate) changed: Condvar,
    pub(crate) counters: Counters,
    pub(crate) hits: ReadBuffers,
    pub(crate) pool: Option<rayon::ThreadPool>,
    /// One thread that drops evicted pages, so neither callers nor prefetch
    /// threads wait for it (its backlog is charged: see `State::reclaim_pending`).
    pub(crate) reclaim: Option<rayon::ThreadPool>,
    pub(crate) started: Instant,
    /// Milliseconds since the Unix epoch, refreshed by every drain and slow path:
    /// the coarse clock behind `last_accessed_ms` (no clock read on a hit).
    pub(crate) coarse_ms: AtomicU64,
    pub(crate) closed: AtomicBool,
    pub(crate) mlock_warned: AtomicBool,
    /// Distinguishes models in per-thread stream tables.
    pub(crate) uid: u64,
    /// Whether hits must reach the engine at all: false when every layer fits in
    /// the engine's budget together, so that no eviction can ever happen and
    /// the policy's history cannot change a decision.
    pub(crate) record_hits: bool,
    /// Every layer is resident in the engine (set under the lock after each
    /// engine change): lookahead has nothing to read, so hits skip it.
    pub(crate) all_resident: AtomicBool,
    /// Bumped whenever the declared order changes (streams re-read it then).
    pub(crate) order_version: AtomicU64,
    /// Mapped backend: the mapping's base address (see `Source::mapped_base`).
    pub(crate) mapped_base: Option<usize>,
    /// This `Shared` itself, for background tasks that must keep it alive.
    pub(crate) this: Weak<Shared>,
    /// Demand misses waiting for room (see [`crate::room`]).
    pub(crate) room_waiters: AtomicUsize,
    /// Soft-pinning gets that may hold a hard pin they are about to give back.
    pub(crate) transitional: AtomicUsize,
    /// Every live `SoftWindow`'s register (see [`crate::room`]).
    pub(crate) soft_windows: Mutex<Vec<Weak<crate::room::WindowRegister>>>,
    /// A miss went ahead over the budget because pinned layers filled it: each
    /// unpin tries to get back within it (see [`crate::room`]).
    pub(crate) over_budget: AtomicBool,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave memory unsafe (slots are
        // atomics with their own invariants); keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(state)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Logical time for the engine (milliseconds since open).
    pub(crate) fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(crate) fn layer_id(&self, index: u64) -> Result<LayerId, StoreError> {
        if index >= self.spans.len() as u64 {
            return Err(StoreError::LayerOutOfRange {
                index,
                count: self.spans.len() as u64,
            });
        }
        Ok(LayerId(index as u32))
    }

    pub(crate) fn format_error(&self, source: FormatError) -> StoreError {
        StoreError::Format {
            path: self.source.path().to_path_buf(),
            source,
        }
    }

    pub(crate) fn span(&self, index: u64) -> (u64, u64) {
        self.spans[index as usize]
    }

    pub(crate) fn tables_model(&self) -> &Model<'_> {
        self.tables.model()
    }

    /// Where `info`'s bytes lie in layer `index` (checked against the layer).
    pub(crate) fn tensor_range(
        &self,
        index: u64,
        info: &TensorInfo<'_>,
    ) -> Result<std::ops::Range<usize>, StoreError> {
        let range = info.range_in_layer();
        let (_, length) = self.span(index);
        if range.start > range.end || range.end > length {
            return Err(StoreError::View {
                layer: index,
                what: info.name.to_owned(),
                reason: "tensor range outside the layer".to_owned(),
            });
        }
        Ok(range.start as usize..range.end as usize)
    }

    /// The table entry of the tensor called `name` in layer `index`.
    pub(crate) fn find_tensor(&self, index: u64, name: &str) -> Result<TensorInfo<'_>, StoreError> {
        self.tables
            .model()
            .find_tensor(index, name)
            .map_err(|source| self.format_error(source))?
            .ok_or_else(|| StoreError::NoSuchTensor {
                layer: index,
                name: name.to_owned(),
            })
    }

    pub(crate) fn charge(&self, state: &State, index: u64) -> u64 {
        state
            .engine
            .charge(LayerId(index as u32))
            .unwrap_or_default()
    }

    /// Asks the engine for `id`, with victims claimed from the slots.
    pub(crate) fn decide(
        &self,
        state: &mut State,
        id: LayerId,
        kind: AccessKind,
    ) -> Result<Decision, StoreError> {
        let now = self.now();
        let mut claims = SlotClaims {
            slots: &self.slots,
            allow: Kept::No,
            registers: None,
        };
        let decision = state.engine.request_claiming(id, kind, now, &mut claims);
        self.note_residency(state);
        Ok(decision?)
    }

    /// Removes `id` from the engine (a release, or a load that failed).
    pub(crate) fn engine_remove(&self, state: &mut State, id: LayerId) {
        let _ = state.engine.remove(id);
        self.note_residency(state);
    }

    /// Refreshes `all_resident` after the engine's resident set changed.
    pub(crate) fn note_residency(&self, state: &State) {
        let all = state.engine.resident_count() == self.spans.len();
        self.all_resident.store(all, Ordering::Relaxed);
    }

    /// Feeds buffered hits to the engine. Called with the lock held, before any
    /// decision, so the engine sees accesses in the order each thread made them.
    ///
    /// Also advances the demand clock that ages explicit read-aheads (see
    /// [`EXPLICIT`]): by this call's access and the hits it drains.
    pub(crate) fn drain_hits(&self, state: &mut State) {
        self.coarse_ms.store(unix_ms(), Ordering::Relaxed);
        let now = self.now();
        let mut drained = 0;
        self.hits.drain(|index| {
            state.engine.record_hit(LayerId(index), now);
            drained += 1;
        });
        state.demand_clock += 1 + drained;
        state.window.observe(EXPLICIT, state.demand_clock);
    }

    /// Pins layer `index`, loading it if needed; returns the stripe the pin is
    /// counted on (the guard unpins there).
    ///
    /// The hit path: one read-modify-write on this thread's pin counter for the
    /// layer, a read of the layer's state word, and (when the policy needs
    /// hits) an append to this thread's read buffer. No lock, no allocation,
    /// no system call.
    #[inline(always)]
    pub(crate) fn pin(&self, index: u64) -> Result<usize, StoreError> {
        let Some(slot) = self.slots.get(index as usize) else {
            return Err(StoreError::LayerOutOfRange {
                index,
                count: self.spans.len() as u64,
            });
        };
        let stripe = crate::hits::my_stripe();
        if let Some(pinned) = slot.try_pin_cached(stripe) {
            slot.touch(self.coarse_ms.load(Ordering::Relaxed));
            if pinned.first_use_of_prefetch {
                self.note_prefetch_use(pinned);
            }
            if self.record_hits {
                self.record_hit(index);
            }
            return Ok(stripe);
        }
        self.pin_slow(index, stripe)?;
        Ok(stripe)
    }

    /// Appends a lock-free hit to the read buffers; drains them when half a
    /// buffer waits and the lock is free.
    #[inline(never)]
    pub(crate) fn record_hit(&self, index: u64) {
        if self.hits.record(index as u32)
            && let Ok(mut state) = self.state.try_lock()
        {
            self.drain_hits(&mut state);
        }
    }

    #[cold]
    fn note_prefetch_use(&self, pinned: Pinned) {
        if pinned.first_use_of_prefetch {
            self.counters.prefetch_used.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Everything but a lock-free hit: hits of transient layers (which the engine
    /// must hear about, and may now admit), waits for loads and evictions, misses.
    #[inline(never)]
    fn pin_slow(&self, index: u64, stripe: usize) -> Result<(), StoreError> {
        let id = LayerId(index as u32);
        let slot = self.slots.at(index as usize);
        let mut state = self.lock();
        self.drain_hits(&mut state);
        loop {
            match slot.load().state() {
                SlotState::Cached => {
                    // The fast path lost a race or hit the pin limit.
                    let pinned = slot
                        .pin_locked(stripe)
                        .ok_or(StoreError::TooManyPins { index })?;
                    state.engine.record_hit(id, self.now());
                    slot.touch(unix_ms());
                    self.note_prefetch_use(pinned);
                    return Ok(());
                }
                SlotState::Transient => {
                    // Pin first: if that fails nothing has changed yet.
                    let pinned = slot
                        .pin_locked(stripe)
                        .ok_or(StoreError::TooManyPins { index })?;
                    let mut evictions = Evictions::default();
                    self.transient_hit(&mut state, index, &mut evictions);
                    slot.touch(unix_ms());
                    self.note_prefetch_use(pinned);
                    drop(state);
                    self.finish_evictions(evictions);
                    return Ok(());
                }
                SlotState::Loading => {
                    let meta = &mut state.meta[index as usize];
                    if std::mem::take(&mut meta.prefetch_only) {
                        // A demand arrived while the prefetch was reading: the
                        // prefetch was useful (it started the read early).
                        self.counters.prefetch_used.fetch_add(1, Ordering::Relaxed);
                    }
                    state = self.wait(state);
                }
                SlotState::Evicting => state = self.wait(state),
                SlotState::Absent => break,
            }
        }
        drop(state);
        self.miss(index, stripe)
    }

    /// A demand access of a `Transient` layer (read ahead into the streaming
    /// window, bypassed, or released while pinned). The engine hears of it like
    /// any access — its reuse history must see every demand — and may admit it:
    /// then it becomes `Cached` without a read. Otherwise it leaves the window
    /// (a guard now holds it) and stays outside the cache.
    fn transient_hit(&self, state: &mut State, index: u64, evictions: &mut Evictions) {
        let id = LayerId(index as u32);
        let charge = self.charge(state, index);
        state.window.take(id);
        // The engine knows every valid layer; an error here would be a bug, and
        // serving the layer outside the cache is always safe.
        match self
            .decide(state, id, AccessKind::Demand)
            .unwrap_or(Decision::Bypass)
        {
            Decision::Admit { victims } => {
                self.evict_victims(state, &victims, evictions);
                if self
                    .slots
                    .at(index as usize)
                    .retag(SlotState::Transient, SlotState::Cached)
                {
                    state.transient_charge -= charge;
                    self.maybe_lock_memory(state, index);
                } else {
                    self.engine_remove(state, id);
                }
            }
            Decision::Hit | Decision::Bypass => {}
        }
    }

    /// A miss: decide and make room, mark the slot `Loading`, load outside the
    /// lock, publish.
    fn miss(&self, index: u64, stripe: usize) -> Result<(), StoreError> {
        let id = LayerId(index as u32);
        let slot = self.slots.at(index as usize);
        let mut state = self.lock();
        let mut counted = false;
        let (transient, verify) = loop {
            // Someone may have started loading it while the lock was dropped.
            if slot.load().state() != SlotState::Absent {
                drop(state);
                return self.pin_slow(index, stripe);
            }
            self.drain_hits(&mut state);
            if !std::mem::replace(&mut counted, true) {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
            }
            let mut evictions = Evictions::default();
            let transient = match self.decide(&mut state, id, AccessKind::Demand)? {
                Decision::Admit { victims } => {
                    self.evict_victims(&mut state, &victims, &mut evictions);
                    false
                }
                Decision::Hit => false,
                Decision::Bypass => {
                    state.transient_charge += self.charge(&state, index);
                    true
                }
            };
            match self.room_for_demand(&mut state, index, transient, &mut evictions) {
                Room::Granted => {
                    if transient {
                        self.counters.bypasses.fetch_add(1, Ordering::Relaxed);
                    }
                    let verify = self.begin_load(&mut state, index, false, transient);
                    slot.count_access(stripe);
                    slot.touch(unix_ms());
                    state.reading += 1;
                    drop(state);
                    self.finish_evictions(evictions);
                    break (transient, verify);
                }
                Room::Wait if !evictions.is_empty() => {
                    drop(state);
                    self.finish_evictions(evictions);
                    state = self.lock();
                }
                Room::Wait => state = self.wait_for_demand_room(state),
            }
        };

        self.wait_for_room();
        let loaded = self.load(index, verify, false);
        let mut state = self.lock();
        state.reading -= 1;
        let result = match loaded {
            Ok(buffer) => {
                state.meta[index as usize].verified |= verify;
                let to = if transient {
                    SlotState::Transient
                } else {
                    SlotState::Cached
                };
                // The slot was `Absent` before this load: no pin limit to meet.
                let _ = slot.publish(to, Some(stripe), buffer, false);
                if !transient {
                    self.maybe_lock_memory(&mut state, index);
                }
                Ok(())
            }
            Err(error) => {
                drop(slot.set_absent());
                if transient {
                    state.transient_charge -= self.charge(&state, index);
                } else {
                    self.engine_remove(&mut state, id);
                }
                Err(error)
            }
        };
        drop(state);
        self.changed.notify_all();
        if self.over_budget.load(Ordering::Relaxed) {
            self.back_within_budget();
        }
        result
    }

    /// Marks an `Absent` layer `Loading` (under the lock) and notes how: by a
    /// prefetch (cancellable while no demand waits), into the cache or outside
    /// it. Returns whether the load must verify the checksum.
    pub(crate) fn begin_load(
        &self,
        state: &mut State,
        index: u64,
        prefetch: bool,
        transient: bool,
    ) -> bool {
        let started = self.slots.at(index as usize).start_loading();
        debug_assert!(started, "the slot was Absent under the lock");
        let meta = &mut state.meta[index as usize];
        meta.prefetch_only = prefetch;
        meta.transient_load = transient;
        let verify = self.config.verify_checksums && !meta.verified;
        if !self.source.is_mapped() {
            state.awaiting_buffers += self.buffer_capacity(index);
        }
        // The load's charge is in: pooled buffers must fit beside it.
        if self.source.buffers.bytes() > 0 {
            self.source.buffers.trim(self.pool_room_in(state));
        }
        verify
    }

    /// The capacity of layer `index`'s owned buffer (its length rounded up to a page).
    pub(crate) fn buffer_capacity(&self, index: u64) -> u64 {
        self.span(index)
            .1
            .next_multiple_of(crate::source::page_size())
    }

    /// A load begun by [`begin_load`](Shared::begin_load) no longer waits
    /// for a buffer: it has one, or it will not read. Owned backend only.
    /// (A remote layer fetched ahead got its buffer when the fetch started:
    /// its load's own call is then a no-op.)
    pub(crate) fn got_buffer(&self, state: &mut State, index: u64) {
        if !self.source.is_mapped() && !std::mem::take(&mut state.meta[index as usize].buffer_ahead)
        {
            state.awaiting_buffers -= self.buffer_capacity(index);
        }
    }

    /// Waits until evicted pages still being dropped no longer push memory over
    /// the budget (the reclaim thread's backlog is charged, defect 5 of the
    /// store-core issue), so a load never adds its pages on top of them.
    pub(crate) fn wait_for_room(&self) {
        let mut state = self.lock();
        loop {
            let charged = state.engine.usage() + state.transient_charge;
            let pending = state.reclaim_pending;
            if pending == 0 || charged + pending <= self.config.max_cache_size {
                return;
            }
            state = self.wait(state);
        }
    }

    /// Reads (owned) or faults in (mapped) a layer; verifies it if asked.
    /// `sequential`: let the kernel read ahead past the layer (see `crate::readahead`).
    pub(crate) fn load(
        &self,
        index: u64,
        verify: bool,
        sequential: bool,
    ) -> Result<Option<Box<AlignedBuf>>, StoreError> {
        let (offset, length) = self.span(index);
        let span = tracing::debug_span!("load", layer = index, bytes = length);
        let _entered = span.enter();
        let started = Instant::now();
        let data = if self.source.is_mapped() {
            self.source.check_unchanged()?;
            self.source.populate(index, offset, length, sequential)?;
            None
        } else {
            // Whatever happens, this load stops waiting for a buffer once it
            // has one (or failed to get one).
            let mut waiting = true;
            let mut got_buffer = || {
                if std::mem::take(&mut waiting) {
                    self.got_buffer(&mut self.lock(), index);
                }
            };
            let read = self.source.check_unchanged().and_then(|()| {
                self.source
                    .read_owned(index, offset, length, || self.pool_room(), &mut got_buffer)
            });
            got_buffer();
            Some(Box::new(read?))
        };
        if verify {
            match &data {
                // Not published yet: no C caller can be writing to it.
                Some(buffer) => {
                    let verified = self
                        .tables
                        .model()
                        .verify_layer_bytes(index, buffer.as_slice());
                    // A remote layer's disk-tier copy of those bytes goes too.
                    #[cfg(feature = "remote")]
                    if matches!(verified, Err(FormatError::ChecksumMismatch { .. })) {
                        self.source.forget_kept(offset, length);
                    }
                    self.count_verification(index, verified)?;
                }
                // The mapping's pages may be written by C callers holding
                // pointers from earlier loads (private copies): verify the
                // file's bytes, read piecewise, never a slice of the mapping.
                None => self.verify_from_file(index)?,
            }
        }
        let elapsed = started.elapsed();
        self.counters
            .bytes_read
            .fetch_add(length, Ordering::Relaxed);
        self.counters
            .load_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        tracing::debug!(
            layer = index,
            bytes = length,
            micros = elapsed.as_micros() as u64,
            "loaded layer"
        );
        Ok(data)
    }

    /// Bytes the owned backend's buffer pool may hold: the budget less
    /// everything charged, plus the buffers of loads charged and holding none
    /// yet (so pooled memory plus the buffers layers hold stays within it).
    pub(crate) fn pool_room(&self) -> u64 {
        self.pool_room_in(&self.lock())
    }

    /// [`pool_room`](Shared::pool_room) under the lock.
    pub(crate) fn pool_room_in(&self, state: &State) -> u64 {
        self.room_beside(state) + state.awaiting_buffers
    }

    /// The budget less everything `state` charges (pages still being dropped included).
    pub(crate) fn room_beside(&self, state: &State) -> u64 {
        self.config
            .max_cache_size
            .saturating_sub(state.engine.usage() + state.transient_charge + state.reclaim_pending)
    }

    /// Reads bytes of layer `index` from the file without loading or charging
    /// it (and without kernel read-ahead); unless `keep_page_cache`, drops the
    /// layer's pages from the page cache afterwards when the layer is not in
    /// memory (they are not charged).
    pub(crate) fn read_uncharged(
        &self,
        index: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), StoreError> {
        self.source.read_exact_at_no_readahead(offset, buf)?;
        if !self.config.keep_page_cache
            && self.slots.at(index as usize).load().state() == SlotState::Absent
        {
            // The whole layer's pages, not only those just read: the page
            // cache holds large folios, which a drop only takes when they lie
            // entirely inside its range (a folio may straddle two reads).
            let (start, length) = self.cache_drop_span(index);
            self.source.drop_cached(start, length);
        }
        Ok(())
    }

    /// Verifies layer `index`'s checksum against the file's bytes, read in
    /// chunks of [`VERIFY_CHUNK`] (so neither the layer nor the mapping is
    /// touched, and nothing is charged). Layers without a checksum (legacy
    /// v1) pass.
    pub(crate) fn verify_from_file(&self, index: u64) -> Result<(), StoreError> {
        let (offset, length) = self.span(index);
        let mut failed = None;
        let verified = self.tables.model().verify_layer_chunks(index, |sink| {
            let mut scratch = vec![0u8; VERIFY_CHUNK.min(length) as usize];
            let mut done = 0u64;
            while done < length {
                let n = VERIFY_CHUNK.min(length - done) as usize;
                if let Err(error) = self.read_uncharged(index, offset + done, &mut scratch[..n]) {
                    failed = Some(error);
                    return;
                }
                sink(&scratch[..n]);
                done += n as u64;
            }
        });
        if let Some(error) = failed {
            return Err(error);
        }
        self.count_verification(index, verified)
    }

    /// Counts a checksum verification's outcome; a mismatch (or another
    /// format error) becomes the error, a layer without a checksum passes.
    pub(crate) fn count_verification(
        &self,
        index: u64,
        verified: Result<(), FormatError>,
    ) -> Result<(), StoreError> {
        match verified {
            Ok(()) => {
                self.counters
                    .checksums_verified
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error @ FormatError::ChecksumMismatch { .. }) => {
                self.counters
                    .checksum_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(layer = index, %error, "checksum mismatch");
                Err(self.format_error(error))
            }
            // No checksum (legacy v1): nothing to verify.
            Err(FormatError::NoChecksum { .. }) => Ok(()),
            Err(error) => Err(self.format_error(error)),
        }
    }

    /// The bytes of a pinned layer.
    #[inline(always)]
    pub(crate) fn pinned_bytes(&self, index: u64) -> (*const u8, usize) {
        let (offset, length) = self.span(index);
        if let Some(base) = self.mapped_base {
            // Spans were validated against the file's length at open, and the
            // mapping covers the whole file, so `offset..offset+length` is inside
            // it. The address comes from the mapping's exposed provenance.
            let pointer = std::ptr::with_exposed_provenance::<u8>(base + offset as usize);
            return (pointer, length as usize);
        }
        let buffer = self.slots.at(index as usize).buffer();
        if buffer.is_null() {
            (std::ptr::NonNull::<u8>::dangling().as_ptr(), 0)
        } else {
            // SAFETY: the caller holds a pin, so the slot is `Cached` or
            // `Transient` and its buffer (published before the pin's Acquire) is
            // not freed until a claim, which needs zero pins. Only the buffer's
            // fields are read (no reference to its bytes is made here); the
            // pointer keeps the allocation's write permission for C callers.
            let (pointer, len) = unsafe { ((*buffer).as_ptr(), (*buffer).len()) };
            (pointer.cast_const(), len)
        }
    }

    /// Called by a guard's drop.
    #[inline(always)]
    pub(crate) fn unpin(&self, index: u64, stripe: usize) {
        let slot = self.slots.at(index as usize);
        if slot.unpin(stripe) {
            self.last_transient_unpin(index);
        }
        if self.over_budget.load(Ordering::Relaxed) && slot.pins() == 0 {
            self.back_within_budget();
        }
    }

    /// A pin of a `Transient` layer went: drop it if that was the last one,
    /// unless the streaming window holds it (read ahead, not yet used) or it
    /// was promoted meanwhile. (The claim sees whether any pin is left.)
    #[inline(never)]
    pub(crate) fn last_transient_unpin(&self, index: u64) {
        let mut evictions = Evictions::default();
        {
            let mut state = self.lock();
            let slot = self.slots.at(index as usize);
            if !state.window.contains(LayerId(index as u32))
                && slot.claim_if(SlotState::Transient, |soft| soft == 0)
            {
                state.transient_charge -= self.charge(&state, index);
                self.take_eviction(&mut state, index, &mut evictions);
            }
        }
        self.finish_evictions(evictions);
    }
}
