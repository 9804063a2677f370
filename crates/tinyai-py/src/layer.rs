//! `tinyai.Layer`: a pinned layer, its bytes as a memoryview, its tensors as
//! read-only NumPy arrays — all zero-copy.
//!
//! # Who keeps the pin
//! The pin is a [`LayerGuard`] inside a private `_Pin` object. The `Layer`
//! refers to it; so does every array (as its NumPy base object) and every
//! memoryview (as the buffer's exporting object). The guard is dropped, and the
//! layer unpinned, when the last of them goes: `del layer` leaves views valid,
//! and `Layer.release()` / the end of a `with` block only drops the `Layer`'s
//! own reference. The guard also keeps the store's internals (the mapping,
//! the owned buffers) alive, so views survive `Model.close()` as well. No view
//! can outlive the bytes it shows.

use std::ffi::{c_int, c_void};
use std::sync::{Mutex, MutexGuard};

use numpy::npyffi::{self, NpyTypes, PY_ARRAY_API, npy_intp};
use numpy::{PyArrayDescr, PyArrayDescrMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tinyai_format::{DType, TensorInfo};
use tinyai_store::LayerGuard;

use crate::errors::{Kind, StoreResultExt, error};

/// The owner of one pin (private: reached through `Layer`, arrays' `.base`
/// and memoryviews' `.obj`).
#[derive(Debug)]
#[pyclass(module = "tinyai", name = "_Pin", frozen)]
pub struct Pin {
    guard: LayerGuard<'static>,
}

#[pymethods]
impl Pin {
    fn __repr__(&self) -> String {
        format!(
            "<tinyai._Pin of layer {} ({} bytes)>",
            self.guard.index(),
            self.guard.len()
        )
    }
}

/// One layer of a model, pinned in memory while this object or any array or
/// memoryview made from it lives.
///
/// `memoryview(layer)` is the layer's bytes (read-only, zero-copy);
/// `layer.tensor(name)` is one tensor as a read-only NumPy array over those
/// same bytes. A context manager: `with model.layer(i) as layer:` releases
/// this object's pin at the end of the block (views taken inside keep theirs).
#[derive(Debug)]
#[pyclass(module = "tinyai", frozen)]
pub struct Layer {
    pin: Mutex<Option<Py<Pin>>>,
    index: u64,
    length: usize,
}

/// The NumPy type string of a dtype, or `None` for dtypes NumPy has no type
/// for (bf16, f8, packed i4, GGML blocks, opaque, mixed, unknown), which are
/// served as their raw bytes (`uint8`, one dimension).
fn numpy_typestr(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::F64 => "<f8",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
        DType::BF16 => "<u2",
        _ => return None,
    })
}

/// A read-only array of `typestr` and `shape` over `bytes` (inside the pinned
/// layer of `owner`), with `owner` as its base object.
fn array_over<'py>(
    owner: &Bound<'py, Pin>,
    bytes: &[u8],
    typestr: &str,
    shape: &[u64],
) -> PyResult<Bound<'py, PyAny>> {
    let py = owner.py();
    let descr = PyArrayDescr::new(py, typestr)?;
    let element_size = u64::try_from(descr.itemsize()).unwrap_or(u64::MAX);
    let mut dims = Vec::with_capacity(shape.len());
    let mut elements = 1u64;
    for &dimension in shape {
        elements = elements.saturating_mul(dimension);
        dims.push(
            npy_intp::try_from(dimension)
                .map_err(|_| error(py, Kind::Base, format!("dimension {dimension} too large")))?,
        );
    }
    if elements.saturating_mul(element_size) != bytes.len() as u64 {
        return Err(error(
            py,
            Kind::Base,
            format!(
                "{} bytes cannot be viewed as {typestr} of shape {shape:?}",
                bytes.len()
            ),
        ));
    }
    let rank = c_int::try_from(dims.len())
        .map_err(|_| error(py, Kind::Base, format!("rank {} too large", dims.len())))?;
    // SAFETY: `bytes` lies inside the layer pinned by `owner`'s guard (a slice
    // the guard handed out), and `dims` × the dtype's size equals its length
    // (checked above), so NumPy never reads past it. The array is created
    // without NPY_ARRAY_WRITEABLE, and its base object is not a writable
    // buffer, so NumPy refuses to make it writable: the bytes are never
    // written through it. `into_dtype_ptr` gives NumPy the reference it steals.
    // The array cannot outlive the bytes: its base (set below, before anyone
    // else can see the array) is `owner`, whose guard keeps the layer pinned
    // and the store's memory alive for as long as the array references it.
    unsafe {
        let array = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            npyffi::get_type_object(py, NpyTypes::PyArray_Type),
            descr.into_dtype_ptr(),
            rank,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            bytes.as_ptr().cast_mut().cast::<c_void>(),
            0,
            std::ptr::null_mut(),
        );
        let array = Bound::from_owned_ptr_or_err(py, array)?;
        // Steals the new reference to `owner`.
        let status = PY_ARRAY_API.PyArray_SetBaseObject(
            py,
            array.as_ptr().cast::<npyffi::PyArrayObject>(),
            owner.clone().into_any().into_ptr(),
        );
        if status != 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(array)
    }
}

fn tensor_array<'py>(
    owner: &Bound<'py, Pin>,
    info: &TensorInfo<'_>,
    bytes: &[u8],
) -> PyResult<Bound<'py, PyAny>> {
    match numpy_typestr(info.dtype) {
        Some(typestr) => array_over(owner, bytes, typestr, info.shape()),
        None => array_over(owner, bytes, "|u1", &[bytes.len() as u64]),
    }
}

impl Layer {
    pub(crate) fn new(py: Python<'_>, guard: LayerGuard<'static>) -> PyResult<Layer> {
        let index = guard.index();
        let length = guard.len();
        let pin = Py::new(py, Pin { guard })?;
        Ok(Layer {
            pin: Mutex::new(Some(pin)),
            index,
            length,
        })
    }

    fn slot(&self) -> MutexGuard<'_, Option<Py<Pin>>> {
        self.pin
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pin, or `ClosedError` after `release()`.
    fn pinned<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, Pin>> {
        match self.slot().as_ref() {
            Some(pin) => Ok(pin.bind(py).clone()),
            None => Err(error(
                py,
                Kind::Closed,
                format!("layer {} was released", self.index),
            )),
        }
    }
}

#[pymethods]
impl Layer {
    /// The layer index.
    #[getter]
    fn index(&self) -> u64 {
        self.index
    }

    /// Size of the layer in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.length
    }

    fn __len__(&self) -> usize {
        self.length
    }

    /// Whether `release()` was called (or the `with` block ended).
    #[getter]
    fn released(&self) -> bool {
        self.slot().is_none()
    }

    /// Address of the layer's first byte, for diagnostics (and zero-copy checks).
    #[getter]
    fn address(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.pinned(py)?.get().guard.as_ptr() as usize)
    }

    /// The whole layer as a read-only one-dimensional `uint8` array (zero-copy).
    fn array<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pin = self.pinned(py)?;
        let guard = &pin.get().guard;
        array_over(&pin, guard.bytes(), "|u1", &[guard.len() as u64])
    }

    /// Tensor `name` as a read-only NumPy array over the layer's bytes
    /// (zero-copy), with its dtype and shape. Dtypes NumPy has no type for are
    /// raw bytes: bf16 as `uint16` bit patterns of the same shape; f8, packed
    /// i4, GGML blocks and opaque tensors as one-dimensional `uint8`
    /// (`tensor_info(name)` tells the stored dtype).
    fn tensor<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let pin = self.pinned(py)?;
        let view = pin.get().guard.tensor(name).py_err(py)?;
        tensor_array(&pin, &view.info, view.bytes)
    }

    /// Every tensor of the layer, by name, in table order (see `tensor`).
    fn tensors<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let pin = self.pinned(py)?;
        let views = pin.get().guard.tensors().py_err(py)?;
        let dict = PyDict::new(py);
        for view in views {
            dict.set_item(view.info.name, tensor_array(&pin, &view.info, view.bytes)?)?;
        }
        Ok(dict)
    }

    /// Names of the layer's tensors, in table order.
    fn tensor_names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let pin = self.pinned(py)?;
        let views = pin.get().guard.tensors().py_err(py)?;
        let names = PyList::empty(py);
        for view in views {
            names.append(view.info.name)?;
        }
        Ok(names)
    }

    /// Tensor `name`'s table entry: `dtype` (the stored type's name), `shape`,
    /// `source_type` (GGML type id), `offset_in_layer` and `size` in bytes.
    fn tensor_info<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyDict>> {
        let pin = self.pinned(py)?;
        let view = pin.get().guard.tensor(name).py_err(py)?;
        let dict = PyDict::new(py);
        dict.set_item("name", view.info.name)?;
        dict.set_item("dtype", view.info.dtype.name())?;
        dict.set_item("shape", view.info.shape().to_vec())?;
        dict.set_item("source_type", view.info.source_type)?;
        dict.set_item("offset_in_layer", view.info.offset_in_layer)?;
        dict.set_item("size", view.info.length)?;
        Ok(dict)
    }

    /// Drops this object's pin (views taken from it keep theirs); later calls
    /// on this object raise `ClosedError`. Releasing twice does nothing.
    fn release(&self) {
        let taken = self.slot().take();
        drop(taken);
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_arguments))]
    fn __exit__(&self, _arguments: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.release();
        false
    }

    /// The buffer protocol: the layer's bytes, read-only, one-dimensional
    /// unsigned bytes. The exporting object recorded in the buffer is the
    /// pin, so the memoryview keeps the layer pinned by itself.
    #[cfg(not(feature = "abi3-py39"))]
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let py = slf.py();
        if view.is_null() {
            return Err(pyo3::exceptions::PyBufferError::new_err("view is NULL"));
        }
        if (flags & pyo3::ffi::PyBUF_WRITABLE) == pyo3::ffi::PyBUF_WRITABLE {
            return Err(pyo3::exceptions::PyBufferError::new_err(
                "a layer's bytes are read-only",
            ));
        }
        let pin = slf.get().pinned(py)?;
        let (pointer, length) = {
            let guard = &pin.get().guard;
            (guard.as_ptr(), guard.len())
        };
        let length = pyo3::ffi::Py_ssize_t::try_from(length)
            .map_err(|_| pyo3::exceptions::PyBufferError::new_err("layer too large"))?;
        // SAFETY: `view` is non-null and points to a Py_buffer the caller
        // (CPython) owns for the duration of the export. We fill every field
        // it reads. `buf` points at the pinned layer's bytes, valid while the
        // guard inside `pin` lives; `obj` takes a new reference to `pin`, so
        // the guard lives until the buffer is released. `readonly` is 1 and
        // writable requests were refused above. `shape` and `strides` point
        // into the Py_buffer itself (at `len` and `itemsize`), which lives as
        // long as the export; `format` is a static NUL-terminated string.
        unsafe {
            (*view).obj = pin.into_any().into_ptr();
            (*view).buf = pointer.cast_mut().cast::<c_void>();
            (*view).len = length;
            (*view).readonly = 1;
            (*view).itemsize = 1;
            (*view).format = if (flags & pyo3::ffi::PyBUF_FORMAT) == pyo3::ffi::PyBUF_FORMAT {
                c"B".as_ptr().cast_mut()
            } else {
                std::ptr::null_mut()
            };
            (*view).ndim = 1;
            (*view).shape = if (flags & pyo3::ffi::PyBUF_ND) == pyo3::ffi::PyBUF_ND {
                &raw mut (*view).len
            } else {
                std::ptr::null_mut()
            };
            (*view).strides = if (flags & pyo3::ffi::PyBUF_STRIDES) == pyo3::ffi::PyBUF_STRIDES {
                &raw mut (*view).itemsize
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        let state = if self.released() { ", released" } else { "" };
        format!(
            "<tinyai.Layer {} ({} bytes{state})>",
            self.index, self.length
        )
    }
}
