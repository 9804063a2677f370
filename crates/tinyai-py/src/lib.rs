//! `tinyai`, the Python module: the TinyAI layer store from Python, with
//! zero-copy NumPy views of layers and tensors.
//!
//! A thin skin over `tinyai-store` (open, get, prefetch, release, priorities,
//! stats) and the `tmai` library (`inspect`, `verify`, `convert`): no cache,
//! format or conversion logic lives here. Built with maturin as an abi3
//! extension module (see `pyproject.toml`, and `cargo xtask py-test`, which
//! builds the wheel and runs the pytest suite in `tests/`).
//!
//! # Modules
//! - [`model`]: `Model` (the open store), `LayerDescriptor`, `ForwardPass`;
//!   how Python objects hold the store, and why `close()` is safe with live views.
//! - [`layer`]: `Layer` (a pinned layer: buffer protocol, tensors as NumPy
//!   arrays over the layer's bytes) and the private `_Pin` that owns each pin.
//! - [`errors`]: the exception hierarchy and the mapping from the store's errors.
//! - [`testing`]: `tinyai._testing`, fixture writers and a Rust-side replay for the tests.
//!
//! # Invariants
//! - No array or memoryview outlives the bytes it views: each holds (through
//!   its base or exporting object) the pin on its layer, and the pin holds
//!   the store's memory.
//! - Views are read-only: arrays are made without NumPy's WRITEABLE flag over
//!   a base that is not a writable buffer; the buffer protocol refuses
//!   writable requests.
//! - The GIL is released while the store opens, loads, prefetches, releases,
//!   closes, and while the `tmai` functions read or write files.
#![deny(missing_docs)]

pub mod errors;
pub mod layer;
pub mod model;
pub mod testing;

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::cli_error;
use crate::model::{Model, OpenOptions};

/// Opens a `.tmai` model for layer-by-layer access under a memory budget.
///
/// `max_cache_size` is a hard budget in bytes; `prefetch` turns automatic
/// lookahead on; `prefetch_threads` sizes the prefetch pool (0: none);
/// `adaptive` picks the adaptive policy (else TinyAI's classic score);
/// `min_layer_cache_size` is the minimum charge per layer; `backend` is
/// `"mapped"` (zero-copy from a private mapping), `"owned"` (read into
/// private buffers) or `"owned_direct"` (the same with O_DIRECT);
/// `verify_checksums` checks each layer's CRC-32C on first load.
#[pyfunction]
#[pyo3(signature = (
    path,
    *,
    max_cache_size = tinyai_store::config::DEFAULT_MAX_CACHE_SIZE as i64,
    prefetch = true,
    prefetch_threads = 1,
    adaptive = true,
    min_layer_cache_size = tinyai_store::config::DEFAULT_MIN_LAYER_CACHE_SIZE as i64,
    backend = "mapped".to_owned(),
    verify_checksums = false,
))]
#[allow(clippy::too_many_arguments)]
fn open(
    py: Python<'_>,
    path: PathBuf,
    max_cache_size: i64,
    prefetch: bool,
    prefetch_threads: i64,
    adaptive: bool,
    min_layer_cache_size: i64,
    backend: String,
    verify_checksums: bool,
) -> PyResult<Model> {
    let options = OpenOptions {
        max_cache_size,
        prefetch,
        prefetch_threads,
        adaptive,
        min_layer_cache_size,
        backend,
        verify_checksums,
    };
    Model::open(py, path, &options)
}

/// The header, metadata, layers and tensors of a `.tmai` file as a dict:
/// the schema of `tmai inspect --json` (reads the header and tables only).
#[pyfunction]
fn inspect<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
    let text = py
        .detach(|| {
            let mut out = Vec::new();
            tinyai_cli::inspect::run(&path, true, &mut out).map(|()| out)
        })
        .map_err(|error| cli_error(py, error))?;
    let text = String::from_utf8_lossy(&text);
    py.import("json")?.call_method1("loads", (text.as_ref(),))
}

/// Checks a `.tmai` file's structure and every layer's checksum (streamed,
/// bounded memory). Returns `tmai verify`'s summary line; raises
/// `ChecksumError` naming the corrupt layers.
#[pyfunction]
fn verify(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    let out = py
        .detach(|| {
            let mut out = Vec::new();
            tinyai_cli::verify::run(&path, true, &mut out).map(|()| out)
        })
        .map_err(|error| cli_error(py, error))?;
    Ok(String::from_utf8_lossy(&out).trim_end().to_owned())
}

/// Converts safetensors (a file, or a directory / index of shards), GGUF or
/// a legacy TinyAI v1 file to `.tmai` (what `tmai convert` does: streamed,
/// the output replaced atomically). Returns a dict: `format`, `layers`,
/// `tensors`, `bytes`.
#[pyfunction]
fn convert<'py>(
    py: Python<'py>,
    source: PathBuf,
    destination: PathBuf,
) -> PyResult<Bound<'py, PyDict>> {
    let options = tinyai_cli::convert::ConvertOptions::default();
    let summary = py
        .detach(|| tinyai_cli::convert::convert(&source, &destination, &options))
        .map_err(|error| cli_error(py, error))?;
    let dict = PyDict::new(py);
    dict.set_item("format", summary.format)?;
    dict.set_item("layers", summary.layers)?;
    dict.set_item("tensors", summary.tensors)?;
    dict.set_item("bytes", summary.bytes)?;
    Ok(dict)
}

/// The `tinyai` module.
#[pymodule]
#[pyo3(name = "tinyai")]
fn tinyai_module(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_function(wrap_pyfunction!(open, module)?)?;
    module.add_function(wrap_pyfunction!(inspect, module)?)?;
    module.add_function(wrap_pyfunction!(verify, module)?)?;
    module.add_function(wrap_pyfunction!(convert, module)?)?;
    module.add_class::<Model>()?;
    module.add_class::<model::LayerDescriptor>()?;
    module.add_class::<model::ForwardPass>()?;
    module.add_class::<layer::Layer>()?;
    errors::register(module)?;
    testing::register(module)?;
    Ok(())
}
