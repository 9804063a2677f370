//! BERT sentence embeddings streamed block by block through the store — the
//! worked example of [`crate`] (all-MiniLM-L6-v2 in the README and tests).
//!
//! - The vocabulary embedding (for MiniLM 47 MB of a 91 MB model) is never
//!   loaded: the rows of the batch's tokens are gathered from the file
//!   ([`crate::gather_rows`]); its checksum is verified once from the file
//!   when the store verifies checksums. The small embedding tensors
//!   (positions, token types, LayerNorm) are read once at construction.
//! - Each encoder block is built from the layer the store just pinned, with
//!   candle-transformers' own `BertEncoder` (one block, its `layer.0.` names
//!   aliased to the stored `encoder.layer.N.`), run, and dropped, while
//!   [`MappedModel::forward_pass`] prefetches the next block.
//! - Pooling as sentence-transformers does it: the mean of the last hidden
//!   states over the attention mask, then L2 normalisation. (BERT's own
//!   pooler layer is not part of a sentence embedding and is not read.)
//!
//! The result equals candle-transformers' `BertModel` on the same weights:
//! the same candle operations run in the same order.

use std::path::Path;

use candle_core::{D, DType, Device, Error, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Module};
use candle_transformers::models::bert::BertEncoder;
pub use candle_transformers::models::bert::Config;
use tinyai_store::MappedModel;

use crate::backend::{LayerBackend, TensorIndex, model_var_builder};
use crate::gather::gather_rows;

/// Name of the vocabulary embedding table.
pub const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

/// A BERT encoder whose weights stay in the store: blocks are pinned one at
/// a time while they run.
#[derive(Debug)]
pub struct StreamedBert<'m> {
    model: &'m MappedModel,
    config: Config,
    word_layer: u64,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
    blocks: Vec<u64>,
    device: Device,
}

impl<'m> StreamedBert<'m> {
    /// Prepares to run `model` (a BERT converted to `.tmai`, tensors named as
    /// in Hugging Face checkpoints: `embeddings.*`, `encoder.layer.N.*`).
    ///
    /// # Errors
    /// A tensor the model needs is missing, has the wrong shape or dtype
    /// (the error names it); a block whose tensors are split over several
    /// layers; store errors (checksum mismatch of the embedding table, I/O).
    pub fn new(
        model: &'m MappedModel,
        config: Config,
        device: &Device,
    ) -> Result<StreamedBert<'m>> {
        let index = TensorIndex::new(model)?;
        let word_layer = index.require(WORD_EMBEDDINGS)?;
        let vb = model_var_builder(model, DType::F32, device)?;
        let hidden = config.hidden_size;
        // Checked from the tables: a wrong table fails now, naming it.
        check_shape(
            model,
            word_layer,
            WORD_EMBEDDINGS,
            &[config.vocab_size, hidden],
        )?;
        if model.config().verify_checksums {
            model
                .verify_layer_from_file(word_layer)
                .map_err(|error| Error::Msg(format!("tensor {WORD_EMBEDDINGS:?}: {error}")))?;
        }
        let position = candle_nn::embedding(
            config.max_position_embeddings,
            hidden,
            vb.pp("embeddings.position_embeddings"),
        )?;
        let token_type = candle_nn::embedding(
            config.type_vocab_size,
            hidden,
            vb.pp("embeddings.token_type_embeddings"),
        )?;
        let norm =
            candle_nn::layer_norm(hidden, config.layer_norm_eps, vb.pp("embeddings.LayerNorm"))?;
        let blocks = (0..config.num_hidden_layers)
            .map(|block| block_layer(model, &index, block))
            .collect::<Result<Vec<u64>>>()?;
        Ok(StreamedBert {
            model,
            config,
            word_layer,
            position,
            token_type,
            norm,
            blocks,
            device: device.clone(),
        })
    }

    /// The store layer of each encoder block, in order.
    #[must_use]
    pub fn block_layers(&self) -> &[u64] {
        &self.blocks
    }

    /// Last hidden states `[batch, seq, hidden]` of a batch (`input_ids`,
    /// `token_type_ids`, `attention_mask`: `[batch, seq]`, u32).
    ///
    /// # Errors
    /// Store errors while streaming (the error names the tensor or layer),
    /// token ids out of the vocabulary.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        self.forward_inspect(input_ids, token_type_ids, attention_mask, |_| {})
    }

    /// [`forward`](Self::forward), calling `inspect(layer)` while each
    /// block's layer is pinned (when the store holds the most), for
    /// measuring charged memory and residency.
    ///
    /// # Errors
    /// As [`forward`](Self::forward).
    pub fn forward_inspect(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        mut inspect: impl FnMut(u64),
    ) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let hidden = self.config.hidden_size;
        let ids: Vec<u32> = input_ids.flatten_all()?.to_vec1()?;
        let words = gather_rows(
            self.model,
            self.word_layer,
            WORD_EMBEDDINGS,
            &ids,
            &self.device,
        )?
        .reshape((batch, seq, hidden))?;
        // The same operations, in the same order, as candle-transformers' BertEmbeddings.
        let mut embeddings = (&words + self.token_type.forward(token_type_ids)?)?;
        let positions = Tensor::arange(0u32, seq as u32, &self.device)?;
        embeddings = embeddings.broadcast_add(&self.position.forward(&positions)?)?;
        let mut states = self.norm.forward(&embeddings)?;
        let mask = extended_attention_mask(attention_mask)?;
        let one_block = Config {
            num_hidden_layers: 1,
            ..self.config.clone()
        };
        let pass = self
            .model
            .forward_pass(self.blocks.iter().copied())
            .map_err(Error::wrap)?;
        for (block, guard) in pass.enumerate() {
            let guard =
                guard.map_err(|error| Error::Msg(format!("encoder block {block}: {error}")))?;
            inspect(guard.index());
            let vb = LayerBackend::new(guard)
                .alias("layer.0.", format!("encoder.layer.{block}."))
                .into_var_builder(DType::F32, &self.device);
            let encoder = BertEncoder::load(vb, &one_block)?;
            states = encoder.forward(&states, &mask)?;
        }
        Ok(states)
    }
}

/// Checks the stored shape of `name` without reading it.
fn check_shape(model: &MappedModel, layer: u64, name: &str, expected: &[usize]) -> Result<()> {
    let info = model
        .format()
        .find_tensor(layer, name)
        .map_err(Error::wrap)?
        .ok_or_else(|| Error::CannotFindTensor {
            path: name.to_owned(),
        })?;
    let stored = crate::tensor::dims(name, &info)?;
    if stored != expected {
        return Err(Error::UnexpectedShape {
            msg: format!("tensor {name:?}: stored shape differs from the module's"),
            expected: expected.into(),
            got: stored.into(),
        });
    }
    let dtype = crate::tensor::stored_dtype(name, &info)?;
    if dtype != DType::F32 {
        return Err(Error::Msg(format!(
            "tensor {name:?}: stored as {dtype:?}, this model runs in F32"
        )));
    }
    Ok(())
}

/// The layer holding encoder block `block`, checking all its tensors are there.
fn block_layer(model: &MappedModel, index: &TensorIndex, block: usize) -> Result<u64> {
    let prefix = format!("encoder.layer.{block}.");
    let layer = index.require(&format!("{prefix}attention.self.query.weight"))?;
    let format = model.format();
    for other in 0..model.layer_count() {
        if other == layer {
            continue;
        }
        if let Some(stray) = format
            .layer_tensors(other)
            .map_err(Error::wrap)?
            .find(|info| info.name.starts_with(&prefix))
        {
            return Err(Error::Msg(format!(
                "encoder block {block} is split over layers {layer} and {other} (tensor {:?}); \
                 convert with the default grouping so each block is one layer",
                stray.name
            )));
        }
    }
    Ok(layer)
}

/// BERT's additive attention mask: 0 where attended, `f32::MIN` elsewhere,
/// `[batch, 1, 1, seq]` (as candle-transformers computes it).
///
/// # Errors
/// A mask that is not `[batch, seq]`.
pub fn extended_attention_mask(attention_mask: &Tensor) -> Result<Tensor> {
    let mask = attention_mask
        .unsqueeze(1)?
        .unsqueeze(1)?
        .to_dtype(DType::F32)?;
    (mask.ones_like()? - &mask)?
        .broadcast_mul(&Tensor::try_from(f32::MIN)?.to_device(mask.device())?)
}

/// Mean of `states` (`[batch, seq, hidden]`) over the positions where
/// `attention_mask` (`[batch, seq]`) is 1, then L2-normalised: a
/// sentence-transformers embedding, `[batch, hidden]`.
///
/// # Errors
/// Mismatched shapes.
pub fn mean_pool_normalized(states: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    let mask = attention_mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = states.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?;
    let mean = summed.broadcast_div(&counts)?;
    let norms = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    mean.broadcast_div(&norms)
}

/// A tokenised batch: `[batch, seq]` u32 tensors, padded to the longest.
#[derive(Debug)]
pub struct Batch {
    /// Token ids.
    pub input_ids: Tensor,
    /// Segment ids (all 0 for single sentences).
    pub token_type_ids: Tensor,
    /// 1 for tokens, 0 for padding.
    pub attention_mask: Tensor,
}

/// A Hugging Face `tokenizer.json` set up as sentence-transformers runs
/// MiniLM: padding to the longest sentence of the batch, truncation at
/// `max_length` tokens.
///
/// # Errors
/// An unreadable or invalid tokenizer file.
pub fn load_tokenizer(path: &Path, max_length: usize) -> Result<tokenizers::Tokenizer> {
    let mut tokenizer = tokenizers::Tokenizer::from_file(path).map_err(Error::msg)?;
    tokenizer.with_padding(Some(tokenizers::PaddingParams {
        strategy: tokenizers::PaddingStrategy::BatchLongest,
        ..Default::default()
    }));
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length,
            ..Default::default()
        }))
        .map_err(Error::msg)?;
    Ok(tokenizer)
}

/// Tokenises `sentences` into one padded batch.
///
/// # Errors
/// Tokeniser failures; an empty batch.
pub fn encode(
    tokenizer: &tokenizers::Tokenizer,
    sentences: &[&str],
    device: &Device,
) -> Result<Batch> {
    if sentences.is_empty() {
        return Err(Error::Msg("no sentences to encode".to_owned()));
    }
    let encodings = tokenizer
        .encode_batch(sentences.to_vec(), true)
        .map_err(Error::msg)?;
    let stack = |field: fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor> {
        let rows = encodings
            .iter()
            .map(|encoding| Tensor::new(field(encoding), device))
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&rows, 0)
    };
    Ok(Batch {
        input_ids: stack(tokenizers::Encoding::get_ids)?,
        token_type_ids: stack(tokenizers::Encoding::get_type_ids)?,
        attention_mask: stack(tokenizers::Encoding::get_attention_mask)?,
    })
}
