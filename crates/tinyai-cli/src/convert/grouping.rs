//! Grouping tensors into layers: the rules live in [`tinyai_format::grouping`]
//! (shared with the direct safetensors and GGUF readers); this module re-exports them
//! under the converter's historical path.

pub use tinyai_format::grouping::{Grouping, PlannedLayer, plan, ungrouped_prefix};
