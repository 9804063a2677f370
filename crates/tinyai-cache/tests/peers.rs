//! The benchmark peers ARC and S3-FIFO through the engine: the budget holds
//! with unequal sizes and pins, and both resist a scan that flushes LRU.
#![allow(clippy::unwrap_used, missing_docs)]

use tinyai_cache::sim::{self, SplitMix64, Trace};
use tinyai_cache::{AccessKind, Decision, Engine, EngineConfig, LayerId, PolicyKind};

const PEERS: [PolicyKind; 2] = [PolicyKind::Arc, PolicyKind::S3Fifo];

#[test]
fn budget_holds_with_unequal_sizes_pins_and_budget_changes() {
    let steps = if cfg!(miri) { 300 } else { 20_000 };
    for policy in PEERS {
        let mut rng = SplitMix64::new(5);
        let sizes: Vec<u64> = (0..80).map(|_| 1 + rng.below(200_000)).collect();
        let config = EngineConfig {
            budget_bytes: 1 << 20,
            min_layer_charge: 4096,
            page_size: 4096,
            policy,
        };
        let mut engine = Engine::new(config, &sizes).unwrap();
        let mut pinned: Vec<LayerId> = Vec::new();
        for step in 0..steps {
            let id = LayerId(if rng.below(2) == 0 {
                rng.below(12) as u32
            } else {
                rng.below(80) as u32
            });
            let decision = engine.request(id, AccessKind::Demand, step).unwrap();
            if let Decision::Admit { victims } = &decision {
                assert!(victims.iter().all(|v| !pinned.contains(v)), "{policy:?}");
            }
            match rng.below(50) {
                0 if engine.pin(id).unwrap() => pinned.push(id),
                1 => {
                    if let Some(p) = pinned.pop() {
                        engine.unpin(p).unwrap();
                    }
                }
                2 => {
                    engine.set_budget(200_000 + rng.below(1 << 21));
                }
                _ => {}
            }
            let pinned_charge: u64 = pinned
                .iter()
                .filter(|&&p| engine.is_pinned(p))
                .map(|&p| engine.charge(p).unwrap())
                .sum();
            assert!(
                engine.usage() <= engine.budget().max(pinned_charge),
                "{policy:?} step {step}: usage {} budget {}",
                engine.usage(),
                engine.budget()
            );
        }
    }
}

/// Ten equal layers fit. A hot set of six is used twice per round, then a
/// scan of eight layers never used again: LRU lets the scan flush the hot
/// set every round; ARC keeps it in T2 and S3-FIFO in its main queue.
#[test]
fn scans_do_not_flush_the_hot_set() {
    let hot = 6u32;
    let rounds = if cfg!(miri) { 20 } else { 300 };
    let mut accesses = Vec::new();
    let mut next_cold = hot;
    for _ in 0..rounds {
        accesses.extend((0..hot).chain(0..hot).map(LayerId));
        accesses.extend((next_cold..next_cold + 8).map(LayerId));
        next_cold += 8;
    }
    let trace = Trace {
        name: "hot_and_scan".into(),
        layer_sizes: vec![4096; next_cold as usize],
        accesses,
        priorities: Vec::new(),
    };
    let fraction = 10.0 / f64::from(next_cold);
    let lru = sim::simulate_policy(&trace, PolicyKind::Lru, fraction).unwrap();
    for policy in PEERS {
        let peer = sim::simulate_policy(&trace, policy, fraction).unwrap();
        assert!(
            peer.hit_ratio() > lru.hit_ratio() + 0.2,
            "{policy:?} {} vs lru {}",
            peer.hit_ratio(),
            lru.hit_ratio()
        );
    }
}
