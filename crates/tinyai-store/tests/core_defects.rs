//! One test per defect the store-core issue found by reading the old store
//! (numbers 2–7 in its list; 1 is `pinned_marker_stress.rs`). Each failed on
//! the store before the per-slot state machine.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Condvar, Mutex};

use common::*;
use tinyai_store::{Backend, CacheState, MappedModel, PolicyKind, StoreConfig, StoreError};

const LAYER: u64 = 64 * 1024;

fn layers(count: usize) -> Vec<u64> {
    vec![LAYER; count]
}

/// Defect 2: a demand access of a layer held outside the cache must reach the
/// engine (whose history drives every decision). With LRU, the engine admits
/// any layer it is asked for once there is an unpinned victim, so a second
/// demand access of a bypassed, still-held layer moves it into the cache.
#[test]
fn demand_hits_of_layers_outside_the_cache_reach_the_engine() {
    let fixture = fixture(21, &layers(4), 1);
    let config = StoreConfig {
        policy: Some(PolicyKind::Lru),
        prefetch_enabled: false,
        // Two layers of cache, and one layer's room for layers served outside it.
        ..config(3 * LAYER, Backend::Mapped)
    };
    let model = MappedModel::open(&fixture.path, config).unwrap();
    let first = model.get(0).unwrap();
    let second = model.get(1).unwrap();
    // Both cached layers are pinned: layer 2 is served outside the cache.
    let held = model.get(2).unwrap();
    assert_eq!(model.descriptor(2).unwrap().state, CacheState::Transient);
    drop(second);
    // Layer 1 is now evictable; the engine hears of this access and admits 2.
    let again = model.get(2).unwrap();
    assert_eq!(
        model.descriptor(2).unwrap().state,
        CacheState::Cached,
        "the engine never heard of the demand access of a transient layer"
    );
    assert_eq!(model.descriptor(1).unwrap().state, CacheState::NotLoaded);
    assert!(model.cached_bytes() <= 2 * LAYER);
    assert_eq!(held[..], again[..]);
    drop((first, held, again));
    assert_layer_matches(&model, &fixture, 2);
}

/// Defect 3: two threads making sequential passes at the same time are two
/// sequential streams, not one random one: automatic prefetch keeps working for
/// both and nothing is cancelled as "pattern changed".
#[test]
fn concurrent_sequential_passes_are_each_detected() {
    let count = 32u64;
    let fixture = fixture(22, &layers(count as usize), 1);
    let model = MappedModel::open(&fixture.path, config(64 * LAYER, Backend::Mapped)).unwrap();
    // Strict alternation: thread A gets layer i, then thread B gets layer 16 + i, …
    let turn = Arc::new((Mutex::new(0u64), Condvar::new()));
    std::thread::scope(|scope| {
        for thread in 0..2u64 {
            let (model, turn) = (&model, Arc::clone(&turn));
            scope.spawn(move || {
                for step in 0..count {
                    let (lock, changed) = &*turn;
                    let mut current = lock.lock().unwrap();
                    while *current % 2 != thread {
                        current = changed.wait(current).unwrap();
                    }
                    let index = (thread * count / 2 + step) % count;
                    let guard = model.get(index).unwrap();
                    assert_eq!(guard.len() as u64, LAYER);
                    drop(guard);
                    *current += 1;
                    changed.notify_all();
                }
            });
        }
    });
    // Each thread's first accesses miss; after that its lookahead reads ahead.
    // (One detector for both threads saw a random pattern: 32 misses, no prefetch.)
    let stats = model.stats();
    assert!(
        stats.misses <= 8 && stats.prefetch_issued >= count - 8,
        "interleaved sequential passes were not detected: {stats:?}"
    );
    assert_eq!(stats.prefetch_cancelled, 0, "{stats:?}");
}

/// Defect 4: with a declared order that is not 0..N and passes that skip some
/// layers, read-aheads of skipped layers must not fill the streaming window
/// forever: streaming goes on pass after pass.
#[test]
fn skipped_layers_of_a_declared_order_do_not_stop_streaming() {
    let count = 48u64;
    let fixture = fixture(23, &layers(count as usize), 1);
    // A budget of a quarter of the model: most of each pass streams.
    let model = MappedModel::open(&fixture.path, config(12 * LAYER, Backend::Mapped)).unwrap();
    let order: Vec<u64> = (0..count).map(|i| (i * 7 + 3) % count).collect();
    model.set_access_order(Some(order.clone())).unwrap();
    let mut used_per_pass = Vec::new();
    for _pass in 0..12 {
        let before = model.stats().prefetch_used;
        for (position, &layer) in order.iter().enumerate() {
            if position % 5 == 2 {
                continue; // the engine skips this layer in every pass
            }
            let guard = model.get(layer).unwrap();
            assert_eq!(guard.len() as u64, LAYER);
            drop(guard);
            // Give the prefetch thread time to read ahead, as compute would.
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
        used_per_pass.push(model.stats().prefetch_used - before);
    }
    let last = used_per_pass[used_per_pass.len() - 3..].to_vec();
    assert!(
        last.iter().all(|&used| used >= 10),
        "streaming stopped: read-aheads used per pass {used_per_pass:?}"
    );
}

/// Defect 5: evicted pages that the reclaim thread has not dropped yet are
/// charged, so resident memory stays within the budget even while it lags.
/// Measured with `mincore` right after each get (no waiting).
#[test]
fn resident_pages_stay_within_the_budget_while_reclaim_lags() {
    let name = "resident_pages_stay_within_the_budget_while_reclaim_lags";
    let count = 64usize;
    let fixture = fixture(24, &vec![4 * LAYER; count], 1);
    let budget = 16 * LAYER; // 4 layers of 256 KiB: the model is 16x the budget
    tinyai_store::evict_file_from_page_cache(&fixture.path).unwrap();
    let model = MappedModel::open(&fixture.path, config(budget, Backend::Mapped)).unwrap();
    if model.resident_bytes() > LAYER {
        tinyai_format::fixtures::skip(name, "the file system keeps the file cached after eviction");
        return;
    }
    let mut peak = 0;
    for _pass in 0..4 {
        for index in (0..count as u64).rev().step_by(3).chain(0..count as u64) {
            let guard = model.get(index).unwrap();
            // The guarded layer may be held outside the cache: budget + one layer.
            peak = peak.max(model.resident_bytes());
            drop(guard);
        }
    }
    // mincore counts the file's pages in the page cache, and a page fault reads
    // around the faulting address: allow one layer's worth of the kernel's
    // read-around beyond the charged layers (measured: up to ~120 KiB here; the
    // old store peaked at 1.87 MB, 600 KiB above this bound's first two terms).
    let slack = 4 * LAYER;
    assert!(
        peak <= budget + 4 * LAYER + slack,
        "resident {peak} bytes, budget {budget} (+ one guarded layer of {} + read-around {slack})",
        4 * LAYER
    );
}

/// Defect 7: a model that fits the budget is not cut down by a streaming
/// window: after one pass everything is cached and nothing is read again.
#[test]
fn a_model_that_fits_is_cached_after_one_pass() {
    let count = 28u64;
    let fixture = fixture(25, &layers(count as usize), 1);
    // The model is 28 layers; the budget 30 (a window of budget/8 would leave 26).
    let model = MappedModel::open(&fixture.path, config(30 * LAYER, Backend::Mapped)).unwrap();
    for _pass in 0..4 {
        for index in 0..count {
            drop(model.get(index).unwrap());
        }
    }
    let stats = model.stats();
    assert_eq!(stats.evictions, 0, "{stats:?}");
    assert_eq!(
        stats.bytes_read,
        count * LAYER,
        "layers were read again: {stats:?}"
    );
    for index in 0..count {
        assert_eq!(model.descriptor(index).unwrap().state, CacheState::Cached);
    }
}

/// A failed load (here a checksum mismatch) leaves no pin and no charge behind.
/// (Defect 6's pin leak was on an engine error the public API cannot provoke;
/// the per-slot state machine cannot leak that way: a pin is taken only by the
/// compare-and-swap or the publish that also makes the layer resident.)
#[test]
fn a_failed_load_leaves_no_pin_and_nothing_charged() {
    let fixture = fixture(26, &layers(4), 1);
    let config = StoreConfig {
        verify_checksums: true,
        prefetch_enabled: false,
        ..config(2 * LAYER, Backend::Owned { direct_io: false })
    };
    let model = MappedModel::open(&fixture.path, config).unwrap();
    // Corrupt layer 1 on disk (same length: the file identity check passes).
    let offset = model.descriptor(1).unwrap().offset;
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&fixture.path)
            .unwrap();
        file.write_all_at(&[0xFF; 16], offset).unwrap();
    }
    assert!(model.get(1).is_err());
    assert_eq!(model.descriptor(1).unwrap().state, CacheState::NotLoaded);
    assert_eq!(model.memory_usage(), 0);
    // Fill the budget and go past it: nothing is stuck pinned.
    for index in [0, 2, 3, 0, 2, 3] {
        drop(model.get(index).unwrap());
        assert!(model.cached_bytes() <= 2 * LAYER);
    }
}

/// Read-aheads asked for explicitly by a thread that never gets a layer (a
/// loader thread) age by everyone's demand accesses: once stale they leave the
/// streaming window, so they cannot keep it full forever. (Found in review:
/// they were aged by the asking thread's own accesses, which never came.)
#[test]
fn explicit_read_aheads_of_a_thread_that_never_gets_go_stale() {
    let fixture = fixture(27, &layers(16), 1);
    let config = StoreConfig {
        policy: Some(PolicyKind::Lru),
        ..config(8 * LAYER, Backend::Mapped)
    };
    let model = MappedModel::open(&fixture.path, config).unwrap();
    // Fill the cache and pin it all, so that the engine declines prefetches
    // and they go to the window (one layer's worth: budget / 8 = 64 KiB). Not
    // in sequence, so that lookahead reads nothing ahead meanwhile.
    let held: Vec<_> = [0, 2, 4, 6, 1, 3, 5]
        .into_iter()
        .map(|index| model.get(index).unwrap())
        .collect();
    assert_eq!(model.stats().prefetch_issued, 0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            assert!(model.prefetch(10).unwrap(), "read ahead into the window");
        });
    });
    assert!(wait_for(
        || model.descriptor(10).unwrap().state == CacheState::Transient
    ));
    assert!(!model.prefetch(11).unwrap(), "the window is full");
    // Demand accesses by this thread (hits of the held layers).
    for _ in 0..40 {
        for guard in &held {
            drop(model.get(guard.index()).unwrap());
        }
    }
    assert!(
        model.prefetch(11).unwrap(),
        "the stale read-ahead of layer 10 still fills the window"
    );
    assert!(wait_for(
        || model.descriptor(10).unwrap().state == CacheState::NotLoaded
    ));
    drop(held);
}

/// A get refused at the pin limit changes nothing: in particular it does not
/// leave a layer it was about to evict stuck half-evicted. (Found in review:
/// the refusal came after the engine's decision, whose evictions were lost.)
#[test]
fn a_get_refused_at_the_pin_limit_leaves_no_eviction_behind() {
    let fixture = fixture(28, &layers(4), 1);
    let config = StoreConfig {
        policy: Some(PolicyKind::Lru),
        prefetch_enabled: false,
        ..config(2 * LAYER, Backend::Mapped)
    };
    let model = MappedModel::open(&fixture.path, config).unwrap();
    drop(model.get(0).unwrap());
    // Pin layer 0 up to the limit (on this thread's stripe).
    let mut pins = Vec::new();
    let refused = loop {
        match model.pin_detached(0) {
            Ok(pin) => pins.push(pin),
            Err(error) => break error,
        }
    };
    assert!(matches!(refused, StoreError::TooManyPins { index: 0 }));
    drop(model.get(1).unwrap());
    // Layer 0 leaves the cache while pinned (Transient); layer 2 fills it.
    model.release(0).unwrap();
    drop(model.get(2).unwrap());
    // A get of 0 would now be admitted again, evicting 1; but it is refused.
    assert!(matches!(
        model.get(0),
        Err(StoreError::TooManyPins { index: 0 })
    ));
    assert_eq!(model.stats().reclaim_pending_bytes, 0);
    // Every other layer is still usable, from another thread too.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for index in [1, 2, 3, 1] {
                assert_layer_matches(&model, &fixture, index);
            }
        });
    });
    for pin in pins {
        model.unpin_detached(pin).unwrap();
    }
    assert_layer_matches(&model, &fixture, 0);
}
