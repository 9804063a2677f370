//! Size-aware offline references: an upper bound on the byte hit ratio that
//! no policy can beat, and a feasible offline schedule that really runs under
//! the budget.
//!
//! The engine's [`PolicyKind::FurthestNextUse`](crate::PolicyKind::FurthestNextUse) is Belady's
//! furthest-next-use rule, which is optimal only when every layer has the same
//! size. With unequal sizes it is a heuristic (it may keep one large layer
//! where several small ones with nearer reuse would fit), so it is not a
//! reference to state goals against. This module provides the references,
//! after Berger, Beckmann & Harchol-Balter, "Practical Bounds on Optimal
//! Caching with Variable Object Sizes" (SIGMETRICS 2018, "FOO").
//!
//! # The model (the simulator's rules)
//!
//! [`sim::simulate`](crate::sim::simulate) replays demand requests; request
//! `t` of layer `l` is a hit iff `l` is resident, and its *byte hit ratio* is
//! `Σ size of hit requests / Σ size of all requests` (sizes, not charges).
//! A resident layer is charged `charge(l) = max(min_layer_charge, size rounded
//! up to page_size)` and the sum of the charges of resident layers is at most
//! the budget after every request. A layer becomes resident only when it is
//! requested (a miss may admit it, evicting others, or bypass it).
//!
//! # The upper bound ([`upper_bound`]) and why it is valid
//!
//! Cut the trace into *reuse intervals*: for each pair of consecutive
//! requests `i < j` of the same layer `l`, the interval `I = [i, j)`. A
//! request is a hit only if it ends an interval whose layer stayed resident
//! from request `i` to request `j` (it cannot have been loaded in between,
//! since layers are loaded only when requested), so it was resident — and
//! charged — after each of the requests `i, i+1, …, j−1`. Let `x_I = 1` if
//! request `j` is a hit. Then every schedule of every policy (online or
//! offline, admitting or bypassing) gives a 0/1 vector `x` with
//!
//! ```text
//!   for every request t:   Σ_{I ∋ t} charge(I) · x_I  ≤  budget
//!   hit bytes           =  Σ_I size(I) · x_I
//! ```
//!
//! and an interval whose charge exceeds the budget always has `x_I = 0` (the
//! engine bypasses such a layer). Dropping the integrality (`0 ≤ x_I ≤ 1`)
//! only enlarges the feasible set, so the maximum of this linear program is
//! at least the hit bytes of any schedule: it is an upper bound on the byte
//! hit ratio achievable by *any* policy (the first request of a layer is a
//! miss for every policy and is in no interval). This is the "FOO-U" bound.
//!
//! **Packable capacity (a valid tightening).** In a real schedule the
//! intervals held across request `t` belong to distinct layers (a layer's
//! intervals are disjoint), each a layer with a reuse interval, so their
//! charges are a *subset* of those layers' charges summing to at most the
//! budget: at most `C = max { Σ_{l∈S} charge(l) : S ⊆ layers, Σ ≤ budget }`
//! ([`packable_capacity`], an exact subset sum). Every schedule's `x`
//! therefore also satisfies the constraints with `C` in place of `budget`,
//! and the LP with capacity `C ≤ budget` is still an upper bound, never a
//! looser one. It matters when the budget holds only a few layers: the
//! fractional LP fills the budget to the byte, a real cache cannot (on a
//! cyclic pass over 1 MiB blocks and two 1.02 MiB embedding/head layers at
//! 10% of the model, 2.7 MiB, at most two layers fit at once: the fractional
//! bound is 0.100, the packable one 0.075). The segmented relaxation uses,
//! per segment, the layers of the intervals counted in it. It is checked
//! against a brute-force exact optimum in `tests/offline_bound.rs`.
//!
//! The LP is solved exactly as a min-cost flow (the interval LP of Berger et
//! al., in its "k-track" form): nodes `0..=T` (one per request boundary),
//! a line edge `t → t+1` of capacity `C` and cost 0 (unused cache
//! bytes at time `t`), and per interval an edge `i → j` of capacity
//! `charge(I)` and cost `−size(I)/charge(I)` per byte (bytes of cache that
//! hold `I`). A flow of value `C` from `0` to `T` crosses every cut
//! `(t, t+1)` with exactly `C` units, so the interval edges crossing it
//! carry at most `C`: flows are exactly the LP's `charge(I) · x_I`, and
//! the cost is minus the hit bytes. It is solved by successive shortest paths
//! (Dijkstra with potentials; the initial potentials come from the acyclic
//! graph). Costs are integers: `size/charge` rounded *up* to a multiple of
//! 2^-30, which can only raise the optimum, so the bound stays valid (and is
//! above the exact LP by less than `2^-30` of the requested bytes).
//!
//! # The feasible schedule ([`FlowSchedule`])
//!
//! Berger et al.'s "FOO-L": keep the intervals the LP caches *entirely*
//! (`x_I = 1`); their charges at any time sum to at most the LP's, hence to
//! at most the budget, so caching exactly them is a valid schedule. Then,
//! greedily, add every other interval that still fits at every request it
//! covers; [`OfflineBound::feasible_choice`] keeps the best of four such
//! packings (seeded with the LP's whole intervals or empty; by value per
//! charged byte and request, or smallest charge first), each one valid, so
//! the best is too (an offline policy may pick it in hindsight). The result
//! is replayed
//! by [`FlowSchedule`], a [`CacheModel`] that holds the chosen layers,
//! evicts only layers it will not hit again (at admissions, like the
//! engine), and never exceeds the budget (it would bypass instead and count
//! an [`overflows`](FlowSchedule::overflows), which the tests require to be
//! 0). Its byte hit ratio is therefore achievable. It is not always above
//! the size-oblivious Belady's (also a feasible schedule): on long random
//! traces the greedy packing loses up to ~0.016 to it (see the `hit_ratios`
//! example's report); it wins where sizes matter (tests/offline_bound.rs).
//!
//! # Cost
//!
//! Successive shortest paths take about one Dijkstra per reuse interval the
//! LP keeps (values `size/charge` differ per layer, so paths rarely tie):
//! `O(n · T log T)` for `n` intervals over `T` requests. Well under a second
//! on the 10,000-request traces; too slow on the 100,000-request ones, so
//! [`solve`] splits traces longer than [`EXACT_REQUESTS`] into segments
//! ([`solve_in_segments`]: a further relaxation, valid but looser, most on
//! traces whose reuse distances are long compared with a segment). Evaluation
//! only: nothing here is used by the engine.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::config::{EngineConfig, LayerId};
use crate::sim::{CacheModel, Trace};

/// Fixed-point scale of the per-byte value `size / charge` (2^30).
const VALUE_SCALE: u64 = 1 << 30;

/// One reuse interval `[start, end)` of `layer`: request `end` is a hit iff
/// the layer stays resident after requests `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReuseInterval {
    /// The layer requested at `start` and at `end`.
    pub layer: LayerId,
    /// Position of the earlier request.
    pub start: usize,
    /// Position of the next request of the same layer.
    pub end: usize,
    /// Bytes a hit at `end` serves (the layer's size).
    pub size: u64,
    /// Bytes the layer is charged while resident.
    pub charge: u64,
}

/// The reuse intervals of `trace` under `config`'s charging rule, by start.
pub fn reuse_intervals(trace: &Trace, config: &EngineConfig) -> Vec<ReuseInterval> {
    let mut last: Vec<Option<usize>> = vec![None; trace.layer_sizes.len()];
    let mut intervals = Vec::new();
    for (position, &id) in trace.accesses.iter().enumerate() {
        let Some(slot) = last.get_mut(id.index()) else {
            continue;
        };
        if let Some(start) = *slot {
            let size = trace.layer_sizes.get(id.index()).copied().unwrap_or(0);
            intervals.push(ReuseInterval {
                layer: id,
                start,
                end: position,
                size,
                charge: config.charge_for(size),
            });
        }
        *slot = Some(position);
    }
    intervals.sort_by_key(|interval| (interval.start, interval.end));
    intervals
}

/// The solved relaxation: the upper bound and how much of each interval the
/// LP keeps.
#[derive(Clone, Debug)]
pub struct OfflineBound {
    /// Every reuse interval (see [`reuse_intervals`]).
    pub intervals: Vec<ReuseInterval>,
    /// Charged bytes of each interval the LP keeps (`charge · x_I`).
    pub kept: Vec<u64>,
    /// Upper bound on the hit bytes of any schedule.
    pub hit_bytes_bound: f64,
    /// Bytes requested by the trace (the simulator's denominator).
    pub requested_bytes: u64,
    /// The budget the bound holds for.
    pub budget: u64,
    /// The cache capacity the relaxation used: the largest sum of charges of
    /// the layers with a reuse interval that fits in `budget` (see
    /// [`packable_capacity`]; the largest over the segments when segmented).
    pub capacity: u64,
    /// Whether the bound is the exact LP optimum (one segment), rather than
    /// the segmented relaxation.
    pub exact: bool,
}

impl OfflineBound {
    /// The upper bound on the byte hit ratio (0 for an empty trace).
    pub fn byte_hit_ratio(&self) -> f64 {
        if self.requested_bytes == 0 {
            0.0
        } else {
            (self.hit_bytes_bound / self.requested_bytes as f64).min(1.0)
        }
    }

    /// Byte hit ratio of Berger et al.'s rounding alone (keep only the
    /// intervals the LP keeps whole); [`FlowSchedule`] does at least as well.
    pub fn rounded_byte_hit_ratio(&self) -> f64 {
        let bytes: u64 = self
            .intervals
            .iter()
            .zip(&self.kept)
            .filter(|(interval, kept)| **kept == interval.charge)
            .map(|(interval, _)| interval.size)
            .sum();
        if self.requested_bytes == 0 {
            0.0
        } else {
            bytes as f64 / self.requested_bytes as f64
        }
    }

    /// Whether each interval is kept by the feasible schedule: the best (in
    /// hit bytes) of four greedy packings, each of which adds an interval
    /// only if it still fits under the budget at every request it covers.
    /// Orders: the intervals the LP keeps whole first or not, then by value
    /// per charged byte and request (`size / (charge · length)`) or by charge
    /// (smallest first). Each packing is a valid schedule, so the best is too.
    pub fn feasible_choice(&self) -> Vec<bool> {
        let count = self.intervals.len();
        let whole = |k: usize| {
            self.intervals
                .get(k)
                .zip(self.kept.get(k))
                .is_some_and(|(interval, kept)| *kept == interval.charge)
        };
        let density = |k: usize| {
            self.intervals.get(k).map_or(0.0, |i| {
                i.size as f64 / (i.charge.max(1) as f64 * (i.end - i.start).max(1) as f64)
            })
        };
        let charge = |k: usize| self.intervals.get(k).map_or(u64::MAX, |i| i.charge);
        let mut by_density: Vec<usize> = (0..count).collect();
        by_density.sort_by(|&a, &b| density(b).total_cmp(&density(a)).then(a.cmp(&b)));
        let mut by_charge: Vec<usize> = (0..count).collect();
        by_charge.sort_by(|&a, &b| {
            charge(a)
                .cmp(&charge(b))
                .then(density(b).total_cmp(&density(a)))
                .then(a.cmp(&b))
        });
        let mut best: Option<(u64, Vec<bool>)> = None;
        for lp_first in [true, false] {
            for order in [&by_density, &by_charge] {
                let sequence: Vec<usize> = if lp_first {
                    let (mut first, rest): (Vec<usize>, Vec<usize>) =
                        order.iter().partition(|&&k| whole(k));
                    first.extend(rest);
                    first
                } else {
                    order.clone()
                };
                let chosen = self.pack(&sequence);
                let hit_bytes: u64 = self
                    .intervals
                    .iter()
                    .zip(&chosen)
                    .filter(|(_, c)| **c)
                    .map(|(interval, _)| interval.size)
                    .fold(0, u64::saturating_add);
                if best.as_ref().is_none_or(|(b, _)| hit_bytes > *b) {
                    best = Some((hit_bytes, chosen));
                }
            }
        }
        best.map(|(_, chosen)| chosen)
            .unwrap_or_else(|| vec![false; count])
    }

    /// Takes intervals in `order`, each if it still fits under the budget at
    /// every request it covers.
    fn pack(&self, order: &[usize]) -> Vec<bool> {
        let mut chosen = vec![false; self.intervals.len()];
        let length = self.intervals.iter().map(|i| i.end).max().unwrap_or(0) + 1;
        let mut occupancy = vec![0u64; length];
        for &k in order {
            let Some(interval) = self.intervals.get(k) else {
                continue;
            };
            let Some(span) = occupancy.get_mut(interval.start..interval.end) else {
                continue;
            };
            let fits = interval.charge <= self.budget
                && span
                    .iter()
                    .all(|&used| used.saturating_add(interval.charge) <= self.budget);
            if fits {
                for used in span {
                    *used += interval.charge;
                }
                if let Some(c) = chosen.get_mut(k) {
                    *c = true;
                }
            }
        }
        chosen
    }

    /// The feasible schedule as a [`CacheModel`] for `trace` (the trace this
    /// bound was solved for).
    pub fn schedule(&self, trace: &Trace, config: &EngineConfig) -> FlowSchedule {
        let mut keep_after = vec![false; trace.accesses.len()];
        for (interval, chosen) in self.intervals.iter().zip(self.feasible_choice()) {
            if chosen && let Some(k) = keep_after.get_mut(interval.start) {
                *k = true;
            }
        }
        FlowSchedule {
            keep_after,
            charges: trace
                .layer_sizes
                .iter()
                .map(|&s| config.charge_for(s))
                .collect(),
            resident: vec![false; trace.layer_sizes.len()],
            wanted: vec![false; trace.layer_sizes.len()],
            resident_list: Vec::new(),
            usage: 0,
            budget: config.budget_bytes,
            overflows: 0,
        }
    }
}

/// Traces up to this many requests are solved as one LP ([`solve`]);
/// longer ones in segments of [`SEGMENT_REQUESTS`] (see [`solve_in_segments`]).
pub const EXACT_REQUESTS: usize = 20_000;

/// Segment length of [`solve`] on traces longer than [`EXACT_REQUESTS`].
pub const SEGMENT_REQUESTS: usize = 1_000;

/// Upper bound on the byte hit ratio any policy can reach on `trace` with
/// `config.budget_bytes` and `config`'s charging rule (see the module docs
/// for the argument). Exact LP optimum up to [`EXACT_REQUESTS`] requests, the
/// (higher, still valid) segmented relaxation beyond.
pub fn upper_bound(trace: &Trace, config: &EngineConfig) -> f64 {
    solve(trace, config).byte_hit_ratio()
}

/// Solves the fractional relaxation exactly (one min-cost flow) when the
/// trace has at most [`EXACT_REQUESTS`] requests, else
/// [`solve_in_segments`] with [`SEGMENT_REQUESTS`].
pub fn solve(trace: &Trace, config: &EngineConfig) -> OfflineBound {
    if trace.accesses.len() <= EXACT_REQUESTS {
        solve_in_segments(trace, config, usize::MAX)
    } else {
        solve_in_segments(trace, config, SEGMENT_REQUESTS)
    }
}

/// Solves a further relaxation in segments of `segment` requests: interval
/// `I` counts in the segment holding its end, and the budget constraint is
/// kept only at the requests of that segment (the part of `I` before the
/// segment is not charged). Dropping constraints can only raise the optimum,
/// so the sum of the segments' optima is still an upper bound on any
/// schedule's hit bytes; with `segment >= trace length` it is the exact LP.
/// Each segment's capacity is the [`packable_capacity`] of the layers of
/// its own intervals (the ones its constraints count), so a segmented bound
/// may also be *below* the one-segment LP; it stays valid either way.
/// The cost is a min-cost flow per segment, so long traces stay tractable.
pub fn solve_in_segments(trace: &Trace, config: &EngineConfig, segment: usize) -> OfflineBound {
    let intervals = reuse_intervals(trace, config);
    let budget = config.budget_bytes;
    let requested_bytes = trace
        .accesses
        .iter()
        .map(|id| trace.layer_sizes.get(id.index()).copied().unwrap_or(0))
        .fold(0u64, u64::saturating_add);
    let segment = segment.max(1);
    let requests = trace.accesses.len();
    let mut kept = vec![0u64; intervals.len()];
    // Intervals by the segment of their end.
    let mut by_segment: Vec<Vec<usize>> = vec![Vec::new(); requests.div_ceil(segment).max(1)];
    for (k, interval) in intervals.iter().enumerate() {
        if let Some(list) = by_segment.get_mut(interval.end / segment) {
            list.push(k);
        }
    }
    let mut total_cost: i128 = 0;
    let mut capacity_max = 0;
    for (index, members) in by_segment.iter().enumerate() {
        let first = index * segment;
        let last = requests.min(first.saturating_add(segment));
        let nodes = last - first + 1;
        // The most the layers of this segment's intervals can occupy
        // together (a subset sum of their charges; see the module docs).
        let mut layers: Vec<(u32, u64)> = members
            .iter()
            .filter_map(|&k| intervals.get(k))
            .map(|interval| (interval.layer.0, interval.charge))
            .collect();
        layers.sort_unstable();
        layers.dedup();
        let capacity = packable_capacity(layers.iter().map(|&(_, charge)| charge), budget);
        capacity_max = capacity_max.max(capacity);
        let mut graph = FlowGraph::new(nodes);
        for t in 0..nodes - 1 {
            graph.add_edge(t, t + 1, capacity, 0);
        }
        let mut edges = Vec::with_capacity(members.len());
        for &k in members {
            let Some(interval) = intervals.get(k) else {
                continue;
            };
            if interval.charge > budget || interval.charge == 0 || interval.size == 0 {
                continue;
            }
            // size / charge per byte, rounded up (a larger value keeps the bound valid).
            let value = (u128::from(interval.size) * u128::from(VALUE_SCALE))
                .div_ceil(u128::from(interval.charge));
            let value = i64::try_from(value).unwrap_or(i64::MAX);
            let start = interval.start.max(first) - first;
            let end = interval.end - first;
            if start == end {
                // Constrained nowhere in this segment: counted whole.
                total_cost -= i128::from(value) * i128::from(interval.charge);
                if let Some(slot) = kept.get_mut(k) {
                    *slot = interval.charge;
                }
                continue;
            }
            edges.push((k, graph.add_edge(start, end, interval.charge, -value)));
        }
        total_cost += graph.min_cost_flow(0, nodes - 1, capacity);
        for (k, edge) in edges {
            if let Some(slot) = kept.get_mut(k) {
                *slot = graph.flow(edge);
            }
        }
    }
    OfflineBound {
        intervals,
        kept,
        hit_bytes_bound: (-total_cost) as f64 / VALUE_SCALE as f64,
        requested_bytes,
        budget,
        capacity: capacity_max,
        exact: segment >= requests,
    }
}

/// Largest bitset [`packable_capacity`] builds (bits, in units of the
/// charges' greatest common divisor): 2^24 bits = 2 MiB.
const MAX_SUBSET_SUM_BITS: u64 = 1 << 24;

/// The largest sum of a subset of `charges` (one per layer) that is at most
/// `budget`: no schedule can hold more charged bytes of these layers at
/// once. Exact (a subset-sum over a bitset, in units of the charges'
/// greatest common divisor, with each distinct charge's multiplicity split
/// in powers of two); returns `budget` itself (no tightening, still valid)
/// when the bitset would exceed 2^24 bits (2 MiB).
pub fn packable_capacity(charges: impl IntoIterator<Item = u64>, budget: u64) -> u64 {
    let mut charges: Vec<u64> = charges
        .into_iter()
        .filter(|&c| c > 0 && c <= budget)
        .collect();
    let total = charges.iter().fold(0u64, |sum, &c| sum.saturating_add(c));
    if total <= budget {
        return total;
    }
    let unit = charges.iter().fold(0u64, |g, &c| gcd(g, c)).max(1);
    let cap = budget / unit;
    if cap >= MAX_SUBSET_SUM_BITS {
        return budget;
    }
    charges.sort_unstable();
    // (charge in units, multiplicity), split into items of 1, 2, 4, … copies.
    let mut items = Vec::new();
    let mut i = 0;
    while let Some(&c) = charges.get(i) {
        let count = charges[i..].iter().take_while(|&&x| x == c).count() as u64;
        i += count as usize;
        let w = c / unit;
        let mut rest = count;
        let mut take = 1;
        while rest > 0 {
            let k = take.min(rest);
            items.push(w.saturating_mul(k));
            rest -= k;
            take *= 2;
        }
    }
    let bits = cap as usize + 1;
    let mut set = vec![0u64; bits.div_ceil(64)];
    if let Some(first) = set.first_mut() {
        *first = 1;
    }
    let last_mask = if bits.is_multiple_of(64) {
        u64::MAX
    } else {
        (1u64 << (bits % 64)) - 1
    };
    for w in items {
        if w > cap {
            continue;
        }
        let (words, shift) = ((w / 64) as usize, (w % 64) as u32);
        // set |= set << w, from the top word down (reads only lower words).
        for index in (words..set.len()).rev() {
            let low = set.get(index - words).copied().unwrap_or(0);
            let mut add = low << shift;
            if shift > 0 && index > words {
                add |= set.get(index - words - 1).copied().unwrap_or(0) >> (64 - shift);
            }
            if let Some(word) = set.get_mut(index) {
                *word |= add;
            }
        }
        if let Some(top) = set.last_mut() {
            *top &= last_mask;
        }
        if set
            .last()
            .is_some_and(|&top| top >> ((bits - 1) % 64) & 1 == 1)
        {
            break;
        }
    }
    let best = set
        .iter()
        .enumerate()
        .rev()
        .find(|&(_, &word)| word != 0)
        .map_or(0, |(index, &word)| {
            index as u64 * 64 + 63 - u64::from(word.leading_zeros())
        });
    best * unit
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The feasible offline schedule of [`OfflineBound::feasible_choice`],
/// replayed as a real budgeted cache.
#[derive(Clone, Debug)]
pub struct FlowSchedule {
    /// Per request: keep the layer resident until its next request.
    keep_after: Vec<bool>,
    charges: Vec<u64>,
    resident: Vec<bool>,
    /// Per layer: the schedule wants it resident (until its next request).
    wanted: Vec<bool>,
    resident_list: Vec<u32>,
    usage: u64,
    budget: u64,
    overflows: u64,
}

impl FlowSchedule {
    /// Admissions refused because the budget would be exceeded (0 unless the
    /// schedule is wrong).
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    /// Sum of the charges of resident layers.
    pub fn usage(&self) -> u64 {
        self.usage
    }
}

impl CacheModel for FlowSchedule {
    fn access(&mut self, id: LayerId, position: u64) -> bool {
        let i = id.index();
        let hit = self.resident.get(i).copied().unwrap_or(false);
        let keep = usize::try_from(position)
            .ok()
            .and_then(|p| self.keep_after.get(p).copied())
            .unwrap_or(false);
        if let Some(w) = self.wanted.get_mut(i) {
            *w = keep;
        }
        if hit || !keep {
            return hit;
        }
        let charge = self.charges.get(i).copied().unwrap_or(0);
        // Like the engine: evict only to make room, and only layers the
        // schedule will not hit again.
        let mut k = 0;
        while self.usage.saturating_add(charge) > self.budget && k < self.resident_list.len() {
            let victim = self.resident_list.get(k).copied().unwrap_or(0) as usize;
            if self.wanted.get(victim).copied().unwrap_or(true) {
                k += 1;
                continue;
            }
            self.resident_list.swap_remove(k);
            if let Some(r) = self.resident.get_mut(victim) {
                *r = false;
            }
            self.usage -= self.charges.get(victim).copied().unwrap_or(0);
        }
        if self.usage.saturating_add(charge) > self.budget {
            self.overflows += 1;
            return false;
        }
        if let Some(r) = self.resident.get_mut(i) {
            *r = true;
        }
        self.resident_list.push(id.0);
        self.usage += charge;
        false
    }
}

/// A residual graph for successive-shortest-path min-cost flow.
struct FlowGraph {
    /// Edge `e` and its reverse `e ^ 1`.
    to: Vec<u32>,
    capacity: Vec<u64>,
    cost: Vec<i64>,
    adjacency: Vec<Vec<u32>>,
}

impl FlowGraph {
    fn new(nodes: usize) -> Self {
        FlowGraph {
            to: Vec::new(),
            capacity: Vec::new(),
            cost: Vec::new(),
            adjacency: vec![Vec::new(); nodes],
        }
    }

    /// Adds `from → to` (forward edges only: `from < to`); returns its index.
    fn add_edge(&mut self, from: usize, to: usize, capacity: u64, cost: i64) -> usize {
        let e = self.to.len();
        self.to.extend([to as u32, from as u32]);
        self.capacity.extend([capacity, 0]);
        self.cost.extend([cost, -cost]);
        if let Some(list) = self.adjacency.get_mut(from) {
            list.push(e as u32);
        }
        if let Some(list) = self.adjacency.get_mut(to) {
            list.push(e as u32 + 1);
        }
        e
    }

    /// Flow on edge `e` (the residual capacity of its reverse).
    fn flow(&self, e: usize) -> u64 {
        self.capacity.get(e ^ 1).copied().unwrap_or(0)
    }

    /// Sends up to `amount` from `source` to `sink` at minimum cost, stopping
    /// early once another unit would not lower the cost; returns the cost.
    fn min_cost_flow(&mut self, source: usize, sink: usize, amount: u64) -> i128 {
        const INF: i64 = i64::MAX;
        let n = self.adjacency.len();
        // Initial potentials: shortest distances in the acyclic graph (every
        // edge goes forward, so node order is a topological order).
        let mut potential = vec![INF; n];
        if let Some(p) = potential.get_mut(source) {
            *p = 0;
        }
        for u in 0..n {
            let Some(&pu) = potential.get(u) else { break };
            if pu == INF {
                continue;
            }
            for &e in self.adjacency.get(u).into_iter().flatten() {
                let e = e as usize;
                if e & 1 == 1 {
                    continue;
                }
                let v = self.to[e] as usize;
                let candidate = pu + self.cost[e];
                if candidate < potential[v] {
                    potential[v] = candidate;
                }
            }
        }
        let mut sent = 0u64;
        let mut total: i128 = 0;
        let mut distance = vec![INF; n];
        let mut via = vec![u32::MAX; n];
        let mut heap = BinaryHeap::new();
        let mut level = vec![u32::MAX; n];
        let mut next_arc = vec![0usize; n];
        let mut queue = std::collections::VecDeque::new();
        while sent < amount {
            distance.fill(INF);
            via.fill(u32::MAX);
            distance[source] = 0;
            heap.push(Reverse((0i64, source as u32)));
            while let Some(Reverse((d, u))) = heap.pop() {
                let u = u as usize;
                if d > distance[u] {
                    continue;
                }
                for &e in &self.adjacency[u] {
                    let e = e as usize;
                    if self.capacity[e] == 0 {
                        continue;
                    }
                    let v = self.to[e] as usize;
                    if potential[v] == INF {
                        continue;
                    }
                    let reduced = self.cost[e] + potential[u] - potential[v];
                    let candidate = d + reduced.max(0);
                    if candidate < distance[v] {
                        distance[v] = candidate;
                        via[v] = e as u32;
                        heap.push(Reverse((candidate, v as u32)));
                    }
                }
            }
            let to_sink = distance[sink];
            if to_sink == INF {
                break;
            }
            for v in 0..n {
                if potential[v] != INF {
                    potential[v] += distance[v].min(to_sink);
                }
            }
            // Every path of zero reduced cost now costs potential[sink] −
            // potential[source]: the shortest distance. Costs of later paths
            // never decrease, so stop once it is no gain.
            let path_cost = potential[sink] - potential[source];
            if path_cost >= 0 {
                break;
            }
            // Send a blocking flow along the shortest (zero reduced cost)
            // paths, level graph by level graph, before the next Dijkstra.
            loop {
                level.fill(u32::MAX);
                level[source] = 0;
                queue.clear();
                queue.push_back(source);
                while let Some(u) = queue.pop_front() {
                    for &e in &self.adjacency[u] {
                        let e = e as usize;
                        let v = self.to[e] as usize;
                        if self.capacity[e] > 0
                            && level[v] == u32::MAX
                            && potential[v] != INF
                            && self.cost[e] + potential[u] - potential[v] == 0
                        {
                            level[v] = level[u] + 1;
                            queue.push_back(v);
                        }
                    }
                }
                if level[sink] == u32::MAX || sent >= amount {
                    break;
                }
                next_arc.fill(0);
                loop {
                    let pushed = self.push(
                        source,
                        sink,
                        amount - sent,
                        &level,
                        &potential,
                        &mut next_arc,
                    );
                    if pushed == 0 {
                        break;
                    }
                    sent += pushed;
                    total += i128::from(path_cost) * i128::from(pushed);
                    if sent >= amount {
                        break;
                    }
                }
            }
        }
        total
    }

    /// One augmenting path in the level graph of zero-reduced-cost edges
    /// (iterative DFS with current arcs); returns the amount pushed.
    fn push(
        &mut self,
        source: usize,
        sink: usize,
        limit: u64,
        level: &[u32],
        potential: &[i64],
        next_arc: &mut [usize],
    ) -> u64 {
        let mut path: Vec<usize> = Vec::new();
        let mut u = source;
        loop {
            if u == sink {
                let bottleneck = path
                    .iter()
                    .map(|&e| self.capacity[e])
                    .min()
                    .unwrap_or(0)
                    .min(limit);
                for &e in &path {
                    self.capacity[e] -= bottleneck;
                    self.capacity[e ^ 1] += bottleneck;
                }
                return bottleneck;
            }
            let mut advanced = false;
            while let Some(&e) = self.adjacency[u].get(next_arc[u]) {
                let e = e as usize;
                let v = self.to[e] as usize;
                if self.capacity[e] > 0
                    && level[v] == level[u].wrapping_add(1)
                    && self.cost[e] + potential[u] - potential[v] == 0
                {
                    path.push(e);
                    u = v;
                    advanced = true;
                    break;
                }
                next_arc[u] += 1;
            }
            if !advanced {
                // Dead end: retreat and skip the arc that led here.
                let Some(e) = path.pop() else {
                    return 0;
                };
                u = self.to[e ^ 1] as usize;
                next_arc[u] += 1;
            }
        }
    }
}
