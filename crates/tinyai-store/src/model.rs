//! [`MappedModel`]: the store's public API. The machinery behind it lives in
//! `shared` (the get path), `slot` (the residency state machine), `reclaim`
//! (evictions), `lookahead` and `streams` (prefetch).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tinyai_cache::stream::{AccessOrder, StreamingWindow};
use tinyai_cache::{Engine, EngineConfig, LayerId};
use tinyai_format::{DType, FormatError, Model};

use crate::config::{Backend, Progress, StoreConfig};
use crate::error::StoreError;
use crate::guard::LayerGuard;
use crate::hits::ReadBuffers;
use crate::lookahead::{Prefetch, window_budget};
use crate::reclaim::Evictions;
use crate::shared::{EXPLICIT, LayerMeta, Shared, State, unix_ms};
use crate::slot::{SlotState, Slots};
use crate::source::page_size;
use crate::stats::{Counters, Stats};

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
    /// Retention priority as set ([`MappedModel::set_priority`]; default 1.0).
    pub priority: f32,
    /// Milliseconds since the Unix epoch of the last demand access (0 if never).
    pub last_accessed_ms: u64,
    /// Number of demand accesses.
    pub access_count: u64,
    /// Bytes this layer is charged when cached (for a layer of a directly
    /// opened safetensors or GGUF file, the pages that cover it).
    pub charge: u64,
    /// The layer's CRC-32C, when the file has one: `None` for legacy v1 files
    /// and for directly opened safetensors and GGUF files, which carry no
    /// checksums (`tmai convert` adds them).
    pub checksum: Option<u32>,
}

/// A pin on a layer held without a guard ([`MappedModel::pin_detached`]).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a detached pin keeps its layer in memory until given back with MappedModel::unpin_detached"]
pub struct DetachedPin {
    index: u64,
    stripe: usize,
    model: u64,
}

impl DetachedPin {
    /// The pinned layer.
    pub fn index(&self) -> u64 {
        self.index
    }
}

/// A soft pin on a layer ([`MappedModel::pin_soft`]): the layer stays in
/// memory as long as the budget allows, and gives way only when a demand
/// access cannot otherwise fit (layers that are not their window's newest
/// first).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a soft pin ranks its layer until given back with MappedModel::unpin_soft"]
pub struct SoftPin {
    index: u64,
    stripe: usize,
    model: u64,
}

impl SoftPin {
    /// The soft-pinned layer.
    pub fn index(&self) -> u64 {
        self.index
    }
}

/// One thread's window of soft pins ([`MappedModel::soft_window`]): the layer
/// it soft-pinned last through this window is given up after all others.
#[derive(Debug)]
pub struct SoftWindow {
    register: Arc<crate::room::WindowRegister>,
    model: u64,
}

/// A model file opened for layer-by-layer access under a memory budget.
///
/// All methods take `&self` and may be called from any number of threads.
/// Dropping the model cancels queued prefetches and waits for loads in flight;
/// a [`LayerGuard`] borrows the model, so none outlives it (guards from
/// [`MappedModel::get_detached`] keep the store's internals alive instead).
#[derive(Debug)]
pub struct MappedModel {
    pub(crate) shared: Arc<Shared>,
}

impl MappedModel {
    /// Opens and validates `path`: a `.tmai` file (v2 or legacy v1), a
    /// safetensors file, a sharded set's `model.safetensors.index.json` or a
    /// GGUF file, told apart by content (see `tinyai_format::direct` for how
    /// the last three become layers).
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<MappedModel, StoreError> {
        let path = path.as_ref();
        let span = tracing::info_span!("open", path = %path.display());
        let _entered = span.enter();
        config.validate()?;
        let (source, tables) = crate::tables::open(path, config.backend)?;
        MappedModel::from_source(source, tables, config)
    }

    /// Opens a `.tmai` model in object storage (feature `remote`):
    /// `s3://bucket/key` (credentials, region and endpoint from the `AWS_*`
    /// environment variables, see [`crate::RemoteConfig`]) or
    /// `http(s)://host/path`. Layers are fetched by concurrent ranged GETs
    /// into owned buffers, under the same budget, policy and prefetch as a
    /// local file; `config.backend` is ignored. Call it (and the model's
    /// methods) from ordinary threads, not from inside an async runtime.
    #[cfg(feature = "remote")]
    pub fn open_url(url: &str, config: StoreConfig) -> Result<MappedModel, StoreError> {
        MappedModel::open_url_with(url, config, &crate::RemoteConfig::default())
    }

    /// [`MappedModel::open_url`] with the remote client's settings.
    #[cfg(feature = "remote")]
    pub fn open_url_with(
        url: &str,
        config: StoreConfig,
        remote: &crate::RemoteConfig,
    ) -> Result<MappedModel, StoreError> {
        let span = tracing::info_span!("open", url);
        let _entered = span.enter();
        config.validate()?;
        let (source, tables) = crate::tables::open_url(url, remote)?;
        let config = StoreConfig {
            verify_checksums: config.verify_checksums || remote.verify_checksums,
            ..config
        };
        MappedModel::from_source(source, tables, config)
    }

    fn from_source(
        mut source: crate::source::Source,
        tables: crate::tables::Tables,
        config: StoreConfig,
    ) -> Result<MappedModel, StoreError> {
        static NEXT_UID: AtomicU64 = AtomicU64::new(0);
        let model = tables.model();
        let spans: Vec<(u64, u64)> = model.layers().map(|l| (l.offset, l.length)).collect();
        let layer_count = spans.len();
        if layer_count > u32::MAX as usize {
            return Err(StoreError::InvalidConfig(format!(
                "{layer_count} layers exceed the store's limit of {}",
                u32::MAX
            )));
        }
        // A layer of a directly opened file is charged for the pages that
        // cover it (it need not start on a page); `.tmai` layers for their length.
        let page = page_size();
        let direct = model.foreign_model().is_some();
        let sizes: Vec<u64> = spans
            .iter()
            .map(|&(offset, length)| match length {
                0 => 0,
                _ if direct => (offset + length).next_multiple_of(page) - offset / page * page,
                _ => length,
            })
            .collect();
        let page_neighbours = if direct {
            crate::pages::page_neighbours(&spans, page)
        } else {
            Vec::new()
        };
        let mut engine_config = EngineConfig {
            budget_bytes: config.max_cache_size,
            min_layer_charge: config.min_layer_cache_size,
            page_size: page_size(),
            policy: config.effective_policy(),
        };
        let charges: Vec<u64> = sizes
            .iter()
            .map(|&size| engine_config.charge_for(size))
            .collect();
        let window = window_budget(&config, &charges);
        // A remote model's window is half the budget (unless configured): its
        // read-aheads are the only reads ahead of a stream (no kernel reads
        // ahead of a network), and hiding a server's time to first byte takes
        // several layers in flight (`Shared::fetch_queued_ahead`).
        #[cfg(feature = "remote")]
        let window = if source.is_remote() && config.streaming_window.is_none() && window > 0 {
            window.max(config.max_cache_size / 2)
        } else {
            window
        };
        // Streams may let the kernel read ahead when the window can pay for
        // its reach and still hold two of the largest layers: a window sized
        // here grows to that (from the cache's share, up to half the budget);
        // one the configuration sets must already be large enough.
        let largest = charges.iter().copied().max().unwrap_or(0);
        let read_ahead_reach = source
            .read_ahead_reach()
            .filter(|&reach| {
                let needed = reach.saturating_add(largest.saturating_mul(2));
                window > 0
                    && match config.streaming_window {
                        Some(_) => window >= needed,
                        None => needed <= config.max_cache_size / 2,
                    }
            })
            .unwrap_or(0);
        // A store-sized window holds three of the largest layers besides the
        // reach: the one a stream holds, the next one read, and the one after,
        // whose read starts while the first is still in use (with two, the
        // read waited for the held layer to go, and the device idled
        // meanwhile: in the overlap bench 30 of 30 stalls were 16 MiB layers
        // read ahead 0.3–8.8 ms before use; with room for three, 7 stalls,
        // 29 ms in all over four passes, against 248).
        // (A configured window that reads ahead already holds reach + two.)
        let window = match (read_ahead_reach, config.streaming_window) {
            (0, _) | (_, Some(_)) => window,
            (reach, None) => window.max(
                reach
                    .saturating_add(largest.saturating_mul(3))
                    .min(config.max_cache_size / 2),
            ),
        };
        let total_charge = charges.iter().copied().fold(0u64, u64::saturating_add);
        // A mapped model whose whole file fits the budget reads in 2 MiB
        // blocks (the fastest way in, see `crate::readahead`): the block
        // around a layer may hold its neighbours' bytes, never more than the
        // file, so residency stays within the budget.
        let huge_blocks = read_ahead_reach == 0
            && source.length() <= config.max_cache_size
            && source.read_in_huge_blocks();
        // Room outside the cache for a demand the policy does not admit (it must
        // fit in the budget too, see `crate::room`): the streaming window's, or
        // one layer's when there is no window, so that serving a bypassed layer
        // does not evict a cached one (which would undo the bypass).
        let reserve = if total_charge > config.max_cache_size {
            let largest = charges.iter().copied().max().unwrap_or(0);
            window.max(largest.min(config.max_cache_size / 2))
        } else {
            window
        };
        engine_config.budget_bytes = config.max_cache_size - reserve;
        let mut by_offset: Vec<u32> = (0..layer_count as u32).collect();
        by_offset.sort_by_key(|&index| spans[index as usize].0);
        let longest = spans.iter().map(|&(_, length)| length).max().unwrap_or(0);
        let record_hits = total_charge > engine_config.budget_bytes;
        let engine = Engine::new(engine_config, &sizes)?;
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
        let mut meta = Vec::with_capacity(layer_count);
        meta.resize_with(layer_count, LayerMeta::default);
        let slots = Slots::new(layer_count, crate::hits::STRIPES);
        tracing::info!(
            layers = layer_count,
            file_bytes = source.length(),
            version = ?model.version(),
            budget = config.max_cache_size,
            window,
            read_ahead_reach,
            huge_blocks,
            policy = config.effective_policy().name(),
            backend = ?config.backend,
            "opened model"
        );
        let stale_after = config.lookahead.max(1) as u64;
        let source_base = source.mapped_base();
        let counters = Counters::default();
        counters.layers_without_checksum.store(
            model.layers().filter(|l| l.checksum.is_none()).count() as u64,
            Ordering::Relaxed,
        );
        let shared = Arc::new_cyclic(|this| Shared {
            source,
            tables,
            spans,
            page_neighbours,
            by_offset,
            longest,
            read_ahead_reach,
            slots,
            state: Mutex::new(State {
                engine,
                meta,
                transient_charge: 0,
                orphaned_charge: 0,
                reclaim_pending: 0,
                window: StreamingWindow::new(window - read_ahead_reach, stale_after),
                order: None,
                auto_order: false,
                cyclic_streams: 0,
                priorities: vec![tinyai_cache::engine::TINYAI_DEFAULT_PRIORITY; layer_count],
                demand_clock: 0,
                stream_epochs: HashMap::new(),
                in_flight: 0,
                reading: 0,
                queued_reads: VecDeque::new(),
                read_ahead_front: None,
                read_ahead_charge: 0,
                awaiting_buffers: 0,
                buffers_in_eviction: 0,
            }),
            config,
            changed: Condvar::new(),
            counters,
            hits: ReadBuffers::default(),
            pool,
            reclaim,
            started: Instant::now(),
            coarse_ms: AtomicU64::new(unix_ms()),
            closed: AtomicBool::new(false),
            mlock_warned: AtomicBool::new(false),
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            mapped_base: source_base,
            record_hits,
            all_resident: AtomicBool::new(layer_count == 0),
            order_version: AtomicU64::new(0),
            this: this.clone(),
            room_waiters: AtomicUsize::new(0),
            transitional: AtomicUsize::new(0),
            over_budget: AtomicBool::new(false),
            soft_windows: Mutex::new(Vec::new()),
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
        let slot = self.shared.slots.at(index as usize);
        let (priority, charge) = {
            let state = self.shared.lock();
            (state.priorities[index as usize], state.engine.charge(id)?)
        };
        Ok(LayerDescriptor {
            index,
            offset: info.offset,
            size: info.length,
            precision_bits: info.precision_bits,
            dtype: info.dtype,
            state: match slot.load().state() {
                SlotState::Absent | SlotState::Evicting => CacheState::NotLoaded,
                SlotState::Loading => CacheState::Loading,
                SlotState::Cached => CacheState::Cached,
                SlotState::Transient => CacheState::Transient,
            },
            priority,
            last_accessed_ms: slot.last_accessed_ms(),
            access_count: slot.access_count(),
            charge,
            checksum: info.checksum,
        })
    }

    /// Returns layer `index`, loading it if needed. The guard pins the layer: it is
    /// not evicted (and its bytes stay valid) while the guard lives.
    ///
    /// A hit of a cached layer takes no lock: one atomic update of the layer's
    /// slot, plus bookkeeping the cache engine reads later (see `docs/architecture.md`).
    #[inline(always)]
    pub fn get(&self, index: u64) -> Result<LayerGuard<'_>, StoreError> {
        let stripe = self.shared.pin(index)?;
        let guard = LayerGuard::borrowed(&self.shared, index, stripe);
        if self.shared.config.prefetch_enabled {
            self.shared.lookahead(index);
        }
        Ok(guard)
    }

    /// Like [`get`](MappedModel::get), but the guard holds a reference count on
    /// the store's internals instead of borrowing the model, so it can be kept
    /// in a structure next to the model (the C library does). Costs one more
    /// atomic increment per call.
    pub fn get_detached(&self, index: u64) -> Result<LayerGuard<'static>, StoreError> {
        let stripe = self.shared.pin(index)?;
        let guard = LayerGuard::counted(Arc::clone(&self.shared), index, stripe);
        if self.shared.config.prefetch_enabled {
            self.shared.lookahead(index);
        }
        Ok(guard)
    }

    /// Pins layer `index` like [`get`](MappedModel::get) (loading it if needed,
    /// with the same lookahead), without a guard: for bindings that keep pins in
    /// their own structures (the C library keeps each thread's recently returned
    /// layers this way). Give the pin back with
    /// [`unpin_detached`](MappedModel::unpin_detached); a pin that is dropped
    /// instead keeps its layer in memory until the model is closed.
    #[inline]
    pub fn pin_detached(&self, index: u64) -> Result<DetachedPin, StoreError> {
        let stripe = self.shared.pin(index)?;
        if self.shared.config.prefetch_enabled {
            self.shared.lookahead(index);
        }
        Ok(DetachedPin {
            index,
            stripe,
            model: self.shared.uid,
        })
    }

    /// Gives back a pin from [`pin_detached`](MappedModel::pin_detached).
    /// A pin of another model is refused ([`StoreError::ForeignPin`]) and
    /// changes nothing.
    #[inline]
    pub fn unpin_detached(&self, pin: DetachedPin) -> Result<(), StoreError> {
        if pin.model != self.shared.uid {
            return Err(StoreError::ForeignPin { index: pin.index });
        }
        self.shared.unpin(pin.index, pin.stripe);
        Ok(())
    }

    /// Test seam (not part of the supported API): the next `times` reads of
    /// layer `index` from the file fail with `fault`, as a failing disk would
    /// (0 clears it). For tests of error paths.
    #[doc(hidden)]
    pub fn inject_read_fault(
        &self,
        index: u64,
        fault: crate::source::InjectedFault,
        times: u32,
    ) -> Result<(), StoreError> {
        self.shared.layer_id(index)?;
        let (offset, _) = self.shared.span(index);
        self.shared.source.inject_fault(offset, fault, times);
        Ok(())
    }

    /// Test seam (not part of the supported API): like
    /// [`inject_read_fault`](MappedModel::inject_read_fault), but the fault hits
    /// the read request that covers byte `at` of layer `index` (a layer is read
    /// in requests of 256 KiB to 1 MiB, several in flight): a disk failing in the middle
    /// of a layer.
    #[doc(hidden)]
    pub fn inject_read_fault_at(
        &self,
        index: u64,
        at: u64,
        fault: crate::source::InjectedFault,
        times: u32,
    ) -> Result<(), StoreError> {
        self.shared.layer_id(index)?;
        let (offset, length) = self.shared.span(index);
        if at >= length.max(1) {
            return Err(StoreError::InvalidConfig(format!(
                "byte {at} is outside layer {index} ({length} bytes)"
            )));
        }
        self.shared.source.inject_fault(offset + at, fault, times);
        Ok(())
    }

    /// A window of soft pins for one thread (see [`pin_soft`](MappedModel::pin_soft)).
    pub fn soft_window(&self) -> SoftWindow {
        let register = Arc::new(crate::room::WindowRegister::default());
        self.shared
            .soft_windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Arc::downgrade(&register));
        SoftWindow {
            register,
            model: self.shared.uid,
        }
    }

    /// Accesses layer `index` like [`get`](MappedModel::get) (loading it if
    /// needed, counting a demand access, reading ahead) and holds it with a
    /// *soft pin* instead of a guard, as `window`'s newest layer: for
    /// bindings that hand out addresses into the mapping and want the layer
    /// kept while it is likely in use, without letting those layers break the
    /// budget (the C library's per-thread windows).
    ///
    /// A soft-pinned layer is never chosen by the eviction policy, but when a
    /// demand access cannot fit in `max_cache_size` otherwise (not even by
    /// waiting for loads in flight), soft-pinned layers are evicted: those that
    /// are not their window's newest first. Only the [`crate::Backend::Mapped`]
    /// backend offers this (its bytes stay addressable through
    /// [`mapped_ptr_mut`](MappedModel::mapped_ptr_mut) after eviction, read
    /// again from the file); with the owned backends the layer's buffer could
    /// be freed while in use, so they refuse with
    /// [`StoreError::SoftPinUnsupported`]: use a guard or
    /// [`pin_detached`](MappedModel::pin_detached) there. A window of another
    /// model is refused ([`StoreError::ForeignPin`]).
    ///
    /// A hit costs one read-modify-write on the thread's own counter, like a
    /// guard's; give the pin back from the same thread.
    #[inline]
    pub fn pin_soft(&self, index: u64, window: &SoftWindow) -> Result<SoftPin, StoreError> {
        if self.shared.mapped_base.is_none() {
            self.shared.layer_id(index)?;
            return Err(StoreError::SoftPinUnsupported { index });
        }
        if window.model != self.shared.uid {
            return Err(StoreError::ForeignPin { index });
        }
        // The register first: the soft pin's update (a release) follows it, so
        // a claim that reads the soft pin (an acquire) sees this store too.
        window.register.newest.store(index + 1, Ordering::Relaxed);
        let stripe = self.shared.pin_soft(index)?;
        if self.shared.config.prefetch_enabled {
            self.shared.lookahead(index);
        }
        Ok(SoftPin {
            index,
            stripe,
            model: self.shared.uid,
        })
    }

    /// The lock-free hit path of [`pin_soft`](MappedModel::pin_soft) alone:
    /// `Some` if layer `index` was cached (the access counted and read ahead
    /// as `pin_soft` does), `None` in every other case (not cached, another
    /// backend, a window of another model, out of range), when the caller
    /// should call `pin_soft`. For bindings whose hot path must not build a
    /// `Result<_, StoreError>`.
    #[inline]
    pub fn pin_soft_if_cached(&self, index: u64, window: &SoftWindow) -> Option<SoftPin> {
        if self.shared.mapped_base.is_none() || window.model != self.shared.uid {
            return None;
        }
        // Before the soft pin: see `pin_soft`.
        window.register.newest.store(index + 1, Ordering::Relaxed);
        let stripe = self.shared.keep_if_cached(index)?;
        if self.shared.config.prefetch_enabled {
            self.shared.lookahead(index);
        }
        Some(SoftPin {
            index,
            stripe,
            model: self.shared.uid,
        })
    }

    /// Gives back a soft pin from [`pin_soft`](MappedModel::pin_soft). A pin of
    /// another model is refused ([`StoreError::ForeignPin`]) and changes nothing.
    #[inline]
    pub fn unpin_soft(&self, pin: SoftPin) -> Result<(), StoreError> {
        if pin.model != self.shared.uid {
            return Err(StoreError::ForeignPin { index: pin.index });
        }
        self.shared.unpin_soft(pin.index, pin.stripe);
        Ok(())
    }

    /// Where the tensor called `name` lies in layer `index`'s bytes, from the
    /// tables alone (no load): for bindings that hold a pin and a pointer to the
    /// layer rather than a guard.
    pub fn tensor_range(
        &self,
        index: u64,
        name: &str,
    ) -> Result<std::ops::Range<usize>, StoreError> {
        self.shared.layer_id(index)?;
        let info = self.shared.find_tensor(index, name)?;
        self.shared.tensor_range(index, &info)
    }

    /// Starts loading layer `index` in the background (on the prefetch pool; on the
    /// caller's thread when `prefetch_threads` is 0) and returns at once.
    ///
    /// Returns `Ok(true)` if the layer is resident, loading or now being loaded,
    /// `Ok(false)` if the cache declined (no room without evicting something
    /// pinned or more valuable) and the streaming window had no room either.
    pub fn prefetch(&self, index: u64) -> Result<bool, StoreError> {
        self.shared.layer_id(index)?;
        let mut evictions = Evictions::default();
        let outcome = {
            let mut state = self.shared.lock();
            self.shared.drain_hits(&mut state);
            let owner = (EXPLICIT, state.demand_clock);
            self.shared
                .request_prefetch(&mut state, index, None, owner, &mut evictions)
        };
        self.shared.finish_evictions(evictions);
        match outcome? {
            Prefetch::Present => Ok(true),
            Prefetch::Declined => Ok(false),
            Prefetch::Started(task) => {
                self.shared.spawn_prefetch(task);
                Ok(true)
            }
        }
    }

    /// Drops layer `index` from the cache. If guards hold it, it leaves the cache
    /// at once (its charge is then counted as held outside the cache) and its
    /// memory is dropped when the last guard goes. Releasing a layer that is not
    /// in memory does nothing.
    pub fn release(&self, index: u64) -> Result<(), StoreError> {
        let id = self.shared.layer_id(index)?;
        let slot = self.shared.slots.at(index as usize);
        let mut evictions = Evictions::default();
        {
            let mut state = self.shared.lock();
            self.shared.drain_hits(&mut state);
            match slot.load().state() {
                SlotState::Cached => {
                    self.shared.engine_remove(&mut state, id);
                    self.shared
                        .counters
                        .evictions
                        .fetch_add(1, Ordering::Relaxed);
                    // A layer another thread soft-pins (the C library's windows)
                    // is kept like a pinned one, so its writes survive.
                    let kept = slot.soft_pins() > 0;
                    if !kept && slot.claim_if(SlotState::Cached, |soft| soft == 0) {
                        self.shared.take_eviction(&mut state, index, &mut evictions);
                    } else if slot.retag(SlotState::Cached, SlotState::Transient) {
                        // Pinned: held outside the cache until the last guard or
                        // soft pin goes (the unpin that leaves none drops it).
                        state.transient_charge += self.shared.charge(&state, index);
                        if !kept && slot.claim_if(SlotState::Transient, |soft| soft == 0) {
                            // The last guard went in between.
                            state.transient_charge -= self.shared.charge(&state, index);
                            self.shared.take_eviction(&mut state, index, &mut evictions);
                        }
                    }
                }
                SlotState::Transient => {
                    if state.window.remove(id) && slot.claim(SlotState::Transient) {
                        // Read ahead outside the cache and not used yet.
                        state.transient_charge -= self.shared.charge(&state, index);
                        self.shared.take_eviction(&mut state, index, &mut evictions);
                    }
                }
                SlotState::Absent | SlotState::Loading | SlotState::Evicting => {}
            }
        }
        self.shared.finish_evictions(evictions);
        Ok(())
    }

    /// Charged bytes in memory: cached layers (the budget's currency: each layer
    /// counts `max(min_layer_cache_size, size rounded up to the page size)`) and
    /// layers held outside the cache (read ahead, or pinned after a bypass or a
    /// release). Evicted pages still being dropped are not included
    /// ([`Stats::reclaim_pending_bytes`]); loads wait for them when they would
    /// push memory over the budget.
    pub fn memory_usage(&self) -> u64 {
        let state = self.shared.lock();
        state.engine.usage() + state.transient_charge
    }

    /// How far past a stream's reads the kernel may read ahead, out of the
    /// budget (0: every load reads exactly its layer). Mapped models whose
    /// streaming window can pay for twice the device's `read_ahead_kb` and
    /// still hold two of the largest layers let their streams' read-aheads
    /// use the kernel's read-ahead, the fastest way in; once one has, this
    /// much of the budget stays set aside for the pages it reads past the
    /// stream's front (see the README's Performance section).
    pub fn read_ahead_reach(&self) -> u64 {
        self.shared.read_ahead_reach
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

    /// Sets layer `index`'s retention priority, on TinyAI's scale: any finite
    /// number, higher kept longer, 1.0 by default. It is stored as given
    /// ([`LayerDescriptor::priority`] reports it) and weighed by the policy
    /// through [`tinyai_cache::engine::engine_priority`] (a strictly
    /// increasing map onto the engine's `0..=1`; see
    /// [`tinyai_cache::Engine::set_priority`] for how each policy uses that).
    /// NaN and ±∞ are refused ([`StoreError::InvalidPriority`]), changing nothing.
    pub fn set_priority(&self, index: u64, priority: f32) -> Result<(), StoreError> {
        let id = self.shared.layer_id(index)?;
        if !priority.is_finite() {
            return Err(StoreError::InvalidPriority { index, priority });
        }
        let mut state = self.shared.lock();
        state
            .engine
            .set_priority(id, tinyai_cache::engine::engine_priority(priority))?;
        state.priorities[index as usize] = priority;
        Ok(())
    }

    /// Resets every priority to TinyAI's default, 1.0.
    pub fn reset_priorities(&self) {
        let mut state = self.shared.lock();
        state.engine.reset_priorities();
        state
            .priorities
            .fill(tinyai_cache::engine::TINYAI_DEFAULT_PRIORITY);
    }

    /// Declares the order in which layers will be accessed (cyclically), or clears it.
    /// The cache uses it to keep what is needed soonest; automatic prefetch follows it.
    pub fn set_access_order(&self, order: Option<Vec<u64>>) -> Result<(), StoreError> {
        let count = self.layer_count();
        let order = match order {
            Some(order) => {
                if let Some(&bad) = order.iter().find(|&&i| i >= count) {
                    return Err(StoreError::LayerOutOfRange { index: bad, count });
                }
                let ids = order.iter().map(|&i| LayerId(i as u32)).collect();
                Some(AccessOrder::new(ids, count as usize)?)
            }
            None => None,
        };
        let mut evictions = Evictions::default();
        {
            let mut state = self.shared.lock();
            let same = match (&state.order, &order) {
                (Some(current), Some(new)) => current.as_slice() == new.as_slice(),
                (None, None) => true,
                _ => false,
            };
            if same {
                // Declaring the same order again (a new forward pass) changes nothing.
                state.auto_order = false;
                return Ok(());
            }
            self.shared.declare_order(&mut state, order, false);
            self.shared.drop_all_unused(&mut state, &mut evictions);
        }
        self.shared.finish_evictions(evictions);
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let (cached, transient, pending) = {
            let state = self.shared.lock();
            (
                state.engine.usage(),
                state.transient_charge,
                state.reclaim_pending,
            )
        };
        let accesses = self.shared.slots.total_accesses();
        let mut stats = self.shared.counters.snapshot(accesses, cached, transient);
        stats.reclaim_pending_bytes = pending;
        let source = &self.shared.source;
        (stats.io_bandwidth, stats.io_latency) = source.tuner.estimate();
        stats.io_depth = source.tuner.depth() as u64;
        stats.buffers_reused = source.buffers.reused.load(Ordering::Relaxed);
        stats.buffers_allocated = source.buffers.allocated.load(Ordering::Relaxed);
        stats.pooled_bytes = source.buffers.bytes();
        stats
    }

    /// Verifies layer `index`'s checksum by reading its bytes (through the cache).
    /// A layer without a checksum (legacy v1, a directly opened safetensors or
    /// GGUF file) is an error here ([`tinyai_format::FormatError::NoChecksum`]).
    pub fn verify_layer(&self, index: u64) -> Result<(), StoreError> {
        let stripe = self.shared.pin(index)?;
        let guard = LayerGuard::borrowed(&self.shared, index, stripe);
        match self.format().verify_layer_bytes(index, &guard) {
            Err(error @ FormatError::NoChecksum { .. }) => Err(self.shared.format_error(error)),
            verified => self.shared.count_verification(index, verified),
        }
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

    /// What [`ForwardPass`](crate::ForwardPass) does after each layer, for
    /// bindings that drive their own pass: asks for the first `lookahead`
    /// layers of `upcoming` to be prefetched, stopping at the first one the
    /// cache declines (or that is out of range). Does nothing when
    /// `prefetch_threads` is 0.
    pub fn prefetch_upcoming(&self, upcoming: &[u64]) {
        if self.shared.config.prefetch_threads == 0 {
            return;
        }
        let lookahead = self.shared.config.lookahead.max(1);
        for &next in upcoming.iter().take(lookahead) {
            match self.prefetch(next) {
                Ok(true) => {}
                _ => break,
            }
        }
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
        // A remote model's requests in flight end now (their loads fail).
        self.shared.source.cancel_requests();
        // Wait for background tasks in flight (queued prefetches see `closed` and
        // skip the read), so that the mapping goes when the last guard does.
        let mut state = self.shared.lock();
        while state.in_flight > 0 {
            state = self.shared.wait(state);
        }
        drop(state);
        tracing::info!(path = %self.shared.source.path().display(), "closed model");
    }
}
