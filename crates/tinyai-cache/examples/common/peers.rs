//! The third-party peers of the cache examples: moka (W-TinyLFU) and
//! quick_cache as [`CacheModel`]s weighed by the engine's charges, with a
//! fixed-seed hasher so runs repeat. Included by `hit_ratios` and `workloads`.

use std::hash::{BuildHasher, DefaultHasher, Hasher};

use tinyai_cache::sim::{self, CacheModel, SimResult, Trace};
use tinyai_cache::{LayerId, PolicyKind};

/// std's SipHash-1-3 (fixed zero keys) with `seed` hashed first: runs repeat
/// for a given seed, and different seeds sample the peers' hash sensitivity.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerHasher {
    pub seed: u64,
}

impl BuildHasher for PeerHasher {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        let mut hasher = DefaultHasher::new();
        hasher.write_u64(self.seed);
        hasher
    }
}

/// moka's sync cache; pending maintenance is run after every insert so the
/// replay is (close to) deterministic.
pub struct Moka {
    cache: moka::sync::Cache<u32, u32, PeerHasher>,
    weights: Vec<u32>,
}

impl CacheModel for Moka {
    fn access(&mut self, id: LayerId, _position: u64) -> bool {
        if self.cache.get(&id.0).is_some() {
            return true;
        }
        let weight = self.weights.get(id.index()).copied().unwrap_or(1);
        self.cache.insert(id.0, weight);
        self.cache.run_pending_tasks();
        false
    }
}

#[derive(Clone, Copy, Debug)]
pub struct ChargeWeighter;

impl quick_cache::Weighter<u32, u64> for ChargeWeighter {
    fn weight(&self, _key: &u32, charge: &u64) -> u64 {
        *charge
    }
}

pub struct QuickCache {
    cache: quick_cache::unsync::Cache<u32, u64, ChargeWeighter, PeerHasher>,
    charges: Vec<u64>,
}

impl CacheModel for QuickCache {
    fn access(&mut self, id: LayerId, _position: u64) -> bool {
        if self.cache.get(&id.0).is_some() {
            return true;
        }
        let charge = self.charges.get(id.index()).copied().unwrap_or(1);
        self.cache.insert(id.0, charge);
        false
    }
}

/// Replays `trace` through the peer `name` (`moka` or `quick_cache`) with
/// `fraction` of the model's charges as the budget; `None` for other names.
pub fn run_peer(trace: &Trace, name: &str, fraction: f64, hasher: PeerHasher) -> Option<SimResult> {
    let config = trace.config(PolicyKind::Lru, fraction);
    let charges: Vec<u64> = trace
        .layer_sizes
        .iter()
        .map(|&s| config.charge_for(s))
        .collect();
    match name {
        "moka" => {
            let weights = charges
                .iter()
                .map(|&c| u32::try_from(c).unwrap_or(u32::MAX))
                .collect();
            let weigher = |_key: &u32, weight: &u32| *weight;
            let cache = moka::sync::Cache::builder()
                .max_capacity(config.budget_bytes)
                .weigher(weigher)
                .build_with_hasher(hasher);
            Some(sim::simulate(trace, &mut Moka { cache, weights }))
        }
        "quick_cache" => {
            let average = (config.budget_bytes / charges.len().max(1) as u64).max(1);
            let estimated_items = (config.budget_bytes / average).max(1) as usize;
            let cache = quick_cache::unsync::Cache::with(
                estimated_items,
                config.budget_bytes,
                ChargeWeighter,
                hasher,
                Default::default(),
            );
            Some(sim::simulate(trace, &mut QuickCache { cache, charges }))
        }
        _ => None,
    }
}
