//! `tmai inspect` and `tmai verify` on safetensors files, sharded sets (by their
//! index) and GGUF files opened as they are: the same layers, tensors, dtypes,
//! shapes and sizes as `tmai convert` makes of them, tensor offsets that point at
//! the tensors' bytes, a "no checksums" outcome from verify, and clean errors for
//! missing or truncated files.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::{Gguf, assert_clean_failure, convert_lib, pattern, safetensors_file, tmai, write};
use safetensors::tensor::Dtype;
use serde_json::Value;
use tinyai_cli::convert::Grouping;

const NO_CHECKSUMS: &str =
    "no checksums (safetensors/GGUF files carry none; `tmai convert` adds them)";

fn inspect_json(path: &Path) -> Value {
    let run = tmai(&[
        OsStr::new("inspect"),
        path.as_os_str(),
        OsStr::new("--json"),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    serde_json::from_str(&run.stdout).unwrap()
}

/// (layer name, [(tensor name, dtype, source_type, shape, size)]) per layer.
type Layout = Vec<(String, Vec<(String, String, u64, Vec<u64>, u64)>)>;

fn layout(json: &Value) -> Layout {
    json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            let tensors = layer["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["name"].as_str().unwrap().to_owned(),
                        t["dtype"].as_str().unwrap().to_owned(),
                        t["source_type"].as_u64().unwrap(),
                        t["shape"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|d| d.as_u64().unwrap())
                            .collect(),
                        t["size"].as_u64().unwrap(),
                    )
                })
                .collect();
            (layer["name"].as_str().unwrap().to_owned(), tensors)
        })
        .collect()
}

/// The bytes at `offset..offset + size` of the byte space described by `files`.
fn bytes_at(files: &[Value], offset: u64, size: u64) -> Vec<u8> {
    for file in files {
        let base = file["base"].as_u64().unwrap();
        let length = file["length"].as_u64().unwrap();
        if offset >= base && offset + size <= base + length {
            let data = std::fs::read(file["path"].as_str().unwrap()).unwrap();
            let start = (offset - base) as usize;
            return data[start..start + size as usize].to_vec();
        }
    }
    panic!("bytes {offset}..+{size} lie in no file of {files:?}");
}

/// Inspects `input` directly and its conversion, and checks that they agree;
/// returns the direct JSON.
fn agrees_with_conversion(input: &Path, source_format: &str) -> Value {
    let direct = inspect_json(input);
    let out = tempfile::tempdir().unwrap();
    let converted_path = out.path().join("converted.tmai");
    convert_lib(input, &converted_path, Grouping::Default).unwrap();
    let converted = inspect_json(&converted_path);
    assert_eq!(layout(&direct), layout(&converted));
    assert!(!layout(&direct).is_empty());
    assert_eq!(direct["source_format"], source_format);
    assert_eq!(converted["source_format"], "tmai");
    assert_eq!(direct["legacy"], false);
    assert_eq!(direct["alignment"], 1);
    let files = direct["files"].as_array().unwrap().clone();
    let converted_files = converted["files"].as_array().unwrap().clone();
    assert_eq!(converted_files.len(), 1);
    assert_eq!(converted_files[0]["base"], 0);
    let space = files.last().unwrap();
    assert_eq!(
        direct["file_length"].as_u64().unwrap(),
        space["base"].as_u64().unwrap() + space["length"].as_u64().unwrap()
    );
    // Every tensor's offset (absolute, in the byte space) points at its bytes.
    for (layer, converted_layer) in direct["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(converted["layers"].as_array().unwrap())
    {
        assert_eq!(layer["checksum"], Value::Null);
        assert!(converted_layer["checksum"].is_string());
        let layer_offset = layer["offset"].as_u64().unwrap();
        for (tensor, converted_tensor) in layer["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .zip(converted_layer["tensors"].as_array().unwrap())
        {
            let (offset, size) = (
                tensor["offset"].as_u64().unwrap(),
                tensor["size"].as_u64().unwrap(),
            );
            assert_eq!(
                offset,
                layer_offset + tensor["offset_in_layer"].as_u64().unwrap()
            );
            assert_eq!(
                bytes_at(&files, offset, size),
                bytes_at(
                    &converted_files,
                    converted_tensor["offset"].as_u64().unwrap(),
                    size
                ),
                "{}",
                tensor["name"]
            );
        }
    }
    // Text output: the format, every layer, and that there are no checksums.
    let run = tmai(&[OsStr::new("inspect"), input.as_os_str()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(NO_CHECKSUMS), "{}", run.stdout);
    for (name, _) in layout(&direct) {
        assert!(run.stdout.contains(&format!("] {name}  offset")), "{name}");
    }
    // Verify: succeeds, says there are no checksums.
    let run = tmai(&[OsStr::new("verify"), input.as_os_str()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("no checksums to verify"), "{run:?}");
    assert!(run.stdout.contains("structure valid"), "{run:?}");
    direct
}

#[test]
fn a_safetensors_file_is_inspected_and_verified_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let bytes = safetensors_file(
        &[
            (
                "embeddings.word.weight",
                Dtype::F16,
                vec![3, 2],
                pattern(12, 1),
            ),
            ("encoder.layer.0.w", Dtype::F32, vec![2, 2], pattern(16, 2)),
            ("encoder.layer.0.b", Dtype::BF16, vec![2], pattern(4, 3)),
            ("encoder.layer.1.w", Dtype::I8, vec![5], pattern(5, 4)),
        ],
        Some(meta),
    );
    // A name that does not say "safetensors": detection is by content.
    let input = write(dir.path(), "weights.bin", &bytes);
    let json = agrees_with_conversion(&input, "safetensors");
    assert_eq!(json["metadata"]["format"], "pt");
    assert_eq!(json["format_version"], "0.0");
    assert_eq!(json["file_length"], bytes.len() as u64);
    assert_eq!(json["files"].as_array().unwrap().len(), 1);
    assert_eq!(json["files"][0]["path"], input.display().to_string());
    let run = tmai(&[OsStr::new("inspect"), input.as_os_str()]);
    assert!(run.stdout.contains("format: safetensors"), "{}", run.stdout);
}

/// A 2-shard set whose layer "layer.0" has a tensor in each shard.
fn two_shards(dir: &Path) -> PathBuf {
    let first = vec![
        (
            "embeddings.word.weight",
            Dtype::F32,
            vec![4, 4],
            pattern(64, 1),
        ),
        ("encoder.layer.0.a", Dtype::F32, vec![2, 2], pattern(16, 2)),
    ];
    let second = vec![
        ("encoder.layer.0.b", Dtype::F16, vec![3], pattern(6, 3)),
        ("encoder.layer.1.a", Dtype::F32, vec![2], pattern(8, 4)),
    ];
    write(
        dir,
        "model-00001-of-00002.safetensors",
        &safetensors_file(&first, None),
    );
    write(
        dir,
        "model-00002-of-00002.safetensors",
        &safetensors_file(
            &second,
            Some(HashMap::from([("format".to_owned(), "pt".to_owned())])),
        ),
    );
    let index = serde_json::json!({
        "metadata": {"total_size": 94},
        "weight_map": {
            "embeddings.word.weight": "model-00001-of-00002.safetensors",
            "encoder.layer.0.a": "model-00001-of-00002.safetensors",
            "encoder.layer.0.b": "model-00002-of-00002.safetensors",
            "encoder.layer.1.a": "model-00002-of-00002.safetensors",
        }
    });
    write(
        dir,
        "model.safetensors.index.json",
        index.to_string().as_bytes(),
    )
}

#[test]
fn a_sharded_set_is_inspected_and_verified_by_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let index = two_shards(dir.path());
    let json = agrees_with_conversion(&index, "safetensors-index");
    let files = json["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    let first_length = std::fs::metadata(dir.path().join("model-00001-of-00002.safetensors"))
        .unwrap()
        .len();
    assert_eq!(files[0]["base"], 0);
    assert_eq!(files[0]["length"], first_length);
    assert_eq!(files[1]["base"], 1 << 16);
    assert!(
        files[1]["path"]
            .as_str()
            .unwrap()
            .ends_with("model-00002-of-00002.safetensors")
    );
    // The layer with a tensor in each shard covers the end of one and the start of the next.
    let layer = json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|layer| layer["name"] == "layer.0")
        .unwrap();
    let offsets: Vec<u64> = layer["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets.len(), 2);
    assert!(
        offsets[0] < first_length && offsets[1] > 1 << 16,
        "{offsets:?}"
    );
    assert!(layer["offset"].as_u64().unwrap() < first_length);
    assert!(layer["offset"].as_u64().unwrap() + layer["length"].as_u64().unwrap() > 1 << 16);
    assert_eq!(json["metadata"]["format"], "pt");
    let run = tmai(&[OsStr::new("inspect"), index.as_os_str()]);
    assert!(
        run.stdout
            .contains("format: sharded safetensors set of 2 files"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("model-00002-of-00002.safetensors  base 65536")
    );
    let run = tmai(&[OsStr::new("verify"), index.as_os_str()]);
    assert!(run.stdout.contains("set of 2 files"), "{run:?}");
}

fn gguf_model() -> Vec<u8> {
    let mut gguf = Gguf::new(3);
    gguf.kv_string("general.name", "tiny")
        .kv_u32("llama.block_count", 2);
    gguf.tensor("token_embd.weight", &[4, 2], 0, pattern(32, 1));
    // Q8_0: blocks of 32 elements in 34 bytes.
    gguf.tensor("blk.0.attn_q.weight", &[32, 2], 8, pattern(68, 2));
    gguf.tensor("blk.0.attn_norm.weight", &[4], 0, pattern(16, 3));
    gguf.tensor("blk.1.attn_q.weight", &[32, 2], 8, pattern(68, 4));
    gguf.tensor("output_norm.weight", &[4], 0, pattern(16, 5));
    gguf.build()
}

#[test]
fn a_gguf_file_is_inspected_and_verified_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "model.weights", &gguf_model());
    let json = agrees_with_conversion(&input, "gguf");
    assert_eq!(json["format_version"], "3.0");
    assert_eq!(json["metadata"]["general.name"], "tiny");
    assert_eq!(json["metadata"]["llama.block_count"], "2");
    let names: Vec<_> = layout(&json).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["token_embd", "layer.0", "layer.1", "output_norm"]);
    let run = tmai(&[OsStr::new("inspect"), input.as_os_str()]);
    assert!(run.stdout.contains("format: GGUF v3"), "{}", run.stdout);
    assert!(run.stdout.contains("ggml:Q8_0"), "{}", run.stdout);
    let run = tmai(&[OsStr::new("verify"), input.as_os_str()]);
    assert!(run.stdout.contains("GGUF v3 file"), "{run:?}");
}

/// `inspect`, `inspect --json` and `verify` all fail with exit code 1, one
/// error line containing every needle, and nothing on stdout.
fn fails_cleanly(path: &Path, needles: &[&str]) {
    for args in [
        vec![OsStr::new("inspect"), path.as_os_str()],
        vec![
            OsStr::new("inspect"),
            path.as_os_str(),
            OsStr::new("--json"),
        ],
        vec![OsStr::new("verify"), path.as_os_str()],
    ] {
        let run = tmai(&args);
        for needle in needles {
            assert_clean_failure(&run, 1, needle);
        }
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
    }
}

#[test]
fn a_missing_shard_is_a_clean_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let index = two_shards(dir.path());
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    fails_cleanly(&index, &["opening", "model-00002-of-00002.safetensors"]);
}

#[test]
fn a_truncated_shard_is_a_clean_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let index = two_shards(dir.path());
    let shard = dir.path().join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    // Cut into the data area: a tensor runs past the end.
    std::fs::write(&shard, &bytes[..bytes.len() - 3]).unwrap();
    fails_cleanly(
        &index,
        &["model-00002-of-00002.safetensors", "past the end"],
    );
    // Cut into the header.
    std::fs::write(&shard, &bytes[..20]).unwrap();
    fails_cleanly(
        &index,
        &["model-00002-of-00002.safetensors: safetensors header"],
    );
}

#[test]
fn a_truncated_gguf_file_is_a_clean_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = gguf_model();
    // Cut into the data area: the last tensor runs past the end.
    let path = write(dir.path(), "cut-data.gguf", &bytes[..bytes.len() - 20]);
    fails_cleanly(&path, &["cut-data.gguf: GGUF header", "output_norm.weight"]);
    // Cut inside the header (in the tensor infos).
    let path = write(dir.path(), "cut-header.gguf", &bytes[..200]);
    fails_cleanly(
        &path,
        &["cut-header.gguf: GGUF header: tensor info", "the file ends"],
    );
}

#[test]
fn a_truncated_safetensors_file_is_a_clean_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = safetensors_file(&[("layers.0.w", Dtype::F32, vec![4], pattern(16, 1))], None);
    let path = write(dir.path(), "cut.safetensors", &bytes[..bytes.len() - 1]);
    fails_cleanly(&path, &["cut.safetensors", "layers.0.w", "past the end"]);
}

#[test]
fn an_unknown_file_is_a_clean_error_listing_what_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "model.safetensors",
        b"\x00\x01 not a model at all",
    );
    fails_cleanly(
        &path,
        &[
            "model.safetensors: unrecognised file: bad magic bytes",
            "a safetensors file",
            "model.safetensors.index.json",
            "a GGUF file",
        ],
    );
}

#[test]
fn a_gguf_header_longer_than_the_first_read_is_read_in_full_or_reported_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut gguf = Gguf::new(3);
    // A header of more than 64 KiB: the first read does not hold it.
    gguf.kv_string("general.description", &"x".repeat(70_000));
    gguf.tensor("blk.0.w", &[4], 0, pattern(16, 1));
    let bytes = gguf.build();
    let path = write(dir.path(), "long.gguf", &bytes);
    let json = agrees_with_conversion(&path, "gguf");
    assert_eq!(
        json["metadata"]["general.description"],
        r#"{"omitted":"string","length":70000}"#
    );
    let path = write(dir.path(), "long-cut.gguf", &bytes[..66_000]);
    fails_cleanly(
        &path,
        &[
            "long-cut.gguf: GGUF header",
            "general.description",
            "the file ends",
        ],
    );
}

#[test]
fn verify_reads_every_layer_byte_and_fails_on_a_shard_cut_after_opening() {
    let dir = tempfile::tempdir().unwrap();
    let index = two_shards(dir.path());
    let opened = tinyai_cli::model_file::ModelFile::open(&index).unwrap();
    let mut out = Vec::new();
    tinyai_cli::verify::verify_file(&opened, true, &mut out).unwrap();
    let summary = String::from_utf8(out).unwrap();
    assert!(summary.contains("no checksums to verify"), "{summary}");
    // The shard shrinks after the headers were read: reading its layer bytes fails.
    let shard = dir.path().join("model-00002-of-00002.safetensors");
    let length = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(length - 4)
        .unwrap();
    let error = tinyai_cli::verify::verify_file(&opened, true, &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("model-00002-of-00002.safetensors") && error.contains("file ended"),
        "{error}"
    );
}

#[test]
fn tmai_files_say_their_source_format_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "legacy.tmai",
        &common::legacy_v1("m", 2, 100, 8),
    );
    let json = inspect_json(&path);
    assert_eq!(json["source_format"], "tmai-v1");
    assert_eq!(json["files"][0]["path"], path.display().to_string());
    assert_eq!(json["files"][0]["base"], 0);
    assert_eq!(json["files"][0]["length"], json["file_length"]);
}
