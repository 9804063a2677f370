//! Bytes served are the file's bytes, in every backend, under every budget.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tinyai_format::fixtures;
use tinyai_store::{Backend, CacheState, MappedModel, StoreConfig, StoreError};

#[test]
fn every_byte_served_equals_the_file_in_every_backend() {
    let sizes: Vec<u64> = (0..12).map(|i| (i * 37_000 + 1000) % 300_000).collect();
    let fixture = fixture(7, &sizes, 3);
    for backend in BACKENDS {
        for budget in [64 * 1024, 512 * 1024, 64 * MIB] {
            let model = MappedModel::open(&fixture.path, config(budget, backend)).unwrap();
            for pass in 0..2 {
                for index in 0..model.layer_count() {
                    assert_layer_matches(&model, &fixture, index);
                }
                let _ = pass;
            }
            assert!(
                model.cached_bytes() <= budget,
                "{backend:?} budget {budget}"
            );
        }
    }
}

#[test]
fn multi_tensor_fixture_serves_typed_tensors() {
    let fixture = write(fixtures::multi_tensor());
    let bytes = file_bytes(&fixture.path);
    let parsed = tinyai_format::Model::parse(&bytes).unwrap();
    for backend in BACKENDS {
        let model = MappedModel::open(&fixture.path, config(64 * MIB, backend)).unwrap();
        for index in 0..model.layer_count() {
            let guard = model.get(index).unwrap();
            assert_eq!(&guard[..], parsed.layer_bytes(index).unwrap());
            for tensor in parsed.layer_tensors(index).unwrap() {
                let view = guard.tensor(tensor.name).unwrap();
                assert_eq!(view.info.shape(), tensor.shape());
                let range = tensor.range_in_layer();
                assert_eq!(view.bytes, &guard[range.start as usize..range.end as usize]);
                if tensor.dtype == tinyai_format::DType::F32 {
                    let floats = guard.tensor_as::<f32>(tensor.name).unwrap();
                    assert_eq!(floats.len() as u128, tensor.element_count());
                    assert!(matches!(
                        guard.tensor_as::<i32>(tensor.name),
                        Err(tinyai_store::StoreError::DTypeMismatch { .. })
                    ));
                }
            }
            assert!(matches!(
                guard.tensor("no such tensor"),
                Err(tinyai_store::StoreError::NoSuchTensor { .. })
            ));
        }
    }
}

#[test]
fn legacy_v1_file_serves_layer_i_filled_with_byte_i() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("legacy.tmai");
    fixtures::write_legacy_file(&fixtures::legacy_c_test_model(), &path).unwrap();
    for backend in BACKENDS {
        let model = MappedModel::open(&path, config(3 * MIB, backend)).unwrap();
        assert_eq!(model.layer_count(), 10);
        assert!(model.format().is_legacy());
        for index in 0..10 {
            let descriptor = model.descriptor(index).unwrap();
            assert_eq!(descriptor.precision_bits, 4);
            assert_eq!(descriptor.size, MIB);
            let guard = model.get(index).unwrap();
            assert!(
                guard.iter().all(|&b| u64::from(b) == index),
                "layer {index}"
            );
        }
        assert!(model.cached_bytes() <= 3 * MIB);
    }
}

#[test]
fn layer_larger_than_the_budget_is_served_then_dropped() {
    let fixture = fixture(3, &[256 * 1024, 3 * MIB, 256 * 1024], 1);
    for backend in BACKENDS {
        let model = MappedModel::open(&fixture.path, config(MIB, backend)).unwrap();
        let small = model.get(0).unwrap();
        drop(small);
        {
            let big = model.get(1).unwrap();
            assert_eq!(big.len() as u64, 3 * MIB);
            assert_eq!(model.descriptor(1).unwrap().state, CacheState::Transient);
            // A layer larger than the budget is served alone: everything else
            // made room, and the total is that one layer's charge.
            assert_eq!(model.descriptor(0).unwrap().state, CacheState::NotLoaded);
            assert_eq!(model.cached_bytes(), 0);
            assert_eq!(model.memory_usage(), 3 * MIB);
        }
        assert_eq!(model.descriptor(1).unwrap().state, CacheState::NotLoaded);
        assert_eq!(model.memory_usage(), model.cached_bytes());
        assert_layer_matches(&model, &fixture, 1);
        assert!(model.stats().bypasses >= 2);
    }
}

#[test]
fn release_drops_a_layer_and_a_held_guard_keeps_its_bytes() {
    let fixture = fixture(4, &[100_000, 200_000, 300_000], 2);
    for backend in BACKENDS {
        let model = MappedModel::open(&fixture.path, config(64 * MIB, backend)).unwrap();
        let guard = model.get(1).unwrap();
        let charge = model.descriptor(1).unwrap().charge;
        model.release(1).unwrap();
        // Held: it leaves the cache at once, but stays in memory (charged as held
        // outside the cache) until the guard goes.
        assert_eq!(model.descriptor(1).unwrap().state, CacheState::Transient);
        assert_eq!(model.cached_bytes(), 0);
        assert_eq!(model.memory_usage(), charge);
        let expected = fixtures::expected_layer_bytes(&fixture.spec, 1)
            .unwrap()
            .unwrap();
        assert!(guard[..] == expected[..]);
        drop(guard);
        assert_eq!(model.descriptor(1).unwrap().state, CacheState::NotLoaded);
        assert_eq!(model.cached_bytes(), 0);
        model.release(2).unwrap(); // not loaded: nothing happens
        assert_layer_matches(&model, &fixture, 1);
    }
}

#[test]
fn descriptors_track_accesses_and_priorities() {
    let fixture = fixture(5, &[10_000, 20_000], 1);
    let model = MappedModel::open(&fixture.path, StoreConfig::default()).unwrap();
    let before = model.descriptor(0).unwrap();
    assert_eq!(before.access_count, 0);
    assert_eq!(before.state, CacheState::NotLoaded);
    drop(model.get(0).unwrap());
    drop(model.get(0).unwrap());
    let after = model.descriptor(0).unwrap();
    assert_eq!(after.access_count, 2);
    assert!(after.last_accessed_ms > 0);
    assert_eq!(after.state, CacheState::Cached);
    // Priorities are TinyAI's: any finite value, stored as given, 1.0 by default.
    assert_eq!(before.priority, 1.0);
    for priority in [0.9, 100.0, -3.5, 1e30] {
        model.set_priority(1, priority).unwrap();
        assert_eq!(model.descriptor(1).unwrap().priority, priority);
    }
    for refused in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert!(matches!(
            model.set_priority(1, refused),
            Err(StoreError::InvalidPriority { index: 1, .. })
        ));
        assert_eq!(model.descriptor(1).unwrap().priority, 1e30, "unchanged");
    }
    model.reset_priorities();
    assert_eq!(model.descriptor(1).unwrap().priority, 1.0);
    let stats = model.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

#[test]
fn backend_choice_changes_where_bytes_live() {
    let fixture = fixture(6, &[64 * 1024], 1);
    let file = file_bytes(&fixture.path);
    let mapped = MappedModel::open(&fixture.path, config(MIB, Backend::Mapped)).unwrap();
    let owned = MappedModel::open(
        &fixture.path,
        config(MIB, Backend::Owned { direct_io: false }),
    )
    .unwrap();
    let a = mapped.get(0).unwrap();
    let b = owned.get(0).unwrap();
    assert_eq!(&a[..], &b[..]);
    let offset = mapped.descriptor(0).unwrap().offset as usize;
    assert_eq!(&a[..], &file[offset..offset + a.len()]);
    assert_ne!(a.as_ptr(), b.as_ptr());
    // Owned buffers are page-aligned; mapped layers are aligned as the file says.
    assert_eq!(b.as_ptr() as usize % 4096, 0);
    assert_eq!(a.as_ptr() as usize % 4096, 0);
    assert_eq!(owned.resident_bytes(), 0);
}

#[test]
fn high_priority_layer_stays_cached_through_passes() {
    // 16 equal layers, room for 4: on repeated passes the adaptive policy
    // keeps the first layers of a pass and streams the rest, so the last
    // layer is never kept at the default priority (1.0) — but is at 3.0.
    let fixture = fixture(41, &[64 * 1024; 16], 1);
    for prefetch in [false, true] {
        for protect in [false, true] {
            let config = StoreConfig {
                prefetch_enabled: prefetch,
                ..config(4 * 64 * 1024, Backend::Mapped)
            };
            let model = MappedModel::open(&fixture.path, config).unwrap();
            if protect {
                model.set_priority(15, 3.0).unwrap();
            }
            for _pass in 0..4 {
                for index in 0..16 {
                    drop(model.get(index).unwrap());
                }
            }
            // Touch the first layers again: a kept layer 15 must survive them.
            for index in 0..4 {
                drop(model.get(index).unwrap());
            }
            let state = model.descriptor(15).unwrap().state;
            if protect {
                assert_eq!(state, CacheState::Cached, "prefetch {prefetch}");
            } else if !prefetch {
                assert_ne!(state, CacheState::Cached);
            }
            assert!(model.memory_usage() <= 4 * 64 * 1024);
        }
    }
}
