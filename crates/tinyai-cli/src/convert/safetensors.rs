//! Reading safetensors files (one file or a sharded set) without loading them:
//! only the JSON header is read; tensor data is streamed later. Parsing and
//! validation are [`tinyai_format::safetensors`]'s (the same code the direct
//! readers use); this module reads the bytes and checks that the shards of a set
//! agree with their index.
//!
//! Layout: an 8-byte little-endian header length `N`, `N` bytes of JSON
//! (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, …, "__metadata__": {…}}`),
//! then the data area, to which `data_offsets` are relative.

use std::path::Path;

use super::{MetadataList, SourceTensor};
use crate::error::{CliError, Result};
use crate::source::SourceFile;

use tinyai_format::SourceError;
use tinyai_format::safetensors::header_bytes_needed;
pub use tinyai_format::safetensors::{
    DTYPES, MAX_HEADER_LENGTH, MAX_INDEX_LENGTH, dtype_of, value_to_string,
};
pub use tinyai_format::safetensors::{SafetensorsHeader, ShardIndex};

/// The tensors of one safetensors file, in data-offset order, and its `__metadata__`.
#[derive(Debug)]
pub struct SafetensorsFile {
    /// Tensors (absolute offsets), sorted by offset.
    pub tensors: Vec<SourceTensor>,
    /// `__metadata__` entries in document order.
    pub metadata: Vec<(String, String)>,
}

/// Reads and validates the header of a safetensors file; `file_index` is stored in each tensor.
///
/// The parsing and every check are [`SafetensorsHeader::parse_shard`]'s; this reads the bytes.
pub fn read_header(source: &SourceFile, file_index: usize) -> Result<SafetensorsHeader> {
    let bad = |error: SourceError| CliError::bad_input(source.path(), error.to_string());
    let first = source.read_at(0, source.len().min(8), "the safetensors header length")?;
    let needed = header_bytes_needed(&first, source.len()).map_err(bad)?;
    let head = source.read_at(0, needed, "the safetensors JSON header")?;
    SafetensorsHeader::parse_shard(&head, source.len(), file_index).map_err(bad)
}

impl From<SafetensorsHeader> for SafetensorsFile {
    fn from(header: SafetensorsHeader) -> SafetensorsFile {
        let tensors = header
            .tensors
            .into_iter()
            .map(|tensor| SourceTensor {
                length: tensor.length(),
                name: tensor.name,
                dtype: tensor.dtype,
                source_type: tensor.source_type,
                shape: tensor.shape,
                file: tensor.file,
                offset: tensor.start,
            })
            .collect();
        SafetensorsFile {
            tensors,
            metadata: header.metadata,
        }
    }
}

/// Parses and validates the header of a safetensors file; `file_index` is stored in each tensor.
pub fn read_file(source: &SourceFile, file_index: usize) -> Result<SafetensorsFile> {
    read_header(source, file_index).map(SafetensorsFile::from)
}

/// A sharded set described by a `model.safetensors.index.json`.
#[derive(Debug)]
pub struct ShardedSet {
    /// Shard files in file-name order.
    pub files: Vec<SourceFile>,
    /// All tensors: shard by shard, each in data-offset order.
    pub tensors: Vec<SourceTensor>,
    /// Index `metadata` (as `safetensors.index.KEY`) then every shard's `__metadata__`.
    pub metadata: MetadataList,
}

/// The index of a sharded set, its shard files and their parsed headers.
#[derive(Debug)]
pub struct ShardHeaders {
    /// The parsed index.
    pub index: ShardIndex,
    /// Shard files in the index's (file-name) order, opened relative to the index's directory.
    pub files: Vec<SourceFile>,
    /// `headers[i]` is the header of `files[i]`; checked against the index.
    pub headers: Vec<SafetensorsHeader>,
}

/// Reads an index JSON and the header of every shard it names (relative to the
/// index's directory), checking that they agree. Errors name the file concerned:
/// the index, or the shard that is missing, unreadable or malformed.
pub fn read_shard_headers(index_path: &Path) -> Result<ShardHeaders> {
    let bad = |message: String| CliError::bad_input(index_path, message);
    let index_file = SourceFile::open(index_path)?;
    if index_file.len() > MAX_INDEX_LENGTH {
        return Err(bad(format!(
            "index JSON of {} bytes exceeds the limit of {MAX_INDEX_LENGTH} bytes",
            index_file.len()
        )));
    }
    let text = index_file.read_at(0, index_file.len(), "the index JSON")?;
    let index = ShardIndex::parse(&text).map_err(|error| bad(error.to_string()))?;
    let directory = index_path.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    let mut headers = Vec::new();
    for (file_index, shard) in index.shards.iter().enumerate() {
        let source = SourceFile::open(&directory.join(shard))?;
        headers.push(read_header(&source, file_index)?);
        files.push(source);
    }
    index
        .check_shards(&headers)
        .map_err(|error| bad(error.to_string()))?;
    Ok(ShardHeaders {
        index,
        files,
        headers,
    })
}

/// Reads an index JSON and every shard it names, checking that they agree.
pub fn read_sharded(index_path: &Path) -> Result<ShardedSet> {
    let ShardHeaders {
        index,
        files,
        headers,
    } = read_shard_headers(index_path)?;
    let mut metadata = MetadataList::default();
    for (key, value) in &index.metadata {
        metadata.insert(format!("safetensors.index.{key}"), value.clone());
    }
    let mut tensors: Vec<SourceTensor> = Vec::new();
    for header in headers {
        let parsed = SafetensorsFile::from(header);
        for (key, value) in parsed.metadata {
            metadata.insert(key, value);
        }
        tensors.extend(parsed.tensors);
    }
    Ok(ShardedSet {
        files,
        tensors,
        metadata,
    })
}
