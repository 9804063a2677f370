//! GGUF v2/v3 → .tmai: every tensor type byte-exact, shapes reversed, every
//! metadata value type, grouping, and a table of malformed files.
#![allow(clippy::unwrap_used)]

mod common;

use common::{
    Gguf, assert_clean_failure, convert_lib, gguf_string, gguf_type, pattern, tmai, write,
};
use tinyai_cli::convert::Grouping;
use tinyai_format::dtype::GGML_TYPES;
use tinyai_format::{DType, Model};

/// Plain GGML types and their `.tmai` dtype.
const PLAIN: &[(u32, DType)] = &[
    (0, DType::F32),
    (1, DType::F16),
    (24, DType::I8),
    (25, DType::I16),
    (26, DType::I32),
    (27, DType::I64),
    (28, DType::F64),
    (30, DType::BF16),
];

#[test]
fn every_tensor_type_is_kept_byte_exact() {
    for version in [2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let mut gguf = Gguf::new(version);
        gguf.kv_string("general.name", "tiny");
        let mut expected = Vec::new();
        for (index, &(type_id, name, block_elements, block_bytes)) in GGML_TYPES.iter().enumerate()
        {
            // Two blocks per row, three rows: GGUF dims [row, rows].
            let dims = [block_elements * 2, 3];
            let data = pattern((6 * block_bytes) as usize, index as u8);
            let tensor_name = format!("blk.{index}.{name}");
            gguf.tensor(&tensor_name, &dims, type_id, data.clone());
            expected.push((tensor_name, type_id, vec![3, block_elements * 2], data));
        }
        // Types this tool does not know: sized by the distance to the next offset.
        for (index, type_id) in [(90, 36u32), (91, 99)] {
            let data = pattern(64, index as u8);
            let tensor_name = format!("blk.{index}.unknown_{type_id}");
            gguf.tensor(&tensor_name, &[256], type_id, data.clone());
            expected.push((tensor_name, type_id, vec![256], data));
        }
        gguf.tensor("token_embd.weight", &[4, 2], 0, pattern(32, 7));
        gguf.tensor("output_norm.weight", &[4], 0, pattern(16, 8));
        let input = write(dir.path(), "model.gguf", &gguf.build());
        let bytes = convert_lib(&input, &dir.path().join("out.tmai"), Grouping::Default).unwrap();
        let model = Model::parse(&bytes).unwrap();
        model.verify_all().unwrap();
        assert_eq!(model.metadata_value("source.format"), Some("gguf"));
        assert_eq!(
            model.metadata_value("source.gguf_version"),
            Some(version.to_string().as_str())
        );
        assert_eq!(model.metadata_value("general.name"), Some("tiny"));
        let names: Vec<_> = model.layers().map(|l| l.name.unwrap().to_owned()).collect();
        assert_eq!(names.first().map(String::as_str), Some("token_embd"));
        assert_eq!(names.last().map(String::as_str), Some("output_norm"));
        assert_eq!(names[1], "layer.0");
        for (name, type_id, shape, data) in &expected {
            let layer_name = format!("layer.{}", name.split('.').nth(1).unwrap());
            let layer = model.layer_by_name(&layer_name).unwrap();
            let tensor = model.find_tensor(layer.index, name).unwrap().unwrap();
            match PLAIN.iter().find(|(id, _)| id == type_id) {
                Some((_, dtype)) => {
                    assert_eq!(tensor.dtype, *dtype, "{name}");
                    assert_eq!(tensor.source_type, 0, "{name}");
                }
                None => {
                    assert_eq!(tensor.dtype, DType::Ggml, "{name}");
                    assert_eq!(tensor.source_type, *type_id, "{name}");
                }
            }
            assert_eq!(tensor.shape(), &shape[..], "{name}");
            let layer_bytes = model.layer_bytes(layer.index).unwrap();
            let range = tensor.range_in_layer();
            assert_eq!(
                &layer_bytes[range.start as usize..range.end as usize],
                &data[..],
                "{name}"
            );
        }
    }
}

#[test]
fn every_metadata_value_type_is_carried() {
    use gguf_type::*;
    let dir = tempfile::tempdir().unwrap();
    let mut gguf = Gguf::new(3);
    let array = |element_type: u32, count: u64, payload: &[u8]| {
        let mut bytes = element_type.to_le_bytes().to_vec();
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes
    };
    let mut strings = Vec::new();
    gguf_string(&mut strings, "a");
    gguf_string(&mut strings, "b\"c");
    let mut nested = Vec::new();
    nested.extend(array(U8, 2, &[1, 2]));
    nested.extend(array(U8, 1, &[3]));
    let floats: Vec<u8> = [1.5f32, f32::NAN]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    gguf.kv_raw("u8", U8, &[200])
        .kv_raw("i8", I8, &(-5i8).to_le_bytes())
        .kv_raw("u16", U16, &60000u16.to_le_bytes())
        .kv_raw("i16", I16, &(-300i16).to_le_bytes())
        .kv_u32("u32", 4_000_000_000)
        .kv_raw("i32", I32, &(-7i32).to_le_bytes())
        .kv_raw("f32", F32, &0.25f32.to_le_bytes())
        .kv_raw("bool", BOOL, &[1])
        .kv_string("string", "héllo\nworld")
        .kv_raw("u64", U64, &u64::MAX.to_le_bytes())
        .kv_raw("i64", I64, &i64::MIN.to_le_bytes())
        .kv_raw("f64", F64, &(-2.5f64).to_le_bytes())
        .kv_raw(
            "array.u32",
            ARRAY,
            &array(U32, 3, &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]),
        )
        .kv_raw("array.string", ARRAY, &array(STRING, 2, &strings))
        .kv_raw("array.nested", ARRAY, &array(ARRAY, 2, &nested))
        .kv_raw("array.f32", ARRAY, &array(F32, 2, &floats))
        .kv_raw("array.bool", ARRAY, &array(BOOL, 2, &[0, 1]))
        .kv_raw("array.empty", ARRAY, &array(I64, 0, &[]))
        .kv_u32("general.alignment", 64);
    gguf.alignment = 64;
    gguf.tensor("w", &[2], 0, pattern(8, 1));
    let input = write(dir.path(), "m.gguf", &gguf.build());
    let bytes = convert_lib(&input, &dir.path().join("o.tmai"), Grouping::Default).unwrap();
    let model = Model::parse(&bytes).unwrap();
    let expected = [
        ("u8", "200"),
        ("i8", "-5"),
        ("u16", "60000"),
        ("i16", "-300"),
        ("u32", "4000000000"),
        ("i32", "-7"),
        ("f32", "0.25"),
        ("bool", "true"),
        ("string", "héllo\nworld"),
        ("u64", "18446744073709551615"),
        ("i64", "-9223372036854775808"),
        ("f64", "-2.5"),
        ("array.u32", "[1,2,3]"),
        ("array.string", r#"["a","b\"c"]"#),
        ("array.nested", "[[1,2],[3]]"),
        ("array.f32", "[1.5,null]"),
        ("array.bool", "[false,true]"),
        ("array.empty", "[]"),
        ("general.alignment", "64"),
    ];
    for (key, value) in expected {
        assert_eq!(model.metadata_value(key), Some(value), "{key}");
    }
    for (key, _) in expected {
        let parsed: Result<serde_json::Value, _> =
            serde_json::from_str(model.metadata_value(key).unwrap());
        if key.starts_with("array.") {
            assert!(parsed.is_ok(), "{key} is JSON");
        }
    }
    let tensor = model.find_tensor(0, "w").unwrap().unwrap();
    assert_eq!(model.layer_bytes(0).unwrap()[..8], pattern(8, 1)[..]);
    assert_eq!(tensor.shape(), &[2]);
}

fn header(version: u32, tensors: u64, kvs: u64) -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&tensors.to_le_bytes());
    bytes.extend_from_slice(&kvs.to_le_bytes());
    bytes
}

/// A file with the given raw tensor infos `(name, dims, type, offset)` and data.
fn with_infos(infos: &[(&[u8], &[u64], u32, u64)], data: &[u8]) -> Vec<u8> {
    let mut bytes = header(3, infos.len() as u64, 0);
    for (name, dims, ggml_type, offset) in infos {
        bytes.extend_from_slice(&(name.len() as u64).to_le_bytes());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for dim in *dims {
            bytes.extend_from_slice(&dim.to_le_bytes());
        }
        bytes.extend_from_slice(&ggml_type.to_le_bytes());
        bytes.extend_from_slice(&offset.to_le_bytes());
    }
    bytes.resize(bytes.len().next_multiple_of(32), 0);
    bytes.extend_from_slice(data);
    bytes
}

fn kv_file(build: impl FnOnce(&mut Gguf)) -> Vec<u8> {
    let mut gguf = Gguf::new(3);
    build(&mut gguf);
    gguf.build()
}

#[test]
fn malformed_files_fail_with_a_message() {
    use gguf_type::*;
    let nested_too_deep = {
        let mut value = U8.to_le_bytes().to_vec();
        value.extend_from_slice(&0u64.to_le_bytes());
        for _ in 0..5 {
            let mut outer = ARRAY.to_le_bytes().to_vec();
            outer.extend_from_slice(&1u64.to_le_bytes());
            outer.extend_from_slice(&value);
            value = outer;
        }
        value
    };
    let mut big_endian = header(3, 0, 0);
    big_endian[4..8].copy_from_slice(&3u32.to_be_bytes());
    let mut no_padding = header(3, 1, 0);
    gguf_string(&mut no_padding, "a");
    no_padding.extend_from_slice(&1u32.to_le_bytes());
    no_padding.extend_from_slice(&4u64.to_le_bytes());
    no_padding.extend_from_slice(&0u32.to_le_bytes());
    no_padding.extend_from_slice(&0u64.to_le_bytes());
    let valid = kv_file(|g| {
        g.tensor("w", &[8], 0, pattern(32, 1));
    });
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("version 1", header(1, 0, 0), "unsupported version 1"),
        ("version 4", header(4, 0, 0), "unsupported version 4"),
        ("big endian", big_endian, "big-endian"),
        (
            "truncated header",
            b"GGUF\x03\x00\x00\x00\x01\x00".to_vec(),
            "tensor count at offset 8 needs 8 bytes",
        ),
        (
            "absurd tensor count",
            header(3, u64::MAX, 0),
            "tensor count 18446744073709551615 (offset 8) is absurd",
        ),
        (
            "absurd kv count",
            header(3, 0, 1 << 40),
            "key/value count 1099511627776 (offset 16) is absurd",
        ),
        (
            "key length past EOF",
            [
                header(3, 0, 1),
                (1u64 << 60).to_le_bytes().to_vec(),
                vec![0; 8],
            ]
            .concat(),
            "metadata key 0 (string of 1152921504606846976 bytes) at offset 32",
        ),
        (
            "string value past EOF",
            kv_file(|g| {
                g.kv_raw("k", STRING, &(u64::MAX / 2).to_le_bytes());
            }),
            "value of metadata key \"k\" (string of 9223372036854775807 bytes)",
        ),
        (
            "unknown value type",
            kv_file(|g| {
                g.kv_raw("k", 13, &[0; 8]);
            }),
            "unknown value type 13",
        ),
        (
            "absurd array count",
            kv_file(|g| {
                g.kv_raw(
                    "k",
                    ARRAY,
                    &[U32.to_le_bytes().as_slice(), &u64::MAX.to_le_bytes()].concat(),
                );
            }),
            "cannot fit",
        ),
        (
            "unknown array element type",
            kv_file(|g| {
                g.kv_raw(
                    "k",
                    ARRAY,
                    &[42u32.to_le_bytes().as_slice(), &0u64.to_le_bytes()].concat(),
                );
            }),
            "unknown array element type 42",
        ),
        (
            "arrays nested too deep",
            kv_file(|g| {
                g.kv_raw("k", ARRAY, &nested_too_deep);
            }),
            "nested deeper than 4",
        ),
        (
            "truncated value",
            [
                header(3, 0, 1),
                {
                    let mut k = Vec::new();
                    gguf_string(&mut k, "k");
                    k
                },
                U32.to_le_bytes().to_vec(),
                vec![1, 2],
            ]
            .concat(),
            "needs 4 bytes",
        ),
        (
            "duplicate key",
            kv_file(|g| {
                g.kv_u32("k", 1).kv_u32("k", 2);
            }),
            "duplicate metadata key \"k\"",
        ),
        (
            "alignment not a power of two",
            kv_file(|g| {
                g.kv_u32("general.alignment", 3);
            }),
            "general.alignment",
        ),
        (
            "alignment of the wrong type",
            kv_file(|g| {
                g.kv_string("general.alignment", "32");
            }),
            "general.alignment",
        ),
        (
            "nine dimensions",
            with_infos(&[(b"t", &[1; 9], 0, 0)], &[0; 32]),
            "9 dimensions",
        ),
        (
            "offset past the data",
            with_infos(&[(b"t", &[1], 0, 64)], &[0; 32]),
            "past the end of the data area",
        ),
        (
            "size past the data",
            with_infos(&[(b"t", &[16], 0, 0)], &[0; 32]),
            "runs past the end of the data area",
        ),
        (
            "overlap",
            with_infos(&[(b"a", &[4], 0, 0), (b"b", &[4], 0, 8)], &[0; 32]),
            "overlap",
        ),
        (
            "duplicate tensor",
            with_infos(&[(b"a", &[1], 0, 0), (b"a", &[1], 0, 32)], &[0; 64]),
            "duplicate tensor name",
        ),
        (
            "partial block row",
            with_infos(&[(b"q", &[16], 2, 0)], &[0; 32]),
            "not a multiple of the 32-element block",
        ),
        (
            "element count overflow",
            with_infos(&[(b"t", &[u64::MAX, u64::MAX, u64::MAX], 0, 0)], &[0; 32]),
            "element count overflows",
        ),
        (
            "name not UTF-8",
            with_infos(&[(b"\xff\xfe", &[1], 0, 0)], &[0; 32]),
            "not valid UTF-8",
        ),
        (
            "data start past EOF",
            no_padding,
            "tensor data would start at offset 64",
        ),
        (
            "truncated data",
            valid[..valid.len() - 8].to_vec(),
            "runs past the end of the data area",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.tmai");
    for (label, bytes, needle) in cases {
        let input = write(dir.path(), "bad.gguf", &bytes);
        let run = tmai(&[
            std::ffi::OsStr::new("convert"),
            input.as_os_str(),
            output.as_os_str(),
        ]);
        assert!(run.code == 1, "{label}: {run:?}");
        assert_clean_failure(&run, 1, needle);
        assert!(run.stderr.contains("bad.gguf: GGUF: "), "{label}: {run:?}");
        assert!(!output.exists(), "{label}");
        common::refused_when_opened_directly(&input, label);
    }
}

#[test]
fn a_file_with_no_tensors_converts_to_an_empty_model() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "m.gguf",
        &kv_file(|g| {
            g.kv_string("general.architecture", "none");
        }),
    );
    let bytes = convert_lib(&input, &dir.path().join("o.tmai"), Grouping::Default).unwrap();
    let model = Model::parse(&bytes).unwrap();
    assert_eq!(model.layer_count(), 0);
    assert_eq!(model.metadata_value("general.architecture"), Some("none"));
}

#[test]
fn values_over_the_format_limit_are_summarised() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "x".repeat((16 << 20) + 1);
    let input = write(
        dir.path(),
        "m.gguf",
        &kv_file(|g| {
            g.kv_string("huge", &huge).kv_string("after", "still read");
            g.tensor("w", &[1], 0, pattern(4, 1));
        }),
    );
    let bytes = convert_lib(&input, &dir.path().join("o.tmai"), Grouping::Default).unwrap();
    let model = Model::parse(&bytes).unwrap();
    assert_eq!(
        model.metadata_value("huge"),
        Some(r#"{"omitted":"string","length":16777217}"#)
    );
    assert_eq!(model.metadata_value("after"), Some("still read"));
    assert_eq!(model.layer_count(), 1);
}

/// The inputs the `gguf` fuzz target found panicking the format crate's
/// reader (a quantised tensor whose byte size overflowed `u128`) also reach
/// this crate's own GGUF reader through `tmai convert`: a one-line error,
/// never a panic.
#[test]
fn fuzz_found_gguf_inputs_fail_conversion_cleanly() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tinyai-format/tests/regressions");
    let out = tempfile::tempdir().unwrap();
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
        let result = tinyai_cli::convert::convert(
            &path,
            &out.path().join("out.tmai"),
            &tinyai_cli::convert::ConvertOptions::default(),
        );
        assert!(result.is_err(), "{} converted", path.display());
        seen += 1;
    }
    assert!(seen >= 1);
}
