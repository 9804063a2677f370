//! The state behind a `TinyAIMappedModel *`: the store, the guards that keep
//! returned pointers valid, and the descriptor snapshots.

use std::cell::UnsafeCell;
use std::collections::{HashMap, VecDeque};
use std::ffi::c_void;
use std::sync::{Mutex, MutexGuard};
use std::thread::ThreadId;

use tinyai_store::{CacheState, LayerGuard, MappedModel};

use crate::error::FfiError;
use crate::types::{TINYAI_MAPPED_PINNED_LAYERS, TinyAILayerDescriptor};

/// Guards held on behalf of C callers (see `tinyaiGetLayerWeights`).
#[derive(Debug, Default)]
struct Pins {
    /// Mapped backend: the most recently returned layers, newest last.
    recent: VecDeque<LayerGuard<'static>>,
    /// Owned backends: every returned layer until it is released or the model closed.
    held: HashMap<u64, LayerGuard<'static>>,
}

/// A descriptor snapshot for one (thread, layer) pair. The C caller reads it
/// through the pointer `tinyaiGetLayerDescriptor` returns; the library writes it
/// only from that thread, while holding `Handle::snapshots`' lock.
#[derive(Debug)]
struct DescriptorSlot(UnsafeCell<TinyAILayerDescriptor>);

type Snapshots = HashMap<(ThreadId, u64), Box<DescriptorSlot>>;

/// The model behind the opaque C handle.
#[derive(Debug)]
pub struct Handle {
    store: MappedModel,
    owned_backend: bool,
    pins: Mutex<Pins>,
    /// Boxed so that a slot never moves while the map grows: the pointers stay
    /// valid until the handle is dropped.
    snapshots: Mutex<Snapshots>,
}

// SAFETY: `MappedModel` and the guards are `Send + Sync` (the store is designed
// for concurrent use); the pins are behind a `Mutex`. The only non-thread-safe
// parts are the descriptor slots (an `UnsafeCell` holding a raw pointer): Rust
// writes them only while holding the `snapshots` lock and never reads them, and
// each slot is written only by the thread it belongs to, so no C read of a slot
// (made by its own thread, between calls) can overlap a write.
unsafe impl Sync for Handle {}
// SAFETY: as above; nothing in `Handle` is tied to the thread that created it
// (the raw pointers in the descriptor slots point into the mapping or into
// buffers owned by the store, not into thread-local data).
unsafe impl Send for Handle {}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves at worst a stale snapshot or an
    // extra pin; keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Handle {
    pub(crate) fn new(store: MappedModel, owned_backend: bool) -> Handle {
        Handle {
            store,
            owned_backend,
            pins: Mutex::new(Pins::default()),
            snapshots: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn store(&self) -> &MappedModel {
        &self.store
    }

    /// Validates a C layer index.
    pub(crate) fn index(&self, function: &'static str, index: i32) -> Result<u64, FfiError> {
        let count = self.store.layer_count();
        match u64::try_from(index) {
            Ok(index) if index < count => Ok(index),
            _ => Err(FfiError::LayerOutOfRange {
                function,
                index: i64::from(index),
                count,
            }),
        }
    }

    /// Keeps `guard` so that the pointer just handed out stays usable: mapped,
    /// among the last `TINYAI_MAPPED_PINNED_LAYERS` returned layers; owned, until
    /// the layer is released.
    pub(crate) fn pin(&self, guard: LayerGuard<'static>) {
        let mut dropped = Vec::new();
        {
            let mut pins = lock(&self.pins);
            if self.owned_backend {
                dropped.extend(pins.held.insert(guard.index(), guard));
            } else {
                let index = guard.index();
                if let Some(at) = pins.recent.iter().position(|g| g.index() == index) {
                    dropped.extend(pins.recent.remove(at));
                }
                pins.recent.push_back(guard);
                while pins.recent.len() > TINYAI_MAPPED_PINNED_LAYERS as usize {
                    dropped.extend(pins.recent.pop_front());
                }
            }
        }
        // Unpinning takes the store's lock: do it after releasing ours.
        drop(dropped);
    }

    /// Drops the guards held for layer `index`.
    pub(crate) fn unpin(&self, index: u64) {
        let mut dropped = Vec::new();
        {
            let mut pins = lock(&self.pins);
            dropped.extend(pins.held.remove(&index));
            while let Some(at) = pins.recent.iter().position(|g| g.index() == index) {
                dropped.extend(pins.recent.remove(at));
            }
        }
        drop(dropped);
    }

    /// The pointer `cachedWeights` reports for layer `index` in state `state`.
    fn cached_pointer(&self, index: u64, state: CacheState) -> *mut c_void {
        if self.owned_backend {
            let pins = lock(&self.pins);
            return pins.held.get(&index).map_or(std::ptr::null_mut(), |guard| {
                guard.as_ptr().cast::<c_void>().cast_mut()
            });
        }
        match state {
            CacheState::Cached | CacheState::Transient => self
                .store
                .mapped_ptr_mut(index)
                .map_or(std::ptr::null_mut(), |pointer| pointer.cast::<c_void>()),
            CacheState::NotLoaded | CacheState::Loading => std::ptr::null_mut(),
        }
    }

    /// A fresh descriptor of layer `index` (already validated).
    pub(crate) fn describe(
        &self,
        function: &'static str,
        index: u64,
    ) -> Result<TinyAILayerDescriptor, FfiError> {
        let descriptor = self
            .store
            .descriptor(index)
            .map_err(|source| FfiError::Store { function, source })?;
        let too_large = |what: &str| FfiError::InvalidArgument {
            function,
            message: format!("layer {index}: {what} does not fit the C type"),
        };
        Ok(TinyAILayerDescriptor {
            offset: usize::try_from(descriptor.offset).map_err(|_| too_large("offset"))?,
            size: usize::try_from(descriptor.size).map_err(|_| too_large("size"))?,
            layerIndex: i32::try_from(index).map_err(|_| too_large("index"))?,
            precision: i32::try_from(descriptor.precision_bits)
                .map_err(|_| too_large("precision"))?,
            cachedWeights: self.cached_pointer(index, descriptor.state),
            isActive: descriptor.state != CacheState::NotLoaded,
            priority: descriptor.priority,
            lastAccessed: descriptor.last_accessed_ms,
            accessCount: descriptor.access_count,
        })
    }

    /// Refreshes the calling thread's snapshot of layer `index` and returns a
    /// pointer to it (valid until the handle is dropped).
    pub(crate) fn refresh_descriptor(
        &self,
        function: &'static str,
        index: u64,
    ) -> Result<*const TinyAILayerDescriptor, FfiError> {
        let descriptor = self.describe(function, index)?;
        let mut snapshots = lock(&self.snapshots);
        let slot = snapshots
            .entry((std::thread::current().id(), index))
            .or_insert_with(|| {
                Box::new(DescriptorSlot(UnsafeCell::new(
                    TinyAILayerDescriptor::EMPTY,
                )))
            });
        let pointer = slot.0.get();
        // SAFETY: the slot is boxed and lives until the handle is dropped; it
        // belongs to the calling thread, which is inside this call and so not
        // reading it; Rust code never holds a reference to its contents; and the
        // `snapshots` lock is held.
        unsafe { pointer.write(descriptor) };
        Ok(pointer.cast_const())
    }
}
