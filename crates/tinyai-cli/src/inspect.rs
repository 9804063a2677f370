//! `tmai inspect`: header, metadata, layers and tensors, as text or as JSON.
//!
//! Accepts every file [`crate::model_file`] opens, detected by content: a `.tmai`
//! file (current or legacy v1), a safetensors file, a sharded set's
//! `model.safetensors.index.json` or a GGUF file. The last three are shown through
//! the same [`Model`] view, with the layers `tmai convert` would make of them; they
//! carry no checksums (`checksum` is null).
//!
//! # JSON schema (stable)
//!
//! `tmai inspect FILE --json` prints one JSON object:
//!
//! ```text
//! {
//!   "format_version": "2.0",          // "MAJOR.MINOR" ("1.0" for legacy files; for a
//!                                     // directly opened file its own format's version:
//!                                     // "3.0" for GGUF v3, "0.0" for safetensors)
//!   "file_length": 123456,            // bytes (a sharded set: its byte space, see "files")
//!   "alignment": 4096,                // layer alignment (1 for legacy and directly opened files)
//!   "legacy": false,                  // true for legacy TinyAI v1 files
//!   "source_format": "tmai",          // "tmai", "tmai-v1", "safetensors",
//!                                     // "safetensors-index" (a sharded set) or "gguf"
//!   "files": [                        // the data files: the file itself at base 0, or
//!     {                               // the shards of a set, laid end to end in one
//!       "path": "model.tmai",         // byte space (each base 64 KiB-aligned)
//!       "base": 0,                    // offset of the file's first byte in that space
//!       "length": 123456              // bytes
//!     }
//!   ],
//!   "metadata": { "key": "value" },   // in table order; legacy: {"general.name": ...}
//!   "layers": [
//!     {
//!       "index": 0,
//!       "name": "embeddings",         // null for legacy layers
//!       "offset": 4096,               // absolute, bytes (a set: base of its first
//!                                     // shard + offset in that shard)
//!       "length": 1536,               // bytes (directly opened files: the range
//!                                     // covering its tensors, possibly across shards)
//!       "precision_bits": 32,
//!       "dtype": "f32",               // DType name; "mixed" when tensors differ, "opaque" for legacy
//!       "checksum": "1a2b3c4d",       // CRC-32C as 8 lower-case hex digits, or null
//!                                     // (always null for safetensors and GGUF files)
//!       "tensors": [
//!         {
//!           "name": "embeddings.word_embeddings.weight",
//!           "layer": 0,               // index of the enclosing layer
//!           "dtype": "f32",           // DType name ("ggml" for GGML quantized types)
//!           "source_type": 0,         // GGML type id when dtype is "ggml", else 0
//!           "shape": [2, 3],          // outermost dimension first
//!           "offset": 4096,           // absolute offset in the file (a set: base of
//!                                     // its shard + offset in that shard)
//!           "offset_in_layer": 0,
//!           "size": 24                // bytes
//!         }
//!       ]
//!     }
//!   ]
//! }
//! ```
//!
//! Fields are only ever added, never renamed or removed, within schema version
//! `format_version` 2.x. Numbers are JSON integers (u64).

use std::io::Write;

use serde::Serialize;
use serde::ser::SerializeMap;
use tinyai_format::dtype::GGML_TYPES;
use tinyai_format::{DType, FileKind, Model};

use crate::error::{CliError, Result};
use crate::model_file::{DataFile, ModelFile, source_format};

/// What the text output says about files without checksums.
pub const NO_CHECKSUMS: &str =
    "no checksums (safetensors/GGUF files carry none; `tmai convert` adds them)";

/// Runs `tmai inspect` on `path`, writing to `out`.
pub fn run(path: &std::path::Path, json: bool, out: &mut dyn Write) -> Result<()> {
    let file = ModelFile::open(path)?;
    let model = file.model()?;
    write(file.path(), &model, &file.data_files(), json, out)
}

/// Writes what `tmai inspect` shows of `model`, as text or JSON.
pub(crate) fn write(
    path: &std::path::Path,
    model: &Model<'_>,
    files: &[DataFile<'_>],
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let written = if json {
        write_json(model, files, out)
    } else {
        write_text(path, model, files, out)
    };
    written.map_err(CliError::io("writing to stdout"))
}

#[derive(Serialize)]
struct JsonModel<'a> {
    format_version: String,
    file_length: u64,
    alignment: u64,
    legacy: bool,
    source_format: &'static str,
    files: Vec<JsonFile>,
    metadata: JsonMetadata<'a>,
    layers: Vec<JsonLayer<'a>>,
}

#[derive(Serialize)]
struct JsonFile {
    path: String,
    base: u64,
    length: u64,
}

struct JsonMetadata<'a>(Vec<(&'a str, &'a str)>);

impl Serialize for JsonMetadata<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct JsonLayer<'a> {
    index: u64,
    name: Option<&'a str>,
    offset: u64,
    length: u64,
    precision_bits: u32,
    dtype: &'static str,
    checksum: Option<String>,
    tensors: Vec<JsonTensor<'a>>,
}

#[derive(Serialize)]
struct JsonTensor<'a> {
    name: &'a str,
    layer: u64,
    dtype: &'static str,
    source_type: u32,
    shape: Vec<u64>,
    offset: u64,
    offset_in_layer: u64,
    size: u64,
}

fn write_json(
    model: &Model<'_>,
    files: &[DataFile<'_>],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut layers = Vec::new();
    for layer in model.layers() {
        let tensors = model
            .layer_tensors(layer.index)
            .map(|tensors| {
                tensors
                    .map(|tensor| JsonTensor {
                        name: tensor.name,
                        layer: layer.index,
                        dtype: tensor.dtype.name(),
                        source_type: tensor.source_type,
                        shape: tensor.shape().to_vec(),
                        offset: layer.offset + tensor.offset_in_layer,
                        offset_in_layer: tensor.offset_in_layer,
                        size: tensor.length,
                    })
                    .collect()
            })
            .unwrap_or_default();
        layers.push(JsonLayer {
            index: layer.index,
            name: layer.name,
            offset: layer.offset,
            length: layer.length,
            precision_bits: layer.precision_bits,
            dtype: layer.dtype.name(),
            checksum: layer.checksum.map(|crc| format!("{crc:08x}")),
            tensors,
        });
    }
    let version = model.version();
    let document = JsonModel {
        format_version: format!("{}.{}", version.major, version.minor),
        file_length: model.file_length(),
        alignment: model.alignment(),
        legacy: model.is_legacy(),
        source_format: source_format(model.kind()),
        files: files
            .iter()
            .map(|file| JsonFile {
                path: file.path.display().to_string(),
                base: file.base,
                length: file.length,
            })
            .collect(),
        metadata: JsonMetadata(model.metadata().collect()),
        layers,
    };
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)?;
    out.flush()
}

/// The GGML type name of a type id, if known (`"Q4_K"` …).
pub fn ggml_type_name(type_id: u32) -> Option<&'static str> {
    GGML_TYPES
        .iter()
        .find(|entry| entry.0 == type_id)
        .map(|entry| entry.1)
}

fn dtype_label(dtype: DType, source_type: u32) -> String {
    if dtype == DType::Ggml {
        match ggml_type_name(source_type) {
            Some(name) => format!("ggml:{name}"),
            None => format!("ggml:{source_type}"),
        }
    } else {
        dtype.to_string()
    }
}

/// Shortens and escapes a metadata value for one-line display.
fn display_value(value: &str) -> String {
    const LIMIT: usize = 120;
    let escaped: String = value.chars().flat_map(char::escape_debug).collect();
    if escaped.chars().count() <= LIMIT {
        return escaped;
    }
    let cut: String = escaped.chars().take(LIMIT).collect();
    format!("{cut}… ({} bytes)", value.len())
}

fn write_text(
    path: &std::path::Path,
    model: &Model<'_>,
    files: &[DataFile<'_>],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let version = model.version();
    writeln!(out, "file: {}", path.display())?;
    match model.kind() {
        FileKind::LegacyTmai => writeln!(
            out,
            "format: legacy TinyAI v1 (read-only; no tensors, names or checksums)"
        )?,
        FileKind::Safetensors => {
            writeln!(out, "format: safetensors (opened directly; {NO_CHECKSUMS})")?
        }
        FileKind::SafetensorsIndex => writeln!(
            out,
            "format: sharded safetensors set of {} files (opened directly; {NO_CHECKSUMS})",
            files.len()
        )?,
        FileKind::Gguf => writeln!(
            out,
            "format: GGUF v{} (opened directly; {NO_CHECKSUMS})",
            version.major
        )?,
        _ => writeln!(out, "format: tmai {}.{}", version.major, version.minor)?,
    }
    if model.kind() == FileKind::SafetensorsIndex {
        writeln!(
            out,
            "files ({}, laid end to end in one byte space; offsets below are in it):",
            files.len()
        )?;
        for file in files {
            writeln!(
                out,
                "  {}  base {}  length {}",
                file.path.display(),
                file.base,
                file.length
            )?;
        }
        writeln!(out, "byte space length: {} bytes", model.file_length())?;
    } else {
        writeln!(out, "file length: {} bytes", model.file_length())?;
    }
    writeln!(out, "alignment: {}", model.alignment())?;
    let metadata: Vec<_> = model.metadata().collect();
    writeln!(out, "metadata ({}):", metadata.len())?;
    for (key, value) in metadata {
        writeln!(out, "  {key} = {}", display_value(value))?;
    }
    writeln!(
        out,
        "layers ({}), tensors ({}):",
        model.layer_count(),
        model.tensor_count()
    )?;
    for layer in model.layers() {
        let checksum = layer
            .checksum
            .map_or_else(|| "none".to_owned(), |crc| format!("{crc:08x}"));
        writeln!(
            out,
            "  [{}] {}  offset {}  length {}  dtype {}  precision {} bits  crc32c {}  tensors {}",
            layer.index,
            layer.name.unwrap_or("(unnamed)"),
            layer.offset,
            layer.length,
            layer.dtype,
            layer.precision_bits,
            checksum,
            layer.tensors.end - layer.tensors.start
        )?;
        if let Ok(tensors) = model.layer_tensors(layer.index) {
            for tensor in tensors {
                writeln!(
                    out,
                    "      {}  {}  {:?}  offset {} (+{})  size {}",
                    tensor.name,
                    dtype_label(tensor.dtype, tensor.source_type),
                    tensor.shape(),
                    layer.offset + tensor.offset_in_layer,
                    tensor.offset_in_layer,
                    tensor.length
                )?;
            }
        }
    }
    out.flush()
}
