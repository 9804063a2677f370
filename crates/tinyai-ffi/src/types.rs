//! The `#[repr(C)]` types of the header: TinyAI's two structs, then the extensions.

// Field names are those of the C header, which C programs already use.
#![allow(non_snake_case)]

use std::ffi::{c_int, c_void};

/// Describes one layer of a memory-mapped model (TinyAI's `TinyAILayerDescriptor`).
///
/// Returned by `tinyaiGetLayerDescriptor` (a snapshot per layer and calling thread) or
/// copied into caller storage by `tinyaiCopyLayerDescriptor`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TinyAILayerDescriptor {
    /// Offset of the layer's weights in the file, in bytes.
    pub offset: usize,
    /// Size of the layer's weights in bytes.
    pub size: usize,
    /// Index of the layer in the model.
    pub layerIndex: c_int,
    /// Precision of the layer's weights in bits (4 in the original TinyAI test files).
    pub precision: c_int,
    /// Pointer to the layer's bytes if the layer is in the cache, else NULL.
    /// Default (mapped) backend: valid until the model is closed.
    /// Owned backends: non-NULL only while the layer is held by a
    /// `tinyaiGetLayerWeights` that was not yet released, and valid as long as
    /// that pointer.
    pub cachedWeights: *mut c_void,
    /// Whether the layer is currently in memory (cached, being loaded, or served
    /// outside the cache to a caller that still holds it).
    pub isActive: bool,
    /// Retention priority as set by `tinyaiSetLayerPriority` (any finite
    /// float, higher kept longer); 1.0 by default.
    pub priority: f32,
    /// Milliseconds since the Unix epoch of the last access by
    /// `tinyaiGetLayerWeights` / `tinyaiGetTensorData` (0 if never accessed).
    pub lastAccessed: u64,
    /// Number of accesses by `tinyaiGetLayerWeights` / `tinyaiGetTensorData`.
    pub accessCount: u64,
}

impl TinyAILayerDescriptor {
    pub(crate) const EMPTY: TinyAILayerDescriptor = TinyAILayerDescriptor {
        offset: 0,
        size: 0,
        layerIndex: 0,
        precision: 0,
        cachedWeights: std::ptr::null_mut(),
        isActive: false,
        priority: 0.0,
        lastAccessed: 0,
        accessCount: 0,
    };
}

/// Configuration for opening a model (TinyAI's `TinyAIMmapConfig`).
///
/// Start from `tinyaiCreateDefaultMmapConfig()` and change what you need.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TinyAIMmapConfig {
    /// Budget of the layer cache in bytes (default 256 MiB; must be > 0). Each
    /// cached layer is charged max(minLayerCacheSize, size rounded up to the page size).
    pub maxCacheSize: usize,
    /// Automatic background prefetch of the next layers on sequential access
    /// (default true). `tinyaiPrefetchLayerWeights` works either way.
    pub prefetchEnabled: bool,
    /// Number of prefetch threads (default 1; 0..=64). 0: explicit prefetches
    /// load on the calling thread and there is no automatic prefetch. With 1 or
    /// more, the library also runs one thread that drops evicted pages.
    pub prefetchThreads: c_int,
    /// true (default): adaptive, scan-resistant caching policy; false: TinyAI's
    /// classic score 0.6*priority + 0.3*recency + 0.1*frequency.
    pub adaptiveCaching: bool,
    /// Minimum charge per cached layer in bytes (default 4096).
    pub minLayerCacheSize: usize,
}

/// Extension (not in TinyAI's original API): counters of a model since it was
/// opened, filled by `tinyaiGetMappedModelStats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TinyAIMmapStats {
    /// Layer requests served from memory.
    pub hits: u64,
    /// Layer requests that had to load the layer.
    pub misses: u64,
    /// Bytes loaded from storage (mapped backend: bytes faulted in).
    pub bytesRead: u64,
    /// Layers dropped from the cache (evicted or released).
    pub evictions: u64,
    /// Prefetches started (explicit and automatic).
    pub prefetchIssued: u64,
    /// Prefetched layers later requested before being evicted.
    pub prefetchUsed: u64,
    /// Prefetched layers evicted without ever being requested.
    pub prefetchWasted: u64,
    /// Misses served outside the cache (layer too large or not worth keeping).
    pub bypasses: u64,
    /// Layers that failed checksum verification.
    pub checksumFailures: u64,
    /// Bytes charged to the cache now.
    pub cachedBytes: u64,
    /// Bytes of the file's mapping resident in memory now (0 for owned backends).
    pub residentBytes: u64,
}

/// Extension: backend value of `TinyAIMmapOptions.backend` — zero-copy
/// private (copy-on-write) mapping of the file (the default; what
/// `tinyaiOpenMappedModel` uses).
pub const TINYAI_BACKEND_MAPPED: c_int = 0;
/// Extension: backend value — layers are read into buffers owned by the library
/// (immune to the file being modified or truncated while open).
pub const TINYAI_BACKEND_OWNED: c_int = 1;
/// Extension: backend value — like `TINYAI_BACKEND_OWNED`, reading with
/// `O_DIRECT` (bypassing the OS page cache) where the file system allows it.
pub const TINYAI_BACKEND_OWNED_DIRECT: c_int = 2;

/// Extension: with the mapped backend, how many of the most recently returned
/// layers each model keeps pinned in memory (see `tinyaiGetLayerWeights`).
pub const TINYAI_MAPPED_PINNED_LAYERS: c_int = 2;

/// Extension: progress callback of `tinyaiLoadAllLayers`, called on the calling
/// thread after each layer with the layers done, the layer count, and the bytes
/// loaded so far. Return true to continue, false to cancel the load.
pub type TinyAIProgressCallback =
    Option<extern "C" fn(userData: *mut c_void, completed: u64, total: u64, bytes: u64) -> bool>;

/// Extension (not in TinyAI's original API): options of `tinyaiOpenMappedModelEx`.
///
/// Zero-initialise it (`TinyAIMmapOptions options = {0};`) for the defaults:
/// mapped backend, no checksum verification, no locking, no callback.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TinyAIMmapOptions {
    /// `TINYAI_BACKEND_MAPPED`, `TINYAI_BACKEND_OWNED` or `TINYAI_BACKEND_OWNED_DIRECT`.
    pub backend: c_int,
    /// Verify each layer's CRC-32C the first time it is loaded (files without
    /// checksums, e.g. legacy v1, are not verified). A layer that fails is not served.
    pub verifyChecksums: bool,
    /// `mlock` cached layers (best effort: continues unlocked if refused).
    pub lockInMemory: bool,
    /// Progress callback of `tinyaiLoadAllLayers` (may be NULL).
    pub progress: TinyAIProgressCallback,
    /// Passed unchanged as the first argument of `progress`.
    pub userData: *mut c_void,
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    /// The layout a C compiler gives TinyAI's structs on LP64 targets.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn seed_structs_have_the_c_layout() {
        assert_eq!(offset_of!(TinyAILayerDescriptor, offset), 0);
        assert_eq!(offset_of!(TinyAILayerDescriptor, size), 8);
        assert_eq!(offset_of!(TinyAILayerDescriptor, layerIndex), 16);
        assert_eq!(offset_of!(TinyAILayerDescriptor, precision), 20);
        assert_eq!(offset_of!(TinyAILayerDescriptor, cachedWeights), 24);
        assert_eq!(offset_of!(TinyAILayerDescriptor, isActive), 32);
        assert_eq!(offset_of!(TinyAILayerDescriptor, priority), 36);
        assert_eq!(offset_of!(TinyAILayerDescriptor, lastAccessed), 40);
        assert_eq!(offset_of!(TinyAILayerDescriptor, accessCount), 48);
        assert_eq!(size_of::<TinyAILayerDescriptor>(), 56);

        assert_eq!(offset_of!(TinyAIMmapConfig, maxCacheSize), 0);
        assert_eq!(offset_of!(TinyAIMmapConfig, prefetchEnabled), 8);
        assert_eq!(offset_of!(TinyAIMmapConfig, prefetchThreads), 12);
        assert_eq!(offset_of!(TinyAIMmapConfig, adaptiveCaching), 16);
        assert_eq!(offset_of!(TinyAIMmapConfig, minLayerCacheSize), 24);
        assert_eq!(size_of::<TinyAIMmapConfig>(), 32);

        assert_eq!(size_of::<TinyAIMmapStats>(), 11 * 8);
    }
}
