#![allow(clippy::unwrap_used)]
//! Cross-checks the reference implementation against `tools/python/tmai_spec.py`,
//! an independent reader/writer written only from `docs/format.md`:
//! the Python reader must accept every golden fixture, and files written by the
//! Python writer must be accepted by [`Model::parse`] and `verify_all`.
//! Skipped (with a message) when `python3` is not available.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tinyai_format::{DType, Model};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script() -> PathBuf {
    workspace_root().join("tools/python/tmai_spec.py")
}

fn python_available() -> bool {
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            tinyai_format::fixtures::skip("python_spec", "python3 not found");
            false
        }
    }
}

fn run_script(args: &[&Path]) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(script());
    for a in args {
        cmd.arg(a);
    }
    cmd.output().unwrap()
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn golden_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tmai"))
        .collect();
    files.sort();
    files
}

#[test]
#[cfg_attr(
    miri,
    ignore = "runs python3 and reads and writes files (Miri runs with isolation)"
)]
fn python_reader_accepts_golden_files() {
    if !python_available() {
        return;
    }
    let files = golden_files();
    assert!(!files.is_empty(), "no fixtures/*.tmai found");
    for file in &files {
        let read = run_script(&[Path::new("read"), file]);
        assert_success(&read, &format!("tmai_spec.py read {}", file.display()));
        let verify = run_script(&[Path::new("verify"), file]);
        assert_success(&verify, &format!("tmai_spec.py verify {}", file.display()));

        // The Python summary agrees with the reference reader on the basics.
        let bytes = std::fs::read(file).unwrap();
        let model = Model::parse(&bytes).unwrap();
        let json = String::from_utf8(read.stdout).unwrap();
        assert!(
            json.contains(&format!("\"file_length\": {}", model.file_length())),
            "{}: file_length differs:\n{json}",
            file.display()
        );
        assert!(
            json.contains(&format!("\"layer_count\": {}", model.layer_count())),
            "{}: layer_count differs:\n{json}",
            file.display()
        );
        for layer in model.layers() {
            assert!(
                json.contains(&format!("\"offset\": {},", layer.offset)),
                "{}: layer {} offset {} missing from the Python summary",
                file.display(),
                layer.index,
                layer.offset
            );
        }
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "runs python3 and reads and writes files (Miri runs with isolation)"
)]
fn python_reader_rejects_a_corrupted_golden_file() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(workspace_root().join("fixtures/tiny.tmai")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 1].to_vec()),
        ("appended", [&good[..], &[0u8][..]].concat()),
        ("header flip", {
            let mut b = good.clone();
            b[40] ^= 1;
            b
        }),
        ("table flip", {
            let mut b = good.clone();
            let last = b.len() - 1;
            b[last] ^= 0x20;
            b
        }),
    ];
    for (name, bytes) in cases {
        assert!(
            Model::parse(&bytes).is_err(),
            "{name}: reference reader accepted it"
        );
        let path = dir.path().join(format!("{}.tmai", name.replace(' ', "_")));
        std::fs::write(&path, &bytes).unwrap();
        let out = run_script(&[Path::new("read"), &path]);
        assert!(
            !out.status.success(),
            "{name}: the Python reader accepted it"
        );
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "runs python3 and reads and writes files (Miri runs with isolation)"
)]
fn python_writer_output_parses_and_verifies() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.tmai");
    let out = run_script(&[Path::new("write-sample"), &path]);
    assert_success(&out, "tmai_spec.py write-sample");
    let verify = run_script(&[Path::new("verify"), &path]);
    assert_success(&verify, "tmai_spec.py verify (own sample)");

    let bytes = std::fs::read(&path).unwrap();
    let model = Model::parse(&bytes).unwrap();
    model.verify_all().unwrap();
    assert!(!model.is_legacy());
    assert_eq!(model.alignment(), 4096);
    assert_eq!(model.file_length(), bytes.len() as u64);

    // (name, dtype, precision, length, [(tensor, dtype, source_type, shape, length)])
    type Expected = (
        &'static str,
        DType,
        u32,
        u64,
        &'static [(&'static str, DType, u32, &'static [u64], u64)],
    );
    let expected: &[Expected] = &[
        (
            "embed",
            DType::F32,
            32,
            24,
            &[("weight", DType::F32, 0, &[2, 3], 24)],
        ),
        (
            "mixed.layer",
            DType::Mixed,
            16,
            198,
            &[
                ("w_f16", DType::F16, 0, &[2, 2], 8),
                ("w_i4", DType::I4, 0, &[5], 3),
                ("scale", DType::F32, 0, &[], 4),
                ("w_bf16", DType::BF16, 0, &[3, 1], 6),
            ],
        ),
        ("zero-length", DType::Opaque, 8, 0, &[]),
        (
            "ggml.q4_0",
            DType::Ggml,
            5,
            36,
            &[("blk.0.attn_q.weight", DType::Ggml, 2, &[2, 32], 36)],
        ),
        (
            "ünïcødé-层-🚀",
            DType::Mixed,
            8,
            128,
            &[
                ("权重", DType::I8, 0, &[4], 4),
                ("ok?", DType::Bool, 0, &[2], 2),
                ("empty", DType::U16, 0, &[0, 5], 0),
            ],
        ),
        ("raw-bytes", DType::Opaque, 8, 19, &[]),
        ("", DType::F64, 64, 8, &[("", DType::F64, 0, &[1], 8)]),
        ("empty-last", DType::Opaque, 8, 0, &[]),
    ];
    assert_eq!(model.layer_count(), expected.len() as u64);
    assert_eq!(model.tensor_count(), 10);
    let layers: Vec<_> = model.layers().collect();
    assert_eq!(layers.len(), expected.len());
    let mut previous_end = 0;
    for (layer, (name, dtype, precision, length, tensors)) in layers.iter().zip(expected) {
        assert_eq!(layer.name, Some(*name));
        assert_eq!(layer.dtype, *dtype, "layer {name:?}");
        assert_eq!(layer.precision_bits, *precision, "layer {name:?}");
        assert_eq!(layer.length, *length, "layer {name:?}");
        assert_eq!(layer.offset % 4096, 0, "layer {name:?}");
        assert!(layer.offset >= previous_end, "layer {name:?}");
        assert!(layer.checksum.is_some(), "layer {name:?}");
        previous_end = layer.offset + layer.length;
        assert_eq!(
            layer.tensors.end - layer.tensors.start,
            tensors.len() as u64
        );
        for (ti, (tname, tdtype, source_type, shape, tlen)) in layer.tensors.clone().zip(*tensors) {
            let t = model.tensor(ti).unwrap();
            assert_eq!(t.layer, layer.index);
            assert_eq!(t.name, *tname);
            assert_eq!(t.dtype, *tdtype, "tensor {tname:?}");
            assert_eq!(t.source_type, *source_type, "tensor {tname:?}");
            assert_eq!(t.shape(), *shape, "tensor {tname:?}");
            assert_eq!(t.length, *tlen, "tensor {tname:?}");
            assert_eq!(t.offset_in_layer % 64, 0, "tensor {tname:?}");
        }
    }
    // The empty last layer sits exactly where the table region starts.
    let last = layers.last().unwrap();
    assert_eq!(last.length, 0);

    let metadata: Vec<(&str, &str)> = model.metadata().collect();
    assert_eq!(
        metadata,
        vec![
            ("general.name", "tmai-spec sample"),
            ("general.architecture", "test"),
            ("source.format", "python-spec"),
            ("json.value", "{\"a\": [1, 2, 3], \"b\": \"ß\"}"),
            ("clé unicode ✓", "valeur — ✓"),
            ("empty.value", ""),
        ]
    );

    // Layer bytes round-trip: the first tensor holds the f32 values the script wrote.
    let embed = model.layer_bytes(0).unwrap();
    let values: Vec<f32> = embed
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values, vec![0.0, 1.0, -2.5, 3.25, 1e-3, 42.0]);
}
