//! Every configuration field has an observable effect.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use tinyai_store::{Backend, CacheState, MappedModel, PolicyKind, StoreConfig, StoreError};

#[test]
fn prefetch_enabled_turns_on_sequential_lookahead() {
    let fixture = fixture(31, &[64 * 1024; 16], 1);
    for enabled in [true, false] {
        let config = StoreConfig {
            prefetch_enabled: enabled,
            ..config(4 * MIB, Backend::Mapped)
        };
        let model = MappedModel::open(&fixture.path, config).unwrap();
        for index in 0..8 {
            drop(model.get(index).unwrap());
        }
        if enabled {
            // After a sequential run the next layers are loaded without being asked.
            assert!(wait_for(
                || model.descriptor(9).unwrap().state == CacheState::Cached
            ));
            assert!(model.stats().prefetch_issued >= 2);
            drop(model.get(9).unwrap());
            assert!(model.stats().prefetch_used >= 1);
        } else {
            assert_eq!(model.stats().prefetch_issued, 0);
            assert_eq!(model.descriptor(9).unwrap().state, CacheState::NotLoaded);
        }
    }
}

#[test]
fn lookahead_sets_how_far_ahead_prefetch_goes() {
    let fixture = fixture(32, &[64 * 1024; 32], 1);
    let config = StoreConfig {
        lookahead: 6,
        ..config(8 * MIB, Backend::Mapped)
    };
    let model = MappedModel::open(&fixture.path, config).unwrap();
    // Read-ahead ramps up with the run (2, 4, then `lookahead` layers), so
    // after six sequential gets it reaches six layers past the last one.
    for index in 0..6 {
        drop(model.get(index).unwrap());
    }
    assert!(wait_for(
        || model.descriptor(11).unwrap().state == CacheState::Cached
    ));
    assert_eq!(model.descriptor(12).unwrap().state, CacheState::NotLoaded);
}

#[test]
fn prefetch_threads_zero_prefetches_synchronously() {
    let fixture = fixture(33, &[64 * 1024; 4], 1);
    let config = StoreConfig {
        prefetch_threads: 0,
        ..config(4 * MIB, Backend::Owned { direct_io: false })
    };
    let model = MappedModel::open(&fixture.path, config).unwrap();
    assert!(model.prefetch(2).unwrap());
    // No pool: the layer is already loaded when prefetch returns.
    assert_eq!(model.descriptor(2).unwrap().state, CacheState::Cached);
    let with_threads = MappedModel::open(&fixture.path, config_with_threads(3)).unwrap();
    assert!(with_threads.prefetch(2).unwrap());
    assert!(wait_for(
        || with_threads.descriptor(2).unwrap().state == CacheState::Cached
    ));
    assert_layer_matches(&with_threads, &fixture, 2);
    assert_eq!(with_threads.stats().prefetch_used, 1);
}

fn config_with_threads(threads: usize) -> StoreConfig {
    StoreConfig {
        prefetch_threads: threads,
        ..config(4 * MIB, Backend::Mapped)
    }
}

#[test]
fn prefetch_is_declined_when_it_would_need_pinned_room() {
    let fixture = fixture(34, &[512 * 1024; 5], 1);
    let model = MappedModel::open(&fixture.path, config(MIB, Backend::Mapped)).unwrap();
    // With automatic prefetch on, half of this budget is the streaming window.
    let a = model.get(0).unwrap();
    assert_eq!(model.descriptor(0).unwrap().state, CacheState::Cached);
    // The cache's half is full of a pinned layer: the window takes a read-ahead.
    assert!(model.prefetch(2).unwrap());
    assert!(wait_for(
        || model.descriptor(2).unwrap().state == CacheState::Transient
    ));
    assert!(model.memory_usage() <= MIB);
    // A second pinned layer (served outside the cache) needs the window's room:
    // the unused read-ahead gives way, and the total stays within the budget.
    let b = model.get(1).unwrap();
    assert_eq!(model.descriptor(1).unwrap().state, CacheState::Transient);
    assert_eq!(model.descriptor(2).unwrap().state, CacheState::NotLoaded);
    assert!(model.memory_usage() <= MIB, "{}", model.memory_usage());
    // Now the budget is full of pinned layers: nothing more is read ahead.
    assert!(!model.prefetch(3).unwrap());
    assert!(model.memory_usage() <= MIB);
    assert_layer_matches(&model, &fixture, 2);
    drop((a, b));
    assert!(model.memory_usage() <= MIB);
}

#[test]
fn adaptive_caching_selects_the_policy() {
    let fixture = fixture(35, &[4096; 4], 1);
    for (adaptive, expected) in [
        (true, PolicyKind::Adaptive),
        (false, PolicyKind::TinyAiClassic),
    ] {
        let config = StoreConfig {
            adaptive_caching: adaptive,
            ..StoreConfig::default()
        };
        assert_eq!(config.effective_policy(), expected);
        MappedModel::open(&fixture.path, config).unwrap();
    }
    // Behaviour differs: a cyclic scan over twice the budget.
    let fixture = common::fixture(36, &[128 * 1024; 16], 1);
    let hits: Vec<u64> = [true, false]
        .into_iter()
        .map(|adaptive| {
            let config = StoreConfig {
                adaptive_caching: adaptive,
                prefetch_enabled: false,
                ..config(MIB, Backend::Mapped)
            };
            let model = MappedModel::open(&fixture.path, config).unwrap();
            for _ in 0..5 {
                for index in 0..16 {
                    drop(model.get(index).unwrap());
                }
            }
            model.stats().hits
        })
        .collect();
    assert!(
        hits[0] > hits[1],
        "adaptive {} vs classic {}",
        hits[0],
        hits[1]
    );
}

#[test]
fn min_layer_cache_size_changes_the_charge() {
    let fixture = fixture(37, &[100, 100, 100, 100], 1);
    for (minimum, expected) in [(4096, 4096), (64 * 1024, 64 * 1024), (0, 4096)] {
        let config = StoreConfig {
            min_layer_cache_size: minimum,
            // No streaming window: the whole budget is cache.
            prefetch_enabled: false,
            ..config(128 * 1024, Backend::Mapped)
        };
        let model = MappedModel::open(&fixture.path, config).unwrap();
        assert_eq!(model.descriptor(0).unwrap().charge, expected);
        for index in 0..4 {
            drop(model.get(index).unwrap());
        }
        // With 64 KiB charges only two 100-byte layers fit in 128 KiB, and as
        // the model does not fit, one layer's room is kept for a layer served
        // outside the cache: one stays cached.
        let cached = (0..4)
            .filter(|&i| model.descriptor(i).unwrap().state == CacheState::Cached)
            .count() as u64;
        let reserve = if 4 * expected > 128 * 1024 {
            expected
        } else {
            0
        };
        assert_eq!(cached, ((128 * 1024 - reserve) / expected).min(4));
        assert_eq!(model.memory_usage(), cached * expected);
    }
}

fn locked_kib() -> Option<u64> {
    proc_number("/proc/self/status", "VmLck:")
}

fn mlock_works() -> bool {
    let probe = vec![1u8; 4096];
    // SAFETY: locks and unlocks the pages of a live buffer; no memory is changed.
    unsafe {
        let locked = libc::mlock(probe.as_ptr().cast(), probe.len()) == 0;
        if locked {
            libc::munlock(probe.as_ptr().cast(), probe.len());
        }
        locked
    }
}

#[test]
fn lock_in_memory_locks_cached_layers_and_serves_even_when_refused() {
    let fixture = fixture(38, &[64 * 1024; 4], 1);
    for backend in BACKENDS {
        let config = StoreConfig {
            lock_in_memory: true,
            prefetch_enabled: false,
            ..config(MIB, backend)
        };
        let model = MappedModel::open(&fixture.path, config).unwrap();
        let before = locked_kib();
        for index in 0..4 {
            assert_layer_matches(&model, &fixture, index);
        }
        if mlock_works()
            && let (Some(before), Some(after)) = (before, locked_kib())
        {
            // This is the only test that locks memory, so the growth is ours.
            assert!(
                after >= before + 4 * 64,
                "{backend:?}: VmLck {before} -> {after} kB"
            );
            for index in 0..4 {
                model.release(index).unwrap();
            }
            // Pages are unlocked and dropped on the prefetch pool, off the caller's thread.
            assert!(
                wait_for(|| locked_kib().unwrap_or(0) < after),
                "{backend:?}: release must unlock ({after} kB stay locked)"
            );
        } else {
            eprintln!("mlock refused here: checked only that layers are still served");
        }
    }
}

#[test]
fn streaming_window_zero_turns_off_read_ahead_outside_the_cache() {
    let fixture = fixture(41, &[512 * 1024; 4], 1);
    for (window, expect_prefetch) in [(None, true), (Some(0), false)] {
        let config = StoreConfig {
            streaming_window: window,
            ..config(MIB, Backend::Mapped)
        };
        let model = MappedModel::open(&fixture.path, config).unwrap();
        // Fill the cache's share with held layers (half the budget with a
        // window, all of it without): a prefetch can only go to the window.
        let held: Vec<_> = match window {
            None => vec![model.get(0).unwrap()],
            Some(_) => vec![model.get(0).unwrap(), model.get(1).unwrap()],
        };
        assert_eq!(model.prefetch(2).unwrap(), expect_prefetch, "{window:?}");
        if expect_prefetch {
            assert!(wait_for(
                || model.descriptor(2).unwrap().state == CacheState::Transient
            ));
        }
        assert!(model.memory_usage() <= MIB);
        drop(held);
    }
}

#[test]
fn progress_callback_sees_bulk_loads_and_can_cancel() {
    let fixture = fixture(39, &[10_000; 10], 1);
    let seen = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&seen);
    let config = StoreConfig {
        progress: Some(Arc::new(move |progress: tinyai_store::Progress| {
            counter.store(progress.completed, Ordering::Relaxed);
            progress.completed < 4
        })),
        ..StoreConfig::default()
    };
    let model = MappedModel::open(&fixture.path, config).unwrap();
    assert!(matches!(
        model.load_all(),
        Err(StoreError::Cancelled {
            completed: 4,
            total: 10
        })
    ));
    assert_eq!(seen.load(Ordering::Relaxed), 4);
    let model = MappedModel::open(&fixture.path, StoreConfig::default()).unwrap();
    assert_eq!(model.load_all().unwrap(), 100_000);
}

#[test]
fn forward_pass_yields_layers_in_order_and_prefetches_ahead() {
    let fixture = fixture(40, &[128 * 1024; 16], 1);
    let model = MappedModel::open(&fixture.path, config(MIB, Backend::Mapped)).unwrap();
    for _pass in 0..3 {
        let mut seen = Vec::new();
        for guard in model.forward_pass(0..16).unwrap() {
            let guard = guard.unwrap();
            seen.push(guard.index());
            assert!(model.cached_bytes() <= MIB);
        }
        assert_eq!(seen, (0..16).collect::<Vec<_>>());
    }
    let stats = model.stats();
    assert!(stats.prefetch_issued > 0, "{stats:?}");
    assert!(stats.prefetch_used > 0, "{stats:?}");
    // Reverse order works too.
    let seen: Vec<u64> = model
        .forward_pass((0..16).rev())
        .unwrap()
        .map(|g| g.unwrap().index())
        .collect();
    assert_eq!(seen, (0..16).rev().collect::<Vec<_>>());
}
