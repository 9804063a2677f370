//! One case per `FormatError` variant: malformed files built by writing a valid
//! file and patching bytes (re-sealing the CRCs so later checks are reached),
//! plus the request-time and writer-side errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{Cursor, Seek, SeekFrom, Write};

use common::*;
use tinyai_format::fixtures::{self, legacy_small};
use tinyai_format::{DType, FormatError, Model, TensorSpec, Writer, WriterOptions};

/// Every variant of `FormatError`; the test fails if one has no case.
const ALL_VARIANTS: &[&str] = &[
    "Truncated",
    "BadMagic",
    "ForeignFormat",
    "UnsupportedVersion",
    "InvalidHeaderSize",
    "HeaderChecksumMismatch",
    "TablesChecksumMismatch",
    "FileLengthMismatch",
    "InvalidAlignment",
    "AbsurdCount",
    "TableOutOfBounds",
    "MisalignedTable",
    "TablesOverlap",
    "LayerOverflow",
    "LayerOutOfBounds",
    "LayerOverlapsTables",
    "LayerOverlap",
    "MisalignedLayer",
    "InvalidPrecision",
    "TensorRangeInvalid",
    "OrphanTensors",
    "TensorOutOfLayer",
    "InvalidRank",
    "TensorSizeMismatch",
    "UnknownDType",
    "StringOutOfBounds",
    "StringTooLong",
    "InvalidUtf8",
    "DuplicateLayerName",
    "DuplicateTensorName",
    "DuplicateMetadataKey",
    "ChecksumMismatch",
    "NoChecksum",
    "LayerIndexOutOfRange",
    "NoLayerData",
    "InvalidTensorSpec",
    "InvalidInput",
    "Io",
];

fn variant_name(error: &FormatError) -> String {
    let debug = format!("{error:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A valid v2 file: alignment 64; layer 0 "a" = tensors "w" (f32 [4]) and "b"
/// (u8 [3]); layer 1 "b" = tensor "w" (f32 [2, 2]); metadata general.name=x, k2=v2.
/// Written once per test binary (the writer is deterministic; under Miri,
/// writing it for each of the cases would take most of the run).
fn base_v2() -> Vec<u8> {
    static BASE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BASE.get_or_init(write_base_v2).clone()
}

fn write_base_v2() -> Vec<u8> {
    let mut writer = Writer::new(Cursor::new(Vec::new()), WriterOptions { alignment: 64 }).unwrap();
    writer.add_metadata("general.name", "x").unwrap();
    writer.add_metadata("k2", "v2").unwrap();
    writer
        .add_layer(
            "a",
            &[
                (TensorSpec::new("w", DType::F32, &[4]), &[1u8; 16][..]),
                (TensorSpec::new("b", DType::U8, &[3]), &[2u8; 3][..]),
            ],
        )
        .unwrap();
    writer
        .add_layer(
            "b",
            &[(TensorSpec::new("w", DType::F32, &[2, 2]), &[3u8; 16][..])],
        )
        .unwrap();
    let bytes = writer.finish().unwrap().into_inner();
    Model::parse(&bytes).unwrap().verify_all().unwrap();
    bytes
}

fn base_v1() -> Vec<u8> {
    fixtures::legacy_bytes(&legacy_small()).unwrap()
}

/// Applies `patch` to the base v2 file, then re-seals both CRCs.
fn v2(patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = base_v2();
    patch(&mut bytes);
    reseal(&mut bytes);
    bytes
}

/// Applies `patch` to the base v2 file without re-sealing.
fn v2_raw(patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = base_v2();
    patch(&mut bytes);
    bytes
}

fn v1(patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = base_v1();
    patch(&mut bytes);
    bytes
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    check: fn(&FormatError) -> bool,
}

macro_rules! case {
    ($name:expr, $bytes:expr, $pattern:pat) => {
        Case {
            name: $name,
            bytes: $bytes,
            check: |error| matches!(error, $pattern),
        }
    };
}

fn parse_cases() -> Vec<Case> {
    use FormatError as E;
    let string_table = |b: &[u8]| get_u64(b, header::STRING_TABLE_OFFSET) as usize;
    vec![
        // --- header ---
        case!("empty file", Vec::new(), E::Truncated { available: 0, .. }),
        case!(
            "v2 magic only",
            b"TMAI\r\n\x1a\n".to_vec(),
            E::Truncated { .. }
        ),
        case!(
            "v2 header cut",
            v2_raw(|b| b.truncate(100)),
            E::Truncated { .. }
        ),
        case!("bad magic", v2_raw(|b| b[0] = b'X'), E::BadMagic { .. }),
        case!(
            "a safetensors file",
            {
                let mut bytes = 14u64.to_le_bytes().to_vec();
                bytes.extend_from_slice(b"{\"__metadata__\":{}}");
                bytes.resize(600, b' ');
                bytes
            },
            E::ForeignFormat {
                kind: tinyai_format::FileKind::Safetensors
            }
        ),
        case!(
            "a GGUF file",
            {
                let mut bytes = b"GGUF\x03\0\0\0".to_vec();
                bytes.resize(600, 0);
                bytes
            },
            E::ForeignFormat {
                kind: tinyai_format::FileKind::Gguf
            }
        ),
        case!(
            "unsupported major",
            v2(|b| put_u16(b, header::MAJOR, 3)),
            E::UnsupportedVersion { major: 3, .. }
        ),
        case!(
            "header size too small",
            v2(|b| put_u32(b, header::HEADER_SIZE, 100)),
            E::InvalidHeaderSize { header_size: 100 }
        ),
        case!(
            "header size not a multiple of 8",
            v2(|b| put_u32(b, header::HEADER_SIZE, 132)),
            E::InvalidHeaderSize { header_size: 132 }
        ),
        case!(
            "header size above 4096",
            v2(|b| put_u32(b, header::HEADER_SIZE, 8192)),
            E::InvalidHeaderSize { header_size: 8192 }
        ),
        case!(
            "header checksum",
            v2_raw(|b| b[100] ^= 1),
            E::HeaderChecksumMismatch { .. }
        ),
        case!(
            "tables checksum",
            v2_raw(|b| {
                let at = string_table(b);
                b[at] ^= 0x20;
            }),
            E::TablesChecksumMismatch { .. }
        ),
        case!(
            "file truncated by one byte",
            v2_raw(|b| {
                b.pop();
            }),
            E::FileLengthMismatch { .. }
        ),
        case!(
            "file appended to",
            v2_raw(|b| b.push(0)),
            E::FileLengthMismatch { .. }
        ),
        case!(
            "alignment not a power of two",
            v2(|b| put_u64(b, header::ALIGNMENT, 100)),
            E::InvalidAlignment { alignment: 100 }
        ),
        case!(
            "alignment below 64",
            v2(|b| put_u64(b, header::ALIGNMENT, 32)),
            E::InvalidAlignment { alignment: 32 }
        ),
        case!(
            "alignment above 1 GiB",
            v2(|b| put_u64(b, header::ALIGNMENT, 1 << 31)),
            E::InvalidAlignment { .. }
        ),
        // --- table placement ---
        case!(
            "absurd layer count (overflows)",
            v2(|b| put_u64(b, header::LAYER_COUNT, u64::MAX / 2)),
            E::AbsurdCount {
                table: tinyai_format::Table::Layers,
                ..
            }
        ),
        case!(
            "absurd tensor count (bigger than the file)",
            v2(|b| {
                let length = b.len() as u64;
                put_u64(b, header::TENSOR_COUNT, length);
            }),
            E::AbsurdCount {
                table: tinyai_format::Table::Tensors,
                ..
            }
        ),
        case!(
            "string table past the end",
            v2(|b| {
                let past = (b.len() as u64 + 64) & !7;
                put_u64(b, header::STRING_TABLE_OFFSET, past);
            }),
            E::TableOutOfBounds {
                table: tinyai_format::Table::Strings,
                ..
            }
        ),
        case!(
            "layer table inside the header",
            v2(|b| put_u64(b, header::LAYER_TABLE_OFFSET, 64)),
            E::TableOutOfBounds {
                table: tinyai_format::Table::Layers,
                ..
            }
        ),
        case!(
            "misaligned tensor table",
            v2(|b| {
                let at = get_u64(b, header::TENSOR_TABLE_OFFSET);
                put_u64(b, header::TENSOR_TABLE_OFFSET, at + 4);
            }),
            E::MisalignedTable {
                table: tinyai_format::Table::Tensors,
                ..
            }
        ),
        case!(
            "tensor table overlaps the layer table",
            v2(|b| {
                let at = get_u64(b, header::LAYER_TABLE_OFFSET);
                put_u64(b, header::TENSOR_TABLE_OFFSET, at + 8);
            }),
            E::TablesOverlap {
                first: tinyai_format::Table::Layers,
                second: tinyai_format::Table::Tensors,
                ..
            }
        ),
        // --- layers ---
        case!(
            "layer offset + length overflows",
            v2(|b| {
                let at = layer_field(b, 1, layer::OFFSET);
                put_u64(b, at, u64::MAX - 63);
                let at = layer_field(b, 1, layer::LENGTH);
                put_u64(b, at, 128);
            }),
            E::LayerOverflow { layer: 1, .. }
        ),
        case!(
            "layer past the end of the file",
            v2(|b| {
                let length = b.len() as u64;
                let at = layer_field(b, 1, layer::LENGTH);
                put_u64(b, at, length);
            }),
            E::LayerOutOfBounds { layer: 1, .. }
        ),
        case!(
            "layer inside the header",
            v2(|b| {
                let at = layer_field(b, 0, layer::OFFSET);
                put_u64(b, at, 64);
            }),
            E::LayerOverlapsTables {
                layer: 0,
                region_start: 0,
                ..
            }
        ),
        case!(
            "empty layer inside the header",
            v2(|b| {
                let at = layer_field(b, 0, layer::OFFSET);
                put_u64(b, at, 64);
                let at = layer_field(b, 0, layer::LENGTH);
                put_u64(b, at, 0);
            }),
            E::LayerOverlapsTables {
                layer: 0,
                region_start: 0,
                ..
            }
        ),
        case!(
            "layer inside the tables",
            v2(|b| {
                let tables = get_u64(b, header::LAYER_TABLE_OFFSET).next_multiple_of(64);
                let at = layer_field(b, 1, layer::OFFSET);
                put_u64(b, at, tables);
            }),
            E::LayerOverlapsTables {
                layer: 1,
                region_start: 1..,
                ..
            }
        ),
        case!(
            "overlapping layers",
            v2(|b| {
                let first = get_u64(b, layer_field(b, 0, layer::OFFSET));
                let at = layer_field(b, 1, layer::OFFSET);
                put_u64(b, at, first);
            }),
            E::LayerOverlap {
                layer: 1,
                previous: 0,
                ..
            }
        ),
        case!(
            "misaligned layer",
            v2(|b| {
                let at = layer_field(b, 1, layer::OFFSET);
                let offset = get_u64(b, at);
                put_u64(b, at, offset + 8);
            }),
            E::MisalignedLayer {
                layer: 1,
                alignment: 64,
                ..
            }
        ),
        case!(
            "precision 0",
            v2(|b| {
                let at = layer_field(b, 0, layer::PRECISION);
                put_u16(b, at, 0);
            }),
            E::InvalidPrecision { layer: 0, bits: 0 }
        ),
        case!(
            "precision 65",
            v2(|b| {
                let at = layer_field(b, 1, layer::PRECISION);
                put_u16(b, at, 65);
            }),
            E::InvalidPrecision { layer: 1, bits: 65 }
        ),
        case!(
            "unknown layer dtype",
            v2(|b| {
                let at = layer_field(b, 1, layer::DTYPE);
                put_u16(b, at, 500);
            }),
            E::UnknownDType {
                what: "layer",
                index: 1,
                code: 500
            }
        ),
        case!(
            "layer name out of the string table",
            v2(|b| {
                let length = get_u64(b, header::STRING_TABLE_LENGTH);
                let at = layer_field(b, 0, layer::NAME_OFFSET);
                put_u64(b, at, length);
            }),
            E::StringOutOfBounds {
                owner: tinyai_format::StringOwner::LayerName(0),
                ..
            }
        ),
        case!(
            "layer name offset overflows",
            v2(|b| {
                let at = layer_field(b, 0, layer::NAME_OFFSET);
                put_u64(b, at, u64::MAX);
            }),
            E::StringOutOfBounds {
                owner: tinyai_format::StringOwner::LayerName(0),
                ..
            }
        ),
        case!(
            "duplicate layer name",
            v2(|b| {
                let name = get_u64(b, layer_field(b, 0, layer::NAME_OFFSET));
                let at = layer_field(b, 1, layer::NAME_OFFSET);
                put_u64(b, at, name);
            }),
            E::DuplicateLayerName {
                layer: 1,
                first: 0,
                ..
            }
        ),
        // --- tensor ranges ---
        case!(
            "tensor range not contiguous",
            v2(|b| {
                let at = layer_field(b, 1, layer::FIRST_TENSOR);
                put_u64(b, at, 0);
            }),
            E::TensorRangeInvalid {
                layer: 1,
                expected_first: 2,
                ..
            }
        ),
        case!(
            "tensor range past the table",
            v2(|b| {
                let at = layer_field(b, 1, layer::TENSOR_COUNT);
                put_u64(b, at, u64::MAX);
            }),
            E::TensorRangeInvalid { layer: 1, .. }
        ),
        case!(
            "orphan tensors",
            v2(|b| {
                let at = layer_field(b, 1, layer::TENSOR_COUNT);
                put_u64(b, at, 0);
            }),
            E::OrphanTensors {
                referenced: 2,
                tensor_count: 3
            }
        ),
        // --- tensors ---
        case!(
            "tensor outside its layer",
            v2(|b| {
                let at = tensor_field(b, 1, tensor::OFFSET);
                put_u64(b, at, 1000);
            }),
            E::TensorOutOfLayer {
                tensor: 1,
                layer: 0,
                ..
            }
        ),
        case!(
            "tensor offset + length overflows",
            v2(|b| {
                let at = tensor_field(b, 0, tensor::OFFSET);
                put_u64(b, at, u64::MAX);
            }),
            E::TensorOutOfLayer { tensor: 0, .. }
        ),
        case!(
            "rank 9",
            v2(|b| {
                let at = tensor_field(b, 0, tensor::RANK);
                put_u16(b, at, 9);
            }),
            E::InvalidRank { tensor: 0, rank: 9 }
        ),
        case!(
            "dimension past the rank",
            v2(|b| {
                let at = tensor_field(b, 0, tensor::SHAPE + 8 * 3);
                put_u64(b, at, 5);
            }),
            E::InvalidRank { tensor: 0, rank: 1 }
        ),
        case!(
            "tensor size mismatch",
            v2(|b| {
                let at = tensor_field(b, 0, tensor::LENGTH);
                put_u64(b, at, 12);
            }),
            E::TensorSizeMismatch {
                tensor: 0,
                expected: 16,
                actual: 12,
                ..
            }
        ),
        case!(
            "element count overflows (huge shape)",
            v2(|b| {
                let at = tensor_field(b, 2, tensor::RANK);
                put_u16(b, at, 3);
                for (i, d) in [1u64 << 63, 1 << 63, 2].into_iter().enumerate() {
                    let at = tensor_field(b, 2, tensor::SHAPE + 8 * i);
                    put_u64(b, at, d);
                }
            }),
            E::TensorSizeMismatch { tensor: 2, .. }
        ),
        case!(
            "huge GGML shape",
            v2(|b| {
                let at = tensor_field(b, 2, tensor::DTYPE);
                put_u16(b, at, DType::Ggml.code());
                let at = tensor_field(b, 2, tensor::SOURCE_TYPE);
                put_u32(b, at, 15); // Q8_K: 256 elements in 292 bytes
                let at = tensor_field(b, 2, tensor::RANK);
                put_u16(b, at, 2);
                for (i, d) in [!255u64, !255u64].into_iter().enumerate() {
                    let at = tensor_field(b, 2, tensor::SHAPE + 8 * i);
                    put_u64(b, at, d);
                }
            }),
            E::TensorSizeMismatch { tensor: 2, .. }
        ),
        case!(
            "unknown tensor dtype",
            v2(|b| {
                let at = tensor_field(b, 2, tensor::DTYPE);
                put_u16(b, at, 999);
            }),
            E::UnknownDType {
                what: "tensor",
                index: 2,
                code: 999
            }
        ),
        case!(
            "tensor with the layer-only dtype mixed",
            v2(|b| {
                let at = tensor_field(b, 2, tensor::DTYPE);
                put_u16(b, at, 0xFFFF);
            }),
            E::UnknownDType {
                what: "tensor",
                index: 2,
                code: 0xFFFF
            }
        ),
        case!(
            "tensor name too long",
            v2(|b| {
                let at = tensor_field(b, 0, tensor::NAME_LENGTH);
                put_u32(b, at, 70_000);
            }),
            E::StringTooLong {
                owner: tinyai_format::StringOwner::TensorName(0),
                length: 70_000,
                ..
            }
        ),
        case!(
            "duplicate tensor name in a layer",
            v2(|b| {
                let name = get_u64(b, tensor_field(b, 0, tensor::NAME_OFFSET));
                let at = tensor_field(b, 1, tensor::NAME_OFFSET);
                put_u64(b, at, name);
            }),
            E::DuplicateTensorName {
                tensor: 1,
                layer: 0,
                ..
            }
        ),
        // --- metadata and strings ---
        case!(
            "invalid UTF-8 in a metadata key",
            v2(|b| {
                let at = string_table(b);
                b[at] = 0xFF;
            }),
            E::InvalidUtf8 {
                owner: tinyai_format::StringOwner::MetadataKey(0),
                valid_up_to: 0
            }
        ),
        case!(
            "metadata value too long",
            v2(|b| {
                let at = metadata_field(b, 1, metadata::VALUE_LENGTH);
                put_u32(b, at, (16 << 20) + 1);
            }),
            E::StringTooLong {
                owner: tinyai_format::StringOwner::MetadataValue(1),
                ..
            }
        ),
        case!(
            "metadata value out of the string table",
            v2(|b| {
                let at = metadata_field(b, 1, metadata::VALUE_LENGTH);
                put_u32(b, at, 10_000);
            }),
            E::StringOutOfBounds {
                owner: tinyai_format::StringOwner::MetadataValue(1),
                ..
            }
        ),
        case!(
            "duplicate metadata key",
            v2(|b| {
                let key = get_u64(b, metadata_field(b, 0, metadata::KEY_OFFSET));
                let length = get_u32(b, metadata_field(b, 0, metadata::KEY_LENGTH));
                let at = metadata_field(b, 1, metadata::KEY_OFFSET);
                put_u64(b, at, key);
                let at = metadata_field(b, 1, metadata::KEY_LENGTH);
                put_u32(b, at, length);
            }),
            E::DuplicateMetadataKey { entry: 1, .. }
        ),
        // --- legacy v1 ---
        case!(
            "v1 header truncated",
            v1(|b| b.truncate(100)),
            E::Truncated { .. }
        ),
        case!(
            "v1 table truncated",
            v1(|b| b.truncate(256 + 5 * 32)),
            E::Truncated { .. }
        ),
        case!(
            "v1 absurd count",
            v1(|b| put_u32(b, v1::LAYER_COUNT, 1_000_000)),
            E::AbsurdCount {
                count: 1_000_000,
                ..
            }
        ),
        case!(
            "v1 layer out of bounds",
            v1(|b| {
                let at = v1_field(9, v1::SIZE);
                put_u32(b, at, 1025);
            }),
            E::LayerOutOfBounds { layer: 9, .. }
        ),
        case!(
            "v1 layer offset + size overflows 32 bits",
            v1(|b| {
                put_u32(b, v1_field(3, v1::OFFSET), 0xFFFF_FF00);
                put_u32(b, v1_field(3, v1::SIZE), 0x200);
            }),
            E::LayerOverflow { layer: 3, .. }
        ),
        case!(
            "v1 layer overlaps the table",
            v1(|b| put_u32(b, v1_field(0, v1::OFFSET), 300)),
            E::LayerOverlapsTables { layer: 0, .. }
        ),
        case!(
            "v1 overlapping layers",
            v1(|b| {
                let first = get_u32(b, v1_field(0, v1::OFFSET));
                put_u32(b, v1_field(1, v1::OFFSET), first + 10);
            }),
            E::LayerOverlap { .. }
        ),
        case!(
            "v1 precision 0",
            v1(|b| put_u32(b, v1_field(2, v1::PRECISION), 0)),
            E::InvalidPrecision { layer: 2, bits: 0 }
        ),
        case!(
            "v1 version 2",
            v1(|b| put_u32(b, v1::VERSION, 2)),
            E::UnsupportedVersion { major: 2, .. }
        ),
        case!(
            "v1 name not UTF-8",
            v1(|b| b[v1::NAME] = 0xFF),
            E::InvalidUtf8 {
                owner: tinyai_format::StringOwner::LegacyModelName,
                ..
            }
        ),
    ]
}

/// The 8 malformed legacy files a new user would try first (the C loader
/// crashed or accepted garbage on 6 of them).
fn new_user_legacy_cases() -> Vec<Case> {
    use FormatError as E;
    let header_only = {
        let mut bytes = base_v1();
        bytes.truncate(256);
        bytes
    };
    let mut random = Vec::with_capacity(4096);
    let mut state = 0x1234_5678_9ABC_DEF0u64;
    for _ in 0..4096 {
        state = tinyai_format::fixtures::splitmix64(state);
        random.push(state as u8);
    }
    vec![
        case!("legacy: empty file", Vec::new(), E::Truncated { .. }),
        case!("legacy: header only", header_only, E::AbsurdCount { .. }),
        case!(
            "legacy: count 1,000,000 with no table",
            v1(|b| {
                put_u32(b, v1::LAYER_COUNT, 1_000_000);
                b.truncate(256);
            }),
            E::AbsurdCount {
                count: 1_000_000,
                ..
            }
        ),
        case!(
            "legacy: offset past the end",
            v1(|b| {
                let length = b.len() as u32;
                put_u32(b, v1_field(4, v1::OFFSET), length + 100);
            }),
            E::LayerOutOfBounds { layer: 4, .. }
        ),
        case!(
            "legacy: size past the end",
            v1(|b| put_u32(b, v1_field(4, v1::SIZE), 1 << 30)),
            E::LayerOutOfBounds { layer: 4, .. }
        ),
        case!(
            "legacy: offset + size overflows u32",
            v1(|b| {
                put_u32(b, v1_field(4, v1::OFFSET), u32::MAX - 10);
                put_u32(b, v1_field(4, v1::SIZE), 100);
            }),
            E::LayerOverflow { layer: 4, .. }
        ),
        case!(
            "legacy: garbage (a text file)",
            b"hello, this is not a model file at all\n".repeat(20),
            E::BadMagic { .. }
        ),
        case!("legacy: random bytes", random, E::BadMagic { .. }),
    ]
}

fn run(cases: Vec<Case>, seen: &mut BTreeSet<String>) {
    let mut failures = Vec::new();
    for case in cases {
        match Model::parse(&case.bytes) {
            Ok(_) => failures.push(format!("{}: parsed successfully", case.name)),
            Err(error) => {
                let message = error.to_string();
                assert!(!message.is_empty());
                if (case.check)(&error) {
                    seen.insert(variant_name(&error));
                } else {
                    failures.push(format!("{}: unexpected {error:?} ({message})", case.name));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
}

/// A sink that accepts `budget` bytes, then fails.
struct FailingSink {
    inner: Cursor<Vec<u8>>,
    budget: usize,
}

impl Write for FailingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.inner.get_ref().len() + buf.len() > self.budget {
            return Err(std::io::Error::other("disk full"));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for FailingSink {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

fn request_time_errors(seen: &mut BTreeSet<String>) {
    let mut record = |error: FormatError| {
        assert!(!error.to_string().is_empty());
        seen.insert(variant_name(&error));
    };

    let bytes = base_v2();
    let model = Model::parse(&bytes).unwrap();
    let error = model.layer(2).unwrap_err();
    assert!(matches!(
        error,
        FormatError::LayerIndexOutOfRange { index: 2, count: 2 }
    ));
    record(error);
    let error = model.layer_bytes(u64::MAX).unwrap_err();
    assert!(matches!(error, FormatError::LayerIndexOutOfRange { .. }));
    let error = model.layer_tensors(7).map(|t| t.count()).unwrap_err();
    assert!(matches!(
        error,
        FormatError::LayerIndexOutOfRange { index: 7, .. }
    ));
    assert!(model.tensor(3).is_none());

    // Layer data is not covered by the table CRCs: corrupt it and verify.
    let mut corrupt = bytes.clone();
    let offset = model.layer(1).unwrap().offset as usize;
    corrupt[offset] ^= 0x55;
    let corrupt_model = Model::parse(&corrupt).unwrap();
    corrupt_model.verify_layer(0).unwrap();
    let error = corrupt_model.verify_layer(1).unwrap_err();
    assert!(matches!(
        error,
        FormatError::ChecksumMismatch { layer: 1, .. }
    ));
    record(error);
    assert!(matches!(
        corrupt_model.verify_all(),
        Err(FormatError::ChecksumMismatch { layer: 1, .. })
    ));
    assert!(matches!(
        model.verify_layer_bytes(0, &[]),
        Err(FormatError::ChecksumMismatch { layer: 0, .. })
    ));

    let location = tinyai_format::locate_tables(&bytes, bytes.len() as u64).unwrap();
    let tables = &bytes[location.tables.start as usize..location.tables.end as usize];
    let parts = Model::parse_parts(
        &bytes[..128],
        tables,
        location.tables.start,
        bytes.len() as u64,
    )
    .unwrap();
    let error = parts.layer_bytes(0).unwrap_err();
    assert!(matches!(error, FormatError::NoLayerData));
    record(error);
    assert!(matches!(
        parts.verify_layer(0),
        Err(FormatError::NoLayerData)
    ));
    parts
        .verify_layer_bytes(0, model.layer_bytes(0).unwrap())
        .unwrap();
    // Tables handed over at the wrong offset or too short.
    assert!(matches!(
        Model::parse_parts(
            &bytes[..128],
            &tables[1..],
            location.tables.start,
            bytes.len() as u64
        ),
        Err(FormatError::Truncated { .. })
    ));
    assert!(matches!(
        Model::parse_parts(
            &bytes[..128],
            tables,
            location.tables.start + 8,
            bytes.len() as u64
        ),
        Err(FormatError::Truncated { .. })
    ));

    let legacy = base_v1();
    let legacy_model = Model::parse(&legacy).unwrap();
    let error = legacy_model.verify_layer(0).unwrap_err();
    assert!(matches!(error, FormatError::NoChecksum { layer: 0 }));
    record(error);
    assert!(matches!(
        legacy_model.verify_all(),
        Err(FormatError::NoChecksum { layer: 0 })
    ));

    // Writer-side errors.
    let mut writer = Writer::new(Cursor::new(Vec::new()), WriterOptions { alignment: 64 }).unwrap();
    let mut layer = writer.begin_layer("l").unwrap();
    let error = layer
        .add_tensor(&TensorSpec::new("w", DType::F32, &[4]), &[0u8; 15])
        .unwrap_err();
    assert!(matches!(error, FormatError::InvalidTensorSpec { .. }));
    record(error);
    assert!(matches!(
        layer.add_tensor(&TensorSpec::new("w", DType::Mixed, &[4]), &[0u8; 4]),
        Err(FormatError::InvalidTensorSpec { .. })
    ));
    assert!(matches!(
        layer.add_tensor(&TensorSpec::new("w", DType::U8, &[1; 9]), &[0u8; 1]),
        Err(FormatError::InvalidTensorSpec { .. })
    ));
    assert!(matches!(
        layer.add_tensor(
            &TensorSpec {
                name: "q",
                dtype: DType::Ggml,
                shape: &[33],
                source_type: 2
            },
            &[0u8; 18]
        ),
        Err(FormatError::InvalidTensorSpec { .. })
    ));
    assert!(matches!(
        layer.add_tensor(
            &TensorSpec::new("huge", DType::F64, &[1 << 63, 1 << 63, 4]),
            &[]
        ),
        Err(FormatError::InvalidTensorSpec { .. })
    ));
    layer
        .add_tensor(&TensorSpec::new("w", DType::U8, &[1]), &[7])
        .unwrap();
    assert!(matches!(
        layer.add_tensor(&TensorSpec::new("w", DType::U8, &[1]), &[7]),
        Err(FormatError::InvalidTensorSpec { .. })
    ));
    assert!(matches!(
        layer.set_precision_bits(0),
        Err(FormatError::InvalidInput(_))
    ));
    layer.finish().unwrap();
    let error = writer.begin_layer("l").unwrap_err();
    assert!(matches!(error, FormatError::InvalidInput(_)));
    record(error);
    writer.add_metadata("k", "v").unwrap();
    assert!(matches!(
        writer.add_metadata("k", "w"),
        Err(FormatError::InvalidInput(_))
    ));
    let long = "x".repeat(70_000);
    assert!(matches!(
        writer.begin_layer(&long),
        Err(FormatError::InvalidInput(_))
    ));
    assert!(matches!(
        writer.add_metadata(&long, ""),
        Err(FormatError::InvalidInput(_))
    ));
    let written = writer.finish().unwrap().into_inner();
    let reparsed = Model::parse(&written).unwrap();
    reparsed.verify_all().unwrap();
    assert_eq!(reparsed.layer_count(), 1);
    assert_eq!(reparsed.tensor_count(), 1);

    let error = Writer::new(Cursor::new(Vec::new()), WriterOptions { alignment: 100 }).unwrap_err();
    assert!(matches!(
        error,
        FormatError::InvalidAlignment { alignment: 100 }
    ));

    // I/O errors surface as Io, from the first write or from a later one.
    for budget in [0, 200, 1500, 2300] {
        let result = (|| {
            let sink = FailingSink {
                inner: Cursor::new(Vec::new()),
                budget,
            };
            let mut writer = Writer::new(sink, WriterOptions { alignment: 64 })?;
            writer.add_layer(
                "l",
                &[(TensorSpec::new("w", DType::U8, &[1000]), &[1u8; 1000][..])],
            )?;
            writer.add_layer(
                "m",
                &[(TensorSpec::new("w", DType::U8, &[1000]), &[1u8; 1000][..])],
            )?;
            writer.finish().map(|_| ())
        })();
        let error = result.unwrap_err();
        assert!(
            matches!(error, FormatError::Io { .. }),
            "budget {budget}: {error:?}"
        );
        record(error);
    }
    // A tensor source that ends early, and one that fails.
    let mut writer = Writer::new(Cursor::new(Vec::new()), WriterOptions { alignment: 64 }).unwrap();
    let mut layer = writer.begin_layer("l").unwrap();
    let mut short: &[u8] = &[1, 2, 3];
    assert!(matches!(
        layer.add_tensor_from_reader(&TensorSpec::new("w", DType::U8, &[4]), &mut short, 4),
        Err(FormatError::InvalidTensorSpec { .. })
    ));
    struct Broken;
    impl std::io::Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("broken source"))
        }
    }
    assert!(matches!(
        layer.add_tensor_from_reader(&TensorSpec::new("x", DType::U8, &[4]), &mut Broken, 4),
        Err(FormatError::Io { .. })
    ));
}

#[test]
fn every_error_variant_has_a_case() {
    let mut seen = BTreeSet::new();
    run(parse_cases(), &mut seen);
    run(new_user_legacy_cases(), &mut seen);
    request_time_errors(&mut seen);
    let missing: Vec<_> = ALL_VARIANTS
        .iter()
        .filter(|name| !seen.contains(**name))
        .collect();
    assert!(missing.is_empty(), "variants without a case: {missing:?}");
    let unknown: Vec<_> = seen
        .iter()
        .filter(|name| !ALL_VARIANTS.contains(&name.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "variants missing from ALL_VARIANTS: {unknown:?}"
    );
}

#[test]
fn the_new_user_legacy_files_get_clear_errors() {
    for case in new_user_legacy_cases() {
        let error = Model::parse(&case.bytes).unwrap_err();
        assert!((case.check)(&error), "{}: {error:?}", case.name);
        let message = error.to_string();
        // Says what was wrong, with a number (where) or the magic found.
        assert!(
            message.chars().any(|c| c.is_ascii_digit()),
            "{}: {message}",
            case.name
        );
    }
}

#[test]
fn writer_stays_consistent_after_a_failed_tensor() {
    // After a source error mid-tensor the layer keeps the partial bytes as padding:
    // later tensors and the layer's checksum must still be right.
    let mut writer = Writer::new(Cursor::new(Vec::new()), WriterOptions { alignment: 64 }).unwrap();
    let mut layer = writer.begin_layer("l").unwrap();
    let mut short: &[u8] = &[9; 100];
    assert!(
        layer
            .add_tensor_from_reader(&TensorSpec::new("bad", DType::U8, &[200]), &mut short, 200)
            .is_err()
    );
    layer
        .add_tensor(&TensorSpec::new("good", DType::U8, &[3]), &[1, 2, 3])
        .unwrap();
    layer.finish().unwrap();
    let bytes = writer.finish().unwrap().into_inner();
    let model = Model::parse(&bytes).unwrap();
    model.verify_all().unwrap();
    let tensor = model.find_tensor(0, "good").unwrap().unwrap();
    let data = model.layer_bytes(0).unwrap();
    let range = tensor.range_in_layer();
    assert_eq!(&data[range.start as usize..range.end as usize], &[1, 2, 3]);
}

#[test]
fn an_abandoned_layer_writer_records_nothing() {
    let mut writer = Writer::new(Cursor::new(Vec::new()), WriterOptions { alignment: 64 }).unwrap();
    {
        let mut layer = writer.begin_layer("dropped").unwrap();
        layer
            .add_tensor(&TensorSpec::new("w", DType::U8, &[2]), &[1, 2])
            .unwrap();
        // dropped without finish
    }
    writer
        .add_layer(
            "kept",
            &[(TensorSpec::new("w", DType::U8, &[2]), &[3, 4][..])],
        )
        .unwrap();
    {
        let mut layer = writer.begin_layer("dropped too").unwrap();
        layer
            .add_tensor(&TensorSpec::new("v", DType::U8, &[1]), &[5])
            .unwrap();
    }
    let bytes = writer.finish().unwrap().into_inner();
    let model = Model::parse(&bytes).unwrap();
    model.verify_all().unwrap();
    assert_eq!(model.layer_count(), 1);
    assert_eq!(model.tensor_count(), 1);
    let tensor = model.find_tensor(0, "w").unwrap().unwrap();
    assert_eq!(tensor.length, 2);
}

/// A layer without a checksum does not hide corruption in the layers after it:
/// `verify_all` checks every layer that has a checksum, reports the first
/// mismatch, and only then says that some layer had none.
#[test]
fn verify_all_checks_the_layers_after_one_without_a_checksum() {
    // Layer 0 without a checksum (flag bit 0 clear, table re-sealed).
    let unchecked = v2(|bytes| {
        let flags = layer_field(bytes, 0, layer::FLAGS);
        let value = get_u16(bytes, flags) & !1;
        put_u16(bytes, flags, value);
    });
    let model = Model::parse(&unchecked).unwrap();
    assert!(matches!(
        model.verify_layer(0),
        Err(FormatError::NoChecksum { layer: 0 })
    ));
    model.verify_layer(1).unwrap();
    assert!(matches!(
        model.verify_all(),
        Err(FormatError::NoChecksum { layer: 0 })
    ));
    // Corrupt layer 1: the mismatch must be found.
    let mut corrupt = unchecked.clone();
    let offset = model.layer(1).unwrap().offset as usize;
    corrupt[offset] ^= 0x55;
    let corrupt_model = Model::parse(&corrupt).unwrap();
    assert!(matches!(
        corrupt_model.verify_all(),
        Err(FormatError::ChecksumMismatch { layer: 1, .. })
    ));
}
