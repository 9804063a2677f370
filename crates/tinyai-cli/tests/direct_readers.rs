//! The direct header readers of `tinyai-format` (`SafetensorsHeader`, `GgufHeader`)
//! against what `tmai convert` reads from the same files: on valid files every
//! tensor's name, dtype, GGML type, shape and byte range agree; on thousands of
//! mutated files both accept or both reject, and agree again when they accept.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Gguf, gguf_type, pattern, safetensors_file, write};
use safetensors::tensor::Dtype;
use tinyai_cli::convert::{SourceTensor, gguf, safetensors as st};
use tinyai_cli::source::SourceFile;
use tinyai_format::dtype::GGML_TYPES;
use tinyai_format::fixtures::splitmix64;
use tinyai_format::{ForeignTensor, GgufHeader, SafetensorsHeader};

/// What both sides must agree on: name, dtype, GGML type, shape, start, end.
type Seen = (String, tinyai_format::DType, u32, Vec<u64>, u64, u64);

fn from_converter(tensors: &[SourceTensor]) -> Vec<Seen> {
    tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.dtype,
                t.source_type,
                t.shape.clone(),
                t.offset,
                t.offset + t.length,
            )
        })
        .collect()
}

fn from_reader(tensors: &[ForeignTensor]) -> Vec<Seen> {
    tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.dtype,
                t.source_type,
                t.shape.clone(),
                t.start,
                t.end,
            )
        })
        .collect()
}

/// Parses a safetensors file the way a caller without the converter would: 8 bytes, then the header.
fn read_safetensors(bytes: &[u8]) -> Result<SafetensorsHeader, tinyai_format::SourceError> {
    let length = bytes.len() as u64;
    let needed =
        tinyai_format::safetensors::header_bytes_needed(&bytes[..bytes.len().min(8)], length)?;
    SafetensorsHeader::parse(&bytes[..needed as usize], length)
}

/// Parses a GGUF file from a growing prefix, as a caller reading on demand would.
fn read_gguf(bytes: &[u8]) -> Result<GgufHeader, tinyai_format::SourceError> {
    let mut given = bytes.len().min(16);
    loop {
        match GgufHeader::parse(&bytes[..given], bytes.len() as u64) {
            Err(tinyai_format::SourceError::NeedMoreBytes {
                needed, available, ..
            }) => {
                assert!(needed > available && needed <= bytes.len() as u64);
                given = (needed as usize).max(given * 2).min(bytes.len());
            }
            other => return other,
        }
    }
}

fn converter_safetensors(path: &std::path::Path) -> Result<Vec<Seen>, String> {
    let source = SourceFile::open(path).map_err(|e| e.to_string())?;
    st::read_file(&source, 0)
        .map(|parsed| from_converter(&parsed.tensors))
        .map_err(|e| e.to_string())
}

fn converter_gguf(path: &std::path::Path) -> Result<(Vec<Seen>, Vec<String>), String> {
    let source = SourceFile::open(path).map_err(|e| e.to_string())?;
    gguf::read_file(&source, 0)
        .map(|parsed| {
            (
                from_converter(&parsed.tensors),
                parsed.metadata.into_iter().map(|(key, _)| key).collect(),
            )
        })
        .map_err(|e| e.to_string())
}

fn safetensors_sample() -> Vec<u8> {
    let f32s = |n: usize, seed: u8| pattern(n * 4, seed);
    safetensors_file(
        &[
            (
                "embeddings.word_embeddings.weight",
                Dtype::F32,
                vec![4, 2],
                f32s(8, 1),
            ),
            (
                "encoder.layer.0.attention.self.query.weight",
                Dtype::F16,
                vec![2, 2],
                pattern(8, 2),
            ),
            (
                "encoder.layer.0.output.dense.bias",
                Dtype::BF16,
                vec![3],
                pattern(6, 3),
            ),
            (
                "encoder.layer.1.attention.self.query.weight",
                Dtype::I8,
                vec![5],
                pattern(5, 4),
            ),
            ("pooler.dense.weight", Dtype::U8, vec![1, 3], pattern(3, 5)),
            ("scalar", Dtype::F64, vec![], pattern(8, 6)),
            ("empty", Dtype::F32, vec![0, 7], Vec::new()),
        ],
        Some(
            [("format".to_owned(), "pt".to_owned())]
                .into_iter()
                .collect(),
        ),
    )
}

fn gguf_sample(version: u32) -> Vec<u8> {
    let mut builder = Gguf::new(version);
    builder.kv_string("general.name", "tiny");
    builder.kv_u32("llama.block_count", 2);
    let mut array = Vec::new();
    array.extend_from_slice(&gguf_type::STRING.to_le_bytes());
    array.extend_from_slice(&2u64.to_le_bytes());
    common::gguf_string(&mut array, "a");
    common::gguf_string(&mut array, "bc");
    builder.kv_raw("tokenizer.ggml.tokens", gguf_type::ARRAY, &array);
    builder.tensor("token_embd.weight", &[4, 2], 0, pattern(32, 1));
    for (index, &(type_id, _, block_elements, block_bytes)) in
        GGML_TYPES.iter().enumerate().take(12)
    {
        builder.tensor(
            &format!("blk.{index}.w"),
            &[block_elements, 2],
            type_id,
            pattern((2 * block_bytes) as usize, index as u8),
        );
    }
    builder.tensor("blk.0.unknown", &[64], 99, pattern(64, 9));
    builder.tensor("output_norm.weight", &[4], 0, pattern(16, 8));
    builder.build()
}

#[test]
fn valid_files_agree_with_the_converter() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = safetensors_sample();
    let path = write(dir.path(), "model.safetensors", &bytes);
    let header = read_safetensors(&bytes).unwrap();
    assert_eq!(
        from_reader(&header.tensors),
        converter_safetensors(&path).unwrap()
    );
    assert_eq!(header.metadata, [("format".to_owned(), "pt".to_owned())]);
    for version in [2, 3] {
        let bytes = gguf_sample(version);
        let path = write(dir.path(), "model.gguf", &bytes);
        let header = read_gguf(&bytes).unwrap();
        let (tensors, keys) = converter_gguf(&path).unwrap();
        assert_eq!(header.version, version);
        assert_eq!(from_reader(&header.tensors), tensors);
        let reader_keys: Vec<String> = header.metadata.iter().map(|m| m.key.clone()).collect();
        assert_eq!(reader_keys, keys);
        assert!(header.tensors.iter().any(|t| t.source_type == 99));
    }
}

#[test]
fn layers_match_the_converters_plan() {
    let bytes = gguf_sample(3);
    let header = read_gguf(&bytes).unwrap();
    let layers =
        tinyai_format::group_layers(&header.tensors, &tinyai_cli::convert::Grouping::Default);
    let names: Vec<&str> = header.tensors.iter().map(|t| t.name.as_str()).collect();
    let plan = tinyai_cli::convert::grouping::plan(&names, &tinyai_cli::convert::Grouping::Default);
    assert_eq!(layers.len(), plan.len());
    for (layer, planned) in layers.iter().zip(&plan) {
        assert_eq!(layer.name, planned.name);
        assert_eq!(layer.tensors, planned.tensors);
        let span = layer.spans[0];
        for &index in &layer.tensors {
            let tensor = &header.tensors[index];
            assert!(
                span.start <= tensor.start && tensor.end <= span.end,
                "{}",
                layer.name
            );
        }
    }
    // GGUF pads tensors to 32 bytes: layer.0 holds blk.0.w and blk.0.unknown, far apart.
    let layer0 = layers.iter().find(|l| l.name == "layer.0").unwrap();
    assert!(!layer0.spans[0].contiguous);
}

/// Thousands of truncations, byte flips and overwrites: the converter and the
/// direct reader accept and reject the same files, and agree when they accept.
#[test]
fn mutated_files_are_judged_alike() {
    let dir = tempfile::tempdir().unwrap();
    let samples = [
        ("safetensors", safetensors_sample()),
        ("gguf", gguf_sample(2)),
        ("gguf", gguf_sample(3)),
    ];
    let mut state = 0x5eed_u64;
    let mut accepted = 0;
    let mut rejected = 0;
    for round in 0..1500 {
        let (kind, valid) = &samples[round % samples.len()];
        let mut bytes = valid.clone();
        state = splitmix64(state);
        let header_end = if *kind == "gguf" {
            read_gguf(valid).unwrap().header_length as usize
        } else {
            read_safetensors(valid).unwrap().data_start as usize
        };
        let position = (state % header_end as u64) as usize;
        match (state >> 32) % 4 {
            0 => bytes.truncate((state >> 40) as usize % bytes.len()),
            1 => bytes[position] ^= 1 << ((state >> 40) % 8),
            2 => bytes[position] = (state >> 40) as u8,
            _ => {
                let end = (position + 8).min(bytes.len());
                for (offset, byte) in bytes[position..end].iter_mut().enumerate() {
                    *byte = [0xff, 0x00, 0x7f, 0x80][offset % 4];
                }
            }
        }
        let path = write(dir.path(), &format!("m.{kind}"), &bytes);
        let (reader, converter) = if *kind == "gguf" {
            (
                read_gguf(&bytes).map(|h| from_reader(&h.tensors)),
                converter_gguf(&path).map(|(tensors, _)| tensors),
            )
        } else {
            (
                read_safetensors(&bytes).map(|h| from_reader(&h.tensors)),
                converter_safetensors(&path),
            )
        };
        match (reader, converter) {
            (Ok(reader), Ok(converter)) => {
                assert_eq!(reader, converter, "round {round}");
                accepted += 1;
            }
            (Err(_), Err(_)) => rejected += 1,
            (reader, converter) => {
                panic!("round {round} ({kind}): reader {reader:?} but converter {converter:?}")
            }
        }
    }
    assert!(
        accepted > 50 && rejected > 500,
        "{accepted} accepted, {rejected} rejected"
    );
}
