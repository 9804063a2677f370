//! Counters and their snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) misses: AtomicU64,
    pub(crate) bypasses: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) prefetch_issued: AtomicU64,
    pub(crate) prefetch_used: AtomicU64,
    pub(crate) prefetch_wasted: AtomicU64,
    pub(crate) prefetch_cancelled: AtomicU64,
    pub(crate) checksum_failures: AtomicU64,
    pub(crate) checksums_verified: AtomicU64,
    pub(crate) load_nanos: AtomicU64,
    /// Set once at open: layers the file has no checksum for.
    pub(crate) layers_without_checksum: AtomicU64,
}

/// A snapshot of a model's counters (since open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Demand requests served from memory (cached, or transient and still held).
    pub hits: u64,
    /// Demand requests that had to load the layer.
    pub misses: u64,
    /// Misses served outside the cache (too large, or the policy declined to keep them).
    pub bypasses: u64,
    /// Bytes loaded from storage (Mapped: bytes of layers faulted in; some may have
    /// come from the OS page cache).
    pub bytes_read: u64,
    /// Layers dropped from the cache (victims and releases).
    pub evictions: u64,
    /// Prefetches started (explicit and automatic).
    pub prefetch_issued: u64,
    /// Prefetched layers later requested before being evicted.
    pub prefetch_used: u64,
    /// Prefetched layers evicted without ever being requested.
    pub prefetch_wasted: u64,
    /// Automatic prefetches dropped before loading because the access pattern changed.
    pub prefetch_cancelled: u64,
    /// Layers that failed checksum verification.
    pub checksum_failures: u64,
    /// Checksum verifications that passed (on load with
    /// `verify_checksums`, and by [`crate::MappedModel::verify_layer`] or
    /// [`crate::MappedModel::verify_layer_from_file`]).
    pub checksums_verified: u64,
    /// Time spent loading layers (summed over threads).
    pub load_time: Duration,
    /// Charged bytes of cached layers at the time of the snapshot.
    pub cached_bytes: u64,
    /// Charged bytes of layers held outside the cache (read ahead into the
    /// streaming window, or pinned after a bypass or a release).
    pub transient_bytes: u64,
    /// Charged bytes of evicted layers whose pages the reclaim thread has not
    /// dropped yet (loads wait when these would push memory over the budget).
    pub reclaim_pending_bytes: u64,
    /// The device's throughput as loads measured it, bytes per second (0
    /// until a load of several requests finished).
    pub io_bandwidth: u64,
    /// The fastest read request's service time in recent loads.
    pub io_latency: Duration,
    /// Read requests one load keeps in flight now (bandwidth × latency, with
    /// headroom; see the crate docs on the I/O pipeline).
    pub io_depth: u64,
    /// Owned backend: loads that reused the buffer of an evicted layer.
    pub buffers_reused: u64,
    /// Owned backend: loads that allocated a fresh buffer.
    pub buffers_allocated: u64,
    /// Owned backend: bytes of free buffers kept for reuse (within the budget
    /// together with the charged bytes).
    pub pooled_bytes: u64,
    /// Layers the file has no checksum for (every layer of a legacy v1 file or
    /// of a directly opened safetensors or GGUF file): their bytes are served
    /// unverified.
    pub layers_without_checksum: u64,
}

impl Stats {
    /// hits / (hits + misses), or 0 with no requests.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

impl Counters {
    /// `accesses`: demand accesses counted by the slots (every hit and miss).
    pub(crate) fn snapshot(&self, accesses: u64, cached_bytes: u64, transient_bytes: u64) -> Stats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            hits: accesses.saturating_sub(get(&self.misses)),
            misses: get(&self.misses),
            bypasses: get(&self.bypasses),
            bytes_read: get(&self.bytes_read),
            evictions: get(&self.evictions),
            prefetch_issued: get(&self.prefetch_issued),
            prefetch_used: get(&self.prefetch_used),
            prefetch_wasted: get(&self.prefetch_wasted),
            prefetch_cancelled: get(&self.prefetch_cancelled),
            checksum_failures: get(&self.checksum_failures),
            checksums_verified: get(&self.checksums_verified),
            load_time: Duration::from_nanos(get(&self.load_nanos)),
            cached_bytes,
            transient_bytes,
            reclaim_pending_bytes: 0,
            io_bandwidth: 0,
            io_latency: Duration::ZERO,
            io_depth: 0,
            buffers_reused: 0,
            buffers_allocated: 0,
            pooled_bytes: 0,
            layers_without_checksum: get(&self.layers_without_checksum),
        }
    }
}
