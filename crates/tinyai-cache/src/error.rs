//! The crate's single error type.

use crate::LayerId;

/// Everything that can go wrong when configuring or driving an [`Engine`](crate::Engine).
///
/// Every variant is caused by the caller's input; the engine itself never
/// performs I/O, so there are no environmental failures.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CacheError {
    /// A [`LayerId`] was not below the number of layers given to
    /// [`Engine::new`](crate::Engine::new).
    #[error("unknown layer id {id:?}: the engine knows {layer_count} layers")]
    UnknownLayer {
        /// The offending id.
        id: LayerId,
        /// How many layers the engine was created with (valid ids are `0..layer_count`).
        layer_count: usize,
    },
    /// [`EngineConfig::budget_bytes`](crate::EngineConfig::budget_bytes) was zero.
    #[error("invalid config: budget_bytes must be greater than zero")]
    ZeroBudget,
    /// [`EngineConfig::page_size`](crate::EngineConfig::page_size) was zero or not a power of two.
    #[error("invalid config: page_size {page_size} must be a non-zero power of two")]
    InvalidPageSize {
        /// The rejected page size.
        page_size: u64,
    },
    /// More layers than a [`LayerId`] (a `u32`) can address.
    #[error("too many layers: {count} (at most {max})")]
    TooManyLayers {
        /// How many layer sizes were given.
        count: usize,
        /// The largest supported layer count.
        max: usize,
    },
    /// [`Engine::unpin`](crate::Engine::unpin) on an entry whose pin count is already zero
    /// (or that is not resident at all).
    #[error("layer {id:?} is not pinned")]
    NotPinned {
        /// The layer that was unpinned once too often.
        id: LayerId,
    },
    /// A pin count would overflow `u32`.
    #[error("layer {id:?} is pinned too many times")]
    PinOverflow {
        /// The layer whose pin count is saturated.
        id: LayerId,
    },
    /// [`Engine::set_priority`](crate::Engine::set_priority) was given NaN.
    /// (Infinite and out-of-range values are clamped to `0.0..=1.0` instead.)
    #[error("priority for layer {id:?} is NaN")]
    NanPriority {
        /// The layer whose priority was being set.
        id: LayerId,
    },
}
