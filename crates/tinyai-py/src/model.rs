//! `tinyai.Model`, `tinyai.LayerDescriptor` and `tinyai.ForwardPass`.
//!
//! # How a Python object holds the store
//! `Model` holds an `Arc<MappedModel>` behind a mutex; `close()` takes it out
//! (so every later call raises `ClosedError`) and drops it with the GIL
//! released, which stops the prefetch threads and waits for loads in flight.
//! Layers are taken with [`MappedModel::get_detached`]: their guards hold a
//! reference count on the store's internals (the file, its mapping, the
//! owned buffers) rather than on the `MappedModel`, so a `Layer` and every
//! array or memoryview over it stay valid after `close()` — the mapping goes
//! when the last of them does. That is the store's own answer to "a guard
//! that outlives its model"; no lifetime is faked here.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use tinyai_store::{Backend, CacheState, LayerDescriptor as StoreDescriptor, MappedModel, Stats};

use crate::errors::{Kind, StoreResultExt, error};
use crate::layer::Layer;

/// Arguments of `tinyai.open`, checked.
pub(crate) struct OpenOptions {
    pub(crate) max_cache_size: i64,
    pub(crate) prefetch: bool,
    pub(crate) prefetch_threads: i64,
    pub(crate) adaptive: bool,
    pub(crate) min_layer_cache_size: i64,
    pub(crate) backend: String,
    pub(crate) verify_checksums: bool,
}

impl OpenOptions {
    /// The store configuration, or `ConfigError` for a value out of range
    /// (the store's own `StoreConfig::validate` checks the rest at open).
    pub(crate) fn config(&self, py: Python<'_>) -> PyResult<tinyai_store::StoreConfig> {
        let non_negative = |name: &str, value: i64| -> PyResult<u64> {
            u64::try_from(value).map_err(|_| {
                error(
                    py,
                    Kind::Config,
                    format!("invalid configuration: {name} must not be negative (got {value})"),
                )
            })
        };
        let backend = match self.backend.as_str() {
            "mapped" => Backend::Mapped,
            "owned" => Backend::Owned { direct_io: false },
            "owned_direct" => Backend::Owned { direct_io: true },
            other => {
                return Err(error(
                    py,
                    Kind::Config,
                    format!(
                        "invalid configuration: backend {other:?} is not one of \"mapped\", \"owned\", \"owned_direct\""
                    ),
                ));
            }
        };
        let prefetch_threads = non_negative("prefetch_threads", self.prefetch_threads)?;
        Ok(tinyai_store::StoreConfig {
            max_cache_size: non_negative("max_cache_size", self.max_cache_size)?,
            prefetch_enabled: self.prefetch,
            prefetch_threads: usize::try_from(prefetch_threads).unwrap_or(usize::MAX),
            adaptive_caching: self.adaptive,
            min_layer_cache_size: non_negative("min_layer_cache_size", self.min_layer_cache_size)?,
            backend,
            verify_checksums: self.verify_checksums,
            ..tinyai_store::StoreConfig::default()
        })
    }
}

/// A layer index from Python: negative counts from the end, like a list.
pub(crate) fn layer_index(py: Python<'_>, index: i64, count: u64) -> PyResult<u64> {
    let resolved = if index < 0 {
        i128::from(count) + i128::from(index)
    } else {
        i128::from(index)
    };
    u64::try_from(resolved)
        .ok()
        .filter(|&resolved| resolved < count)
        .ok_or_else(|| {
            error(
                py,
                Kind::Index,
                format!("layer index {index} out of range (model has {count} layers)"),
            )
        })
}

/// A model file opened for layer-by-layer access under a memory budget.
///
/// Made by `tinyai.open()`. A context manager: `with tinyai.open(p) as m:`
/// closes it at the end. All methods may be called from any thread; loads
/// and prefetches run with the GIL released.
#[derive(Debug)]
#[pyclass(module = "tinyai", frozen)]
pub struct Model {
    inner: Mutex<Option<Arc<MappedModel>>>,
    path: PathBuf,
}

impl Model {
    pub(crate) fn open(py: Python<'_>, path: PathBuf, options: &OpenOptions) -> PyResult<Model> {
        let config = options.config(py)?;
        let opened = py.detach(|| MappedModel::open(&path, config)).py_err(py)?;
        Ok(Model {
            inner: Mutex::new(Some(Arc::new(opened))),
            path,
        })
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<MappedModel>>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The open store, or `ClosedError`.
    pub(crate) fn handle(&self, py: Python<'_>) -> PyResult<Arc<MappedModel>> {
        self.slot().clone().ok_or_else(|| {
            error(
                py,
                Kind::Closed,
                format!("{}: the model is closed", self.path.display()),
            )
        })
    }

    fn get(&self, py: Python<'_>, index: i64) -> PyResult<Layer> {
        let model = self.handle(py)?;
        let index = layer_index(py, index, model.layer_count())?;
        // The closure owns the handle: if close() ran meanwhile, the model is
        // dropped (waiting for loads in flight) with the GIL released.
        let guard = py.detach(move || model.get_detached(index)).py_err(py)?;
        Layer::new(py, guard)
    }
}

fn state_name(state: CacheState) -> &'static str {
    match state {
        CacheState::NotLoaded => "not_loaded",
        CacheState::Loading => "loading",
        CacheState::Cached => "cached",
        CacheState::Transient => "transient",
    }
}

/// The counters as a dict (every field of the store's `Stats`, `load_time`
/// in seconds, plus `hit_ratio`).
pub(crate) fn stats_dict<'py>(py: Python<'py>, stats: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("hits", stats.hits)?;
    dict.set_item("misses", stats.misses)?;
    dict.set_item("bypasses", stats.bypasses)?;
    dict.set_item("bytes_read", stats.bytes_read)?;
    dict.set_item("evictions", stats.evictions)?;
    dict.set_item("prefetch_issued", stats.prefetch_issued)?;
    dict.set_item("prefetch_used", stats.prefetch_used)?;
    dict.set_item("prefetch_wasted", stats.prefetch_wasted)?;
    dict.set_item("prefetch_cancelled", stats.prefetch_cancelled)?;
    dict.set_item("checksum_failures", stats.checksum_failures)?;
    dict.set_item("checksums_verified", stats.checksums_verified)?;
    dict.set_item("load_time", stats.load_time.as_secs_f64())?;
    dict.set_item("cached_bytes", stats.cached_bytes)?;
    dict.set_item("transient_bytes", stats.transient_bytes)?;
    dict.set_item("reclaim_pending_bytes", stats.reclaim_pending_bytes)?;
    dict.set_item("io_bandwidth", stats.io_bandwidth)?;
    dict.set_item("io_latency", stats.io_latency.as_secs_f64())?;
    dict.set_item("io_depth", stats.io_depth)?;
    dict.set_item("buffers_reused", stats.buffers_reused)?;
    dict.set_item("buffers_allocated", stats.buffers_allocated)?;
    dict.set_item("pooled_bytes", stats.pooled_bytes)?;
    dict.set_item("layers_without_checksum", stats.layers_without_checksum)?;
    dict.set_item("hit_ratio", stats.hit_ratio())?;
    Ok(dict)
}

#[pymethods]
impl Model {
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let count = self.handle(py)?.layer_count();
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Layer `index` (negative counts from the end), loaded if needed and
    /// pinned while the returned `Layer`, or any array or memoryview of it, lives.
    fn layer(&self, py: Python<'_>, index: i64) -> PyResult<Layer> {
        self.get(py, index)
    }

    fn __getitem__(&self, py: Python<'_>, index: i64) -> PyResult<Layer> {
        self.get(py, index)
    }

    /// Same as `forward_pass()`: every layer in order, prefetching ahead.
    fn __iter__(slf: Bound<'_, Self>) -> PyResult<ForwardPass> {
        Model::forward_pass(slf, None)
    }

    /// Starts loading layer `index` in the background; returns `False` if the
    /// cache declined (no room without evicting something pinned or more valuable).
    fn prefetch(&self, py: Python<'_>, index: i64) -> PyResult<bool> {
        let model = self.handle(py)?;
        let index = layer_index(py, index, model.layer_count())?;
        py.detach(move || model.prefetch(index)).py_err(py)
    }

    /// Drops layer `index` from the cache (at once if unpinned; otherwise when
    /// its last pin goes).
    fn release(&self, py: Python<'_>, index: i64) -> PyResult<()> {
        let model = self.handle(py)?;
        let index = layer_index(py, index, model.layer_count())?;
        py.detach(move || model.release(index)).py_err(py)
    }

    /// Sets layer `index`'s retention priority (any finite number, higher kept
    /// longer, 1.0 by default).
    fn set_priority(&self, py: Python<'_>, index: i64, priority: f32) -> PyResult<()> {
        let model = self.handle(py)?;
        let index = layer_index(py, index, model.layer_count())?;
        model.set_priority(index, priority).py_err(py)
    }

    /// Resets every priority to 1.0.
    fn reset_priorities(&self, py: Python<'_>) -> PyResult<()> {
        self.handle(py)?.reset_priorities();
        Ok(())
    }

    /// What the store knows about layer `index`.
    fn descriptor(&self, py: Python<'_>, index: i64) -> PyResult<LayerDescriptor> {
        let model = self.handle(py)?;
        let index = layer_index(py, index, model.layer_count())?;
        let descriptor = model.descriptor(index).py_err(py)?;
        Ok(LayerDescriptor::from(descriptor))
    }

    /// `length` bytes of tensor `name` of layer `index`, starting `start`
    /// bytes into the tensor, read from the file: the layer is neither loaded
    /// nor charged against the budget. For gathering a few rows of a table
    /// larger than the budget (row `r` of a row-major `[rows, width]` f32
    /// tensor starts at `r * width * 4`). Checksums are not checked here (see
    /// `verify_layer_from_file`).
    fn read_tensor_bytes<'py>(
        &self,
        py: Python<'py>,
        index: i64,
        name: &str,
        start: u64,
        length: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let model = self.handle(py)?;
        let index = layer_index(py, index, model.layer_count())?;
        let buffer = py
            .detach(move || {
                let mut buffer = vec![0u8; length];
                model
                    .read_tensor_bytes(index, name, start, &mut buffer)
                    .map(|()| buffer)
            })
            .py_err(py)?;
        Ok(PyBytes::new(py, &buffer))
    }

    /// Checks layer `index`'s checksum against the file without loading or
    /// charging it (so it works for a layer larger than the budget); raises
    /// `ChecksumError` on a mismatch.
    fn verify_layer_from_file(&self, py: Python<'_>, index: i64) -> PyResult<()> {
        let model = self.handle(py)?;
        let index = layer_index(py, index, model.layer_count())?;
        py.detach(move || model.verify_layer_from_file(index))
            .py_err(py)
    }

    /// A snapshot of the counters since open, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.handle(py)?.stats();
        stats_dict(py, &stats)
    }

    /// Charged bytes in memory: cached layers plus layers held outside the cache.
    #[getter]
    fn memory_usage(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.handle(py)?.memory_usage())
    }

    /// The file's metadata, in table order.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let model = self.handle(py)?;
        let dict = PyDict::new(py);
        for (key, value) in model.format().metadata() {
            dict.set_item(key, value)?;
        }
        Ok(dict)
    }

    /// Names of the tensors of layer `layer`, or of every layer in order
    /// when `layer` is None.
    #[pyo3(signature = (layer = None))]
    fn tensor_names<'py>(
        &self,
        py: Python<'py>,
        layer: Option<i64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let model = self.handle(py)?;
        let count = model.layer_count();
        let layers = match layer {
            Some(index) => {
                let index = layer_index(py, index, count)?;
                index..index + 1
            }
            None => 0..count,
        };
        let names = PyList::empty(py);
        for index in layers {
            let tensors = model
                .format()
                .layer_tensors(index)
                .map_err(|source| tinyai_store::StoreError::Format {
                    path: self.path.clone(),
                    source,
                })
                .py_err(py)?;
            for tensor in tensors {
                names.append(tensor.name)?;
            }
        }
        Ok(names)
    }

    /// Iterates layers in `order` (default: all, in order), prefetching the
    /// next ones while the caller works on the current one. The order is
    /// declared to the cache, which keeps what is needed soonest.
    #[pyo3(signature = (order = None))]
    fn forward_pass(slf: Bound<'_, Self>, order: Option<Vec<i64>>) -> PyResult<ForwardPass> {
        let py = slf.py();
        let model = slf.get().handle(py)?;
        let count = model.layer_count();
        let order: Vec<u64> = match order {
            Some(order) => order
                .into_iter()
                .map(|index| layer_index(py, index, count))
                .collect::<PyResult<_>>()?,
            None => (0..count).collect(),
        };
        let declared = order.clone();
        py.detach(move || model.set_access_order(Some(declared)))
            .py_err(py)?;
        Ok(ForwardPass {
            model: slf.unbind(),
            order,
            position: Mutex::new(0),
        })
    }

    /// The backend in effect: "mapped", "owned" or "owned_direct" (a mapped
    /// open falls back to owned when the file cannot be mapped).
    #[getter]
    fn backend(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(match self.handle(py)?.backend() {
            Backend::Mapped => "mapped",
            Backend::Owned { direct_io: false } => "owned",
            Backend::Owned { direct_io: true } => "owned_direct",
        })
    }

    /// The path the model was opened from.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.slot().is_none()
    }

    /// Closes the model: stops prefetching and waits for loads in flight.
    /// Layers, arrays and memoryviews taken before stay valid until they are
    /// dropped (they keep the file's mapping alive); every other method then
    /// raises `ClosedError`. Closing twice does nothing.
    fn close(&self, py: Python<'_>) {
        let taken = self.slot().take();
        if let Some(model) = taken {
            py.detach(move || drop(model));
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_arguments))]
    fn __exit__(&self, py: Python<'_>, _arguments: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        match self.slot().as_ref() {
            Some(model) => format!(
                "<tinyai.Model {:?}: {} layers, budget {} bytes>",
                self.path.display().to_string(),
                model.layer_count(),
                model.config().max_cache_size
            ),
            None => format!(
                "<tinyai.Model {:?} (closed)>",
                self.path.display().to_string()
            ),
        }
    }
}

/// What the store knows about one layer (TinyAI's `TinyAILayerDescriptor`).
#[pyclass(module = "tinyai", frozen, get_all, eq)]
#[derive(Clone, Debug, PartialEq)]
pub struct LayerDescriptor {
    /// Layer index.
    index: u64,
    /// Absolute offset of the layer's bytes in the file.
    offset: u64,
    /// Size in bytes.
    size: u64,
    /// Bits per weight.
    precision_bits: u32,
    /// Element type name of the layer ("f32", "mixed" …).
    dtype: &'static str,
    /// "not_loaded", "loading", "cached" or "transient".
    state: &'static str,
    /// Retention priority (1.0 by default).
    priority: f32,
    /// Milliseconds since the Unix epoch of the last demand access (0 if never).
    last_accessed_ms: u64,
    /// Number of demand accesses.
    access_count: u64,
    /// Bytes this layer is charged when cached.
    charge: u64,
}

impl From<StoreDescriptor> for LayerDescriptor {
    fn from(descriptor: StoreDescriptor) -> Self {
        LayerDescriptor {
            index: descriptor.index,
            offset: descriptor.offset,
            size: descriptor.size,
            precision_bits: descriptor.precision_bits,
            dtype: descriptor.dtype.name(),
            state: state_name(descriptor.state),
            priority: descriptor.priority,
            last_accessed_ms: descriptor.last_accessed_ms,
            access_count: descriptor.access_count,
            charge: descriptor.charge,
        }
    }
}

#[pymethods]
impl LayerDescriptor {
    fn __repr__(&self) -> String {
        format!(
            "LayerDescriptor(index={}, offset={}, size={}, precision_bits={}, dtype={:?}, state={:?}, priority={}, last_accessed_ms={}, access_count={}, charge={})",
            self.index,
            self.offset,
            self.size,
            self.precision_bits,
            self.dtype,
            self.state,
            self.priority,
            self.last_accessed_ms,
            self.access_count,
            self.charge
        )
    }
}

/// An iterator over layers in a declared order that prefetches ahead: while
/// the caller computes on one layer the next ones load. Made by
/// `Model.forward_pass()`.
#[derive(Debug)]
#[pyclass(module = "tinyai", frozen)]
pub struct ForwardPass {
    model: Py<Model>,
    order: Vec<u64>,
    position: Mutex<usize>,
}

#[pymethods]
impl ForwardPass {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Layer>> {
        let position = {
            let mut position = self
                .position
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let current = *position;
            if current >= self.order.len() {
                return Ok(None);
            }
            *position += 1;
            current
        };
        let model = self.model.get().handle(py)?;
        let index = self.order[position];
        let upcoming = &self.order[position + 1..];
        let guard = py
            .detach(move || {
                let guard = model.get_detached(index);
                model.prefetch_upcoming(upcoming);
                guard
            })
            .py_err(py)?;
        Layer::new(py, guard).map(Some)
    }

    fn __len__(&self) -> usize {
        self.order.len()
    }
}
