//! Per-stream access-pattern detection and streaming-window admission.
//!
//! The store keeps one [`PatternDetector`] per *stream* (a thread, or a
//! forward-pass handle) and one [`StreamingWindow`] per model. Both are pure
//! and deterministic like the rest of the crate: no I/O, no threads, no
//! clock. A stream's "clock" is the number of demand accesses it has made
//! ([`PatternDetector::clock`]), counted by the detector, not read from a
//! timer.
//!
//! # Pattern detection (one detector per stream)
//!
//! Each demand access of a stream goes through [`PatternDetector::on_access`],
//! which compares it with the stream's previous access `last`. With a
//! declared [`AccessOrder`] the *expected* access is `order.successor(last)`,
//! or, once the run is at least 2, any of the `lookahead` layers after `last`
//! (an established stream may skip a few layers; their read-aheads are dropped
//! from the window); without one it is `(last + 1) % layer_count` (a
//! sequential scan).
//!
//! | access `id` | run | result |
//! | --- | --- | --- |
//! | the stream's first access | unchanged (0) | continues |
//! | `id == last` (a repeat) | unchanged | continues |
//! | `id` is the expected one | `run + 1` | continues |
//! | anything else, and `run > 0` or the previous access produced lookahead | reset to 0 | **breaks**: `epoch + 1`, [`Observation::broke`] |
//! | anything else, otherwise | stays 0 | nothing to break |
//!
//! Lookahead candidates ([`Observation::lookahead`], nearest need first, never
//! `id` itself):
//!
//! | declared order | candidates |
//! | --- | --- |
//! | some, `id` in it, the access was the expected one and `run >= 2` | [`AccessOrder::next_after`]`(id, depth)` |
//! | some, otherwise | none: a stream that accesses at random under a declared order (say an automatic one left by a first sequential pass) reads nothing ahead |
//! | some, `id` not in it | none |
//! | none, `run >= 2` | `(id + 1 ..= id + depth) % layer_count`, stopping before `id` |
//! | none, `run < 2` | none |
//!
//! `depth` ramps up with the run: `min(lookahead, 2^(run − 1))`, so 2 layers at
//! a run of 2, 4 at 3, 8 at 4 (a run of 2 also happens by chance in random
//! access, and should then read and evict little).
//!
//! Automatic cyclic order (the store's "auto order"), per detector:
//!
//! | state | event | next state, output |
//! | --- | --- | --- |
//! | idle | no declared order, a sequential access makes `run >= min(layer_count, 8)` | requested, [`Observation::declare_cyclic`] |
//! | requested | the declared order is [`cyclic`](AccessOrder::is_cyclic) | active |
//! | active | no declared order any more (withdrawn) | idle (may request again) |
//! | requested or active | a non-cyclic order is declared (the user's) | idle |
//! | requested or active | the stream breaks | idle, [`Observation::undeclare_cyclic`] |
//!
//! Because detection is per stream, two streams scanning concurrently do not
//! see each other's accesses and neither breaks (a single shared detector
//! would see an interleaving that looks random).
//!
//! # Streaming window (one per model)
//!
//! The window is the share of the budget for layers prefetched *outside* the
//! cache (the policy declined them) and not yet used. Each entry records its
//! owner stream and the owner's clock when it was admitted. An entry is
//! **stale** when its owner has made more than `stale_after` demand accesses
//! since (`latest owner clock - admitted_at > stale_after`): a layer read
//! ahead that many accesses early should have been used by then.
//!
//! | call | effect |
//! | --- | --- |
//! | [`admit`](StreamingWindow::admit), already present | admitted, nothing changes |
//! | [`admit`](StreamingWindow::admit), `budget == 0` or `charge > budget` | not admitted, nothing changes |
//! | [`admit`](StreamingWindow::admit), fits | admitted |
//! | [`admit`](StreamingWindow::admit), does not fit | stale entries leave, oldest first, until it fits (they stay dropped even if it still does not fit); admitted if it then fits |
//! | [`take`](StreamingWindow::take) | a demand used the layer: it leaves |
//! | [`remove`](StreamingWindow::remove) | load failed, cancelled or released: it leaves |
//! | [`drop_unused`](StreamingWindow::drop_unused) | the owner's pattern broke: all its entries leave, oldest first |
//! | [`forget_stream`](StreamingWindow::forget_stream) | the owner ended: as `drop_unused`, and its clock is forgotten |
//!
//! `used() <= budget()` and `used() == ` the sum of the entries' charges hold
//! after every call. Dropping stale entries means that layers read ahead and
//! then skipped (a declared order the stream does not follow exactly) cannot
//! occupy the window forever and stop streaming.
//!
//! # Example
//!
//! ```
//! use tinyai_cache::LayerId;
//! use tinyai_cache::stream::{PatternDetector, StreamId, StreamingWindow};
//!
//! let mut detector = PatternDetector::new(4, 2);
//! let mut window = StreamingWindow::new(2 * 4096, 2);
//! let stream = StreamId(0);
//! for id in [0, 1, 2] {
//!     let observation = detector.on_access(LayerId(id), None);
//!     assert!(!observation.broke);
//!     window.take(LayerId(id));
//!     for &next in &observation.lookahead {
//!         if !window.admit(next, 4096, stream, detector.clock()).admitted {
//!             break;
//!         }
//!     }
//! }
//! // The third sequential access asked for layers 3 and 0.
//! assert!(window.contains(LayerId(3)) && window.contains(LayerId(0)));
//! ```

use std::collections::BTreeMap;

use crate::config::LayerId;
use crate::error::CacheError;

/// Identifies a stream of demand accesses (a thread, or a forward pass): the
/// owner of [`StreamingWindow`] entries. The caller chooses the numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

/// Marks a layer that does not occur in an [`AccessOrder`].
const ABSENT: usize = usize::MAX;

/// A declared cyclic order of layer ids (a forward pass, repeated).
///
/// An id may occur more than once; [`position`](AccessOrder::position),
/// [`successor`](AccessOrder::successor) and
/// [`next_after`](AccessOrder::next_after) use its first position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessOrder {
    order: Vec<LayerId>,
    /// `positions[i]`: the first position of `LayerId(i)` in `order`, or [`ABSENT`].
    positions: Vec<usize>,
    /// `order` is exactly `0..layer_count`.
    cyclic: bool,
}

impl AccessOrder {
    /// Validates `order` against a model of `layer_count` layers.
    ///
    /// # Errors
    /// [`CacheError::UnknownLayer`] for an id `>= layer_count`,
    /// [`CacheError::TooManyLayers`] if `layer_count` exceeds what a
    /// [`LayerId`] can address.
    pub fn new(order: Vec<LayerId>, layer_count: usize) -> Result<AccessOrder, CacheError> {
        let max = u32::MAX as usize;
        if layer_count > max {
            return Err(CacheError::TooManyLayers {
                count: layer_count,
                max,
            });
        }
        let mut positions = vec![ABSENT; layer_count];
        for (at, &id) in order.iter().enumerate() {
            match positions.get_mut(id.index()) {
                Some(position) if *position == ABSENT => *position = at,
                Some(_) => {}
                None => return Err(CacheError::UnknownLayer { id, layer_count }),
            }
        }
        let cyclic =
            order.len() == layer_count && order.iter().enumerate().all(|(at, id)| id.index() == at);
        Ok(AccessOrder {
            order,
            positions,
            cyclic,
        })
    }

    /// The order `0..layer_count` (ids beyond `u32::MAX` are left out).
    pub fn cyclic(layer_count: usize) -> AccessOrder {
        let order: Vec<LayerId> = (0..layer_count)
            .map_while(|i| u32::try_from(i).ok())
            .map(LayerId)
            .collect();
        let positions = (0..order.len()).collect();
        AccessOrder {
            order,
            positions,
            cyclic: true,
        }
    }

    /// The declared ids, in order.
    pub fn as_slice(&self) -> &[LayerId] {
        &self.order
    }

    /// How many layers the order was validated against.
    pub fn layer_count(&self) -> usize {
        self.positions.len()
    }

    /// Whether the order is exactly `0..layer_count` (what
    /// [`Observation::declare_cyclic`] asks the store to declare).
    pub fn is_cyclic(&self) -> bool {
        self.cyclic
    }

    /// The first position of `id` in the order, in O(1); `None` if it does not occur.
    pub fn position(&self, id: LayerId) -> Option<usize> {
        self.positions
            .get(id.index())
            .copied()
            .filter(|&at| at != ABSENT)
    }

    /// The id that follows `id`'s first position, cyclically (the first id
    /// after the last); `None` if `id` does not occur.
    pub fn successor(&self, id: LayerId) -> Option<LayerId> {
        let at = self.position(id)?;
        let next = (at + 1) % self.order.len();
        self.order.get(next).copied()
    }

    /// Up to `count` ids following `id`'s first position, cyclically, nearest
    /// first, stopping before the order comes back to `id`. Empty if `id`
    /// does not occur. An id repeated in the order may be yielded twice.
    pub fn next_after(&self, id: LayerId, count: usize) -> impl Iterator<Item = LayerId> + '_ {
        let len = self.order.len();
        self.position(id)
            .into_iter()
            .flat_map(move |at| (1..len).filter_map(move |k| self.order.get((at + k) % len)))
            .copied()
            .take_while(move |&next| next != id)
            .take(count)
    }
}

/// A list of lookahead candidates that stores up to
/// [`INLINE_CAPACITY`](Lookahead::INLINE_CAPACITY) ids inline and only
/// allocates beyond that, so that [`PatternDetector::on_access`] does not
/// allocate with the store's default lookahead (8).
///
/// Dereferences to `&[LayerId]`.
#[derive(Clone)]
pub struct Lookahead {
    repr: LookaheadRepr,
}

#[derive(Clone)]
enum LookaheadRepr {
    Inline {
        len: usize,
        ids: [LayerId; Lookahead::INLINE_CAPACITY],
    },
    Heap(Vec<LayerId>),
}

impl Lookahead {
    /// How many ids are kept without allocating.
    pub const INLINE_CAPACITY: usize = 16;

    /// An empty list (does not allocate).
    pub const fn new() -> Lookahead {
        Lookahead {
            repr: LookaheadRepr::Inline {
                len: 0,
                ids: [LayerId(0); Lookahead::INLINE_CAPACITY],
            },
        }
    }

    /// Appends `id`.
    pub fn push(&mut self, id: LayerId) {
        match &mut self.repr {
            LookaheadRepr::Inline { len, ids } => {
                if let Some(slot) = ids.get_mut(*len) {
                    *slot = id;
                    *len += 1;
                } else {
                    let mut heap = Vec::with_capacity(2 * Lookahead::INLINE_CAPACITY);
                    heap.extend_from_slice(ids);
                    heap.push(id);
                    self.repr = LookaheadRepr::Heap(heap);
                }
            }
            LookaheadRepr::Heap(heap) => heap.push(id),
        }
    }

    /// The ids, nearest need first.
    pub fn as_slice(&self) -> &[LayerId] {
        match &self.repr {
            LookaheadRepr::Inline { len, ids } => ids.get(..*len).unwrap_or(&[]),
            LookaheadRepr::Heap(heap) => heap,
        }
    }
}

impl Default for Lookahead {
    fn default() -> Lookahead {
        Lookahead::new()
    }
}

impl std::ops::Deref for Lookahead {
    type Target = [LayerId];

    fn deref(&self) -> &[LayerId] {
        self.as_slice()
    }
}

impl std::fmt::Debug for Lookahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl PartialEq for Lookahead {
    fn eq(&self, other: &Lookahead) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Lookahead {}

impl FromIterator<LayerId> for Lookahead {
    fn from_iter<I: IntoIterator<Item = LayerId>>(iter: I) -> Lookahead {
        let mut lookahead = Lookahead::new();
        for id in iter {
            lookahead.push(id);
        }
        lookahead
    }
}

impl<'a> IntoIterator for &'a Lookahead {
    type Item = &'a LayerId;
    type IntoIter = std::slice::Iter<'a, LayerId>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

/// What one demand access tells the store ([`PatternDetector::on_access`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// The stream left its pattern: the store cancels this stream's queued
    /// prefetches (their epoch is now stale) and drops its unused window
    /// entries ([`StreamingWindow::drop_unused`]).
    pub broke: bool,
    /// No order is declared and a sequential run just reached
    /// `min(layer_count, 8)`: the store may declare [`AccessOrder::cyclic`].
    pub declare_cyclic: bool,
    /// A stream that had asked for the cyclic order broke: the store may
    /// clear its automatic order (only if it is still the automatic one).
    pub undeclare_cyclic: bool,
    /// Layers to prefetch, nearest need first, at most `lookahead` of them,
    /// never the accessed layer itself. Includes layers already resident:
    /// the store filters those.
    pub lookahead: Lookahead,
    /// Under a declared order, the layers this access skipped (between the
    /// previous access and this one, in order): their read-aheads will not be
    /// used in this pass, so the store drops them from the window now rather
    /// than waiting for them to go stale.
    pub skipped: Lookahead,
}

/// Where a detector is in declaring the automatic cyclic order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AutoOrder {
    /// Has not asked (or its request was withdrawn or replaced).
    Idle,
    /// Asked ([`Observation::declare_cyclic`]), not yet seen the order declared.
    Requested,
    /// Asked and seen the cyclic order declared.
    Active,
}

/// The access-pattern state of one stream. Small and `Clone`; see the
/// [module documentation](self) for the rules.
#[derive(Clone, Debug)]
pub struct PatternDetector {
    layer_count: u64,
    lookahead: usize,
    last: Option<LayerId>,
    run: u64,
    clock: u64,
    epoch: u64,
    /// The previous access produced lookahead candidates.
    lookahead_pending: bool,
    auto_order: AutoOrder,
}

/// Run length at which a sequential scan asks for the cyclic order.
const DECLARE_AFTER: u64 = 8;

impl PatternDetector {
    /// A detector for a model of `layer_count` layers that proposes up to
    /// `lookahead` layers per access.
    pub fn new(layer_count: usize, lookahead: usize) -> PatternDetector {
        PatternDetector {
            layer_count: layer_count as u64,
            lookahead,
            last: None,
            run: 0,
            clock: 0,
            epoch: 0,
            lookahead_pending: false,
            auto_order: AutoOrder::Idle,
        }
    }

    /// Records a demand access of `id` by this stream, given the order the
    /// store currently declares (if any). Does not allocate unless more than
    /// [`Lookahead::INLINE_CAPACITY`] candidates are proposed.
    ///
    /// An id `>= layer_count` is never sequential and proposes nothing.
    pub fn on_access(&mut self, id: LayerId, declared: Option<&AccessOrder>) -> Observation {
        self.clock = self.clock.saturating_add(1);
        self.auto_order = match (self.auto_order, declared) {
            (AutoOrder::Idle, _) => AutoOrder::Idle,
            (_, Some(order)) if !order.is_cyclic() => AutoOrder::Idle,
            (AutoOrder::Requested, Some(_)) => AutoOrder::Active,
            (AutoOrder::Active, None) => AutoOrder::Idle,
            (state, _) => state,
        };
        let previous = self.last.replace(id);
        let expected = match declared {
            Some(order) => previous.is_some_and(|last| self.follows(order, last, id)),
            None => previous.is_some_and(|last| self.is_sequential(last, id)),
        };
        let mut observation = Observation::default();
        if let (true, Some(order), Some(last)) = (expected, declared, previous) {
            observation.skipped = order
                .next_after(last, self.lookahead)
                .take_while(|&next| next != id)
                .collect();
        }
        if expected {
            self.run = self.run.saturating_add(1);
            let threshold = self.layer_count.min(DECLARE_AFTER);
            if declared.is_none() && self.auto_order == AutoOrder::Idle && self.run >= threshold {
                observation.declare_cyclic = true;
                self.auto_order = AutoOrder::Requested;
            }
        } else if previous.is_some() && previous != Some(id) {
            if self.run > 0 || self.lookahead_pending {
                observation.broke = true;
                self.epoch = self.epoch.saturating_add(1);
                if self.auto_order != AutoOrder::Idle {
                    observation.undeclare_cyclic = true;
                    self.auto_order = AutoOrder::Idle;
                }
            }
            self.run = 0;
        }
        // Read-ahead ramps up with the run, as the kernel's does: 2 layers at a
        // run of 2, 4 at 3, then the full `lookahead`. A run of 2 happens by
        // chance in random access (with probability 1/N² per access over N
        // layers), so a false start reads little and evicts little.
        let depth = if self.run >= 2 {
            self.lookahead
                .min(1usize << self.run.saturating_sub(1).min(20))
        } else {
            0
        };
        observation.lookahead = match declared {
            // Follow a declared order once the stream has kept to it for two
            // steps (as a sequential scan needs without one): a stream that
            // accesses at random under a declared order (say an automatic one
            // left by a first sequential pass) must not read ahead.
            Some(order) if expected && depth > 0 => order.next_after(id, depth).collect(),
            Some(_) => Lookahead::new(),
            None if depth > 0 && u64::from(id.0) < self.layer_count => {
                let count = self.layer_count;
                let start = u64::from(id.0);
                (1..=depth as u64)
                    .map(|k| LayerId(((start + k) % count) as u32))
                    .take_while(|&next| next != id)
                    .collect()
            }
            None => Lookahead::new(),
        };
        self.lookahead_pending = !observation.lookahead.is_empty();
        observation
    }

    /// Under a declared order: `id` is `last`'s successor, or — once the stream
    /// has followed the order for two steps — comes after `last` by at most
    /// `lookahead` positions (an established stream may skip a few layers; what
    /// it skipped was read ahead and is dropped from the window).
    fn follows(&self, order: &AccessOrder, last: LayerId, id: LayerId) -> bool {
        let (Some(from), Some(to)) = (order.position(last), order.position(id)) else {
            return false;
        };
        let length = order.as_slice().len();
        let distance = (to + length - from) % length;
        // The successor always follows; a skip only once the run is established.
        distance == 1 || (distance >= 2 && distance <= self.lookahead && self.run >= 2)
    }

    /// `id == (last + 1) % layer_count`, for ids of the model.
    fn is_sequential(&self, last: LayerId, id: LayerId) -> bool {
        let next = u64::from(last.0)
            .checked_add(1)
            .and_then(|n| n.checked_rem(self.layer_count));
        u64::from(id.0) < self.layer_count && next == Some(u64::from(id.0))
    }

    /// Demand accesses this stream has made (its logical clock, for
    /// [`StreamingWindow::admit`] and [`StreamingWindow::observe`]).
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// How many times the pattern broke; prefetches tagged with an older
    /// epoch are stale.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The current run: consecutive accesses that followed the pattern
    /// (repeats neither extend nor end it).
    pub fn run(&self) -> u64 {
        self.run
    }

    /// The stream's previous access.
    pub fn last(&self) -> Option<LayerId> {
        self.last
    }
}

/// One layer in a [`StreamingWindow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowEntry {
    /// The layer.
    pub id: LayerId,
    /// Its charge, in bytes.
    pub charge: u64,
    /// The stream whose lookahead admitted it.
    pub owner: StreamId,
    /// The owner's clock at admission.
    pub admitted_at: u64,
}

/// The answer of [`StreamingWindow::admit`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowDecision {
    /// The layer is in the window (now, or it already was).
    pub admitted: bool,
    /// Stale entries dropped to make room, oldest first (dropped even when
    /// admission still failed); the store releases their memory.
    pub evicted: Vec<LayerId>,
}

/// The budget share for layers prefetched outside the cache and not yet
/// used; see the [module documentation](self) for the rules.
#[derive(Clone, Debug)]
pub struct StreamingWindow {
    budget: u64,
    stale_after: u64,
    used: u64,
    /// Admission sequence number of the next entry.
    next_sequence: u64,
    /// Entries by admission sequence number: oldest first.
    entries: BTreeMap<u64, WindowEntry>,
    /// Each entry's sequence number.
    sequence_of: BTreeMap<LayerId, u64>,
    /// The latest known clock of each stream.
    clocks: BTreeMap<StreamId, u64>,
}

impl StreamingWindow {
    /// The window size for a model.
    ///
    /// `explicit` (the store's configuration) is returned as is. Otherwise 0
    /// when prefetch is inactive, or when the whole model fits
    /// (`total_charge <= max_cache_size`: no window needed, so the cache gets
    /// the whole budget); else `max(max_cache_size / 8, largest_charge)`, at
    /// most `max_cache_size / 2` (room to read the next large layer while the
    /// current one is in use).
    pub fn size_for(
        max_cache_size: u64,
        largest_charge: u64,
        total_charge: u64,
        prefetch_active: bool,
        explicit: Option<u64>,
    ) -> u64 {
        if let Some(window) = explicit {
            return window;
        }
        if !prefetch_active || total_charge <= max_cache_size {
            return 0;
        }
        (max_cache_size / 8)
            .max(largest_charge)
            .min(max_cache_size / 2)
    }

    /// An empty window of `budget` bytes (0 disables it: nothing is
    /// admitted). An entry is stale once its owner has made more than
    /// `stale_after` demand accesses since its admission (the store passes
    /// its lookahead).
    pub fn new(budget: u64, stale_after: u64) -> StreamingWindow {
        StreamingWindow {
            budget,
            stale_after,
            used: 0,
            next_sequence: 0,
            entries: BTreeMap::new(),
            sequence_of: BTreeMap::new(),
            clocks: BTreeMap::new(),
        }
    }

    /// The window's size in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The sum of the entries' charges (never above [`budget`](Self::budget)).
    pub fn used(&self) -> u64 {
        self.used
    }

    /// How many entries the window holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the window holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The staleness threshold given to [`new`](Self::new).
    pub fn stale_after(&self) -> u64 {
        self.stale_after
    }

    /// Whether `id` is in the window.
    pub fn contains(&self, id: LayerId) -> bool {
        self.sequence_of.contains_key(&id)
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = WindowEntry> + '_ {
        self.entries.values().copied()
    }

    /// The latest known clock of `stream`.
    pub fn stream_clock(&self, stream: StreamId) -> Option<u64> {
        self.clocks.get(&stream).copied()
    }

    /// Records that `stream` has made `clock` demand accesses (clocks only
    /// move forward: an older value is ignored).
    pub fn observe(&mut self, stream: StreamId, clock: u64) {
        let latest = self.clocks.entry(stream).or_insert(clock);
        *latest = (*latest).max(clock);
    }

    /// Whether `entry` has waited more than `stale_after` accesses of its
    /// owner (an entry whose owner is unknown is stale).
    fn is_stale(&self, entry: &WindowEntry) -> bool {
        self.clocks
            .get(&entry.owner)
            .is_none_or(|&latest| latest.saturating_sub(entry.admitted_at) > self.stale_after)
    }

    /// Asks for room for layer `id` of `charge` bytes, read ahead by `owner`
    /// at its clock `owner_clock` (which is also [`observe`](Self::observe)d).
    pub fn admit(
        &mut self,
        id: LayerId,
        charge: u64,
        owner: StreamId,
        owner_clock: u64,
    ) -> WindowDecision {
        self.observe(owner, owner_clock);
        if self.contains(id) {
            return WindowDecision {
                admitted: true,
                evicted: Vec::new(),
            };
        }
        if self.budget == 0 || charge > self.budget {
            return WindowDecision::default();
        }
        let mut evicted = Vec::new();
        if self.budget - self.used < charge {
            let mut room = self.budget - self.used;
            let mut stale = Vec::new();
            for (&sequence, entry) in &self.entries {
                if room >= charge {
                    break;
                }
                if self.is_stale(entry) {
                    stale.push(sequence);
                    room += entry.charge;
                }
            }
            for sequence in stale {
                if let Some(entry) = self.remove_sequence(sequence) {
                    evicted.push(entry.id);
                }
            }
        }
        if self.budget - self.used < charge {
            return WindowDecision {
                admitted: false,
                evicted,
            };
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.entries.insert(
            sequence,
            WindowEntry {
                id,
                charge,
                owner,
                admitted_at: owner_clock,
            },
        );
        self.sequence_of.insert(id, sequence);
        self.used += charge;
        WindowDecision {
            admitted: true,
            evicted,
        }
    }

    fn remove_sequence(&mut self, sequence: u64) -> Option<WindowEntry> {
        let entry = self.entries.remove(&sequence)?;
        self.sequence_of.remove(&entry.id);
        self.used -= entry.charge;
        Some(entry)
    }

    /// A demand used `id`: it leaves the window. Returns whether it was there.
    pub fn take(&mut self, id: LayerId) -> bool {
        self.remove(id)
    }

    /// `id`'s load failed, was cancelled or released: it leaves the window.
    /// Returns whether it was there.
    pub fn remove(&mut self, id: LayerId) -> bool {
        match self.sequence_of.get(&id) {
            Some(&sequence) => self.remove_sequence(sequence).is_some(),
            None => false,
        }
    }

    /// `owner`'s pattern broke: all its entries leave; returns them oldest first.
    pub fn drop_unused(&mut self, owner: StreamId) -> Vec<LayerId> {
        let owned: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.owner == owner)
            .map(|(&sequence, _)| sequence)
            .collect();
        owned
            .into_iter()
            .filter_map(|sequence| self.remove_sequence(sequence))
            .map(|entry| entry.id)
            .collect()
    }

    /// `owner` ended (its thread exited, its forward pass was dropped): as
    /// [`drop_unused`](Self::drop_unused), and its clock is forgotten.
    pub fn forget_stream(&mut self, owner: StreamId) -> Vec<LayerId> {
        let dropped = self.drop_unused(owner);
        self.clocks.remove(&owner);
        dropped
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ids(raw: &[u32]) -> Vec<LayerId> {
        raw.iter().copied().map(LayerId).collect()
    }

    #[test]
    fn lookahead_stays_inline_up_to_its_capacity_then_spills() {
        let inline: Lookahead = (0..16).map(LayerId).collect();
        assert!(matches!(inline.repr, LookaheadRepr::Inline { len: 16, .. }));
        assert_eq!(inline.as_slice(), ids(&(0..16).collect::<Vec<_>>()));
        let spilled: Lookahead = (0..17).map(LayerId).collect();
        assert!(matches!(spilled.repr, LookaheadRepr::Heap(_)));
        assert_eq!(spilled.as_slice(), ids(&(0..17).collect::<Vec<_>>()));
        assert_eq!(Lookahead::new(), Lookahead::default());
        assert_eq!(format!("{:?}", Lookahead::new()), "[]");
    }

    #[test]
    fn the_store_s_default_lookahead_does_not_spill() {
        let mut detector = PatternDetector::new(100, 8);
        for id in 0..5 {
            let observation = detector.on_access(LayerId(id), None);
            assert!(matches!(
                observation.lookahead.repr,
                LookaheadRepr::Inline { .. }
            ));
        }
        let order = AccessOrder::cyclic(100);
        let observation = detector.on_access(LayerId(5), Some(&order));
        assert_eq!(observation.lookahead.len(), 8);
        assert!(matches!(
            observation.lookahead.repr,
            LookaheadRepr::Inline { .. }
        ));
    }

    /// Runs a sequential scan of `0..count` until the detector asks for the
    /// cyclic order; returns the access that asked.
    fn scan_until_asked(detector: &mut PatternDetector, from: u32, count: u32) -> Option<u32> {
        (from..from + count).find(|&id| detector.on_access(LayerId(id), None).declare_cyclic)
    }

    #[test]
    fn auto_order_is_asked_again_after_it_was_withdrawn() {
        let cyclic = AccessOrder::cyclic(40);
        let mut detector = PatternDetector::new(40, 2);
        assert_eq!(scan_until_asked(&mut detector, 0, 20), Some(8));
        assert_eq!(detector.auto_order, AutoOrder::Requested);
        // Not declared yet: no second request.
        assert_eq!(scan_until_asked(&mut detector, 9, 3), None);
        // Declared, then withdrawn by someone else: asked again at once.
        assert!(
            !detector
                .on_access(LayerId(12), Some(&cyclic))
                .declare_cyclic
        );
        assert_eq!(detector.auto_order, AutoOrder::Active);
        assert_eq!(scan_until_asked(&mut detector, 13, 1), Some(13));
    }

    #[test]
    fn a_user_order_replaces_the_auto_order_so_a_break_does_not_withdraw_it() {
        let user = AccessOrder::new(ids(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]), 40).unwrap();
        let mut detector = PatternDetector::new(40, 2);
        assert_eq!(scan_until_asked(&mut detector, 0, 20), Some(8));
        assert!(!detector.on_access(LayerId(9), Some(&user)).broke);
        assert_eq!(detector.auto_order, AutoOrder::Idle);
        let observation = detector.on_access(LayerId(30), Some(&user));
        assert!(observation.broke && !observation.undeclare_cyclic);
    }

    #[test]
    fn a_break_before_the_order_was_declared_still_withdraws_the_request() {
        let mut detector = PatternDetector::new(40, 2);
        assert_eq!(scan_until_asked(&mut detector, 0, 20), Some(8));
        let observation = detector.on_access(LayerId(30), None);
        assert!(observation.broke && observation.undeclare_cyclic);
        assert_eq!(detector.auto_order, AutoOrder::Idle);
        assert_eq!(detector.run(), 0);
        assert_eq!(detector.last(), Some(LayerId(30)));
    }

    #[test]
    fn ids_outside_the_model_are_never_sequential() {
        let mut detector = PatternDetector::new(3, 4);
        for id in [0, 1, 2, 3, 4, 5] {
            let observation = detector.on_access(LayerId(id), None);
            assert!(observation.lookahead.iter().all(|l| l.index() < 3));
        }
        let mut empty = PatternDetector::new(0, 4);
        assert!(empty.on_access(LayerId(0), None).lookahead.is_empty());
        assert!(empty.on_access(LayerId(1), None).lookahead.is_empty());
    }

    #[test]
    fn access_order_rejects_more_layers_than_ids() {
        let too_many = u32::MAX as usize + 1;
        assert!(matches!(
            AccessOrder::new(Vec::new(), too_many),
            Err(CacheError::TooManyLayers { .. })
        ));
    }
}
