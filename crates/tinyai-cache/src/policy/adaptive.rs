//! The default policy: priority classes, then a predicted next-use distance
//! weighted by size, with Belady-style admission.
//!
//! # Model
//!
//! The policy keeps its own logical clock, advanced by one on every demand
//! access (the caller's `now` is not used, so any `now` units work). For every
//! layer, resident or not, it remembers the clock of its last demand access
//! and its last four reuse distances (accesses between consecutive uses).
//! From them it predicts the distance `E` to the next use:
//!
//! * **periodic** layers — the last two distances agree within 1/8 (a cyclic
//!   pass), or the last and third-last agree (period two, e.g. forward then
//!   backward passes): the next use is due at `due = last + period`, and
//!   `E = |due - t|` at clock `t` (a layer that is overdue drifts away from
//!   "due now" as it stays unused, so a dead pattern is forgotten);
//! * **memoryless** layers (random access, e.g. mixture-of-experts routing):
//!   `E = max(mean of the known distances, t - last)`, i.e. the expected
//!   inter-arrival time unless the layer has already gone unused for longer
//!   (LIRS-like; ∞ for a layer seen once).
//!
//! The eviction *rank* of a resident entry is `E × 2^bits(charge)`: keeping a
//! small layer costs less budget per expected hit (GreedyDual-Size-like, in
//! power-of-two size classes so the ordering stays indexable).
//!
//! # Eviction order
//!
//! 1. Lower priority first: resident entries are grouped by exact priority,
//!    and an entry is never evicted while an unpinned entry of strictly lower
//!    priority is resident.
//! 2. Within a priority, largest rank first (ties: the smaller size class and
//!    the stream order decide; the result is deterministic).
//!
//! # Admission (Belady-style)
//!
//! A missed layer is admitted unconditionally while there is room. When room
//! must be made, the candidate must *beat every victim* it displaces: its
//! priority is higher, or equal with a strictly smaller rank (its `E` right
//! after this access). Otherwise the decision is
//! [`Bypass`](crate::Decision::Bypass) and nothing is evicted.
//!
//! * **Cyclic or sequential scans larger than the budget**: a missing layer's
//!   next use is a whole cycle away, further than that of every resident
//!   layer of its size class, so it is bypassed and the resident set stays
//!   stable instead of thrashing (about `budget / model size` of every pass
//!   hits, like Belady; LRU hits nothing). A one-off scan (layers seen once,
//!   `E` = ∞) cannot displace layers that were ever reused.
//! * **Skewed random access**: hot layers have small mean distances and stay;
//!   a layer needs a second access with a short enough distance to get in,
//!   which filters one-hit wonders (like the admission filter of W-TinyLFU).
//! * **Pattern changes**: entries of the old phase age (`E` grows with
//!   `t - last` or with the overdue time) and the new phase displaces them.
//! * **Prefetch** candidates are ranked from their recorded history by the
//!   same rule, so a prefetch never displaces an entry the policy values at
//!   least as much (nor a pinned or higher-priority one); a prefetch is not
//!   recorded as an access.
//!
//! # Access-order hint
//!
//! [`Engine::set_access_order`](crate::Engine::set_access_order) gives the
//! known cyclic order of length `L`. Every layer that occurs exactly once in
//! it gets `L` as its known reuse distances, so it is periodic from its very
//! first access and the stable resident set forms during the first pass (a
//! changed order takes effect at once). Layers occurring several times, and
//! `None`, leave the learned history untouched.
//!
//! # Cost
//!
//! Per (priority, size class): an intrusive recency list and a `BTreeSet` by
//! mean distance for memoryless entries, a `BTreeSet` by due time for
//! periodic ones. The largest `E` of a class is at one of four stream heads
//! (oldest, largest mean, latest due, most overdue), so victims come from a
//! merge: `O(log r)` per access, `O(classes · log r)` per victim.

use std::collections::{BTreeMap, BTreeSet, btree_set};

use super::{Candidate, Plan, Policy, Slot};

const NIL: u32 = u32::MAX;
const NEVER: u64 = u64::MAX;
/// Marks an unknown reuse-distance sample.
const UNKNOWN: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Ranked by `max(irr, age)`; lives in `by_irr` and the recency list.
    Memoryless,
    /// Ranked by `|due - clock|`; lives in `by_due`.
    Periodic,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Clock of the last demand access; 0 = never accessed.
    last: u64,
    /// Memoryless: the irr estimate (`NEVER` if unknown). Periodic: the clock of the predicted next use.
    key: u64,
    /// The last four reuse distances, newest first.
    samples: [u32; 4],
    mode: Mode,
    /// Recency list links (memoryless residents only).
    prev: u32,
    next: u32,
    /// Class of a resident entry.
    class: ClassKey,
    /// Visit mark for the victim merge.
    stamp: u32,
}

impl Entry {
    const EMPTY: Entry = Entry {
        last: 0,
        key: NEVER,
        samples: [UNKNOWN; 4],
        mode: Mode::Memoryless,
        prev: NIL,
        next: NIL,
        class: ClassKey {
            priority: 0,
            size: 0,
        },
        stamp: 0,
    };

    /// Key in `Class::by_irr` (memoryless): iterated from the largest.
    #[inline]
    fn irr_key(&self, id: u32) -> (u64, u64, u32) {
        let tiebreak = if self.key == NEVER {
            NEVER - self.last
        } else {
            0
        };
        (self.key, tiebreak, id)
    }

    /// Expected distance to the next use at `clock`.
    #[inline]
    fn expected_distance(&self, clock: u64) -> u64 {
        match self.mode {
            Mode::Memoryless => self.key.max(clock.saturating_sub(self.last)),
            Mode::Periodic => self.key.abs_diff(clock),
        }
    }

    /// Expected distance right after an access (the candidate's rank).
    #[inline]
    fn fresh_distance(&self) -> u64 {
        match self.mode {
            Mode::Memoryless => self.key,
            Mode::Periodic => self.key.saturating_sub(self.last),
        }
    }

    /// Recomputes `mode` and `key` from the samples (after an access at `last`).
    fn classify(&mut self) {
        let [s0, s1, s2, _] = self.samples;
        let close =
            |a: u32, b: u32| a != UNKNOWN && b != UNKNOWN && a.abs_diff(b) <= a.max(b) / 8 + 2;
        let period = if close(s0, s1) {
            Some(s0)
        } else if close(s0, s2) && s1 != UNKNOWN {
            Some(s1)
        } else {
            None
        };
        match period {
            Some(p) if self.last != 0 => {
                self.mode = Mode::Periodic;
                self.key = self.last.saturating_add(u64::from(p));
            }
            _ => {
                self.mode = Mode::Memoryless;
                // The mean of the known samples: a steadier rate estimate than
                // the last sample alone on random (memoryless) access.
                let (sum, count) = self
                    .samples
                    .iter()
                    .filter(|&&x| x != UNKNOWN)
                    .fold((0u64, 0u64), |(sum, count), &x| {
                        (sum + u64::from(x), count + 1)
                    });
                self.key = if s0 == UNKNOWN || count == 0 {
                    NEVER
                } else {
                    sum / count
                };
            }
        }
    }
}

/// Resident entries are grouped by exact priority, then by size class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ClassKey {
    priority: u32,
    /// Bit length of the charge: the weight is `2^size`.
    size: u8,
}

/// Resident entries of one priority and size class.
#[derive(Debug)]
struct Class {
    /// Most recently used memoryless entry.
    head: u32,
    /// Least recently used memoryless entry.
    tail: u32,
    by_irr: BTreeSet<(u64, u64, u32)>,
    by_due: BTreeSet<(u64, u32)>,
}

impl Class {
    fn new() -> Self {
        Class {
            head: NIL,
            tail: NIL,
            by_irr: BTreeSet::new(),
            by_due: BTreeSet::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.head == NIL && self.by_due.is_empty()
    }
}

/// Map a priority in `0.0..=1.0` to an order-preserving integer.
#[inline]
fn priority_key(priority: f32) -> u32 {
    // Non-negative floats order like their bit patterns; `+ 0.0` turns -0.0 into 0.0.
    (priority.max(0.0) + 0.0).to_bits()
}

#[inline]
fn size_class(charge: u64) -> u8 {
    (64 - charge.leading_zeros()) as u8
}

/// `distance × 2^size`: the cost-aware rank (bigger = evicted first).
#[inline]
fn weighted(distance: u64, size: u8) -> u128 {
    u128::from(distance) << size
}

/// Priority classes × reuse-distance ordering (see the module docs).
#[derive(Debug)]
pub(crate) struct AdaptivePolicy {
    entries: Vec<Entry>,
    classes: BTreeMap<ClassKey, Class>,
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

/// Adds a resident `id` (already classified) to `class`.
fn attach(entries: &mut [Entry], class: &mut Class, id: u32) {
    let Some(e) = entries.get(id as usize).copied() else {
        return;
    };
    match e.mode {
        Mode::Memoryless => {
            class.by_irr.insert(e.irr_key(id));
            push_front(entries, class, id);
        }
        Mode::Periodic => {
            class.by_due.insert((e.key, id));
        }
    }
}

/// Removes a resident `id` from `class` (its entry must be unchanged since `attach`).
fn detach(entries: &mut [Entry], class: &mut Class, id: u32) {
    let Some(e) = entries.get(id as usize).copied() else {
        return;
    };
    match e.mode {
        Mode::Memoryless => {
            class.by_irr.remove(&e.irr_key(id));
            unlink(entries, class, id);
        }
        Mode::Periodic => {
            class.by_due.remove(&(e.key, id));
        }
    }
}

/// Records a demand access of `id` at the next clock tick and reclassifies it.
#[inline]
fn record(entries: &mut [Entry], clock: &mut u64, id: u32) {
    *clock += 1;
    let now = *clock;
    let Some(e) = entries.get_mut(id as usize) else {
        return;
    };
    if e.last != 0 {
        let sample = u32::try_from(now - e.last).unwrap_or(UNKNOWN - 1);
        e.samples = [sample, e.samples[0], e.samples[1], e.samples[2]];
    }
    e.last = now;
    e.classify();
}

/// Walks one class's resident entries from the largest expected distance down,
/// by merging four sorted streams.
struct Cursor<'a> {
    size: u8,
    irr: std::iter::Rev<btree_set::Iter<'a, (u64, u64, u32)>>,
    irr_head: Option<(u64, u32)>,
    lru: u32,
    due: btree_set::Iter<'a, (u64, u32)>,
    due_high: Option<(u64, u32)>,
    due_low: Option<(u64, u32)>,
}

#[derive(Clone, Copy)]
enum Stream {
    Irr,
    Lru,
    DueHigh,
    DueLow,
}

impl<'a> Cursor<'a> {
    fn new(key: ClassKey, class: &'a Class) -> Self {
        Cursor {
            size: key.size,
            irr: class.by_irr.iter().rev(),
            irr_head: None,
            lru: class.tail,
            due: class.by_due.iter(),
            due_high: None,
            due_low: None,
        }
    }

    /// The next entry (largest expected distance) and its stream.
    fn peek(&mut self, entries: &[Entry], clock: u64, stamp: u32) -> Option<(u64, u32, Stream)> {
        let stamped = |id: u32| entries.get(id as usize).is_none_or(|e| e.stamp == stamp);
        loop {
            match self.irr_head {
                Some((_, id)) if stamped(id) => self.irr_head = None,
                Some(_) => break,
                None => match self.irr.next() {
                    Some(&(irr, _, id)) => self.irr_head = Some((irr, id)),
                    None => break,
                },
            }
        }
        while self.lru != NIL && stamped(self.lru) {
            self.lru = entries.get(self.lru as usize).map_or(NIL, |e| e.prev);
        }
        if self.due_high.is_none() {
            self.due_high = self.due.next_back().copied();
        }
        if self.due_low.is_none() {
            self.due_low = self.due.next().copied();
        }
        let mut best: Option<(u64, u32, Stream)> = None;
        let mut consider = |value: u64, id: u32, stream: Stream| {
            if best.is_none_or(|(v, _, _)| value > v) {
                best = Some((value, id, stream));
            }
        };
        if let Some((irr, id)) = self.irr_head {
            consider(irr, id, Stream::Irr);
        }
        if let Some(e) = entries.get(self.lru as usize) {
            consider(clock.saturating_sub(e.last), self.lru, Stream::Lru);
        }
        if let Some((due, id)) = self.due_high {
            consider(due.saturating_sub(clock), id, Stream::DueHigh);
        }
        if let Some((due, id)) = self.due_low {
            consider(clock.saturating_sub(due), id, Stream::DueLow);
        }
        best
    }

    fn take(&mut self, stream: Stream) {
        match stream {
            Stream::Irr => self.irr_head = None,
            // The stamp makes the next `peek` skip it.
            Stream::Lru => {}
            Stream::DueHigh => self.due_high = None,
            Stream::DueLow => self.due_low = None,
        }
    }
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

    fn insert_resident(&mut self, id: u32, slot: &Slot) {
        let key = ClassKey {
            priority: priority_key(slot.priority),
            size: size_class(slot.charge),
        };
        let Some(e) = self.entries.get_mut(id as usize) else {
            return;
        };
        e.class = key;
        let class = self.classes.entry(key).or_insert_with(Class::new);
        attach(&mut self.entries, class, id);
    }

    fn remove_resident(&mut self, id: u32) {
        let Some(key) = self.entries.get(id as usize).map(|e| e.class) else {
            return;
        };
        let Some(class) = self.classes.get_mut(&key) else {
            return;
        };
        detach(&mut self.entries, class, id);
        if class.is_empty() {
            self.classes.remove(&key);
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
        let Some(key) = self.entries.get(id as usize).map(|e| e.class) else {
            return;
        };
        let Some(class) = self.classes.get_mut(&key) else {
            return;
        };
        detach(&mut self.entries, class, id);
        record(&mut self.entries, &mut self.clock, id);
        attach(&mut self.entries, class, id);
    }

    fn on_miss(&mut self, id: u32, _now: u64, _slots: &[Slot]) {
        record(&mut self.entries, &mut self.clock, id);
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
        // A demand candidate was just recorded; a prefetch candidate is judged
        // by its last recorded state. Either way: its distance right after a use.
        let candidate_rank = candidate.and_then(|c| {
            let e = self.entries.get(c.id as usize)?;
            let size = slots.get(c.id as usize).map_or(0, |s| size_class(s.charge));
            Some((priority_key(c.priority), weighted(e.fresh_distance(), size)))
        });
        let entries = &mut self.entries;
        let mut plan = Plan::default();
        let mut classes = self.classes.iter().peekable();
        let mut cursors: Vec<Cursor<'_>> = Vec::new();
        while let Some((&first_key, first_class)) = classes.next() {
            // All size classes of one priority level compete together.
            cursors.clear();
            cursors.push(Cursor::new(first_key, first_class));
            while let Some((&key, class)) =
                classes.next_if(|(k, _)| k.priority == first_key.priority)
            {
                cursors.push(Cursor::new(key, class));
            }
            loop {
                let mut best: Option<(u128, usize, u32, Stream)> = None;
                for (index, cursor) in cursors.iter_mut().enumerate() {
                    if let Some((distance, id, stream)) = cursor.peek(entries, clock, stamp) {
                        let rank = weighted(distance, cursor.size);
                        if best.is_none_or(|(r, ..)| rank > r) {
                            best = Some((rank, index, id, stream));
                        }
                    }
                }
                let Some((_, index, id, stream)) = best else {
                    break;
                };
                if let Some(cursor) = cursors.get_mut(index) {
                    cursor.take(stream);
                }
                let Some(e) = entries.get_mut(id as usize) else {
                    break;
                };
                e.stamp = stamp;
                let victim_rank = weighted(e.expected_distance(clock), e.class.size);
                let wins = || {
                    candidate_rank.is_none_or(|(candidate_priority, candidate_rank)| {
                        candidate_priority > first_key.priority
                            || (candidate_priority == first_key.priority
                                && candidate_rank < victim_rank)
                    })
                };
                if plan.offer(id, slots, needed, wins) {
                    return plan;
                }
            }
        }
        plan
    }

    fn on_insert(&mut self, id: u32, _now: u64, slots: &[Slot]) {
        if let Some(slot) = slots.get(id as usize) {
            self.insert_resident(id, slot);
        }
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
            self.insert_resident(id, slot);
        }
    }

    fn set_access_order(&mut self, order: Option<&[u32]>) {
        let Some(order) = order else {
            return;
        };
        let mut occurrences: BTreeMap<u32, u32> = BTreeMap::new();
        for &id in order {
            if (id as usize) < self.entries.len() {
                *occurrences.entry(id).or_insert(0) += 1;
            }
        }
        let cycle = u32::try_from(order.len()).unwrap_or(UNKNOWN - 1);
        for (id, count) in occurrences {
            if count != 1 {
                continue;
            }
            let Some(key) = self.entries.get(id as usize).map(|e| e.class) else {
                continue;
            };
            let class = self.classes.get_mut(&key);
            let resident = class.as_ref().is_some_and(|c| {
                let e = self.entries.get(id as usize);
                e.is_some_and(|e| match e.mode {
                    Mode::Memoryless => c.by_irr.contains(&e.irr_key(id)),
                    Mode::Periodic => c.by_due.contains(&(e.key, id)),
                })
            });
            if let (true, Some(class)) = (resident, class) {
                detach(&mut self.entries, class, id);
                if let Some(e) = self.entries.get_mut(id as usize) {
                    e.samples = [cycle; 4];
                    e.classify();
                }
                attach(&mut self.entries, class, id);
            } else if let Some(e) = self.entries.get_mut(id as usize) {
                e.samples = [cycle; 4];
                e.classify();
            }
        }
    }
}
