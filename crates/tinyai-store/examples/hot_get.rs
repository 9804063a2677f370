//! Hot get of resident layers through the Rust API (`MappedModel::get`), 1 and
//! 2 threads, beside the floors measured in the same run (see
//! `common/hot_get_bench.rs` for the setup). Run by `cargo xtask bench store`.
//!
//! A second subject, `store_get_under_pressure`, measures the same gets when
//! the model does *not* fit the budget (200 MiB for 240 MiB): the gets go to
//! the 40 layers kept resident, so they are all hits, but now the policy needs
//! every hit (read buffers, drained into the engine) and lookahead runs per
//! get (not every layer is resident). The goals are for the first
//! subject; this one says what the hot path costs under memory pressure.
//!
//! Usage: hot_get [--quick] [--out FILE]
#![allow(clippy::unwrap_used)]

#[path = "common/hot_get_bench.rs"]
mod hot_get_bench;

use std::hint::black_box;

/// The pressured model's budget: less than the 240 MiB model.
const PRESSURE_BUDGET_BYTES: u64 = 200 << 20;
/// Layers the pressured subject gets (all of them fit the engine's share).
const PRESSURE_RESIDENT_LAYERS: u32 = 40;

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
    let pressured = MappedModel::open(
        &path,
        StoreConfig {
            max_cache_size: PRESSURE_BUDGET_BYTES,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    for _ in 0..2 {
        for index in 0..PRESSURE_RESIDENT_LAYERS {
            drop(pressured.get(u64::from(index)).unwrap());
        }
    }
    let misses_before = pressured.stats().misses;
    let floors = Floors::new();
    let subjects: Vec<&'static str> = ["store_get", "store_get_under_pressure"]
        .into_iter()
        .chain(FLOOR_SUBJECTS)
        .collect();
    let rows = harness.run("store", &subjects, |subject, threads| match subject {
        "store_get" => harness.time(threads, |index| {
            let guard = model.get(u64::from(index)).unwrap();
            black_box(guard.as_ptr());
            drop(guard);
        }),
        "store_get_under_pressure" => harness.time(threads, |index| {
            let guard = pressured
                .get(u64::from(index % PRESSURE_RESIDENT_LAYERS))
                .unwrap();
            black_box(guard.as_ptr());
            drop(guard);
        }),
        floor => floors.time(&harness, floor, threads),
    });
    // It measures hits: a false read-ahead may evict a hot layer now and then
    // (lookahead can mistake a chance run in random access for a scan), but
    // misses must stay a negligible share of the gets.
    let stats = pressured.stats();
    let misses = stats.misses - misses_before;
    eprintln!("[bench store] store_get_under_pressure: {misses} misses while timed; {stats:?}");
    assert!(
        misses * 10_000 <= stats.hits,
        "the pressured subject must (nearly) only hit: {misses} misses while timed, {stats:?}"
    );
    harness.write_json(&rows, resident_bytes);
}
