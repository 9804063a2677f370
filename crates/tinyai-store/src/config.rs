//! Store configuration: the fields of TinyAI's `TinyAIMmapConfig`, plus Rust-side options.

use std::fmt;
use std::sync::Arc;

use tinyai_cache::PolicyKind;

use crate::error::StoreError;

/// How layer bytes are held in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// Zero-copy (the default): bytes are served from a private (copy-on-write)
    /// mapping of the file; the Rust API only reads it, and writes through the C
    /// API's pointers go to private copies that are discarded when the layer's
    /// pages are dropped (the file is never modified). Loading a layer populates its pages; evicting it drops them
    /// (`MADV_DONTNEED`, and `POSIX_FADV_DONTNEED` unless
    /// [`StoreConfig::keep_page_cache`]), so resident memory follows the budget.
    /// A model whose whole file fits the budget is read in 2 MiB blocks into
    /// transparent huge pages where the kernel offers them (the fastest cold
    /// load); a larger one streams through the kernel's read-ahead, paid for
    /// out of the budget ([`StoreConfig::streaming_window`]).
    /// Slices and pointers stay valid (re-read on access) until the model is closed.
    ///
    /// If another process **truncates** the file while it is mapped, touching the
    /// lost pages raises `SIGBUS`; if it **rewrites** it in place, served bytes may
    /// change under you. The store checks the file's length before every load and
    /// refuses with [`StoreError::FileChanged`], but cannot protect slices already
    /// handed out. Use [`Backend::Owned`] when the file may change.
    ///
    /// If the file cannot be mapped (an address-space limit smaller than the file,
    /// say), the store falls back to `Owned` with a warning; see
    /// [`crate::MappedModel::backend`].
    #[default]
    Mapped,
    /// Layers are read into aligned heap buffers owned by the store, reused
    /// across evictions. Buffered reads go in file order with the kernel's
    /// read-ahead and drop their pages from the page cache behind them
    /// (`RWF_DONTCACHE`, Linux 6.14+), so the model's memory is the budget, not
    /// the budget plus the file's cached copy; where the kernel or file system
    /// cannot drop behind, several `pread` requests per layer are in flight and
    /// the kernel keeps (and reclaims) the cached pages. `O_DIRECT` reads have
    /// several requests in flight per layer. Immune to the file being modified or truncated: a short read is an
    /// error ([`StoreError::ShortRead`]), never a crash. A slice stays valid while
    /// its guard lives, even if the layer is evicted meanwhile.
    Owned {
        /// Read with `O_DIRECT` (bypassing the page cache) when the file system and
        /// the layer's alignment allow it; otherwise fall back to buffered reads.
        direct_io: bool,
    },
}

/// Progress of a bulk operation ([`crate::MappedModel::load_all`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Layers done.
    pub completed: u64,
    /// Layers in the operation.
    pub total: u64,
    /// Bytes done.
    pub bytes: u64,
}

/// Callback told about bulk-load progress; return `false` to cancel.
pub type ProgressCallback = Arc<dyn Fn(Progress) -> bool + Send + Sync>;

/// Configuration of a [`crate::MappedModel`].
///
/// The first five fields mirror TinyAI's `TinyAIMmapConfig` with its defaults.
#[derive(Clone)]
pub struct StoreConfig {
    /// Hard budget of charged cache memory in bytes (default 256 MiB). Charged usage
    /// never exceeds it except by layers held by live guards.
    pub max_cache_size: u64,
    /// Automatic lookahead prefetch (default true): when a thread's gets follow a
    /// sequential pattern or the declared order (each thread is its own
    /// stream), the next layers are loaded in the background. Explicit
    /// [`crate::MappedModel::prefetch`] calls work either way.
    pub prefetch_enabled: bool,
    /// Threads of the prefetch pool (default 1, at most 64). 0 means explicit
    /// prefetches load synchronously on the caller's thread, evicted pages are
    /// dropped on the caller's thread too, and there is no automatic lookahead.
    /// With 1 or more, the store also starts one "reclaim" thread that drops
    /// evicted pages, so that neither the caller nor the prefetch threads wait
    /// for it (pages it has not dropped yet stay charged: a load waits rather
    /// than push memory over the budget).
    ///
    /// I/O depth is separate: every load (a prefetch thread's, or a missing
    /// caller's) reads its layer in requests of 256 KiB to 1 MiB, several in flight on the
    /// process's shared I/O workers, as many as the device's measured
    /// bandwidth × latency calls for ([`crate::Stats::io_depth`]). More prefetch
    /// threads overlap more layers, not more requests per layer.
    ///
    /// A remote model (feature `remote`) reads each layer in
    /// `RemoteConfig::concurrency` ranged GETs of `part_size` bytes, and
    /// fetches every queued read-ahead at once into the buffer its load will
    /// take, so the layers in flight are those the window holds, not one per
    /// prefetch thread.
    pub prefetch_threads: usize,
    /// `true` (default): the adaptive policy (scan-resistant, frequency- and
    /// priority-aware). `false`: TinyAI's classic score
    /// `0.6*priority + 0.3*recency + 0.1*frequency`.
    pub adaptive_caching: bool,
    /// Minimum charge per layer in bytes (default 4096): a layer is charged
    /// `max(min_layer_cache_size, size rounded up to the page size)`.
    pub min_layer_cache_size: u64,
    /// Residency backend (default [`Backend::Mapped`]).
    pub backend: Backend,
    /// Overrides the policy chosen by `adaptive_caching` (e.g. `Lru` for comparison).
    pub policy: Option<PolicyKind>,
    /// Verify each layer's CRC-32C the first time it is loaded (default false).
    /// A mismatch is reported as [`StoreError::Format`] and the layer is not served.
    pub verify_checksums: bool,
    /// `mlock` cached layers (default false). When the limit refuses, a warning is
    /// logged once and the store continues unlocked.
    pub lock_in_memory: bool,
    /// How many layers ahead automatic prefetch looks (default 8). Each thread's
    /// read-ahead ramps up to it (2, 4, then `lookahead` layers as its
    /// sequential run grows), and prefetches stop at the first one the cache
    /// declines, so this is an upper bound.
    pub lookahead: usize,
    /// Mapped backend: keep evicted pages in the OS page cache instead of dropping
    /// them (default false: the budget bounds the page cache this model holds too).
    pub keep_page_cache: bool,
    /// Share of `max_cache_size` reserved for layers that automatic prefetch reads
    /// ahead outside the cache (layers the policy does not keep, streamed through).
    /// `None` (default): `max(budget/8, largest layer)`, at most half the budget,
    /// when automatic prefetch is on and the whole model does not fit the
    /// budget, else 0 (a model that fits is simply cached). `Some(0)` disables
    /// the window. Read-aheads in it go stale, oldest first, once their stream
    /// has moved `lookahead` accesses past them
    /// ([`tinyai_cache::stream::StreamingWindow`]).
    ///
    /// Mapped backend: when the window can also pay for the kernel's
    /// read-ahead past a stream (twice the device's `read_ahead_kb`) and still
    /// hold two of the largest layers, streams read through the kernel's
    /// read-ahead, the fastest way in, and that reach comes out of the window
    /// ([`crate::MappedModel::read_ahead_reach`]); with `None` the window grows
    /// to the reach plus three of the largest layers (at most half the
    /// budget), so that the layer after next is read while a stream holds one.
    ///
    /// A remote model's `None` is half the budget (when a window is used at
    /// all): its read-aheads are the only reads ahead of a stream, and hiding
    /// a server's time to first byte takes several layers in flight.
    pub streaming_window: Option<u64>,
    /// Progress/cancel callback for bulk loads.
    pub progress: Option<ProgressCallback>,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("max_cache_size", &self.max_cache_size)
            .field("prefetch_enabled", &self.prefetch_enabled)
            .field("prefetch_threads", &self.prefetch_threads)
            .field("adaptive_caching", &self.adaptive_caching)
            .field("min_layer_cache_size", &self.min_layer_cache_size)
            .field("backend", &self.backend)
            .field("policy", &self.policy)
            .field("verify_checksums", &self.verify_checksums)
            .field("lock_in_memory", &self.lock_in_memory)
            .field("lookahead", &self.lookahead)
            .field("keep_page_cache", &self.keep_page_cache)
            .field("streaming_window", &self.streaming_window)
            .field("progress", &self.progress.as_ref().map(|_| "callback"))
            .finish()
    }
}

/// Default budget: 256 MiB.
pub const DEFAULT_MAX_CACHE_SIZE: u64 = 256 << 20;
/// Default minimum charge per layer: 4 KiB.
pub const DEFAULT_MIN_LAYER_CACHE_SIZE: u64 = 4096;
/// Most prefetch threads accepted.
pub const MAX_PREFETCH_THREADS: usize = 64;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_cache_size: DEFAULT_MAX_CACHE_SIZE,
            prefetch_enabled: true,
            prefetch_threads: 1,
            adaptive_caching: true,
            min_layer_cache_size: DEFAULT_MIN_LAYER_CACHE_SIZE,
            backend: Backend::Mapped,
            policy: None,
            verify_checksums: false,
            lock_in_memory: false,
            lookahead: 8,
            keep_page_cache: false,
            streaming_window: None,
            progress: None,
        }
    }
}

impl StoreConfig {
    /// The policy in effect.
    pub fn effective_policy(&self) -> PolicyKind {
        self.policy.unwrap_or(if self.adaptive_caching {
            PolicyKind::Adaptive
        } else {
            PolicyKind::TinyAiClassic
        })
    }

    /// Checks every field; absurd values are errors, not clamps.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.max_cache_size == 0 {
            return Err(StoreError::InvalidConfig(
                "max_cache_size must be at least 1 byte".into(),
            ));
        }
        if self.prefetch_threads > MAX_PREFETCH_THREADS {
            return Err(StoreError::InvalidConfig(format!(
                "prefetch_threads {} exceeds {MAX_PREFETCH_THREADS}",
                self.prefetch_threads
            )));
        }
        if self.min_layer_cache_size > self.max_cache_size.max(1 << 40) {
            return Err(StoreError::InvalidConfig(format!(
                "min_layer_cache_size {} is absurd",
                self.min_layer_cache_size
            )));
        }
        if self.lookahead > 1024 {
            return Err(StoreError::InvalidConfig(format!(
                "lookahead {} exceeds 1024",
                self.lookahead
            )));
        }
        if let Some(window) = self.streaming_window
            && window >= self.max_cache_size
        {
            return Err(StoreError::InvalidConfig(format!(
                "streaming_window {window} must be smaller than max_cache_size {}",
                self.max_cache_size
            )));
        }
        if self.effective_policy() == PolicyKind::FurthestNextUse {
            return Err(StoreError::InvalidConfig(
                "the Belady policy needs the future and is for simulation only".into(),
            ));
        }
        Ok(())
    }
}
