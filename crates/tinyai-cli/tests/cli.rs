//! The `tmai` binary itself: inspect, inspect --json, verify and convert on a
//! legacy v1 file and on converted files; clean failures on malformed input.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_clean_failure, legacy_v1, tmai, write};
use tinyai_format::{DType, Model};

const MIB: u32 = 1 << 20;

fn legacy_fixture(dir: &std::path::Path) -> std::path::PathBuf {
    write(dir, "legacy.tmai", &legacy_v1("Test Model", 10, MIB, 4))
}

#[test]
fn inspect_legacy_v1_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = legacy_fixture(dir.path());
    let run = tmai(&[std::ffi::OsStr::new("inspect"), path.as_os_str()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("legacy TinyAI v1"), "{}", run.stdout);
    assert!(run.stdout.contains("general.name = Test Model"));
    assert!(run.stdout.contains("layers (10)"));
    assert!(
        run.stdout
            .contains("[9] (unnamed)  offset 9437760  length 1048576")
    );
    assert!(run.stdout.contains("precision 4 bits  crc32c none"));
}

#[test]
fn inspect_legacy_v1_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = legacy_fixture(dir.path());
    let run = tmai(&[
        std::ffi::OsStr::new("inspect"),
        path.as_os_str(),
        std::ffi::OsStr::new("--json"),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["format_version"], "1.0");
    assert_eq!(json["legacy"], true);
    assert_eq!(json["alignment"], 1);
    assert_eq!(json["file_length"], 256 + 320 + 10 * u64::from(MIB));
    assert_eq!(json["metadata"]["general.name"], "Test Model");
    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 10);
    for (index, layer) in layers.iter().enumerate() {
        assert_eq!(layer["index"], index);
        assert!(layer["name"].is_null());
        assert_eq!(layer["offset"], 576 + index as u64 * u64::from(MIB));
        assert_eq!(layer["length"], MIB);
        assert_eq!(layer["precision_bits"], 4);
        assert_eq!(layer["dtype"], "opaque");
        assert!(layer["checksum"].is_null());
        assert_eq!(layer["tensors"].as_array().unwrap().len(), 0);
    }
}

#[test]
fn verify_legacy_v1_says_there_are_no_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let path = legacy_fixture(dir.path());
    let run = tmai(&[std::ffi::OsStr::new("verify"), path.as_os_str()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("no checksums"), "{}", run.stdout);
}

#[test]
fn convert_legacy_v1_then_inspect_and_verify_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let input = legacy_fixture(dir.path());
    let output = dir.path().join("upgraded.tmai");
    let run = tmai(&[
        std::ffi::OsStr::new("convert"),
        input.as_os_str(),
        output.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("(tmai-v1)"), "{}", run.stdout);
    // Plain progress lines, since stderr is not a terminal here.
    assert!(run.stderr.contains("[10/10] layer.9"), "{}", run.stderr);

    let bytes = std::fs::read(&output).unwrap();
    let model = Model::parse(&bytes).unwrap();
    assert!(!model.is_legacy());
    assert_eq!(model.metadata_value("general.name"), Some("Test Model"));
    assert_eq!(model.metadata_value("source.format"), Some("tmai-v1"));
    assert_eq!(model.layer_count(), 10);
    for index in 0..10u64 {
        let layer = model.layer(index).unwrap();
        assert_eq!(layer.name, Some(format!("layer.{index}").as_str()));
        assert_eq!(layer.precision_bits, 4);
        assert_eq!(layer.dtype, DType::Opaque);
        assert_eq!(layer.offset % 4096, 0);
        let data = model.layer_bytes(index).unwrap();
        assert_eq!(data.len(), MIB as usize);
        assert!(data.iter().all(|&b| b == index as u8));
    }
    model.verify_all().unwrap();

    let run = tmai(&[std::ffi::OsStr::new("verify"), output.as_os_str()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("10 layers, 0 tensors, all checksums match")
    );
    assert!(run.stderr.contains("tmai verify: [10/10] layer.9"));

    let run = tmai(&[
        std::ffi::OsStr::new("inspect"),
        output.as_os_str(),
        std::ffi::OsStr::new("--json"),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["format_version"], "2.0");
    assert_eq!(json["legacy"], false);
    assert_eq!(json["layers"][3]["name"], "layer.3");
    let checksum = json["layers"][3]["checksum"].as_str().unwrap();
    assert_eq!(checksum.len(), 8);
    assert_eq!(
        u32::from_str_radix(checksum, 16).unwrap(),
        model.layer(3).unwrap().checksum.unwrap()
    );
}

#[test]
fn convert_with_alignment_and_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "small.tmai", &legacy_v1("m", 3, 100, 8));
    let output = dir.path().join("out.tmai");
    let run = tmai(&[
        std::ffi::OsStr::new("convert"),
        input.as_os_str(),
        output.as_os_str(),
        std::ffi::OsStr::new("--alignment"),
        std::ffi::OsStr::new("64"),
        std::ffi::OsStr::new("--quiet"),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    let bytes = std::fs::read(&output).unwrap();
    let model = Model::parse(&bytes).unwrap();
    assert_eq!(model.alignment(), 64);
    assert_eq!(model.layer(1).unwrap().offset % 64, 0);
}

#[test]
fn verify_names_the_corrupt_layer() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "small.tmai", &legacy_v1("m", 4, 1000, 8));
    let output = dir.path().join("out.tmai");
    assert_eq!(
        tmai(&[
            std::ffi::OsStr::new("convert"),
            input.as_os_str(),
            output.as_os_str()
        ])
        .code,
        0
    );
    let mut bytes = std::fs::read(&output).unwrap();
    let offset = Model::parse(&bytes).unwrap().layer(2).unwrap().offset as usize;
    bytes[offset + 17] ^= 0xFF;
    std::fs::write(&output, &bytes).unwrap();
    let run = tmai(&[std::ffi::OsStr::new("verify"), output.as_os_str()]);
    assert_clean_failure(
        &run,
        1,
        "checksum mismatch in 1 of 4 layers: layer 2 \"layer.2\"",
    );
}

#[test]
fn help_and_usage_errors() {
    let run = tmai(&["--help"]);
    assert_eq!(run.code, 0);
    for command in ["inspect", "verify", "convert"] {
        let run = tmai(&[command, "--help"]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains("Usage"), "{run:?}");
    }
    assert_eq!(tmai::<&str>(&[]).code, 2);
    assert_eq!(tmai(&["frobnicate"]).code, 2);
    assert_eq!(tmai(&["inspect"]).code, 2);
    let run = tmai(&["convert", "a", "b", "--alignment", "100"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("power of two"));
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "small.tmai", &legacy_v1("m", 1, 10, 8));
    let out = dir.path().join("o.tmai");
    let run = tmai(&[
        std::ffi::OsStr::new("convert"),
        input.as_os_str(),
        out.as_os_str(),
        std::ffi::OsStr::new("--group-by"),
        std::ffi::OsStr::new(r"layers\.\d+"),
    ]);
    assert_clean_failure(&run, 2, "has no capture group");
    let run = tmai(&[
        std::ffi::OsStr::new("convert"),
        input.as_os_str(),
        out.as_os_str(),
        std::ffi::OsStr::new("--group-by"),
        std::ffi::OsStr::new("(unclosed"),
    ]);
    assert_clean_failure(&run, 2, "invalid regex");
}

/// A valid converted v2 file to damage.
fn small_v2(dir: &std::path::Path) -> Vec<u8> {
    let input = write(dir, "src.tmai", &legacy_v1("m", 2, 300, 8));
    let output = dir.join("valid.tmai");
    assert_eq!(
        tmai(&[
            std::ffi::OsStr::new("convert"),
            input.as_os_str(),
            output.as_os_str()
        ])
        .code,
        0
    );
    std::fs::read(output).unwrap()
}

#[test]
fn malformed_files_fail_cleanly_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let valid_v2 = small_v2(dir.path());
    let legacy = legacy_v1("m", 2, 300, 8);
    let mut legacy_out_of_bounds = legacy.clone();
    legacy_out_of_bounds[256 + 32..256 + 36].copy_from_slice(&5000u32.to_le_bytes());
    let mut legacy_absurd_count = legacy.clone();
    legacy_absurd_count[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut legacy_zero_precision = legacy.clone();
    legacy_zero_precision[256 + 8..256 + 12].copy_from_slice(&0u32.to_le_bytes());
    let mut legacy_overlap = legacy.clone();
    legacy_overlap[256 + 32..256 + 36].copy_from_slice(&(256 + 64u32).to_le_bytes());
    let mut bad_header_crc = valid_v2.clone();
    bad_header_crc[40] ^= 1;
    let mut bad_tables = valid_v2.clone();
    let last = bad_tables.len() - 1;
    bad_tables[last] ^= 1;
    let truncated_v2 = valid_v2[..valid_v2.len() - 10].to_vec();
    let mut extended_v2 = valid_v2.clone();
    extended_v2.extend_from_slice(&[0; 7]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "empty"),
        ("garbage", b"hello, world, not a model".to_vec(), "magic"),
        ("v2 magic only", valid_v2[..8].to_vec(), "header"),
        ("truncated v2", truncated_v2, "length"),
        ("extended v2", extended_v2, "length"),
        ("header crc", bad_header_crc, "checksum"),
        ("tables crc", bad_tables, "checksum"),
        (
            "legacy short header",
            legacy[..100].to_vec(),
            "legacy v1 header",
        ),
        (
            "legacy layer out of bounds",
            legacy_out_of_bounds,
            "layer 1",
        ),
        ("legacy absurd count", legacy_absurd_count, "count"),
        ("legacy zero precision", legacy_zero_precision, "layer 0"),
        ("legacy overlap", legacy_overlap, "layer 1"),
    ];
    for (label, bytes, needle) in cases {
        let path = write(dir.path(), "bad.tmai", &bytes);
        for command in ["inspect", "verify"] {
            let run = tmai(&[std::ffi::OsStr::new(command), path.as_os_str()]);
            assert!(run.code == 1, "{label}: {command}: {run:?}");
            assert_clean_failure(&run, 1, needle);
            assert!(run.stderr.contains("bad.tmai"), "{label}: {run:?}");
        }
        let mut json_args = vec![
            std::ffi::OsString::from("inspect"),
            path.clone().into_os_string(),
        ];
        json_args.push("--json".into());
        let run = tmai(&json_args);
        assert_clean_failure(&run, 1, needle);
        assert!(run.stdout.is_empty(), "{label}: {run:?}");
    }
    let run = tmai(&["inspect", "/nonexistent/model.tmai"]);
    assert_clean_failure(&run, 1, "opening /nonexistent/model.tmai");
    let run = tmai(&[std::ffi::OsStr::new("inspect"), dir.path().as_os_str()]);
    assert_clean_failure(&run, 1, "is a directory");
}

#[test]
fn convert_refuses_unknown_and_current_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let valid_v2 = small_v2(dir.path());
    let out = dir.path().join("out.tmai");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "the file is empty"),
        (
            "garbage",
            b"\x00\x01garbage bytes here".to_vec(),
            "unrecognised input format",
        ),
        ("v2", valid_v2, "already a current-version .tmai file"),
        ("bad json index", b"{ not json".to_vec(), "index JSON"),
        (
            "legacy truncated",
            legacy_v1("m", 2, 300, 8)[..300].to_vec(),
            "legacy v1",
        ),
    ];
    for (label, bytes, needle) in cases {
        let path = write(dir.path(), "input.bin", &bytes);
        let run = tmai(&[
            std::ffi::OsStr::new("convert"),
            path.as_os_str(),
            out.as_os_str(),
        ]);
        assert_clean_failure(&run, 1, needle);
        assert!(!out.exists(), "{label}: no output on failure");
    }
    let empty_dir = tempfile::tempdir().unwrap();
    let run = tmai(&[
        std::ffi::OsStr::new("convert"),
        empty_dir.path().as_os_str(),
        out.as_os_str(),
    ]);
    assert_clean_failure(&run, 1, "neither model.safetensors.index.json");
}

#[test]
fn a_failed_conversion_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    // The output cannot be created: its directory does not exist.
    let input = write(dir.path(), "in.tmai", &legacy_v1("m", 1, 10, 8));
    let out = dir.path().join("missing-dir/out.tmai");
    let run = tmai(&[
        std::ffi::OsStr::new("convert"),
        input.as_os_str(),
        out.as_os_str(),
    ]);
    assert_clean_failure(&run, 1, "missing-dir");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1);
}
