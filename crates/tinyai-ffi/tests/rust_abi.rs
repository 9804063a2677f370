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
