//! S3-FIFO (Yang, Zhang, Qiu, Yue & Vinayak, "FIFO queues are all you need
//! for cache eviction", SOSP 2023), with queues sized in bytes: a benchmark
//! peer.
//!
//! Three FIFO queues: a small one `S` (10% of the budget), a main one `M`
//! (the rest) and a ghost one `G` (ids of entries evicted from `S`, no data,
//! at most as many bytes as `M`'s share). Each resident entry has a 2-bit
//! frequency counter (0..=3).
//!
//! | event | action |
//! | --- | --- |
//! | hit | `freq ← min(freq + 1, 3)` |
//! | miss, id in `G` | leaves `G`; admitted at the head of `M` (`freq = 0`) |
//! | miss, otherwise | admitted at the head of `S` (`freq = 0`) |
//! | room needed | `evictS` while `bytes(S) ≥ 10%` of the budget, else `evictM` |
//! | `evictS` | tail `t` of `S`: accessed again since its insertion (`freq ≥ 1`) → moved to the head of `M` with its counter cleared; else evicted, its id to the head of `G` |
//! | `evictM` | tail `t` of `M`: `freq > 0` → reinserted at the head with `freq − 1`; else evicted |
//!
//! Sizes: the paper sizes `S`, `M` and `G` in objects; here `S`'s 10% and
//! `G`'s bound (the bytes of `M`'s 90% share, the paper's "as many entries as
//! `M`") are in charged bytes, and the oldest ghosts are dropped beyond it.
//! The paper's rule "moved to `M` if accessed more than once" counts the
//! inserting request, i.e. one hit while in `S`. Priorities are ignored;
//! every miss is admitted. Pinned entries are skipped in place.
//!
//! Planning moves entries like the paper's `evictS`/`evictM` loops do
//! (promotions from `S` to `M`, reinsertions in `M`): those change which
//! queue an entry is in, never which entries are resident, and a plan that
//! is repeated (a refused claim) continues from where the last one stopped,
//! like a clock hand.

use super::queues::Queues;
use super::{Candidate, Plan, Policy, Slot};

const SMALL: usize = 0;
const MAIN: usize = 1;
const GHOST: usize = 2;

/// Largest value of the frequency counter (2 bits).
const MAX_FREQ: u8 = 3;

/// Byte-sized S3-FIFO.
#[derive(Debug)]
pub(crate) struct S3FifoPolicy {
    queues: Queues<3>,
    freq: Vec<u8>,
    budget: u64,
    /// The last demand miss that was found in `G` (admitted into `M`).
    ghost_miss: Option<u32>,
}

impl S3FifoPolicy {
    pub(crate) fn new(layer_count: usize) -> Self {
        S3FifoPolicy {
            queues: Queues::new(layer_count),
            freq: vec![0; layer_count],
            budget: 0,
            ghost_miss: None,
        }
    }

    fn small_share(&self) -> u64 {
        self.budget / 10
    }

    fn trim_ghosts(&mut self) {
        let limit = self.budget - self.small_share();
        while self.queues.bytes(GHOST) > limit {
            let Some(oldest) = self.queues.back(GHOST) else {
                break;
            };
            self.queues.remove(oldest);
        }
    }

    /// The oldest entry of `queue` that is neither pinned nor chosen.
    fn oldest_evictable(&self, queue: usize, slots: &[Slot], chosen: &[u32]) -> Option<u32> {
        let mut at = self.queues.back(queue);
        while let Some(id) = at {
            let evictable = slots.get(id as usize).is_some_and(Slot::evictable);
            if evictable && !chosen.contains(&id) {
                return Some(id);
            }
            at = self.queues.newer(id);
        }
        None
    }

    /// `evictS`: the next victim from `S`, promoting accessed entries to `M`.
    fn evict_small(&mut self, slots: &[Slot], chosen: &[u32]) -> Option<u32> {
        while let Some(id) = self.oldest_evictable(SMALL, slots, chosen) {
            let freq = self.freq.get(id as usize).copied().unwrap_or(0);
            if freq >= 1 {
                let charge = slots.get(id as usize).map_or(0, |s| s.charge);
                self.queues.push_front(MAIN, id, charge);
                if let Some(f) = self.freq.get_mut(id as usize) {
                    *f = 0;
                }
            } else {
                return Some(id);
            }
        }
        None
    }

    /// `evictM`: the next victim from `M`, reinserting accessed entries.
    fn evict_main(&mut self, slots: &[Slot], chosen: &[u32]) -> Option<u32> {
        // Each reinsertion lowers a counter, so at most MAX_FREQ + 1 rounds.
        let mut budget_steps = (usize::from(MAX_FREQ) + 1) * self.queues.len(MAIN) + 1;
        while let Some(id) = self.oldest_evictable(MAIN, slots, chosen) {
            let freq = self.freq.get(id as usize).copied().unwrap_or(0);
            if freq == 0 || budget_steps == 0 {
                return Some(id);
            }
            budget_steps -= 1;
            let charge = slots.get(id as usize).map_or(0, |s| s.charge);
            self.queues.push_front(MAIN, id, charge);
            if let Some(f) = self.freq.get_mut(id as usize) {
                *f = freq - 1;
            }
        }
        None
    }
}

impl Policy for S3FifoPolicy {
    fn on_hit(&mut self, id: u32, _now: u64, _slots: &[Slot]) {
        if let Some(f) = self.freq.get_mut(id as usize) {
            *f = (*f + 1).min(MAX_FREQ);
        }
    }

    fn on_miss(&mut self, id: u32, _now: u64, _slots: &[Slot]) {
        self.ghost_miss = (self.queues.queue_of(id) == Some(GHOST)).then_some(id);
    }

    fn plan(
        &mut self,
        _candidate: Option<&Candidate>,
        needed: u64,
        _now: u64,
        slots: &[Slot],
    ) -> Plan {
        let mut plan = Plan::default();
        let share = self.small_share();
        let mut chosen_small = 0u64;
        loop {
            let small_bytes = self.queues.bytes(SMALL).saturating_sub(chosen_small);
            let mut victim = None;
            if small_bytes >= share {
                victim = self.evict_small(slots, &plan.victims);
                if victim.is_some() {
                    chosen_small += victim
                        .and_then(|id| slots.get(id as usize))
                        .map_or(0, |s| s.charge);
                }
            }
            if victim.is_none() {
                victim = self.evict_main(slots, &plan.victims);
            }
            if victim.is_none() {
                // M has nothing evictable: fall back to S whatever its size.
                victim = self.evict_small(slots, &plan.victims);
                if victim.is_none() {
                    // Promotions may have filled M: one more look.
                    victim = self.evict_main(slots, &plan.victims);
                }
            }
            let Some(id) = victim else {
                break;
            };
            if plan.offer(id, slots, needed, || true) {
                break;
            }
        }
        plan
    }

    fn on_insert(&mut self, id: u32, _now: u64, slots: &[Slot]) {
        let charge = slots.get(id as usize).map_or(0, |s| s.charge);
        let queue = if self.ghost_miss == Some(id) {
            MAIN
        } else {
            SMALL
        };
        self.ghost_miss = None;
        if let Some(f) = self.freq.get_mut(id as usize) {
            *f = 0;
        }
        // A prefetched ghost leaves `G` too (push_front moves it).
        self.queues.push_front(queue, id, charge);
    }

    fn on_remove(&mut self, id: u32, _slots: &[Slot]) {
        if let Some((SMALL, bytes)) = self.queues.remove(id) {
            self.queues.push_front(GHOST, id, bytes);
            self.trim_ghosts();
        }
    }

    fn set_budget(&mut self, budget: u64) {
        self.budget = budget;
        self.trim_ghosts();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::policy::harness::Harness;

    const PAGE: u64 = 4096;

    #[test]
    fn one_hit_wonders_go_to_the_ghost_and_return_to_main() {
        // Ten equal layers fit: S holds one layer's worth (10%).
        let mut h = Harness::new(S3FifoPolicy::new(32), &[PAGE; 32], 10 * PAGE);
        for id in 0..10 {
            h.access(id);
        }
        assert!(h.access(3)); // 3 is hit once while in S
        assert!(!h.access(10)); // S is over its share: 0 (never hit) is evicted to G
        assert_eq!(h.policy.queues.queue_of(0), Some(GHOST));
        assert!(!h.slots[0].resident);
        // 1 and 2 go too, then 3 (hit) is promoted to M instead of evicted.
        h.access(11);
        h.access(12);
        h.access(13);
        assert!(h.slots[3].resident);
        assert_eq!(h.policy.queues.queue_of(3), Some(MAIN));
        assert!(!h.access(0)); // ghost hit: admitted into M
        assert_eq!(h.policy.queues.queue_of(0), Some(MAIN));
    }

    #[test]
    fn queues_account_for_residents_and_ghosts_stay_bounded() {
        let charges: Vec<u64> = (0..64).map(|i| PAGE * (1 + i % 7)).collect();
        let budget = 40 * PAGE;
        let mut h = Harness::new(S3FifoPolicy::new(64), &charges, budget);
        let mut state = 11u64;
        for step in 0..20_000u64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let id = if step % 3 == 0 {
                (step / 3 % 64) as u32
            } else {
                ((state >> 33) % 16) as u32
            };
            h.access(id);
            let q = &h.policy.queues;
            assert_eq!(q.bytes(SMALL) + q.bytes(MAIN), h.usage);
            assert!(q.bytes(GHOST) <= budget - budget / 10);
        }
    }
}
