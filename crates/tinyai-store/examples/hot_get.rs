//! Hot get of resident layers through the Rust API (`MappedModel::get`), 1 and
//! 2 threads, beside the floors measured in the same run (see
//! `common/hot_get_bench.rs` for the setup). Run by `cargo xtask bench store`.
//!
//! Usage: hot_get [--quick] [--out FILE]
#![allow(clippy::unwrap_used)]

#[path = "common/hot_get_bench.rs"]
mod hot_get_bench;

use std::hint::black_box;

use hot_get_bench::{BUDGET_BYTES, FLOOR_SUBJECTS, Floors, Harness, LAYERS, write_fixture};
use tinyai_store::{MappedModel, StoreConfig};

fn main() {
    let harness = Harness::from_args("target/bench/store_hot_get.json");
    let dir = tempfile::tempdir().unwrap();
    let path = write_fixture(dir.path());
    let config = StoreConfig {
        max_cache_size: BUDGET_BYTES,
        ..StoreConfig::default()
    };
    let model = MappedModel::open(&path, config).unwrap();
    for _ in 0..2 {
        for index in 0..LAYERS {
            drop(model.get(u64::from(index)).unwrap());
        }
    }
    let resident_bytes = model.cached_bytes();
    let floors = Floors::new();
    let subjects: Vec<&'static str> = std::iter::once("store_get").chain(FLOOR_SUBJECTS).collect();
    let rows = harness.run("store", &subjects, |subject, threads| match subject {
        "store_get" => harness.time(threads, |index| {
            let guard = model.get(u64::from(index)).unwrap();
            black_box(guard.as_ptr());
            drop(guard);
        }),
        floor => floors.time(&harness, floor, threads),
    });
    harness.write_json(&rows, resident_bytes);
}
