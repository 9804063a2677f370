//! The state behind a `TinyAIMappedModel *`: the store, the pins that keep
//! returned pointers usable, and the descriptor snapshots.
//!
//! Pins held for C callers:
//! - mapped backend: each *thread* keeps its `TINYAI_MAPPED_PINNED_LAYERS` most
//!   recently returned layers soft-pinned (`MappedModel::pin_soft`; the newest
//!   is given up last), in a thread-local window (no lock, no shared
//!   write on the hot path; one thread's gets never unpin a layer another
//!   thread is still using). Soft pins keep the layers in memory while the
//!   budget allows and give way only when a get could not fit otherwise, so
//!   the budget holds. A thread's pins go back when it fetches other layers,
//!   releases the layer, or exits.
//! - owned backends: every returned layer stays pinned (its buffer alive) until
//!   it is released or the model closed, whichever thread asks.

use std::cell::{RefCell, UnsafeCell};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::ThreadId;

use tinyai_store::{CacheState, LayerGuard, MappedModel, SoftPin, SoftWindow, StoreError};

use crate::error::FfiError;
use crate::types::{TINYAI_MAPPED_PINNED_LAYERS, TinyAILayerDescriptor};

/// One thread's recently returned layers of one model (mapped backend).
struct ThreadWindow {
    /// `Handle::uid` of the model.
    model: u64,
    /// The store, to give the pins back when the thread exits (if still open).
    store: Weak<MappedModel>,
    /// The store's side of this window (which layer is the newest).
    soft: SoftWindow,
    /// Newest last.
    recent: Vec<SoftPin>,
}

impl Drop for ThreadWindow {
    fn drop(&mut self) {
        // A thread exiting (or a window dropped for a closed model): give the
        // pins back if the model is still open; a closed model needs nothing.
        if let Some(store) = self.store.upgrade() {
            for pin in self.recent.drain(..) {
                let _ = store.unpin_soft(pin);
            }
        }
    }
}

thread_local! {
    static WINDOWS: RefCell<Vec<ThreadWindow>> = const { RefCell::new(Vec::new()) };
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
    store: Arc<MappedModel>,
    /// Distinguishes handles in the threads' pin windows.
    uid: u64,
    owned_backend: bool,
    /// Owned backends: every returned layer until it is released or the model closed.
    held: Mutex<HashMap<u64, LayerGuard<'static>>>,
    /// Boxed so that a slot never moves while the map grows: the pointers stay
    /// valid until the handle is dropped.
    snapshots: Mutex<Snapshots>,
}

// SAFETY: `MappedModel` and the guards are `Send + Sync` (the store is designed
// for concurrent use); the held guards are behind a `Mutex`. The only
// non-thread-safe parts are the descriptor slots (an `UnsafeCell` holding a raw
// pointer): Rust writes them only while holding the `snapshots` lock and never
// reads them, and each slot is written only by the thread it belongs to, so no
// C read of a slot (made by its own thread, between calls) can overlap a write.
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

impl Drop for Handle {
    fn drop(&mut self) {
        // The closing thread's own window for this model: its pins die with the
        // model (other threads' windows see a dead store and drop theirs).
        let uid = self.uid;
        let _ = WINDOWS.try_with(|windows| {
            if let Ok(mut windows) = windows.try_borrow_mut() {
                windows.retain(|window| window.model != uid);
            }
        });
    }
}

impl Handle {
    pub(crate) fn new(store: MappedModel, owned_backend: bool) -> Handle {
        static NEXT_UID: AtomicU64 = AtomicU64::new(0);
        Handle {
            store: Arc::new(store),
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            owned_backend,
            held: Mutex::new(HashMap::new()),
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

    /// `tinyaiGetLayerWeights`: pins layer `index` for the caller and returns a
    /// pointer to its bytes (see the function's contract for how long).
    #[inline]
    pub(crate) fn get_weights(&self, index: u64) -> Result<*mut c_void, StoreError> {
        if self.owned_backend {
            let guard = self.store.get_detached(index)?;
            let pointer = guard.as_ptr().cast_mut().cast::<c_void>();
            self.hold(guard);
            return Ok(pointer);
        }
        self.soft_pin(index)?;
        // A pointer into the private copy-on-write mapping, so C code that
        // writes into its weights works (on private copies).
        Ok(self
            .store
            .mapped_ptr_mut(index)
            .unwrap_or(std::ptr::NonNull::<u8>::dangling().as_ptr())
            .cast::<c_void>())
    }

    /// Mapped backend: accesses layer `index` and makes it the calling
    /// thread's newest soft-pinned layer of this model (given up last); the
    /// same layer's older pin and the oldest beyond the window's size are given
    /// back.
    fn soft_pin(&self, index: u64) -> Result<(), StoreError> {
        let mut result = Ok(());
        let mut done = false;
        let _ = WINDOWS.try_with(|windows| {
            let Ok(mut windows) = windows.try_borrow_mut() else {
                return;
            };
            let position = match windows.iter().position(|w| w.model == self.uid) {
                Some(position) => position,
                None => {
                    windows.retain(|window| window.store.strong_count() > 0);
                    windows.push(ThreadWindow {
                        model: self.uid,
                        store: Arc::downgrade(&self.store),
                        soft: self.store.soft_window(),
                        recent: Vec::with_capacity(TINYAI_MAPPED_PINNED_LAYERS as usize + 1),
                    });
                    windows.len() - 1
                }
            };
            let window = &mut windows[position];
            done = true;
            // The hit path builds no `Result<_, StoreError>`.
            let pin = match self.store.pin_soft_if_cached(index, &window.soft) {
                Some(pin) => pin,
                None => match self.store.pin_soft(index, &window.soft) {
                    Ok(pin) => pin,
                    Err(error) => {
                        result = Err(error);
                        return;
                    }
                },
            };
            let recent = &mut window.recent;
            if let Some(at) = recent.iter().position(|held| held.index() == index) {
                let _ = self.store.unpin_soft(recent.remove(at));
            }
            recent.push(pin);
            if recent.len() > TINYAI_MAPPED_PINNED_LAYERS as usize {
                let _ = self.store.unpin_soft(recent.remove(0));
            }
        });
        if !done {
            // No thread-local storage (the thread is exiting): access the layer
            // without keeping it.
            let pin = self.store.pin_soft(index, &self.store.soft_window())?;
            let _ = self.store.unpin_soft(pin);
        }
        result
    }

    /// Owned backends: keeps `guard` until the layer is released.
    pub(crate) fn hold(&self, guard: LayerGuard<'static>) {
        let replaced = lock(&self.held).insert(guard.index(), guard);
        // Unpinning may take the store's lock: do it after releasing ours.
        drop(replaced);
    }

    /// `tinyaiGetTensorData`: pins the layer like `get_weights` and returns a
    /// pointer to the tensor `name` and its size.
    pub(crate) fn get_tensor(
        &self,
        index: u64,
        name: &str,
    ) -> Result<(*const c_void, usize), StoreError> {
        if self.owned_backend {
            // The tensor's place from the tables, its address from the guard's
            // raw pointer: no Rust reference to bytes C callers may be writing.
            let range = self.store.tensor_range(index, name)?;
            let guard = self.store.get_detached(index)?;
            let pointer = guard.as_ptr().wrapping_add(range.start).cast::<c_void>();
            self.hold(guard);
            return Ok((pointer, range.len()));
        }
        // Mapped: one access, soft-pinned in this thread's window; the tensor's
        // place comes from the tables, its address from the mapping.
        let range = self.store.tensor_range(index, name)?;
        self.soft_pin(index)?;
        let base = self
            .store
            .mapped_ptr_mut(index)
            .unwrap_or(std::ptr::NonNull::<u8>::dangling().as_ptr());
        Ok((
            base.wrapping_add(range.start).cast_const().cast::<c_void>(),
            range.len(),
        ))
    }

    /// Drops the pins held for layer `index`: owned backends, the held guard;
    /// mapped, the calling thread's window entry.
    pub(crate) fn unpin(&self, index: u64) {
        let dropped = lock(&self.held).remove(&index);
        drop(dropped);
        let _ = WINDOWS.try_with(|windows| {
            if let Ok(mut windows) = windows.try_borrow_mut()
                && let Some(window) = windows.iter_mut().find(|w| w.model == self.uid)
            {
                while let Some(at) = window.recent.iter().position(|pin| pin.index() == index) {
                    let _ = self.store.unpin_soft(window.recent.remove(at));
                }
            }
        });
    }

    /// The pointer `cachedWeights` reports for layer `index` in state `state`.
    fn cached_pointer(&self, index: u64, state: CacheState) -> *mut c_void {
        if self.owned_backend {
            let held = lock(&self.held);
            return held.get(&index).map_or(std::ptr::null_mut(), |guard| {
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
