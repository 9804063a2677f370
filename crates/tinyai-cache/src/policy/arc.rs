//! ARC (Megiddo & Modha, "ARC: A Self-Tuning, Low Overhead Replacement
//! Cache", FAST 2003), adapted to bytes: a benchmark peer.
//!
//! Four LRU lists: `T1` (resident, seen once recently), `T2` (resident, seen
//! at least twice), and their ghosts `B1`, `B2` (ids of recent victims, no
//! data). A target `p` for the bytes of `T1` moves with ghost hits:
//!
//! | event | action |
//! | --- | --- |
//! | hit in `T1` or `T2` | move to the front (MRU) of `T2` |
//! | miss, id in `B1` | `p ← min(c, p + charge · max(1, bytes(B2)/bytes(B1)))`; admitted into `T2` |
//! | miss, id in `B2` | `p ← max(0, p − charge · max(1, bytes(B1)/bytes(B2)))`; admitted into `T2` |
//! | miss, in no list | admitted into `T1` |
//! | room needed (REPLACE) | evict the LRU of `T1` if `bytes(T1) > p`, or `bytes(T1) = p` and the miss was in `B2`; else the LRU of `T2` (the other list when the chosen one has nothing evictable) |
//! | victim from `T1` / `T2` | its id goes to the front of `B1` / `B2` |
//!
//! Sizes: the paper counts pages (`c` pages, every step moves `p` by a whole
//! page); here `c` is the budget in bytes, every list is measured in charged
//! bytes, and an adaptation moves `p` by the charge of the layer that was
//! missed (the byte-weighted form of the paper's δ). The directory bounds
//! become `bytes(T1) + bytes(B1) ≤ c` and `bytes(T1 ∪ T2 ∪ B1 ∪ B2) ≤ 2c`,
//! kept by dropping the oldest ghosts of `B1`, then of `B2`. Priorities are
//! ignored; every miss is admitted (as in the paper). Pinned entries are
//! skipped in place. A prefetched layer enters `T1` (a prefetch is not an
//! access, so it does not adapt `p`).

use super::queues::Queues;
use super::{Candidate, Plan, Policy, Slot};

const T1: usize = 0;
const T2: usize = 1;
const B1: usize = 2;
const B2: usize = 3;

/// Byte-sized ARC.
#[derive(Debug)]
pub(crate) struct ArcPolicy {
    lists: Queues<4>,
    /// Target bytes of `T1` (the paper's `p`).
    target_recent: u64,
    /// The cache size `c` (the engine's budget).
    capacity: u64,
    /// The last demand miss found in a ghost list: `(id, was in B2)`.
    ghost_miss: Option<(u32, bool)>,
}

impl ArcPolicy {
    pub(crate) fn new(layer_count: usize) -> Self {
        ArcPolicy {
            lists: Queues::new(layer_count),
            target_recent: 0,
            capacity: 0,
            ghost_miss: None,
        }
    }

    /// The current target bytes of `T1`.
    #[cfg(test)]
    pub(crate) fn target(&self) -> u64 {
        self.target_recent
    }

    /// Drops the oldest ghosts until the directory bounds hold.
    fn trim_ghosts(&mut self) {
        let c = self.capacity;
        while self.lists.bytes(T1) + self.lists.bytes(B1) > c {
            let Some(oldest) = self.lists.back(B1) else {
                break;
            };
            self.lists.remove(oldest);
        }
        let total = |l: &Queues<4>| l.bytes(T1) + l.bytes(T2) + l.bytes(B1) + l.bytes(B2);
        while total(&self.lists) > c.saturating_mul(2) {
            let Some(oldest) = self.lists.back(B2).or_else(|| self.lists.back(B1)) else {
                break;
            };
            self.lists.remove(oldest);
        }
    }

    /// The oldest evictable entry of `list` at or older than `from`
    /// (walking towards the front), skipping pinned and already chosen ones.
    fn next_evictable(
        &self,
        list: usize,
        from: Option<u32>,
        slots: &[Slot],
        chosen: &[u32],
    ) -> Option<u32> {
        let mut at = from.or_else(|| self.lists.back(list));
        while let Some(id) = at {
            let evictable = slots.get(id as usize).is_some_and(Slot::evictable);
            if evictable && !chosen.contains(&id) {
                return Some(id);
            }
            at = self.lists.newer(id);
        }
        None
    }
}

impl Policy for ArcPolicy {
    fn on_hit(&mut self, id: u32, _now: u64, slots: &[Slot]) {
        if matches!(self.lists.queue_of(id), Some(T1 | T2)) {
            let charge = slots.get(id as usize).map_or(0, |s| s.charge);
            self.lists.push_front(T2, id, charge);
        }
    }

    fn on_miss(&mut self, id: u32, _now: u64, slots: &[Slot]) {
        let charge = slots.get(id as usize).map_or(0, |s| s.charge) as f64;
        let b1 = self.lists.bytes(B1) as f64;
        let b2 = self.lists.bytes(B2) as f64;
        self.ghost_miss = match self.lists.queue_of(id) {
            Some(B1) => {
                let delta = charge * (b2 / b1.max(1.0)).max(1.0);
                self.target_recent = (self.target_recent as f64 + delta)
                    .min(self.capacity as f64)
                    .round() as u64;
                Some((id, false))
            }
            Some(B2) => {
                let delta = charge * (b1 / b2.max(1.0)).max(1.0);
                self.target_recent = (self.target_recent as f64 - delta).max(0.0).round() as u64;
                Some((id, true))
            }
            _ => None,
        };
    }

    fn plan(
        &mut self,
        _candidate: Option<&Candidate>,
        needed: u64,
        _now: u64,
        slots: &[Slot],
    ) -> Plan {
        let mut plan = Plan::default();
        let missed_in_b2 = self.ghost_miss.is_some_and(|(_, b2)| b2);
        let mut recent_bytes = self.lists.bytes(T1);
        let mut cursors = [None, None];
        loop {
            let recent = self.next_evictable(T1, cursors[0], slots, &plan.victims);
            let frequent = self.next_evictable(T2, cursors[1], slots, &plan.victims);
            let prefer_recent = recent_bytes > self.target_recent
                || (missed_in_b2 && recent_bytes == self.target_recent);
            let (list, id) = match (recent, frequent) {
                (Some(r), Some(_)) if prefer_recent => (T1, r),
                (_, Some(f)) => (T2, f),
                (Some(r), None) => (T1, r),
                (None, None) => break,
            };
            if let Some(cursor) = cursors.get_mut(list) {
                *cursor = Some(id);
            }
            if list == T1 {
                recent_bytes =
                    recent_bytes.saturating_sub(slots.get(id as usize).map_or(0, |s| s.charge));
            }
            if plan.offer(id, slots, needed, || true) {
                break;
            }
        }
        plan
    }

    fn on_insert(&mut self, id: u32, _now: u64, slots: &[Slot]) {
        let charge = slots.get(id as usize).map_or(0, |s| s.charge);
        let list = match self.ghost_miss {
            Some((ghost, _)) if ghost == id => T2,
            _ => T1,
        };
        self.ghost_miss = None;
        // A prefetched ghost leaves its ghost list too (push_front moves it).
        self.lists.push_front(list, id, charge);
        self.trim_ghosts();
    }

    fn on_remove(&mut self, id: u32, _slots: &[Slot]) {
        match self.lists.remove(id) {
            Some((T1, bytes)) => self.lists.push_front(B1, id, bytes),
            Some((T2, bytes)) => self.lists.push_front(B2, id, bytes),
            _ => {}
        }
        self.trim_ghosts();
    }

    fn set_budget(&mut self, budget: u64) {
        self.capacity = budget;
        self.target_recent = self.target_recent.min(budget);
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
    fn ghost_hits_move_the_target_both_ways() {
        // Four equal layers fit.
        let mut h = Harness::new(ArcPolicy::new(8), &[PAGE; 8], 4 * PAGE);
        for id in [0, 1, 0, 1, 2, 3] {
            h.access(id);
        }
        assert_eq!(h.policy.lists.queue_of(0), Some(T2));
        assert_eq!(h.policy.lists.queue_of(2), Some(T1));
        // p = 0 and T1 holds 2 pages: the LRU of T1 (2) goes, into B1.
        assert!(!h.access(4));
        assert_eq!(h.policy.lists.queue_of(2), Some(B1));
        // A B1 ghost hit: p grows by one layer, 2 enters T2; T1 (2 pages)
        // is above p, so its LRU (3) makes room.
        assert!(!h.access(2));
        assert_eq!(h.policy.target(), PAGE);
        assert_eq!(h.policy.lists.queue_of(2), Some(T2));
        assert_eq!(h.policy.lists.queue_of(3), Some(B1));
        // T1 = {4} is at p, so a plain miss takes the LRU of T2 (0) into B2.
        assert!(!h.access(5));
        assert_eq!(h.policy.lists.queue_of(0), Some(B2));
        // A B2 ghost hit lowers p again.
        assert!(!h.access(0));
        assert_eq!(h.policy.target(), 0);
        assert_eq!(h.policy.lists.queue_of(0), Some(T2));
    }

    /// The paper's case IV(A): when T1 alone fills the cache its LRU is
    /// dropped without a ghost (|T1| + |B1| ≤ c).
    #[test]
    fn a_full_t1_evicts_without_a_ghost() {
        let mut h = Harness::new(ArcPolicy::new(8), &[PAGE; 8], 4 * PAGE);
        for id in 0..5 {
            h.access(id);
        }
        assert_eq!(h.policy.lists.queue_of(0), None);
        assert_eq!(h.policy.lists.bytes(B1), 0);
    }

    #[test]
    fn directory_bounds_hold_with_unequal_sizes() {
        let charges: Vec<u64> = (0..64).map(|i| PAGE * (1 + i % 7)).collect();
        let budget = 40 * PAGE;
        let mut h = Harness::new(ArcPolicy::new(64), &charges, budget);
        let mut state = 7u64;
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let id = ((state >> 33) % 64) as u32;
            h.access(id);
            let l = &h.policy.lists;
            assert!(l.bytes(T1) + l.bytes(B1) <= budget);
            assert!(l.bytes(T1) + l.bytes(T2) + l.bytes(B1) + l.bytes(B2) <= 2 * budget);
            assert_eq!(l.bytes(T1) + l.bytes(T2), h.usage);
            assert!(h.policy.target() <= budget);
        }
    }
}
