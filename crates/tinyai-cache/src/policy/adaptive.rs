//! The default policy: priority classes, then a reuse-distance estimate with
//! Belady-style admission.
//!
//! # Model
//!
//! The policy keeps its own logical clock, advanced by one on every demand
//! access (the caller's `now` is not used, so any `now` units work). For every
//! layer, resident or not, it remembers the clock of the last demand access
//! and the *inter-reference recency* `irr`: the number of accesses between
//! its last two demand accesses (∞ for a layer seen once), the quantity LIRS
//! ranks by. A resident entry's expected distance to its next use at clock
//! `t` is
//!
//! ```text
//! E = max(irr, t - last)
//! ```
//!
//! i.e. its last reuse distance, unless it has already gone unused for longer
//! than that, in which case its age is the better (more pessimistic)
//! estimate. This is what lets the policy forget a previous phase.
//!
//! # Eviction order
//!
//! 1. Lower priority first: resident entries are grouped into classes by
//!    exact priority, and an entry is never evicted while an unpinned entry
//!    of strictly lower priority is resident.
//! 2. Within a class, largest `E` first (ties: larger `irr` first, then among
//!    layers seen once the oldest first, then the larger id).
//!
//! # Admission (Belady-style)
//!
//! A missed layer is admitted without conditions while there is room. When
//! room must be made, the candidate must *beat every victim* it displaces:
//! its priority is higher, or the priority is equal and its `E` (its just
//! measured `irr`) is strictly smaller. Otherwise the decision is
//! [`Bypass`](crate::Decision::Bypass) and nothing is evicted.
//!
//! * **Cyclic or sequential scans larger than the budget**: every layer has
//!   the same `irr` (the cycle length), so a missing layer never beats a
//!   resident one and the resident set stays stable instead of thrashing:
//!   about `budget / model size` of each pass hits, like Belady's optimum
//!   (LRU hits nothing). A one-off sequential scan (layers seen once, `irr`
//!   ∞) cannot displace entries that were ever reused.
//! * **Skewed random access** (mixture-of-experts routing): hot layers have
//!   small `irr` and small age and stay; a layer needs a second access with a
//!   short enough reuse distance to get in, which filters one-hit wonders
//!   (like LIRS / the admission filter of W-TinyLFU).
//! * **Pattern changes**: entries of the old phase age, their `E` grows with
//!   `t - last`, and the new phase's layers displace them after their second
//!   access.
//! * **Prefetch** candidates are judged by their recorded `irr` and the same
//!   rule, so a prefetch never displaces an entry the policy values at least
//!   as much; it is not recorded as an access.
//!
//! # Access-order hint
//!
//! [`Engine::set_access_order`](crate::Engine::set_access_order) gives the
//! known cyclic forward-pass order of length `L`. Each layer in it gets
//! `irr = L / (occurrences in the order)` as its reuse-distance estimate, so
//! the stable resident set forms during the very first pass (and a changed
//! order takes effect at once); later observed accesses refine the estimate.
//! `None` forgets nothing but stops nothing: the learned history stays.
//!
//! # Cost
//!
//! Per class: an intrusive doubly linked list in recency order and a
//! `BTreeSet` ordered by `irr`. The largest `E` is the larger of the two
//! heads (the oldest entry's age, the largest `irr`), so victims are found by
//! merging the two orders: `O(log r)` per access and per victim.

use std::collections::{BTreeMap, BTreeSet};

use super::{Candidate, Plan, Policy, Slot};
use crate::config::AccessKind;

const NIL: u32 = u32::MAX;
const NEVER: u64 = u64::MAX;

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Clock of the last demand access; 0 = never accessed.
    last: u64,
    /// Inter-reference recency; `NEVER` when unknown.
    irr: u64,
    /// Recency list links (valid while resident).
    prev: u32,
    next: u32,
    /// Class key while resident.
    class: u32,
    /// Visit mark for the victim merge.
    stamp: u32,
}

impl Entry {
    const EMPTY: Entry = Entry {
        last: 0,
        irr: NEVER,
        prev: NIL,
        next: NIL,
        class: 0,
        stamp: 0,
    };

    /// Key in `Class::by_irr`: iterated from the largest.
    #[inline]
    fn irr_key(&self, id: u32) -> (u64, u64, u32) {
        let tiebreak = if self.irr == NEVER {
            NEVER - self.last
        } else {
            0
        };
        (self.irr, tiebreak, id)
    }

    #[inline]
    fn expected_distance(&self, clock: u64) -> u64 {
        self.irr.max(clock.saturating_sub(self.last))
    }
}

/// Resident entries of one priority.
#[derive(Debug)]
struct Class {
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
    by_irr: BTreeSet<(u64, u64, u32)>,
}

impl Class {
    fn new() -> Self {
        Class {
            head: NIL,
            tail: NIL,
            by_irr: BTreeSet::new(),
        }
    }
}

/// Map a priority in `0.0..=1.0` to an order-preserving integer.
#[inline]
fn class_key(priority: f32) -> u32 {
    // Non-negative floats order like their bit patterns; `+ 0.0` turns -0.0 into 0.0.
    (priority.max(0.0) + 0.0).to_bits()
}

/// Priority classes × reuse-distance ordering (see the module docs).
#[derive(Debug)]
pub(crate) struct AdaptivePolicy {
    entries: Vec<Entry>,
    classes: BTreeMap<u32, Class>,
    clock: u64,
    stamp: u32,
}

fn unlink(entries: &mut [Entry], class: &mut Class, id: u32) {
    let Some(e) = entries.get(id as usize).copied() else {
        return;
    };
    match entries.get_mut(e.prev as usize) {
        Some(p) => p.next = e.next,
        None => class.head = e.next,
    }
    match entries.get_mut(e.next as usize) {
        Some(n) => n.prev = e.prev,
        None => class.tail = e.prev,
    }
    if let Some(e) = entries.get_mut(id as usize) {
        e.prev = NIL;
        e.next = NIL;
    }
}

fn push_front(entries: &mut [Entry], class: &mut Class, id: u32) {
    let old_head = class.head;
    if let Some(e) = entries.get_mut(id as usize) {
        e.prev = NIL;
        e.next = old_head;
    }
    match entries.get_mut(old_head as usize) {
        Some(h) => h.prev = id,
        None => class.tail = id,
    }
    class.head = id;
}

impl AdaptivePolicy {
    pub(crate) fn new(layer_count: usize) -> Self {
        AdaptivePolicy {
            entries: vec![Entry::EMPTY; layer_count],
            classes: BTreeMap::new(),
            clock: 0,
            stamp: 0,
        }
    }

    /// Records a demand access; returns the old `by_irr` key.
    #[inline]
    fn record(&mut self, id: u32) -> Option<(u64, u64, u32)> {
        self.clock += 1;
        let clock = self.clock;
        let e = self.entries.get_mut(id as usize)?;
        let old_key = e.irr_key(id);
        if e.last != 0 {
            e.irr = clock - e.last;
        }
        e.last = clock;
        Some(old_key)
    }

    fn insert_resident(&mut self, id: u32, priority: f32) {
        let key = class_key(priority);
        let Some(e) = self.entries.get_mut(id as usize) else {
            return;
        };
        e.class = key;
        let irr_key = e.irr_key(id);
        let class = self.classes.entry(key).or_insert_with(Class::new);
        class.by_irr.insert(irr_key);
        push_front(&mut self.entries, class, id);
    }

    fn remove_resident(&mut self, id: u32) {
        let Some(e) = self.entries.get(id as usize).copied() else {
            return;
        };
        let Some(class) = self.classes.get_mut(&e.class) else {
            return;
        };
        class.by_irr.remove(&e.irr_key(id));
        unlink(&mut self.entries, class, id);
        if class.head == NIL {
            self.classes.remove(&e.class);
        }
    }

    fn next_stamp(&mut self) -> u32 {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            for e in &mut self.entries {
                e.stamp = 0;
            }
            self.stamp = 1;
        }
        self.stamp
    }
}

impl Policy for AdaptivePolicy {
    fn on_hit(&mut self, id: u32, _now: u64, _slots: &[Slot]) {
        let Some(old_key) = self.record(id) else {
            return;
        };
        let Some(e) = self.entries.get(id as usize).copied() else {
            return;
        };
        let Some(class) = self.classes.get_mut(&e.class) else {
            return;
        };
        let new_key = e.irr_key(id);
        if new_key != old_key {
            class.by_irr.remove(&old_key);
            class.by_irr.insert(new_key);
        }
        if class.head != id {
            unlink(&mut self.entries, class, id);
            push_front(&mut self.entries, class, id);
        }
    }

    fn on_miss(&mut self, id: u32, _now: u64, _slots: &[Slot]) {
        self.record(id);
    }

    fn plan(
        &mut self,
        candidate: Option<&Candidate>,
        needed: u64,
        _now: u64,
        slots: &[Slot],
    ) -> Plan {
        let stamp = self.next_stamp();
        let clock = self.clock;
        let candidate_rank = candidate.and_then(|c| {
            let e = self.entries.get(c.id as usize)?;
            // A demand candidate was just recorded: its E is its fresh irr.
            // A prefetch candidate is judged by the irr it had.
            let distance = match c.kind {
                AccessKind::Demand | AccessKind::Prefetch => e.irr,
            };
            Some((class_key(c.priority), distance))
        });
        let entries = &mut self.entries;
        let mut plan = Plan::default();
        'classes: for (&key, class) in &self.classes {
            let mut by_irr = class.by_irr.iter().rev().peekable();
            let mut lru = class.tail;
            loop {
                let irr_head = loop {
                    match by_irr.peek() {
                        Some(&&(irr, _, id)) => {
                            if entries.get(id as usize).is_some_and(|e| e.stamp == stamp) {
                                by_irr.next();
                            } else {
                                break Some((irr, id));
                            }
                        }
                        None => break None,
                    }
                };
                let lru_head = loop {
                    match entries.get(lru as usize) {
                        Some(e) if e.stamp == stamp => lru = e.prev,
                        Some(e) => break Some((clock.saturating_sub(e.last), lru)),
                        None => break None,
                    }
                };
                let id = match (irr_head, lru_head) {
                    (None, None) => break,
                    (Some((irr, id)), Some((age, oldest))) => {
                        if irr >= age {
                            id
                        } else {
                            oldest
                        }
                    }
                    (Some((_, id)), None) | (None, Some((_, id))) => id,
                };
                let Some(e) = entries.get_mut(id as usize) else {
                    break;
                };
                e.stamp = stamp;
                let victim_distance = e.expected_distance(clock);
                let wins = || {
                    candidate_rank.is_none_or(|(candidate_key, candidate_distance)| {
                        candidate_key > key
                            || (candidate_key == key && candidate_distance < victim_distance)
                    })
                };
                if plan.offer(id, slots, needed, wins) {
                    break 'classes;
                }
            }
        }
        plan
    }

    fn on_insert(&mut self, id: u32, _now: u64, slots: &[Slot]) {
        let priority = slots.get(id as usize).map_or(0.0, |s| s.priority);
        self.insert_resident(id, priority);
    }

    fn on_remove(&mut self, id: u32, _slots: &[Slot]) {
        self.remove_resident(id);
    }

    fn on_priority_change(&mut self, id: u32, _old: f32, slots: &[Slot]) {
        let Some(slot) = slots.get(id as usize) else {
            return;
        };
        if slot.resident {
            self.remove_resident(id);
            self.insert_resident(id, slot.priority);
        }
    }

    fn set_access_order(&mut self, order: Option<&[u32]>) {
        let Some(order) = order else {
            return;
        };
        let mut occurrences: BTreeMap<u32, u64> = BTreeMap::new();
        for &id in order {
            if (id as usize) < self.entries.len() {
                *occurrences.entry(id).or_insert(0) += 1;
            }
        }
        let cycle = order.len() as u64;
        for (id, count) in occurrences {
            let Some(e) = self.entries.get(id as usize).copied() else {
                continue;
            };
            let old_key = e.irr_key(id);
            let irr = (cycle / count).max(1);
            if let Some(e) = self.entries.get_mut(id as usize) {
                e.irr = irr;
            }
            let new_key = (irr, 0, id);
            if let Some(class) = self.classes.get_mut(&e.class)
                && class.by_irr.remove(&old_key)
            {
                class.by_irr.insert(new_key);
            }
        }
    }
}
