//! Run [candle](https://github.com/huggingface/candle) models from a TinyAI
//! store, including models larger than the memory you give them.
//!
//! # Two ways in
//! - **Whole model** — [`model_var_builder`] (a [`StoreBackend`]) hands
//!   candle's `VarBuilder` every tensor of an open `.tmai` model by name,
//!   so any candle model builds from it unchanged
//!   (`BertModel::load(model_var_builder(&model, DType::F32, &device)?, &config)`).
//!   candle copies each weight into its own tensors, so this needs memory
//!   for the whole model, as candle always does.
//! - **Block by block** — to run a model under a budget smaller than it,
//!   build one block's modules at a time from the layer the store just
//!   pinned ([`LayerBackend`]), run them, and drop them while the store
//!   prefetches the next block:
//!
//! ```no_run
//! # use candle_core::{DType, Device, Tensor};
//! # use tinyai_candle::LayerBackend;
//! # fn demo(model: &tinyai_store::MappedModel, config: &tinyai_candle::bert::Config,
//! #         mut states: Tensor, mask: &Tensor) -> candle_core::Result<()> {
//! use candle_transformers::models::bert::BertEncoder;
//! let device = Device::Cpu;
//! let one_block = tinyai_candle::bert::Config { num_hidden_layers: 1, ..config.clone() };
//! let blocks: Vec<u64> = (1..=6).collect();          // the store layers of the blocks
//! for (n, guard) in model.forward_pass(blocks).map_err(candle_core::Error::wrap)?.enumerate() {
//!     let guard = guard.map_err(candle_core::Error::wrap)?;   // pinned; the next block loads meanwhile
//!     let vb = LayerBackend::new(guard)
//!         .alias("layer.0.", format!("encoder.layer.{n}."))    // a module for block 0, built from block n
//!         .into_var_builder(DType::F32, &device);
//!     let block = BertEncoder::load(vb, &one_block)?;
//!     states = block.forward(&states, mask)?;               // the layer is unpinned when `block`'s builder goes
//! }
//! # Ok(()) }
//! ```
//!
//!   Tables far larger than a block — a vocabulary embedding, a tied LM
//!   head — need not be loaded at all: [`gather_rows`] reads just the rows
//!   of the batch's tokens from the file.
//!
//! [`bert::StreamedBert`] is the worked case: all-MiniLM-L6-v2 sentence
//! embeddings under a third of the model's size, equal to candle-transformers'
//! `BertModel` (see the README's "Running a candle model" and
//! `examples/minilm_embed.rs`).
//!
//! # Types and errors
//! `.tmai` tensors of f32, f16, bf16, f64, f8 e4m3, i16, i32, i64, u8 and
//! u32 map to candle's types ([`dtype::candle_dtype`]); float tensors
//! convert to the float type a module asks for; anything else (integer ↔
//! float, dtypes candle lacks, a shape other than the module's, a missing
//! name) is an error naming the tensor.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod backend;
#[cfg(feature = "bert")]
pub mod bert;
pub mod dtype;
pub mod gather;
mod tensor;

pub use backend::{LayerBackend, StoreBackend, TensorIndex, model_var_builder, read_tensor};
pub use gather::gather_rows;
