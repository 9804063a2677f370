//! [`Engine`]: resident entries, charges, pins, priorities and the budget.

use crate::config::{AccessKind, Decision, EngineConfig, LayerId, PolicyKind};
use crate::error::CacheError;
use crate::policy::adaptive::AdaptivePolicy;
use crate::policy::arc::ArcPolicy;
use crate::policy::belady::UnsizedBeladyPolicy;
use crate::policy::classic::ClassicPolicy;
use crate::policy::lru::LruPolicy;
use crate::policy::s3fifo::S3FifoPolicy;
use crate::policy::{Candidate, Plan, Policy, Slot};

/// The priority every layer starts with (and returns to on
/// [`Engine::reset_priorities`]): the midpoint of `0.0..=1.0`.
pub const DEFAULT_PRIORITY: f32 = 0.5;

/// TinyAI's priority scale, as callers of the store and the C API use it: any
/// finite number, higher kept longer, 1.0 by default.
pub const TINYAI_DEFAULT_PRIORITY: f32 = 1.0;

/// Maps a priority on TinyAI's unbounded scale to the engine's `0.0..=1.0`:
/// the logistic `1 / (1 + e^(−2·(p − 1)))`. Strictly increasing, so a higher
/// priority is never weighed less; TinyAI's default 1.0 maps to the engine's
/// default 0.5; 2.0 maps to 0.88 and 0.0 to 0.12; beyond about ±4 it
/// saturates. NaN maps to NaN (callers refuse it first).
pub fn engine_priority(tinyai_priority: f32) -> f32 {
    let exponent = -2.0 * (f64::from(tinyai_priority) - 1.0);
    (1.0 / (1.0 + exponent.exp())) as f32
}

/// The inverse of [`engine_priority`] on `(0, 1)`, for feeding engine-scale
/// priorities (the simulator's traces) through the store; 0 and 1 map to the
/// finite priorities whose images round to them.
pub fn tinyai_priority(engine_priority: f32) -> f32 {
    let clamped = f64::from(engine_priority).clamp(1e-6, 1.0 - 1e-6);
    (1.0 + (clamped / (1.0 - clamped)).ln() / 2.0) as f32
}

/// How a caller that pins entries outside the engine takes part in victim
/// choice (see [`Engine::request_claiming`]).
pub trait Claims {
    /// Asks to evict `id`: return `true` to hand it over (the caller will drop
    /// its memory if the decision admits), `false` if it is in use (pinned).
    fn claim(&mut self, id: LayerId) -> bool;
    /// Hands back a claimed entry: the decision bypassed after all, so `id`
    /// stays resident.
    fn release(&mut self, id: LayerId);
}

/// Claims that always succeed: the engine's own pins are the only ones.
struct NoClaims;

impl Claims for NoClaims {
    fn claim(&mut self, _id: LayerId) -> bool {
        true
    }

    fn release(&mut self, _id: LayerId) {}
}

/// A deterministic, budgeted eviction engine over a fixed set of layers.
///
/// Layer `i` of the sizes given to [`Engine::new`] is [`LayerId`]`(i)`. The
/// engine decides which layers are resident; it owns no layer memory.
///
/// * [`request`](Engine::request) records an access and, on a miss, decides
///   admit (with victims) or bypass.
/// * Pinned entries ([`pin`](Engine::pin)) are never victims.
/// * `usage() <= budget()` always holds, except for pinned entries kept over
///   a budget lowered by [`set_budget`](Engine::set_budget).
pub struct Engine {
    config: EngineConfig,
    slots: Vec<Slot>,
    usage: u64,
    resident_count: usize,
    policy: Box<dyn Policy>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("layers", &self.slots.len())
            .field("usage", &self.usage)
            .field("resident_count", &self.resident_count)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Engine {
    /// Creates an engine for `layer_sizes.len()` layers (sizes in bytes).
    ///
    /// # Errors
    /// [`CacheError::ZeroBudget`], [`CacheError::InvalidPageSize`] for an
    /// invalid config, [`CacheError::TooManyLayers`] for more than
    /// `u32::MAX` layers.
    pub fn new(config: EngineConfig, layer_sizes: &[u64]) -> Result<Engine, CacheError> {
        config.validate()?;
        let max = u32::MAX as usize;
        if layer_sizes.len() > max {
            return Err(CacheError::TooManyLayers {
                count: layer_sizes.len(),
                max,
            });
        }
        let slots = layer_sizes
            .iter()
            .map(|&size| Slot {
                charge: config.charge_for(size),
                priority: DEFAULT_PRIORITY,
                pin_count: 0,
                resident: false,
                remove_pending: false,
            })
            .collect();
        let n = layer_sizes.len();
        let mut policy: Box<dyn Policy> = match config.policy {
            PolicyKind::Lru => Box::new(LruPolicy::new()),
            PolicyKind::TinyAiClassic => Box::new(ClassicPolicy::new(n)),
            PolicyKind::Adaptive => Box::new(AdaptivePolicy::new(n)),
            PolicyKind::FurthestNextUse => Box::new(UnsizedBeladyPolicy::new(n)),
            PolicyKind::Arc => Box::new(ArcPolicy::new(n)),
            PolicyKind::S3Fifo => Box::new(S3FifoPolicy::new(n)),
        };
        policy.set_budget(config.budget_bytes);
        Ok(Engine {
            config,
            slots,
            usage: 0,
            resident_count: 0,
            policy,
        })
    }

    fn index(&self, id: LayerId) -> Result<usize, CacheError> {
        let i = id.index();
        if i < self.slots.len() {
            Ok(i)
        } else {
            Err(CacheError::UnknownLayer {
                id,
                layer_count: self.slots.len(),
            })
        }
    }

    fn slot(&self, id: LayerId) -> Result<&Slot, CacheError> {
        let i = self.index(id)?;
        self.slots.get(i).ok_or(CacheError::UnknownLayer {
            id,
            layer_count: self.slots.len(),
        })
    }

    fn slot_mut(&mut self, id: LayerId) -> Result<&mut Slot, CacheError> {
        let layer_count = self.slots.len();
        self.slots
            .get_mut(id.index())
            .ok_or(CacheError::UnknownLayer { id, layer_count })
    }

    /// The number of layers the engine was created with.
    pub fn layer_count(&self) -> usize {
        self.slots.len()
    }

    /// The bytes charged for layer `id` while resident:
    /// `max(min_layer_charge, size rounded up to page_size)` (see
    /// [`EngineConfig::charge_for`]); a layer of size 0 is charged
    /// `min_layer_charge`.
    ///
    /// # Errors
    /// [`CacheError::UnknownLayer`].
    pub fn charge(&self, id: LayerId) -> Result<u64, CacheError> {
        Ok(self.slot(id)?.charge)
    }

    /// Records an access to `id` at logical time `now` and decides.
    ///
    /// * Resident → [`Decision::Hit`] (a `Demand` hit is recorded as an
    ///   access; a `Prefetch` hit changes nothing).
    /// * Not resident, charge larger than the whole budget → [`Decision::Bypass`].
    /// * Not resident and it fits in the free budget → [`Decision::Admit`] with no victims.
    /// * Otherwise the policy picks unpinned victims in its eviction order;
    ///   if the policy declines (it values a victim more than the candidate)
    ///   or pinned entries leave too little room → [`Decision::Bypass`] with
    ///   nothing evicted, else the victims are removed and returned.
    ///
    /// `now` is a logical time; policies that need time (`TinyAiClassic`)
    /// read it as milliseconds. Other policies count requests themselves.
    ///
    /// # Errors
    /// [`CacheError::UnknownLayer`].
    pub fn request(
        &mut self,
        id: LayerId,
        kind: AccessKind,
        now: u64,
    ) -> Result<Decision, CacheError> {
        self.request_claiming(id, kind, now, &mut NoClaims)
    }

    /// [`request`](Engine::request) for a caller that tracks pins itself,
    /// outside the engine (the store pins resident layers lock-free).
    ///
    /// Before an entry becomes a victim, the engine asks `claims` to
    /// [`claim`](Claims::claim) it; an entry whose claim fails is treated as
    /// pinned for this decision, and the policy plans again without it. If the
    /// decision ends in [`Decision::Bypass`], every entry claimed so far is
    /// handed back with [`Claims::release`]; with [`Decision::Admit`], exactly
    /// the returned victims were claimed. Decisions are those of `request`
    /// with the same entries pinned, so the engine stays deterministic for a
    /// given sequence of calls and claim answers.
    ///
    /// # Errors
    /// [`CacheError::UnknownLayer`].
    pub fn request_claiming(
        &mut self,
        id: LayerId,
        kind: AccessKind,
        now: u64,
        claims: &mut dyn Claims,
    ) -> Result<Decision, CacheError> {
        let i = self.index(id)?;
        let Some(slot) = self.slots.get(i) else {
            return Err(CacheError::UnknownLayer {
                id,
                layer_count: self.slots.len(),
            });
        };
        if slot.resident {
            if kind == AccessKind::Demand {
                if let Some(slot) = self.slots.get_mut(i) {
                    slot.remove_pending = false;
                }
                self.policy.on_hit(id.0, now, &self.slots);
            }
            return Ok(Decision::Hit);
        }
        let charge = slot.charge;
        let priority = slot.priority;
        if kind == AccessKind::Demand {
            self.policy.on_miss(id.0, now, &self.slots);
        }
        if charge > self.config.budget_bytes {
            return Ok(Decision::Bypass);
        }
        let needed = self
            .usage
            .saturating_add(charge)
            .saturating_sub(self.config.budget_bytes);
        let mut victims: Vec<LayerId> = Vec::new();
        if needed > 0 {
            let candidate = Candidate {
                id: id.0,
                kind,
                priority,
            };
            let Some(chosen) = self.plan_claimed(&candidate, needed, now, claims) else {
                return Ok(Decision::Bypass);
            };
            for &victim in &chosen {
                self.evict(victim);
            }
            victims = chosen.into_iter().map(LayerId).collect();
        }
        self.insert(id.0, now);
        Ok(Decision::Admit { victims })
    }

    /// Plans victims for `needed` bytes, claiming each through `claims`; an
    /// entry whose claim fails is held (pinned) while the policy plans again.
    /// Returns the claimed victims, or `None` (with every claim released) if
    /// the policy declines or too little is evictable.
    fn plan_claimed(
        &mut self,
        candidate: &Candidate,
        needed: u64,
        now: u64,
        claims: &mut dyn Claims,
    ) -> Option<Vec<u32>> {
        // Entries claimed (victims) or refused (pinned by the caller), both held
        // out of later plans by a temporary pin.
        let mut claimed: Vec<u32> = Vec::new();
        let mut refused: Vec<u32> = Vec::new();
        let mut freed = 0u64;
        let outcome = loop {
            let Plan {
                victims: chosen,
                freed: planned,
                declined,
            } = self
                .policy
                .plan(Some(candidate), needed - freed, now, &self.slots);
            if declined || planned < needed - freed {
                break false;
            }
            let mut all_claimed = true;
            for victim in chosen {
                let claim = claims.claim(LayerId(victim));
                if let Some(slot) = self.slots.get_mut(victim as usize) {
                    slot.pin_count += 1;
                    if claim {
                        freed = freed.saturating_add(slot.charge);
                    }
                }
                if claim {
                    claimed.push(victim);
                } else {
                    refused.push(victim);
                    all_claimed = false;
                    break;
                }
            }
            if all_claimed || freed >= needed {
                break true;
            }
        };
        for &held in claimed.iter().chain(&refused) {
            if let Some(slot) = self.slots.get_mut(held as usize) {
                slot.pin_count -= 1;
            }
        }
        if outcome {
            Some(claimed)
        } else {
            for &victim in &claimed {
                claims.release(LayerId(victim));
            }
            None
        }
    }

    /// Evicts entries in the policy's eviction order until `needed` bytes are
    /// freed or nothing more can be: for a caller whose memory is over its
    /// limit for reasons outside the engine (layers it serves outside the
    /// cache). There is no candidate, so the policy never declines. Each
    /// victim is claimed through `claims` first; an entry whose claim fails is
    /// held out and the policy plans again without it. Returns the evicted
    /// entries (all claimed, all removed), which may free less than `needed`.
    ///
    /// `held_out` lists entries the caller already knows it would refuse
    /// (pinned): they are left out of every plan at once, which saves a plan
    /// per refusal when many are pinned.
    pub fn evict_claiming(
        &mut self,
        needed: u64,
        now: u64,
        held_out: &[LayerId],
        claims: &mut dyn Claims,
    ) -> Vec<LayerId> {
        let mut victims = Vec::new();
        let mut refused: Vec<u32> = Vec::new();
        for id in held_out {
            if let Some(slot) = self.slots.get_mut(id.index()) {
                slot.pin_count += 1;
                refused.push(id.0);
            }
        }
        let mut freed = 0u64;
        while freed < needed {
            let plan = self.policy.plan(None, needed - freed, now, &self.slots);
            if plan.victims.is_empty() {
                break;
            }
            for victim in plan.victims {
                let Some(charge) = self.slots.get(victim as usize).map(|slot| slot.charge) else {
                    continue;
                };
                if claims.claim(LayerId(victim)) {
                    self.evict(victim);
                    victims.push(LayerId(victim));
                    freed = freed.saturating_add(charge);
                } else {
                    // Held out of later plans by a temporary pin; plan again.
                    if let Some(slot) = self.slots.get_mut(victim as usize) {
                        slot.pin_count += 1;
                    }
                    refused.push(victim);
                    break;
                }
            }
        }
        for held in refused {
            if let Some(slot) = self.slots.get_mut(held as usize) {
                slot.pin_count -= 1;
            }
        }
        victims
    }

    /// Records a demand hit of `id` if it is resident (returns whether it was);
    /// a layer that is not resident any more is ignored. For callers that
    /// learn of hits after the fact (the store's read buffers).
    pub fn record_hit(&mut self, id: LayerId, now: u64) -> bool {
        let i = id.index();
        match self.slots.get_mut(i) {
            Some(slot) if slot.resident => {
                slot.remove_pending = false;
                self.policy.on_hit(id.0, now, &self.slots);
                true
            }
            _ => false,
        }
    }

    fn insert(&mut self, id: u32, now: u64) {
        if let Some(slot) = self.slots.get_mut(id as usize) {
            slot.resident = true;
            slot.remove_pending = false;
            self.usage = self.usage.saturating_add(slot.charge);
            self.resident_count += 1;
            self.policy.on_insert(id, now, &self.slots);
        }
    }

    /// Drops a resident entry from the bookkeeping (pins are the caller's concern).
    fn evict(&mut self, id: u32) {
        if let Some(slot) = self.slots.get_mut(id as usize)
            && slot.resident
        {
            slot.resident = false;
            slot.remove_pending = false;
            self.usage = self.usage.saturating_sub(slot.charge);
            self.resident_count -= 1;
            self.policy.on_remove(id, &self.slots);
        }
    }

    /// Releases `id`: returns `Ok(true)` if it was resident and is now removed,
    /// `Ok(false)` if it was not resident.
    ///
    /// A **pinned** entry is not removed at once: it is marked for removal,
    /// stays resident and charged (so a guard holding the pin stays valid),
    /// and is removed by the [`unpin`](Engine::unpin) that drops its pin count
    /// to zero; `remove` then returns `Ok(false)`. A demand request for a
    /// marked entry is a hit and cancels the mark. After `unpin`, check
    /// [`is_resident`](Engine::is_resident) to learn whether to drop its memory.
    ///
    /// # Errors
    /// [`CacheError::UnknownLayer`].
    pub fn remove(&mut self, id: LayerId) -> Result<bool, CacheError> {
        let slot = self.slot_mut(id)?;
        if !slot.resident {
            return Ok(false);
        }
        if slot.pin_count > 0 {
            slot.remove_pending = true;
            return Ok(false);
        }
        self.evict(id.0);
        Ok(true)
    }

    /// Pins a resident entry (pins nest): it will not be evicted until every
    /// pin is released with [`unpin`](Engine::unpin). Returns `Ok(false)`
    /// (and pins nothing) if `id` is not resident.
    ///
    /// # Errors
    /// [`CacheError::UnknownLayer`], [`CacheError::PinOverflow`].
    pub fn pin(&mut self, id: LayerId) -> Result<bool, CacheError> {
        let slot = self.slot_mut(id)?;
        if !slot.resident {
            return Ok(false);
        }
        slot.pin_count = slot
            .pin_count
            .checked_add(1)
            .ok_or(CacheError::PinOverflow { id })?;
        Ok(true)
    }

    /// Releases one pin. When the count reaches zero, the entry is removed
    /// now if a [`remove`](Engine::remove) was deferred, or if usage is above
    /// the budget (lowered by [`set_budget`](Engine::set_budget) while entries
    /// were pinned). Check [`is_resident`](Engine::is_resident) after `unpin`
    /// to learn whether to drop the entry's memory. Hence: whenever usage is
    /// above the budget, every resident entry is pinned.
    ///
    /// # Errors
    /// [`CacheError::UnknownLayer`], [`CacheError::NotPinned`] if the pin
    /// count is already zero.
    pub fn unpin(&mut self, id: LayerId) -> Result<(), CacheError> {
        let over_budget = self.usage > self.config.budget_bytes;
        let slot = self.slot_mut(id)?;
        if slot.pin_count == 0 {
            return Err(CacheError::NotPinned { id });
        }
        slot.pin_count -= 1;
        if slot.pin_count == 0 && (slot.remove_pending || over_budget) {
            self.evict(id.0);
        }
        Ok(())
    }

    /// The number of outstanding pins on `id` (0 if not resident).
    ///
    /// # Errors
    /// [`CacheError::UnknownLayer`].
    pub fn pin_count(&self, id: LayerId) -> Result<u32, CacheError> {
        Ok(self.slot(id)?.pin_count)
    }

    /// Sets the priority of `id` (resident or not; kept across evictions).
    ///
    /// Priorities live in `0.0..=1.0`; values outside (including ±∞) are
    /// clamped. The default is [`DEFAULT_PRIORITY`] (0.5). `Adaptive`
    /// multiplies the value of keeping an entry by `2^(6·priority)`, in steps
    /// of 1/12 (each +1/6 of priority doubles it), so 1.0 is worth 8× the
    /// default and 64× 0.0. Of two entries with the same size and the same
    /// (predicted) use, the lower priority, by at least one step, is always
    /// evicted first; a higher-priority entry can still be evicted for a
    /// lower one that is used far more often per byte (see
    /// [`policy::adaptive`](crate::policy::adaptive)). `TinyAiClassic`
    /// weighs it by 0.6 in its score; `Lru`, `Belady`, `Arc` and `S3Fifo` ignore it.
    ///
    /// # Errors
    /// [`CacheError::UnknownLayer`], [`CacheError::NanPriority`].
    pub fn set_priority(&mut self, id: LayerId, priority: f32) -> Result<(), CacheError> {
        if priority.is_nan() {
            self.index(id)?;
            return Err(CacheError::NanPriority { id });
        }
        let clamped = priority.clamp(0.0, 1.0) + 0.0;
        let slot = self.slot_mut(id)?;
        let old = slot.priority;
        if old.to_bits() == clamped.to_bits() {
            return Ok(());
        }
        slot.priority = clamped;
        self.policy.on_priority_change(id.0, old, &self.slots);
        Ok(())
    }

    /// The priority of `id` (see [`set_priority`](Engine::set_priority)).
    ///
    /// # Errors
    /// [`CacheError::UnknownLayer`].
    pub fn priority(&self, id: LayerId) -> Result<f32, CacheError> {
        Ok(self.slot(id)?.priority)
    }

    /// Sets every layer's priority back to [`DEFAULT_PRIORITY`].
    pub fn reset_priorities(&mut self) {
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots.get_mut(i) else {
                break;
            };
            let old = slot.priority;
            if old.to_bits() != DEFAULT_PRIORITY.to_bits() {
                slot.priority = DEFAULT_PRIORITY;
                self.policy.on_priority_change(i as u32, old, &self.slots);
            }
        }
    }

    /// A hint: the known cyclic access order (e.g. the forward pass), or
    /// `None` to drop it. Unknown ids are ignored. Used by `Adaptive` (see
    /// [`policy::adaptive`](crate::policy::adaptive)); ignored by the others.
    pub fn set_access_order(&mut self, order: Option<Vec<LayerId>>) {
        let ids: Option<Vec<u32>> = order.map(|o| o.into_iter().map(|id| id.0).collect());
        self.policy.set_access_order(ids.as_deref());
    }

    /// The future demand trace, for `Belady` only (ignored by the others):
    /// the `n`-th demand request after this call is assumed to be `trace[n]`.
    pub fn set_future_trace(&mut self, trace: Vec<LayerId>) {
        let ids: Vec<u32> = trace.into_iter().map(|id| id.0).collect();
        self.policy.set_future_trace(&ids);
    }

    /// Changes the budget and evicts, in the policy's order, until usage fits;
    /// returns the victims (the caller drops their memory). Pinned entries are
    /// kept even if that leaves usage above the new budget. A budget of 0 is
    /// allowed here (everything unpinned is evicted and every request bypasses).
    pub fn set_budget(&mut self, budget_bytes: u64) -> Vec<LayerId> {
        self.config.budget_bytes = budget_bytes;
        self.policy.set_budget(budget_bytes);
        let needed = self.usage.saturating_sub(budget_bytes);
        if needed == 0 {
            return Vec::new();
        }
        let plan = self.policy.plan(None, needed, 0, &self.slots);
        let mut victims = Vec::with_capacity(plan.victims.len());
        for victim in plan.victims {
            self.evict(victim);
            victims.push(LayerId(victim));
        }
        victims
    }

    /// Sum of the charges of resident entries, in bytes.
    pub fn usage(&self) -> u64 {
        self.usage
    }

    /// The current budget, in bytes.
    pub fn budget(&self) -> u64 {
        self.config.budget_bytes
    }

    /// Whether `id` is resident (false for unknown ids).
    pub fn is_resident(&self, id: LayerId) -> bool {
        self.slots.get(id.index()).is_some_and(|s| s.resident)
    }

    /// Whether `id` is resident and pinned (false for unknown ids).
    pub fn is_pinned(&self, id: LayerId) -> bool {
        self.slots
            .get(id.index())
            .is_some_and(|s| s.resident && s.pin_count > 0)
    }

    /// Number of resident entries.
    pub fn resident_count(&self) -> usize {
        self.resident_count
    }

    /// The configured policy.
    pub fn policy(&self) -> PolicyKind {
        self.config.policy
    }

    /// The configuration (with the current budget).
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }
}
