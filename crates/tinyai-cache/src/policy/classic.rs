//! The original TinyAI C eviction score, kept for compatibility and comparison.
//!
//! `score = 0.6*priority + 0.3*recency + 0.1*frequency` with
//! `recency = 1/(1 + age_ms/1000)` (the caller's `now` is read as
//! milliseconds) and `frequency = access_count/100`; the lowest score is
//! evicted first (ties: lower id first). Every miss is admitted, as in C.
//!
//! Because recency depends on `now`, the order of two entries can change
//! while neither is accessed, so no index can be maintained: a miss that
//! needs an eviction scores all resident entries, `O(r log r)` for `r`
//! resident entries. Hits are `O(1)`. Access counts persist across
//! evictions; prefetches are not counted as accesses.

use super::{Candidate, Plan, Policy, Slot};

#[derive(Clone, Copy, Debug, Default)]
struct History {
    last: u64,
    count: u64,
    /// Index into `resident` while resident.
    position: u32,
}

/// Score-ordered eviction, recomputed at each eviction.
#[derive(Debug)]
pub(crate) struct ClassicPolicy {
    history: Vec<History>,
    resident: Vec<u32>,
}

impl ClassicPolicy {
    pub(crate) fn new(layer_count: usize) -> Self {
        ClassicPolicy {
            history: vec![History::default(); layer_count],
            resident: Vec::new(),
        }
    }

    fn record(&mut self, id: u32, now: u64) {
        if let Some(h) = self.history.get_mut(id as usize) {
            h.last = now;
            h.count = h.count.saturating_add(1);
        }
    }

    /// The C score of `id` at time `now`.
    pub(crate) fn score(priority: f32, last: u64, count: u64, now: u64) -> f64 {
        let age_ms = now.saturating_sub(last) as f64;
        let recency = 1.0 / (1.0 + age_ms / 1000.0);
        let frequency = count as f64 / 100.0;
        0.6 * f64::from(priority) + 0.3 * recency + 0.1 * frequency
    }
}

impl Policy for ClassicPolicy {
    fn on_hit(&mut self, id: u32, now: u64, _slots: &[Slot]) {
        self.record(id, now);
    }

    fn on_miss(&mut self, id: u32, now: u64, _slots: &[Slot]) {
        self.record(id, now);
    }

    fn plan(
        &mut self,
        _candidate: Option<&Candidate>,
        needed: u64,
        now: u64,
        slots: &[Slot],
    ) -> Plan {
        let mut scored: Vec<(f64, u32)> = self
            .resident
            .iter()
            .filter_map(|&id| {
                let slot = slots.get(id as usize)?;
                let h = self.history.get(id as usize)?;
                slot.evictable()
                    .then(|| (Self::score(slot.priority, h.last, h.count, now), id))
            })
            .collect();
        scored.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut plan = Plan::default();
        for (_, id) in scored {
            if plan.offer(id, slots, needed, || true) {
                break;
            }
        }
        plan
    }

    fn on_insert(&mut self, id: u32, _now: u64, _slots: &[Slot]) {
        if let Some(h) = self.history.get_mut(id as usize) {
            h.position = self.resident.len() as u32;
            self.resident.push(id);
        }
    }

    fn on_remove(&mut self, id: u32, _slots: &[Slot]) {
        let Some(position) = self.history.get(id as usize).map(|h| h.position as usize) else {
            return;
        };
        if self.resident.get(position) != Some(&id) {
            return;
        }
        self.resident.swap_remove(position);
        if let Some(&moved) = self.resident.get(position)
            && let Some(h) = self.history.get_mut(moved as usize)
        {
            h.position = position as u32;
        }
    }
}
