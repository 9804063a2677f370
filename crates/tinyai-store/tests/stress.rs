//! Eight threads hammer one model with mixed operations; bytes are always right.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use tinyai_format::fixtures;
use tinyai_store::{Backend, MappedModel, StoreConfig};

const THREADS: u64 = 8;
const OPERATIONS: u64 = 100_000;

fn run(backend: Backend, prefetch_threads: usize) {
    let sizes: Vec<u64> = (0..24).map(|i| 4096 + (i * 7919) % 40_000).collect();
    let fixture = fixture(21, &sizes, 2);
    let expected: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..sizes.len() as u64)
            .map(|i| {
                fixtures::expected_layer_bytes(&fixture.spec, i)
                    .unwrap()
                    .unwrap()
            })
            .collect(),
    );
    let total: u64 = sizes.iter().sum();
    let config = StoreConfig {
        prefetch_threads,
        ..config(total / 3, backend)
    };
    let model = Arc::new(MappedModel::open(&fixture.path, config).unwrap());
    let budget = total / 3;
    let workers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let model = Arc::clone(&model);
            let expected = Arc::clone(&expected);
            std::thread::spawn(move || {
                let mut state = thread.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut held = Vec::new();
                for _ in 0..OPERATIONS / THREADS {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let layer = state % 24;
                    match (state >> 8) % 8 {
                        0..=3 => {
                            let guard = model.get(layer).unwrap();
                            assert!(guard[..] == expected[layer as usize][..], "layer {layer}");
                            if (state >> 20) % 4 == 0 && held.len() < 2 {
                                held.push(guard);
                            }
                        }
                        4 => {
                            model.prefetch(layer).unwrap();
                        }
                        5 => model.release(layer).unwrap(),
                        6 => model
                            .set_priority(layer, ((state >> 12) % 100) as f32 / 100.0)
                            .unwrap(),
                        _ => {
                            held.clear();
                            if (state >> 30) % 64 == 0 {
                                model.reset_priorities();
                            }
                        }
                    }
                    for guard in &held {
                        assert!(guard[..] == expected[guard.index() as usize][..]);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let stats = model.stats();
    assert!(stats.hits + stats.misses >= OPERATIONS / 3, "{stats:?}");
    assert!(model.cached_bytes() <= budget);
    // No guard is left: only layers read ahead into the streaming window remain outside the cache.
    assert!(model.memory_usage() <= budget, "{stats:?}");
    // Releasing every layer frees everything (prefetches still in flight land first).
    let mut released = false;
    for _ in 0..1000 {
        for layer in 0..24 {
            model.release(layer).unwrap();
        }
        if model.memory_usage() == 0 {
            released = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(released, "{:?}", model.stats());
}

#[test]
fn eight_threads_mixed_operations_mapped() {
    run(Backend::Mapped, 2);
}

#[test]
fn eight_threads_mixed_operations_owned() {
    run(Backend::Owned { direct_io: false }, 1);
}

#[test]
fn eight_threads_mixed_operations_synchronous_prefetch() {
    run(Backend::Mapped, 0);
}
