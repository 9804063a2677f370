//! Format stability: the writer's output for the committed golden files in
//! `fixtures/` must not change, and those files must keep parsing.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use tinyai_format::Model;
use tinyai_format::fixtures::{self, check_layer_bytes};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

#[test]
#[cfg_attr(
    miri,
    ignore = "reads the committed files in fixtures/ (Miri runs with isolation)"
)]
fn writer_output_matches_the_golden_files() {
    let mut failures = Vec::new();
    for (name, bytes) in fixtures::golden_files().unwrap() {
        let path = golden_dir().join(name);
        match std::fs::read(&path) {
            Err(error) => failures.push(format!("{}: cannot read ({error})", path.display())),
            Ok(golden) if golden != bytes => {
                let first_difference = golden
                    .iter()
                    .zip(&bytes)
                    .position(|(a, b)| a != b)
                    .unwrap_or(golden.len().min(bytes.len()));
                failures.push(format!(
                    "{}: the writer now produces different bytes ({} bytes vs {} committed, first difference at byte {first_difference})",
                    path.display(),
                    bytes.len(),
                    golden.len()
                ));
            }
            Ok(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "format stability check failed:\n  {}\n\n\
         The bytes the writer produces for the golden fixtures changed. If this is an\n\
         unintended change, fix the writer. If the format changed on purpose (and\n\
         docs/format.md and the version were updated to match), regenerate with\n\
         \n    cargo xtask fixtures --update-golden\n\n\
         and commit the files in fixtures/.",
        failures.join("\n  ")
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "reads the committed files in fixtures/ (Miri runs with isolation)"
)]
fn golden_files_parse_and_hold_the_fixture_content() {
    let tiny = std::fs::read(golden_dir().join("tiny.tmai")).unwrap();
    let model = Model::parse(&tiny).unwrap();
    model.verify_all().unwrap();
    assert_eq!(model.metadata_value("general.name"), Some("tiny"));
    assert_eq!(model.layer_count(), 3);
    for layer in 0..3 {
        let data = model.layer_bytes(layer).unwrap();
        assert_eq!(
            check_layer_bytes(fixtures::tiny().seed, &model, layer, data).unwrap(),
            None
        );
    }

    let multi = std::fs::read(golden_dir().join("multi_tensor.tmai")).unwrap();
    let model = Model::parse(&multi).unwrap();
    model.verify_all().unwrap();
    assert_eq!(
        model.metadata_value("general.architecture"),
        Some("tinyai-test")
    );
    assert_eq!(model.layer_count(), 4);
    assert_eq!(model.tensor_count(), 11);
    let q4 = model.find_tensor(1, "ffn_up.weight").unwrap().unwrap();
    assert_eq!(q4.dtype, tinyai_format::DType::Ggml);
    assert_eq!(q4.source_type, fixtures::GGML_Q4_0);
    assert_eq!(q4.length, 36);
    assert_eq!(model.layer(2).unwrap().length, 0);
    for layer in 0..4 {
        let data = model.layer_bytes(layer).unwrap();
        assert_eq!(
            check_layer_bytes(fixtures::multi_tensor().seed, &model, layer, data).unwrap(),
            None
        );
    }

    let legacy = std::fs::read(golden_dir().join("legacy_v1_small.tmai")).unwrap();
    let model = Model::parse(&legacy).unwrap();
    assert!(model.is_legacy());
    assert_eq!(model.metadata_value("general.name"), Some("Test Model"));
    for layer in 0..10u64 {
        assert!(
            model
                .layer_bytes(layer)
                .unwrap()
                .iter()
                .all(|&b| b == layer as u8)
        );
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "reads the committed files in fixtures/ (Miri runs with isolation)"
)]
fn golden_files_stay_small() {
    let total: u64 = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        total < 200 * 1024,
        "fixtures/ holds {total} bytes; keep it under 200 KB"
    );
}
