//! `tmai convert`: safetensors (single or sharded), GGUF v2/v3 and legacy
//! TinyAI v1 files to `.tmai` v2, streamed with bounded memory and written atomically.
//!
//! The input format is detected by content, not by extension (see [`detect`]).
//! Tensor sources are grouped into layers by [`grouping`] (the rules live in
//! [`tinyai_format::grouping`], shared with the direct readers); every tensor is copied
//! byte for byte from the source file through a bounded buffer
//! ([`tinyai_format::LayerWriter::add_tensor_from_reader`]), so memory use does not
//! grow with the model. The output is written to a temporary file that replaces
//! `OUT` only when complete ([`tinyai_format::FileWriter`]).
//!
//! # Metadata carried into the `.tmai` file
//! - Always `source.format`: `safetensors`, `gguf` or `tmai-v1`.
//! - safetensors: every `__metadata__` entry, same key (string values as they are,
//!   other JSON values JSON-encoded). For a sharded set, the index's `metadata`
//!   object as `safetensors.index.KEY`, then each shard's `__metadata__` (the first
//!   shard's value wins when shards disagree).
//! - GGUF: see [`gguf`] (every key/value pair, arrays JSON-encoded), plus `source.gguf_version`.
//! - legacy v1: the model name as `general.name`.
//!
//! Keys the converter sets itself (`source.*`) take precedence over source keys of the same name.

pub mod gguf;
pub mod grouping;
pub mod legacy;
pub mod safetensors;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use tinyai_format::{DType, FileKind, FileWriter, TensorSpec, WriterOptions};

pub use grouping::Grouping;

use crate::error::{CliError, Result};
use crate::progress::{Progress, human_bytes};
use crate::source::SourceFile;

pub use tinyai_format::safetensors::INDEX_FILE_NAME;

/// A tensor found in a source file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceTensor {
    /// Full original name.
    pub name: String,
    /// Element type in the `.tmai` file.
    pub dtype: DType,
    /// GGML type id for [`DType::Ggml`], else 0.
    pub source_type: u32,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// Which source file holds it (index into the converter's file list).
    pub file: usize,
    /// Absolute offset of its first byte in that file.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

/// Metadata entries in insertion order; the first value of a key wins.
#[derive(Clone, Debug, Default)]
pub struct MetadataList {
    entries: Vec<(String, String)>,
    keys: HashSet<String>,
}

impl MetadataList {
    /// Adds `key` unless it is already present; says whether it was added.
    pub fn insert(&mut self, key: String, value: String) -> bool {
        if !self.keys.insert(key.clone()) {
            return false;
        }
        self.entries.push((key, value));
        true
    }

    /// The entries in insertion order.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }
}

/// Options of `tmai convert`.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// Layer alignment of the output (power of two, 64..=1 GiB).
    pub alignment: u64,
    /// How tensors are grouped into layers.
    pub grouping: Grouping,
    /// No progress output.
    pub quiet: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            alignment: tinyai_format::limits::DEFAULT_ALIGNMENT,
            grouping: Grouping::Default,
            quiet: true,
        }
    }
}

/// What a conversion produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// `source.format` of the input.
    pub format: &'static str,
    /// Layers written.
    pub layers: u64,
    /// Tensors written.
    pub tensors: u64,
    /// Payload bytes copied.
    pub bytes: u64,
}

/// The kind of input, detected by content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// One safetensors file.
    Safetensors(PathBuf),
    /// A sharded safetensors set, by its index JSON.
    ShardedSafetensors(PathBuf),
    /// A GGUF file.
    Gguf(PathBuf),
    /// A legacy TinyAI v1 file.
    LegacyV1(PathBuf),
}

/// Detects the input format by content.
///
/// - a directory: its `model.safetensors.index.json`, else its only `*.safetensors` file;
/// - a file starting with `GGUF`: GGUF;
/// - a file starting with `49 41 4D 54`: legacy TinyAI v1;
/// - a file whose first 8 bytes are a little-endian length that fits the file and
///   whose 9th byte is `{`: safetensors;
/// - a file whose first non-blank byte is `{`: a safetensors index JSON
///   (the byte rules are `tinyai_format::detect`'s).
pub fn detect(input: &Path) -> Result<InputKind> {
    if input.is_dir() {
        let index = input.join(INDEX_FILE_NAME);
        if index.is_file() {
            return Ok(InputKind::ShardedSafetensors(index));
        }
        let entries = std::fs::read_dir(input)
            .map_err(CliError::io(format!("listing {}", input.display())))?;
        let mut candidates = Vec::new();
        for entry in entries {
            let entry = entry.map_err(CliError::io(format!("listing {}", input.display())))?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "safetensors") && path.is_file() {
                candidates.push(path);
            }
        }
        return match candidates.len() {
            1 => Ok(InputKind::Safetensors(candidates.remove(0))),
            0 => Err(CliError::bad_input(
                input,
                format!("directory holds neither {INDEX_FILE_NAME} nor a .safetensors file"),
            )),
            n => Err(CliError::bad_input(
                input,
                format!("directory holds {n} .safetensors files but no {INDEX_FILE_NAME}"),
            )),
        };
    }
    let source = SourceFile::open(input)?;
    let head = source.read_head(64)?;
    let path = input.to_path_buf();
    match tinyai_format::detect(&head, source.len()) {
        FileKind::Gguf => return Ok(InputKind::Gguf(path)),
        FileKind::Tmai => {
            return Err(CliError::bad_input(
                input,
                "is already a current-version .tmai file; there is nothing to convert",
            ));
        }
        FileKind::LegacyTmai => return Ok(InputKind::LegacyV1(path)),
        FileKind::Safetensors => return Ok(InputKind::Safetensors(path)),
        FileKind::SafetensorsIndex => return Ok(InputKind::ShardedSafetensors(path)),
        FileKind::Unknown => {}
    }
    let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Err(CliError::bad_input(
        input,
        format!(
            "unrecognised input format (first bytes {}): expected safetensors, a {INDEX_FILE_NAME}, GGUF or a legacy TinyAI v1 file",
            if shown.is_empty() {
                "none: the file is empty".to_owned()
            } else {
                shown.join(" ")
            }
        ),
    ))
}

/// Runs `tmai convert`; a summary line goes to `out`.
pub fn run(
    input: &Path,
    output: &Path,
    options: &ConvertOptions,
    out: &mut dyn Write,
) -> Result<()> {
    let summary = convert(input, output, options)?;
    writeln!(
        out,
        "{} ({}) -> {}: {} layers, {} tensors, {}",
        input.display(),
        summary.format,
        output.display(),
        summary.layers,
        summary.tensors,
        human_bytes(summary.bytes)
    )
    .map_err(CliError::io("writing to stdout"))
}

/// Converts `input` to `output` (the library entry point of `tmai convert`).
pub fn convert(input: &Path, output: &Path, options: &ConvertOptions) -> Result<Summary> {
    match detect(input)? {
        InputKind::Safetensors(path) => {
            let source = SourceFile::open(&path)?;
            let parsed = safetensors::read_file(&source, 0)?;
            let mut metadata = MetadataList::default();
            metadata.insert("source.format".into(), "safetensors".into());
            for (key, value) in parsed.metadata {
                metadata.insert(key, value);
            }
            write_tensors(
                input,
                "safetensors",
                &[source],
                &parsed.tensors,
                &metadata,
                output,
                options,
            )
        }
        InputKind::ShardedSafetensors(index) => {
            let set = safetensors::read_sharded(&index)?;
            let mut metadata = MetadataList::default();
            metadata.insert("source.format".into(), "safetensors".into());
            for (key, value) in set.metadata.entries() {
                metadata.insert(key.clone(), value.clone());
            }
            write_tensors(
                input,
                "safetensors",
                &set.files,
                &set.tensors,
                &metadata,
                output,
                options,
            )
        }
        InputKind::Gguf(path) => {
            let source = SourceFile::open(&path)?;
            let parsed = gguf::read_file(&source, 0)?;
            let mut metadata = MetadataList::default();
            metadata.insert("source.format".into(), "gguf".into());
            metadata.insert("source.gguf_version".into(), parsed.version.to_string());
            gguf::add_metadata(&parsed, &mut metadata);
            write_tensors(
                input,
                "gguf",
                &[source],
                &parsed.tensors,
                &metadata,
                output,
                options,
            )
        }
        InputKind::LegacyV1(path) => {
            let source = SourceFile::open(&path)?;
            legacy::convert(&source, output, options)
        }
    }
}

/// Groups `tensors` into layers and streams them from `files` into `output`.
pub fn write_tensors(
    input: &Path,
    format: &'static str,
    files: &[SourceFile],
    tensors: &[SourceTensor],
    metadata: &MetadataList,
    output: &Path,
    options: &ConvertOptions,
) -> Result<Summary> {
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    let plan = grouping::plan(&names, &options.grouping);
    let output_error = |error| CliError::format(output)(error);
    let mut file = FileWriter::create(
        output,
        WriterOptions {
            alignment: options.alignment,
        },
    )
    .map_err(output_error)?;
    for (key, value) in metadata.entries() {
        file.writer()
            .add_metadata(key, value)
            .map_err(|error| CliError::bad_input(input, format!("metadata {key:?}: {error}")))?;
    }
    let total: u64 = tensors.iter().map(|t| t.length).sum();
    let mut progress = Progress::new("convert", total, plan.len() as u64, options.quiet);
    for layer in &plan {
        let layer_bytes = layer.tensors.iter().map(|&i| tensors[i].length).sum();
        progress.step(&layer.name, layer_bytes);
        let mut writer = file
            .writer()
            .begin_layer(&layer.name)
            .map_err(output_error)?;
        for &index in &layer.tensors {
            let tensor = &tensors[index];
            let source = &files[tensor.file];
            let spec = TensorSpec {
                name: &tensor.name,
                dtype: tensor.dtype,
                shape: &tensor.shape,
                source_type: tensor.source_type,
            };
            let what = format!("tensor {:?}", tensor.name);
            let mut reader =
                progress.reader(source.reader_at(tensor.offset, tensor.length, &what)?);
            writer
                .add_tensor_from_reader(&spec, &mut reader, tensor.length)
                .map_err(|error| {
                    CliError::bad_input(
                        source.path(),
                        format!("{what} (layer {:?}): {error}", layer.name),
                    )
                })?;
        }
        writer.finish().map_err(output_error)?;
    }
    progress.finish();
    file.commit().map_err(output_error)?;
    Ok(Summary {
        format,
        layers: plan.len() as u64,
        tensors: tensors.len() as u64,
        bytes: total,
    })
}
