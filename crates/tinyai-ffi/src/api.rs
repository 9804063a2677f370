//! The C entry points. Each one checks its pointers, runs in [`entry`] (no panic
//! crosses the boundary) and delegates to the store; the doc comments are the
//! contract written into the generated header.

// Function and parameter names are those of TinyAI's C API.
#![allow(non_snake_case)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::PathBuf;
use std::sync::Arc;

use tinyai_store::{Backend, MappedModel, Progress, StoreConfig, StoreError};

use crate::error::{FfiError, entry, last_error_ptr};
use crate::handle::Handle;
use crate::types::{
    TINYAI_BACKEND_MAPPED, TINYAI_BACKEND_OWNED, TINYAI_BACKEND_OWNED_DIRECT,
    TinyAILayerDescriptor, TinyAIMmapConfig, TinyAIMmapOptions, TinyAIMmapStats,
};

/// An open model (opaque). Created by `tinyaiOpenMappedModel`, destroyed by
/// `tinyaiCloseMappedModel`.
#[derive(Debug)]
pub struct TinyAIMappedModel {
    handle: Handle,
}

/// The handle behind a C pointer, or an error if it is NULL.
///
/// # Safety
/// `model` is NULL or a pointer returned by an open function and not yet closed.
unsafe fn handle<'a>(
    function: &'static str,
    model: *const TinyAIMappedModel,
) -> Result<&'a Handle, FfiError> {
    // SAFETY: non-NULL pointers come from `Box::into_raw` in `open` and stay
    // valid until `tinyaiCloseMappedModel` (the caller's precondition).
    match unsafe { model.as_ref() } {
        Some(model) => Ok(&model.handle),
        None => Err(FfiError::NullArgument {
            function,
            argument: "model",
        }),
    }
}

fn store_error(function: &'static str) -> impl FnOnce(StoreError) -> FfiError {
    move |source| FfiError::Store { function, source }
}

/// Returns the default configuration: maxCacheSize 256 MiB, prefetchEnabled
/// true, prefetchThreads 1, adaptiveCaching true, minLayerCacheSize 4096.
/// Never fails.
#[unsafe(no_mangle)]
pub extern "C" fn tinyaiCreateDefaultMmapConfig() -> TinyAIMmapConfig {
    let defaults = StoreConfig::default();
    let config = TinyAIMmapConfig {
        maxCacheSize: usize::try_from(defaults.max_cache_size).unwrap_or(usize::MAX),
        prefetchEnabled: defaults.prefetch_enabled,
        prefetchThreads: c_int::try_from(defaults.prefetch_threads).unwrap_or(1),
        adaptiveCaching: defaults.adaptive_caching,
        minLayerCacheSize: usize::try_from(defaults.min_layer_cache_size).unwrap_or(4096),
    };
    // Through `entry` only so that, like every function, it clears the last error.
    entry("tinyaiCreateDefaultMmapConfig", config, || Ok(config))
}

fn store_config(
    function: &'static str,
    config: Option<&TinyAIMmapConfig>,
) -> Result<StoreConfig, FfiError> {
    let mut store_config = StoreConfig::default();
    if let Some(config) = config {
        store_config.max_cache_size = config.maxCacheSize as u64;
        store_config.prefetch_enabled = config.prefetchEnabled;
        store_config.prefetch_threads =
            usize::try_from(config.prefetchThreads).map_err(|_| FfiError::InvalidArgument {
                function,
                message: format!(
                    "invalid configuration: prefetchThreads {} is negative",
                    config.prefetchThreads
                ),
            })?;
        store_config.adaptive_caching = config.adaptiveCaching;
        store_config.min_layer_cache_size = config.minLayerCacheSize as u64;
    }
    store_config.validate().map_err(store_error(function))?;
    Ok(store_config)
}

#[cfg(unix)]
fn path_from(path: &CStr) -> Result<PathBuf, String> {
    use std::os::unix::ffi::OsStrExt;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(path.to_bytes())))
}

#[cfg(not(unix))]
fn path_from(path: &CStr) -> Result<PathBuf, String> {
    path.to_str()
        .map(PathBuf::from)
        .map_err(|_| "the path is not valid UTF-8".to_owned())
}

/// Carries a C progress callback and its user data into the store.
struct CProgress {
    callback: extern "C" fn(*mut c_void, u64, u64, u64) -> bool,
    user_data: *mut c_void,
}

impl CProgress {
    fn call(&self, progress: Progress) -> bool {
        (self.callback)(
            self.user_data,
            progress.completed,
            progress.total,
            progress.bytes,
        )
    }
}

// SAFETY: the store invokes the progress callback only from `load_all`, on the
// thread that called `tinyaiLoadAllLayers`; the header tells C callers that the
// callback runs on that thread with their `userData`, which the library never
// dereferences.
unsafe impl Send for CProgress {}
// SAFETY: see `Send`: the library only copies the pointer and passes it back.
unsafe impl Sync for CProgress {}

/// Shared by both open functions.
///
/// # Safety
/// Pointer arguments are NULL or valid for reads (`filepath` NUL-terminated).
unsafe fn open(
    function: &'static str,
    filepath: *const c_char,
    config: *const TinyAIMmapConfig,
    options: *const TinyAIMmapOptions,
) -> Result<*mut TinyAIMappedModel, FfiError> {
    if filepath.is_null() {
        return Err(FfiError::NullArgument {
            function,
            argument: "filepath",
        });
    }
    // SAFETY: non-NULL and NUL-terminated (the caller's precondition).
    let path = unsafe { CStr::from_ptr(filepath) };
    let path =
        path_from(path).map_err(|message| FfiError::InvalidArgument { function, message })?;
    // SAFETY: NULL or valid for reads (the caller's precondition); the struct is
    // plain data, copied.
    let config = unsafe { config.as_ref() }.copied();
    // SAFETY: as for `config`.
    let options = unsafe { options.as_ref() }.copied();
    let mut store_config = store_config(function, config.as_ref())?;
    if let Some(options) = options {
        store_config.backend = match options.backend {
            TINYAI_BACKEND_MAPPED => Backend::Mapped,
            TINYAI_BACKEND_OWNED => Backend::Owned { direct_io: false },
            TINYAI_BACKEND_OWNED_DIRECT => Backend::Owned { direct_io: true },
            other => {
                return Err(FfiError::InvalidArgument {
                    function,
                    message: format!("unknown backend {other}"),
                });
            }
        };
        store_config.verify_checksums = options.verifyChecksums;
        store_config.lock_in_memory = options.lockInMemory;
        if let Some(callback) = options.progress {
            let progress = CProgress {
                callback,
                user_data: options.userData,
            };
            store_config.progress = Some(Arc::new(move |p: Progress| progress.call(p)));
        }
    }
    // An object-storage URL (`s3://bucket/key`, `http(s)://…`) opens the
    // remote model (feature `remote`); anything else is a file path.
    #[cfg(feature = "remote")]
    let url = path.to_str().filter(|p| {
        ["s3://", "http://", "https://"]
            .iter()
            .any(|s| p.starts_with(s))
    });
    #[cfg(feature = "remote")]
    let store = match url {
        Some(url) => MappedModel::open_url(url, store_config),
        None => MappedModel::open(&path, store_config),
    };
    #[cfg(not(feature = "remote"))]
    let store = MappedModel::open(&path, store_config);
    let store = store.map_err(store_error(function))?;
    // The backend in effect: a mapped open falls back to owned buffers when the
    // file cannot be mapped, and then pointers must be kept alive like owned ones.
    let owned_backend = matches!(store.backend(), Backend::Owned { .. });
    if c_int::try_from(store.layer_count()).is_err() {
        return Err(FfiError::InvalidArgument {
            function,
            message: format!(
                "{}: {} layers exceed what the C API's int indices can address",
                path.display(),
                store.layer_count()
            ),
        });
    }
    Ok(Box::into_raw(Box::new(TinyAIMappedModel {
        handle: Handle::new(store, owned_backend),
    })))
}

/// Opens a model file (`.tmai` v2, a legacy TinyAI v1 file, a safetensors
/// file, a sharded set's `model.safetensors.index.json` or a GGUF file, told
/// apart by content) for layer-by-layer access with the default zero-copy
/// (mapped) backend.
///
/// `config` may be NULL for the defaults (see `tinyaiCreateDefaultMmapConfig`).
/// The whole header and layer table are validated here: a malformed or
/// truncated file fails now, not later.
///
/// Returns NULL, with `tinyaiGetLastError()` set, if `filepath` is NULL, the
/// file is missing, unreadable, not a regular file or malformed, or the
/// configuration is invalid (`maxCacheSize` 0, `prefetchThreads` negative or
/// above 64).
///
/// # Safety
/// `filepath` is NULL or a NUL-terminated string (any bytes: it need not be
/// UTF-8); `config` is NULL or points to a `TinyAIMmapConfig`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiOpenMappedModel(
    filepath: *const c_char,
    config: *const TinyAIMmapConfig,
) -> *mut TinyAIMappedModel {
    const FUNCTION: &str = "tinyaiOpenMappedModel";
    entry(FUNCTION, std::ptr::null_mut(), || {
        // SAFETY: forwarded preconditions; no options.
        unsafe { open(FUNCTION, filepath, config, std::ptr::null()) }
    })
}

/// Closes a model and frees everything it holds. Every pointer obtained from
/// this model (weights, tensors, descriptors) becomes invalid.
///
/// NULL is a no-op. Closing the same model twice, or while another thread is
/// still calling functions on it, is undefined behaviour (like `free`).
///
/// # Safety
/// `model` is NULL or an open model that no other thread is using.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiCloseMappedModel(model: *mut TinyAIMappedModel) {
    entry("tinyaiCloseMappedModel", (), || {
        if !model.is_null() {
            // SAFETY: non-NULL pointers come from `Box::into_raw` in `open`, and
            // the caller gives up the model here (precondition).
            drop(unsafe { Box::from_raw(model) });
        }
        Ok(())
    });
}

/// Returns the number of layers, or -1 if `model` is NULL.
///
/// # Safety
/// `model` is NULL or an open model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiGetMappedLayerCount(model: *const TinyAIMappedModel) -> c_int {
    const FUNCTION: &str = "tinyaiGetMappedLayerCount";
    entry(FUNCTION, -1, || {
        // SAFETY: the caller's precondition.
        let handle = unsafe { handle(FUNCTION, model) }?;
        // Open refuses models whose count does not fit an int.
        Ok(c_int::try_from(handle.store().layer_count()).unwrap_or(c_int::MAX))
    })
}

/// Returns a description of layer `layerIndex`: offset and size in the file,
/// precision, and its cache state now (`cachedWeights`, `isActive`,
/// `priority`, `lastAccessed` in ms since the Unix epoch, `accessCount`).
///
/// The pointer stays valid until the model is closed. It points to a snapshot
/// that belongs to the calling thread: each call for the same layer from the
/// same thread refreshes it (and returns the same pointer); calls from other
/// threads never modify it, so reading it is free of data races. Each
/// (thread, layer) pair that calls this keeps one small snapshot until close.
/// To get a copy in your own storage instead, use `tinyaiCopyLayerDescriptor`.
///
/// Returns NULL (with `tinyaiGetLastError()` set) if `model` is NULL or
/// `layerIndex` is negative or not below the layer count.
///
/// # Safety
/// `model` is NULL or an open model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiGetLayerDescriptor(
    model: *const TinyAIMappedModel,
    layerIndex: c_int,
) -> *const TinyAILayerDescriptor {
    const FUNCTION: &str = "tinyaiGetLayerDescriptor";
    entry(FUNCTION, std::ptr::null(), || {
        // SAFETY: the caller's precondition.
        let handle = unsafe { handle(FUNCTION, model) }?;
        let index = handle.index(FUNCTION, layerIndex)?;
        handle.refresh_descriptor(FUNCTION, index)
    })
}

/// Returns a pointer to layer `layerIndex`'s bytes (`descriptor->size` bytes),
/// loading the layer if needed (evicting less valuable layers to stay within
/// `maxCacheSize`). The bytes may be written, like TinyAI's original copies:
/// writes never reach the file. With the mapped backend they go to private
/// copy-on-write pages and are lost when the layer is dropped from memory
/// (eviction or release: the bytes read from the file again); with owned
/// backends they last until the layer is released.
///
/// Pointer lifetime:
/// - Mapped backend (the default, and always with `tinyaiOpenMappedModel`): the
///   pointer stays valid until `tinyaiCloseMappedModel`, even after the layer
///   is evicted or released; pages dropped from memory are read again from the
///   file when touched. Writes last while the layer stays in memory: the
///   library keeps the `TINYAI_MAPPED_PINNED_LAYERS` (2) layers each thread
///   most recently got (per thread, so one thread's gets never give up a
///   layer another thread is using) until that thread gets other layers,
///   releases the layer, or exits; a release by another thread leaves them in
///   memory too. These layers count against `maxCacheSize`, which holds at
///   every moment: they are never chosen by the eviction policy, but when a
///   get cannot fit otherwise (not even by waiting for loads in flight), the
///   older ones are given up first, then the newest ones. So writes into the
///   layer a thread got last survive until that thread's next get as long as
///   `maxCacheSize` can hold every thread's newest layer and the layer being
///   got; a single layer larger than `maxCacheSize` is served alone.
/// - Owned backends (`tinyaiOpenMappedModelEx`): the pointer stays valid until
///   `tinyaiReleaseLayerWeights` for this layer (by any thread) or close; the
///   layer stays pinned in memory until then, so these layers are the
///   caller's: memory usage stays within max(`maxCacheSize`, the charges of
///   the layers got and not yet released).
///
/// A layer of size 0 returns a non-NULL pointer that must not be dereferenced.
///
/// Returns NULL (with `tinyaiGetLastError()` set) if `model` is NULL, the index
/// is out of range, or the layer cannot be read (I/O error, file changed since
/// open, checksum mismatch with verification on).
///
/// # Safety
/// `model` is NULL or an open model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiGetLayerWeights(
    model: *mut TinyAIMappedModel,
    layerIndex: c_int,
) -> *mut c_void {
    const FUNCTION: &str = "tinyaiGetLayerWeights";
    entry(FUNCTION, std::ptr::null_mut(), || {
        // SAFETY: the caller's precondition.
        let handle = unsafe { handle(FUNCTION, model) }?;
        let index = handle.index(FUNCTION, layerIndex)?;
        handle.get_weights(index).map_err(store_error(FUNCTION))
    })
}

/// Starts loading layer `layerIndex` in the background (on the prefetch
/// threads; on the calling thread if `prefetchThreads` is 0) and returns at
/// once.
///
/// Returns true if the layer is in memory, being loaded, or now being loaded.
/// Returns false if the cache declined (no room without evicting pinned or more
/// valuable layers; `tinyaiGetLastError()` is then NULL), or on error
/// (`model` NULL, index out of range; `tinyaiGetLastError()` set).
///
/// # Safety
/// `model` is NULL or an open model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiPrefetchLayerWeights(
    model: *mut TinyAIMappedModel,
    layerIndex: c_int,
) -> bool {
    const FUNCTION: &str = "tinyaiPrefetchLayerWeights";
    entry(FUNCTION, false, || {
        // SAFETY: the caller's precondition.
        let handle = unsafe { handle(FUNCTION, model) }?;
        let index = handle.index(FUNCTION, layerIndex)?;
        handle
            .store()
            .prefetch(index)
            .map_err(store_error(FUNCTION))
    })
}

/// Drops layer `layerIndex` from the cache and unpins it, freeing its memory.
/// Mapped backend: pointers to it stay valid (pages are re-read on access).
/// Owned backends: pointers to it become invalid, for every thread.
///
/// Does nothing if `model` is NULL, the index is out of range (both set
/// `tinyaiGetLastError()`), or the layer is not in memory.
///
/// # Safety
/// `model` is NULL or an open model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiReleaseLayerWeights(
    model: *mut TinyAIMappedModel,
    layerIndex: c_int,
) {
    const FUNCTION: &str = "tinyaiReleaseLayerWeights";
    entry(FUNCTION, (), || {
        // SAFETY: the caller's precondition.
        let handle = unsafe { handle(FUNCTION, model) }?;
        let index = handle.index(FUNCTION, layerIndex)?;
        handle.unpin(index);
        handle.store().release(index).map_err(store_error(FUNCTION))
    });
}

/// Returns the memory the model's layer cache holds now, in bytes: cached
/// layers plus layers served outside the cache and still pinned, each charged
/// max(minLayerCacheSize, size rounded up to the page size). It stays at or
/// below `maxCacheSize` at every moment, the layers kept for each thread
/// included, except that a single layer larger than `maxCacheSize` is served
/// alone, and, with owned backends, layers got and not yet released are the
/// caller's (see `tinyaiGetLayerWeights`).
///
/// Returns 0 if `model` is NULL.
///
/// # Safety
/// `model` is NULL or an open model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiGetMappedModelMemoryUsage(model: *const TinyAIMappedModel) -> usize {
    const FUNCTION: &str = "tinyaiGetMappedModelMemoryUsage";
    entry(FUNCTION, 0, || {
        // SAFETY: the caller's precondition.
        let handle = unsafe { handle(FUNCTION, model) }?;
        Ok(usize::try_from(handle.store().memory_usage()).unwrap_or(usize::MAX))
    })
}

/// Sets layer `layerIndex`'s retention priority, as TinyAI had it: any finite
/// float, stored as given (the descriptor's `priority` reads it back exactly);
/// higher is kept longer; the default is 1.0.
///
/// How it is weighed: the priority p maps to w = 1 / (1 + e^(−2·(p − 1))),
/// strictly increasing from 0 to 1 (1.0 → 0.5, 2.0 → 0.88, 0.0 → 0.12,
/// saturating beyond about ±4). With adaptive caching (the default) w
/// multiplies the value of keeping a layer by 2^(6 × w), in steps of 1/12:
/// of two layers of the same size and use, the lower priority is evicted
/// first, and w = 1 is worth 8× the default against layers used more often.
/// With `adaptiveCaching = false`, w is weighted 0.6 in TinyAI's classic score.
///
/// Does nothing if `model` is NULL, the index is out of range, or `priority`
/// is NaN or infinite (each sets `tinyaiGetLastError()`; the priority is
/// unchanged).
///
/// # Safety
/// `model` is NULL or an open model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiSetLayerPriority(
    model: *mut TinyAIMappedModel,
    layerIndex: c_int,
    priority: f32,
) {
    const FUNCTION: &str = "tinyaiSetLayerPriority";
    entry(FUNCTION, (), || {
        // SAFETY: the caller's precondition.
        let handle = unsafe { handle(FUNCTION, model) }?;
        let index = handle.index(FUNCTION, layerIndex)?;
        handle
            .store()
            .set_priority(index, priority)
            .map_err(store_error(FUNCTION))
    });
}

/// Resets every layer's priority to TinyAI's default, 1.0. Does nothing if
/// `model` is NULL (sets `tinyaiGetLastError()`).
///
/// # Safety
/// `model` is NULL or an open model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiResetLayerPriorities(model: *mut TinyAIMappedModel) {
    const FUNCTION: &str = "tinyaiResetLayerPriorities";
    entry(FUNCTION, (), || {
        // SAFETY: the caller's precondition.
        let handle = unsafe { handle(FUNCTION, model) }?;
        handle.store().reset_priorities();
        Ok(())
    });
}

/// Extension (not in TinyAI's original API): the message describing why the
/// last call made by this thread failed, or NULL if it succeeded.
///
/// Every other function clears or sets it, per thread. The string is valid
/// until the next call to any other function of this library on this thread;
/// copy it to keep it. Never fails.
#[unsafe(no_mangle)]
pub extern "C" fn tinyaiGetLastError() -> *const c_char {
    last_error_ptr()
}

/// Extension (not in TinyAI's original API): like `tinyaiOpenMappedModel`,
/// with `options` choosing the backend, checksum verification, memory locking
/// and the progress callback of `tinyaiLoadAllLayers`. NULL `options` (or all
/// zero) behaves exactly like `tinyaiOpenMappedModel`.
///
/// Returns NULL (with `tinyaiGetLastError()` set) in the cases of
/// `tinyaiOpenMappedModel`, or if `options->backend` is unknown.
///
/// # Safety
/// As `tinyaiOpenMappedModel`; `options` is NULL or points to a
/// `TinyAIMmapOptions` whose `progress`, if set, may be called until the model
/// is closed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiOpenMappedModelEx(
    filepath: *const c_char,
    config: *const TinyAIMmapConfig,
    options: *const TinyAIMmapOptions,
) -> *mut TinyAIMappedModel {
    const FUNCTION: &str = "tinyaiOpenMappedModelEx";
    entry(FUNCTION, std::ptr::null_mut(), || {
        // SAFETY: forwarded preconditions.
        unsafe { open(FUNCTION, filepath, config, options) }
    })
}

/// Extension (not in TinyAI's original API): loads every layer in order
/// through the cache (with a budget smaller than the model, early layers are
/// evicted again), calling the `progress` callback given to
/// `tinyaiOpenMappedModelEx` after each layer, on the calling thread.
///
/// Returns true when all layers were loaded; false (with
/// `tinyaiGetLastError()` set) if `model` is NULL, a layer cannot be read, or
/// the callback returned false (cancelled).
///
/// # Safety
/// `model` is NULL or an open model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiLoadAllLayers(model: *mut TinyAIMappedModel) -> bool {
    const FUNCTION: &str = "tinyaiLoadAllLayers";
    entry(FUNCTION, false, || {
        // SAFETY: the caller's precondition.
        let handle = unsafe { handle(FUNCTION, model) }?;
        handle.store().load_all().map_err(store_error(FUNCTION))?;
        Ok(true)
    })
}

/// Extension (not in TinyAI's original API): copies the model's counters into
/// `*out`. Returns false (with `tinyaiGetLastError()` set, `*out` untouched) if
/// `model` or `out` is NULL.
///
/// # Safety
/// `model` is NULL or an open model; `out` is NULL or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiGetMappedModelStats(
    model: *const TinyAIMappedModel,
    out: *mut TinyAIMmapStats,
) -> bool {
    const FUNCTION: &str = "tinyaiGetMappedModelStats";
    entry(FUNCTION, false, || {
        // SAFETY: the caller's precondition.
        let handle = unsafe { handle(FUNCTION, model) }?;
        if out.is_null() {
            return Err(FfiError::NullArgument {
                function: FUNCTION,
                argument: "out",
            });
        }
        let store = handle.store();
        let stats = store.stats();
        let snapshot = TinyAIMmapStats {
            hits: stats.hits,
            misses: stats.misses,
            bytesRead: stats.bytes_read,
            evictions: stats.evictions,
            prefetchIssued: stats.prefetch_issued,
            prefetchUsed: stats.prefetch_used,
            prefetchWasted: stats.prefetch_wasted,
            bypasses: stats.bypasses,
            checksumFailures: stats.checksum_failures,
            cachedBytes: stats.cached_bytes,
            residentBytes: store.resident_bytes(),
        };
        // SAFETY: non-NULL and valid for writes (precondition); `write` does not
        // read the possibly uninitialised old value.
        unsafe { out.write(snapshot) };
        Ok(true)
    })
}

/// Extension (not in TinyAI's original API): copies layer `layerIndex`'s
/// current descriptor into `*out` (caller-owned storage, so any thread may
/// keep it as long as it likes). `cachedWeights` follows the rules of
/// `tinyaiGetLayerDescriptor`.
///
/// Returns false (with `tinyaiGetLastError()` set, `*out` untouched) if
/// `model` or `out` is NULL or the index is out of range.
///
/// # Safety
/// `model` is NULL or an open model; `out` is NULL or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiCopyLayerDescriptor(
    model: *const TinyAIMappedModel,
    layerIndex: c_int,
    out: *mut TinyAILayerDescriptor,
) -> bool {
    const FUNCTION: &str = "tinyaiCopyLayerDescriptor";
    entry(FUNCTION, false, || {
        // SAFETY: the caller's precondition.
        let handle = unsafe { handle(FUNCTION, model) }?;
        let index = handle.index(FUNCTION, layerIndex)?;
        if out.is_null() {
            return Err(FfiError::NullArgument {
                function: FUNCTION,
                argument: "out",
            });
        }
        let descriptor = handle.describe(FUNCTION, index)?;
        // SAFETY: non-NULL and valid for writes (precondition).
        unsafe { out.write(descriptor) };
        Ok(true)
    })
}

/// Extension (not in TinyAI's original API): returns a pointer to the tensor
/// called `name` in layer `layerIndex` and stores its size in bytes in
/// `*outSize` (if `outSize` is not NULL). Loads the layer like
/// `tinyaiGetLayerWeights`, and the pointer has the same lifetime as a
/// pointer returned by it for this layer.
///
/// Returns NULL (with `*outSize` set to 0 and `tinyaiGetLastError()` set) if
/// `model` or `name` is NULL, `name` is not UTF-8, the index is out of range,
/// the layer has no such tensor (legacy v1 layers have none), or the layer
/// cannot be read.
///
/// # Safety
/// `model` is NULL or an open model; `name` is NULL or NUL-terminated;
/// `outSize` is NULL or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tinyaiGetTensorData(
    model: *mut TinyAIMappedModel,
    layerIndex: c_int,
    name: *const c_char,
    outSize: *mut usize,
) -> *const c_void {
    const FUNCTION: &str = "tinyaiGetTensorData";
    if !outSize.is_null() {
        // SAFETY: non-NULL and valid for writes (precondition).
        unsafe { outSize.write(0) };
    }
    entry(FUNCTION, std::ptr::null(), || {
        // SAFETY: the caller's precondition.
        let handle = unsafe { handle(FUNCTION, model) }?;
        let index = handle.index(FUNCTION, layerIndex)?;
        if name.is_null() {
            return Err(FfiError::NullArgument {
                function: FUNCTION,
                argument: "name",
            });
        }
        // SAFETY: non-NULL and NUL-terminated (precondition).
        let name =
            unsafe { CStr::from_ptr(name) }
                .to_str()
                .map_err(|_| FfiError::InvalidArgument {
                    function: FUNCTION,
                    message: "the tensor name is not valid UTF-8".to_owned(),
                })?;
        let (pointer, size) = handle
            .get_tensor(index, name)
            .map_err(store_error(FUNCTION))?;
        if !outSize.is_null() {
            // SAFETY: non-NULL and valid for writes (precondition).
            unsafe { outSize.write(size) };
        }
        Ok(pointer)
    })
}
