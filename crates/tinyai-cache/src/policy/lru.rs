//! Plain LRU on top of the `lru` crate: priorities are ignored and every miss
//! is admitted (evicting the least recently used unpinned entries).
//! A prefetched entry is inserted as most recently used.

use super::{Candidate, Plan, Policy, Slot};

/// Least-recently-used ordering of the resident entries.
pub(crate) struct LruPolicy {
    order: ::lru::LruCache<u32, ()>,
}

impl std::fmt::Debug for LruPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LruPolicy")
            .field("resident", &self.order.len())
            .finish()
    }
}

impl LruPolicy {
    pub(crate) fn new() -> Self {
        LruPolicy {
            order: ::lru::LruCache::unbounded(),
        }
    }
}

impl Policy for LruPolicy {
    fn on_hit(&mut self, id: u32, _now: u64, _slots: &[Slot]) {
        self.order.promote(&id);
    }

    fn on_miss(&mut self, _id: u32, _now: u64, _slots: &[Slot]) {}

    fn plan(
        &mut self,
        _candidate: Option<&Candidate>,
        needed: u64,
        _now: u64,
        slots: &[Slot],
    ) -> Plan {
        let mut plan = Plan::default();
        for (&id, ()) in self.order.iter().rev() {
            if plan.offer(id, slots, needed, || true) {
                break;
            }
        }
        plan
    }

    fn on_insert(&mut self, id: u32, _now: u64, _slots: &[Slot]) {
        self.order.put(id, ());
    }

    fn on_remove(&mut self, id: u32, _slots: &[Slot]) {
        self.order.pop(&id);
    }
}
