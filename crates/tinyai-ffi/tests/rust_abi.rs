//! The C entry points called from Rust: contracts that are awkward to observe
//! from C (per-thread descriptor snapshots, the owned backend's pins).
#![allow(clippy::unwrap_used)]

use std::ffi::{CString, c_void};
use std::ptr;

use tinyai::*;
use tinyai_format::fixtures::{self, FixtureSpec};

fn fixture(dir: &std::path::Path, layers: usize, size: u64) -> (CString, Vec<u8>) {
    let path = dir.join("model.tmai");
    let spec = FixtureSpec::uniform(17, 4096, &vec![size; layers], 1);
    fixtures::write_fixture_file(&spec, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (CString::new(path.to_str().unwrap()).unwrap(), bytes)
}

#[test]
fn descriptor_snapshots_belong_to_their_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = fixture(dir.path(), 3, 10_000);
    // SAFETY: valid NUL-terminated path; NULL config.
    let model = unsafe { tinyaiOpenMappedModel(path.as_ptr(), ptr::null()) };
    assert!(!model.is_null());
    let address = model as usize;
    // SAFETY: `model` is open until the close below, after the thread joined.
    let here = unsafe { tinyaiGetLayerDescriptor(model, 1) } as usize;
    // SAFETY: as above.
    assert_eq!(unsafe { tinyaiGetLayerDescriptor(model, 1) } as usize, here);
    let there = std::thread::spawn(move || {
        let model = address as *const TinyAIMappedModel;
        // SAFETY: the model outlives this thread (joined before close).
        (unsafe { tinyaiGetLayerDescriptor(model, 1) }) as usize
    })
    .join()
    .unwrap();
    assert_ne!(here, 0);
    assert_ne!(there, 0);
    assert_ne!(here, there, "each thread gets its own snapshot");
    // SAFETY: open, and no other thread uses it any more.
    unsafe { tinyaiCloseMappedModel(model) };
}

#[test]
fn owned_backend_pins_returned_layers_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let (path, file) = fixture(dir.path(), 8, 10_000);
    let mut config = tinyaiCreateDefaultMmapConfig();
    config.maxCacheSize = 16 * 1024; // about one layer
    let options = TinyAIMmapOptions {
        backend: TINYAI_BACKEND_OWNED,
        verifyChecksums: true,
        lockInMemory: false,
        progress: None,
        userData: ptr::null_mut(),
    };
    // SAFETY: valid path, config and options.
    let model = unsafe { tinyaiOpenMappedModelEx(path.as_ptr(), &config, &options) };
    assert!(!model.is_null());
    let mut held: Vec<(*mut c_void, TinyAILayerDescriptor)> = Vec::new();
    for index in 0..8 {
        // SAFETY: open model, index in range.
        let weights = unsafe { tinyaiGetLayerWeights(model, index) };
        assert!(!weights.is_null());
        let mut descriptor = TinyAILayerDescriptor {
            offset: 0,
            size: 0,
            layerIndex: -1,
            precision: 0,
            cachedWeights: ptr::null_mut(),
            isActive: false,
            priority: 0.0,
            lastAccessed: 0,
            accessCount: 0,
        };
        // SAFETY: open model; `descriptor` is writable.
        assert!(unsafe { tinyaiCopyLayerDescriptor(model, index, &mut descriptor) });
        assert_eq!(descriptor.cachedWeights, weights);
        held.push((weights, descriptor));
    }
    // Every held layer is still intact although the budget is ~1 layer.
    for (weights, descriptor) in &held {
        // SAFETY: owned-backend pointers stay valid until released.
        let bytes = unsafe { std::slice::from_raw_parts(weights.cast::<u8>(), descriptor.size) };
        assert_eq!(
            bytes,
            &file[descriptor.offset..descriptor.offset + descriptor.size]
        );
    }
    // SAFETY: open model.
    let pinned = unsafe { tinyaiGetMappedModelMemoryUsage(model) };
    assert!(pinned >= 8 * 10_000, "held layers are charged: {pinned}");
    for index in 0..8 {
        // SAFETY: open model.
        unsafe { tinyaiReleaseLayerWeights(model, index) };
    }
    // SAFETY: open model.
    let after = unsafe { tinyaiGetMappedModelMemoryUsage(model) };
    assert!(after <= config.maxCacheSize, "released: {after}");
    // SAFETY: open, unused elsewhere.
    unsafe { tinyaiCloseMappedModel(model) };
}

/// Three threads each hold the layer they got last and write into it, while
/// three others churn (gets, prefetches, releases) under a budget of eight of
/// the model's 32 layers: each holder's writes survive until its next get,
/// and memory usage never exceeds `maxCacheSize`.
#[test]
fn each_threads_last_layer_keeps_its_writes_while_others_churn() {
    const LAYER: u64 = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = fixture(dir.path(), 32, LAYER);
    let mut config = tinyaiCreateDefaultMmapConfig();
    config.maxCacheSize = (8 * LAYER) as usize;
    config.prefetchThreads = 2;
    // SAFETY: valid NUL-terminated path and config.
    let model = unsafe { tinyaiOpenMappedModel(path.as_ptr(), &config) };
    assert!(!model.is_null());
    let address = model as usize;
    let budget = config.maxCacheSize;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let over = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        let churners: Vec<_> = (0..3u64)
            .map(|thread| {
                let (stop, over) = (&stop, &over);
                scope.spawn(move || {
                    let model = address as *mut TinyAIMappedModel;
                    let mut seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(thread + 1);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        seed = tinyai_format::fixtures::splitmix64(seed);
                        let index = (seed % 32) as i32;
                        // SAFETY: the model is open until after the scope.
                        unsafe {
                            match seed >> 60 {
                                0..=9 => assert!(!tinyaiGetLayerWeights(model, index).is_null()),
                                10..=13 => {
                                    let _ = tinyaiPrefetchLayerWeights(model, index);
                                }
                                _ => tinyaiReleaseLayerWeights(model, index),
                            }
                            if tinyaiGetMappedModelMemoryUsage(model) > budget {
                                over.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        let holders: Vec<_> = (0..3u64)
            .map(|thread| {
                let over = &over;
                scope.spawn(move || {
                    let model = address as *mut TinyAIMappedModel;
                    let mut lost = 0;
                    for round in 0..300u64 {
                        let index = ((thread * 11 + round * 7) % 32) as i32;
                        // SAFETY: the model is open; the pointer covers LAYER bytes.
                        let weights = unsafe { tinyaiGetLayerWeights(model, index) }.cast::<u8>();
                        assert!(!weights.is_null());
                        let marker = (thread << 56 | round).to_le_bytes();
                        // SAFETY: inside the layer; only this thread writes bytes
                        // 100 + 8 * thread .. + 8 of any layer.
                        let at = unsafe { weights.add(100 + 8 * thread as usize) };
                        // SAFETY: as above.
                        let original = unsafe { at.cast::<[u8; 8]>().read_volatile() };
                        // SAFETY: as above.
                        unsafe { at.cast::<[u8; 8]>().write_volatile(marker) };
                        std::thread::sleep(std::time::Duration::from_micros(300));
                        // SAFETY: as above.
                        if unsafe { at.cast::<[u8; 8]>().read_volatile() } != marker {
                            lost += 1;
                        }
                        // SAFETY: as above (restore the file's bytes).
                        unsafe { at.cast::<[u8; 8]>().write_volatile(original) };
                        // SAFETY: the model is open.
                        if unsafe { tinyaiGetMappedModelMemoryUsage(model) } > budget {
                            over.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    lost
                })
            })
            .collect();
        let lost: u64 = holders.into_iter().map(|h| h.join().unwrap()).sum();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for churner in churners {
            churner.join().unwrap();
        }
        assert_eq!(
            lost, 0,
            "writes into a thread's last layer were lost before its next get"
        );
    });
    assert_eq!(
        over.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "usage exceeded maxCacheSize"
    );
    let mut stats = TinyAIMmapStats::default();
    // SAFETY: open model, valid out pointer.
    assert!(unsafe { tinyaiGetMappedModelStats(model, &mut stats) });
    assert!(
        stats.evictions > 100,
        "too little churn to test anything: {}",
        stats.evictions
    );
    // SAFETY: open model, closed once.
    unsafe { tinyaiCloseMappedModel(model) };
}
