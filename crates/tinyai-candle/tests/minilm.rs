//! all-MiniLM-L6-v2 sentence embeddings streamed through the store under a
//! budget of a third of the model equal candle-transformers' `BertModel`
//! with every weight in memory (max |Δ| ≤ 1e-5, cosine ≥ 0.99999), with
//! charged memory ≤ budget at every block and every layer's checksum
//! verified on first load. The model is fetched like the CLI's real-model
//! test; without it the test says SKIP (CI does not allow that skip).
#![allow(clippy::unwrap_used)]

mod common;

use candle_core::{D, Device, Tensor};
use tinyai_candle::bert::{self, StreamedBert};
use tinyai_store::{MappedModel, StoreConfig};

const TEST: &str = "minilm_streamed_under_a_third_equals_candle_bert";

/// Checks every sentence; returns the worst (max |Δ|, cosine).
fn compare(streamed: &Tensor, reference: &Tensor, sentences: &[String]) -> (f32, f32) {
    let mut worst = (0f32, 1f32);
    let max_abs = (streamed - reference)
        .unwrap()
        .abs()
        .unwrap()
        .max(D::Minus1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let cosines = (streamed * reference)
        .unwrap()
        .sum(D::Minus1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for ((sentence, max_abs), cosine) in sentences.iter().zip(max_abs).zip(cosines) {
        assert!(max_abs <= 1e-5, "{sentence:?}: max |Δ| {max_abs:e}");
        assert!(cosine >= 0.99999, "{sentence:?}: cosine {cosine}");
        worst = (worst.0.max(max_abs), worst.1.min(cosine));
    }
    worst
}

#[test]
fn minilm_streamed_under_a_third_equals_candle_bert() {
    let minilm = match common::minilm() {
        Ok(minilm) => minilm,
        Err(reason) => return tinyai_format::fixtures::skip(TEST, &reason),
    };
    let device = Device::Cpu;
    let file_size = std::fs::metadata(&minilm.tmai).unwrap().len();
    let budget = file_size / 3;
    let model = minilm.open(budget).unwrap();
    let streamed = StreamedBert::new(&model, minilm.config.clone(), &device).unwrap();
    let reference = minilm.reference_model(&device).unwrap();
    let tokenizer = minilm.tokenizer();
    let sentences = common::sentences();
    let mut longest = 0;
    let mut checked_blocks = 0;
    let mut worst = (0f32, 1f32);
    for group in sentences.chunks(8) {
        let texts: Vec<&str> = group.iter().map(String::as_str).collect();
        let batch = bert::encode(&tokenizer, &texts, &device).unwrap();
        let mask: Vec<Vec<u32>> = batch.attention_mask.to_vec2().unwrap();
        assert!(
            mask.iter().any(|row| row.contains(&0)),
            "every batch has padding"
        );
        longest = longest.max(batch.input_ids.dims2().unwrap().1);
        let states = streamed
            .forward_inspect(
                &batch.input_ids,
                &batch.token_type_ids,
                &batch.attention_mask,
                |layer| {
                    let usage = model.memory_usage();
                    assert!(
                        usage <= budget,
                        "layer {layer}: charged {usage} > budget {budget}"
                    );
                    checked_blocks += 1;
                },
            )
            .unwrap();
        let ours = bert::mean_pool_normalized(&states, &batch.attention_mask).unwrap();
        let theirs = common::reference_embeddings(&reference, &batch).unwrap();
        let (max_abs, cosine) = compare(&ours, &theirs, group);
        worst = (worst.0.max(max_abs), worst.1.min(cosine));
    }
    assert!(
        (100..=256).contains(&longest),
        "the long sentence has {longest} tokens"
    );
    assert_eq!(checked_blocks, 12);
    let stats = model.stats();
    // Every layer used is verified once, on first load: the embedding table
    // (from the file, as it is only gathered from) and the six blocks.
    assert_eq!(stats.checksum_failures, 0);
    assert_eq!(stats.checksums_verified, 7, "{stats:?}");
    // Six blocks do not fit a third of the model: the second batch reads
    // some again (through the cache or the streaming window).
    let blocks: u64 = streamed
        .block_layers()
        .iter()
        .map(|&layer| model.descriptor(layer).unwrap().size)
        .sum();
    assert!(
        stats.bytes_read > blocks,
        "a third of the model must re-read blocks: {stats:?}"
    );
    println!(
        "MiniLM streamed at a third ({budget} bytes): {} sentences, worst max |Δ| {:e}, worst cosine {}, {} layers verified, {} bytes read",
        sentences.len(),
        worst.0,
        worst.1,
        stats.checksums_verified,
        stats.bytes_read
    );
}

/// A corrupt byte in a block, or in the embedding table, is caught on first
/// use: the checksum is verified on first load, even of the table that is
/// only ever gathered from.
#[test]
fn minilm_corruption_is_caught_on_first_load() {
    let minilm = match common::minilm() {
        Ok(minilm) => minilm,
        Err(reason) => {
            return tinyai_format::fixtures::skip(
                "minilm_corruption_is_caught_on_first_load",
                &reason,
            );
        }
    };
    let device = Device::Cpu;
    let bytes = std::fs::read(&minilm.tmai).unwrap();
    let parsed = tinyai_format::Model::parse(&bytes).unwrap();
    let layer_named = |name: &str| parsed.layer_by_name(name).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (layer, at) in [
        (layer_named("layer.3"), 1000u64),
        (layer_named("embeddings"), 5_000_000),
    ] {
        let mut corrupt = bytes.clone();
        corrupt[(layer.offset + at) as usize] ^= 0x01;
        let path = dir.path().join(format!("corrupt-{}.tmai", layer.index));
        std::fs::write(&path, &corrupt).unwrap();
        let config = StoreConfig {
            max_cache_size: bytes.len() as u64 / 3,
            verify_checksums: true,
            ..StoreConfig::default()
        };
        let model = MappedModel::open(&path, config).unwrap();
        let outcome =
            StreamedBert::new(&model, minilm.config.clone(), &device).and_then(|streamed| {
                let tokenizer = minilm.tokenizer();
                let batch = bert::encode(&tokenizer, &["a sentence"], &device)?;
                streamed.forward(
                    &batch.input_ids,
                    &batch.token_type_ids,
                    &batch.attention_mask,
                )
            });
        let error = outcome
            .expect_err("a corrupt layer must be refused")
            .to_string();
        assert!(error.contains("checksum"), "layer {}: {error}", layer.index);
        // Prefetch may have tried the layer before the demand load did: each try fails.
        assert!(
            model.stats().checksum_failures >= 1,
            "layer {}",
            layer.index
        );
    }
}

/// Issue 15: the same streaming straight from `model.safetensors`, no
/// conversion: the same layers (the converter's grouping), unaligned in the
/// file, no checksums to verify — and the same embeddings.
#[test]
fn minilm_streamed_from_the_safetensors_file_as_it_is_equals_candle_bert() {
    const TEST: &str = "minilm_streamed_from_the_safetensors_file_as_it_is_equals_candle_bert";
    let minilm = match common::minilm() {
        Ok(minilm) => minilm,
        Err(reason) => return tinyai_format::fixtures::skip(TEST, &reason),
    };
    let device = Device::Cpu;
    let budget = std::fs::metadata(&minilm.safetensors).unwrap().len() / 3;
    let model = MappedModel::open(
        &minilm.safetensors,
        StoreConfig {
            max_cache_size: budget,
            verify_checksums: true,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    assert_eq!(model.format().kind(), tinyai_format::FileKind::Safetensors);
    let streamed = StreamedBert::new(&model, minilm.config.clone(), &device).unwrap();
    let reference = minilm.reference_model(&device).unwrap();
    let tokenizer = minilm.tokenizer();
    let sentences = common::sentences();
    for group in sentences.chunks(8) {
        let texts: Vec<&str> = group.iter().map(String::as_str).collect();
        let batch = bert::encode(&tokenizer, &texts, &device).unwrap();
        let states = streamed
            .forward_inspect(
                &batch.input_ids,
                &batch.token_type_ids,
                &batch.attention_mask,
                |layer| {
                    let usage = model.memory_usage();
                    assert!(usage <= budget, "layer {layer}: charged {usage} > {budget}");
                },
            )
            .unwrap();
        let ours = bert::mean_pool_normalized(&states, &batch.attention_mask).unwrap();
        let theirs = common::reference_embeddings(&reference, &batch).unwrap();
        compare(&ours, &theirs, group);
    }
    let stats = model.stats();
    assert_eq!(stats.checksums_verified, 0, "safetensors has no checksums");
    assert_eq!(stats.layers_without_checksum, model.layer_count());
}
