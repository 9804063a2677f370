//! The TinyAI layer store: open a `.tmai` model, get one layer's bytes at a time,
//! prefetch what comes next, and keep a bounded, well-chosen set of layers in memory.
//!
//! ```no_run
//! use tinyai_store::{MappedModel, StoreConfig};
//! # fn main() -> Result<(), tinyai_store::StoreError> {
//! let config = StoreConfig { max_cache_size: 100 << 20, ..StoreConfig::default() };
//! let model = MappedModel::open("model.tmai", config)?;
//! for layer in model.forward_pass(0..model.layer_count())? {
//!     let layer = layer?;               // pinned while `layer` lives
//!     let weights: &[u8] = &layer;      // zero-copy with the default backend
//!     # let _ = weights;
//! }
//! println!("{:?}", model.stats());
//! # Ok(()) }
//! ```
//!
//! # Modules
//! - [`model`]: [`MappedModel`] — open, get, prefetch, release, priorities, stats.
//! - [`guard`]: [`LayerGuard`] — pinned bytes, typed views, tensors by name.
//! - [`forward`]: [`ForwardPass`] — iterate layers while the next ones load.
//! - [`config`]: [`StoreConfig`] (TinyAI's `TinyAIMmapConfig` plus Rust-side options) and [`Backend`].
//! - [`stats`]: [`Stats`], the counters snapshot.
//! - [`error`]: [`StoreError`], the one error type.
//! - `slot` (private): the per-layer residency state machine (one atomic word;
//!   lock-free pin and unpin), with its loom model tests.
//! - `shared` (private): the state behind the lock and the path of one `get`.
//! - `hits` (private): striped, lossy read buffers that feed hits to the engine.
//! - `reclaim` (private): dropping evicted memory; `mlock`.
//! - `partial` (private): bytes of a layer without loading it
//!   ([`MappedModel::read_tensor_bytes`], [`MappedModel::verify_layer_from_file`]).
//! - `lookahead`, `streams` (private): prefetch, per-thread access streams and the
//!   streaming window (decisions from `tinyai_cache::stream`).
//! - `source` (private): the only code that touches the file, the mapping and page advice.
//!
//! # Invariants
//! - Charged usage ([`MappedModel::cached_bytes`]) never exceeds `max_cache_size`
//!   except by layers pinned by live guards; decisions come from `tinyai-cache`.
//! - Header and tables are read into a private buffer at open and validated by
//!   `tinyai-format`; layer bytes are only served within validated ranges.
//! - With [`Backend::Mapped`], slices stay valid until the model and all guards are
//!   dropped; with [`Backend::Owned`], while their guard lives. See [`Backend`] for
//!   what happens if another process modifies the file.
#![deny(missing_docs)]

mod buffer;
mod carry;
pub mod config;
pub mod error;
pub mod forward;
pub mod guard;
mod hits;
mod io;
mod lookahead;
pub mod model;
mod pages;
mod partial;
mod readahead;
mod reclaim;
#[cfg(feature = "remote")]
mod remote;
mod room;
mod shared;
mod slot;
mod source;
pub mod stats;
mod streams;
mod sync;
mod tables;
#[cfg(feature = "remote")]
mod tier;

pub use config::{Backend, Progress, ProgressCallback, StoreConfig};
pub use error::StoreError;
pub use forward::ForwardPass;
pub use guard::{Element, LayerGuard, TensorView};
pub use model::{CacheState, DetachedPin, LayerDescriptor, MappedModel, SoftPin, SoftWindow};
#[cfg(feature = "remote")]
pub use remote::RemoteConfig;
#[doc(hidden)]
pub use source::InjectedFault;
pub use source::evict_file_from_page_cache;
pub use stats::Stats;
pub use tinyai_cache::PolicyKind;

/// The README's Rust example, compiled by `cargo test --doc` so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
