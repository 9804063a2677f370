//! all-MiniLM-L6-v2 for the tests, the example and the benchmark: the model
//! directory (fetched by `tinyai_format::real_model`), its `.tmai`
//! conversion, its config, and the reference embeddings computed by
//! candle-transformers' `BertModel` with every weight in memory.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::BertModel;
use tinyai_candle::bert::{self, Config};
use tinyai_format::real_model;

pub struct MiniLm {
    pub dir: PathBuf,
    pub safetensors: PathBuf,
    pub tmai: PathBuf,
    pub config: Config,
}

/// The model, converted to `.tmai` next to the source (once; reused while
/// newer than the source). Err says why it is not available.
pub fn minilm() -> std::result::Result<MiniLm, String> {
    let dir = real_model::ensure(real_model::DEFAULT_TIMEOUT)?;
    let safetensors = dir.join("model.safetensors");
    let tmai = dir.join("model.tmai");
    let fresh = |path: &Path| -> bool {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        matches!((modified(path), modified(&safetensors)), (Some(a), Some(b)) if a >= b)
    };
    // The tests of one binary run on several threads: one converts, the
    // others wait and reuse its file.
    static CONVERTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CONVERTING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !fresh(&tmai) {
        let partial = dir.join(format!("model.tmai.partial-{}", std::process::id()));
        let options = tinyai_cli::convert::ConvertOptions::default();
        tinyai_cli::convert::convert(&safetensors, &partial, &options)
            .map_err(|error| format!("converting {}: {error}", safetensors.display()))?;
        std::fs::rename(&partial, &tmai).map_err(|error| error.to_string())?;
    }
    let config: Config = serde_json::from_slice(
        &std::fs::read(dir.join("config.json")).map_err(|error| error.to_string())?,
    )
    .map_err(|error| error.to_string())?;
    Ok(MiniLm {
        dir,
        safetensors,
        tmai,
        config,
    })
}

impl MiniLm {
    /// The converted model opened under `budget`, checksums verified on first load.
    pub fn open(
        &self,
        budget: u64,
    ) -> std::result::Result<tinyai_store::MappedModel, tinyai_store::StoreError> {
        tinyai_store::MappedModel::open(
            &self.tmai,
            tinyai_store::StoreConfig {
                max_cache_size: budget,
                verify_checksums: true,
                ..tinyai_store::StoreConfig::default()
            },
        )
    }

    pub fn tokenizer(&self) -> tokenizers::Tokenizer {
        bert::load_tokenizer(&self.dir.join("tokenizer.json"), 256).unwrap()
    }

    /// candle-transformers' `BertModel` with every weight in memory, read
    /// from the original safetensors.
    pub fn reference_model(&self, device: &Device) -> Result<BertModel> {
        let bytes = std::fs::read(&self.safetensors)?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)?;
        BertModel::load(vb, &self.config)
    }
}

/// Sentence embeddings from the reference model.
pub fn reference_embeddings(model: &BertModel, batch: &bert::Batch) -> Result<Tensor> {
    let states = model.forward(
        &batch.input_ids,
        &batch.token_type_ids,
        Some(&batch.attention_mask),
    )?;
    bert::mean_pool_normalized(&states, &batch.attention_mask)
}

/// Sixteen varied sentences: short, long (over 100 tokens), non-ASCII,
/// repeated words; batched in two groups of eight, each padded.
pub fn sentences() -> Vec<String> {
    let long = "The store keeps a bounded set of layers in memory, prefetches the next block \
                while the current one computes, and reads the rows of the vocabulary table that \
                a batch needs straight from the file, so a model larger than the memory of the \
                machine still runs; when the budget is a third of the model, the encoder blocks \
                stream through a window of a few layers, each verified against its checksum the \
                first time it is loaded, and the embeddings it computes match those computed with \
                every weight in memory, component for component, within a hundred-thousandth.";
    [
        "Hi",
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
        long,
        "Ein Mann isst Brot; une femme lit un livre à la gare.",
        "東京は日本の首都です。",
        "Émilie a reçu 12 € — naïve café, façade, São Paulo.",
        "ok ok ok ok ok ok ok ok ok ok ok ok",
        "What is the capital of France?",
        "Paris is the capital and most populous city of France.",
        "Mixture-of-experts models route each token to two of eight experts.",
        "🙂 emoji and symbols: ∑ ∫ √ ≤ ≥",
        "Das Modell läuft unter einem Budget, das kleiner ist als das Modell selbst.",
        "x",
        "Large language models are often larger than the memory of the machine that runs them.",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// This process's peak resident set (`VmHWM`), in bytes (0 where unknown).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib * 1024)
}

/// Cosine similarity of two L2-normalised embeddings.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
