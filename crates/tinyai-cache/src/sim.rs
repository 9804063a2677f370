//! Deterministic trace generators and a hit-ratio simulator.
//!
//! Every generator is a pure function of its arguments (a tiny internal
//! SplitMix64 generator provides the randomness), so a seed always yields the
//! same [`Trace`]. The simulator replays a trace through anything that
//! implements [`CacheModel`] — an [`Engine`] or a third-party cache in the
//! `hit_ratios` example — and reports the hit ratio and the byte hit ratio.
//!
//! | generator | pattern |
//! | --- | --- |
//! | [`forward_passes`] | repeated forward passes over transformer-like layers of varied sizes |
//! | [`forward_backward`] | forward then backward passes (training-style) |
//! | [`zipf_experts`] | mixture-of-experts routing: experts drawn from a Zipf law |
//! | [`uniform_random`] | layers drawn uniformly at random |
//! | [`phase_change`] | Zipf over one hot set, then forward passes, then Zipf over another hot set |
//! | [`priority_hot`] | a hot set marked high priority, mixed with a sequential scan of the rest |

use crate::config::{AccessKind, Decision, EngineConfig, LayerId, PolicyKind};
use crate::engine::Engine;
use crate::error::CacheError;

/// The budget fractions of the standard report.
pub const BUDGET_FRACTIONS: [f64; 5] = [0.1, 0.25, 0.5, 0.75, 0.9];

/// Page size and minimum charge used by the simulations (4 KiB, the C defaults).
pub const SIM_PAGE_SIZE: u64 = 4096;

/// SplitMix64: a tiny, deterministic, good-enough generator.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A replayable workload: layer sizes, the demand accesses, and priorities.
#[derive(Clone, Debug)]
pub struct Trace {
    /// Generator name (`forward_passes`, ...).
    pub name: String,
    /// Size in bytes of each layer; `LayerId(i)` has size `layer_sizes[i]`.
    pub layer_sizes: Vec<u64>,
    /// Demand accesses in order.
    pub accesses: Vec<LayerId>,
    /// Priorities set before the replay (all other layers keep the default).
    pub priorities: Vec<(LayerId, f32)>,
}

impl Trace {
    /// Sum of the charges of all layers under `config`'s charging rule.
    pub fn total_charge(&self, config: &EngineConfig) -> u64 {
        self.layer_sizes
            .iter()
            .map(|&s| config.charge_for(s))
            .fold(0u64, u64::saturating_add)
    }

    /// The simulation config for `policy` with `fraction` of
    /// [`total_charge`](Trace::total_charge) as the budget (at least one byte).
    pub fn config(&self, policy: PolicyKind, fraction: f64) -> EngineConfig {
        let mut config = EngineConfig {
            budget_bytes: 1,
            min_layer_charge: SIM_PAGE_SIZE,
            page_size: SIM_PAGE_SIZE,
            policy,
        };
        let total = self.total_charge(&config) as f64;
        config.budget_bytes = ((total * fraction.clamp(0.0, 1.0)) as u64).max(1);
        config
    }

    /// An engine for this trace: priorities set and, for Belady, the future trace.
    ///
    /// # Errors
    /// Propagates [`Engine::new`] errors.
    pub fn engine(&self, policy: PolicyKind, fraction: f64) -> Result<Engine, CacheError> {
        let mut engine = Engine::new(self.config(policy, fraction), &self.layer_sizes)?;
        for &(id, priority) in &self.priorities {
            engine.set_priority(id, priority)?;
        }
        if policy == PolicyKind::FurthestNextUse {
            engine.set_future_trace(self.accesses.clone());
        }
        Ok(engine)
    }
}

/// Anything that can serve a stream of demand accesses.
pub trait CacheModel {
    /// Serves the access number `position` to `id`; returns `true` on a hit.
    /// On a miss the model decides whether to cache the layer.
    fn access(&mut self, id: LayerId, position: u64) -> bool;
}

impl CacheModel for Engine {
    fn access(&mut self, id: LayerId, position: u64) -> bool {
        matches!(
            self.request(id, AccessKind::Demand, position),
            Ok(Decision::Hit)
        )
    }
}

/// Counters of one replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimResult {
    /// Number of accesses.
    pub accesses: u64,
    /// Number of hits.
    pub hits: u64,
    /// Bytes requested (sum of the sizes of accessed layers).
    pub bytes: u64,
    /// Bytes served from the cache.
    pub hit_bytes: u64,
}

impl SimResult {
    /// `hits / accesses` (0 for an empty trace).
    pub fn hit_ratio(&self) -> f64 {
        ratio(self.hits, self.accesses)
    }

    /// `hit_bytes / bytes` (0 for an empty trace).
    pub fn byte_hit_ratio(&self) -> f64 {
        ratio(self.hit_bytes, self.bytes)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Replays `trace` through `model`.
pub fn simulate(trace: &Trace, model: &mut dyn CacheModel) -> SimResult {
    let mut result = SimResult::default();
    for (position, &id) in trace.accesses.iter().enumerate() {
        let size = trace.layer_sizes.get(id.index()).copied().unwrap_or(0);
        result.accesses += 1;
        result.bytes = result.bytes.saturating_add(size);
        if model.access(id, position as u64) {
            result.hits += 1;
            result.hit_bytes = result.hit_bytes.saturating_add(size);
        }
    }
    result
}

/// Replays `trace` through an engine with `policy` and `fraction` of the
/// trace's total charge as the budget.
///
/// # Errors
/// Propagates [`Engine::new`] errors.
pub fn simulate_policy(
    trace: &Trace,
    policy: PolicyKind,
    fraction: f64,
) -> Result<SimResult, CacheError> {
    let mut engine = trace.engine(policy, fraction)?;
    Ok(simulate(trace, &mut engine))
}

/// Sizes of `count` transformer-like layers: a repeating block of
/// norm / attention / MLP layers with ±25% jitter (8 KiB .. ~1.3 MiB).
fn model_layer_sizes(rng: &mut SplitMix64, count: usize) -> Vec<u64> {
    const BLOCK: [u64; 6] = [8 << 10, 768 << 10, 256 << 10, 8 << 10, 1 << 20, 1 << 20];
    (0..count)
        .map(|i| {
            let base = BLOCK[i % BLOCK.len()];
            let jitter = 0.75 + 0.5 * rng.next_f64();
            ((base as f64 * jitter) as u64).max(1)
        })
        .collect()
}

/// Sizes of `count` experts: 256 KiB .. 1 MiB, log-uniform.
fn expert_sizes(rng: &mut SplitMix64, count: usize) -> Vec<u64> {
    (0..count)
        .map(|_| (f64::from(256u32 << 10) * 4f64.powf(rng.next_f64())) as u64)
        .collect()
}

/// Zipf(`exponent`) sampler over `0..n`, ranks mapped through a random permutation.
struct Zipf {
    cdf: Vec<f64>,
    ids: Vec<u32>,
}

impl Zipf {
    fn new(rng: &mut SplitMix64, n: usize, exponent: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 1..=n {
            total += 1.0 / (rank as f64).powf(exponent);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        let mut ids: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut ids);
        Zipf { cdf, ids }
    }

    fn sample(&self, rng: &mut SplitMix64) -> LayerId {
        let u = rng.next_f64();
        let rank = self.cdf.partition_point(|&c| c <= u);
        LayerId(self.ids.get(rank).or(self.ids.last()).copied().unwrap_or(0))
    }
}

/// `passes` forward passes over `layers` layers of varied sizes, in order.
pub fn forward_passes(seed: u64, layers: usize, passes: usize) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let layer_sizes = model_layer_sizes(&mut rng, layers);
    let accesses = (0..passes)
        .flat_map(|_| (0..layers as u32).map(LayerId))
        .collect();
    Trace {
        name: "forward_passes".into(),
        layer_sizes,
        accesses,
        priorities: Vec::new(),
    }
}

/// `round_trips` × (forward pass, then backward pass) over `layers` layers.
pub fn forward_backward(seed: u64, layers: usize, round_trips: usize) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let layer_sizes = model_layer_sizes(&mut rng, layers);
    let accesses = (0..round_trips)
        .flat_map(|_| (0..layers as u32).chain((0..layers as u32).rev()))
        .map(LayerId)
        .collect();
    Trace {
        name: "forward_backward".into(),
        layer_sizes,
        accesses,
        priorities: Vec::new(),
    }
}

/// `accesses` expert activations drawn from Zipf(`exponent`) over `experts`
/// experts of varied sizes (popularity independent of size).
pub fn zipf_experts(seed: u64, experts: usize, accesses: usize, exponent: f64) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let layer_sizes = expert_sizes(&mut rng, experts);
    let zipf = Zipf::new(&mut rng, experts, exponent);
    let accesses = (0..accesses).map(|_| zipf.sample(&mut rng)).collect();
    Trace {
        name: "zipf_experts".into(),
        layer_sizes,
        accesses,
        priorities: Vec::new(),
    }
}

/// `accesses` uniformly random accesses over `layers` layers of varied sizes.
pub fn uniform_random(seed: u64, layers: usize, accesses: usize) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let layer_sizes = model_layer_sizes(&mut rng, layers);
    let accesses = (0..accesses)
        .map(|_| LayerId(rng.below(layers as u64) as u32))
        .collect();
    Trace {
        name: "uniform_random".into(),
        layer_sizes,
        accesses,
        priorities: Vec::new(),
    }
}

/// Three phases of about `phase_len` accesses each over `layers` layers:
/// Zipf(1.0) over one popularity order, forward passes, then Zipf(1.0) over
/// a different popularity order.
pub fn phase_change(seed: u64, layers: usize, phase_len: usize) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let layer_sizes = model_layer_sizes(&mut rng, layers);
    let first = Zipf::new(&mut rng, layers, 1.0);
    let second = Zipf::new(&mut rng, layers, 1.0);
    let mut accesses: Vec<LayerId> = (0..phase_len).map(|_| first.sample(&mut rng)).collect();
    let passes = phase_len.div_ceil(layers.max(1));
    accesses.extend((0..passes).flat_map(|_| (0..layers as u32).map(LayerId)));
    accesses.extend((0..phase_len).map(|_| second.sample(&mut rng)));
    Trace {
        name: "phase_change".into(),
        layer_sizes,
        accesses,
        priorities: Vec::new(),
    }
}

/// `layers` layers; a random tenth are "hot" and marked priority 0.9. Each
/// access is, with probability 0.5, a uniformly chosen hot layer, otherwise
/// the next cold layer of a cyclic scan over the cold layers.
pub fn priority_hot(seed: u64, layers: usize, accesses: usize) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let layer_sizes = model_layer_sizes(&mut rng, layers);
    let mut ids: Vec<u32> = (0..layers as u32).collect();
    rng.shuffle(&mut ids);
    let hot_count = (layers / 10).max(1).min(layers);
    let (hot, cold) = ids.split_at(hot_count);
    let mut hot = hot.to_vec();
    hot.sort_unstable();
    let mut cold = cold.to_vec();
    cold.sort_unstable();
    let mut scan = 0usize;
    let accesses = (0..accesses)
        .map(|_| {
            if cold.is_empty() || rng.next_f64() < 0.5 {
                LayerId(
                    hot.get(rng.below(hot.len() as u64) as usize)
                        .copied()
                        .unwrap_or(0),
                )
            } else {
                let id = cold.get(scan % cold.len()).copied().unwrap_or(0);
                scan += 1;
                LayerId(id)
            }
        })
        .collect();
    Trace {
        name: "priority_hot".into(),
        layer_sizes,
        priorities: hot.iter().map(|&id| (LayerId(id), 0.9)).collect(),
        accesses,
    }
}

/// The six standard traces, in report order. The full set is four times
/// longer than the `quick` one.
pub fn standard_traces(seed: u64, quick: bool) -> Vec<Trace> {
    let k = if quick { 1 } else { 4 };
    vec![
        forward_passes(seed, 240, 40 * k),
        forward_backward(seed.wrapping_add(1), 240, 20 * k),
        zipf_experts(seed.wrapping_add(2), 1000, 100_000 * k, 1.0),
        uniform_random(seed.wrapping_add(3), 500, 50_000 * k),
        phase_change(seed.wrapping_add(4), 400, 20_000 * k),
        priority_hot(seed.wrapping_add(5), 500, 50_000 * k),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The quick standard traces; under Miri (which interprets every step)
    /// each generator once with a short trace.
    fn traces(seed: u64) -> Vec<Trace> {
        if cfg!(miri) {
            vec![
                forward_passes(seed, 24, 2),
                forward_backward(seed.wrapping_add(1), 24, 2),
                zipf_experts(seed.wrapping_add(2), 50, 200, 1.0),
                uniform_random(seed.wrapping_add(3), 50, 200),
                phase_change(seed.wrapping_add(4), 40, 100),
                priority_hot(seed.wrapping_add(5), 50, 200),
            ]
        } else {
            standard_traces(seed, true)
        }
    }

    #[test]
    fn generators_are_deterministic() {
        for (a, b) in traces(7).into_iter().zip(traces(7)) {
            assert_eq!(a.accesses, b.accesses, "{}", a.name);
            assert_eq!(a.layer_sizes, b.layer_sizes, "{}", a.name);
        }
    }

    #[test]
    fn ids_are_in_range() {
        for trace in traces(3) {
            assert!(!trace.accesses.is_empty(), "{}", trace.name);
            assert!(
                trace
                    .accesses
                    .iter()
                    .all(|id| id.index() < trace.layer_sizes.len()),
                "{}",
                trace.name
            );
        }
    }

    #[test]
    fn prng_below_is_in_range() {
        let mut rng = SplitMix64::new(1);
        assert!((0..1000).all(|_| rng.below(10) < 10));
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn everything_fits_means_only_cold_misses() {
        let trace = forward_passes(1, 20, 5);
        let result = simulate_policy(&trace, PolicyKind::Adaptive, 1.0).unwrap();
        assert_eq!(result.hits, result.accesses - 20);
    }
}
