//! Reading safetensors files (one file or a sharded set) without loading them:
//! only the JSON header is read; tensor data is streamed later.
//!
//! Layout: an 8-byte little-endian header length `N`, `N` bytes of JSON
//! (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, …, "__metadata__": {…}}`),
//! then the data area, to which `data_offsets` are relative.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde::de::{Error as _, MapAccess, Visitor};
use tinyai_format::limits;

use super::{MetadataList, SourceTensor};
use crate::error::{CliError, Result};
use crate::source::SourceFile;

pub use tinyai_format::safetensors::{
    DTYPES, MAX_HEADER_LENGTH, MAX_INDEX_LENGTH, dtype_of, value_to_string,
};

/// A JSON object's entries in document order; duplicate keys are an error.
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut seen = HashSet::new();
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(A::Error::custom(format!("duplicate key {key:?}")));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

#[derive(Deserialize)]
struct RawInfo {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// The tensors of one safetensors file, in data-offset order, and its `__metadata__`.
#[derive(Debug)]
pub struct SafetensorsFile {
    /// Tensors (absolute offsets), sorted by offset.
    pub tensors: Vec<SourceTensor>,
    /// `__metadata__` entries in document order.
    pub metadata: Vec<(String, String)>,
}

/// Parses and validates the header of a safetensors file; `file_index` is stored in each tensor.
pub fn read_file(source: &SourceFile, file_index: usize) -> Result<SafetensorsFile> {
    let path = source.path();
    let bad = |message: String| CliError::bad_input(path, message);
    if source.len() < 8 {
        return Err(bad(format!(
            "safetensors file of {} bytes is shorter than its 8-byte header length",
            source.len()
        )));
    }
    let length_bytes = source.read_at(0, 8, "the safetensors header length")?;
    let mut length = [0u8; 8];
    length.copy_from_slice(&length_bytes);
    let header_length = u64::from_le_bytes(length);
    if header_length > source.len() - 8 {
        return Err(bad(format!(
            "safetensors header length {header_length} (bytes 0..8) runs past the end of the file ({} bytes)",
            source.len()
        )));
    }
    if header_length > MAX_HEADER_LENGTH {
        return Err(bad(format!(
            "safetensors header length {header_length} exceeds the limit of {MAX_HEADER_LENGTH} bytes"
        )));
    }
    let header = source.read_at(8, header_length, "the safetensors JSON header")?;
    let entries: Entries = serde_json::from_slice(&header).map_err(|error| {
        bad(format!(
            "safetensors JSON header (bytes 8..{}): {error}",
            8 + header_length
        ))
    })?;
    let data_start = 8 + header_length;
    let data_length = source.len() - data_start;
    let mut tensors = Vec::new();
    let mut metadata = Vec::new();
    for (name, value) in entries.0 {
        if name == "__metadata__" {
            let serde_json::Value::Object(map) = value else {
                return Err(bad(
                    "safetensors header: __metadata__ is not a JSON object".to_owned()
                ));
            };
            metadata.extend(map.iter().map(|(k, v)| (k.clone(), value_to_string(v))));
            continue;
        }
        let info: RawInfo = serde_json::from_value(value)
            .map_err(|error| bad(format!("safetensors header: tensor {name:?}: {error}")))?;
        let dtype = dtype_of(&info.dtype).ok_or_else(|| {
            bad(format!(
                "safetensors header: tensor {name:?}: unsupported dtype {:?} (supported: {})",
                info.dtype,
                DTYPES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" ")
            ))
        })?;
        if info.shape.len() > limits::MAX_RANK {
            return Err(bad(format!(
                "safetensors header: tensor {name:?}: rank {} exceeds {}",
                info.shape.len(),
                limits::MAX_RANK
            )));
        }
        let (begin, end) = info.data_offsets;
        if begin > end {
            return Err(bad(format!(
                "safetensors header: tensor {name:?}: data_offsets [{begin}, {end}] are reversed"
            )));
        }
        if end > data_length {
            return Err(bad(format!(
                "safetensors header: tensor {name:?}: data_offsets [{begin}, {end}] run past the end of the data area ({data_length} bytes starting at {data_start})"
            )));
        }
        let bits = dtype.bits().unwrap_or(8);
        let expected = info
            .shape
            .iter()
            .try_fold(1u128, |acc, &d| acc.checked_mul(u128::from(d)))
            .and_then(|count| count.checked_mul(u128::from(bits)))
            .map(|bits| bits.div_ceil(8));
        if expected != Some(u128::from(end - begin)) {
            return Err(bad(format!(
                "safetensors header: tensor {name:?}: dtype {} with shape {:?} needs {} bytes but data_offsets [{begin}, {end}] hold {}",
                info.dtype,
                info.shape,
                expected.map_or_else(|| "too many".to_owned(), |e| e.to_string()),
                end - begin
            )));
        }
        tensors.push(SourceTensor {
            name,
            dtype,
            source_type: 0,
            shape: info.shape,
            file: file_index,
            offset: data_start + begin,
            length: end - begin,
        });
    }
    tensors.sort_by_key(|t| (t.offset, t.length));
    for pair in tensors.windows(2) {
        if pair[1].offset < pair[0].offset + pair[0].length {
            return Err(bad(format!(
                "safetensors header: tensors {:?} (data {}..{}) and {:?} (data {}..{}) overlap",
                pair[0].name,
                pair[0].offset - data_start,
                pair[0].offset - data_start + pair[0].length,
                pair[1].name,
                pair[1].offset - data_start,
                pair[1].offset - data_start + pair[1].length,
            )));
        }
    }
    Ok(SafetensorsFile { tensors, metadata })
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

/// Reads an index JSON and every shard it names, checking that they agree.
pub fn read_sharded(index_path: &Path) -> Result<ShardedSet> {
    let bad = |message: String| CliError::bad_input(index_path, message);
    let index_file = SourceFile::open(index_path)?;
    if index_file.len() > MAX_INDEX_LENGTH {
        return Err(bad(format!(
            "index JSON of {} bytes exceeds the limit of {MAX_INDEX_LENGTH} bytes",
            index_file.len()
        )));
    }
    let text = index_file.read_at(0, index_file.len(), "the index JSON")?;
    let entries: Entries =
        serde_json::from_slice(&text).map_err(|error| bad(format!("index JSON: {error}")))?;
    let mut metadata = MetadataList::default();
    let mut weight_map: Option<Vec<(String, String)>> = None;
    for (key, value) in entries.0 {
        match (key.as_str(), value) {
            ("metadata", serde_json::Value::Object(map)) => {
                for (k, v) in map {
                    metadata.insert(format!("safetensors.index.{k}"), value_to_string(&v));
                }
            }
            ("weight_map", serde_json::Value::Object(map)) => {
                let mut pairs = Vec::with_capacity(map.len());
                for (tensor, shard) in map {
                    let serde_json::Value::String(shard) = shard else {
                        return Err(bad(format!(
                            "index JSON: weight_map entry for tensor {tensor:?} is not a file name"
                        )));
                    };
                    pairs.push((tensor, shard));
                }
                weight_map = Some(pairs);
            }
            ("metadata" | "weight_map", _) => {
                return Err(bad(format!("index JSON: {key:?} is not a JSON object")));
            }
            _ => {}
        }
    }
    let weight_map =
        weight_map.ok_or_else(|| bad("index JSON has no \"weight_map\" object".to_owned()))?;
    let directory = index_path.parent().unwrap_or(Path::new("."));
    let mut shard_names: Vec<&str> = weight_map.iter().map(|(_, s)| s.as_str()).collect();
    shard_names.sort_unstable();
    shard_names.dedup();
    let mut files = Vec::new();
    let mut tensors: Vec<SourceTensor> = Vec::new();
    let mut shard_of: HashMap<&str, usize> = HashMap::new();
    for (file_index, shard) in shard_names.iter().enumerate() {
        let relative = Path::new(shard);
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(bad(format!(
                "index JSON: shard {shard:?} is not a plain relative path inside the index directory"
            )));
        }
        let shard_path: PathBuf = directory.join(relative);
        let source = SourceFile::open(&shard_path)?;
        let parsed = read_file(&source, file_index)?;
        for (key, value) in parsed.metadata {
            metadata.insert(key, value);
        }
        for tensor in parsed.tensors {
            tensors.push(tensor);
        }
        shard_of.insert(shard, file_index);
        files.push(source);
    }
    let mut location: HashMap<&str, usize> = HashMap::with_capacity(tensors.len());
    for tensor in &tensors {
        if let Some(&first) = location.get(tensor.name.as_str()) {
            return Err(bad(format!(
                "tensor {:?} appears in two shards: {} and {}",
                tensor.name,
                files[first].path().display(),
                files[tensor.file].path().display()
            )));
        }
        location.insert(&tensor.name, tensor.file);
    }
    for (tensor, shard) in &weight_map {
        let expected = shard_of.get(shard.as_str()).copied();
        match location.get(tensor.as_str()) {
            Some(&found) if Some(found) == expected => {}
            Some(&found) => {
                return Err(bad(format!(
                    "index maps tensor {tensor:?} to {shard:?} but it is in {}",
                    files[found].path().display()
                )));
            }
            None => {
                return Err(bad(format!(
                    "index maps tensor {tensor:?} to {shard:?}, which does not contain it"
                )));
            }
        }
    }
    Ok(ShardedSet {
        files,
        tensors,
        metadata,
    })
}
