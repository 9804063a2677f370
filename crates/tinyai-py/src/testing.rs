//! `tinyai._testing`: helpers for the pytest suite (not a supported API).
//!
//! - `write_fixture(kind, path, size=0)`: writes one of `tinyai_format::fixtures`'
//!   deterministic models (`"tiny"`, `"multi_tensor"`, `"large"` of about
//!   `size` bytes, `"legacy_small"`), so the tests and `cargo xtask fixtures`
//!   use the same files.
//! - `rust_replay(path, accesses, **open_arguments)`: opens the model in Rust,
//!   gets and drops each layer of `accesses` in turn, and returns the store's
//!   counters as `Model.stats()` would: the reference the tests compare the
//!   binding's counters with.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tinyai_format::fixtures;
use tinyai_store::MappedModel;

use crate::errors::{Kind, StoreResultExt, error};
use crate::model::{OpenOptions, stats_dict};

/// Writes the fixture `kind` to `path` (see the module's documentation).
#[pyfunction]
#[pyo3(signature = (kind, path, size = 0))]
fn write_fixture(py: Python<'_>, kind: &str, path: PathBuf, size: u64) -> PyResult<()> {
    let written = match kind {
        "tiny" => fixtures::write_fixture_file(&fixtures::tiny(), &path),
        "multi_tensor" => fixtures::write_fixture_file(&fixtures::multi_tensor(), &path),
        "large" => fixtures::write_fixture_file(&fixtures::large(size), &path),
        "legacy_small" => fixtures::write_legacy_file(&fixtures::legacy_small(), &path),
        other => {
            return Err(error(
                py,
                Kind::Config,
                format!("unknown fixture {other:?}"),
            ));
        }
    };
    written.map_err(|source| error(py, Kind::Format, format!("{}: {source}", path.display())))
}

/// Gets and drops each layer of `accesses` through the Rust API; returns the stats.
#[pyfunction]
#[pyo3(signature = (
    path,
    accesses,
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
fn rust_replay<'py>(
    py: Python<'py>,
    path: PathBuf,
    accesses: Vec<u64>,
    max_cache_size: i64,
    prefetch: bool,
    prefetch_threads: i64,
    adaptive: bool,
    min_layer_cache_size: i64,
    backend: String,
    verify_checksums: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let config = OpenOptions {
        max_cache_size,
        prefetch,
        prefetch_threads,
        adaptive,
        min_layer_cache_size,
        backend,
        verify_checksums,
    }
    .config(py)?;
    let stats = py
        .detach(|| {
            let model = MappedModel::open(&path, config)?;
            for &index in &accesses {
                drop(model.get(index)?);
            }
            Ok(model.stats())
        })
        .py_err(py)?;
    stats_dict(py, &stats)
}

/// Adds the `_testing` submodule to `parent`.
pub(crate) fn register(parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = parent.py();
    let module = PyModule::new(py, "_testing")?;
    module.add_function(wrap_pyfunction!(write_fixture, &module)?)?;
    module.add_function(wrap_pyfunction!(rust_replay, &module)?)?;
    parent.add_submodule(&module)?;
    // So that `import tinyai._testing` finds it.
    py.import("sys")?
        .getattr("modules")?
        .set_item("tinyai._testing", &module)?;
    Ok(())
}
