//! [`MappedModel`]: the store itself.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tinyai_cache::{AccessKind, Decision, Engine, EngineConfig, LayerId};
use tinyai_format::{DType, FormatError, Model};

use crate::config::{Backend, Progress, StoreConfig};
use crate::error::StoreError;
use crate::guard::LayerGuard;
use crate::source::{AlignedBuf, Source, page_size};
use crate::stats::{Counters, Stats};
use crate::tables::Tables;

/// Where a layer's bytes are, as far as the cache is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheState {
    /// Not in memory (in `Mapped` mode its pages may still be faulted in by old slices).
    NotLoaded,
    /// Being loaded (by a demand request or a prefetch).
    Loading,
    /// Resident and charged to the budget.
    Cached,
    /// Served outside the cache (it did not fit, or the policy declined to keep it);
    /// dropped when its last guard goes.
    Transient,
}

/// What the store knows about one layer (TinyAI's `TinyAILayerDescriptor`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerDescriptor {
    /// Layer index.
    pub index: u64,
    /// Absolute offset of the layer's bytes in the file.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Bits per weight.
    pub precision_bits: u32,
    /// Element type of the layer.
    pub dtype: DType,
    /// Cache state.
    pub state: CacheState,
    /// Retention priority (0.0..=1.0; default 0.5).
    pub priority: f32,
    /// Milliseconds since the Unix epoch of the last demand access (0 if never).
    pub last_accessed_ms: u64,
    /// Number of demand accesses.
    pub access_count: u64,
    /// Bytes this layer is charged when cached.
    pub charge: u64,
}

#[derive(Debug, Default)]
enum Residency {
    #[default]
    Absent,
    Loading {
        prefetch: bool,
        /// Loaded outside the cache (demand bypass, or a prefetch into the streaming window).
        transient: bool,
        generation: u64,
    },
    Cached {
        data: Option<Arc<AlignedBuf>>,
        prefetched_unused: bool,
    },
    Transient {
        data: Option<Arc<AlignedBuf>>,
        prefetched_unused: bool,
    },
}

#[derive(Debug, Default)]
struct Slot {
    residency: Residency,
    guards: u32,
    access_count: u64,
    last_accessed_ms: u64,
    verified: bool,
    locked: bool,
    /// Charged to the streaming window (a transient prefetch not yet held by a guard).
    in_window: bool,
}

#[derive(Debug)]
struct State {
    engine: Engine,
    slots: Vec<Slot>,
    transient_charge: u64,
    last_demand: Option<u64>,
    sequential_run: u64,
    /// Declared access order and each layer's position in it.
    order: Option<(Vec<u64>, Vec<u32>)>,
    auto_order: bool,
    generation: u64,
    /// Budget share for layers prefetched outside the cache (0 without automatic prefetch).
    window_budget: u64,
    /// Charges of window layers not yet held by a guard.
    window_used: u64,
    /// Window layers in the order they were prefetched (oldest dropped first).
    window_queue: std::collections::VecDeque<u64>,
    /// Prefetch tasks issued and not finished (close waits for them).
    in_flight: usize,
    /// Layers whose prefetch task is queued on the pool, oldest first.
    queued_reads: std::collections::VecDeque<u64>,
}

/// Memory to drop after the state lock is released.
#[derive(Debug)]
struct Eviction {
    index: u64,
    data: Option<Arc<AlignedBuf>>,
    unlock: bool,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) source: Source,
    tables: Tables,
    /// (offset, length) of every layer, for the hot path.
    spans: Vec<(u64, u64)>,
    config: StoreConfig,
    state: Mutex<State>,
    loaded: Condvar,
    pub(crate) counters: Counters,
    pool: Option<rayon::ThreadPool>,
    /// One thread that drops evicted pages, so that neither the caller nor the
    /// prefetch threads wait for it.
    reclaim: Option<rayon::ThreadPool>,
    started: Instant,
    lookahead_epoch: AtomicU64,
    closed: AtomicBool,
    mlock_warned: AtomicBool,
}

/// A model file opened for layer-by-layer access under a memory budget.
///
/// All methods take `&self` and may be called from any number of threads.
/// Dropping the model cancels queued prefetches; memory held by live
/// [`LayerGuard`]s stays valid until they are dropped.
#[derive(Debug)]
pub struct MappedModel {
    shared: Arc<Shared>,
}

/// The share of the budget set aside for layers prefetched outside the cache (the
/// "streaming window"): [`StoreConfig::streaming_window`], or by default, with
/// automatic prefetch on, `max(budget/8, largest layer)` (room to read the next
/// large layer while the current one is in use), at most half the budget; else 0.
fn streaming_window(config: &StoreConfig, sizes: &[u64]) -> u64 {
    if let Some(window) = config.streaming_window {
        return window;
    }
    if !config.prefetch_enabled || config.prefetch_threads == 0 || config.lookahead == 0 {
        return 0;
    }
    let page = page_size();
    let largest = sizes
        .iter()
        .map(|&size| size.next_multiple_of(page).max(config.min_layer_cache_size))
        .max()
        .unwrap_or(0);
    (config.max_cache_size / 8)
        .max(largest)
        .min(config.max_cache_size / 2)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl MappedModel {
    /// Opens and validates `path` (v2 or legacy v1 `.tmai`).
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<MappedModel, StoreError> {
        let path = path.as_ref();
        let span = tracing::info_span!("open", path = %path.display());
        let _entered = span.enter();
        config.validate()?;
        let source = Source::open(path, config.backend)?;
        let tables = Tables::read(&source)?;
        let model = tables.model();
        let spans: Vec<(u64, u64)> = model.layers().map(|l| (l.offset, l.length)).collect();
        let layer_count = spans.len();
        if layer_count > u32::MAX as usize {
            return Err(StoreError::InvalidConfig(format!(
                "{layer_count} layers exceed the store's limit of {}",
                u32::MAX
            )));
        }
        let sizes: Vec<u64> = spans.iter().map(|&(_, length)| length).collect();
        let window_budget = streaming_window(&config, &sizes);
        let engine = Engine::new(
            EngineConfig {
                budget_bytes: config.max_cache_size - window_budget,
                min_layer_charge: config.min_layer_cache_size,
                page_size: page_size(),
                policy: config.effective_policy(),
            },
            &sizes,
        )?;
        let start_threads = |count: usize, name: &'static str| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(count)
                .thread_name(move |i| format!("tinyai-{name}-{i}"))
                .build()
                .map_err(|error| {
                    StoreError::InvalidConfig(format!("cannot start {name} threads: {error}"))
                })
        };
        let (pool, reclaim) = if config.prefetch_threads > 0 {
            (
                Some(start_threads(config.prefetch_threads, "prefetch")?),
                Some(start_threads(1, "reclaim")?),
            )
        } else {
            (None, None)
        };
        let mut slots = Vec::with_capacity(layer_count);
        slots.resize_with(layer_count, Slot::default);
        tracing::info!(
            layers = layer_count,
            file_bytes = source.length(),
            version = ?model.version(),
            budget = config.max_cache_size,
            policy = config.effective_policy().name(),
            backend = ?config.backend,
            "opened model"
        );
        let shared = Arc::new(Shared {
            source,
            tables,
            spans,
            state: Mutex::new(State {
                engine,
                slots,
                transient_charge: 0,
                last_demand: None,
                sequential_run: 0,
                order: None,
                auto_order: false,
                generation: 0,
                window_budget,
                window_used: 0,
                window_queue: std::collections::VecDeque::new(),
                in_flight: 0,
                queued_reads: std::collections::VecDeque::new(),
            }),
            config,
            loaded: Condvar::new(),
            counters: Counters::default(),
            pool,
            reclaim,
            started: Instant::now(),
            lookahead_epoch: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            mlock_warned: AtomicBool::new(false),
        });
        Ok(MappedModel { shared })
    }

    /// The parsed header and tables (layer names, tensors, metadata).
    pub fn format(&self) -> &Model<'_> {
        self.shared.tables.model()
    }

    /// The configuration the model was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// The backend in effect: the configured one, except that a `Mapped` open
    /// falls back to `Owned` (with a warning) when the file cannot be mapped,
    /// e.g. under an address-space limit smaller than the file.
    pub fn backend(&self) -> Backend {
        self.shared.source.backend()
    }

    /// Number of layers.
    pub fn layer_count(&self) -> u64 {
        self.shared.spans.len() as u64
    }

    /// Describes layer `index`.
    pub fn descriptor(&self, index: u64) -> Result<LayerDescriptor, StoreError> {
        let id = self.shared.layer_id(index)?;
        let info = self
            .format()
            .layer(index)
            .map_err(|source| self.shared.format_error(source))?;
        let state = self.shared.lock();
        let slot = &state.slots[index as usize];
        Ok(LayerDescriptor {
            index,
            offset: info.offset,
            size: info.length,
            precision_bits: info.precision_bits,
            dtype: info.dtype,
            state: match slot.residency {
                Residency::Absent => CacheState::NotLoaded,
                Residency::Loading { .. } => CacheState::Loading,
                Residency::Cached { .. } => CacheState::Cached,
                Residency::Transient { .. } => CacheState::Transient,
            },
            priority: state.engine.priority(id)?,
            last_accessed_ms: slot.last_accessed_ms,
            access_count: slot.access_count,
            charge: state.engine.charge(id)?,
        })
    }

    /// Returns layer `index`, loading it if needed. The guard pins the layer: it is
    /// not evicted (and its bytes stay valid) while the guard lives.
    pub fn get(&self, index: u64) -> Result<LayerGuard, StoreError> {
        let guard = self.shared.get(index)?;
        if self.shared.config.prefetch_enabled {
            self.shared.lookahead(index);
        }
        Ok(guard)
    }

    /// Starts loading layer `index` in the background (on the prefetch pool; on the
    /// caller's thread when `prefetch_threads` is 0) and returns at once.
    ///
    /// Returns `Ok(true)` if the layer is resident, loading or now being loaded,
    /// `Ok(false)` if the cache declined (no room without evicting something
    /// pinned or more valuable).
    pub fn prefetch(&self, index: u64) -> Result<bool, StoreError> {
        self.shared.prefetch(index, None)
    }

    /// Drops layer `index` from the cache. If guards hold it, it is dropped when
    /// the last one goes. Releasing a layer that is not cached does nothing.
    pub fn release(&self, index: u64) -> Result<(), StoreError> {
        let id = self.shared.layer_id(index)?;
        let mut evictions = Vec::new();
        {
            let mut state = self.shared.lock();
            let slot = &state.slots[index as usize];
            let cached = matches!(slot.residency, Residency::Cached { .. });
            let unused_transient =
                matches!(slot.residency, Residency::Transient { .. }) && slot.guards == 0;
            if cached {
                if state.engine.remove(id)? {
                    evictions.push(state.take_eviction(index));
                }
            } else if unused_transient {
                // A layer read ahead outside the cache and not yet used: drop it.
                state.leave_window(index);
                state.transient_charge -= state.engine.charge(id)?;
                evictions.push(state.take_eviction(index));
            }
        }
        self.shared.finish_evictions(evictions);
        Ok(())
    }

    /// Charged bytes of cached layers (the budget's currency: each layer counts
    /// `max(min_layer_cache_size, size rounded up to the page size)`), plus those
    /// of transient layers held by guards.
    pub fn memory_usage(&self) -> u64 {
        let state = self.shared.lock();
        state.engine.usage() + state.transient_charge
    }

    /// Charged bytes of cached layers only (always ≤ the budget, except for pinned layers).
    pub fn cached_bytes(&self) -> u64 {
        self.shared.lock().engine.usage()
    }

    /// Bytes of the mapping whose pages are resident in memory (`mincore`; 0 for
    /// the `Owned` backend). This is the page-cache residency of the file's range.
    pub fn resident_bytes(&self) -> u64 {
        self.shared.source.resident_bytes()
    }

    /// With [`crate::Backend::Mapped`]: layer `index`'s bytes in the mapping, without
    /// loading, pinning or counting an access (untouched pages fault in from the file
    /// on access). Valid as long as the model. `None` with [`crate::Backend::Owned`]
    /// or for an index out of range.
    pub fn mapped_bytes(&self, index: u64) -> Option<&[u8]> {
        let &(offset, length) = self.shared.spans.get(usize::try_from(index).ok()?)?;
        self.shared.source.mapped(offset, length)
    }

    /// `Mapped` backend: a writable pointer to layer `index` in the private
    /// (copy-on-write) mapping, for C callers whose code writes into weights.
    /// Writes never reach the file; they stay private to this process and are
    /// discarded when the layer's pages are dropped (eviction or release).
    /// `None` for the `Owned` backend or an out-of-range index. Rust code should
    /// use [`MappedModel::get`] and the guard's read-only slice instead.
    pub fn mapped_ptr_mut(&self, index: u64) -> Option<*mut u8> {
        let &(offset, length) = self.shared.spans.get(usize::try_from(index).ok()?)?;
        self.shared.source.mapped_mut_ptr(offset, length)
    }

    /// Sets layer `index`'s retention priority (clamped to 0.0..=1.0; NaN → default).
    /// How each policy weighs it: [`tinyai_cache::Engine::set_priority`].
    pub fn set_priority(&self, index: u64, priority: f32) -> Result<(), StoreError> {
        let id = self.shared.layer_id(index)?;
        let priority = if priority.is_nan() {
            tinyai_cache::engine::DEFAULT_PRIORITY
        } else {
            priority
        };
        self.shared.lock().engine.set_priority(id, priority)?;
        Ok(())
    }

    /// Resets every priority to the default.
    pub fn reset_priorities(&self) {
        self.shared.lock().engine.reset_priorities();
    }

    /// Declares the order in which layers will be accessed (cyclically), or clears it.
    /// The cache uses it to keep what is needed soonest; automatic prefetch follows it.
    pub fn set_access_order(&self, order: Option<Vec<u64>>) -> Result<(), StoreError> {
        let count = self.layer_count();
        let mut state = self.shared.lock();
        match order {
            Some(order) => {
                if let Some(&bad) = order.iter().find(|&&i| i >= count) {
                    return Err(StoreError::LayerOutOfRange { index: bad, count });
                }
                if state
                    .order
                    .as_ref()
                    .is_some_and(|(current, _)| *current == order)
                {
                    // Declaring the same order again (a new forward pass) changes nothing.
                    state.auto_order = false;
                    return Ok(());
                }
                state.set_order(order, count);
                state.auto_order = false;
            }
            None => {
                state.order = None;
                state.auto_order = false;
                state.engine.set_access_order(None);
            }
        }
        self.shared.lookahead_epoch.fetch_add(1, Ordering::Relaxed);
        let stale = self.shared.drop_unused_window(&mut state);
        drop(state);
        self.shared.finish_evictions(stale);
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let (cached, transient) = {
            let state = self.shared.lock();
            (state.engine.usage(), state.transient_charge)
        };
        self.shared.counters.snapshot(cached, transient)
    }

    /// Verifies layer `index`'s checksum by reading its bytes (through the cache).
    pub fn verify_layer(&self, index: u64) -> Result<(), StoreError> {
        let guard = self.shared.get(index)?;
        self.format()
            .verify_layer_bytes(index, &guard)
            .map_err(|source| self.shared.format_error(source))
    }

    /// Loads every layer in order (through the cache, so with a budget smaller than
    /// the model early layers are evicted again), reporting progress to the
    /// configured callback, which may cancel. Returns the bytes touched.
    pub fn load_all(&self) -> Result<u64, StoreError> {
        let total = self.layer_count();
        let mut bytes = 0;
        for index in 0..total {
            let guard = self.get(index)?;
            bytes += guard.len() as u64;
            drop(guard);
            if let Some(progress) = &self.shared.config.progress
                && !progress(Progress {
                    completed: index + 1,
                    total,
                    bytes,
                })
            {
                return Err(StoreError::Cancelled {
                    completed: index + 1,
                    total,
                });
            }
        }
        Ok(bytes)
    }

    /// Iterates layers in `order`, prefetching the next ones while the caller works
    /// on the current one (TinyAI's forward-pass scheduler). The order is declared
    /// to the cache for the duration of the iterator.
    pub fn forward_pass(
        &self,
        order: impl IntoIterator<Item = u64>,
    ) -> Result<crate::ForwardPass<'_>, StoreError> {
        let order: Vec<u64> = order.into_iter().collect();
        self.set_access_order(Some(order.clone()))?;
        Ok(crate::ForwardPass::new(self, order))
    }
}

impl Drop for MappedModel {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        // Wait for prefetch tasks in flight (queued ones see `closed` and skip the
        // read), so that the mapping is released when the last guard goes.
        let mut state = self.shared.lock();
        while state.in_flight > 0 {
            state = self
                .shared
                .loaded
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        drop(state);
        tracing::info!(path = %self.shared.source.path().display(), "closed model");
    }
}

impl State {
    fn set_order(&mut self, order: Vec<u64>, count: u64) {
        let mut position = vec![u32::MAX; count as usize];
        for (i, &layer) in order.iter().enumerate() {
            if position[layer as usize] == u32::MAX {
                position[layer as usize] = i as u32;
            }
        }
        self.engine.set_access_order(Some(
            order.iter().map(|&layer| LayerId(layer as u32)).collect(),
        ));
        self.order = Some((order, position));
    }

    /// Takes a layer out of the streaming window's accounting.
    fn leave_window(&mut self, index: u64) {
        if std::mem::take(&mut self.slots[index as usize].in_window) {
            let charge = self
                .engine
                .charge(LayerId(index as u32))
                .unwrap_or_default();
            self.window_used -= charge;
        }
    }

    /// Marks a cached layer absent and returns what must be dropped.
    fn take_eviction(&mut self, index: u64) -> Eviction {
        let slot = &mut self.slots[index as usize];
        let unlock = std::mem::take(&mut slot.locked);
        match std::mem::take(&mut slot.residency) {
            Residency::Cached { data, .. } | Residency::Transient { data, .. } => Eviction {
                index,
                data,
                unlock,
            },
            other => {
                slot.residency = other;
                Eviction {
                    index,
                    data: None,
                    unlock,
                }
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a
        // way that breaks memory safety; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn layer_id(&self, index: u64) -> Result<LayerId, StoreError> {
        if index >= self.spans.len() as u64 {
            return Err(StoreError::LayerOutOfRange {
                index,
                count: self.spans.len() as u64,
            });
        }
        Ok(LayerId(index as u32))
    }

    fn format_error(&self, source: FormatError) -> StoreError {
        StoreError::Format {
            path: self.source.path().to_path_buf(),
            source,
        }
    }

    pub(crate) fn span(&self, index: u64) -> (u64, u64) {
        self.spans[index as usize]
    }

    fn get(self: &Arc<Self>, index: u64) -> Result<LayerGuard, StoreError> {
        let id = self.layer_id(index)?;
        let mut state = self.lock();
        loop {
            let slot = &mut state.slots[index as usize];
            match &mut slot.residency {
                Residency::Cached {
                    data,
                    prefetched_unused,
                }
                | Residency::Transient {
                    data,
                    prefetched_unused,
                } => {
                    // A hit: in the cache, or held outside it (window or another guard).
                    let data = data.clone();
                    if std::mem::take(prefetched_unused) {
                        self.counters.prefetch_used.fetch_add(1, Ordering::Relaxed);
                    }
                    slot.guards += 1;
                    slot.access_count += 1;
                    slot.last_accessed_ms = unix_ms();
                    if matches!(slot.residency, Residency::Cached { .. }) {
                        let now = self.now();
                        state.engine.request(id, AccessKind::Demand, now)?;
                        state.engine.pin(id)?;
                    } else {
                        state.leave_window(index);
                    }
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(LayerGuard::new(Arc::clone(self), index, data));
                }
                Residency::Loading { prefetch, .. } => {
                    if std::mem::take(prefetch) {
                        // A demand arrived for a layer still being prefetched: the
                        // prefetch was useful (it started the read early).
                        self.counters.prefetch_used.fetch_add(1, Ordering::Relaxed);
                    }
                    state = self
                        .loaded
                        .wait(state)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                Residency::Absent => break,
            }
        }
        // Miss: decide, then load outside the lock.
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let now = self.now();
        let decision = state.engine.request(id, AccessKind::Demand, now)?;
        let (transient, victims) = match decision {
            Decision::Admit { victims } => (false, victims),
            Decision::Hit => (false, Vec::new()),
            Decision::Bypass => (true, Vec::new()),
        };
        if transient {
            self.counters.bypasses.fetch_add(1, Ordering::Relaxed);
            state.transient_charge += state.engine.charge(id)?;
        } else {
            state.engine.pin(id)?;
        }
        let evictions = self.evict_victims(&mut state, &victims);
        state.generation += 1;
        let generation = state.generation;
        let slot = &mut state.slots[index as usize];
        slot.residency = Residency::Loading {
            prefetch: false,
            transient,
            generation,
        };
        slot.access_count += 1;
        slot.last_accessed_ms = unix_ms();
        let needs_verify = self.config.verify_checksums && !slot.verified;
        drop(state);
        self.finish_evictions(evictions);

        let loaded = self.load(index, needs_verify);
        let mut state = self.lock();
        let result = match loaded {
            Ok(data) => {
                let slot = &mut state.slots[index as usize];
                slot.verified |= needs_verify;
                slot.guards += 1;
                slot.residency = if transient {
                    Residency::Transient {
                        data: data.clone(),
                        prefetched_unused: false,
                    }
                } else {
                    Residency::Cached {
                        data: data.clone(),
                        prefetched_unused: false,
                    }
                };
                if !transient {
                    self.maybe_lock_memory(&mut state, index);
                }
                Ok(LayerGuard::new(Arc::clone(self), index, data))
            }
            Err(error) => {
                state.slots[index as usize].residency = Residency::Absent;
                if transient {
                    state.transient_charge -= state.engine.charge(id)?;
                } else {
                    state.engine.unpin(id)?;
                    state.engine.remove(id)?;
                }
                Err(error)
            }
        };
        drop(state);
        self.loaded.notify_all();
        result
    }

    /// Reads (Owned) or faults in (Mapped) a layer; verifies it if asked.
    fn load(&self, index: u64, verify: bool) -> Result<Option<Arc<AlignedBuf>>, StoreError> {
        let (offset, length) = self.span(index);
        let started = Instant::now();
        self.source.check_unchanged()?;
        let data = if self.source.is_mapped() {
            self.source.populate(offset, length);
            None
        } else {
            Some(Arc::new(self.source.read_owned(index, offset, length)?))
        };
        if verify {
            let bytes = match &data {
                Some(buffer) => buffer.as_slice(),
                None => self.source.mapped(offset, length).unwrap_or(&[]),
            };
            if let Err(error) = self.tables.model().verify_layer_bytes(index, bytes)
                && matches!(error, FormatError::ChecksumMismatch { .. })
            {
                self.counters
                    .checksum_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(layer = index, %error, "checksum mismatch");
                return Err(self.format_error(error));
            }
            // No checksum (legacy v1): nothing to verify.
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

    fn maybe_lock_memory(&self, state: &mut State, index: u64) {
        if !self.config.lock_in_memory {
            return;
        }
        let (offset, length) = self.span(index);
        let locked = match &state.slots[index as usize].residency {
            Residency::Cached {
                data: Some(buffer), ..
            } => crate::source::lock_slice(buffer.as_slice(), true),
            Residency::Cached { data: None, .. } => self.source.lock(offset, length, true),
            _ => return,
        };
        if locked {
            state.slots[index as usize].locked = true;
        } else if !self.mlock_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                layer = index,
                "mlock refused (RLIMIT_MEMLOCK?); continuing without locking layers in memory"
            );
        }
    }

    /// Removes victims from the slots (the engine already dropped them).
    fn evict_victims(&self, state: &mut State, victims: &[LayerId]) -> Vec<Eviction> {
        victims
            .iter()
            .map(|victim| {
                let index = u64::from(victim.0);
                if let Residency::Cached {
                    prefetched_unused: true,
                    ..
                } = state.slots[index as usize].residency
                {
                    self.counters
                        .prefetch_wasted
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                state.take_eviction(index)
            })
            .collect()
    }

    /// Drops evicted memory (outside the state lock).
    fn finish_evictions(self: &Arc<Self>, evictions: Vec<Eviction>) {
        let mut mapped = Vec::new();
        for eviction in evictions {
            let (_, length) = self.span(eviction.index);
            tracing::debug!(layer = eviction.index, bytes = length, "evicted layer");
            match eviction.data {
                Some(buffer) => {
                    if eviction.unlock {
                        crate::source::lock_slice(buffer.as_slice(), false);
                    }
                    drop(buffer);
                }
                None => mapped.push(eviction),
            }
        }
        if mapped.is_empty() {
            return;
        }
        // Dropping pages costs milliseconds per 16 MiB (page-cache invalidation):
        // do it on the reclaim thread so the caller computes and the prefetch
        // threads keep reading.
        match &self.reclaim {
            Some(pool) => {
                self.lock().in_flight += 1;
                let shared = Arc::clone(self);
                pool.spawn(move || {
                    shared.drop_mapped_pages(mapped);
                    shared.lock().in_flight -= 1;
                    shared.loaded.notify_all();
                });
            }
            None => self.drop_mapped_pages(mapped),
        }
    }

    fn drop_mapped_pages(&self, evictions: Vec<Eviction>) {
        for eviction in evictions {
            let (offset, length) = self.span(eviction.index);
            if eviction.unlock {
                self.source.lock(offset, length, false);
            }
            // Skip a layer that was loaded again meanwhile.
            let reloaded = !matches!(
                self.lock().slots[eviction.index as usize].residency,
                Residency::Absent
            );
            if !reloaded {
                self.source
                    .drop_pages(offset, length, self.config.keep_page_cache);
            }
        }
    }

    /// Called by a guard's drop.
    pub(crate) fn unpin(self: &Arc<Self>, index: u64) {
        let id = LayerId(index as u32);
        let mut evictions = Vec::new();
        {
            let mut state = self.lock();
            let slot = &mut state.slots[index as usize];
            slot.guards = slot.guards.saturating_sub(1);
            let last = slot.guards == 0;
            match slot.residency {
                Residency::Cached { .. } => {
                    let _ = state.engine.unpin(id);
                    if !state.engine.is_resident(id) {
                        // A release deferred while pinned took effect.
                        self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                        evictions.push(state.take_eviction(index));
                    }
                }
                Residency::Transient { .. } if last => {
                    if let Ok(charge) = state.engine.charge(id) {
                        state.transient_charge -= charge;
                    }
                    evictions.push(state.take_eviction(index));
                }
                _ => {}
            }
        }
        self.finish_evictions(evictions);
    }

    fn prefetch(self: &Arc<Self>, index: u64, epoch: Option<u64>) -> Result<bool, StoreError> {
        let id = self.layer_id(index)?;
        let mut state = self.lock();
        match state.slots[index as usize].residency {
            Residency::Absent => {}
            Residency::Transient { .. } | Residency::Cached { .. } | Residency::Loading { .. } => {
                return Ok(true);
            }
        }
        let now = self.now();
        let charge = state.engine.charge(id)?;
        let mut evictions = Vec::new();
        let transient = match state.engine.request(id, AccessKind::Prefetch, now)? {
            Decision::Admit { victims } => {
                state.engine.pin(id)?;
                evictions = self.evict_victims(&mut state, &victims);
                false
            }
            Decision::Hit => {
                state.engine.pin(id)?;
                false
            }
            Decision::Bypass => {
                // Not worth a place in the cache: stream it through the window if it fits.
                while state
                    .window_queue
                    .front()
                    .is_some_and(|&front| !state.slots[front as usize].in_window)
                {
                    state.window_queue.pop_front();
                }
                if state.window_used + charge > state.window_budget {
                    return Ok(false);
                }
                state.window_used += charge;
                state.transient_charge += charge;
                state.slots[index as usize].in_window = true;
                state.window_queue.push_back(index);
                true
            }
        };
        state.generation += 1;
        let generation = state.generation;
        state.slots[index as usize].residency = Residency::Loading {
            prefetch: true,
            transient,
            generation,
        };
        let verify = self.config.verify_checksums && !state.slots[index as usize].verified;
        state.in_flight += 1;
        drop(state);
        self.finish_evictions(evictions);
        self.counters
            .prefetch_issued
            .fetch_add(1, Ordering::Relaxed);
        tracing::trace!(layer = index, transient, "prefetch issued");
        match &self.pool {
            Some(pool) => {
                self.lock().queued_reads.push_back(index);
                let shared = Arc::clone(self);
                pool.spawn(move || shared.run_prefetch(index, generation, verify, epoch));
            }
            None => self.run_prefetch(index, generation, verify, epoch),
        }
        Ok(true)
    }

    fn run_prefetch(
        self: &Arc<Self>,
        index: u64,
        generation: u64,
        verify: bool,
        epoch: Option<u64>,
    ) {
        let id = LayerId(index as u32);
        let stale = self.closed.load(Ordering::Acquire)
            || epoch.is_some_and(|e| e != self.lookahead_epoch.load(Ordering::Relaxed));
        let still_prefetch_only = {
            let state = self.lock();
            matches!(
                state.slots[index as usize].residency,
                Residency::Loading { generation: g, prefetch: true, .. } if g == generation
            )
        };
        // Keep the disk busy: before waiting for this layer's pages, queue the read
        // of the next queued prefetch (it is already charged, so this stays in budget).
        let next = {
            let mut state = self.lock();
            state.queued_reads.retain(|&queued| queued != index);
            state.queued_reads.front().copied()
        };
        if let Some(next) = next.filter(|_| !stale) {
            let (offset, length) = self.span(next);
            self.source.start_read(offset, length);
        }
        // Cancel a stale prefetch unless a demand request is already waiting for it.
        let result = if stale && still_prefetch_only {
            None
        } else {
            Some(self.load(index, verify))
        };
        let mut evictions = Vec::new();
        {
            let mut state = self.lock();
            let slot = &mut state.slots[index as usize];
            if let Residency::Loading {
                generation: g,
                prefetch,
                transient,
            } = slot.residency
                && g == generation
            {
                let demanded = !prefetch;
                match result {
                    Some(Ok(data)) => {
                        slot.verified |= verify;
                        if transient {
                            slot.residency = Residency::Transient {
                                data,
                                prefetched_unused: !demanded,
                            };
                        } else {
                            slot.residency = Residency::Cached {
                                data,
                                prefetched_unused: !demanded,
                            };
                            let _ = state.engine.unpin(id);
                            self.maybe_lock_memory(&mut state, index);
                            if !state.engine.is_resident(id) {
                                evictions.push(state.take_eviction(index));
                            }
                        }
                        tracing::trace!(layer = index, "prefetch completed");
                    }
                    failed => {
                        if let Some(Err(error)) = &failed {
                            tracing::debug!(layer = index, %error, "prefetch failed");
                        } else {
                            self.counters
                                .prefetch_cancelled
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::trace!(layer = index, "stale prefetch cancelled");
                        }
                        slot.residency = Residency::Absent;
                        if transient {
                            state.leave_window(index);
                            if let Ok(charge) = state.engine.charge(id) {
                                state.transient_charge -= charge;
                            }
                        } else {
                            let _ = state.engine.unpin(id);
                            let _ = state.engine.remove(id);
                        }
                    }
                }
            }
            state.in_flight -= 1;
        }
        self.finish_evictions(evictions);
        self.loaded.notify_all();
    }

    /// Drops every window layer that was prefetched but not used (the pattern changed).
    fn drop_unused_window(&self, state: &mut State) -> Vec<Eviction> {
        let queued: Vec<u64> = state.window_queue.drain(..).collect();
        let mut evictions = Vec::new();
        for index in queued {
            let slot = &state.slots[index as usize];
            let unused = slot.in_window
                && slot.guards == 0
                && matches!(
                    slot.residency,
                    Residency::Transient {
                        prefetched_unused: true,
                        ..
                    }
                );
            if unused {
                state.leave_window(index);
                if let Ok(charge) = state.engine.charge(LayerId(index as u32)) {
                    state.transient_charge -= charge;
                }
                self.counters
                    .prefetch_wasted
                    .fetch_add(1, Ordering::Relaxed);
                evictions.push(state.take_eviction(index));
            } else if slot.in_window {
                state.window_queue.push_back(index);
            }
        }
        evictions
    }

    /// Automatic prefetch after a demand access of `index`.
    fn lookahead(self: &Arc<Self>, index: u64) {
        if self.pool.is_none() || self.config.lookahead == 0 {
            return;
        }
        let count = self.spans.len() as u64;
        let mut stale_window = Vec::new();
        let next: Vec<u64> = {
            let mut state = self.lock();
            let previous = state.last_demand.replace(index);
            let sequential = previous.is_some_and(|last| index == (last + 1) % count);
            let repeated = previous == Some(index);
            if sequential {
                state.sequential_run += 1;
            } else if !repeated && state.sequential_run > 0 {
                state.sequential_run = 0;
                self.lookahead_epoch.fetch_add(1, Ordering::Relaxed);
                stale_window = self.drop_unused_window(&mut state);
                if state.auto_order {
                    state.order = None;
                    state.auto_order = false;
                    state.engine.set_access_order(None);
                }
            }
            let candidates: Vec<u64> = if let Some((order, position)) = &state.order {
                let at = position[index as usize];
                if at == u32::MAX {
                    Vec::new()
                } else {
                    (1..=self.config.lookahead)
                        .map(|k| order[(at as usize + k) % order.len()])
                        .collect()
                }
            } else if state.sequential_run >= 2 {
                if state.sequential_run as usize >= count.min(8) as usize && !state.auto_order {
                    // A long sequential run: declare the cyclic order to the cache.
                    state.set_order((0..count).collect(), count);
                    state.auto_order = true;
                }
                (1..=self.config.lookahead as u64)
                    .map(|k| (index + k) % count)
                    .collect()
            } else {
                Vec::new()
            };
            // Only layers not already in memory or on their way need a prefetch
            // (keeps the common steady-state get to this one extra lock).
            let mut wanted = Vec::new();
            for layer in candidates {
                if layer == index {
                    break;
                }
                if matches!(state.slots[layer as usize].residency, Residency::Absent) {
                    wanted.push(layer);
                }
            }
            wanted
        };
        self.finish_evictions(stale_window);
        let epoch = self.lookahead_epoch.load(Ordering::Relaxed);
        for layer in next {
            match self.prefetch(layer, Some(epoch)) {
                Ok(true) => {}
                _ => break,
            }
        }
    }

    pub(crate) fn tables_model(&self) -> &Model<'_> {
        self.tables.model()
    }
}
