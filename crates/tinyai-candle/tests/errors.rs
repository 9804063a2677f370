//! Bad input: a `.tmai` missing a tensor the model needs, or holding one
//! of the wrong dtype or shape, gives one clear error naming the tensor —
//! through the per-layer streaming path and through the whole-model
//! `VarBuilder` — and never a panic.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device};
use candle_transformers::models::bert::BertModel;
use tinyai_candle::bert::{Config, StreamedBert};
use tinyai_candle::{LayerBackend, model_var_builder};
use tinyai_format::DType as Stored;
use tinyai_format::fixtures::{FixtureLayer, FixtureSpec, FixtureTensor, write_fixture_file};
use tinyai_store::{MappedModel, StoreConfig};

/// A one-block BERT: vocab 10, hidden 4, 2 heads, intermediate 8.
fn tiny_config() -> Config {
    serde_json::from_value(serde_json::json!({
        "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 8, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0, "max_position_embeddings": 16, "type_vocab_size": 2,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "classifier_dropout": null, "model_type": "bert"
    }))
    .unwrap()
}

fn tiny_tensors() -> Vec<(&'static str, Vec<u64>)> {
    let mut tensors = vec![
        ("embeddings.word_embeddings.weight", vec![10, 4]),
        ("embeddings.position_embeddings.weight", vec![16, 4]),
        ("embeddings.token_type_embeddings.weight", vec![2, 4]),
        ("embeddings.LayerNorm.weight", vec![4]),
        ("embeddings.LayerNorm.bias", vec![4]),
    ];
    for (name, shape) in [
        ("attention.self.query.weight", vec![4, 4]),
        ("attention.self.query.bias", vec![4]),
        ("attention.self.key.weight", vec![4, 4]),
        ("attention.self.key.bias", vec![4]),
        ("attention.self.value.weight", vec![4, 4]),
        ("attention.self.value.bias", vec![4]),
        ("attention.output.dense.weight", vec![4, 4]),
        ("attention.output.dense.bias", vec![4]),
        ("attention.output.LayerNorm.weight", vec![4]),
        ("attention.output.LayerNorm.bias", vec![4]),
        ("intermediate.dense.weight", vec![8, 4]),
        ("intermediate.dense.bias", vec![8]),
        ("output.dense.weight", vec![4, 8]),
        ("output.dense.bias", vec![4]),
        ("output.LayerNorm.weight", vec![4]),
        ("output.LayerNorm.bias", vec![4]),
    ] {
        let full: &'static str = Box::leak(format!("encoder.layer.0.{name}").into_boxed_str());
        tensors.push((full, shape));
    }
    tensors
}

enum Fault {
    Missing,
    Dtype(Stored),
    Shape(Vec<u64>),
}

/// The tiny model with `fault` applied to tensor `target`.
fn write_model(dir: &std::path::Path, target: &str, fault: Option<&Fault>) -> std::path::PathBuf {
    let mut layers = vec![
        FixtureLayer {
            name: "embeddings".to_owned(),
            tensors: vec![],
        },
        FixtureLayer {
            name: "layer.0".to_owned(),
            tensors: vec![],
        },
    ];
    for (name, shape) in tiny_tensors() {
        let layer = usize::from(name.starts_with("encoder."));
        let tensor = match fault {
            Some(Fault::Missing) if name == target => continue,
            Some(Fault::Dtype(dtype)) if name == target => FixtureTensor::new(name, *dtype, &shape),
            Some(Fault::Shape(shape)) if name == target => {
                FixtureTensor::new(name, Stored::F32, shape)
            }
            _ => FixtureTensor::new(name, Stored::F32, &shape),
        };
        layers[layer].tensors.push(tensor);
    }
    let spec = FixtureSpec {
        seed: 7,
        alignment: 4096,
        metadata: vec![],
        layers,
    };
    let path = dir.join("tiny-bert.tmai");
    write_fixture_file(&spec, &path).unwrap();
    path
}

/// Both ways of building the model; the error message of each (None = built and ran).
fn errors_of(path: &std::path::Path) -> [Option<String>; 2] {
    let device = Device::Cpu;
    let config = StoreConfig {
        max_cache_size: 8192,
        ..StoreConfig::default()
    };
    let model = MappedModel::open(path, config).unwrap();
    let ids = candle_core::Tensor::new(&[[1u32, 2, 3]], &device).unwrap();
    let streamed = StreamedBert::new(&model, tiny_config(), &device)
        .and_then(|bert| bert.forward(&ids, &ids.zeros_like()?, &ids.ones_like()?))
        .err()
        .map(|e| e.to_string());
    let whole = model_var_builder(&model, DType::F32, &device)
        .and_then(|vb| BertModel::load(vb, &tiny_config()))
        .err()
        .map(|e| e.to_string());
    [streamed, whole]
}

#[test]
fn the_intact_tiny_model_builds_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), "", None);
    assert_eq!(errors_of(&path), [None, None]);
}

#[test]
fn missing_wrong_dtype_and_wrong_shape_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("encoder.layer.0.attention.self.key.weight", Fault::Missing),
        ("embeddings.word_embeddings.weight", Fault::Missing),
        ("embeddings.position_embeddings.weight", Fault::Missing),
        (
            "encoder.layer.0.intermediate.dense.weight",
            Fault::Dtype(Stored::I32),
        ),
        (
            "embeddings.word_embeddings.weight",
            Fault::Dtype(Stored::I64),
        ),
        (
            "encoder.layer.0.output.dense.bias",
            Fault::Dtype(Stored::U16),
        ),
        (
            "encoder.layer.0.attention.self.query.weight",
            Fault::Shape(vec![4, 5]),
        ),
        (
            "embeddings.word_embeddings.weight",
            Fault::Shape(vec![11, 4]),
        ),
        ("embeddings.LayerNorm.bias", Fault::Shape(vec![5])),
    ];
    for (target, fault) in &cases {
        let path = write_model(dir.path(), target, Some(fault));
        for (way, error) in ["streamed", "whole model"].iter().zip(errors_of(&path)) {
            let error = error.unwrap_or_else(|| panic!("{way}: {target} faulty, but it ran"));
            assert!(
                error.contains(target),
                "{way}: {target}: error does not name it: {error}"
            );
        }
    }
}

#[test]
fn a_layer_backend_aliases_and_reports_missing_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), "", None);
    let model = MappedModel::open(&path, StoreConfig::default()).unwrap();
    let vb = LayerBackend::new(model.get(1).unwrap())
        .alias("block.", "encoder.layer.0.")
        .into_var_builder(DType::F32, &Device::Cpu);
    assert!(vb.contains_tensor("block.attention.self.key.bias"));
    assert_eq!(
        vb.get(4, "block.attention.self.key.bias").unwrap().dims(),
        &[4]
    );
    // bf16 read as f32 converts; the wrong shape and a missing name are errors naming the tensor.
    let error = vb
        .get((4, 4), "block.attention.self.key.bias")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("encoder.layer.0.attention.self.key.bias"),
        "{error}"
    );
    let error = vb.get(4, "block.nothing").unwrap_err().to_string();
    assert!(error.contains("encoder.layer.0.nothing"), "{error}");
}
