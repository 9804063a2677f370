//! Deterministic, budgeted, priority-aware eviction engine for layer caches.
//!
//! # Architecture invariant
//!
//! **tinyai-cache never performs I/O, never spawns threads and never reads a
//! clock.** Time is an argument (`now: u64`, a logical time or sequence
//! number chosen by the caller). The engine is deterministic: the same
//! sequence of calls on the same configuration always yields the same
//! [`Decision`]s and victims. It owns no layer memory either: it only decides
//! *which* layers should be resident; the caller (`tinyai-store`) owns the
//! bytes and drops the memory of every victim the engine reports.
//!
//! # Module map
//!
//! | module | contents |
//! | --- | --- |
//! | [`config`] (re-exported) | [`LayerId`], [`EngineConfig`], [`PolicyKind`], [`AccessKind`], [`Decision`] and the charging rule |
//! | [`engine`] (re-exported) | [`Engine`]: bookkeeping of resident entries, charges, pins, priorities and the budget invariant |
//! | [`policy`] | the internal `Policy` trait and its implementations: [`Lru`](PolicyKind::Lru), [`TinyAiClassic`](PolicyKind::TinyAiClassic), [`Adaptive`](PolicyKind::Adaptive), [`FurthestNextUse`](PolicyKind::FurthestNextUse) (furthest next use, size-oblivious: not an optimum when sizes differ; see [`offline`]), and the benchmark peers [`Arc`](PolicyKind::Arc) and [`S3Fifo`](PolicyKind::S3Fifo) (byte-sized, from their papers) |
//! | [`offline`] | size-aware offline references: the upper bound on byte hit ratio of any policy (Berger et al.'s fractional relaxation, solved as a min-cost flow) and a feasible offline schedule ([`offline::FlowSchedule`]) |
//! | [`sim`] | deterministic trace generators (`forward_passes`, `forward_backward`, `zipf_experts`, `uniform_random`, `phase_change`, `priority_hot`) and the hit-ratio simulator |
//! | [`stream`] | per-stream access-pattern detection ([`stream::PatternDetector`], [`stream::AccessOrder`]) and the streaming window's admission of layers read ahead outside the cache ([`stream::StreamingWindow`]) |
//! | [`workloads`] | access traces of inference workload families (dense, mixture-of-experts, prefill then decode, concurrent sequences, early exit, speculative decoding, LoRA swaps) over models with unequal layer sizes, and the tuning and benchmark seeds |
//! | [`error`] (re-exported) | [`CacheError`], the crate's single error enum |
//!
//! # Charging
//!
//! A layer of `size` bytes is charged
//! `max(min_layer_charge, size rounded up to page_size)` bytes, and
//! [`Engine::usage`] is the sum of the charges of resident entries. A layer
//! of size 0 is therefore charged `min_layer_charge` (which may itself be 0
//! if configured so). See [`EngineConfig::charge_for`].
//!
//! # Budget invariant
//!
//! `usage() <= budget()` holds after every call, except that pinned entries
//! are never evicted: if a [`Engine::set_budget`] shrinks the budget below
//! the charge of the pinned entries, usage may stay above it until they are
//! unpinned and evicted. A request never admits a layer if that would need
//! evicting a pinned entry; it returns [`Decision::Bypass`] instead.
//!
//! # Example
//!
//! ```
//! use tinyai_cache::{AccessKind, Decision, Engine, EngineConfig, LayerId, PolicyKind};
//!
//! let config = EngineConfig { budget_bytes: 8192, min_layer_charge: 4096, page_size: 4096, policy: PolicyKind::Lru };
//! let mut engine = Engine::new(config, &[4096, 100, 4000])?;
//! assert_eq!(engine.request(LayerId(0), AccessKind::Demand, 1)?, Decision::Admit { victims: vec![] });
//! assert_eq!(engine.request(LayerId(1), AccessKind::Demand, 2)?, Decision::Admit { victims: vec![] });
//! assert_eq!(engine.request(LayerId(0), AccessKind::Demand, 3)?, Decision::Hit);
//! // Layer 1 is the least recently used entry, so it makes room for layer 2.
//! assert_eq!(engine.request(LayerId(2), AccessKind::Demand, 4)?, Decision::Admit { victims: vec![LayerId(1)] });
//! assert!(engine.usage() <= engine.budget());
//! # Ok::<(), tinyai_cache::CacheError>(())
//! ```
#![deny(missing_docs)]

pub mod config;
pub mod engine;
pub mod error;
pub mod offline;
pub mod policy;
pub mod sim;
pub mod stream;
pub mod workloads;

pub use config::{AccessKind, Decision, EngineConfig, LayerId, PolicyKind};
pub use engine::{Claims, Engine};
pub use error::CacheError;
