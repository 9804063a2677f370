//! The I/O pipeline (issue 13): layers larger than one read request are read
//! in requests of 256 KiB to 1 MiB, several in flight, into buffers the owned backend reuses
//! across evictions. Every byte must be right in every backend and I/O mode,
//! whatever the layer's size relative to a request; a request failing in the
//! middle of a layer is a typed error at the `get` that needs the layer,
//! charges nothing and leaves the model usable; closing with multi-request
//! loads in flight neither hangs nor crashes.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tinyai_store::{
    Backend, CacheState, InjectedFault, MappedModel, StoreConfig, StoreError,
    evict_file_from_page_cache,
};

/// Sizes around the request sizes (256 KiB to 1 MiB): below, exactly, one byte over, several and
/// a ragged tail, and a page.
const SIZES: [u64; 8] = [
    MIB / 2,
    MIB,
    MIB + 1,
    3 * MIB + MIB / 2,
    4096,
    5 * MIB + 12_345,
    2 * MIB,
    MIB - 1,
];

#[test]
fn every_byte_is_right_in_every_backend_whatever_the_layer_size() {
    let fixture = fixture(131, &SIZES, 3);
    for backend in BACKENDS {
        for prefetch in [false, true] {
            // Room for about two of the large layers: every pass evicts.
            let config = StoreConfig {
                prefetch_enabled: prefetch,
                ..config(12 * MIB, backend)
            };
            let model = MappedModel::open(&fixture.path, config).unwrap();
            for _pass in 0..3 {
                for index in 0..model.layer_count() {
                    assert_layer_matches(&model, &fixture, index);
                    assert!(model.memory_usage() <= 12 * MIB, "{backend:?}");
                    if !prefetch {
                        // Nothing runs in the background: the two readings agree.
                        let pooled = model.stats().pooled_bytes;
                        assert!(
                            pooled + model.memory_usage() <= 12 * MIB,
                            "{backend:?}: {pooled} pooled bytes beside {} charged exceed the budget",
                            model.memory_usage()
                        );
                    }
                }
            }
            // And in reverse, so reused buffers serve other layers than before.
            for index in (0..model.layer_count()).rev() {
                assert_layer_matches(&model, &fixture, index);
            }
            let stats = model.stats();
            assert!(stats.evictions > 0, "{backend:?}: nothing was evicted");
            if matches!(backend, Backend::Owned { .. }) {
                assert!(
                    stats.buffers_reused > 0,
                    "{backend:?}: no evicted layer's buffer was reused ({stats:?})"
                );
                // Pooled buffers may wait for prefetches still in flight
                // (charged, holding no buffer yet); once those are done,
                // pooled plus charged fits the budget.
                assert!(
                    wait_for(|| model.stats().pooled_bytes + model.memory_usage() <= 12 * MIB),
                    "{backend:?}: pooled plus charged exceeds the budget ({:?})",
                    model.stats()
                );
            }
            assert!(
                stats.io_depth >= 1,
                "{backend:?}: no I/O depth reported ({stats:?})"
            );
        }
    }
}

#[test]
fn multi_request_loads_measure_the_device() {
    let fixture = fixture(132, &[4 * MIB; 4], 1);
    for backend in BACKENDS {
        let model = MappedModel::open(&fixture.path, config(64 * MIB, backend)).unwrap();
        for index in 0..model.layer_count() {
            assert_layer_matches(&model, &fixture, index);
        }
        let stats = model.stats();
        assert!(
            stats.io_bandwidth > 0 && !stats.io_latency.is_zero(),
            "{backend:?}: 4 MiB loads (4 requests each) measured nothing: {stats:?}"
        );
        assert!((4..=16).contains(&stats.io_depth), "{stats:?}");
    }
}

fn is_fault(error: &StoreError, fault: InjectedFault, layer: u64) -> bool {
    match (fault, error) {
        (InjectedFault::Eio, StoreError::Io { source, .. }) => {
            source.raw_os_error() == Some(libc::EIO)
        }
        (InjectedFault::ShortRead, StoreError::ShortRead { layer: at, .. }) => *at == layer,
        _ => false,
    }
}

#[test]
fn a_request_failing_mid_layer_is_an_error_at_the_get_and_charges_nothing() {
    let fixture = fixture(133, &SIZES, 2);
    let layer = 5; // 5 MiB + 12 345 bytes: six requests
    for backend in BACKENDS {
        for fault in [InjectedFault::Eio, InjectedFault::ShortRead] {
            for prefetch in [false, true] {
                let config = StoreConfig {
                    prefetch_enabled: prefetch,
                    ..config(16 * MIB, backend)
                };
                let model = MappedModel::open(&fixture.path, config).unwrap();
                assert_layer_matches(&model, &fixture, 0);
                let before = model.memory_usage();
                // The fourth request of the layer fails, every time until cleared.
                model
                    .inject_read_fault_at(layer, 3 * MIB + 100, fault, u32::MAX)
                    .unwrap();
                if prefetch {
                    let _ = model.prefetch(layer).unwrap();
                    assert!(wait_for(
                        || model.descriptor(layer).unwrap().state != CacheState::Loading
                    ));
                }
                let Err(error) = model.get(layer) else {
                    panic!("{backend:?} {fault:?}: the read of layer {layer} succeeded");
                };
                assert!(
                    is_fault(&error, fault, layer),
                    "{backend:?} {fault:?}: {error}"
                );
                assert_eq!(
                    model.descriptor(layer).unwrap().state,
                    CacheState::NotLoaded
                );
                assert_eq!(
                    model.memory_usage(),
                    before,
                    "{backend:?} {fault:?}: charged"
                );
                assert_layer_matches(&model, &fixture, 3);
                assert_layer_matches(&model, &fixture, 6);
                model
                    .inject_read_fault_at(layer, 3 * MIB + 100, fault, 0)
                    .unwrap();
                assert_layer_matches(&model, &fixture, layer);
            }
        }
    }
}

#[test]
fn a_fault_outside_the_layer_is_refused() {
    let fixture = fixture(134, &[MIB; 2], 1);
    let model = MappedModel::open(&fixture.path, StoreConfig::default()).unwrap();
    assert!(
        model
            .inject_read_fault_at(0, MIB, InjectedFault::Eio, 1)
            .is_err()
    );
    assert!(
        model
            .inject_read_fault_at(2, 0, InjectedFault::Eio, 1)
            .is_err()
    );
}

#[test]
fn close_with_multi_request_loads_in_flight_neither_hangs_nor_crashes() {
    let fixture = fixture(135, &[3 * MIB; 12], 1);
    for backend in BACKENDS {
        for round in 0..4 {
            let config = StoreConfig {
                prefetch_threads: 2,
                ..config(12 * MIB, backend)
            };
            let model = MappedModel::open(&fixture.path, config).unwrap();
            if round % 2 == 1 {
                model
                    .inject_read_fault_at(4, 2 * MIB, InjectedFault::Eio, u32::MAX)
                    .unwrap();
            }
            for index in 0..model.layer_count() {
                let _ = model.prefetch(index).unwrap();
            }
            assert_layer_matches(&model, &fixture, 0);
            drop(model); // cancels queued reads, waits for those in flight
        }
    }
}

/// Owned buffered loads copy the bytes into the store's buffers; the copy in
/// the page cache is dropped behind each read, so streaming a model through a
/// small budget leaves (almost) none of the file cached: the model's memory
/// is the budget, not the budget plus whatever the kernel kept. (Before
/// drop-behind reads the whole 96 MiB file stayed cached.)
#[test]
fn buffered_owned_loads_leave_no_page_cache_behind() {
    const NAME: &str = "buffered_owned_loads_leave_no_page_cache_behind";
    let fixture = fixture(143, &[2 * MIB; 48], 2);
    if !drops_behind(&fixture.path) {
        tinyai_format::fixtures::skip(
            NAME,
            "the kernel or file system has no RWF_DONTCACHE (Linux 6.14+ on ext4, xfs, btrfs)",
        );
        return;
    }
    tinyai_store::evict_file_from_page_cache(&fixture.path).unwrap();
    // A mapped view that loads nothing: `resident_bytes` is the file's page cache.
    let probe = MappedModel::open(&fixture.path, config(8 * MIB, Backend::Mapped)).unwrap();
    if probe.resident_bytes() > MIB {
        tinyai_format::fixtures::skip(NAME, "the file system keeps the file cached");
        return;
    }
    let model = MappedModel::open(
        &fixture.path,
        config(8 * MIB, Backend::Owned { direct_io: false }),
    )
    .unwrap();
    for _pass in 0..2 {
        for guard in model.forward_pass(0..model.layer_count()).unwrap() {
            drop(guard.unwrap());
        }
    }
    for index in 0..model.layer_count() {
        assert_layer_matches(&model, &fixture, index);
    }
    drop(model);
    let cached = probe.resident_bytes();
    // Read-ahead past the last read may stay (a few MiB); the file is 96 MiB.
    assert!(
        cached <= 24 * MIB,
        "{cached} bytes of the 96 MiB file stayed in the page cache"
    );
}

/// Streaming a model larger than the budget through the owned backend: the
/// load that evicts a layer gets that layer's buffer (same size), so loads
/// neither page-fault nor zero fresh memory — while pooled plus charged
/// memory stays within the budget after every get. (Before, an evicted
/// buffer was offered to the pool only after the incoming load's charge was
/// in, when a full budget left it no room: every load of the stream
/// allocated afresh.)
#[test]
fn a_full_budget_hands_evicted_buffers_to_the_loads_that_evict_them() {
    let fixture = fixture(145, &[MIB; 32], 1);
    for backend in [
        Backend::Owned { direct_io: false },
        Backend::Owned { direct_io: true },
    ] {
        let config = StoreConfig {
            prefetch_enabled: false,
            ..config(8 * MIB, backend)
        };
        let model = MappedModel::open(&fixture.path, config).unwrap();
        for _pass in 0..3 {
            for index in 0..model.layer_count() {
                assert_layer_matches(&model, &fixture, index);
                let pooled = model.stats().pooled_bytes;
                assert!(
                    pooled + model.memory_usage() <= 8 * MIB,
                    "{backend:?}: {pooled} pooled bytes beside {} charged exceed the budget",
                    model.memory_usage()
                );
            }
        }
        let stats = model.stats();
        let loads = stats.buffers_reused + stats.buffers_allocated;
        assert!(loads >= 64, "{backend:?}: {stats:?}");
        // Fresh buffers only until the budget first fills (and for layers the
        // policy serves outside the cache beside it).
        assert!(
            stats.buffers_allocated <= 16,
            "{backend:?}: {} of {loads} loads allocated a fresh buffer ({stats:?})",
            stats.buffers_allocated
        );
    }
}

/// Triple buffering through the streaming window: a window the store sizes
/// holds three of the largest layers besides the kernel's read-ahead reach,
/// so a stream that holds one layer has the next two read ahead (once the
/// pages of the layer before are dropped). With room for two, the read of
/// the layer after next waited until the held layer was released, and the
/// device idled while the consumer worked on it. Each access here waits
/// for the reclaim thread first, so the room is the window's alone: 0 of 36
/// streamed layers had the layer after next read with room for two.
#[test]
fn a_stream_reads_the_layer_after_next_while_it_holds_one() {
    const NAME: &str = "a_stream_reads_the_layer_after_next_while_it_holds_one";
    const LAYER: u64 = 4 * MIB;
    const LAYERS: u64 = 48;
    let fixture = fixture(177, &[LAYER; LAYERS as usize], 1);
    evict_file_from_page_cache(&fixture.path).unwrap();
    let model = MappedModel::open(&fixture.path, config(64 * MIB, Backend::Mapped)).unwrap();
    if model.read_ahead_reach() == 0 {
        tinyai_format::fixtures::skip(
            NAME,
            "the file's device has no known read-ahead size, or one too large for this budget",
        );
        return;
    }
    let settle = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while model.stats().reclaim_pending_bytes > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    // Two passes: the cache holds its share, the rest streams through the window.
    for _ in 0..2 {
        for index in 0..LAYERS {
            settle();
            drop(model.get(index).unwrap());
        }
    }
    let state = |index: u64| model.descriptor(index % LAYERS).unwrap().state;
    let read_ahead =
        |index: u64| matches!(state(index), CacheState::Loading | CacheState::Transient);
    let (mut informative, mut after_next) = (0, 0);
    for index in 0..LAYERS {
        settle();
        let guard = model.get(index).unwrap();
        if state(index) != CacheState::Transient
            || state(index + 1) == CacheState::Cached
            || state(index + 2) == CacheState::Cached
        {
            continue;
        }
        informative += 1;
        // Prefetches run on their own thread: give them time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
        while !read_ahead(index + 2) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if read_ahead(index + 1) && read_ahead(index + 2) {
            after_next += 1;
        }
        drop(guard);
    }
    eprintln!("{NAME}: layer after next read at {after_next} of {informative} streamed layers");
    assert!(
        informative >= 8,
        "only {informative} streamed layers followed by two streamed ones"
    );
    assert!(
        after_next * 10 >= informative * 9,
        "the layer after next was read while the stream held one at {after_next} of {informative} streamed layers"
    );
}

/// A mapped model whose whole file fits the budget is read in 2 MiB blocks
/// into large folios, mapped with one page-table entry each where the kernel
/// can (the fastest way in: see `readahead.rs`). Before, each layer was
/// advised `MADV_WILLNEED`, which reads 4 KiB folios, and mapped page by
/// page. Every byte must still be right.
#[test]
#[cfg_attr(miri, ignore = "mmap, madvise and /proc")]
fn a_mapped_model_that_fits_is_read_in_huge_blocks() {
    const NAME: &str = "a_mapped_model_that_fits_is_read_in_huge_blocks";
    // Layers that straddle block boundaries: 12 + 2 MiB + a page, ragged.
    let sizes = [
        3 * MIB + 12_345,
        MIB,
        2 * MIB + 4096,
        5 * MIB,
        MIB - 1,
        4 * MIB,
    ];
    let fixture = fixture(147, &sizes, 2);
    if !maps_huge_pages(&fixture.path) {
        tinyai_format::fixtures::skip(
            NAME,
            "this kernel does not map the file's page cache with 2 MiB entries \
             (transparent huge pages off, or a file system without large folios)",
        );
        return;
    }
    evict_file_from_page_cache(&fixture.path).unwrap();
    let file_size = std::fs::metadata(&fixture.path).unwrap().len();
    let model = MappedModel::open(&fixture.path, config(2 * file_size, Backend::Mapped)).unwrap();
    for guard in model.forward_pass(0..model.layer_count()).unwrap() {
        drop(guard.unwrap());
    }
    let huge = mapped_kb(&fixture.path, "FilePmdMapped:") << 10;
    // Every whole block of the file but the first (read by the tables' parse).
    let blocks = file_size / (2 * MIB) - 1;
    assert!(
        huge >= blocks * 2 * MIB,
        "{huge} bytes mapped in 2 MiB entries; the file has {blocks} blocks past the first"
    );
    for index in 0..model.layer_count() {
        assert_layer_matches(&model, &fixture, index);
    }
}
