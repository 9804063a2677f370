//! Property tests of the engine's invariants, for every policy.
#![allow(clippy::unwrap_used, missing_docs)]

use proptest::prelude::*;
use tinyai_cache::policy::adaptive::priority_step;
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

/// Longest operation sequence: 200, or 40 under Miri.
const MAX_OPS: usize = if cfg!(miri) { 40 } else { 200 };

/// 200 cases; under Miri, which interprets every step and has no file access,
/// 4 cases and no regression file.
fn proptest_config() -> ProptestConfig {
    if cfg!(miri) {
        ProptestConfig {
            cases: 4,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    } else {
        ProptestConfig::with_cases(200)
    }
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
    if policy == PolicyKind::FurthestNextUse {
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
    #![proptest_config(proptest_config())]

    #[test]
    fn invariants_hold(
        policy in policy(),
        sizes in prop::collection::vec(0u64..70_000, 1..24),
        budget in 4096u64..200_000,
        ops in prop::collection::vec(op(24), 0..MAX_OPS),
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
        ops in prop::collection::vec(op(24), 0..MAX_OPS),
    ) {
        let layers = sizes.len() as u32;
        let ops: Vec<Op> = ops.into_iter().map(|o| clamp(o, layers)).collect();
        let first = replay(&mut engine(policy, &sizes, budget), layers, &ops);
        let second = replay(&mut engine(policy, &sizes, budget), layers, &ops);
        prop_assert_eq!(first, second);
    }

    /// Adaptive, layers of one size each used once (so every `E` is the
    /// same, ∞): eviction follows priority (in the policy's steps of 1/12)
    /// alone. A victim never has a higher priority than an evictable entry
    /// that stays, nor one as high as the candidate it makes room for; a
    /// bypassed candidate has no higher priority than the lowest resident.
    #[test]
    fn adaptive_evicts_lower_priority_first(
        size in 1u64..20_000,
        priorities in prop::collection::vec(0.0f32..=1.0, 2..30),
        budget in 8192u64..60_000,
        order_seed in any::<u64>(),
    ) {
        let layers = priorities.len() as u32;
        let sizes = vec![size; priorities.len()];
        let mut e = engine(PolicyKind::Adaptive, &sizes, budget);
        for (l, &p) in priorities.iter().enumerate() {
            e.set_priority(LayerId(l as u32), p).unwrap();
        }
        // A seeded permutation: each layer is accessed exactly once.
        let mut order: Vec<u32> = (0..layers).collect();
        let mut state = order_seed;
        for i in (1..order.len()).rev() {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            order.swap(i, (state >> 33) as usize % (i + 1));
        }
        for (now, l) in order.into_iter().enumerate() {
            let id = LayerId(l);
            let step = |e: &Engine, k: LayerId| priority_step(e.priority(k).unwrap());
            let resident_min = |e: &Engine| {
                (0..layers)
                    .map(LayerId)
                    .filter(|&k| k != id && e.is_resident(k))
                    .map(|k| step(e, k))
                    .min()
                    .unwrap_or(u32::MAX)
            };
            let before_min = resident_min(&e);
            match e.request(id, AccessKind::Demand, now as u64).unwrap() {
                Decision::Admit { victims } => {
                    let kept_min = resident_min(&e);
                    for v in victims {
                        let p = step(&e, v);
                        prop_assert!(p <= kept_min, "victim {v:?} step {p} > kept {kept_min}");
                        prop_assert!(p < step(&e, id));
                    }
                }
                Decision::Bypass => {
                    prop_assert!(step(&e, id) <= before_min);
                }
                Decision::Hit => prop_assert!(false, "a layer used once cannot hit"),
            }
        }
    }

    /// Adaptive: on cyclic passes over same-sized layers, more than fit,
    /// the stable resident set is made of the first layers of a pass, so the
    /// last layer never stays — unless its priority is raised to 1.0.
    #[test]
    fn adaptive_priority_protects_against_equal_layers(
        size in 4096u64..20_000,
        layers in 4u32..24,
        fits in 2u64..4,
    ) {
        let sizes = vec![size; layers as usize];
        let charge = size.div_ceil(4096) * 4096;
        let last = LayerId(layers - 1);
        for protect in [false, true] {
            let mut e = engine(PolicyKind::Adaptive, &sizes, charge * fits);
            if protect {
                e.set_priority(last, 1.0).unwrap();
            }
            let mut now = 0u64;
            for _ in 0..4 {
                for l in 0..layers {
                    e.request(LayerId(l), AccessKind::Demand, now).unwrap();
                    now += 1;
                }
            }
            prop_assert_eq!(e.is_resident(last), protect, "protect = {}", protect);
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
