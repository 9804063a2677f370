//! Property test: random models written by the writer parse back equal, field by field.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use tinyai_format::fixtures::{
    self, FixtureLayer, FixtureSpec, FixtureTensor, check_layer_bytes, expected_layer_bytes,
};
use tinyai_format::limits::TENSOR_ALIGNMENT;
use tinyai_format::{DType, Model, locate_tables};

/// (dtype, GGML type id, elements per block the last dimension must be a multiple of).
fn dtypes() -> Vec<(DType, u32, u64)> {
    let mut plain: Vec<(DType, u32, u64)> = [
        DType::Opaque,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
        DType::F8E4M3,
        DType::F8E5M2,
        DType::I4,
    ]
    .into_iter()
    .map(|dtype| (dtype, 0, 1))
    .collect();
    // Q4_0, Q8_0, Q4_K, F16 as GGML types.
    plain.extend([
        (DType::Ggml, 2, 32),
        (DType::Ggml, 8, 32),
        (DType::Ggml, 12, 256),
        (DType::Ggml, 1, 1),
    ]);
    plain
}

/// Dimensions below 6; under Miri (which interprets every byte written,
/// checksummed and compared) below 3.
const MAX_DIMENSION: u64 = if cfg!(miri) { 3 } else { 6 };

fn tensor_strategy(name: String) -> impl Strategy<Value = FixtureTensor> {
    let kinds = dtypes();
    (
        0..kinds.len(),
        prop::collection::vec(0u64..MAX_DIMENSION, 0..4),
        0u64..3,
    )
        .prop_map(move |(kind, mut shape, blocks)| {
            let (dtype, source_type, block) = kinds[kind];
            if block > 1 {
                // A whole number of blocks: last dimension = blocks * block size.
                shape.push(blocks * block);
            }
            FixtureTensor {
                name: name.clone(),
                dtype,
                shape,
                source_type,
            }
        })
}

/// Characters of names and metadata: any but control characters; under Miri
/// (where building that Unicode class alone takes about 20 s) ASCII letters
/// and a 2-, a 3- and a 4-byte character.
const NAME_CHARACTERS: &str = if cfg!(miri) {
    "[a-z.\u{e9}\u{4e2d}\u{1f600}]"
} else {
    "\\PC"
};

/// Strings of up to `max` [`NAME_CHARACTERS`].
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("{NAME_CHARACTERS}{{0,{max}}}")).unwrap()
}

fn layer_strategy() -> impl Strategy<Value = Vec<FixtureTensor>> {
    prop::collection::btree_set(text(6), 0..4)
        .prop_flat_map(|names| names.into_iter().map(tensor_strategy).collect::<Vec<_>>())
}

/// Alignments up to 64 KiB; under Miri (which interprets every byte of
/// padding) up to 256 bytes.
const MAX_ALIGNMENT_LOG2: u32 = if cfg!(miri) { 8 } else { 16 };

fn spec_strategy() -> impl Strategy<Value = FixtureSpec> {
    (
        any::<u64>(),
        6u32..=MAX_ALIGNMENT_LOG2,
        prop::collection::btree_map(text(8), text(16), 0..4),
        prop::collection::btree_map(text(8), layer_strategy(), 0..8),
        any::<bool>(),
    )
        .prop_map(|(seed, alignment_log2, metadata, layers, reverse)| {
            let mut layers: Vec<FixtureLayer> = layers
                .into_iter()
                .map(|(name, tensors)| FixtureLayer { name, tensors })
                .collect();
            if reverse {
                layers.reverse();
            }
            FixtureSpec {
                seed,
                alignment: 1 << alignment_log2,
                metadata: metadata.into_iter().collect(),
                layers,
            }
        })
}

fn check_round_trip(spec: &FixtureSpec) {
    let bytes = fixtures::fixture_bytes(spec).unwrap();
    let model = Model::parse(&bytes).unwrap();
    assert!(!model.is_legacy());
    assert_eq!(model.version().major, 2);
    assert_eq!(model.file_length(), bytes.len() as u64);
    assert_eq!(model.alignment(), spec.alignment);
    assert_eq!(model.layer_count(), spec.layers.len() as u64);
    let expected_tensors: usize = spec.layers.iter().map(|l| l.tensors.len()).sum();
    assert_eq!(model.tensor_count(), expected_tensors as u64);
    let metadata: Vec<(String, String)> = model
        .metadata()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(metadata, spec.metadata);

    let mut tensor_index = 0u64;
    let mut previous_end = 0u64;
    for (layer_index, fixture_layer) in spec.layers.iter().enumerate() {
        let layer_index = layer_index as u64;
        let info = model.layer(layer_index).unwrap();
        assert_eq!(info.index, layer_index);
        assert_eq!(info.name, Some(fixture_layer.name.as_str()));
        assert_eq!(info.offset % spec.alignment, 0);
        assert!(info.offset >= previous_end);
        previous_end = info.offset + info.length;
        assert!(info.checksum.is_some());
        assert_eq!(
            info.tensors,
            tensor_index..tensor_index + fixture_layer.tensors.len() as u64
        );
        let mut distinct: Vec<DType> = fixture_layer.tensors.iter().map(|t| t.dtype).collect();
        distinct.dedup();
        distinct.sort_by_key(|d| d.code());
        distinct.dedup();
        let expected_dtype = match distinct.as_slice() {
            [] => DType::Opaque,
            [single] => *single,
            _ => DType::Mixed,
        };
        assert_eq!(info.dtype, expected_dtype);
        assert!((1..=64).contains(&info.precision_bits));
        assert_eq!(
            model.layer_by_name(&fixture_layer.name).unwrap().index,
            layer_index
        );

        let mut position = 0u64;
        let tensors: Vec<_> = model.layer_tensors(layer_index).unwrap().collect();
        assert_eq!(tensors.len(), fixture_layer.tensors.len());
        for (tensor, fixture_tensor) in tensors.iter().zip(&fixture_layer.tensors) {
            let length = fixture_tensor.byte_length().unwrap();
            position = position.next_multiple_of(TENSOR_ALIGNMENT);
            assert_eq!(tensor.index, tensor_index);
            assert_eq!(tensor.layer, layer_index);
            assert_eq!(tensor.name, fixture_tensor.name);
            assert_eq!(tensor.dtype, fixture_tensor.dtype);
            assert_eq!(tensor.shape(), fixture_tensor.shape.as_slice());
            assert_eq!(tensor.source_type, fixture_tensor.source_type);
            assert_eq!(tensor.offset_in_layer, position);
            assert_eq!(tensor.length, length);
            assert_eq!(model.tensor(tensor_index), Some(*tensor));
            assert_eq!(
                model
                    .find_tensor(layer_index, &fixture_tensor.name)
                    .unwrap(),
                Some(*tensor)
            );
            position += length;
            tensor_index += 1;
        }
        assert_eq!(info.length, position);
        let data = model.layer_bytes(layer_index).unwrap();
        assert_eq!(data.len() as u64, info.length);
        assert_eq!(
            expected_layer_bytes(spec, layer_index).unwrap().unwrap(),
            data
        );
        assert_eq!(
            check_layer_bytes(spec.seed, &model, layer_index, data).unwrap(),
            None
        );
        model.verify_layer(layer_index).unwrap();
        model.verify_layer_bytes(layer_index, data).unwrap();
    }
    model.verify_all().unwrap();

    // parse_parts from the located tables gives the same model.
    let location = locate_tables(&bytes[..bytes.len().min(4096)], bytes.len() as u64).unwrap();
    let tables = &bytes[location.tables.start as usize..location.tables.end as usize];
    let head = &bytes[..location.header_length as usize];
    let parts =
        Model::parse_parts(head, tables, location.tables.start, bytes.len() as u64).unwrap();
    assert_eq!(
        parts.layers().collect::<Vec<_>>(),
        model.layers().collect::<Vec<_>>()
    );
    assert_eq!(
        (0..parts.tensor_count())
            .map(|i| parts.tensor(i))
            .collect::<Vec<_>>(),
        (0..model.tensor_count())
            .map(|i| model.tensor(i))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        parts.metadata().collect::<Vec<_>>(),
        model.metadata().collect::<Vec<_>>()
    );
    for layer_index in 0..parts.layer_count() {
        parts
            .verify_layer_bytes(layer_index, model.layer_bytes(layer_index).unwrap())
            .unwrap();
    }
}

/// 256 cases; under Miri, which interprets every step and has no file access,
/// 4 cases and no regression file.
fn proptest_config() -> ProptestConfig {
    if cfg!(miri) {
        ProptestConfig {
            cases: 4,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    } else {
        ProptestConfig {
            cases: 256,
            ..ProptestConfig::default()
        }
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn random_models_round_trip(spec in spec_strategy()) {
        check_round_trip(&spec);
    }
}

#[test]
fn presets_round_trip() {
    check_round_trip(&fixtures::tiny());
    check_round_trip(&fixtures::multi_tensor());
    check_round_trip(&FixtureSpec {
        seed: 0,
        alignment: 64,
        metadata: vec![],
        layers: vec![],
    });
}

#[test]
fn a_trailing_empty_layer_round_trips() {
    // The writer puts a zero-length last layer at the offset where the tables start.
    for alignment in [64, 4096] {
        let spec = FixtureSpec {
            seed: 5,
            alignment,
            metadata: vec![],
            layers: vec![
                FixtureLayer {
                    name: "data".to_owned(),
                    tensors: vec![FixtureTensor::new("w", DType::F32, &[3])],
                },
                FixtureLayer {
                    name: "empty".to_owned(),
                    tensors: vec![],
                },
            ],
        };
        check_round_trip(&spec);
        let only_empty = FixtureSpec {
            layers: vec![FixtureLayer {
                name: String::new(),
                tensors: vec![],
            }],
            ..spec
        };
        check_round_trip(&only_empty);
    }
}

#[test]
fn common_helpers_reseal_is_identity_on_valid_files() {
    let bytes = fixtures::fixture_bytes(&fixtures::multi_tensor()).unwrap();
    let mut resealed = bytes.clone();
    common::reseal(&mut resealed);
    assert_eq!(resealed, bytes);
    common::parse_and_exercise(&bytes).unwrap();
    let _ = BTreeMap::<u8, u8>::new();
}
