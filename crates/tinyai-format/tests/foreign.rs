//! The safetensors and GGUF header readers: round trips against the
//! `safetensors` crate, the "need more bytes" contract at every prefix length,
//! thousands of mutations that must never panic, and the real MiniLM model.
#![allow(clippy::unwrap_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use proptest::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use tinyai_format::fixtures::{skip, splitmix64};
use tinyai_format::safetensors::header_bytes_needed;
use tinyai_format::{
    DType, ForeignTensor, GgufHeader, Grouping, SafetensorsHeader, SourceError, group_layers,
};

fn gguf_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// A GGUF file: `(key, value type, encoded value)` pairs and `(name, dims innermost first, GGML type, data)` tensors.
fn gguf_file(
    version: u32,
    alignment: u64,
    kv: &[(&str, u32, Vec<u8>)],
    tensors: &[(&str, Vec<u64>, u32, Vec<u8>)],
) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kv.len() as u64 + 1).to_le_bytes());
    gguf_string(&mut out, "general.alignment");
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&(alignment as u32).to_le_bytes());
    for (key, ty, value) in kv {
        gguf_string(&mut out, key);
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(value);
    }
    let mut offset = 0u64;
    for (name, dims, ty, data) in tensors {
        gguf_string(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for dim in dims {
            out.extend_from_slice(&dim.to_le_bytes());
        }
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset = (offset + data.len() as u64).next_multiple_of(alignment);
    }
    out.resize((out.len() as u64).next_multiple_of(alignment) as usize, 0);
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
        out.resize((out.len() as u64).next_multiple_of(alignment) as usize, 0);
    }
    out
}

fn gguf_sample() -> Vec<u8> {
    let mut tokens = 8u32.to_le_bytes().to_vec();
    tokens.extend_from_slice(&3u64.to_le_bytes());
    for token in ["<s>", "a", "bc"] {
        gguf_string(&mut tokens, token);
    }
    let mut floats = 6u32.to_le_bytes().to_vec();
    floats.extend_from_slice(&2u64.to_le_bytes());
    floats.extend_from_slice(&1.5f32.to_le_bytes());
    floats.extend_from_slice(&(-2.0f32).to_le_bytes());
    let mut name = Vec::new();
    gguf_string(&mut name, "tiny");
    gguf_file(
        3,
        32,
        &[
            ("general.name", 8, name),
            ("llama.block_count", 10, 2u64.to_le_bytes().to_vec()),
            ("tokenizer.ggml.tokens", 9, tokens),
            ("tokenizer.ggml.scores", 9, floats),
            ("flag", 7, vec![1]),
        ],
        &[
            ("token_embd.weight", vec![4, 3], 0, vec![1; 48]),
            ("blk.0.attn_q.weight", vec![32, 2], 2, vec![2; 36]),
            ("blk.0.attn_norm.weight", vec![4], 30, vec![3; 8]),
            ("blk.1.attn_q.weight", vec![256], 12, vec![4; 144]),
            ("blk.1.odd", vec![10], 77, vec![5; 10]),
            ("output_norm.weight", vec![4], 0, vec![6; 16]),
        ],
    )
}

fn safetensors_sample() -> Vec<u8> {
    let data: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 24]).collect();
    let views = vec![
        (
            "embeddings.word_embeddings.weight",
            TensorView::new(Dtype::F32, vec![3, 2], &data[0]).unwrap(),
        ),
        (
            "encoder.layer.0.attention.self.query.weight",
            TensorView::new(Dtype::F16, vec![3, 4], &data[1]).unwrap(),
        ),
        (
            "encoder.layer.0.output.dense.bias",
            TensorView::new(Dtype::BF16, vec![12], &data[2]).unwrap(),
        ),
        (
            "encoder.layer.1.output.dense.bias",
            TensorView::new(Dtype::I8, vec![24], &data[3]).unwrap(),
        ),
        (
            "pooler.dense.weight",
            TensorView::new(Dtype::U16, vec![2, 6], &data[4]).unwrap(),
        ),
        (
            "scalar",
            TensorView::new(Dtype::F64, vec![], &data[5][..8]).unwrap(),
        ),
    ];
    let metadata = [("format".to_owned(), "pt".to_owned())]
        .into_iter()
        .collect();
    safetensors::serialize(views, Some(metadata)).unwrap()
}

/// Checks what a successful parse promises, so a mutation that is accepted is still sound.
fn check_tensors(tensors: &[ForeignTensor], data_start: u64, file_length: u64) {
    for tensor in tensors {
        assert!(
            data_start <= tensor.start && tensor.start <= tensor.end && tensor.end <= file_length
        );
        assert!(tensor.shape.len() <= tinyai_format::limits::MAX_RANK);
    }
    let layers = group_layers(tensors, &Grouping::Default);
    let grouped: usize = layers.iter().map(|layer| layer.tensors.len()).sum();
    assert_eq!(grouped, tensors.len());
    for layer in &layers {
        for span in &layer.spans {
            assert!(span.start <= span.end && span.end <= file_length);
            assert!(span.tensor_bytes <= span.end - span.start);
            assert_eq!(span.contiguous, span.tensor_bytes == span.end - span.start);
        }
    }
}

#[test]
fn gguf_header_is_read_with_metadata_alignment_and_ranges() {
    let bytes = gguf_sample();
    let header = GgufHeader::parse(&bytes, bytes.len() as u64).unwrap();
    assert_eq!((header.version, header.alignment), (3, 32));
    assert_eq!(header.data_start % 32, 0);
    assert!(header.header_length <= header.data_start);
    let name = header.metadata_value("general.name").unwrap();
    assert_eq!(GgufHeader::string_bytes(&bytes, name), Some(&b"tiny"[..]));
    assert_eq!(
        header.metadata_value("llama.block_count"),
        Some(&tinyai_format::gguf::GgufValue::U64(2))
    );
    assert!(matches!(
        header.metadata_value("tokenizer.ggml.tokens"),
        Some(tinyai_format::gguf::GgufValue::Array {
            element_type: 8,
            count: 3,
            ..
        })
    ));
    let by_name = |name: &str| header.tensors.iter().find(|t| t.name == name).unwrap();
    let embed = by_name("token_embd.weight");
    assert_eq!(
        (embed.dtype, embed.shape.as_slice()),
        (DType::F32, &[3, 4][..])
    );
    assert_eq!(
        (embed.start, embed.end),
        (header.data_start, header.data_start + 48)
    );
    let q4 = by_name("blk.0.attn_q.weight");
    assert_eq!(
        (q4.dtype, q4.source_type, q4.length()),
        (DType::Ggml, 2, 36)
    );
    assert_eq!(by_name("blk.0.attn_norm.weight").dtype, DType::BF16);
    // An unknown GGML type is sized by the distance to the next tensor (padding included).
    let odd = by_name("blk.1.odd");
    assert_eq!((odd.source_type, odd.length()), (77, 32));
    check_tensors(&header.tensors, header.data_start, bytes.len() as u64);
    let layers = group_layers(&header.tensors, &Grouping::Default);
    let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["token_embd", "layer.0", "layer.1", "output_norm"]);
}

/// Every prefix shorter than the header asks for more (never more than the header),
/// every longer one parses to the same header.
#[test]
fn every_prefix_asks_for_what_it_needs() {
    let bytes = gguf_sample();
    let full = GgufHeader::parse(&bytes, bytes.len() as u64).unwrap();
    for cut in 0..=bytes.len() {
        match GgufHeader::parse(&bytes[..cut], bytes.len() as u64) {
            Ok(header) => {
                assert!(cut as u64 >= full.header_length, "cut {cut}");
                assert_eq!(header, full);
            }
            Err(SourceError::NeedMoreBytes {
                needed, available, ..
            }) => {
                assert!((cut as u64) < full.header_length, "cut {cut}");
                assert_eq!(available, cut as u64);
                assert!(
                    needed > available && needed <= full.header_length,
                    "cut {cut}: {needed}"
                );
            }
            Err(other) => panic!("cut {cut}: {other}"),
        }
    }
    let bytes = safetensors_sample();
    let needed = header_bytes_needed(&bytes[..8], bytes.len() as u64).unwrap();
    for cut in 0..=bytes.len() {
        match SafetensorsHeader::parse(&bytes[..cut], bytes.len() as u64) {
            Ok(header) => {
                assert!(cut as u64 >= needed);
                assert_eq!(header.data_start, needed);
            }
            Err(SourceError::NeedMoreBytes { needed: asked, .. }) => {
                assert!((cut as u64) < needed);
                assert_eq!(asked, if cut < 8 { 8 } else { needed });
            }
            Err(other) => panic!("cut {cut}: {other}"),
        }
    }
}

#[test]
fn malformed_gguf_headers_have_typed_errors() {
    let valid = gguf_sample();
    let file_length = valid.len() as u64;
    let malformed = |bytes: &[u8], needle: &str| match GgufHeader::parse(bytes, bytes.len() as u64)
    {
        Err(error @ SourceError::MalformedSourceHeader { .. }) => {
            assert!(error.to_string().contains(needle), "{error}")
        }
        other => panic!("{needle}: {other:?}"),
    };
    let mut bytes = valid.clone();
    bytes[0] = b'X';
    malformed(&bytes, "bad magic");
    let mut bytes = valid.clone();
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    malformed(&bytes, "big-endian");
    let mut bytes = valid.clone();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    malformed(&bytes, "tensor count");
    let mut bytes = valid.clone();
    bytes[16..24].copy_from_slice(&(file_length / 2).to_le_bytes());
    malformed(&bytes, "metadata key/value count");
    let alignment_value = 24 + 8 + "general.alignment".len() + 4;
    let mut bytes = valid.clone();
    bytes[alignment_value..alignment_value + 4].copy_from_slice(&48u32.to_le_bytes());
    malformed(&bytes, "power of two");
    // A file cut inside its header is malformed (the file ends), not "need more bytes".
    let header_length = GgufHeader::parse(&valid, file_length)
        .unwrap()
        .header_length as usize;
    malformed(&valid[..header_length - 5], "the file ends");
    let tensors = [
        ("a", vec![4], 0, vec![0; 16]),
        ("b", vec![4], 0, vec![0; 16]),
    ];
    let bytes = gguf_file(2, 32, &[], &tensors);
    assert!(GgufHeader::parse(&bytes, bytes.len() as u64).is_ok());
    let past_end = gguf_file(2, 32, &[], &[("a", vec![64], 0, vec![0; 16])]);
    assert!(matches!(
        GgufHeader::parse(&past_end, past_end.len() as u64),
        Err(SourceError::SourceTensorOutOfBounds { .. })
    ));
    let bad_block = gguf_file(2, 32, &[], &[("a", vec![33], 2, vec![0; 36])]);
    assert!(matches!(
        GgufHeader::parse(&bad_block, bad_block.len() as u64),
        Err(SourceError::SourceTensorSizeMismatch { .. })
    ));
    let duplicate = gguf_file(
        2,
        32,
        &[],
        &[
            ("a", vec![4], 0, vec![0; 16]),
            ("a", vec![4], 0, vec![0; 16]),
        ],
    );
    assert!(
        GgufHeader::parse(&duplicate, duplicate.len() as u64)
            .unwrap_err()
            .to_string()
            .contains("duplicate tensor name")
    );
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = splitmix64(self.0);
        self.0
    }
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, valid: &[u8], header_end: usize) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    let position = rng.below(header_end);
    match rng.below(5) {
        0 => bytes.truncate(rng.below(bytes.len())),
        1 => bytes[position] ^= 1 << rng.below(8),
        2 => bytes[position] = rng.next() as u8,
        3 => {
            let value = [
                0,
                1,
                7,
                8,
                255,
                65_535,
                u64::MAX / 2,
                u64::MAX,
                bytes.len() as u64,
            ][rng.below(9)];
            let end = (position + 8).min(bytes.len());
            let encoded = value.to_le_bytes();
            bytes[position..end].copy_from_slice(&encoded[..end - position]);
        }
        _ => {
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(header_end);
                bytes[at] = rng.next() as u8;
            }
        }
    }
    bytes
}

/// Parses `bytes` as a caller would (head first, growing it on request); must not panic.
fn parse_any(bytes: &[u8], gguf: bool, head: usize) {
    let file_length = bytes.len() as u64;
    let mut given = head.min(bytes.len());
    for _ in 0..64 {
        let result = if gguf {
            GgufHeader::parse(&bytes[..given], file_length).map(|header| {
                check_tensors(&header.tensors, header.data_start, file_length);
            })
        } else {
            header_bytes_needed(&bytes[..given], file_length)
                .and_then(|_| SafetensorsHeader::parse(&bytes[..given], file_length))
                .map(|header| check_tensors(&header.tensors, header.data_start, file_length))
        };
        match result {
            Err(SourceError::NeedMoreBytes {
                needed, available, ..
            }) => {
                assert!(needed > available && needed <= file_length);
                given = (needed as usize).max(given * 2).min(bytes.len());
            }
            Err(error) => {
                let _ = error.to_string();
                return;
            }
            Ok(()) => return,
        }
    }
}

#[test]
fn thousands_of_mutations_never_panic() {
    let samples = [(true, gguf_sample()), (false, safetensors_sample())];
    let mut rng = Rng(0x0f0f_1515);
    for round in 0..6000 {
        let (gguf, valid) = &samples[round % 2];
        let header_end = if *gguf {
            GgufHeader::parse(valid, valid.len() as u64)
                .unwrap()
                .header_length
        } else {
            header_bytes_needed(valid, valid.len() as u64).unwrap()
        } as usize;
        let bytes = mutate(&mut rng, valid, header_end);
        let head = [8, 24, 100, bytes.len()][rng.below(4)];
        let outcome = catch_unwind(AssertUnwindSafe(|| parse_any(&bytes, *gguf, head)));
        assert!(outcome.is_ok(), "round {round}: panicked on {bytes:02x?}");
    }
}

fn st_dtype(index: usize) -> (Dtype, DType, usize) {
    [
        (Dtype::F32, DType::F32, 4),
        (Dtype::F16, DType::F16, 2),
        (Dtype::BF16, DType::BF16, 2),
        (Dtype::U8, DType::U8, 1),
        (Dtype::I64, DType::I64, 8),
        (Dtype::BOOL, DType::Bool, 1),
    ][index]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Files written by the `safetensors` crate: every tensor's name, dtype,
    /// shape and byte range agree with the crate's own reading.
    #[test]
    fn safetensors_round_trip(
        specs in prop::collection::vec(
            ("[a-z]{1,3}(\\.[0-9]{1,2})?\\.[a-z]{1,4}", 0usize..6, prop::collection::vec(0usize..5, 0..4)),
            0..12,
        )
    ) {
        let mut seen = std::collections::HashSet::new();
        let specs: Vec<_> = specs.into_iter().filter(|(name, _, _)| seen.insert(name.clone())).collect();
        let data: Vec<Vec<u8>> = specs
            .iter()
            .map(|(_, dtype, shape)| vec![7u8; shape.iter().product::<usize>() * st_dtype(*dtype).2])
            .collect();
        let views: Vec<(String, TensorView<'_>)> = specs
            .iter()
            .zip(&data)
            .map(|((name, dtype, shape), bytes)| {
                (name.clone(), TensorView::new(st_dtype(*dtype).0, shape.clone(), bytes).unwrap())
            })
            .collect();
        let bytes = safetensors::serialize(views, None).unwrap();
        let header = SafetensorsHeader::parse(&bytes, bytes.len() as u64).unwrap();
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let data_start = header.data_start;
        prop_assert_eq!(header.tensors.len(), specs.len());
        for tensor in &header.tensors {
            let info = metadata.info(&tensor.name).unwrap();
            let index = specs.iter().position(|(name, _, _)| *name == tensor.name).unwrap();
            prop_assert_eq!(tensor.dtype, st_dtype(specs[index].1).1);
            let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
            prop_assert_eq!(&tensor.shape, &shape);
            prop_assert_eq!(tensor.start, data_start + info.data_offsets.0 as u64);
            prop_assert_eq!(tensor.end, data_start + info.data_offsets.1 as u64);
        }
        check_tensors(&header.tensors, data_start, bytes.len() as u64);
    }
}

/// The real MiniLM model: its safetensors header, read directly, agrees with the
/// `safetensors` crate, and groups into embeddings, 6 layers and the pooler.
#[test]
fn real_minilm_safetensors() {
    let dir = match tinyai_format::real_model::ensure(tinyai_format::real_model::DEFAULT_TIMEOUT) {
        Ok(dir) => dir,
        Err(reason) => {
            skip("real_minilm_safetensors", &reason);
            return;
        }
    };
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let file_length = bytes.len() as u64;
    let needed = header_bytes_needed(&bytes[..8], file_length).unwrap();
    let header = SafetensorsHeader::parse(&bytes[..needed as usize], file_length).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(header.tensors.len(), metadata.tensors().len());
    for tensor in &header.tensors {
        let info = metadata.info(&tensor.name).unwrap();
        assert_eq!(
            tensor.start,
            needed + info.data_offsets.0 as u64,
            "{}",
            tensor.name
        );
        assert_eq!(
            tensor.end,
            needed + info.data_offsets.1 as u64,
            "{}",
            tensor.name
        );
        let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
        assert_eq!(tensor.shape, shape, "{}", tensor.name);
    }
    let layers = group_layers(&header.tensors, &Grouping::Default);
    let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"embeddings"));
    assert_eq!(names.last(), Some(&"pooler"));
    assert_eq!(names.len(), 8, "{names:?}");
    let covered: u64 = layers.iter().map(|l| l.spans[0].tensor_bytes).sum();
    assert_eq!(
        covered,
        header
            .tensors
            .iter()
            .map(ForeignTensor::length)
            .sum::<u64>()
    );
    // The layers of a safetensors file are not page-aligned.
    assert!(layers.iter().any(|l| l.spans[0].start % 4096 != 0));
}

/// 30,000 tensors of an unknown GGML type at one offset: each is sized by a binary
/// search for the next offset (a linear scan made this quadratic), then rejected.
#[test]
fn many_tensors_at_one_offset_are_rejected_without_quadratic_work() {
    let mut bytes = b"GGUF".to_vec();
    let count = 30_000u64;
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&count.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    for index in 0..count {
        gguf_string(&mut bytes, &format!("t{index}"));
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&99u32.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
    }
    bytes.resize(bytes.len().next_multiple_of(32) + 64, 0);
    assert!(matches!(
        GgufHeader::parse(&bytes, bytes.len() as u64),
        Err(SourceError::SourceTensorsOverlap { .. })
    ));
}

/// Inputs the `gguf` fuzz target (fuzz/) found panicking: a quantised
/// tensor whose element count nearly fills `u128`, so its byte size
/// overflowed. Each must be a typed error, from this crate's reader and
/// through content detection.
#[test]
fn fuzz_found_gguf_inputs_are_errors_not_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("gguf-")
        {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            tinyai_format::detect(&bytes, bytes.len() as u64),
            tinyai_format::FileKind::Gguf
        );
        assert!(
            GgufHeader::parse(&bytes, bytes.len() as u64).is_err(),
            "{} parsed",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 1, "no regression inputs in {}", dir.display());
}
