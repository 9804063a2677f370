//! Opening any file `tmai inspect` and `tmai verify` accept, detected by its
//! content ([`tinyai_format::detect`]), never by its name:
//!
//! - a `.tmai` file (current or legacy v1): header and tables only ([`TmaiTables`]);
//! - a safetensors file, a sharded set's `model.safetensors.index.json` (shards
//!   resolved relative to the index's directory) or a GGUF file: their headers
//!   only, viewed as a [`Model`] through [`ForeignModel`] (the layers `tmai convert`
//!   would make, in a virtual byte space where the files of a set lie end to end at
//!   [`FilePlacement::base`]; no checksums).
//!
//! No layer data is read here. Errors name the file concerned (the index, or the
//! shard that is missing, truncated or malformed).

use std::path::{Path, PathBuf};

use tinyai_format::direct::read_direct;
use tinyai_format::{
    FileKind, FilePlacement, ForeignModel, FormatError, Grouping, Model, SourceError,
};

use crate::convert::safetensors::{ShardHeaders, read_shard_headers};
use crate::error::{CliError, Result};
use crate::source::SourceFile;
use crate::tmai_file::TmaiTables;

/// What was opened.
#[derive(Debug)]
pub enum ModelFile {
    /// A `.tmai` file, current or legacy v1.
    Tmai {
        /// The file.
        source: SourceFile,
        /// Its header and tables.
        tables: TmaiTables,
    },
    /// A safetensors file, sharded safetensors set or GGUF file, opened as it is.
    Direct {
        /// The path given (the index, for a set).
        path: PathBuf,
        /// Layers, tensors and metadata.
        foreign: ForeignModel,
        /// The data files, in [`ForeignModel::files`] order.
        files: Vec<SourceFile>,
    },
}

/// One data file of a model and where it lies in the model's byte space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataFile<'a> {
    /// The file's path.
    pub path: &'a Path,
    /// Offset of its first byte in the model's byte space (0 for a single file).
    pub base: u64,
    /// Its length in bytes.
    pub length: u64,
}

/// Errors of [`read_direct`]'s callbacks ([`CliError`]) or of its parsing
/// ([`FormatError`], which names no file: the caller adds it).
enum DirectError {
    Cli(CliError),
    Format(FormatError),
}

impl From<FormatError> for DirectError {
    fn from(error: FormatError) -> DirectError {
        DirectError::Format(error)
    }
}

impl ModelFile {
    /// Opens `path`, detecting its format by content.
    pub fn open(path: &Path) -> Result<ModelFile> {
        let source = SourceFile::open(path)?;
        let head = source.read_head(64)?;
        match tinyai_format::detect(&head, source.len()) {
            kind @ (FileKind::Safetensors | FileKind::Gguf) => {
                Self::open_single(path, source, kind)
            }
            FileKind::SafetensorsIndex => {
                drop(source);
                let ShardHeaders {
                    index,
                    files,
                    headers,
                } = read_shard_headers(path)?;
                let foreign = ForeignModel::from_shards(&index, headers, &Grouping::Default)
                    .map_err(|error| CliError::bad_input(path, error.to_string()))?;
                Ok(ModelFile::Direct {
                    path: path.to_path_buf(),
                    foreign,
                    files,
                })
            }
            FileKind::Tmai | FileKind::LegacyTmai | FileKind::Unknown => {
                let tables = TmaiTables::read(&source).map_err(|error| match error {
                    CliError::Format {
                        source: FormatError::BadMagic { found },
                        ..
                    } => CliError::bad_input(path, unrecognised(&found)),
                    other => other,
                })?;
                Ok(ModelFile::Tmai { source, tables })
            }
        }
    }

    /// A safetensors or GGUF file, read by [`read_direct`] (headers in growing prefixes).
    fn open_single(path: &Path, source: SourceFile, kind: FileKind) -> Result<ModelFile> {
        let file_length = source.len();
        let read = read_direct(
            kind,
            source,
            |source: &SourceFile| source.len(),
            |source: &SourceFile, offset, buffer: &mut [u8]| {
                source
                    .read_into(offset, buffer, "the header")
                    .map_err(DirectError::Cli)
            },
            |name: &str| {
                Err(DirectError::Cli(CliError::bad_input(
                    path,
                    format!("names a shard {name:?} but is not an index"),
                )))
            },
            &Grouping::Default,
        );
        match read {
            Ok((foreign, files)) => Ok(ModelFile::Direct {
                path: path.to_path_buf(),
                foreign,
                files,
            }),
            Err(DirectError::Cli(error)) => Err(error),
            Err(DirectError::Format(error)) => Err(header_error(path, file_length, error)),
        }
    }

    /// The [`Model`] view: parsed and validated (everything but checksums).
    pub fn model(&self) -> Result<Model<'_>> {
        match self {
            ModelFile::Tmai { source, tables } => tables.model(source),
            ModelFile::Direct { foreign, .. } => Ok(foreign.model()),
        }
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        match self {
            ModelFile::Tmai { source, .. } => source.path(),
            ModelFile::Direct { path, .. } => path,
        }
    }

    /// The data files and where they lie in the model's byte space (the file
    /// itself at base 0, except for a sharded set).
    pub fn data_files(&self) -> Vec<DataFile<'_>> {
        match self {
            ModelFile::Tmai { source, .. } => vec![DataFile {
                path: source.path(),
                base: 0,
                length: source.len(),
            }],
            ModelFile::Direct { foreign, files, .. } => foreign
                .files()
                .iter()
                .zip(files)
                .map(|(placement, file)| DataFile {
                    path: file.path(),
                    base: placement.base,
                    length: placement.length,
                })
                .collect(),
        }
    }

    /// The opened data files of a directly opened model with their placements
    /// (empty for a `.tmai` file).
    pub fn direct_files(&self) -> Vec<(&SourceFile, FilePlacement)> {
        match self {
            ModelFile::Tmai { .. } => Vec::new(),
            ModelFile::Direct { foreign, files, .. } => {
                files.iter().zip(foreign.files().iter().copied()).collect()
            }
        }
    }
}

/// The name of a format in `tmai inspect --json`'s `source_format`.
pub fn source_format(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Tmai => "tmai",
        FileKind::LegacyTmai => "tmai-v1",
        FileKind::Safetensors => "safetensors",
        FileKind::SafetensorsIndex => "safetensors-index",
        FileKind::Gguf => "gguf",
        FileKind::Unknown => "unknown",
    }
}

/// A header error of a directly opened file, naming it; a header that needs
/// more bytes than the file holds is reported as a truncated file.
fn header_error(path: &Path, file_length: u64, error: FormatError) -> CliError {
    if let Some(SourceError::NeedMoreBytes {
        format,
        what,
        needed,
        ..
    }) = error.source_error()
        && *needed > file_length
    {
        return CliError::bad_input(
            path,
            format!(
                "file truncated: {format} header: {what} needs the first {needed} bytes of the file but it has only {file_length}"
            ),
        );
    }
    CliError::bad_input(path, error.to_string())
}

fn unrecognised(found: &[u8]) -> String {
    let shown: Vec<String> = found.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "unrecognised file: bad magic bytes [{}] at offset 0: expected a .tmai file (current or legacy v1), a safetensors file, a sharded set's model.safetensors.index.json or a GGUF file",
        shown.join(" ")
    )
}
