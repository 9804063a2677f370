//! Property tests of the engine's invariants, for every policy.
#![allow(clippy::unwrap_used, missing_docs)]

use proptest::prelude::*;
use tinyai_cache::{AccessKind, Decision, Engine, EngineConfig, LayerId, PolicyKind};

#[derive(Clone, Debug)]
enum Op {
    Demand(u32),
    Prefetch(u32),
    Pin(u32),
    Unpin(u32),
    Remove(u32),
    Priority(u32, f32),
    Budget(u64),
}

fn op(layers: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..layers).prop_map(Op::Demand),
        1 => (0..layers).prop_map(Op::Prefetch),
        1 => (0..layers).prop_map(Op::Pin),
        1 => (0..layers).prop_map(Op::Unpin),
        1 => (0..layers).prop_map(Op::Remove),
        1 => (0..layers, 0.0f32..=1.0).prop_map(|(l, p)| Op::Priority(l, p)),
        1 => (4096u64..200_000).prop_map(Op::Budget),
    ]
}

fn policy() -> impl Strategy<Value = PolicyKind> {
    prop::sample::select(PolicyKind::ALL.to_vec())
}

fn engine(policy: PolicyKind, sizes: &[u64], budget: u64) -> Engine {
    let config = EngineConfig {
        budget_bytes: budget,
        min_layer_charge: 4096,
        page_size: 4096,
        policy,
    };
    let mut engine = Engine::new(config, sizes).unwrap();
    if policy == PolicyKind::Belady {
        engine.set_future_trace((0..1000).map(|i| LayerId(i % sizes.len() as u32)).collect());
    }
    engine
}

fn pinned_charge(engine: &Engine, layers: u32) -> u64 {
    (0..layers)
        .map(LayerId)
        .filter(|&id| engine.is_pinned(id))
        .map(|id| engine.charge(id).unwrap())
        .sum()
}

/// Replays `ops`, checking the invariants after each one; returns the decisions.
fn replay(engine: &mut Engine, layers: u32, ops: &[Op]) -> Vec<String> {
    let mut log = Vec::new();
    for (now, op) in ops.iter().enumerate() {
        let pinned_before: Vec<LayerId> = (0..layers)
            .map(LayerId)
            .filter(|&id| engine.is_pinned(id))
            .collect();
        let outcome = match *op {
            Op::Demand(l) => format!(
                "{:?}",
                engine.request(LayerId(l), AccessKind::Demand, now as u64)
            ),
            Op::Prefetch(l) => format!(
                "{:?}",
                engine.request(LayerId(l), AccessKind::Prefetch, now as u64)
            ),
            Op::Pin(l) => format!("{:?}", engine.pin(LayerId(l))),
            Op::Unpin(l) => format!("{:?}", engine.unpin(LayerId(l))),
            Op::Remove(l) => format!("{:?}", engine.remove(LayerId(l))),
            Op::Priority(l, p) => format!("{:?}", engine.set_priority(LayerId(l), p)),
            Op::Budget(b) => format!("{:?}", engine.set_budget(b)),
        };
        // A pinned entry is never evicted (only an explicit unpin can end it).
        for id in pinned_before {
            if matches!(*op, Op::Unpin(l) if LayerId(l) == id) {
                continue; // the last unpin completes a deferred remove
            }
            assert!(engine.is_resident(id), "pinned {id:?} evicted by {op:?}");
        }
        // Usage never exceeds the budget except by pinned entries.
        let pinned = pinned_charge(engine, layers);
        assert!(
            engine.usage() <= engine.budget().max(pinned),
            "usage {} > budget {} (pinned {pinned}) after {op:?}",
            engine.usage(),
            engine.budget()
        );
        let resident: u64 = (0..layers)
            .map(LayerId)
            .filter(|&id| engine.is_resident(id))
            .map(|id| engine.charge(id).unwrap())
            .sum();
        assert_eq!(resident, engine.usage());
        log.push(outcome);
    }
    log
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn invariants_hold(
        policy in policy(),
        sizes in prop::collection::vec(0u64..70_000, 1..24),
        budget in 4096u64..200_000,
        ops in prop::collection::vec(op(24), 0..200),
    ) {
        let layers = sizes.len() as u32;
        let ops: Vec<Op> = ops.into_iter().map(|o| clamp(o, layers)).collect();
        let mut e = engine(policy, &sizes, budget);
        replay(&mut e, layers, &ops);
    }

    #[test]
    fn deterministic(
        policy in policy(),
        sizes in prop::collection::vec(0u64..70_000, 1..24),
        budget in 4096u64..200_000,
        ops in prop::collection::vec(op(24), 0..200),
    ) {
        let layers = sizes.len() as u32;
        let ops: Vec<Op> = ops.into_iter().map(|o| clamp(o, layers)).collect();
        let first = replay(&mut engine(policy, &sizes, budget), layers, &ops);
        let second = replay(&mut engine(policy, &sizes, budget), layers, &ops);
        prop_assert_eq!(first, second);
    }

    /// Adaptive: a victim never has a strictly higher priority than an
    /// evictable entry that stays resident.
    #[test]
    fn adaptive_evicts_lower_priority_first(
        sizes in prop::collection::vec(1u64..20_000, 2..20),
        priorities in prop::collection::vec(0.0f32..=1.0, 20),
        budget in 8192u64..60_000,
        accesses in prop::collection::vec(0u32..20, 0..150),
    ) {
        let layers = sizes.len() as u32;
        let mut e = engine(PolicyKind::Adaptive, &sizes, budget);
        for l in 0..layers {
            e.set_priority(LayerId(l), priorities[l as usize]).unwrap();
        }
        for (now, a) in accesses.into_iter().enumerate() {
            let id = LayerId(a % layers);
            let decision = e.request(id, AccessKind::Demand, now as u64).unwrap();
            if let Decision::Admit { victims } = decision {
                let kept_min = (0..layers)
                    .map(LayerId)
                    .filter(|&k| k != id && e.is_resident(k))
                    .map(|k| e.priority(k).unwrap())
                    .fold(f32::INFINITY, f32::min);
                for v in victims {
                    let p = e.priority(v).unwrap();
                    prop_assert!(p <= kept_min, "victim {v:?} priority {p} > kept {kept_min}");
                    prop_assert!(p <= e.priority(id).unwrap());
                }
            }
        }
    }
}

fn clamp(op: Op, layers: u32) -> Op {
    match op {
        Op::Demand(l) => Op::Demand(l % layers),
        Op::Prefetch(l) => Op::Prefetch(l % layers),
        Op::Pin(l) => Op::Pin(l % layers),
        Op::Unpin(l) => Op::Unpin(l % layers),
        Op::Remove(l) => Op::Remove(l % layers),
        Op::Priority(l, p) => Op::Priority(l % layers, p),
        Op::Budget(b) => Op::Budget(b),
    }
}
