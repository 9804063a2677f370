//! The budget is a hard limit: charged usage, and in Mapped mode the mapping's
//! resident pages, stay within it while streaming a model 4x its size.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tinyai_store::{Backend, MappedModel, PolicyKind, StoreConfig, evict_file_from_page_cache};

const LAYER: u64 = 256 * 1024;
const LAYERS: usize = 32; // 8 MiB model
const BUDGET: u64 = 2 * MIB; // a quarter of the model

fn streaming_fixture() -> Fixture {
    let sizes: Vec<u64> = (0..LAYERS as u64).map(|i| LAYER - (i % 4) * 4096).collect();
    fixture(11, &sizes, 2)
}

#[test]
fn charged_usage_never_exceeds_the_budget_while_streaming() {
    let fixture = streaming_fixture();
    for backend in BACKENDS {
        for policy in [
            PolicyKind::Adaptive,
            PolicyKind::Lru,
            PolicyKind::TinyAiClassic,
        ] {
            let config = StoreConfig {
                policy: Some(policy),
                ..config(BUDGET, backend)
            };
            let model = MappedModel::open(&fixture.path, config).unwrap();
            for _pass in 0..4 {
                for index in 0..model.layer_count() {
                    let guard = model.get(index).unwrap();
                    assert!(!guard.is_empty());
                    // The guarded layer fits in the budget, so nothing may exceed it
                    // (a layer served outside the cache makes room like any other).
                    assert!(model.cached_bytes() <= BUDGET, "{backend:?} {policy:?}");
                    assert!(
                        model.memory_usage() <= BUDGET,
                        "{backend:?} {policy:?}: {} > {BUDGET}",
                        model.memory_usage()
                    );
                    drop(guard);
                    assert!(model.memory_usage() <= BUDGET);
                }
            }
            let stats = model.stats();
            assert_eq!(stats.hits + stats.misses, 4 * LAYERS as u64);
            assert!(stats.bytes_read >= 8 * MIB, "{stats:?}");
        }
    }
}

/// A small deterministic generator (no dependency on a crate's stream).
fn next(seed: &mut u64) -> u64 {
    *seed = tinyai_format::fixtures::splitmix64(*seed);
    *seed
}

#[test]
fn usage_never_exceeds_the_budget_or_the_guards_the_caller_holds() {
    // Random gets while holding up to 10 guards (more than the budget's 8
    // layers at times), explicit prefetches, releases: after every call the
    // charged total is within max(budget, the held guards' charges).
    let fixture = streaming_fixture();
    for backend in BACKENDS {
        for policy in [
            PolicyKind::Adaptive,
            PolicyKind::Lru,
            PolicyKind::TinyAiClassic,
        ] {
            let config = StoreConfig {
                policy: Some(policy),
                ..config(BUDGET, backend)
            };
            let model = MappedModel::open(&fixture.path, config).unwrap();
            let charge = |index: u64| model.descriptor(index).unwrap().size.div_ceil(4096) * 4096;
            let mut held = Vec::new();
            let mut seed = 7;
            for step in 0..600 {
                let index = next(&mut seed) % model.layer_count();
                match next(&mut seed) % 8 {
                    0..=3 => held.push(model.get(index).unwrap()),
                    4 | 5 => {
                        let _ = model.prefetch(index).unwrap();
                    }
                    6 => model.release(index).unwrap(),
                    _ => {
                        let keep = (next(&mut seed) % 11) as usize;
                        while held.len() > keep {
                            held.remove(0);
                        }
                    }
                }
                let distinct: std::collections::BTreeSet<u64> =
                    held.iter().map(|guard| guard.index()).collect();
                let guarded: u64 = distinct.into_iter().map(charge).sum();
                let usage = model.memory_usage();
                assert!(
                    usage <= BUDGET.max(guarded),
                    "{backend:?} {policy:?} step {step}: usage {usage} > max(budget {BUDGET}, held {guarded})"
                );
            }
        }
    }
}

#[test]
fn threads_never_push_usage_over_the_budget() {
    // Four threads, each holding at most one guard (together half the budget):
    // sampled after every call, the charged total never exceeds the budget.
    let fixture = streaming_fixture();
    for backend in BACKENDS {
        let model = MappedModel::open(&fixture.path, config(BUDGET, backend)).unwrap();
        let ops: u64 = std::env::var("TINYAI_STRESS_OPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000)
            .min(20_000);
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let model = &model;
                scope.spawn(move || {
                    let mut seed = 100 + thread;
                    for step in 0..ops {
                        let index = next(&mut seed) % model.layer_count();
                        if next(&mut seed).is_multiple_of(4) {
                            let _ = model.prefetch(index).unwrap();
                        } else {
                            let guard = model.get(index).unwrap();
                            assert!(!guard.is_empty());
                            let usage = model.memory_usage();
                            assert!(
                                usage <= BUDGET,
                                "{backend:?} thread {thread} step {step}: {usage}"
                            );
                        }
                        let usage = model.memory_usage();
                        assert!(
                            usage <= BUDGET,
                            "{backend:?} thread {thread} step {step}: {usage}"
                        );
                    }
                });
            }
        });
    }
}

#[test]
fn mapped_resident_pages_follow_the_budget() {
    let fixture = streaming_fixture();
    evict_file_from_page_cache(&fixture.path).unwrap();
    let model = MappedModel::open(&fixture.path, config(BUDGET, Backend::Mapped)).unwrap();
    let baseline = model.resident_bytes();
    if baseline > MIB {
        tinyai_format::fixtures::skip(
            "mapped_resident_pages_follow_the_budget",
            &format!(
                "the file system keeps the file cached ({baseline} bytes resident before any load)"
            ),
        );
        return;
    }
    let mut peak = 0;
    for _pass in 0..4 {
        for index in 0..model.layer_count() {
            let guard = model.get(index).unwrap();
            let expected_first = tinyai_format::fixtures::fixture_byte(11, index, 0);
            assert_eq!(guard[0], expected_first);
            drop(guard);
            // Let in-flight prefetches land before measuring.
            std::thread::sleep(std::time::Duration::from_millis(2));
            let resident = model.resident_bytes();
            peak = peak.max(resident);
            assert!(
                resident <= BUDGET + MIB,
                "resident {resident} > budget {BUDGET} + 1 MiB after layer {index}"
            );
        }
    }
    // And it really was loading: something was resident at some point.
    assert!(peak >= LAYER, "peak resident {peak}");
}

#[test]
fn adaptive_keeps_a_stable_set_on_cyclic_scans_where_lru_thrashes() {
    let fixture = streaming_fixture();
    let mut hits = Vec::new();
    for policy in [PolicyKind::Adaptive, PolicyKind::Lru] {
        let config = StoreConfig {
            policy: Some(policy),
            prefetch_enabled: false,
            ..config(4 * MIB, Backend::Mapped)
        };
        let model = MappedModel::open(&fixture.path, config).unwrap();
        for _pass in 0..6 {
            for index in 0..model.layer_count() {
                drop(model.get(index).unwrap());
            }
        }
        hits.push(model.stats().hits);
    }
    // LRU on a cyclic scan over twice the budget never hits; adaptive keeps ~half.
    assert_eq!(hits[1], 0, "lru hits");
    assert!(
        hits[0] >= 5 * LAYERS as u64 / 4,
        "adaptive hits {}",
        hits[0]
    );
}

#[test]
fn keep_page_cache_leaves_evicted_pages_cached() {
    let fixture = streaming_fixture();
    evict_file_from_page_cache(&fixture.path).unwrap();
    let config = StoreConfig {
        keep_page_cache: true,
        ..config(BUDGET, Backend::Mapped)
    };
    let model = MappedModel::open(&fixture.path, config).unwrap();
    if model.resident_bytes() > MIB {
        tinyai_format::fixtures::skip(
            "keep_page_cache_leaves_evicted_pages_cached",
            "the file system keeps the file cached",
        );
        return;
    }
    for index in 0..model.layer_count() {
        drop(model.get(index).unwrap());
    }
    // The budget bounds what the store holds, but with keep_page_cache the OS may
    // keep every page it read: mincore sees (almost) the whole model.
    assert!(model.cached_bytes() <= BUDGET);
    assert!(
        model.resident_bytes() > BUDGET + MIB,
        "{}",
        model.resident_bytes()
    );
}

/// A stream whose read-aheads let the kernel read ahead (a window that pays
/// for the reach): every byte right, and the file's resident pages — the
/// layers in memory plus what the kernel read past the stream's front — within
/// the budget after every layer, in every pass.
#[test]
fn streams_reading_ahead_through_the_kernel_stay_within_the_budget() {
    const NAME: &str = "streams_reading_ahead_through_the_kernel_stay_within_the_budget";
    const LAYER_SIZE: u64 = MIB;
    let fixture = fixture(144, &[LAYER_SIZE; 96], 1);
    evict_file_from_page_cache(&fixture.path).unwrap();
    let budget = 48 * MIB;
    let config = StoreConfig {
        streaming_window: Some(40 * MIB),
        // Far enough ahead to fill the window: what it holds plus what the
        // kernel reads past its front would exceed the budget if the window
        // did not set the reach aside.
        lookahead: 64,
        ..config(budget, Backend::Mapped)
    };
    let model = MappedModel::open(&fixture.path, config).unwrap();
    if model.read_ahead_reach() == 0 {
        tinyai_format::fixtures::skip(
            NAME,
            "the file's device has no known read-ahead size, or one too large for a 40 MiB window",
        );
        return;
    }
    if model.resident_bytes() > MIB {
        tinyai_format::fixtures::skip(NAME, "the file system keeps the file cached");
        return;
    }
    let mut peak = 0;
    for _pass in 0..3 {
        for (index, guard) in model
            .forward_pass(0..model.layer_count())
            .unwrap()
            .enumerate()
        {
            let guard = guard.unwrap();
            // Every byte of what the stream read, not only of later gets.
            let expected =
                tinyai_format::fixtures::expected_layer_bytes(&fixture.spec, index as u64)
                    .unwrap()
                    .unwrap();
            assert!(guard[..] == expected[..], "layer {index} bytes differ");
            drop(guard);
            let resident = model.resident_bytes();
            peak = peak.max(resident);
            assert!(
                resident <= budget + MIB,
                "resident {resident} > budget {budget} + 1 MiB after layer {index}"
            );
        }
    }
    for index in 0..model.layer_count() {
        assert_layer_matches(&model, &fixture, index);
    }
    assert!(peak >= 8 * LAYER_SIZE, "peak resident {peak}");
}
