//! Plain data types shared by the engine, the policies and the simulator.

use crate::error::CacheError;

/// Identifies a layer: layer `i` of the slice given to
/// [`Engine::new`](crate::Engine::new) is `LayerId(i)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerId(pub u32);

impl LayerId {
    /// The id as a `usize` index.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Which eviction policy an [`Engine`](crate::Engine) uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Plain least-recently-used, built on the `lru` crate. Ignores priorities;
    /// always admits (evicting least recently used entries).
    Lru,
    /// The original TinyAI C score `0.6*priority + 0.3*recency + 0.1*frequency`
    /// (lowest evicted first), for compatibility and comparison. Always admits.
    /// Costs `O(resident log resident)` per miss that needs an eviction.
    TinyAiClassic,
    /// The default: a reuse-distance estimate (LIRS-like) weighted by size and
    /// priority, with Belady-style admission, which keeps a stable resident set
    /// on cyclic scans larger than the budget and behaves like a strong
    /// recency/frequency policy on skewed random access; the weight of an
    /// entry's age adapts to the workload (ghost evidence), and exchanges that
    /// pack the budget better are made on near ties. See
    /// [`policy::adaptive`](crate::policy::adaptive).
    Adaptive,
    /// Furthest next use, **size-oblivious** ("Belady, unsized"), given the
    /// future trace ([`Engine::set_future_trace`](crate::Engine::set_future_trace));
    /// evaluation only. Optimal only when all layers have the same charge;
    /// with unequal sizes it is a heuristic, not an optimum: compare against
    /// [`offline::upper_bound`](crate::offline::upper_bound) (a true upper
    /// bound on byte hit ratio) and [`offline::FlowSchedule`](crate::offline::FlowSchedule)
    /// (a feasible size-aware offline schedule). Formerly `Belady`: renamed
    /// because it is Belady's optimum only for equal sizes ([`PolicyKind::Belady`]
    /// is kept as a deprecated alias, and [`PolicyKind::from_name`] still
    /// accepts `"belady"`).
    FurthestNextUse,
    /// ARC (Megiddo & Modha 2003) with lists and target measured in charged
    /// bytes: a benchmark peer, written from the paper. Ignores priorities;
    /// always admits. See [`policy::arc`](crate::policy::arc).
    Arc,
    /// S3-FIFO (Yang et al., SOSP 2023) with small, main and ghost queues
    /// sized in charged bytes: a benchmark peer, written from the paper.
    /// Ignores priorities; always admits. See [`policy::s3fifo`](crate::policy::s3fifo).
    S3Fifo,
}

impl PolicyKind {
    /// All policies, in a stable order.
    pub const ALL: [PolicyKind; 6] = [
        PolicyKind::Lru,
        PolicyKind::TinyAiClassic,
        PolicyKind::Adaptive,
        PolicyKind::FurthestNextUse,
        PolicyKind::Arc,
        PolicyKind::S3Fifo,
    ];

    /// The snake_case name used in reports (`lru`, `tinyai_classic`,
    /// `adaptive`, `furthest_next_use`, `arc`, `s3_fifo`).
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Lru => "lru",
            PolicyKind::TinyAiClassic => "tinyai_classic",
            PolicyKind::Adaptive => "adaptive",
            PolicyKind::FurthestNextUse => "furthest_next_use",
            PolicyKind::Arc => "arc",
            PolicyKind::S3Fifo => "s3_fifo",
        }
    }

    /// The old name of [`PolicyKind::FurthestNextUse`]: it is Belady's
    /// optimum only when every layer has the same charge.
    #[deprecated(
        since = "0.1.0",
        note = "renamed FurthestNextUse: size-oblivious, not an optimum with unequal sizes (see tinyai_cache::offline)"
    )]
    #[allow(non_upper_case_globals)]
    pub const Belady: PolicyKind = PolicyKind::FurthestNextUse;

    /// The policy of a [`name`](PolicyKind::name), if any (`"belady"`, the
    /// old name of `furthest_next_use`, is accepted too).
    pub fn from_name(name: &str) -> Option<PolicyKind> {
        if name == "belady" {
            return Some(PolicyKind::FurthestNextUse);
        }
        PolicyKind::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Configuration of an [`Engine`](crate::Engine).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Maximum sum of charges of resident entries, in bytes. Must be > 0.
    pub budget_bytes: u64,
    /// Smallest charge of any layer, in bytes (the C loader's `minLayerCacheSize`).
    pub min_layer_charge: u64,
    /// Sizes are rounded up to a multiple of this. Must be a non-zero power of two.
    pub page_size: u64,
    /// The eviction policy.
    pub policy: PolicyKind,
}

impl Default for EngineConfig {
    /// The TinyAI C defaults: 256 MiB budget, 4 KiB minimum charge and pages,
    /// and the [`Adaptive`](PolicyKind::Adaptive) policy (`adaptiveCaching` on).
    fn default() -> Self {
        EngineConfig {
            budget_bytes: 256 << 20,
            min_layer_charge: 4096,
            page_size: 4096,
            policy: PolicyKind::Adaptive,
        }
    }
}

impl EngineConfig {
    /// Checks the invariants documented on each field.
    pub fn validate(&self) -> Result<(), CacheError> {
        if self.budget_bytes == 0 {
            return Err(CacheError::ZeroBudget);
        }
        if !self.page_size.is_power_of_two() {
            return Err(CacheError::InvalidPageSize {
                page_size: self.page_size,
            });
        }
        Ok(())
    }

    /// The charge of a layer of `size` bytes:
    /// `max(min_layer_charge, size rounded up to page_size)`.
    ///
    /// Rounding saturates at `u64::MAX` (such a layer can never fit and is
    /// always bypassed). A layer of size 0 is charged `min_layer_charge`.
    /// Assumes a validated config (a power-of-two page size).
    pub fn charge_for(&self, size: u64) -> u64 {
        let mask = self.page_size.saturating_sub(1);
        let rounded = size.checked_add(mask).map_or(u64::MAX, |s| s & !mask);
        rounded.max(self.min_layer_charge)
    }
}

/// Why a layer is being requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// The layer is needed now. Recorded as an access in the policy's history.
    Demand,
    /// The caller would like to load the layer ahead of use. Not recorded as an
    /// access; admitted only if the policy values the layer more than every
    /// victim it would displace (never displacing a pinned entry).
    Prefetch,
}

/// The engine's answer to [`Engine::request`](crate::Engine::request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Already resident; the access was recorded.
    Hit,
    /// Now resident and charged; the caller must drop the memory of `victims`
    /// (already removed from the engine).
    Admit {
        /// Entries evicted to make room, in eviction order.
        victims: Vec<LayerId>,
    },
    /// Do not cache (larger than the budget, the policy declined, or pinned
    /// entries leave no room). Nothing is charged. For a Prefetch request this
    /// means "do not prefetch".
    Bypass,
}

#[cfg(test)]
mod name_tests {
    use super::PolicyKind;

    #[test]
    fn every_name_round_trips_and_the_old_belady_name_still_resolves() {
        for policy in PolicyKind::ALL {
            assert_eq!(PolicyKind::from_name(policy.name()), Some(policy));
        }
        assert_eq!(
            PolicyKind::from_name("belady"),
            Some(PolicyKind::FurthestNextUse)
        );
        #[allow(deprecated)]
        let old = PolicyKind::Belady;
        assert_eq!(old, PolicyKind::FurthestNextUse);
        assert_eq!(PolicyKind::from_name("optimal"), None);
    }
}
