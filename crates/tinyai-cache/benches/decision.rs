//! Decision cost per access with 10,000 layers (target: ≤ 200 ns).
//!
//! `cargo bench -p tinyai-cache --bench decision`
//!
//! Each iteration is one `Engine::request` on a pre-generated trace that
//! wraps around, so the engine is in steady state (hits and misses with
//! evictions mixed as the trace dictates).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tinyai_cache::sim::{self, Trace};
use tinyai_cache::{AccessKind, LayerId, PolicyKind};

const LAYERS: usize = 10_000;

fn traces() -> Vec<Trace> {
    // The worst case for the priority-aware policy: every layer has its own
    // priority (as when an engine sets priority = depth / layers).
    let mut distinct = sim::zipf_experts(1, LAYERS, 200_000, 1.0);
    distinct.name = "zipf_distinct_priorities".into();
    distinct.priorities = (0..LAYERS as u32)
        .map(|i| (LayerId(i), i as f32 / LAYERS as f32))
        .collect();
    vec![
        sim::zipf_experts(1, LAYERS, 200_000, 1.0),
        sim::forward_passes(2, LAYERS, 20),
        sim::uniform_random(3, LAYERS, 200_000),
        distinct,
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_10k_layers");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for trace in traces() {
        for policy in [
            PolicyKind::Adaptive,
            PolicyKind::Lru,
            PolicyKind::Arc,
            PolicyKind::S3Fifo,
        ] {
            let mut engine = trace.engine(policy, 0.5).unwrap();
            let accesses = trace.accesses.clone();
            // Warm the engine to steady state.
            for (i, &id) in accesses.iter().enumerate() {
                engine.request(id, AccessKind::Demand, i as u64).unwrap();
            }
            let mut position = 0usize;
            let name = format!("{}/{}", trace.name, policy.name());
            group.bench_function(name, |b| {
                b.iter(|| {
                    let id = accesses[position % accesses.len()];
                    position += 1;
                    black_box(
                        engine
                            .request(black_box(id), AccessKind::Demand, position as u64)
                            .unwrap(),
                    )
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
