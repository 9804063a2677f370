//! The store makes the decisions the cache engine's simulator makes: a trace
//! replayed through `MappedModel::get` (one thread, automatic prefetch off)
//! gets exactly the hits and misses of the same trace replayed through
//! `tinyai_cache::sim` with the same policy, budget and charging rule. So the
//! hit-ratio goals measured by simulation hold for the store, and the lock-free
//! hit path (hits reach the engine through the read buffers) loses nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tinyai_cache::PolicyKind;
use tinyai_cache::sim::{self, SIM_PAGE_SIZE, Trace};
use tinyai_store::{Backend, MappedModel, StoreConfig};

/// Per access: was it a hit?
fn replay_store(trace: &Trace, fixture: &Fixture, policy: PolicyKind, budget: u64) -> Vec<bool> {
    let config = StoreConfig {
        policy: Some(policy),
        prefetch_enabled: false,
        min_layer_cache_size: SIM_PAGE_SIZE,
        ..config(budget, Backend::Mapped)
    };
    let model = MappedModel::open(&fixture.path, config).unwrap();
    // The traces give engine-scale priorities; the store takes TinyAI's scale.
    for &(id, priority) in &trace.priorities {
        let tinyai = tinyai_cache::engine::tinyai_priority(priority);
        model.set_priority(u64::from(id.0), tinyai).unwrap();
    }
    let mut hits = Vec::with_capacity(trace.accesses.len());
    let mut before = model.stats().hits;
    for &id in &trace.accesses {
        let guard = model.get(u64::from(id.0)).unwrap();
        assert_eq!(guard.len() as u64, trace.layer_sizes[id.index()]);
        drop(guard);
        let now = model.stats().hits;
        hits.push(now > before);
        before = now;
    }
    assert!(model.memory_usage() <= budget);
    hits
}

fn replay_engine(trace: &Trace, policy: PolicyKind, fraction: f64) -> (Vec<bool>, u64) {
    let mut engine = trace.engine(policy, fraction).unwrap();
    let budget = engine.budget();
    let hits = trace
        .accesses
        .iter()
        .enumerate()
        .map(|(position, &id)| sim::CacheModel::access(&mut engine, id, position as u64))
        .collect();
    (hits, budget)
}

/// Shrinks a trace's layers (keeping their relative sizes and every access) so
/// the fixture stays small.
fn scaled(mut trace: Trace, divisor: u64) -> Trace {
    for size in &mut trace.layer_sizes {
        *size = (*size / divisor).max(1);
    }
    trace
}

#[test]
fn store_and_simulator_make_the_same_decisions() {
    let traces = [
        scaled(sim::forward_passes(7, 24, 6), 16),
        scaled(sim::zipf_experts(7, 32, 600, 1.1), 16),
        scaled(sim::uniform_random(7, 24, 500), 16),
        scaled(sim::phase_change(7, 24, 150), 16),
        scaled(sim::priority_hot(7, 24, 500), 16),
    ];
    for trace in traces {
        let fixture = fixture(41, &trace.layer_sizes, 1);
        let mut some_hits_some_misses = false;
        let mut compared = 0;
        for policy in [PolicyKind::Adaptive, PolicyKind::Lru] {
            for fraction in [0.25, 0.5, 0.9] {
                let (expected, budget) = replay_engine(&trace, policy, fraction);
                // The store keeps one layer's room outside its cache for layers
                // it serves without admitting them (when the model does not
                // fit): give it that much more so its cache matches the engine's.
                let charges: Vec<u64> = trace
                    .layer_sizes
                    .iter()
                    .map(|&size| size.div_ceil(SIM_PAGE_SIZE).max(1) * SIM_PAGE_SIZE)
                    .collect();
                let largest = charges.iter().copied().max().unwrap();
                let total: u64 = charges.iter().sum();
                let store_budget = budget + largest;
                if total <= store_budget || largest > store_budget / 2 {
                    // No store budget has exactly this cache: nothing to compare.
                    continue;
                }
                compared += 1;
                let got = replay_store(&trace, &fixture, policy, store_budget);
                let first_difference = expected.iter().zip(&got).position(|(a, b)| a != b);
                assert_eq!(
                    first_difference,
                    None,
                    "{} {policy:?} @ {fraction}: store and simulator differ first at access {:?} (layer {:?}); hits {} vs {}",
                    trace.name,
                    first_difference,
                    first_difference.map(|i| trace.accesses[i]),
                    got.iter().filter(|&&h| h).count(),
                    expected.iter().filter(|&&h| h).count(),
                );
                let hits = expected.iter().filter(|&&h| h).count();
                some_hits_some_misses |= hits > 0 && hits < expected.len();
            }
        }
        assert!(
            compared >= 4,
            "{}: only {compared} cells compared",
            trace.name
        );
        assert!(
            some_hits_some_misses,
            "{}: a trace that tests nothing",
            trace.name
        );
    }
}
