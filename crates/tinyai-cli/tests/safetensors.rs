//! safetensors → .tmai: every dtype, grouping, metadata, sharded sets, malformed headers.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{
    assert_clean_failure, convert_lib, pattern, raw_safetensors, safetensors_file, tmai, write,
};
use regex::Regex;
use safetensors::tensor::Dtype;
use tinyai_cli::convert::Grouping;
use tinyai_format::{DType, Model};

/// Every safetensors dtype the converter supports, with its `.tmai` dtype and element size.
const DTYPES: &[(Dtype, DType, usize)] = &[
    (Dtype::F64, DType::F64, 8),
    (Dtype::F32, DType::F32, 4),
    (Dtype::F16, DType::F16, 2),
    (Dtype::BF16, DType::BF16, 2),
    (Dtype::I64, DType::I64, 8),
    (Dtype::I32, DType::I32, 4),
    (Dtype::I16, DType::I16, 2),
    (Dtype::I8, DType::I8, 1),
    (Dtype::U64, DType::U64, 8),
    (Dtype::U32, DType::U32, 4),
    (Dtype::U16, DType::U16, 2),
    (Dtype::U8, DType::U8, 1),
    (Dtype::BOOL, DType::Bool, 1),
    (Dtype::F8_E4M3, DType::F8E4M3, 1),
    (Dtype::F8_E5M2, DType::F8E5M2, 1),
];

/// A converted tensor: (layer name, dtype, shape, bytes).
type Converted<'a> = (String, DType, Vec<u64>, &'a [u8]);

/// Every tensor of `model`, by name.
fn tensors_of<'a>(model: &Model<'a>) -> HashMap<String, Converted<'a>> {
    let mut all = HashMap::new();
    for layer in model.layers() {
        let bytes = model.layer_bytes(layer.index).unwrap();
        for tensor in model.layer_tensors(layer.index).unwrap() {
            let range = tensor.range_in_layer();
            all.insert(
                tensor.name.to_owned(),
                (
                    layer.name.unwrap().to_owned(),
                    tensor.dtype,
                    tensor.shape().to_vec(),
                    &bytes[range.start as usize..range.end as usize],
                ),
            );
        }
    }
    all
}

#[test]
fn every_dtype_is_carried_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut sources = Vec::new();
    for (index, (st, _, size)) in DTYPES.iter().enumerate() {
        let shape = vec![3, 5];
        let mut data = pattern(15 * size, index as u8);
        if *st == Dtype::BOOL {
            data.iter_mut().for_each(|b| *b &= 1);
        }
        sources.push((format!("layers.{index}.t_{st:?}"), *st, shape, data));
    }
    sources.push(("scalar".to_owned(), Dtype::F32, vec![], pattern(4, 9)));
    sources.push(("empty".to_owned(), Dtype::F16, vec![0, 7], Vec::new()));
    let borrowed: Vec<_> = sources
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    let input = write(dir.path(), "model.bin", &safetensors_file(&borrowed, None));
    let bytes = convert_lib(&input, &dir.path().join("out.tmai"), Grouping::Default).unwrap();
    let model = Model::parse(&bytes).unwrap();
    model.verify_all().unwrap();
    let converted = tensors_of(&model);
    assert_eq!(converted.len(), sources.len());
    for (index, (name, _, shape, data)) in sources.iter().enumerate() {
        let (layer, dtype, converted_shape, converted_bytes) = &converted[name];
        if let Some((_, expected, _)) = DTYPES.get(index) {
            assert_eq!(dtype, expected, "{name}");
            assert_eq!(layer, &format!("layer.{index}"));
        }
        let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        assert_eq!(converted_shape, &shape, "{name}");
        assert_eq!(converted_bytes, data, "{name}");
    }
    assert_eq!(model.metadata_value("source.format"), Some("safetensors"));
}

#[test]
fn grouping_order_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let f32s = |n: usize, seed| pattern(4 * n, seed);
    let tensors = vec![
        ("lm_head.weight", Dtype::F32, vec![4, 2], f32s(8, 1)),
        ("model.norm.weight", Dtype::F32, vec![2], f32s(2, 2)),
        (
            "model.layers.10.mlp.weight",
            Dtype::F32,
            vec![2, 2],
            f32s(4, 3),
        ),
        (
            "model.layers.2.mlp.weight",
            Dtype::F32,
            vec![2, 2],
            f32s(4, 4),
        ),
        (
            "model.layers.2.attn.weight",
            Dtype::BF16,
            vec![2, 2],
            pattern(8, 5),
        ),
        (
            "model.embed_tokens.weight",
            Dtype::F32,
            vec![4, 2],
            f32s(8, 6),
        ),
    ];
    let metadata = HashMap::from([
        ("format".to_owned(), "pt".to_owned()),
        (
            "source.format".to_owned(),
            "should be overridden".to_owned(),
        ),
    ]);
    let input = write(
        dir.path(),
        "m.safetensors",
        &safetensors_file(&tensors, Some(metadata)),
    );
    let bytes = convert_lib(&input, &dir.path().join("out.tmai"), Grouping::Default).unwrap();
    let model = Model::parse(&bytes).unwrap();
    let names: Vec<_> = model.layers().map(|l| l.name.unwrap().to_owned()).collect();
    assert_eq!(
        names,
        [
            "model.embed_tokens",
            "layer.2",
            "layer.10",
            "lm_head",
            "model.norm"
        ]
    );
    let layer2: Vec<_> = model.layer_tensors(1).unwrap().map(|t| t.name).collect();
    assert_eq!(layer2.len(), 2);
    assert!(layer2.contains(&"model.layers.2.attn.weight"));
    assert_eq!(model.layer(1).unwrap().dtype, DType::Mixed);
    assert_eq!(model.metadata_value("format"), Some("pt"));
    assert_eq!(model.metadata_value("source.format"), Some("safetensors"));

    // --group-by overrides the built-in rule.
    let grouping = Grouping::Regex(Regex::new(r"^model\.(\w+)\.").unwrap());
    let bytes = convert_lib(&input, &dir.path().join("out2.tmai"), grouping).unwrap();
    let model = Model::parse(&bytes).unwrap();
    let names: Vec<_> = model.layers().map(|l| l.name.unwrap().to_owned()).collect();
    assert_eq!(names, ["embed_tokens", "layers", "norm", "lm_head"]);
    assert_eq!(
        model.layer(1).unwrap().tensors.end - model.layer(1).unwrap().tensors.start,
        3
    );
}

#[test]
fn group_by_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = vec![
        ("enc.0.w", Dtype::F32, vec![1], pattern(4, 1)),
        ("enc.1.w", Dtype::F32, vec![1], pattern(4, 2)),
        ("enc.1.b", Dtype::F32, vec![1], pattern(4, 3)),
    ];
    let input = write(
        dir.path(),
        "m.safetensors",
        &safetensors_file(&tensors, None),
    );
    let output = dir.path().join("out.tmai");
    let run = tmai(&[
        std::ffi::OsStr::new("convert"),
        input.as_os_str(),
        output.as_os_str(),
        std::ffi::OsStr::new("--group-by"),
        std::ffi::OsStr::new(r"^enc\.(\d+)\."),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = tmai(&[
        std::ffi::OsStr::new("inspect"),
        output.as_os_str(),
        std::ffi::OsStr::new("--json"),
    ]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["name"], "layer.0");
    assert_eq!(layers[1]["name"], "layer.1");
    let tensor = &layers[1]["tensors"][1];
    assert_eq!(tensor["layer"], 1);
    assert_eq!(tensor["dtype"], "f32");
    assert_eq!(tensor["shape"], serde_json::json!([1]));
    assert_eq!(tensor["size"], 4);
    assert_eq!(
        tensor["offset"].as_u64().unwrap(),
        layers[1]["offset"].as_u64().unwrap() + tensor["offset_in_layer"].as_u64().unwrap()
    );
}

fn sharded_fixture(dir: &std::path::Path) -> Vec<(&'static str, Vec<u8>)> {
    let a = vec![
        ("encoder.layer.0.w", Dtype::F32, vec![2, 2], pattern(16, 1)),
        (
            "embeddings.word.weight",
            Dtype::F16,
            vec![3, 2],
            pattern(12, 2),
        ),
    ];
    let b = vec![
        ("encoder.layer.1.w", Dtype::F32, vec![2, 2], pattern(16, 3)),
        ("pooler.dense.weight", Dtype::I8, vec![4], pattern(4, 4)),
    ];
    let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    write(
        dir,
        "model-00001-of-00002.safetensors",
        &safetensors_file(&a, Some(meta)),
    );
    write(
        dir,
        "model-00002-of-00002.safetensors",
        &safetensors_file(&b, None),
    );
    let index = serde_json::json!({
        "metadata": {"total_size": 48},
        "weight_map": {
            "encoder.layer.0.w": "model-00001-of-00002.safetensors",
            "embeddings.word.weight": "model-00001-of-00002.safetensors",
            "encoder.layer.1.w": "model-00002-of-00002.safetensors",
            "pooler.dense.weight": "model-00002-of-00002.safetensors",
        }
    });
    write(
        dir,
        "model.safetensors.index.json",
        index.to_string().as_bytes(),
    );
    a.into_iter()
        .chain(b)
        .map(|(name, _, _, data)| (name, data))
        .collect()
}

#[test]
fn sharded_set_by_index_path_and_by_directory() {
    let dir = tempfile::tempdir().unwrap();
    let expected = sharded_fixture(dir.path());
    let out = tempfile::tempdir().unwrap();
    for input in [
        dir.path().join("model.safetensors.index.json"),
        dir.path().to_path_buf(),
    ] {
        let bytes = convert_lib(&input, &out.path().join("out.tmai"), Grouping::Default).unwrap();
        let model = Model::parse(&bytes).unwrap();
        let names: Vec<_> = model.layers().map(|l| l.name.unwrap().to_owned()).collect();
        assert_eq!(names, ["embeddings", "layer.0", "layer.1", "pooler"]);
        let converted = tensors_of(&model);
        for (name, data) in &expected {
            assert_eq!(converted[*name].3, &data[..], "{name}");
        }
        assert_eq!(
            model.metadata_value("safetensors.index.total_size"),
            Some("48")
        );
        assert_eq!(model.metadata_value("format"), Some("pt"));
        model.verify_all().unwrap();
    }
}

#[test]
fn malformed_sharded_sets() {
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "no weight_map",
            serde_json::json!({"metadata": {}}),
            "no \"weight_map\"",
        ),
        (
            "weight_map not an object",
            serde_json::json!({"weight_map": []}),
            "\"weight_map\" is not a JSON object",
        ),
        (
            "shard value not a string",
            serde_json::json!({"weight_map": {"a": 1}}),
            "is not a file name",
        ),
        (
            "tensor missing from shard",
            serde_json::json!({"weight_map": {"nope": "model-00001-of-00002.safetensors"}}),
            "which does not contain it",
        ),
        (
            "tensor in the other shard",
            serde_json::json!({"weight_map": {
                "pooler.dense.weight": "model-00001-of-00002.safetensors",
                "encoder.layer.1.w": "model-00002-of-00002.safetensors",
            }}),
            "but it is in",
        ),
        (
            "escaping path",
            serde_json::json!({"weight_map": {"a": "../x.safetensors"}}),
            "not a plain relative path",
        ),
        (
            "missing shard",
            serde_json::json!({"weight_map": {"a": "gone.safetensors"}}),
            "gone.safetensors",
        ),
    ];
    for (label, index, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        sharded_fixture(dir.path());
        let path = write(
            dir.path(),
            "model.safetensors.index.json",
            index.to_string().as_bytes(),
        );
        let error = convert_lib(&path, &dir.path().join("out.tmai"), Grouping::Default)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(error.contains(needle), "{label}: {error}");
        assert!(!error.contains('\n'), "{label}: {error}");
        common::refused_when_opened_directly(&path, label);
    }
    // Same tensor in both shards.
    let dir = tempfile::tempdir().unwrap();
    sharded_fixture(dir.path());
    let a = vec![("pooler.dense.weight", Dtype::I8, vec![4], pattern(4, 4))];
    write(
        dir.path(),
        "model-00001-of-00002.safetensors",
        &safetensors_file(&a, None),
    );
    let error = convert_lib(dir.path(), &dir.path().join("out.tmai"), Grouping::Default)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(error.contains("appears in two shards"), "{error}");
    common::refused_when_opened_directly(
        &dir.path().join("model.safetensors.index.json"),
        "same tensor in two shards",
    );
}

#[test]
fn malformed_headers_fail_with_a_message() {
    let mut past_eof = raw_safetensors("{}", &[]);
    past_eof[0..8].copy_from_slice(&1000u64.to_le_bytes());
    past_eof.push(b'{');
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "header length past EOF",
            past_eof,
            "runs past the end of the file",
        ),
        (
            "invalid JSON",
            raw_safetensors("{\"a\": ", &[]),
            "JSON header",
        ),
        (
            "not an object",
            raw_safetensors("{\"a\": 3}", &[]),
            "tensor \"a\"",
        ),
        (
            "missing dtype",
            raw_safetensors(r#"{"a":{"shape":[1],"data_offsets":[0,4]}}"#, &[0; 4]),
            "missing field `dtype`",
        ),
        (
            "unknown dtype",
            raw_safetensors(
                r#"{"a":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}"#,
                &[0; 1],
            ),
            "unsupported dtype \"F4\"",
        ),
        (
            "reversed offsets",
            raw_safetensors(
                r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}"#,
                &[0; 4],
            ),
            "reversed",
        ),
        (
            "offsets past the data",
            raw_safetensors(
                r#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}"#,
                &[0; 4],
            ),
            "run past the end of the data area",
        ),
        (
            "size mismatch",
            raw_safetensors(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
                &[0; 4],
            ),
            "needs 8 bytes",
        ),
        (
            "element count overflow",
            raw_safetensors(
                r#"{"a":{"dtype":"F32","shape":[18446744073709551615,18446744073709551615,1000],"data_offsets":[0,4]}}"#,
                &[0; 4],
            ),
            "needs too many bytes",
        ),
        (
            "overlap",
            raw_safetensors(
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#,
                &[0; 6],
            ),
            "overlap",
        ),
        (
            "duplicate key",
            raw_safetensors(
                r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
                &[0; 2],
            ),
            "duplicate key \"a\"",
        ),
        (
            "metadata not an object",
            raw_safetensors(r#"{"__metadata__":"x"}"#, &[]),
            "__metadata__ is not a JSON object",
        ),
        (
            "rank 9",
            raw_safetensors(
                r#"{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}"#,
                &[0; 1],
            ),
            "rank 9 exceeds 8",
        ),
        (
            "negative offset",
            raw_safetensors(
                r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}"#,
                &[0; 1],
            ),
            "tensor \"a\"",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.tmai");
    for (label, bytes, needle) in cases {
        let input = write(dir.path(), "bad.safetensors", &bytes);
        let run = tmai(&[
            std::ffi::OsStr::new("convert"),
            input.as_os_str(),
            output.as_os_str(),
        ]);
        assert_clean_failure(&run, 1, needle);
        assert!(run.stderr.contains("bad.safetensors"), "{label}: {run:?}");
        assert!(!output.exists(), "{label}");
        common::refused_when_opened_directly(&input, label);
    }
}

#[test]
fn metadata_values_that_are_not_strings_are_json_encoded() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"__metadata__":{"n":3,"s":"x","o":{"k":[1]}},"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
    let input = write(
        dir.path(),
        "m.safetensors",
        &raw_safetensors(header, &[7, 8]),
    );
    let bytes = convert_lib(&input, &dir.path().join("o.tmai"), Grouping::Default).unwrap();
    let model = Model::parse(&bytes).unwrap();
    assert_eq!(model.metadata_value("n"), Some("3"));
    assert_eq!(model.metadata_value("s"), Some("x"));
    assert_eq!(model.metadata_value("o"), Some(r#"{"k":[1]}"#));
    assert_eq!(model.layer(0).unwrap().name, Some("t"));
}
