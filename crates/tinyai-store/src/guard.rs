//! [`LayerGuard`]: a pinned layer's bytes, and typed views of them.

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::Arc;

use tinyai_format::{DType, TensorInfo};

use crate::error::StoreError;
use crate::shared::Shared;

/// Rust element types with a `.tmai` dtype, for checked typed views.
pub trait Element: bytemuck::Pod {
    /// The matching dtype.
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {
        $(impl Element for $t { const DTYPE: DType = DType::$d; })*
    };
}
element!(f32 => F32, f64 => F64, i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16, u32 => U32, u64 => U64);

/// A layer's bytes, pinned in the cache while the guard lives.
///
/// Dereferences to `&[u8]`. Dropping it unpins the layer (one atomic
/// decrement; a released or transient layer is then dropped from memory).
/// A guard from [`crate::MappedModel::get`] borrows the model; one from
/// [`crate::MappedModel::get_detached`] is `'static`.
pub struct LayerGuard<'m> {
    shared: Holder<'m>,
    index: u64,
    /// The pin stripe the pin was taken on (the drop unpins there, whichever
    /// thread it runs on).
    stripe: usize,
    bytes: NonNull<u8>,
    len: usize,
}

/// How a guard reaches the store: by borrow (the fast path) or by reference count.
enum Holder<'m> {
    Borrowed(&'m Shared),
    Counted(Arc<Shared>),
}

// SAFETY: a guard only reads the pinned bytes (never writes them) and unpins
// through the slot's atomic word; `Shared` is `Send + Sync`. The bytes stay
// valid on any thread while the pin lives (the mapping lives as long as
// `Shared`, an owned buffer until a claim, which needs zero pins).
unsafe impl Send for LayerGuard<'_> {}
// SAFETY: as above: `&LayerGuard` only gives shared reads of immutable bytes.
unsafe impl Sync for LayerGuard<'_> {}

impl std::fmt::Debug for LayerGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerGuard")
            .field("layer", &self.index)
            .field("len", &self.len())
            .finish()
    }
}

/// A tensor inside a guarded layer.
#[derive(Clone, Debug)]
pub struct TensorView<'g> {
    /// The tensor's table entry (name, dtype, shape …).
    pub info: TensorInfo<'g>,
    /// Its bytes.
    pub bytes: &'g [u8],
}

impl<'m> LayerGuard<'m> {
    /// Wraps a pin the caller already holds on layer `index`.
    #[inline(always)]
    pub(crate) fn borrowed(shared: &'m Shared, index: u64, stripe: usize) -> LayerGuard<'m> {
        LayerGuard::with(Holder::Borrowed(shared), index, stripe)
    }

    #[inline(always)]
    fn with(shared: Holder<'m>, index: u64, stripe: usize) -> LayerGuard<'m> {
        let store: &Shared = match &shared {
            Holder::Borrowed(shared) => shared,
            Holder::Counted(shared) => shared,
        };
        let (pointer, len) = store.pinned_bytes(index);
        LayerGuard {
            bytes: NonNull::new(pointer.cast_mut()).unwrap_or(NonNull::dangling()),
            len,
            shared,
            index,
            stripe,
        }
    }

    #[inline(always)]
    fn shared(&self) -> &Shared {
        match &self.shared {
            Holder::Borrowed(shared) => shared,
            Holder::Counted(shared) => shared,
        }
    }
}

impl LayerGuard<'static> {
    /// Wraps a pin the caller already holds, keeping `shared` alive.
    pub(crate) fn counted(shared: Arc<Shared>, index: u64, stripe: usize) -> LayerGuard<'static> {
        LayerGuard::with(Holder::Counted(shared), index, stripe)
    }
}

impl LayerGuard<'_> {
    /// The layer index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The address of the layer's bytes, as a raw pointer that makes no
    /// reference to them: for bindings (the C library) whose callers may write
    /// into the layer, so that no Rust `&[u8]` of those bytes exists
    /// meanwhile. With the owned backends the pointer carries the buffer's
    /// write permission; with the mapped backend, that of the private mapping
    /// (see [`crate::MappedModel::mapped_ptr_mut`]). Valid while the guard lives
    /// (mapped: until the model is dropped).
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.bytes.as_ptr()
    }

    /// The layer's bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `bytes`/`len` describe the pinned layer's bytes (in the mapping,
        // which lives as long as `Shared`, or in the slot's buffer, freed only
        // after a claim, which needs zero pins), or are dangling with length 0.
        // This guard's pin lasts until `drop`, which outlives the borrow of
        // `self`. Nothing writes these bytes through Rust; see
        // `MappedModel::mapped_ptr_mut` for the C callers' private writes.
        unsafe { std::slice::from_raw_parts(self.bytes.as_ptr(), self.len) }
    }

    /// The whole layer as a slice of `T` (checks size and alignment).
    pub fn cast<T: bytemuck::Pod>(&self) -> Result<&[T], StoreError> {
        bytemuck::try_cast_slice(self.bytes()).map_err(|error| StoreError::View {
            layer: self.index,
            what: std::any::type_name::<T>().to_owned(),
            reason: format!("{error:?}"),
        })
    }

    /// The layer's tensors (none for legacy v1 layers).
    pub fn tensors(&self) -> Result<Vec<TensorView<'_>>, StoreError> {
        let model = self.shared().tables_model();
        let tensors = model
            .layer_tensors(self.index)
            .map_err(|source| StoreError::Format {
                path: self.shared().source.path().to_path_buf(),
                source,
            })?;
        tensors.map(|info| self.view(info)).collect()
    }

    /// The tensor called `name` in this layer.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, StoreError> {
        let info = self.shared().find_tensor(self.index, name)?;
        self.view(info)
    }

    /// The tensor called `name` as a slice of `T`, checking its dtype and alignment.
    pub fn tensor_as<T: Element>(&self, name: &str) -> Result<&[T], StoreError> {
        let view = self.tensor(name)?;
        if view.info.dtype != T::DTYPE {
            return Err(StoreError::DTypeMismatch {
                layer: self.index,
                name: name.to_owned(),
                stored: view.info.dtype,
                requested: T::DTYPE,
            });
        }
        let align = std::mem::align_of::<T>();
        if !(view.bytes.as_ptr() as usize).is_multiple_of(align) {
            return Err(StoreError::View {
                layer: self.index,
                what: name.to_owned(),
                reason: format!(
                    "misaligned: its bytes start at byte {} of the layer, at an address that \
                     is not a multiple of {align} as {} needs (a directly opened safetensors or \
                     GGUF file does not align tensors: read its bytes with `tensor`, or \
                     `tmai convert` the file)",
                    view.info.offset_in_layer,
                    std::any::type_name::<T>()
                ),
            });
        }
        bytemuck::try_cast_slice(view.bytes).map_err(|error| StoreError::View {
            layer: self.index,
            what: name.to_owned(),
            reason: format!("{error:?}"),
        })
    }

    fn view<'g>(&'g self, info: TensorInfo<'g>) -> Result<TensorView<'g>, StoreError> {
        let range = self.shared().tensor_range(self.index, &info)?;
        let bytes = self.bytes().get(range).ok_or_else(|| StoreError::View {
            layer: self.index,
            what: info.name.to_owned(),
            reason: "tensor range outside the layer".to_owned(),
        })?;
        Ok(TensorView { info, bytes })
    }
}

impl Deref for LayerGuard<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

impl AsRef<[u8]> for LayerGuard<'_> {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl Drop for LayerGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.shared().unpin(self.index, self.stripe);
    }
}
