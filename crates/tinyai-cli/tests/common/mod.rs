//! Helpers shared by the integration tests: file builders and a runner for the binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use safetensors::tensor::{Dtype, TensorView};

/// The outcome of running the `tmai` binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the built `tmai` binary with `args`.
pub fn tmai<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    tmai_with_env(args, &[])
}

/// Runs the built `tmai` binary with `args` and extra environment variables.
pub fn tmai_with_env<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, String)]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_tmai"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Asserts a clean failure: exit code `code`, no panic, and a one-line
/// `tmai: error:` message containing `needle`.
pub fn assert_clean_failure(run: &Run, code: i32, needle: &str) {
    assert_eq!(run.code, code, "{run:?}");
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| line.starts_with("tmai: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error line: {run:?}");
    assert!(
        errors[0].contains(needle),
        "error line {:?} lacks {needle:?}",
        errors[0]
    );
}

/// A legacy TinyAI v1 file: 256-byte header, 32-byte table entries, data right after.
pub fn legacy_v1(name: &str, layer_count: u32, layer_size: u32, precision: u32) -> Vec<u8> {
    let mut bytes = vec![0u8; 256];
    bytes[0..4].copy_from_slice(&[0x49, 0x41, 0x4D, 0x54]);
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    bytes[8..12].copy_from_slice(&layer_count.to_le_bytes());
    bytes[16..16 + name.len()].copy_from_slice(name.as_bytes());
    let data_start = 256 + layer_count * 32;
    for index in 0..layer_count {
        let mut entry = [0u8; 32];
        entry[0..4].copy_from_slice(&(data_start + index * layer_size).to_le_bytes());
        entry[4..8].copy_from_slice(&layer_size.to_le_bytes());
        entry[8..12].copy_from_slice(&precision.to_le_bytes());
        bytes.extend_from_slice(&entry);
    }
    for index in 0..layer_count {
        bytes.extend(std::iter::repeat_n(index as u8, layer_size as usize));
    }
    bytes
}

/// A safetensors file made with the `safetensors` crate.
pub fn safetensors_file(
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
    metadata: Option<HashMap<String, String>>,
) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            (
                (*name).to_owned(),
                TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, metadata).unwrap()
}

/// A safetensors file with a hand-written header (for malformed inputs).
pub fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Deterministic test bytes.
pub fn pattern(length: usize, seed: u8) -> Vec<u8> {
    (0..length)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// GGUF value type ids.
pub mod gguf_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// A tensor of a [`Gguf`] builder; `dims` innermost first, as GGUF stores them.
#[derive(Clone, Debug)]
pub struct GgufTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub data: Vec<u8>,
}

/// A minimal GGUF writer.
#[derive(Clone, Debug)]
pub struct Gguf {
    pub version: u32,
    pub alignment: u64,
    pub kv: Vec<u8>,
    pub kv_count: u64,
    pub tensors: Vec<GgufTensor>,
}

pub fn gguf_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

impl Gguf {
    pub fn new(version: u32) -> Self {
        Gguf {
            version,
            alignment: 32,
            kv: Vec::new(),
            kv_count: 0,
            tensors: Vec::new(),
        }
    }

    /// Adds a key/value pair whose value bytes are already encoded.
    pub fn kv_raw(&mut self, key: &str, value_type: u32, value: &[u8]) -> &mut Self {
        gguf_string(&mut self.kv, key);
        self.kv.extend_from_slice(&value_type.to_le_bytes());
        self.kv.extend_from_slice(value);
        self.kv_count += 1;
        self
    }

    pub fn kv_string(&mut self, key: &str, value: &str) -> &mut Self {
        let mut bytes = Vec::new();
        gguf_string(&mut bytes, value);
        self.kv_raw(key, gguf_type::STRING, &bytes)
    }

    pub fn kv_u32(&mut self, key: &str, value: u32) -> &mut Self {
        self.kv_raw(key, gguf_type::U32, &value.to_le_bytes())
    }

    pub fn tensor(&mut self, name: &str, dims: &[u64], ggml_type: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push(GgufTensor {
            name: name.to_owned(),
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        self
    }

    /// Encodes the file: header, key/values, tensor infos, aligned data.
    pub fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.kv_count.to_le_bytes());
        out.extend_from_slice(&self.kv);
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for tensor in &self.tensors {
            offsets.push(offset);
            offset = (offset + tensor.data.len() as u64).next_multiple_of(self.alignment);
        }
        for (tensor, offset) in self.tensors.iter().zip(&offsets) {
            gguf_string(&mut out, &tensor.name);
            out.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
            for dim in &tensor.dims {
                out.extend_from_slice(&dim.to_le_bytes());
            }
            out.extend_from_slice(&tensor.ggml_type.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        let padded = (out.len() as u64).next_multiple_of(self.alignment) as usize;
        out.resize(padded, 0);
        for tensor in &self.tensors {
            out.extend_from_slice(&tensor.data);
            let padded = (out.len() as u64).next_multiple_of(self.alignment) as usize;
            out.resize(padded, 0);
        }
        out
    }
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Converts with the library (quiet) and returns the output bytes.
pub fn convert_lib(
    input: &Path,
    output: &Path,
    grouping: tinyai_cli::convert::Grouping,
) -> Result<Vec<u8>, tinyai_cli::CliError> {
    let options = tinyai_cli::convert::ConvertOptions {
        grouping,
        ..Default::default()
    };
    tinyai_cli::convert::convert(input, output, &options)?;
    Ok(std::fs::read(output).unwrap())
}

/// Issue 15: a file `tmai convert` refuses, opened as it is through the store
/// (every backend) and the C API, is refused there too: a typed error, a NULL
/// model with a last error, never a crash.
pub fn refused_when_opened_directly(path: &Path, label: &str) {
    use tinyai_store::{Backend, MappedModel, StoreConfig};
    for backend in [
        Backend::Mapped,
        Backend::Owned { direct_io: false },
        Backend::Owned { direct_io: true },
    ] {
        let config = StoreConfig {
            backend,
            ..StoreConfig::default()
        };
        match MappedModel::open(path, config) {
            Err(error) => assert!(!error.to_string().is_empty(), "{label}"),
            Ok(model) => panic!(
                "{label}: opened directly ({backend:?}) with {} layers",
                model.layer_count()
            ),
        }
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and a NULL config (the defaults),
    // as the C API allows; a returned model would be closed at once.
    let model = unsafe { tinyai::tinyaiOpenMappedModel(c_path.as_ptr(), std::ptr::null()) };
    if !model.is_null() {
        // SAFETY: a model this call opened, closed once.
        unsafe { tinyai::tinyaiCloseMappedModel(model) };
        panic!("{label}: the C API opened it");
    }
}
