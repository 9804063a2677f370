//! Hot get of resident layers through the C API (`tinyaiGetLayerWeights`), 1
//! and 2 threads, beside the floors measured in the same run (the harness is
//! shared with `tinyai-store`'s `hot_get` example; see its
//! `common/hot_get_bench.rs` for the setup). Run by `cargo xtask bench ffi`.
//!
//! Usage: bench_ffi [--quick] [--out FILE]
#![allow(clippy::unwrap_used)]

#[path = "../../tinyai-store/examples/common/hot_get_bench.rs"]
mod hot_get_bench;

use std::ffi::{CString, c_int};
use std::hint::black_box;

use hot_get_bench::{BUDGET_BYTES, FLOOR_SUBJECTS, Floors, Harness, LAYERS, write_fixture};
use tinyai::{
    tinyaiCloseMappedModel, tinyaiCreateDefaultMmapConfig, tinyaiGetLayerWeights,
    tinyaiGetMappedModelMemoryUsage, tinyaiOpenMappedModel,
};

struct Model(*mut tinyai::TinyAIMappedModel);
// SAFETY: the C API documents every function as callable concurrently on one model.
unsafe impl Send for Model {}
// SAFETY: as above.
unsafe impl Sync for Model {}

impl Model {
    /// `tinyaiGetLayerWeights`; a method, so that closures capture the whole
    /// (`Sync`) model rather than its raw pointer field.
    fn get_layer_weights(&self, index: u32) -> *mut std::ffi::c_void {
        // SAFETY: the model is open until `main` closes it after every thread
        // has been joined; `index` is below `LAYERS`.
        unsafe { tinyaiGetLayerWeights(self.0, index as c_int) }
    }
}

fn main() {
    let harness = Harness::from_args("target/bench/ffi.json");
    let dir = tempfile::tempdir().unwrap();
    let path = write_fixture(dir.path());
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    let mut config = tinyaiCreateDefaultMmapConfig();
    config.maxCacheSize = usize::try_from(BUDGET_BYTES).unwrap();
    // SAFETY: valid NUL-terminated path and config pointer.
    let model = Model(unsafe { tinyaiOpenMappedModel(c_path.as_ptr(), &config) });
    assert!(!model.0.is_null());
    for _ in 0..2 {
        for index in 0..LAYERS {
            assert!(!model.get_layer_weights(index).is_null());
        }
    }
    // SAFETY: the model is open.
    let resident_bytes = unsafe { tinyaiGetMappedModelMemoryUsage(model.0) } as u64;
    let floors = Floors::new();
    let subjects: Vec<&'static str> = std::iter::once("c_api_get").chain(FLOOR_SUBJECTS).collect();
    let rows = harness.run("ffi", &subjects, |subject, threads| match subject {
        "c_api_get" => harness.time(threads, |index| {
            black_box(model.get_layer_weights(index));
        }),
        floor => floors.time(&harness, floor, threads),
    });
    // SAFETY: opened above, closed once, after every thread has been joined.
    unsafe { tinyaiCloseMappedModel(model.0) };
    harness.write_json(&rows, resident_bytes);
}
