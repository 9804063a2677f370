//! Furthest next use, **size-oblivious** (Belady's rule for equal sizes),
//! driven by a known future: evict the entry whose next use is furthest
//! away, and bypass a candidate whose next use is further than that of every
//! victim it would displace. Evaluation only; exposed as
//! [`PolicyKind::FurthestNextUse`](crate::PolicyKind::FurthestNextUse) (formerly
//! `PolicyKind::Belady`, renamed because it is not Belady's optimum once
//! sizes differ; `PolicyKind::from_name("belady")` still finds it).
//!
//! The future is given by [`Engine::set_future_trace`](crate::Engine::set_future_trace);
//! the `n`-th demand request after that call is assumed to be `trace[n]`
//! (the `now` argument is ignored). Entries never used again are evicted
//! first; priorities are ignored.
//!
//! **Not an optimum when layer sizes differ**: it counts requests, not bytes,
//! so it may keep one large layer where several smaller ones with the same
//! reuse would fit (a 1 GB embedding plus 6 blocks of 0.4 GB at a budget
//! where 9 blocks fit). The size-aware references — an upper bound on the
//! byte hit ratio of any policy and a feasible offline schedule — are in
//! [`offline`](crate::offline); state goals against those.

use std::collections::BTreeSet;

use super::{Candidate, Plan, Policy, Slot};
use crate::config::AccessKind;

const NEVER: u64 = u64::MAX;

/// Furthest-next-use eviction driven by a known future trace, ignoring sizes.
#[derive(Debug)]
pub(crate) struct UnsizedBeladyPolicy {
    /// `positions[offsets[i]..offsets[i + 1]]`: sorted trace positions of layer `i`.
    offsets: Vec<u32>,
    positions: Vec<u64>,
    /// Number of demand requests since the trace was set.
    cursor: u64,
    /// Next use recorded for each resident entry.
    next_use: Vec<u64>,
    by_next_use: BTreeSet<(u64, u32)>,
}

impl UnsizedBeladyPolicy {
    pub(crate) fn new(layer_count: usize) -> Self {
        UnsizedBeladyPolicy {
            offsets: vec![0; layer_count + 1],
            positions: Vec::new(),
            cursor: 0,
            next_use: vec![NEVER; layer_count],
            by_next_use: BTreeSet::new(),
        }
    }

    /// First use of `id` at a trace position `>= from`.
    fn next_use_from(&self, id: u32, from: u64) -> u64 {
        let i = id as usize;
        let (Some(&start), Some(&end)) = (self.offsets.get(i), self.offsets.get(i + 1)) else {
            return NEVER;
        };
        let Some(list) = self.positions.get(start as usize..end as usize) else {
            return NEVER;
        };
        let k = list.partition_point(|&p| p < from);
        list.get(k).copied().unwrap_or(NEVER)
    }

    fn reindex(&mut self, id: u32, next: u64) {
        let Some(slot) = self.next_use.get_mut(id as usize) else {
            return;
        };
        if self.by_next_use.remove(&(*slot, id)) {
            self.by_next_use.insert((next, id));
        }
        *slot = next;
    }
}

impl Policy for UnsizedBeladyPolicy {
    fn on_hit(&mut self, id: u32, _now: u64, _slots: &[Slot]) {
        let next = self.next_use_from(id, self.cursor.saturating_add(1));
        self.cursor = self.cursor.saturating_add(1);
        self.reindex(id, next);
    }

    fn on_miss(&mut self, id: u32, now: u64, slots: &[Slot]) {
        self.on_hit(id, now, slots);
    }

    fn plan(
        &mut self,
        candidate: Option<&Candidate>,
        needed: u64,
        _now: u64,
        slots: &[Slot],
    ) -> Plan {
        let candidate_next = candidate.map(|c| match c.kind {
            AccessKind::Demand => self.next_use.get(c.id as usize).copied().unwrap_or(NEVER),
            AccessKind::Prefetch => self.next_use_from(c.id, self.cursor),
        });
        let mut plan = Plan::default();
        for &(victim_next, id) in self.by_next_use.iter().rev() {
            let wins = || candidate_next.is_none_or(|c| c < victim_next);
            if plan.offer(id, slots, needed, wins) {
                break;
            }
        }
        plan
    }

    fn on_insert(&mut self, id: u32, _now: u64, _slots: &[Slot]) {
        if let Some(&next) = self.next_use.get(id as usize) {
            self.by_next_use.insert((next, id));
        }
    }

    fn on_remove(&mut self, id: u32, _slots: &[Slot]) {
        if let Some(&next) = self.next_use.get(id as usize) {
            self.by_next_use.remove(&(next, id));
        }
    }

    fn set_future_trace(&mut self, trace: &[u32]) {
        let layer_count = self.next_use.len();
        let mut counts = vec![0u32; layer_count + 1];
        for &id in trace {
            if let Some(c) = counts.get_mut(id as usize + 1) {
                *c += 1;
            }
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let mut fill = counts.clone();
        let mut positions = vec![0u64; trace.len()];
        for (position, &id) in trace.iter().enumerate() {
            if let Some(f) = fill.get_mut(id as usize)
                && let Some(p) = positions.get_mut(*f as usize)
            {
                *p = position as u64;
                *f += 1;
            }
        }
        positions.truncate(counts.last().copied().unwrap_or(0) as usize);
        self.offsets = counts;
        self.positions = positions;
        self.cursor = 0;
        let resident: Vec<u32> = self.by_next_use.iter().map(|&(_, id)| id).collect();
        self.by_next_use.clear();
        for id in resident {
            let next = self.next_use_from(id, 0);
            if let Some(slot) = self.next_use.get_mut(id as usize) {
                *slot = next;
            }
            self.by_next_use.insert((next, id));
        }
    }
}
