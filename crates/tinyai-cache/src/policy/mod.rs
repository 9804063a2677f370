//! Eviction policies behind one internal trait.
//!
//! The [`Engine`](crate::Engine) owns the per-layer facts every policy needs
//! (charge, residency, pin count, priority) in a dense table of `Slot`s and
//! enforces the budget; a policy only keeps its own history and ordering
//! structures and answers two questions:
//!
//! 1. *in which order* would it evict the resident entries, and
//! 2. *would it rather keep the candidate* than a given victim (admission).
//!
//! | policy | module | ordering structure | cost per access |
//! | --- | --- | --- | --- |
//! | `Lru` | [`lru`] | `lru::LruCache` linked hash map | O(1) |
//! | `TinyAiClassic` | [`classic`] | none (scores depend on `now`) | O(1) hit, O(r log r) eviction |
//! | `Adaptive` | [`adaptive`] | (priority, size) classes × (intrusive LRU list + lazy-deletion binary heaps by reuse distance and due time) | amortised O(log r) |
//! | `Belady` (furthest next use, size-oblivious) | [`belady`] | `BTreeSet` by next use | O(log r) |
//! | `Arc` (benchmark peer, bytes) | [`arc`] | four intrusive LRU lists ([`queues`]) | O(1) hit, O(victims + pinned) eviction |
//! | `S3Fifo` (benchmark peer, bytes) | [`s3fifo`] | three intrusive FIFO queues ([`queues`]) | O(1) hit, amortised O(1) eviction |

pub mod adaptive;
pub mod arc;
pub mod belady;
pub mod classic;
pub mod lru;
pub mod queues;
pub mod s3fifo;

use crate::config::AccessKind;

/// The engine's per-layer record, shared read-only with the policies.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    /// `EngineConfig::charge_for(size)`.
    pub(crate) charge: u64,
    /// Priority in `0.0..=1.0`.
    pub(crate) priority: f32,
    /// Number of outstanding pins; a pinned entry is never a victim.
    pub(crate) pin_count: u32,
    /// Whether the entry is resident (charged).
    pub(crate) resident: bool,
    /// `remove` was called while pinned: remove at the last unpin.
    pub(crate) remove_pending: bool,
}

impl Slot {
    #[inline]
    pub(crate) fn evictable(&self) -> bool {
        self.resident && self.pin_count == 0
    }
}

/// A non-resident layer asking to be admitted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    pub(crate) id: u32,
    pub(crate) kind: AccessKind,
    pub(crate) priority: f32,
}

/// Victims chosen by a policy, in eviction order.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) victims: Vec<u32>,
    pub(crate) freed: u64,
    /// The policy prefers keeping some victim over the candidate.
    pub(crate) declined: bool,
}

impl Plan {
    /// Offers the next victim in eviction order; returns `true` when enough
    /// has been gathered (or the plan is dead) and iteration should stop.
    #[inline]
    pub(crate) fn offer(
        &mut self,
        id: u32,
        slots: &[Slot],
        needed: u64,
        candidate_wins: impl FnOnce() -> bool,
    ) -> bool {
        if self.freed >= needed {
            return true;
        }
        let Some(slot) = slots.get(id as usize) else {
            return false;
        };
        if !slot.evictable() {
            return false;
        }
        if !candidate_wins() {
            self.declined = true;
            return true;
        }
        self.freed = self.freed.saturating_add(slot.charge);
        self.victims.push(id);
        self.freed >= needed
    }
}

/// What every eviction policy implements. All methods are deterministic.
pub(crate) trait Policy: std::fmt::Debug + Send {
    /// A demand access of a resident entry.
    fn on_hit(&mut self, id: u32, now: u64, slots: &[Slot]);
    /// A demand access of a non-resident layer, recorded before planning.
    fn on_miss(&mut self, id: u32, now: u64, slots: &[Slot]);
    /// Chooses unpinned victims, in eviction order, until `needed` bytes are
    /// freed. With a candidate, stops with `declined` as soon as the policy
    /// prefers a victim over the candidate. Must not change eviction state.
    fn plan(
        &mut self,
        candidate: Option<&Candidate>,
        needed: u64,
        now: u64,
        slots: &[Slot],
    ) -> Plan;
    /// `id` became resident (`slots[id].resident` is already true).
    fn on_insert(&mut self, id: u32, now: u64, slots: &[Slot]);
    /// `id` stopped being resident (evicted or removed).
    fn on_remove(&mut self, id: u32, slots: &[Slot]);
    /// The priority of `id` changed from `old` (the slot holds the new one).
    fn on_priority_change(&mut self, _id: u32, _old: f32, _slots: &[Slot]) {}
    /// The known cyclic access order (a hint), or `None` to forget it.
    fn set_access_order(&mut self, _order: Option<&[u32]>) {}
    /// The future demand trace (used by Belady only).
    fn set_future_trace(&mut self, _trace: &[u32]) {}
    /// The engine's budget in bytes: at creation and at every change (used
    /// by the policies that size their queues from it: ARC, S3-FIFO).
    fn set_budget(&mut self, _budget: u64) {}
}

/// A minimal engine loop over one policy, for the policies' unit tests: the
/// engine's order of calls (`on_miss`, `plan`, `on_remove`, `on_insert`)
/// with every entry unpinned, checking the budget after every access.
#[cfg(test)]
pub(crate) mod harness {
    use super::{Candidate, Policy, Slot};
    use crate::config::AccessKind;

    pub(crate) struct Harness<P: Policy> {
        pub(crate) policy: P,
        pub(crate) slots: Vec<Slot>,
        pub(crate) usage: u64,
        pub(crate) budget: u64,
    }

    impl<P: Policy> Harness<P> {
        pub(crate) fn new(mut policy: P, charges: &[u64], budget: u64) -> Self {
            policy.set_budget(budget);
            let slots = charges
                .iter()
                .map(|&charge| Slot {
                    charge,
                    priority: 0.5,
                    pin_count: 0,
                    resident: false,
                    remove_pending: false,
                })
                .collect();
            Harness {
                policy,
                slots,
                usage: 0,
                budget,
            }
        }

        /// One demand access; returns whether it hit.
        pub(crate) fn access(&mut self, id: u32) -> bool {
            let i = id as usize;
            if self.slots[i].resident {
                self.policy.on_hit(id, 0, &self.slots);
                return true;
            }
            self.policy.on_miss(id, 0, &self.slots);
            let charge = self.slots[i].charge;
            if charge > self.budget {
                return false;
            }
            let needed = (self.usage + charge).saturating_sub(self.budget);
            if needed > 0 {
                let candidate = Candidate {
                    id,
                    kind: AccessKind::Demand,
                    priority: 0.5,
                };
                let plan = self.policy.plan(Some(&candidate), needed, 0, &self.slots);
                if plan.declined || plan.freed < needed {
                    return false;
                }
                for victim in plan.victims {
                    let slot = &mut self.slots[victim as usize];
                    assert!(slot.resident, "victim {victim} is not resident");
                    slot.resident = false;
                    self.usage -= slot.charge;
                    self.policy.on_remove(victim, &self.slots);
                }
            }
            self.slots[i].resident = true;
            self.usage += charge;
            self.policy.on_insert(id, 0, &self.slots);
            assert!(
                self.usage <= self.budget,
                "usage {} > budget {}",
                self.usage,
                self.budget
            );
            false
        }
    }
}
