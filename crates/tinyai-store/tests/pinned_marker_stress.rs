//! Defect 1 of the store-core issue: the old reclaim path checked that a slot
//! was absent, dropped the lock, then dropped the layer's pages — so a `get`
//! that reloaded the layer in between had its pages dropped while pinned, and
//! writes made through the C API's pointer vanished.
//!
//! Eight threads run mixed get / prefetch / release / priority operations on a
//! model four times the budget. While a thread holds a layer, it writes a
//! marker through the writable pointer the C API hands out
//! ([`MappedModel::mapped_ptr_mut`]), does other operations, and checks the
//! marker before unpinning: a re-read from the file would not carry it. Every
//! read of layer bytes checks them against the fixture. Only raw-pointer reads
//! and writes touch the bytes, as a C program would.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use tinyai_format::fixtures;
use tinyai_store::{Backend, LayerGuard, MappedModel, StoreConfig};

const THREADS: u64 = 8;
const LAYERS: u64 = 32;
/// Operations over all threads (`TINYAI_STRESS_OPS` overrides; the issue's
/// figure is 10⁶).
const DEFAULT_OPERATIONS: u64 = 1_000_000;

fn operations() -> u64 {
    std::env::var("TINYAI_STRESS_OPS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(DEFAULT_OPERATIONS)
}

struct Layer {
    pointer: *mut u8,
    expected: Vec<u8>,
}

// SAFETY: the pointers are into the model's private mapping, valid until the
// model is dropped (after every thread joined); threads write only their own
// 8-byte marker slot of a layer, so no two threads write the same bytes.
unsafe impl Send for Layer {}
// SAFETY: as above.
unsafe impl Sync for Layer {}

/// The byte offset in every layer where thread `thread` writes its marker.
fn marker_offset(thread: u64) -> usize {
    64 + 64 * thread as usize
}

fn check_unmarked_bytes(layer: &Layer, index: u64) {
    // The first 64 bytes and the last 64 are never marked.
    for offset in (0..64).chain(layer.expected.len() - 64..layer.expected.len()) {
        // SAFETY: `offset` is inside the layer; see `Layer`.
        let byte = unsafe { layer.pointer.add(offset).read_volatile() };
        assert_eq!(byte, layer.expected[offset], "layer {index} byte {offset}");
    }
}

#[test]
fn markers_written_into_pinned_layers_survive_concurrent_eviction() {
    let sizes: Vec<u64> = (0..LAYERS).map(|i| 16 * 1024 + (i % 5) * 4096).collect();
    let fixture = fixture(31, &sizes, 1);
    let total: u64 = sizes.iter().sum();
    let budget = total / 4;
    let config = StoreConfig {
        prefetch_threads: 2,
        ..config(budget, Backend::Mapped)
    };
    let model = MappedModel::open(&fixture.path, config).unwrap();
    let layers: Arc<Vec<Layer>> = Arc::new(
        (0..LAYERS)
            .map(|i| Layer {
                pointer: model.mapped_ptr_mut(i).unwrap(),
                expected: fixtures::expected_layer_bytes(&fixture.spec, i)
                    .unwrap()
                    .unwrap(),
            })
            .collect(),
    );
    let per_thread = operations() / THREADS;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (model, layers) = (&model, Arc::clone(&layers));
            scope.spawn(move || {
                let mut state = (thread + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                // Layers this thread holds, with the marker it wrote into each.
                let mut held: Vec<(LayerGuard<'_>, u64)> = Vec::new();
                let offset = marker_offset(thread);
                for step in 0..per_thread {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let index = state % LAYERS;
                    match (state >> 8) % 10 {
                        0..=4 => {
                            let guard = model.get(index).unwrap();
                            let layer = &layers[index as usize];
                            check_unmarked_bytes(layer, index);
                            let marker = (thread << 56) | step;
                            let already = held.iter().any(|(g, _)| g.index() == index);
                            if held.len() < 3 && !already {
                                // SAFETY: inside the pinned layer; only this thread
                                // writes these 8 bytes (see `Layer`).
                                unsafe {
                                    (layer.pointer.add(offset) as *mut [u8; 8])
                                        .write_volatile(marker.to_le_bytes());
                                }
                                held.push((guard, marker));
                            }
                        }
                        5 => {
                            model.prefetch(index).unwrap();
                        }
                        6 => model.release(index).unwrap(),
                        7 => model
                            .set_priority(index, ((state >> 12) % 100) as f32 / 100.0)
                            .unwrap(),
                        _ => {
                            // Unpin the oldest held layer, after checking its marker.
                            if !held.is_empty() {
                                let (guard, marker) = held.remove(0);
                                let index = guard.index();
                                let layer = &layers[index as usize];
                                // SAFETY: still pinned by `guard`; this thread's slot.
                                let seen = unsafe {
                                    (layer.pointer.add(offset) as *const [u8; 8]).read_volatile()
                                };
                                assert_eq!(
                                    u64::from_le_bytes(seen),
                                    marker,
                                    "thread {thread}: the marker in pinned layer {index} vanished (its pages were dropped while pinned)"
                                );
                                // Restore the file's bytes before unpinning.
                                let original: [u8; 8] =
                                    layer.expected[offset..offset + 8].try_into().unwrap();
                                // SAFETY: as above.
                                unsafe {
                                    (layer.pointer.add(offset) as *mut [u8; 8])
                                        .write_volatile(original);
                                }
                                drop(guard);
                            }
                        }
                    }
                }
                for (guard, marker) in held {
                    let layer = &layers[guard.index() as usize];
                    // SAFETY: still pinned by `guard`; this thread's slot.
                    let seen = unsafe {
                        (layer.pointer.add(offset) as *const [u8; 8]).read_volatile()
                    };
                    assert_eq!(u64::from_le_bytes(seen), marker);
                }
            });
        }
    });
    let stats = model.stats();
    assert!(
        stats.evictions > 1000,
        "too little eviction to test anything: {stats:?}"
    );
    assert!(model.cached_bytes() <= budget);
}
